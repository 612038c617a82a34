"""A linear mixed model fitted from Parquet in bounded memory: the cross-products of
DESIGN.md section 2 accumulated batch by batch.

Where it sits: data (``batches.py``: Parquet files, the levels pass) -> HERE (model frame
and cross-products, one batch at a time) -> objective -> optimize -> results, the same
``LmmObjective`` and ``minimize_theta`` as an in-memory fit. ``lmer(formula, path)``
comes here for a Parquet file, directory, glob or ``pyarrow.dataset.Dataset``
(``streaming=True``, or by default when the files hold more than ``STREAM_ABOVE_ROWS``).

Two passes over the files, reading only the used columns:

1. ``levelscan.scan_levels``: complete rows, missing values, the levels of every factor.
   Then the missing-row warning (or refusal), the levels of each random term in lme4's
   order, and the terms sorted as lme4 sorts them.
2. Per batch: the model frame of its complete rows exactly as ``frame.build_frame`` would
   make it, except that factors are pandas Categoricals with the global levels (so
   formulaic gives every batch the same columns; ``batchframe.BatchEncoder``, shared with
   the out-of-core GLMM of ``outofcore.py``), then, into running sums (``partials.py``), what
   ``crossprod.CrossprodPlan.accumulate`` computes for all rows at once: the diagonal
   blocks of Z'WZ (global level codes), Z'W[X y], the R of a QR of [X y] (which gives
   [X y]'W[X y] as R'R), and the level-pair blocks of crossed terms, which are only
   known as they appear: each batch's blocks,
   keyed by (level_t, level_s), are merged into sorted runs as a binary counter merges
   (``BlockRuns``), O(blocks log batches) in all.

Memory: the levels, nnz(Z'Z) (the blocks), Z'W[X y] (q x (p + 1)) and one batch of the
used columns with its model matrices; never a column of all rows.

What an in-memory fit decides from the rows is decided here from n-free sums:

- Aliased fixed-effects columns: the in-memory path tests |R_jj| < 1e-7 |X_j| on the R of
  a QR of [X, y - offset]. Here the R is accumulated batch by batch (R of [R_old; batch],
  a QR of the rows in another association, equal to rounding) and the column norms are
  those of R's columns (orthogonal transformations keep them). A column whose |R_jj| /
  |X_j| lies within rounding of 1e-7 could be decided differently; no ordinary design
  comes near.
- The response's shift (crossprod.response_matrix: the least-squares fit of y - offset
  on X is taken out of y, to keep pwrss's digits): the batches carry y - offset - c, c
  the mean of y - offset over all complete rows, summed in the first pass, when X has an
  intercept (0 otherwise; a c that depends on no batch's position lets partial sums of
  any partitions be merged); a
  weighted QR of [X, y - offset - c], accumulated as above, gives the least-squares fit
  beta1 and the weighted residual sum of squares |r|^2 = R_yy^2 without cancellation;
  Z'Wr = Z'W(y - offset - c) - Z'WX beta1 (exact algebra; the rounding is eps times
  |Z'W X beta1| instead of eps |Z'Wr|), X'WX = R_X'R_X and X'Wr = R_X'(R_Xy - R_X
  beta1), from the same R (no Gram of [X y] is summed; the in-memory path sums one:
  the two agree to rounding).
- lme4's moment start and the optimizer's units (start.py, scaling.py): from per-level
  sums of y and per-column sums of squares.

Per-row results are not kept: ``fitted``, ``residuals`` and ``scaled_residuals`` of a
streamed fit are None (they would be n numbers). Everything n-free is exact: fixef,
vcov, varcorr, ranef (with condsd), coef, theta, sigma, loglik, AIC, BIC, the optimizer
report. The result's ``model`` is a ``StreamedFitContext``: it keeps the cross-products
(n-free; they survive pickling), so Wald intervals, conditional variances and other
methods that need only the criterion work; its frame (``RowlessFrame``) raises
``RowsNotKeptError`` naming the remedy when a method asks for the rows.

Partitions anywhere (``dask.py``, ``spark.py``): the first pass is a ``LevelScan`` per
partition, merged (``levelscan.LevelScan.merge``); an ``Accumulator`` built from the merged
scan is shipped to each partition, whose ``accumulate_partition`` returns its
``partials.PartialSums`` (n-free, picklable); ``merge_partials`` adds two of them (R's by a QR of
the stacked R's, level-pair blocks by key, the rest by sum, min and max), and
``fit_partials`` fits the merged sums exactly as a Parquet fit fits its own.

Not supported when streaming (each refused with a message naming ``streaming=False``):
weights or offsets given as arrays (name a column), stateful transforms (``scale(x)``,
``poly(x, 2)``: their state comes from all rows), a numeric column used both inside
``C()`` and as a number.
"""
from __future__ import annotations

