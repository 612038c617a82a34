"""One PIRLS iteration's work on the rows, alone: 10^6 rows, crossed binomial.

    python benchmarks/glmm_pass.py [--repeat 15]

Builds the model frame of glmm_sparse.synthetic.Design((10_000, 1_000), family="binomial")
(seed 1) and times, at a fixed (beta, u), what one PIRLS iteration does over the rows:
eta from (beta, u), the working weights and response, the deviance and the cross-products
Z'WZ, Z'W[X z], [X z]'W[X z] (``rowpass.row_pass``; before it: ``pirls.linear_predictor``,
``pirls.working_at`` and ``CrossprodPlan.accumulate``). Minimum and median of the
repeats, wall and process CPU seconds, and tracemalloc's peak of one pass.
"""
from __future__ import annotations

import argparse
import json
import time
import tracemalloc

import numpy as np

from glmm_sparse.crossprod import CrossprodPlan
from glmm_sparse.families import get_family
from glmm_sparse.models import parse_mixed_formula
from glmm_sparse.frame import build_frame
from glmm_sparse.pirls import GlmmData
from glmm_sparse.responses import binomial_response
from glmm_sparse.synthetic import Design, simulate


def gdata(rows: int) -> GlmmData:
    design = Design((10_000, 1_000), family="binomial")
    df, _ = simulate(design, rows, seed=1)
    f = design.formula()
    frame = build_frame(parse_mixed_formula(f, ""), f, df, weights=None, offset=None,
                        na_action="omit", response=binomial_response, glmm=True)
    return GlmmData(frame.y, frame.X, np.zeros(frame.n), np.ones(frame.n),
                    get_family("binomial"), CrossprodPlan.from_terms(frame.terms))


def one_pass(data: GlmmData, beta, u, T, offsets):
    """The row work of one PIRLS iteration (over (u, beta) jointly), either version."""
    from glmm_sparse import pirls

    if hasattr(pirls, "working_at"):  # before: n-long eta, working quantities and [X z]
        eta = pirls.linear_predictor(data, data.offset, T, u, offsets, data.X @ beta)
        wk = pirls.working_at(data, eta)
        rhs = np.column_stack([data.X, eta - data.offset + wk.resid])
        return data.plan.accumulate(wk.w, rhs), wk.dev
    from glmm_sparse.rowpass import Point, row_pass, term_effects

    res = row_pass(data, Point(beta, term_effects(data.plan.terms, T, u, offsets), True))
    return res.cp, res.dev


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10**6)
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args()
    data = gdata(args.rows)
    rng = np.random.default_rng(3)
    q = sum(t.q for t in data.plan.terms)
    offsets = np.concatenate([[0], np.cumsum([t.q for t in data.plan.terms])]).astype(np.int64)
    beta, u = np.array([-0.5, 0.3, -0.3]), rng.normal(size=q)
    T = [np.array([[0.8]]), np.array([[0.4]])]
    walls, cpus = [], []
    for _ in range(args.repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        cp, dev = one_pass(data, beta, u, T, offsets)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    tracemalloc.start()
    one_pass(data, beta, u, T, offsets)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(json.dumps({
        "rows": args.rows, "wall_min_ms": round(1e3 * min(walls), 1),
        "wall_median_ms": round(1e3 * float(np.median(walls)), 1),
        "cpu_min_ms": round(1e3 * min(cpus), 1), "traced_peak_mb": round(peak / 2**20, 1),
        "traced_vectors_per_row": round(peak / (8 * args.rows), 2), "dev": dev,
        "XtWXy": cp.XtWXy.tolist()}))


if __name__ == "__main__":
    main()
