"""Memory of each stage of lmer on a harness case: NumPy's arrays and the resident set.

    .venv/bin/python benchmarks/memory_stages.py ols_1e7 [--rows N] [--parquet DIR]

Runs lmer's stages one after another as ``models.lmer`` does (model frame,
cross-products, objective, optimization, results) on the case's seeded rows
(benchmarks/peers/cases.py), read back from a Parquet file as the harness reads them
(written to DIR once). After each stage it prints what NumPy's arrays hold and their
peak during the stage (tracemalloc), and the resident set and its peak (VmRSS, VmHWM:
CHOLMOD's memory included), both over what the process held before the fit.
"""
from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers.cases import CASES  # noqa: E402
from peers.procmem import reset_peak, status_bytes  # noqa: E402

from glmm_sparse import models  # noqa: E402
from glmm_sparse.crossprod import accumulate  # noqa: E402
from glmm_sparse.formula import parse_formula  # noqa: E402
from glmm_sparse.frame import build_frame  # noqa: E402
from glmm_sparse.objective import LmmObjective  # noqa: E402
from glmm_sparse.optimize import minimize_theta  # noqa: E402
from glmm_sparse.results import build_lmer_result  # noqa: E402
from glmm_sparse.synthetic import write_parquet  # noqa: E402

MIB = 2**20


class Stages:
    """Prints each stage's memory over the baseline taken at construction."""

    def __init__(self):
        tracemalloc.start()
        self.traced0 = tracemalloc.get_traced_memory()[0]
        self.rss0 = status_bytes("VmRSS")
        reset_peak()
        self.start = time.perf_counter()

    def done(self, name: str) -> None:
        held, peak = (v - self.traced0 for v in tracemalloc.get_traced_memory())
        rss, hwm = status_bytes("VmRSS") - self.rss0, status_bytes("VmHWM") - self.rss0
        print(f"{name:10s} arrays held {held / MIB:6.0f} MiB, peak {peak / MIB:6.0f} MiB; "
              f"resident {rss / MIB:6.0f} MiB, peak {hwm / MIB:6.0f} MiB; "
              f"{time.perf_counter() - self.start:6.1f} s", flush=True)
        tracemalloc.reset_peak()
        reset_peak()
        self.start = time.perf_counter()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", choices=[n for n, c in CASES.items() if c.family == "gaussian"])
    parser.add_argument("--rows", type=int, help="rows (default: the case's)")
    parser.add_argument("--parquet", type=Path, default=Path("."), help="where the data go")
    args = parser.parse_args()
    case = CASES[args.case]
    rows = args.rows or case.n_rows
    path = args.parquet / f"{case.name}_{rows}.parquet"
    if not path.exists():
        write_parquet(path, case.design, rows, seed=case.seed)
    data = pd.read_parquet(path)
    print(f"{case.name}: {rows:,} rows, input columns "
          f"{data.memory_usage(index=False, deep=True).sum() / MIB:.0f} MiB")
    stages = Stages()
    parsed = parse_formula(case.formula)
    frame = build_frame(parsed, case.formula, data)
    stages.done("frame")
    cp = accumulate(frame)
    stages.done("crossprod")
    obj = LmmObjective(cp, reml=True)
    del cp
    stages.done("objective")
    theta0, units = models.lmm_start_and_units(obj, frame, None)
    opt = minimize_theta(obj, theta0, obj.theta_map.lower, check=True, units=units)
    obj.update(opt.theta)
    stages.done("optimize")
    result = build_lmer_result(case.formula, frame, obj, opt)
    stages.done("results")
    print(f"logLik {result.loglik!r}, theta {result.theta.tolist()}")


if __name__ == "__main__":
    main()