import copy
import functools
import logging
import time
import warnings
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from ._core import _crossprod
from .batches import (
    BATCH_ROWS,
    ReadAhead,
    frame_batches,
    open_source,
    progress_bar,
    read_ahead_depth,
)
from .batchframe import (
    BatchEncoder,
    BatchFrame,
    ResponseShift,
    StreamPlan,
    check_same_columns,
    check_stateless,
    stream_plan,
)
from .blas import one_blas_thread
from .classed import ClassedObjective, ClassSums, classes_refused, objective_with_b
from .context import FitContext
from .crossprod import CrossProducts, PairBlocks
from .errors import DataError, DroppedRowsWarning, ModelSpecError
from .frame import NOTHING_LEFT, aliased_columns, warn_rank_deficient
from .levelscan import LevelScan, scan_levels, scan_partition
from .levelsums import LevelSums
from .objective import LmmObjective, fixed_sigma_unit
from .parallel import Pending, submit_all
from .partials import BlockRuns, PartialSums, QRStack, Sums, merge_partials, tree_merge
from .results import LmerResult, build_lmer_result
from .rowcodes import RowCodes, structure_refusal
from .scaling import theta_units_from_sums
from .start import applies, moment_theta_from_sums
from .terms import ReTerm, check_identifiable, order_terms
from .validate import check_has_rows, check_residual_variation, check_response_varies

STREAM_ABOVE_ROWS = 5_000_000  # lmer(streaming=None) streams Parquet holding more rows

log = logging.getLogger(__name__)

# re-exported: the Dask and Spark fits and older callers reach the partial sums here too
__all__ = ["merge_partials", "tree_merge", "PartialSums"]


class RowsNotKeptError(DataError):
    """A method needs the rows of a fit that streamed them from Parquet."""


@dataclass
class Layout:
    """What the first non-empty batch fixes: column names of X and of each term."""

    xnames: tuple[str, ...]
    cnames: list  # per parsed term
    order: list  # parsed-term index of each term in lme4's order
    centre: float


