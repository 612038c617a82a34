"""The command line: ``python -m glmm_sparse fit|synthetic ...``.

Exit codes: 0 success, 2 bad input (formula, data, model specification), 1 a fit that
failed numerically.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings

from . import __version__
from .errors import GlmmSparseError, NumericalError
from .models import glmer, lmer


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m glmm_sparse",
        description="Fit linear and generalized linear mixed-effects models with lme4's "
                    "formula language.")
    parser.add_argument("--version", action="version", version=f"glmm_sparse {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    fit = sub.add_parser("fit", help="fit a model to a CSV or Parquet file and print its summary")
    fit.add_argument("formula", help='an lme4 formula, e.g. "Reaction ~ Days + (Days | Subject)"')
    fit.add_argument("data", help="a .csv, .tsv or .parquet file")
    fit.add_argument("--ml", action="store_true", help="maximum likelihood instead of REML")
    fit.add_argument("--family", default="gaussian",
                     help="gaussian (a linear mixed model, the default), binomial, poisson, "
                          "gamma or inverse_gaussian (a GLMM by Laplace / AGQ)")
    fit.add_argument("--link", help="link function of a GLMM (default: the canonical link)")
    fit.add_argument("--nagq", type=int, default=1,
                     help="GLMM: 0, 1 (Laplace, the default) or adaptive Gauss-Hermite nodes")
    fit.add_argument("--weights", help="column holding prior weights")
    fit.add_argument("--json", metavar="OUT", help="also write all results as JSON to OUT")
    syn = sub.add_parser("synthetic", help="fit a seeded synthetic crossed model and time it")
    syn.add_argument("--rows", type=int, default=1_000_000, help="number of rows (1000000)")
    syn.add_argument("--levels", type=int, nargs="+", default=[2000, 200],
                     help="levels of each crossed grouping factor (2000 200)")
    syn.add_argument("--slope", action="store_true", help="a correlated random slope on g1")
    syn.add_argument("--seed", type=int, default=1, help="random seed (1)")
    syn.add_argument("--ml", action="store_true", help="maximum likelihood instead of REML")
    return parser


def run_fit(args) -> int:
    t0 = time.perf_counter()
    if args.family == "gaussian" and args.link in (None, "identity"):
        result = lmer(args.formula, args.data, reml=not args.ml, weights=args.weights)
    else:
        result = glmer(args.formula, args.data, family=args.family, link=args.link,
                       nagq=args.nagq, weights=args.weights)
    print(result.summary())
    print(f"\nwall time: {time.perf_counter() - t0:.3f} s (read + fit)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result.to_dict(), fh, indent=2)
    return 0


def run_synthetic(args) -> int:
    from .synthetic import crossed_formula, crossed_lmm

    t0 = time.perf_counter()
    data, truth = crossed_lmm(args.rows, tuple(args.levels), seed=args.seed, slope=args.slope)
    t1 = time.perf_counter()
    formula = crossed_formula(args.levels, slope=args.slope)
    result = lmer(formula, data, reml=not args.ml)
    t2 = time.perf_counter()
    print(result.summary())
    beta = ", ".join(f"{b:g}" for b in truth.beta)
    sds = ", ".join(f"{s:g}" for s in truth.sd)
    print(f"\ntruth: beta = ({beta}), random-effect SDs = ({sds}), sigma = {truth.sigma:g}")
    print(f"data: {args.rows:,} rows generated in {t1 - t0:.2f} s; fit: {t2 - t1:.2f} s "
          f"({result.optimizer.n_evals} evaluations by the optimizer, "
          f"{result.optimizer.n_total_evals} with the convergence check; "
          f"{result.optimizer.seconds:.2f} s optimizing)")
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            return run_fit(args) if args.command == "fit" else run_synthetic(args)
    except NumericalError as err:
        print(f"error: the fit failed: {err}", file=sys.stderr)
        return 1
    except (GlmmSparseError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
