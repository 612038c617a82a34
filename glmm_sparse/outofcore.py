"""A generalized linear mixed model fitted from Parquet out of core: the rows encoded once
into memory-mapped arrays on local disk, which every PIRLS pass then streams.

Where it sits: data (``batches.py``: Parquet files, the levels pass) -> HERE (each batch's
model frame, ``batchframe.BatchEncoder``, written to disk) -> the unchanged GLMM machinery
(``pirls.GlmmData``, ``glmm.GlmmObjective``, ``glmm.fit_glmm``) on those arrays -> results.
``glmer(formula, path)`` comes here for a Parquet file, directory, glob or
``pyarrow.dataset.Dataset`` (``streaming=True``, or by default above
``streaming.STREAM_ABOVE_ROWS`` rows).

A GLMM cannot be reduced to sums once: every PIRLS iteration reweights every row. So:

1. The levels pass (``batches.scan_levels``, as for the streamed LMM): complete rows,
   missing values, the levels of every factor (and of a text response).
2. The encoding pass: each batch's complete rows become the model frame an in-memory fit
   makes of them (global levels), appended to ``.npy`` files opened as memory maps
   (``numpy.lib.format.open_memmap``) in a fresh directory under ``spill_dir`` (default:
   the system temporary directory): y, X, offset, prior weights (weights x binomial
   trials), per random term its level codes and its columns of Z, and per pair of terms
   the key of each row's level pair. Running alongside: the R of X's QR (the rank test),
   per-column sums for the optimizer's units, the distinct level-pair keys, the range of
   the response.
3. The level-pair keys are replaced, chunk by chunk, by each row's block index among the
   sorted distinct keys: ``crossprod.pair_index``'s result without holding a column.
   Aliased columns of X (the rank test on the accumulated R) are dropped by a chunked
   copy. The files are reopened read-only.
4. ``GlmmData`` on the memory maps, and the fit exactly as in memory; the arrays are the
   in-memory fit's, value for value, so the estimates are too.

The directory is removed when the fit ends, also when it fails. The result keeps no
memory map: ``fitted``, ``residuals`` and ``scaled_residuals`` are None (they would be
n numbers), its model is a ``streaming.StreamedFitContext`` whose frame refuses methods
that need the rows (``RowsNotKeptError``), as a streamed LMM's does.

Memory (docs/pipelines.md): resident are the levels, the cross-products and the factor,
plus what the GLMM machinery allocates per row on each PIRLS iteration (eta, mu, working
weights and residuals, the right-hand side [X z]: about (p + 9) x 8 bytes per row at
peak), plus the pages of the mapped files the kernels are reading, which the kernel's page
cache holds and drops as it needs (they are file-backed, so they never go to swap).

Level codes are int64 on disk; the compiled kernels (``_core._crossprod``) take int32
codes as well (the in-memory frame's), so int32 files would halve them: not done yet.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from .agq import check_agq_model
from .batchframe import BatchEncoder, check_stateless
from .batches import BATCH_ROWS, open_source, progress_bar, scan_levels
from .crossprod import CrossprodPlan
from .errors import DataError, RankDeficiencyWarning
from .frame import ModelFrame, aliased_columns
from .glmm import GlmmObjective, fit_glmm
from .partials import qr_update
from .pirls import GlmmData
from .responses import binomial_response, column_name, numeric_response
from .results_glmm import GlmerResult, build_glmer_result
from .scaling import theta_units_from_sums
from .streaming import (
    RowlessFrame,
    StreamedFitContext,
    check_missing,
    log_scan,
    stream_spec,
)
from .terms import ReTerm, check_identifiable
from .validate import check_glmm_response_varies

log = logging.getLogger(__name__)

SPILL_PREFIX = "glmm_sparse-spill-"
CHUNK_ROWS = 1 << 20  # rows per chunk when rewriting a spilled column


# -- the spill directory ------------------------------------------------------------------
class SpillDirectory:
    """A fresh directory of ``.npy`` memory maps, removed by ``remove`` (a context manager)."""

    def __init__(self, spill_dir=None):
        if spill_dir is not None and not Path(spill_dir).is_dir():
            raise DataError(f"spill_dir {str(spill_dir)!r} is not a directory: give an "
                            "existing directory on a local disk with room for the encoded rows")
        self.path = Path(tempfile.mkdtemp(prefix=SPILL_PREFIX, dir=spill_dir))

    def create(self, name: str, dtype, shape) -> np.memmap:
        """A new writable array of zeros backed by ``name.npy``."""
        return np.lib.format.open_memmap(self.path / f"{name}.npy", mode="w+",
                                         dtype=dtype, shape=shape)

    def reopen(self, name: str) -> np.memmap:
        """The array of ``name.npy``, read-only."""
        return np.load(self.path / f"{name}.npy", mmap_mode="r")

    def delete(self, name: str) -> None:
        (self.path / f"{name}.npy").unlink()

    def nbytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.iterdir())

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> SpillDirectory:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


# -- a text response ----------------------------------------------------------------------
class FactorResponse:
    """A binomial response read from a text column: 1 for its second level (of all rows,
    found by the levels pass), as ``responses.binomial_response`` does for all rows."""

    def __init__(self, name: str, success):
        self.name, self.success = name, success

    def __call__(self, expr, df: pd.DataFrame, evaluate):
        return (df[self.name] == self.success).to_numpy(dtype=np.float64), None


def factor_response_column(parsed, schema, family) -> str | None:
    """The response's column when it is a text (or dictionary) column of a binomial model:
    its levels must come from all rows, not from one batch."""
    import pyarrow as pa

    name = column_name(parsed.response or "")
    if family.name != "binomial" or name not in schema.names:
        return None
    typ = schema.field(name).type
    if pa.types.is_dictionary(typ):
        return name
    return name if pa.types.is_string(typ) or pa.types.is_large_string(typ) else None


def response_of(parsed, scan, factor_column: str | None, family):
    """The per-batch response function (see FactorResponse)."""
    if factor_column is None:
        return binomial_response if family.name == "binomial" else numeric_response
    used = scan.levels[factor_column].categories(keep_unused=False)
    if len(used) != 2:
        raise DataError(f"binomial response {parsed.response!r} must have two levels "
                        f"(failure first), found {len(used)}: {used[:5]}")
    return FactorResponse(factor_column, used[1])


# -- the encoding pass --------------------------------------------------------------------
class Spiller(BatchEncoder):
    """Pass 2: each batch's model frame appended to the spill directory's arrays."""

    def __init__(self, parsed, formula: str, plan, scan, *, weights, offset, response,
                 family, spill: SpillDirectory):
        super().__init__(parsed, formula, plan, scan, weights=weights, offset=offset,
                         response=response)
        self.family, self.spill = family, spill
        nlev = [len(tl.labels) for tl in self.term_levels]
        self.order = sorted(range(len(nlev)), key=lambda i: -nlev[i])  # order_terms' rule
        self.nlev = [nlev[i] for i in self.order]
        self.pairs = [(a, b) for a in range(len(nlev)) for b in range(a + 1, len(nlev))]
        self.at = 0  # rows written
        self.xnames: tuple[str, ...] | None = None
        self.cnames: list | None = None

    # -- layout: the first non-empty batch ------------------------------------------------
    def _start(self, df, bf) -> None:
        check_stateless([self.parsed.fixed, *(t.lhs for t in self.parsed.random)], df)
        self.xnames, self.cnames = bf.xnames, bf.cnames
        n, p, spill = self.n, len(bf.xnames), self.spill
        self.terms = tuple(self._label_term(i) for i in self.order)
        check_identifiable(list(self.terms), n, allow_n=True)
        self.y = spill.create("y", np.float64, (n,))
        self.X = spill.create("X", np.float64, (n, p))
        self.offset_mm = spill.create("offset", np.float64, (n,))
        self.prior_w = spill.create("prior_w", np.float64, (n,))
        self.codes = [spill.create(f"codes{t}", np.int64, (n,)) for t in range(len(self.terms))]
        self.Z = [spill.create(f"Z{t}", np.float64, (n, term.k))
                  for t, term in enumerate(self.terms)]
        self.keys = [spill.create(f"pair{a}_{b}", np.int64, (n,)) for a, b in self.pairs]
        self.distinct = [[] for _ in self.pairs]  # sorted unique keys, merged as they grow
        self.R = np.zeros((0, p))
        self.col_sumsq = [np.zeros(t.k) for t in self.terms]
        self.col_nonzero = [np.zeros(t.k, dtype=np.int64) for t in self.terms]
        self.y_range = [np.inf, -np.inf]  # of y where the prior weight is positive
        self.any_weight = False

    def _label_term(self, i: int) -> ReTerm:
        t, tl = self.parsed.random[i], self.term_levels[i]
        return ReTerm(t.group_name, tuple(self.cnames[i]), tl.labels,
                      np.empty(0, dtype=np.int64), np.empty((0, len(self.cnames[i]))), t.group)

    def add(self, start: int, batch) -> None:
        """One batch; its rows are numbered from ``start``."""
        encoded = self.encode_batch(start, batch)
        if encoded is None:
            return
        df, bf = encoded
        if self.xnames is None:
            self._start(df, bf)
        elif bf.xnames != self.xnames or bf.cnames != self.cnames:
            raise DataError("a batch of the Parquet data gave other model-matrix columns "
                            f"({list(bf.xnames)}) than the first ({list(self.xnames)}); "
                            "fit in memory with streaming=False")
        self._write(bf)

    def _write(self, bf) -> None:
        nb = len(bf.y)
        rows = slice(self.at, self.at + nb)
        w = bf.w
        if bf.trials is not None:
            w = bf.trials if w is None else w * bf.trials
        w = np.ones(nb) if w is None else w
        self.family.check_response(bf.y, w, name=self.parsed.response, rows=bf.rows)
        X = bf.XB[:, :-1]
        self.y[rows], self.X[rows], self.prior_w[rows] = bf.y, X, w
        self.offset_mm[rows] = 0.0 if bf.offset is None else bf.offset
        codes = [bf.codes[i] for i in self.order]
        for t, i in enumerate(self.order):
            self.codes[t][rows] = codes[t]
            self.Z[t][rows] = bf.xs[i]
            self.col_sumsq[t] += np.einsum("ij,ij->j", bf.xs[i], bf.xs[i])
            self.col_nonzero[t] += np.count_nonzero(bf.xs[i], axis=0)
        for at, (a, b) in enumerate(self.pairs):
            key = codes[a] * np.int64(self.nlev[b]) + codes[b]
            self.keys[at][rows] = key
            self._add_keys(at, np.unique(key))
        if X.shape[1]:
            self.R = qr_update(self.R, X)
        used = bf.y[w > 0]
        if used.shape[0]:
            self.any_weight = True
            self.y_range = [min(self.y_range[0], used.min()), max(self.y_range[1], used.max())]
        self.at += nb

    def _add_keys(self, at: int, keys: np.ndarray) -> None:
        """Distinct level-pair keys as sorted runs, two runs merged when they are as long:
        O(blocks log batches) in all, memory bounded by the number of blocks."""
        runs = self.distinct[at]
        runs.append(keys)
        while len(runs) > 1 and len(runs[-2]) <= len(runs[-1]):
            b, a = runs.pop(), runs.pop()
            runs.append(np.union1d(a, b))

    # -- after the pass ------------------------------------------------------------------
    def finish(self, stacklevel: int) -> tuple[GlmmData, tuple[str, ...], list[str]]:
        """Block indices, aliased columns dropped, the files reopened read-only: the
        GlmmData on them, the kept column names of X and the dropped ones."""
        if self.xnames is None:
            raise DataError("every row has a missing value in a used column; nothing is "
                            "left to fit")
        if self.at != self.n:
            raise DataError(f"the Parquet data changed while they were read: the levels pass "
                            f"counted {self.n} complete rows, the encoding pass {self.at}")
        levels = [self._block_index(at) for at in range(len(self.pairs))]
        xnames, dropped = self._drop_aliased(stacklevel + 1)
        spill = self.spill
        for arr in (self.y, self.X, self.offset_mm, self.prior_w, *self.codes, *self.Z,
                    *self.keys):
            arr.flush()
        terms = tuple(replace(t, codes=spill.reopen(f"codes{i}"), X=spill.reopen(f"Z{i}"))
                      for i, t in enumerate(self.terms))
        plan = CrossprodPlan(terms, tuple(self.pairs),
                             tuple(spill.reopen(f"pair{a}_{b}") for a, b in self.pairs),
                             tuple(levels))
        data = GlmmData(spill.reopen("y"), spill.reopen("X"), spill.reopen("offset"),
                        spill.reopen("prior_w"), self.family, plan)
        self._close()
        return data, xnames, dropped

    def _block_index(self, at: int) -> tuple[np.ndarray, np.ndarray]:
        """Each row's key replaced by its block's index among the sorted distinct keys (as
        crossprod.pair_index); the (level of t, level of s) of each block."""
        runs = self.distinct[at]
        keys = runs[0] if len(runs) == 1 else np.unique(np.concatenate(runs))
        col = self.keys[at]
        for lo in range(0, self.n, CHUNK_ROWS):
            col[lo:lo + CHUNK_ROWS] = np.searchsorted(keys, col[lo:lo + CHUNK_ROWS])
        self.distinct[at] = None
        return tuple(np.divmod(keys, np.int64(self.nlev[self.pairs[at][1]])))

    def _drop_aliased(self, stacklevel: int) -> tuple[tuple[str, ...], list[str]]:
        """frame._drop_aliased's test on the accumulated R of X (equal to rounding)."""
        p = len(self.xnames)
        R = self.R if self.R.shape[0] >= p else np.vstack(
            [self.R, np.zeros((p - self.R.shape[0], p))])
        dropped = aliased_columns(R[:p], R[:p])
        if not dropped:
            return self.xnames, []
        names = [self.xnames[j] for j in dropped]
        warnings.warn(f"fixed-effect model matrix is rank deficient so dropping "
                      f"{len(dropped)} column(s): {', '.join(names)}", RankDeficiencyWarning,
                      stacklevel=stacklevel)
        keep = [j for j in range(p) if j not in dropped]
        kept = self.spill.create("X_kept", np.float64, (self.n, len(keep)))
        for lo in range(0, self.n, CHUNK_ROWS):
            kept[lo:lo + CHUNK_ROWS] = self.X[lo:lo + CHUNK_ROWS][:, keep]
        kept.flush()
        del self.X
        self.spill.delete("X")
        (self.spill.path / "X_kept.npy").rename(self.spill.path / "X.npy")
        self.X = kept
        return tuple(self.xnames[j] for j in keep), names

    def _close(self) -> None:
        """Drop the writable maps (the fit reads the read-only ones)."""
        self.y = self.X = self.offset_mm = self.prior_w = None
        self.codes = self.Z = self.keys = None

    def check_response(self, parsed, family) -> None:
        """validate.check_glmm_response_varies from the range of the response."""
        lo, hi = self.y_range
        y = np.array([lo, hi]) if self.any_weight else np.zeros(0)
        check_glmm_response_varies(y, np.ones(y.shape[0]), family, parsed.response)

    def theta_units(self, theta_map) -> np.ndarray:
        """scaling.theta_units of the in-memory GLMM (prior weights do not scale theta)."""
        return theta_units_from_sums(self.col_sumsq, self.col_nonzero, theta_map)


