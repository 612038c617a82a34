"""Analysis and factorization times of M per ordering and CHOLMOD mode, as a markdown table.

    python benchmarks/factorization.py

The matrices are the M = Lambda'Z'Z Lambda + I of lmer at the start theta for the crossed
benchmark shapes (glmm_sparse.synthetic, seed 1): what objective.fastest_factor chooses
between, CHOLMOD's modes and orderings and the Schur complement of the first term's
diagonal block (schur.py, "analysis": its set-up). Times are the minimum of 3
factorizations after the analysis, every BLAS on one thread as in a fit
(blas.fit_on_one_blas_thread).
"""
from __future__ import annotations

import time
import warnings

from glmm_sparse._core._cholmod import SymbolicFactor

from glmm_sparse.blas import one_blas_thread
from glmm_sparse.crossprod import accumulate
from glmm_sparse.formula import parse_formula
from glmm_sparse.frame import build_frame
from glmm_sparse.objective import LmmObjective
from glmm_sparse.schur import SchurFactor
from glmm_sparse.synthetic import INSTEVAL_FORMULA, Design, insteval_like, simulate

SHAPES = {
    "2,000 x 200, 10^6 rows": (Design((2000, 200)), 1_000_000),
    "10,000 x 1,000, 10^6 rows": (Design((10_000, 1000)), 1_000_000),
    "InstEval shape, 73,421 rows": (None, 73_421),
}
CANDIDATES = [("natural", "simplicial"), ("natural", "supernodal"), ("default", "simplicial"),
              ("default", "supernodal"), ("natural", "schur")]


def objective_at_start(design, rows) -> LmmObjective:
    if design is None:
        formula, data = INSTEVAL_FORMULA, insteval_like(rows, seed=1)[0]
    else:
        formula, data = design.formula(), simulate(design, rows, seed=1)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        frame = build_frame(parse_formula(formula), formula, data)
    obj = LmmObjective(accumulate(frame), reml=True, factor_mode="simplicial")
    obj.update_M()
    return obj


def timed(shape):
    obj = objective_at_start(*SHAPES[shape])
    pat = obj.pattern
    rows = []
    for ordering, mode in CANDIDATES:
        start = time.perf_counter()
        factor = (SchurFactor(pat) if mode == "schur"
                  else SymbolicFactor(pat.indptr, pat.indices, pat.q, mode, ordering))
        analyse = time.perf_counter() - start
        times = []
        for _ in range(3):
            start = time.perf_counter()
            factor.factorize(obj.Mx, beta=1.0)
            times.append(time.perf_counter() - start)
        rows.append((shape, pat.q, pat.nnz, ordering, mode, analyse, min(times),
                     factor.factor_nnz()))
    return rows


def main() -> None:
    print("| shape | q | nnz(M) | ordering | mode | analysis (s) | factorization (s) | "
          "entries of L |")
    print("|---|---:|---:|---|---|---:|---:|---:|")
    for shape in SHAPES:
        with one_blas_thread():
            rows = timed(shape)
        for s, q, nnz, ordering, mode, analyse, factor, nnz_l in rows:
            name = "AMD (CHOLMOD default)" if ordering == "default" else ordering
            mode = "Schur complement (schur.py)" if mode == "schur" else mode
            print(f"| {s} | {q:,} | {nnz:,} | {name} | {mode} | {analyse:.3f} | {factor:.3f} "
                  f"| {nnz_l:,.0f} |")


if __name__ == "__main__":
    main()