class Accumulator(BatchEncoder):
    """Pass 2: one batch at a time, the frame of its complete rows and the running sums.

    Pipelined: ``add`` encodes its batch while the kernels of the previous batch run on
    the pool, then waits for them and starts its own, and returns. A batch's tasks start
    only after the previous batch's have finished, so every sum adds the batches in the
    same order whatever the threads; ``sums`` (and ``partial``) wait for the last batch.
    An exception of a task is raised by the next ``add`` (before that batch's own errors:
    the batches' order) or by ``sums``.
    """

    _pending: Pending | None = None  # the tasks of the last batch added

    def __init__(self, parsed, formula: str, plan: StreamPlan, scan, *, weights, offset,
                 allow_n: bool = False):
        super().__init__(parsed, formula, plan, scan, weights=weights, offset=offset)
        self.allow_n = allow_n  # sigma known: one random effect per row is identifiable
        self.centre = scan.centre
        self.layout: Layout | None = None
        self.sums = None
        self.rows = 0
        # lmer's factor_mode when this pass may take the count classes (rowcodes.py);
        # None for partitions (Dask, Spark), which ship sums, not rows
        self.classes_mode: str | None = None
        self.row_codes: RowCodes | None = None
        self._qr = (QRStack(), QRStack())  # the running R and Rw's buffers

    @property
    def sums(self) -> Sums | None:
        """The running sums (the last batch's tasks waited for, and the per-level sums of
        the batches so far moved in first)."""
        self.wait()
        self._move_level_sums()
        return self._sums

    @sums.setter
    def sums(self, value: Sums | None) -> None:
        self.wait()  # no task of an earlier batch writes into what is replaced
        self._sums = value
        self._level_sums: LevelSums | None = None  # the pass's per-level sums so far

    def wait(self) -> None:
        """Wait for the tasks of the last batch added (their exception is raised here).
        They are forgotten only once all have finished: a wait cut short (an interrupt)
        leaves them to the next one."""
        pending = self._pending
        if pending is None:
            return
        try:
            pending.wait()
        finally:
            if pending.done():
                self._pending = None

    def settle(self, err: BaseException) -> None:
        """After ``err`` stopped a pass: wait for the last batch's tasks, so that none is
        left writing into the sums; a task's own exception (the earlier failure) is
        raised instead, with ``err`` as its cause."""
        try:
            self.wait()
        except BaseException as task_err:
            raise task_err from err

    def __getstate__(self):
        self.wait()  # a pickled accumulator (Dask, Spark) carries no running tasks
        return dict(self.__dict__)

    def _move_level_sums(self) -> None:
        """Add the per-level sums of the batches so far into the Sums' diag, cross,
        level_n and level_y (a copy of each term's buffer, once per pass)."""
        if self._level_sums is None:
            return
        s = self._sums
        self._level_sums.move_into(s.diag, s.cross, s.level_n, s.level_y)
        self._level_sums = None

    def drop_buffers(self) -> None:
        """Let the pass's working buffers go (the QR stacks: a batch of [X y] each) once
        no batch is left to add."""
        self.wait()
        self._qr = (QRStack(), QRStack())

    def fresh(self) -> Accumulator:
        """A copy that has seen no rows (sharing the levels): one per partition."""
        self.wait()
        acc = copy.copy(self)
        acc.layout, acc.sums, acc.rows = None, None, 0
        acc.classes_mode, acc.row_codes = None, None
        acc.lean, acc._lean_decided = None, False  # its first batch takes the full frame
        acc._qr = (QRStack(), QRStack())
        return acc

    def partial(self) -> PartialSums:
        """The sums so far, compacted, to ship and merge."""
        if self.sums is None:
            return PartialSums(rows=self.rows)
        for runs in self.sums.pairs:
            runs.compact()
        return PartialSums(self.layout.xnames, list(self.layout.cnames), self.sums, self.rows)

    def absorb(self, part: PartialSums) -> None:
        """Take merged partial sums as this accumulator's own (the fit reads them)."""
        if part.sums is None:
            raise DataError("no partition held a complete row; nothing is left to fit")
        self.set_layout(part.xnames, part.cnames)
        self.sums, self.rows = part.sums, part.rows

    # -- one batch ---------------------------------------------------------------------
    def add(self, start: int, batch, labels=None) -> None:
        """One batch; its rows are numbered from ``start`` (or labelled by ``labels``).
        Its sums are started, not finished (class docstring)."""
        try:
            encoded = self.encode_batch(start, batch, labels)
            if encoded is None:
                return
            df, bf = encoded
            if self.layout is None:
                self._start(df, bf)
            else:
                check_same_columns(bf, self.layout.xnames, self.layout.cnames)
        except BaseException:
            self.wait()  # an earlier batch's failed task is reported first
            raise
        self.rows += len(bf.y)
        self._accumulate(len(bf.y), bf)

    # -- the first non-empty batch fixes the layout --------------------------------------
    def _start(self, df, bf: BatchFrame) -> None:
        check_stateless([self.parsed.fixed, *(t.lhs for t in self.parsed.random)], df)
        self.set_layout(bf.xnames, bf.cnames)

    def set_layout(self, xnames, cnames) -> None:
        """The terms in lme4's order, the centre and zero sums for these columns."""
        labels = [ReTerm(t.group_name, c, tl.labels, np.empty(0, dtype=np.int64),
                         np.empty((0, len(c))))
                  for t, c, tl in zip(self.parsed.random, cnames, self.term_levels)]
        ordered = order_terms(labels)
        order = [labels.index(t) for t in ordered]
        check_identifiable(ordered, self.n, allow_n=self.allow_n)
        centre = self.centre if xnames and xnames[0] == "(Intercept)" else 0.0
        self.layout = Layout(tuple(xnames), list(cnames), order, centre)
        self.terms = tuple(ordered)
        self.row_codes = self._row_codes(len(xnames))
        m = len(xnames) + 1
        ks = [t.k for t in ordered]
        self.sums = Sums(
            diag=[np.zeros((t.nlev, t.k, t.k)) for t in ordered],
            cross=[np.zeros((t.q, m)) for t in ordered],
            pairs=[BlockRuns((ks[i], ks[j])) for i in range(len(ks))
                   for j in range(i + 1, len(ks))],
            R=np.zeros((0, m)),
            Rw=None if self.weights is None else np.zeros((0, m)),
            level_n=[np.zeros(t.nlev) for t in ordered],
            level_y=[np.zeros(t.nlev) for t in ordered],
            col_sumsq=[np.zeros(t.k) for t in ordered],
            col_nonzero=[np.zeros(t.k, dtype=np.int64) for t in ordered])

    def _accumulate(self, nb: int, bf: BatchFrame) -> None:
        s, order = self._sums, self.layout.order
        y, XB, w = bf.y, bf.XB, bf.w
        r = y if bf.offset is None else y - bf.offset
        yc = y - self.layout.centre
        XB[:, -1] = yc if r is y else r - self.layout.centre
        if w is None:
            w = _ones(nb)
        xs = [bf.xs[i] for i in order]  # the kernels take strided columns (views of XB)
        codes = [bf.codes[i] for i in order]
        if self._level_sums is None:
            self._level_sums = LevelSums(self.terms, self.layout.xnames)
        tasks = self._level_sums.tasks(codes, xs, XB, w, yc, s.col_sumsq, s.col_nonzero)
        qr, qrw = self._qr
        tasks.append(lambda: setattr(s, "R", qr.update(s.R, XB)))
        if s.Rw is not None:
            tasks.append(lambda: setattr(s, "Rw", qrw.update(s.Rw, XB * np.sqrt(w)[:, None])))
        tasks.append(lambda: self._row_sums(y, r, w, yc))
        tasks += self._pair_tasks(codes, xs, w)
        if self.row_codes is not None:  # the copy into the n-long arrays runs on the pool
            # too: 1.1 ms of a crossed batch's main thread, mostly first touches of memory
            rows, kept = self.row_codes.reserve(nb), self.row_codes
            tasks.append(lambda: kept.write(rows, codes, xs))
        self.wait()  # the previous batch's sums first: the order of additions is fixed
        self._pending = submit_all(tasks, nb)

    def _row_sums(self, y, r, w, yc) -> None:
        """The batch's counts, sums and extremes of the response and weights (one task: a
        few quick passes over the batch; each term's column sizes are its level sums')."""
        s = self._sums
        if self.weights is None:  # w is ones: sums of ones are exact counts
            s.n_pos += len(w)
            s.sum_w_pos += float(len(w))
        else:
            pos = w > 0
            s.n_pos += int(pos.sum())
            s.sum_log_w += float(np.log(w[pos]).sum())
            s.sum_w_pos += float(w[pos].sum())
        s.y_sum += float(yc.sum())
        s.y_sumsq += float(yc @ yc)
        s.y_min, s.y_max = min(s.y_min, float(y.min())), max(s.y_max, float(y.max()))
        r_max = max(-s.y_min, s.y_max) if r is y else float(np.abs(r).max())
        s.r_max = max(s.r_max, r_max)

    def _row_codes(self, p: int) -> RowCodes | None:
        """The per-row codes to keep for the count classes, if this pass may take them:
        always with factor_mode "classes" (refused here, before any sum, where the
        structure does not allow them), by default ("measure") where the structure allows
        them and the codes fit their share of the memory budget."""
        if self.classes_mode not in ("classes", "measure"):
            return None
        reason = structure_refusal(self.terms, p, self.weights is not None)
        if self.classes_mode == "classes":
            if reason is not None:
                raise classes_refused(reason)
            return RowCodes(self.n, self.terms)
        if reason is None and RowCodes.fits(self.n, self.terms):
            return RowCodes(self.n, self.terms)
        return None

    def _pair_tasks(self, codes, xs, w):
        """Level-pair blocks of this batch, merged into the running BlockRuns (the first
        term's are built from the kept row codes instead, when they are kept)."""
        tasks, at = [], 0
        terms = self.terms
        for i in range(len(terms)):
            for j in range(i + 1, len(terms)):
                runs = self._sums.pairs[at]
                at += 1
                if i == 0 and self.row_codes is not None:
                    continue

                def task(i=i, j=j, runs=runs):
                    key = codes[i] * np.int64(terms[j].nlev) + codes[j]
                    block, uniques = pd.factorize(key, sort=True)
                    A = np.zeros((len(uniques), terms[i].k, terms[j].k))
                    _crossprod.add_pair_blocks(block.astype(np.int64), xs[i], xs[j], w, A)
                    runs.add(np.asarray(uniques, dtype=np.int64), A)
                tasks.append(task)
        return tasks


