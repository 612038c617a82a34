"""Time and peak memory of glmer on 10^6 rows, crossed binomial (10,000 x 1,000 levels).

    python benchmarks/glmm_row_passes.py             # wall time and peak RSS of the fit
    python benchmarks/glmm_row_passes.py --traced    # tracemalloc's peak of the fit too

The data (glmm_sparse.synthetic.Design((10_000, 1_000), family="binomial"), seed 1) are
made before the measurement; the peak resident set is reset just before the fit
(/proc/self/clear_refs), so "peak RSS" is the process's peak during the fit and "added"
what the fit put on top of the resident set before it. tracemalloc slows NumPy's
allocations a little, so its run's time is not the one to quote. "cpu_seconds" is the
process's CPU time during the fit (all threads): steadier than wall time on a shared
machine.
"""
from __future__ import annotations

import argparse
import json
import time
import tracemalloc
import warnings

import glmm_sparse as gs
from glmm_sparse.synthetic import Design, simulate


def rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return -1


def reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10**6)
    ap.add_argument("--levels", type=int, nargs="+", default=[10_000, 1_000])
    ap.add_argument("--traced", action="store_true")
    args = ap.parse_args()
    design = Design(tuple(args.levels), family="binomial")
    data, _ = simulate(design, args.rows, seed=1)
    before = rss_kib("VmRSS")
    reset_peak_rss()
    if args.traced:
        tracemalloc.start()
    t0, c0 = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = gs.glmer(design.formula(), data, family="binomial")
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    traced = tracemalloc.get_traced_memory()[1] if args.traced else None
    peak = rss_kib("VmHWM")
    print(json.dumps({
        "rows": args.rows, "levels": args.levels, "seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2),
        "peak_rss_mb": round(peak / 1024, 1), "added_rss_mb": round((peak - before) / 1024, 1),
        "tracemalloc_peak_mb": None if traced is None else round(traced / 2**20, 1),
        "tracemalloc_vectors_per_row": None if traced is None else round(traced / (8 * args.rows), 2),
        "loglik": m.loglik, "fixef": m.fixef.round(8).tolist(), "theta": list(map(float, m.theta)),
        "evaluations": m.optimizer.n_total_evals if hasattr(m.optimizer, "n_total_evals") else None,
    }))


if __name__ == "__main__":
    main()
