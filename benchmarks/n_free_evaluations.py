"""Objective evaluations per second do not depend on the number of rows.

The same grouping structure (a correlated random slope on g1 with 1,000 levels crossed
with an intercept on g2 with 50 levels) is drawn with 10^5 and 10^7 rows. Rows cycle
through all 50,000 (g1, g2) pairs, so every pair occurs at both sizes and the pattern of
M (hence the work of an evaluation) is the same; only n differs. For each size the one
pass over the rows (cross-products) is timed once, then the n-free criterion is
evaluated at the same 30 theta values. Run: `python benchmarks/n_free_evaluations.py`
(prints a Markdown table for docs/benchmarks.md).
"""
from __future__ import annotations

import argparse
import platform
import time

import numpy as np

from glmm_sparse.crossprod import accumulate
from glmm_sparse.formula import parse_formula
from glmm_sparse.frame import build_frame
from glmm_sparse.objective import LmmObjective
import pandas as pd

LEVELS = (1000, 50)
FORMULA = "y ~ x1 + x2 + (1 + x1 | g1) + (1 | g2)"


def all_pairs_data(n_rows: int, seed: int = 1) -> pd.DataFrame:
    """Rows cycling through every (g1, g2) pair; y from known random effects plus noise."""
    rng = np.random.default_rng(seed)
    pair = np.arange(n_rows) % (LEVELS[0] * LEVELS[1])
    g1, g2 = np.divmod(pair, LEVELS[1])
    x1, x2 = rng.standard_normal(n_rows), rng.standard_normal(n_rows)
    b1 = rng.normal(0, [0.8, 0.3], (LEVELS[0], 2))
    b2 = rng.normal(0, 0.4, LEVELS[1])
    y = 1 + 0.5 * x1 - 0.5 * x2 + b1[g1, 0] + b1[g1, 1] * x1 + b2[g2] + rng.standard_normal(n_rows)
    return pd.DataFrame({"y": y, "x1": x1, "x2": x2, "g1": g1, "g2": g2})


def measure(n_rows: int, thetas: np.ndarray, mode: str) -> dict:
    data, formula = all_pairs_data(n_rows), FORMULA
    t0 = time.perf_counter()
    frame = build_frame(parse_formula(formula), formula, data)
    t1 = time.perf_counter()
    obj = LmmObjective(accumulate(frame), reml=True, factor_mode=mode)
    t2 = time.perf_counter()
    times = []
    for theta in thetas:
        start = time.perf_counter()
        obj(theta)
        times.append(time.perf_counter() - start)
    return {"rows": n_rows, "q": obj.cp.q, "nnz_M": obj.pattern.nnz,
            "frame_s": t1 - t0, "crossprod_s": t2 - t1, "eval_ms": 1e3 * float(np.median(times)),
            "evals_per_s": 1.0 / float(np.median(times))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10**5, 10**7])
    parser.add_argument("--mode", default="simplicial", help="CHOLMOD factorization mode")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    thetas = np.column_stack([rng.uniform(0.2, 1.5, 30), rng.normal(0, 0.3, 30),
                              rng.uniform(0.05, 0.5, 30), rng.uniform(0.2, 1.0, 30)])
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}")
    print("| rows | q | nnz(M) | model frame (s) | cross-products, one pass (s) | "
          "one evaluation (ms, median of 30) | evaluations / s |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for n in args.rows:
        r = measure(n, thetas, args.mode)
        print(f"| {r['rows']:,} | {r['q']:,} | {r['nnz_M']:,} | {r['frame_s']:.2f} | "
              f"{r['crossprod_s']:.2f} | {r['eval_ms']:.2f} | {r['evals_per_s']:.0f} |")


if __name__ == "__main__":
    main()