@functools.lru_cache(maxsize=2)
def _ones(nb: int) -> np.ndarray:
    """nb ones, read-only: the weights of an unweighted batch (every batch of a pass but
    the last has the same size; the kernels only read them)."""
    ones = np.ones(nb)
    ones.flags.writeable = False
    return ones


# -- from the sums to the cross-products ---------------------------------------------------
def crossproducts(acc: Accumulator, formula_stack: int) -> tuple[CrossProducts, list[str], list[str]]:
    """CrossProducts of the kept fixed-effects columns, their names and the dropped ones."""
    s, lay, terms = acc.sums, acc.layout, acc.terms
    p = len(lay.xnames)
    R = _square(s.R, p + 1)
    dropped = aliased_columns(R[:, :p], R)
    if dropped:
        warn_rank_deficient([lay.xnames[j] for j in dropped], stacklevel=formula_stack + 1)
    keep = [j for j in range(p) if j not in dropped]
    cols = keep + [p]
    Rk = np.linalg.qr(_square(s.R if s.Rw is None else s.Rw, p + 1)[:, cols], mode="r")
    pk = len(keep)
    beta1 = np.linalg.lstsq(Rk[:pk, :pk], Rk[:pk, pk], rcond=None)[0] if pk else np.zeros(0)
    rWr = float(Rk[pk, pk] ** 2)
    check_residual_variation(np.array([np.sqrt(rWr / max(s.sum_w_pos, 1e-300))]),
                             np.array([s.r_max]))
    ZtWB = np.vstack(s.cross) if s.cross else np.zeros((0, p + 1))
    ZtWXy = np.empty((ZtWB.shape[0], pk + 1))
    ZtWXy[:, :pk] = ZtWB[:, keep]
    ZtWXy[:, pk] = ZtWB[:, p] - ZtWB[:, keep] @ beta1
    # X'WX and X'W(y - X beta1) from R (R'R = [X y]'W[X y], to rounding): no Gram of
    # [X y] a batch besides its QR (0.39 ms of a 65,536-row batch's 3.5 ms of CPU)
    XtWXy = np.empty((pk + 1, pk + 1))
    Rx = Rk[:pk, :pk]
    G = Rx.T @ Rx
    XtWXy[:pk, :pk] = 0.5 * (G + G.T)
    XtWXy[:pk, pk] = XtWXy[pk, :pk] = Rx.T @ (Rk[:pk, pk] - Rx @ beta1)
    XtWXy[pk, pk] = rWr
    shift = beta1.copy()
    if lay.centre and pk:
        shift[0] += lay.centre  # the intercept (column 0, never aliased) carries c
    pairs, at = [], 0
    for i in range(len(terms)):
        for j in range(i + 1, len(terms)):
            keys, A = s.pairs[at].result()
            at += 1
            lev_t, lev_s = np.divmod(keys, np.int64(terms[j].nlev))
            pairs.append(PairBlocks(i, j, lev_t, lev_s, A))
    cp = CrossProducts(k=tuple(t.k for t in terms), nlev=tuple(t.nlev for t in terms),
                       diag=tuple(s.diag), pairs=tuple(pairs), ZtWXy=ZtWXy, XtWXy=XtWXy,
                       n=s.n_pos, sum_log_w=s.sum_log_w,
                       beta_shift=shift if pk else None)
    return cp, [lay.xnames[j] for j in keep], [lay.xnames[j] for j in dropped]