# -- the fit ------------------------------------------------------------------------------
def glmer_parquet(formula: str, data, parsed, *, family, nagq: int, weights, offset,
                  na_action: str, start, check_convergence: bool, options: dict,
                  factor_mode: str, batch_rows: int = BATCH_ROWS, progress: bool | None = None,
                  spill_dir=None, stacklevel: int = 3) -> GlmerResult:
    """``glmer`` on a Parquet source, out of core (module docstring).

    ``stacklevel`` is the user's call site as seen from here, for the warnings.
    """
    source = open_source(data)
    spec = stream_spec(formula, parsed, source.schema(), weights=weights, offset=offset,
                       na_action=na_action, batch_rows=batch_rows)
    source.check_schemas(spec.columns)
    factor_column = factor_response_column(parsed, source.schema(), family)
    factors = sorted(set(spec.factors) | ({factor_column} if factor_column else set()))
    log.info("glmer out of core: %d rows from %d Parquet file(s) of %s in batches of %d: "
             "columns %s", source.num_rows, len(source.files), source.name, batch_rows,
             spec.columns)
    t0 = time.perf_counter()
    scan = scan_levels(source, spec.columns, factors, list(spec.interactions), batch_rows,
                       progress=progress)
    log_scan(scan, time.perf_counter() - t0)
    check_missing(scan, spec.plan, na_action, stacklevel + 1)
    response = response_of(parsed, scan, factor_column, family)
    with SpillDirectory(spill_dir) as spill:
        spiller = Spiller(parsed, formula, spec.plan, scan, weights=weights, offset=offset,
                          response=response, family=family, spill=spill)
        encode_pass(spiller, source, spec.columns, batch_rows, progress)
        gdata, xnames, dropped = spiller.finish(stacklevel + 1)
        log.info("encoding pass: %d rows, %.1f MB on disk in %s", spiller.at,
                 spill.nbytes() / 2**20, spill.path)
        spiller.check_response(parsed, family)
        check_agq_model(tuple(t.k for t in gdata.plan.terms), int(nagq), family)
        return fit_spilled(formula, parsed, gdata, spiller, scan, source.name, xnames, dropped,
                           nagq=nagq, start=start, check_convergence=check_convergence,
                           options=options, factor_mode=factor_mode, weights=weights,
                           offset=offset, data_name=data if isinstance(data, str) else None)


