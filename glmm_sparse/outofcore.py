"""A generalized linear mixed model fitted from Parquet out of core: the rows encoded once
into memory-mapped arrays on local disk, which every PIRLS pass then streams.

Where it sits: data (``batches.py``: Parquet files, the levels pass) -> HERE (each batch's
model frame, ``batchframe.BatchEncoder``, written to disk) -> the unchanged GLMM machinery
(``pirls.GlmmData``, ``glmm.GlmmObjective``, ``glmm.fit_glmm``) on those arrays -> results.
``glmer(formula, path)`` comes here for a Parquet file, directory, glob or
``pyarrow.dataset.Dataset`` (``streaming=True``, or by default above
``streaming.STREAM_ABOVE_ROWS`` rows).

A GLMM cannot be reduced to sums once: every PIRLS iteration reweights every row. So:

1. The levels pass (``levelscan.scan_levels``, as for the streamed LMM): complete rows,
   missing values, the levels of every factor (and of a text response).
2. The encoding pass: each batch's complete rows become the model frame an in-memory fit
   makes of them (global levels), appended to ``.npy`` files opened as memory maps
   (``numpy.lib.format.open_memmap``) in ``spill_dir`` (default: the system temporary
   directory), each unlinked as soon as it is mapped (``SpillDirectory``): y, X, offset, prior weights (weights x binomial
   trials), per random term its level codes and its columns of Z, and per pair of terms
   the key of each row's level pair. Running alongside: the R of X's QR (the rank test),
   per-column sums for the optimizer's units, the distinct level-pair keys, the range of
   the response.
3. The level-pair keys are replaced, chunk by chunk, by each row's block index among the
   sorted distinct keys: ``crossprod.pair_index``'s result without holding a column.
   Aliased columns of X (the rank test on the accumulated R) are dropped by a chunked
   copy. The fit reads read-only views of the maps.
4. ``GlmmData`` on the memory maps, and the fit exactly as in memory; the arrays are the
   in-memory fit's, value for value, so the estimates are too.

No spill file keeps a name while the fit runs, so nothing outlives the process, however
it ends. The result keeps no
memory map: ``fitted``, ``residuals`` and ``scaled_residuals`` are None (they would be
n numbers), its model is a ``streaming.StreamedFitContext`` whose frame refuses methods
that need the rows (``RowsNotKeptError``), as a streamed LMM's does.

Memory (docs/pipelines.md): resident are the levels, the cross-products and the factor,
the family's starting eta (8 bytes per row; PIRLS's passes hold everything else per chunk
of rows, rowpass.py), plus the pages of the mapped files the kernels are reading, which
the kernel's page cache holds and drops as it needs (they are file-backed, so they never
go to swap).

Level codes are int64 on disk; the compiled kernels (``_core._crossprod``) take int32
codes as well (the in-memory frame's), so int32 files would halve them: not done yet.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from .agq import check_agq_model
from .batches import BATCH_ROWS
from .batchframe import BatchEncoder, check_same_columns, check_stateless, in_this_batch
from .crossprod import CrossprodPlan
from .errors import DataError, SpillSpaceError
from .frame import NOTHING_LEFT, ModelFrame, aliased_columns, warn_rank_deficient
from .glmm import GlmmObjective, fit_glmm
from .partials import qr_update, union_of_sorted
from .pirls import GlmmData
from .responses import binomial_response, column_name, numeric_response
from .results_glmm import GlmerResult, build_glmer_result
from .scaling import theta_units_from_sums
from .streaming import (
    RowlessFrame,
    StreamedFitContext,
    levels_pass,
    open_stream,
    rows_pass,
)
from .terms import ReTerm, check_identifiable
from .validate import check_glmm_response_varies

log = logging.getLogger(__name__)

SPILL_PREFIX = "glmm_sparse-spill-"
CHUNK_ROWS = 1 << 20  # rows per chunk when rewriting a spilled column


# -- the spill files ----------------------------------------------------------------------
class SpillDirectory:
    """Memory-mapped ``.npy`` arrays in ``spill_dir`` (default: the system temporary
    directory) that no name outlives: each file is created, given its blocks
    (``os.posix_fallocate``, so that a full disk is an error here rather than a SIGBUS
    when a page is first written), mapped, and unlinked at once. The mapping keeps the
    data until the arrays are dropped or the process ends, however it ends (a killed job
    leaves nothing behind). ``remove`` (a context manager) unlinks any file a failure
    left between its creation and its unlinking."""

    def __init__(self, spill_dir=None):
        if spill_dir is not None and not Path(spill_dir).is_dir():
            raise DataError(f"spill_dir {str(spill_dir)!r} is not a directory: give an "
                            "existing directory on a local disk with room for the encoded rows")
        self.path = Path(tempfile.gettempdir() if spill_dir is None else spill_dir)
        self.pending: set[Path] = set()
        self.bytes = 0

    def check_room(self, nbytes: int) -> None:
        """Refuse, before anything is written, when the disk has less room than the
        encoded rows need."""
        free = shutil.disk_usage(self.path).free
        if free < nbytes:
            raise SpillSpaceError(f"the out-of-core fit needs about {nbytes / 2**20:,.0f} MB in "
                            f"spill_dir {str(self.path)!r}, which has {free / 2**20:,.0f} MB "
                            "free: give spill_dir= a local disk with room for them, or fit "
                            "fewer rows")

    def create(self, name: str, dtype, shape) -> np.memmap:
        """A new writable array of zeros, on disk but under no name."""
        fd, path = tempfile.mkstemp(prefix=SPILL_PREFIX, suffix=f"-{name}.npy", dir=self.path)
        os.close(fd)
        path = Path(path)
        self.pending.add(path)
        try:
            arr = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
            size = path.stat().st_size
            if hasattr(os, "posix_fallocate") and size:
                with open(path, "r+b") as fh:
                    try:
                        os.posix_fallocate(fh.fileno(), 0, size)
                    except OSError as err:
                        raise SpillSpaceError(
                            f"cannot reserve {size / 2**20:,.0f} MB for the encoded rows in "
                            f"spill_dir {str(self.path)!r}: {err.strerror or err}; give "
                            "spill_dir= a local disk with room for them") from err
        finally:
            path.unlink(missing_ok=True)
            self.pending.discard(path)
        self.bytes += size
        return arr

    @staticmethod
    def read_only(arr: np.ndarray) -> np.ndarray:
        """A read-only view of a spilled array (what the fit reads)."""
        view = arr.view()
        view.flags.writeable = False
        return view

    def nbytes(self) -> int:
        return self.bytes

    def remove(self) -> None:
        for path in list(self.pending):
            path.unlink(missing_ok=True)
        self.pending.clear()

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
                 family, nagq: int, spill: SpillDirectory):
        super().__init__(parsed, formula, plan, scan, weights=weights, offset=offset,
                         response=response)
        self.family, self.nagq, self.spill = family, nagq, spill
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
        check_agq_model(tuple(t.k for t in self.terms), self.nagq, self.family)
        spill.check_room(8 * n * self.columns_per_row(p))
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

    def columns_per_row(self, p: int) -> int:
        """8-byte values spilled per row: y, X, offset, prior weight, per term its codes
        and its columns of Z, per pair of terms a key (docs/pipelines.md)."""
        return p + 3 + sum(1 + t.k for t in self.terms) + len(self.pairs)

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
        else:
            check_same_columns(bf, self.xnames, self.cnames)
        self._write(bf)

    def _write(self, bf) -> None:
        nb = len(bf.y)
        rows = slice(self.at, self.at + nb)
        w = bf.w
        if bf.trials is not None:
            w = bf.trials if w is None else w * bf.trials
        w = np.ones(nb) if w is None else w
        with in_this_batch():
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
            runs.append(union_of_sorted(a, b)[0])

    # -- after the pass ------------------------------------------------------------------
    def finish(self, stacklevel: int) -> tuple[GlmmData, tuple[str, ...], list[str]]:
        """Block indices, aliased columns dropped, the files reopened read-only: the
        GlmmData on them, the kept column names of X and the dropped ones."""
        if self.xnames is None:
            raise DataError(NOTHING_LEFT)
        if self.at != self.n:
            raise DataError(f"the Parquet data changed while they were read: the levels pass "
                            f"counted {self.n} complete rows, the encoding pass {self.at}")
        levels = [self._block_index(at) for at in range(len(self.pairs))]
        xnames, dropped = self._drop_aliased(stacklevel + 1)
        ro = self.spill.read_only
        terms = tuple(replace(t, codes=ro(self.codes[i]), X=ro(self.Z[i]))
                      for i, t in enumerate(self.terms))
        plan = CrossprodPlan(terms, tuple(self.pairs), tuple(ro(k) for k in self.keys),
                             tuple(levels))
        data = GlmmData(ro(self.y), ro(self.X), ro(self.offset_mm), ro(self.prior_w),
                        self.family, plan)
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
        warn_rank_deficient(names, stacklevel=stacklevel + 1)
        keep = [j for j in range(p) if j not in dropped]
        kept = self.spill.create("X_kept", np.float64, (self.n, len(keep)))
        for lo in range(0, self.n, CHUNK_ROWS):
            kept[lo:lo + CHUNK_ROWS] = self.X[lo:lo + CHUNK_ROWS][:, keep]
        self.X = kept  # the full X's pages go with its last reference
        return tuple(self.xnames[j] for j in keep), names

    def _close(self) -> None:
        """Drop the writable arrays (the fit reads read-only views of them)."""
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
    source, spec = open_stream(formula, data, parsed, weights=weights, offset=offset,
                               na_action=na_action, batch_rows=batch_rows)
    factor_column = factor_response_column(parsed, source.schema(), family)
    factors = sorted(set(spec.factors) | ({factor_column} if factor_column else set()))
    log.info("glmer out of core: %d rows from %d Parquet file(s) of %s in batches of %d: "
             "columns %s", source.num_rows, len(source.files), source.name, batch_rows,
             spec.columns)
    scan = levels_pass(source, spec, factors, response=None, na_action=na_action,
                       progress=progress, stacklevel=stacklevel + 1)
    response = response_of(parsed, scan, factor_column, family)
    with SpillDirectory(spill_dir) as spill:
        spiller = Spiller(parsed, formula, spec.plan, scan, weights=weights, offset=offset,
                          response=response, family=family, nagq=int(nagq), spill=spill)
        seconds = rows_pass(source, spec, spiller.add, progress=progress,
                            desc="encoding pass")
        gdata, xnames, dropped = spiller.finish(stacklevel + 1)
        log.info("encoding pass: %d rows, %.1f MB on disk (unlinked) in %s, %.2f s",
                 spiller.at, spill.nbytes() / 2**20, spill.path, seconds)
        spiller.check_response(parsed, family)
        return fit_spilled(formula, parsed, gdata, spiller, scan, source.name, xnames, dropped,
                           nagq=nagq, start=start, check_convergence=check_convergence,
                           options=options, factor_mode=factor_mode, weights=weights,
                           offset=offset, data_name=data if isinstance(data, str) else None)


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
                                options=options, per_row=False)
    rowless = RowlessFrame(tuple(xnames), spiller.terms, n, scan.n_rows - n, source_name,
                           tuple(dropped), offset_column=offset)
    ctx = result.model
    context = StreamedFitContext(ctx.formula, ctx.parsed, rowless, ctx.options, ctx.params,
                                 None, cp=obj.pls.cp)
    return replace(result, nobs=n, rows_source=None, model=context)