def _square(R: np.ndarray, m: int) -> np.ndarray:
    """R padded with zero rows to m x m (fewer rows than columns so far)."""
    if R.shape[0] >= m:
        return R[:m]
    return np.vstack([R, np.zeros((m - R.shape[0], m))])


# -- start and units from sums --------------------------------------------------------------
def moment_theta_sums(terms, s: Sums, n: int) -> np.ndarray | None:
    """start.moment_theta from the per-level counts and sums of y - c (n-free)."""
    if not applies(terms, n):
        return None
    return moment_theta_from_sums(s.level_n, s.level_y, s.y_sum, s.y_sumsq, n)


def theta_units_sums(terms, theta_map, s: Sums, weighted: bool) -> np.ndarray:
    """scaling.theta_units from per-column sums of squares and non-zero counts."""
    w_size = float(np.sqrt(s.sum_w_pos / s.n_pos)) if weighted and s.n_pos else 1.0
    return theta_units_from_sums(s.col_sumsq, s.col_nonzero, theta_map, w_size)


# -- a result without rows ---------------------------------------------------------------------
_ROWS_MESSAGE = ("this fit streamed its {n} rows from {source} and keeps no per-row values "
                 "({what}); fit in memory (lmer or glmer with streaming=False) for methods "
                 "that need the rows: refit, simulate, bootstrap, residuals, predictions on the fit's rows")


_CLASSES_MESSAGE = ("this fit streamed its rows from {source} through the count classes "
                    "(classed.py), which keep no level pairs of the first term; this method "
                    "needs them: fit again with factor_mode='supernodal'")


@dataclass(frozen=True, eq=False)
class RowlessFrame:
    """A streamed fit's model frame: its structure (terms' labels, X's names, n) without
    rows; asking for the rows raises RowsNotKeptError."""

    xnames: tuple[str, ...]
    terms: tuple[ReTerm, ...]
    n: int
    n_dropped: int
    source: str
    dropped_columns: tuple[str, ...] = ()
    fixed_spec: object = None
    offset_column: str | None = None
    offset_array: bool = False

    def _no_rows(self, what: str):
        raise RowsNotKeptError(_ROWS_MESSAGE.format(n=self.n, source=self.source, what=what))

    y = property(lambda self: self._no_rows("y"))
    X = property(lambda self: self._no_rows("X"))
    weights = property(lambda self: self._no_rows("weights"))
    offset = property(lambda self: self._no_rows("offset"))
    row_index = property(lambda self: self._no_rows("row_index"))
    XB = property(lambda self: self._no_rows("XB"))
    R_XB = property(lambda self: self._no_rows("R_XB"))


@dataclass(eq=False)
class StreamedFitContext(FitContext):
    """A FitContext whose cross-products are kept (n-free; they survive pickling), so the
    objective can be rebuilt without the rows."""

    cp: CrossProducts = field(default=None, repr=False)

    def crossproducts(self):
        if isinstance(self.cp, ClassSums):
            raise ModelSpecError(_CLASSES_MESSAGE.format(source=self.frame.source))
        return self.cp

    def new_objective(self, **changes):
        if isinstance(self.cp, ClassSums):  # a criterion needs no level pairs
            opts = dict(self.options, **changes)
            return ClassedObjective(self.cp, reml=bool(opts["reml"]), sigma=opts.get("sigma"))
        return super().new_objective(**changes)

    def sparse_at_optimum(self):
        if isinstance(self.cp, ClassSums):
            raise ModelSpecError(_CLASSES_MESSAGE.format(source=self.frame.source))
        return super().sparse_at_optimum()

    def glmm_data(self, y=None):
        self.frame._no_rows("glmm_data")


