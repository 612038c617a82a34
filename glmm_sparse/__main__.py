"""The command line: ``python -m glmm_sparse fit|synthetic ...``.

Exit codes: 0 success, 2 bad input (formula, data, model specification, a data file
pyarrow cannot read, an output file that cannot be written), 1 a fit that failed
(numerically, out of memory, or out of room in the spill directory).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
import warnings
from pathlib import Path

from . import __version__
from .ddf import DDF_CHOICES, normalize_ddf
from .errors import (
    FactorMemoryError,
    GlmmSparseError,
    ModelSpecError,
    NumericalError,
    SpillSpaceError,
)
from .models import glmer, lmer
from .reporting import result_dict
from .streaming import STREAM_ABOVE_ROWS
from .synthetic import CHUNK_ROWS, FAMILIES, Design, simulate, write_parquet


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m glmm_sparse",
        description="Fit linear and generalized linear mixed-effects models with lme4's "
                    "formula language.")
    parser.add_argument("--version", action="version", version=f"glmm_sparse {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    fit = sub.add_parser("fit", help="fit a model to a CSV or Parquet file and print its summary")
    fit.add_argument("formula", help='an lme4 formula, e.g. "Reaction ~ Days + (Days | Subject)"')
    fit.add_argument("data", help="a .csv, .tsv or .parquet file, or a directory or glob "
                                  "(quoted) of Parquet files")
    fit.add_argument("--ml", action="store_true", help="maximum likelihood instead of REML")
    fit.add_argument("--family", default="gaussian",
                     help="gaussian (a linear mixed model, the default), binomial, poisson, "
                          "gamma or inverse_gaussian (a GLMM by Laplace / AGQ)")
    fit.add_argument("--link", help="link function of a GLMM (default: the canonical link)")
    fit.add_argument("--nagq", type=int, default=1,
                     help="GLMM: 0, 1 (Laplace, the default) or adaptive Gauss-Hermite nodes")
    fit.add_argument("--optimizer", choices=("bobyqa", "lbfgsb"), default="bobyqa",
                     help="an LMM's optimizer: bobyqa (derivative-free, as lme4; default) or "
                          "lbfgsb (L-BFGS-B with the analytic gradient: fewer evaluations, "
                          "each dearer; docs/benchmarks.md); GLMMs take bobyqa only")
    fit.add_argument("--weights", help="column holding prior weights")
    fit.add_argument("--offset", help="column holding a known offset")
    fit.add_argument("--streaming", choices=("auto", "yes", "no"), default="auto",
                     help="Parquet data: read the rows in batches (yes), whole (no), or in "
                          f"batches above {STREAM_ABOVE_ROWS:,} rows (auto). In batches, an "
                          "LMM is fitted in memory bounded by its levels, a GLMM out of "
                          "core (its rows encoded once to files in --spill-dir)")
    fit.add_argument("--spill-dir", metavar="DIR",
                     help="GLMMs read in batches: the directory of the encoded rows (default: "
                          "the system's temporary directory); a local disk with room for "
                          "about 8 x (p + 3 + the terms' columns + ...) bytes per row")
    fit.add_argument("--ddf", choices=DDF_CHOICES, default=None,
                     help="tests of the fixed effects: satterthwaite (LMM default: "
                          "lmerTest's t tests), kenward-roger (REML LMMs; adjusted SEs), "
                          "normal (Wald z; the GLMM default and only test), none (lme4's "
                          "table, no p-values)")
    fit.add_argument("--json", metavar="OUT", help="also write all results as JSON to OUT "
                                                   "(with the --ddf tests)")
    fit.add_argument("--ranef", metavar="OUT",
                     help="also write the random-effects table (grpvar, term, grp, condval, "
                          "condsd) to OUT: Parquet, or CSV when OUT ends in .csv")
    fit.add_argument("--quiet", action="store_true",
                     help="print no summary (for pipeline jobs: use --json / --ranef)")
    fit.add_argument("--log-level", default="WARNING",
                     choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                     help="messages of the 'glmm_sparse' logger on stderr (WARNING)")
    syn = sub.add_parser("synthetic", help="fit a seeded synthetic model and time it, or "
                                           "write its data to Parquet (--write)")
    syn.add_argument("--rows", type=int, default=1_000_000, help="number of rows (1000000)")
    syn.add_argument("--levels", type=int, nargs="+", default=[2000, 200],
                     help="levels of each crossed grouping factor (2000 200); with --nested, "
                          "outer levels and inner levels per outer one")
    syn.add_argument("--nested", action="store_true", help="g2 nested in g1")
    syn.add_argument("--slope", action="store_true", help="a correlated random slope on g1")
    syn.add_argument("--family", default="gaussian", choices=FAMILIES,
                     help="distribution of y (gaussian)")
    syn.add_argument("--seed", type=int, default=1, help="random seed (1)")
    syn.add_argument("--ml", action="store_true", help="maximum likelihood instead of REML")
    syn.add_argument("--write", metavar="PARQUET",
                     help="write the rows to this Parquet file, one row group per chunk of "
                          f"{CHUNK_ROWS:,} rows and one chunk in memory at a time, instead "
                          "of fitting")
    return parser


class OutputError(GlmmSparseError):
    """An output file of the command line cannot be written."""


def write_table(table, path: Path) -> None:
    """A DataFrame to Parquet (CSV when the name ends in .csv)."""
    try:
        if path.suffix.lower() == ".csv":
            table.to_csv(path, index=False)
        else:
            table.to_parquet(path, index=False)
    except ImportError as err:
        raise OutputError(f"cannot write Parquet ({err}): install pyarrow "
                          "(pip install glmm_sparse[parquet]) or name a .csv file") from None


STREAMING = {"auto": None, "yes": True, "no": False}


def check_ddf_before_fit(ddf: str | None, *, lmm: bool, ml: bool) -> None:
    """Refuse a --ddf the fit cannot take before reading the data and fitting."""
    if ddf is None:
        return
    normalize_ddf(ddf, glmm=not lmm)
    if ddf == "kenward-roger" and lmm and ml:
        raise ModelSpecError("--ddf kenward-roger needs a REML fit (as lmerTest): drop --ml "
                             "or use --ddf satterthwaite")


def run_fit(args) -> int:
    t0 = time.perf_counter()
    outputs = [Path(out) for out in (args.json, args.ranef) if out]
    for out in outputs:  # refuse before the fit, not after it
        if not out.parent.is_dir():
            raise OutputError(f"cannot write {str(out)!r}: the directory "
                              f"{str(out.parent)!r} does not exist")
    lmm = args.family == "gaussian" and args.link in (None, "identity")
    check_ddf_before_fit(args.ddf, lmm=lmm, ml=args.ml)
    if lmm:
        result = lmer(args.formula, args.data, reml=not args.ml, weights=args.weights,
                      offset=args.offset, streaming=STREAMING[args.streaming],
                      optimizer=args.optimizer)
    else:
        result = glmer(args.formula, args.data, family=args.family, link=args.link,
                       nagq=args.nagq, weights=args.weights, offset=args.offset,
                       streaming=STREAMING[args.streaming], spill_dir=args.spill_dir,
                       optimizer=args.optimizer)
    if not args.quiet:
        print(result.summary(ddf=args.ddf))
        print(f"\nwall time: {time.perf_counter() - t0:.3f} s (read + fit)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result_dict(result, ddf=args.ddf), fh, indent=2)
    if args.ranef:
        write_table(result.ranef, Path(args.ranef))
    return 0


def run_synthetic(args) -> int:
    try:
        design = Design(tuple(args.levels), nested=args.nested, slope=args.slope,
                        family=args.family)
    except ValueError as err:
        raise ModelSpecError(str(err)) from None
    if args.rows < 2:
        raise ModelSpecError(f"--rows must be at least 2, not {args.rows}")
    if args.write:
        t0 = time.perf_counter()
        path = write_parquet(args.write, design, args.rows, seed=args.seed)
        print(f"wrote {args.rows:,} rows to {path} in {time.perf_counter() - t0:.1f} s; "
              f"model: {design.formula()}" + ("" if args.family == "gaussian"
                                               else f", family {args.family}"))
        return 0
    t0 = time.perf_counter()
    data, truth = simulate(design, args.rows, seed=args.seed)
    t1 = time.perf_counter()
    if args.family == "gaussian":
        result = lmer(design.formula(), data, reml=not args.ml)
    else:
        result = glmer(design.formula(), data, family=args.family)
    t2 = time.perf_counter()
    print(result.summary())
    beta = ", ".join(f"{b:g}" for b in truth.beta)
    sds = ", ".join(f"{s:g}" for s in truth.sd)
    sigma = f", sigma = {truth.sigma:g}" if args.family == "gaussian" else ""
    print(f"\ntruth: beta = ({beta}), random-effect SDs = ({sds}){sigma}")
    print(f"data: {args.rows:,} rows generated in {t1 - t0:.2f} s; fit: {t2 - t1:.2f} s "
          f"({result.optimizer.n_evals} evaluations by the optimizer, "
          f"{result.optimizer.n_total_evals} with the convergence check; "
          f"{result.optimizer.seconds:.2f} s optimizing)")
    return 0


@contextlib.contextmanager
def logging_to_stderr(level: str):
    """The package's logger on stderr at ``level`` while the command runs (library code
    only creates records); the handler and level are taken back afterwards, so that a
    process calling main() more than once (tests, notebooks) keeps its own logging."""
    logger = logging.getLogger("glmm_sparse")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    with logging_to_stderr(getattr(args, "log_level", "WARNING")):
        return run(args)


def run(args) -> int:
    """The command, with its errors turned into exit codes."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            return run_fit(args) if args.command == "fit" else run_synthetic(args)
    except (NumericalError, FactorMemoryError, MemoryError, SpillSpaceError) as err:
        print(f"error: the fit failed: {err}", file=sys.stderr)
        return 1
    except (GlmmSparseError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # an output that cannot be written (a full disk, permissions)
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # pyarrow's own errors (ArrowException) on unreadable data
        if not type(err).__module__.startswith("pyarrow"):
            raise
        print(f"error: cannot read the data: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
