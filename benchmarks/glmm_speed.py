"""GLMM fit times for the two cases of issue 3, reproducible with one command each.

    python benchmarks/glmm_speed.py crossed          # binary_crossed reference data
    python benchmarks/glmm_speed.py nested           # 1.4M-row binomial, nested groups
    python benchmarks/glmm_speed.py nested --csv F   # also write the data for lme4:
    Rscript benchmarks/glmm_binomial_nested.R F      #   the same fit with lme4

The nested data are seeded: y ~ x + z + (1 | region/site), 20 regions x 10 sites.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

import glmm_sparse as gs

ROOT = Path(__file__).resolve().parents[1]


def nested_data(n: int = 1_400_000, seed: int = 3) -> pd.DataFrame:
    """Binary response, two covariates, 20 regions with 10 sites each (200 sites)."""
    rng = np.random.default_rng(seed)
    region, site = rng.integers(0, 20, n), rng.integers(0, 10, n)
    x, z = rng.normal(size=n), rng.normal(size=n)
    b_region, b_site = rng.normal(0, 0.5, 20), rng.normal(0, 0.3, (20, 10))
    eta = -0.5 + 0.4 * x - 0.3 * z + b_region[region] + b_site[region, site]
    y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(int)
    return pd.DataFrame({"y": y, "x": x, "z": z, "region": region, "site": site})


def crossed_case():
    sys.path.insert(0, str(ROOT / "tests"))
    from refdata import glmer_args, load_case, load_data

    ref = load_case("binary_crossed", "glmm")
    return ref["formula"], load_data(ref["data"], "glmm"), glmer_args(ref), ref["lme4_seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("case", choices=["crossed", "nested"])
    parser.add_argument("--rows", type=int, default=1_400_000, help="rows of the nested case")
    parser.add_argument("--csv", help="write the nested data here (for the lme4 script)")
    parser.add_argument("--repeat", type=int, default=3, help="fits to time (best is shown)")
    args = parser.parse_args()
    if args.case == "crossed":
        formula, data, kwargs, lme4_s = crossed_case()
    else:
        formula, data, kwargs, lme4_s = "y ~ x + z + (1 | region/site)", nested_data(args.rows), \
            {"family": "binomial"}, None
        if args.csv:
            data.to_csv(args.csv, index=False)
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        m = gs.glmer(formula, data, **kwargs)
        times.append(time.perf_counter() - t0)
    print(f"{args.case}: {len(data):,} rows, best of {args.repeat}: {min(times):.2f} s "
          f"(stage 1: {m.stage1.n_evals} evaluations, stage 2: {m.optimizer.n_evals}); "
          f"logLik {m.loglik:.6f}" + (f"; lme4 recorded {lme4_s:.2f} s" if lme4_s else ""))


if __name__ == "__main__":
    main()