# -- the fit ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class StreamSpec:
    """What both passes read and how: fixed before any row is read, picklable (it goes to
    every partition of a Dask or Spark fit)."""

    parsed: object
    formula: str
    plan: StreamPlan
    factors: tuple[str, ...]  # columns whose levels the first pass collects
    interactions: tuple[tuple[str, ...], ...]  # grouping interactions a:b
    response: ResponseShift
    weights: str | None
    offset: str | None
    batch_rows: int = BATCH_ROWS
    sigma_known: bool = False  # lmer(sigma=...): as many levels as rows are allowed

    @property
    def columns(self) -> list[str]:
        return list(self.plan.columns)

    def scan_partition(self, data) -> LevelScan:
        """The first pass over one partition (pandas DataFrame, pyarrow Table, or an
        iterable of RecordBatches)."""
        return scan_partition(data, self.columns, list(self.factors), list(self.interactions),
                              self.batch_rows, response=self.response)

    def accumulator(self, scan: LevelScan) -> Accumulator:
        return Accumulator(self.parsed, self.formula, self.plan, scan, weights=self.weights,
                           offset=self.offset, allow_n=self.sigma_known)


def stream_spec(formula: str, parsed, schema, *, weights, offset, na_action: str,
                batch_rows: int = BATCH_ROWS, sigma=None, partition_columns=(),
                source_name: str = "the data") -> StreamSpec:
    """The StreamSpec of a model on data of this Arrow schema (arguments checked);
    ``partition_columns``: Hive partition columns of a Parquet source (refused by name)."""
    if na_action not in ("omit", "raise"):
        raise ModelSpecError(f"na_action must be 'omit' or 'raise', not {na_action!r}")
    if not isinstance(batch_rows, (int, np.integer)) or isinstance(batch_rows, bool) \
            or batch_rows < 1:
        raise TypeError(f"batch_rows must be a positive integer, not {batch_rows!r}")
    plan = stream_plan(parsed, formula, schema, weights, offset,
                       partition_columns=partition_columns, source_name=source_name)
    return StreamSpec(parsed, formula, plan, tuple(sorted(set(plan.groups) | set(plan.factors))),
                      tuple(t.group for t in parsed.random if len(t.group) > 1),
                      ResponseShift.of(parsed, formula, plan, offset), weights, offset,
                      int(batch_rows), sigma is not None)


def accumulate_partition(acc: Accumulator, data, batch_rows: int = BATCH_ROWS) -> PartialSums:
    """The second pass over one partition (pandas DataFrame, pyarrow Table, or an iterable
    of RecordBatches) with a fresh copy of ``acc`` (built from the merged first pass): its
    PartialSums."""
    part = acc.fresh()
    with one_blas_thread():
        try:
            for start, batch, labels in frame_batches(data, list(acc.plan.columns),
                                                      batch_rows):
                part.add(start, batch, labels)
        except BaseException as err:
            part.settle(err)
            raise
        return part.partial()


def open_stream(formula: str, data, parsed, *, weights, offset, na_action: str,
                batch_rows: int, sigma=None):
    """The checked Parquet source and the StreamSpec of a model on it: what lmer_parquet
    and outofcore.glmer_parquet read, and how."""
    source = open_source(data)
    spec = stream_spec(formula, parsed, source.schema(), weights=weights, offset=offset,
                       na_action=na_action, batch_rows=batch_rows, sigma=sigma,
                       partition_columns=source.partition_columns, source_name=source.name)
    return source.check_schemas(spec.columns), spec


def levels_pass(source, spec: StreamSpec, factors, *, response, na_action: str,
                progress, stacklevel: int) -> LevelScan:
    """The first pass over a Parquet source, logged, and the missing rows' checks."""
    t0 = time.perf_counter()
    scan = scan_levels(source, spec.columns, list(factors), list(spec.interactions),
                       spec.batch_rows, response=response, progress=progress)
    log_scan(scan, time.perf_counter() - t0)
    check_missing(scan, spec.plan, na_action, stacklevel + 1)
    return scan