def encode_pass(spiller: Spiller, source, columns, batch_rows: int, progress) -> None:
    """The second pass over the files: every batch written to the spill directory."""
    t0 = time.perf_counter()
    bar = progress_bar(progress, total=source.num_rows, desc="encoding pass", unit="row")
    try:
        for start_row, batch in source.batches(columns, batch_rows):
            spiller.add(start_row, batch)
            bar.update(batch.num_rows)
    finally:
        bar.close()
    log.info("encoding pass: %.2f s", time.perf_counter() - t0)


def fit_spilled(formula, parsed, gdata: GlmmData, spiller: Spiller, scan, source_name: str,
                xnames, dropped, *, nagq: int, start, check_convergence: bool, options: dict,
                factor_mode: str, weights, offset, data_name) -> GlmerResult:
    """The GLMM fit on the memory-mapped rows, and its result without them."""
    from .models import start_theta

    t0 = time.perf_counter()
    obj = GlmmObjective(gdata, nagq=int(nagq), factor_mode=factor_mode)
    theta_map = obj.pls.theta_map
    units = spiller.theta_units(theta_map)
    stage1, stage2 = fit_glmm(obj, theta0=start_theta(start, theta_map, units),
                              check=check_convergence, optimizer_options=options, units=units)
    log.info("fit: q = %d random effects, p = %d fixed effects, %d + %d evaluations in %.2f s",
             sum(t.q for t in spiller.terms), len(xnames), stage1.n_total_evals,
             0 if stage2 is None else stage2.n_total_evals, time.perf_counter() - t0)
    return spilled_result(formula, parsed, obj, stage1, stage2, spiller, scan, source_name,
                          xnames, dropped, options=dict(factor_mode=factor_mode,
                                                        check_convergence=check_convergence,
                                                        optimizer_options=options),
                          weights=weights, offset=offset, data_name=data_name)


def spilled_result(formula, parsed, obj: GlmmObjective, stage1, stage2, spiller: Spiller,
                   scan, source_name: str, xnames, dropped, *, options, weights, offset,
                   data_name) -> GlmerResult:
    """The GlmerResult, built by results_glmm.build_glmer_result on a frame of the fit's
    structure, then without per-row values and with a context that holds no memory map."""
    n, p = scan.n_complete, len(xnames)
    frame = ModelFrame(np.empty(0), np.empty((0, p)), tuple(xnames), None, None,
                       spiller.terms, pd.RangeIndex(n), scan.n_rows - n, tuple(dropped))
    result = build_glmer_result(formula, frame, obj, stage1, stage2, weights_name=weights,
                                data_name=data_name, offset_name=offset, parsed=parsed,
                                options=options)
    rowless = RowlessFrame(tuple(xnames), spiller.terms, n, scan.n_rows - n, source_name,
                           tuple(dropped), offset_column=offset)
    ctx = result.model
    context = StreamedFitContext(ctx.formula, ctx.parsed, rowless, ctx.options, ctx.params,
                                 None, cp=obj.pls.cp)
    return replace(result, nobs=n, fitted=None, residuals=None, scaled_residuals=None,
                   model=context)

