"""Satterthwaite df at 10^6 rows: time and peak memory (docs/benchmarks.md).

    .venv/bin/python benchmarks/ddf_scale.py [--rows 1000000] [--levels 2000 200] [--seed 1]

Fits the seeded synthetic model y ~ x1 + x2 + (1 + x1 | g1) + (1 | g2) (crossed, a
correlated slope on g1; glmm_sparse.synthetic.Design), then times coef_table() (the
Satterthwaite t tests) and anova() (type III F tests), and reports the process's peak
resident memory after the fit and after the tests: the tests should add nothing that
grows with n (lmerTest builds n x n matrices here and runs out of memory).
"""
from __future__ import annotations

import argparse
import resource
import time
import warnings


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


def main(argv=None) -> None:
    import glmm_sparse as gs
    from glmm_sparse.synthetic import Design, simulate

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--levels", type=int, nargs=2, default=[2000, 200])
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    design = Design(tuple(args.levels), slope=True)
    data, _ = simulate(design, args.rows, seed=args.seed)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = gs.lmer(design.formula(), data)
    t1 = time.perf_counter()
    rss_fit = peak_rss_mb()
    table = m.coef_table()
    t2 = time.perf_counter()
    anova = m.anova()
    t3 = time.perf_counter()
    print(f"model: {design.formula()}, {args.rows:,} rows, levels {args.levels}, "
          f"{len(m.theta)} theta")
    print(table.to_string())
    print(anova.to_string())
    print(f"fit {t1 - t0:.2f} s; Satterthwaite t tests {t2 - t1:.2f} s "
          f"(first call: derivatives over theta); type III table {t3 - t2:.3f} s")
    print(f"peak RSS after the fit {rss_fit:.0f} MB, after the tests {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