def rows_pass(source, spec: StreamSpec, add, *, progress, desc: str,
              acc: Accumulator | None = None) -> float:
    """A second pass over a Parquet source: ``add(first row, batch)`` for each batch, with a
    progress bar, batches read ahead and the BLAS on one thread; the seconds it took.
    ``acc``: the Accumulator whose tasks ``add`` starts; the pass ends when its last
    batch's sums are done, and, if it raises, only once none of its tasks runs."""
    t0 = time.perf_counter()
    bar = progress_bar(progress, total=source.num_rows, desc=desc, unit="row")
    try:
        with one_blas_thread(), ReadAhead(source.batches(spec.columns, spec.batch_rows),
                                          read_ahead_depth()) as batches:
            try:
                for start_row, batch in batches:
                    add(start_row, batch)
                    bar.update(batch.num_rows)
            except BaseException as err:
                if acc is not None:
                    acc.settle(err)  # no task left running after the pass has raised
                raise
            if acc is not None:
                acc.wait()  # the last batch's tasks, still under one BLAS thread
    finally:
        bar.close()
    return time.perf_counter() - t0


def lmer_parquet(formula: str, data, parsed, *, reml: bool, weights, offset, sigma,
                 na_action: str, start, check_convergence: bool, options: dict,
                 factor_mode: str, batch_rows: int = BATCH_ROWS, stacklevel: int = 3,
                 progress: bool | None = None, optimizer: str = "bobyqa") -> LmerResult:
    """``lmer`` on a Parquet source, in two passes of bounded memory (module docstring).

    ``stacklevel`` is the user's call site as seen from here, for the warnings;
    ``progress``: a tqdm bar per pass (None: when stderr is a terminal).
    """
    source, spec = open_stream(formula, data, parsed, weights=weights, offset=offset,
                               na_action=na_action, batch_rows=batch_rows, sigma=sigma)
    log.info("streaming %d rows from %d Parquet file(s) of %s in batches of %d: columns %s",
             source.num_rows, len(source.files), source.name, batch_rows, spec.columns)
    scan = levels_pass(source, spec, spec.factors, response=spec.response,
                       na_action=na_action, progress=progress, stacklevel=stacklevel + 1)
    acc = spec.accumulator(scan)
    acc.classes_mode = factor_mode  # this pass may keep row codes for the count classes
    seconds = rows_pass(source, spec, acc.add, progress=progress, desc="cross-products pass",
                        acc=acc)
    log.info("cross-products pass: %d rows in %.2f s", acc.rows, seconds)
    if acc.sums is None:
        raise DataError(NOTHING_LEFT)
    return fit_sums(spec, scan, acc, source_name=source.name,
                    data_name=data if isinstance(data, str) else None, reml=reml,
                    sigma=sigma, start=start, check_convergence=check_convergence,
                    options=options, factor_mode=factor_mode, stacklevel=stacklevel + 1,
                    optimizer=optimizer)


def log_scan(scan: LevelScan, seconds: float) -> None:
    """The first pass's findings, for pipeline logs."""
    log.info("levels pass: %d rows (%d complete) in %.2f s; levels %s", scan.n_rows,
             scan.n_complete, seconds, scan.n_levels())


def fit_sums(spec: StreamSpec, scan: LevelScan, acc: Accumulator, *, source_name: str,
             data_name, reml: bool, sigma, start, check_convergence: bool, options: dict,
             factor_mode: str, stacklevel: int, optimizer: str = "bobyqa") -> LmerResult:
    """The fit from an accumulator holding the sums of every row (n-free from here on)."""
    from .models import classes_allowed, optimize_lmm, start_theta

    t0 = time.perf_counter()
    s = acc.sums
    acc.drop_buffers()
    check_response_varies(np.array([s.y_min, s.y_max]), spec.parsed.response)
    if s.n_pos == 0:
        raise DataError("every prior weight is 0: no row carries information; check the "
                        "weights column")
    cp, xnames, dropped = crossproducts(acc, stacklevel + 1)
    obj = streamed_objective(acc, cp, reml=bool(reml), factor_mode=factor_mode, sigma=sigma,
                             classes=classes_allowed(optimizer))
    units = theta_units_sums(acc.terms, obj.theta_map, s, spec.weights is not None)
    theta0 = None
    if obj.fixed_sigma is not None:
        units = units * fixed_sigma_unit(cp, obj.fixed_sigma)
    elif start is None:
        theta0 = moment_theta_sums(acc.terms, s, scan.n_complete)
    if theta0 is None:
        theta0 = start_theta(start, obj.theta_map, units)
    opt = optimize_lmm(obj, theta0, units, start=start, check=check_convergence,
                       options=options, optimizer=optimizer)
    obj.update(opt.theta)
    obj.check_residual_left()
    log.info("fit: q = %d random effects, p = %d fixed effects, %d evaluations in %.2f s",
             sum(t.q for t in acc.terms), len(xnames), opt.n_total_evals,
             time.perf_counter() - t0)
    return streamed_result(spec.formula, spec.parsed, obj, opt, acc, scan, source_name,
                           xnames, dropped, data_name=data_name, weights=spec.weights,
                           offset=spec.offset,
                           options=dict(factor_mode=factor_mode,
                                        check_convergence=check_convergence,
                                        optimizer_options=options, optimizer=optimizer))


def streamed_objective(acc: Accumulator, cp: CrossProducts, *, reml: bool, factor_mode: str,
                       sigma, classes: bool = True) -> LmmObjective | ClassedObjective:
    """The criterion of the streamed sums: with the row codes kept, B from them and the
    route classed.objective_with_b picks (never the classes if ``classes`` is False);
    else the sparse factor."""
    if acc.row_codes is None:
        return LmmObjective(cp, reml=reml, factor_mode=factor_mode, sigma=sigma)
    t0 = time.perf_counter()
    acc.wait()  # the last batch's codes are written
    B = acc.row_codes.level_rows()
    acc.row_codes = None
    log.info("level pairs of the first term from the kept row codes: %d in %.2f s", B.nnz,
             time.perf_counter() - t0)
    return objective_with_b(cp, B, reml=reml, factor_mode=factor_mode, sigma=sigma,
                            classes=classes)


def fit_partials(spec: StreamSpec, scan: LevelScan, acc: Accumulator, merged: PartialSums, *,
                 source_name: str, reml: bool, sigma, start, check_convergence: bool,
                 options: dict, factor_mode: str, stacklevel: int,
                 optimizer: str = "bobyqa") -> LmerResult:
    """The fit from the merged partial sums of every partition (Dask, Spark)."""
    acc.absorb(merged)
    return fit_sums(spec, scan, acc, source_name=source_name, data_name=None, reml=reml,
                    sigma=sigma, start=start, check_convergence=check_convergence,
                    options=options, factor_mode=factor_mode, stacklevel=stacklevel + 1,
                    optimizer=optimizer)


def partitioned_fit(spec: StreamSpec, scan_pass, sums_pass, *, source_name: str,
                    na_action: str, reml: bool, sigma, start, check_convergence: bool,
                    options: dict, factor_mode: str, stacklevel: int = 4,
                    optimizer: str = "bobyqa") -> LmerResult:
    """An LMM fitted from partitions anywhere (Dask, Spark): ``scan_pass()`` gives the
    merged LevelScan of every partition, ``sums_pass(acc)`` the merged PartialSums of
    every partition accumulated by copies of ``acc``; logged, checked and fitted here.
    ``stacklevel``: the user's call site as seen from here."""
    t0 = time.perf_counter()
    scan = scan_pass()
    log_scan(scan, time.perf_counter() - t0)
    check_missing(scan, spec.plan, na_action, stacklevel + 1)
    acc = spec.accumulator(scan)
    t0 = time.perf_counter()
    merged = sums_pass(acc)
    log.info("cross-products pass: %d rows in %.2f s", merged.rows, time.perf_counter() - t0)
    return fit_partials(spec, scan, acc, merged, source_name=source_name, reml=reml,
                        sigma=sigma, start=start, check_convergence=check_convergence,
                        options=options, factor_mode=factor_mode, stacklevel=stacklevel + 1,
                        optimizer=optimizer)


def check_missing(scan, plan: StreamPlan, na_action: str, stacklevel: int) -> None:
    """frame.drop_missing's refusals and warning, from the first pass's counts."""
    check_has_rows(scan.n_rows)
    n_missing = scan.n_rows - scan.n_complete
    if not n_missing:
        return
    if na_action == "raise":
        cols = [c for c in plan.columns if scan.missing[c]]
        raise DataError(f"{n_missing} rows have missing values (in columns {cols}); "
                        f"drop them or use na_action='omit'")
    if scan.n_complete == 0:
        raise DataError(NOTHING_LEFT)
    warnings.warn(f"{n_missing} rows with missing values dropped ({scan.n_complete} used)",
                  DroppedRowsWarning, stacklevel=stacklevel)


def streamed_result(formula, parsed, obj, opt, acc, scan, source_name: str, xnames,
                    dropped, *, data_name, weights, offset, options) -> LmerResult:
    """The LmerResult of a streamed fit: built by results.build_lmer_result on a frame
    without rows, then given its true nobs, no per-row values and a StreamedFitContext."""
    from .frame import ModelFrame

    p = len(xnames)
    empty = ModelFrame(np.empty(0), np.empty((0, p)), tuple(xnames), None, None, acc.terms,
                       pd.RangeIndex(0), scan.n_rows - scan.n_complete, tuple(dropped))
    result = build_lmer_result(formula, empty, obj, opt, data_name=data_name,
                               weights_name=weights, offset_name=offset, parsed=parsed,
                               options=options)
    rowless = RowlessFrame(tuple(xnames), acc.terms, scan.n_complete,
                           scan.n_rows - scan.n_complete, source_name, tuple(dropped),
                           offset_column=offset)
    ctx = result.model
    context = StreamedFitContext(ctx.formula, ctx.parsed, rowless, ctx.options, ctx.params,
                                 ctx.objective, cp=obj.cp)
    return replace(result, nobs=scan.n_complete, rows_source=None, model=context)
