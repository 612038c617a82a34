"""A linear mixed model fitted from Parquet in bounded memory: the cross-products of
DESIGN.md section 2 accumulated batch by batch.

Where it sits: data (``batches.py``: Parquet files, the levels pass) -> HERE (model frame
and cross-products, one batch at a time) -> objective -> optimize -> results, the same
``LmmObjective`` and ``minimize_theta`` as an in-memory fit. ``lmer(formula, path)``
comes here for a Parquet file, directory, glob or ``pyarrow.dataset.Dataset``
(``streaming=True``, or by default when the files hold more than ``STREAM_ABOVE_ROWS``).

Two passes over the files, reading only the used columns:

1. ``batches.scan_levels``: complete rows, missing values, the levels of every factor.
   Then the missing-row warning (or refusal), the levels of each random term in lme4's
   order, and the terms sorted as lme4 sorts them.
2. Per batch: the model frame of its complete rows exactly as ``frame.build_frame`` would
   make it, except that factors are pandas Categoricals with the global levels (so
   formulaic gives every batch the same columns), then, into running sums, what
   ``crossprod.CrossprodPlan.accumulate`` computes for all rows at once: the diagonal
   blocks of Z'WZ (global level codes), Z'W[X y], [X y]'W[X y], and the level-pair
   blocks of crossed terms, which are only known as they appear: each batch's blocks,
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
  Z'Wr = Z'W(y - offset - c) - Z'WX beta1 and X'Wr likewise (exact algebra; the
  rounding is eps times |Z'W X beta1| instead of eps |Z'Wr|).
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
partition, merged (``batches.LevelScan.merge``); an ``Accumulator`` built from the merged
scan is shipped to each partition, whose ``accumulate_partition`` returns its
``PartialSums`` (n-free, picklable); ``merge_partials`` adds two of them (R's by a QR of
the stacked R's, level-pair blocks by key, the rest by sum, min and max), and
``fit_partials`` fits the merged sums exactly as a Parquet fit fits its own.

Not supported when streaming (each refused with a message naming ``streaming=False``):
weights or offsets given as arrays (name a column), stateful transforms (``scale(x)``,
``poly(x, 2)``: their state comes from all rows), a numeric column used both inside
``C()`` and as a number.
"""
from __future__ import annotations

import copy
import logging
import re
import time
import warnings
from dataclasses import dataclass, field, replace
from functools import partial

import numpy as np
import pandas as pd

from ._core import _crossprod
from .batches import (
    BATCH_ROWS,
    LevelScan,
    column_values,
    complete_rows,
    frame_batches,
    open_source,
    progress_bar,
    scan_levels,
    scan_partition,
)
from .context import FitContext
from .crossprod import CrossProducts, PairBlocks
from .design import model_matrix
from .errors import DataError, DroppedRowsWarning, ModelSpecError, RankDeficiencyWarning
from .frame import aliased_columns, check_columns, numeric_column, total_offset, used_columns
from .objective import LmmObjective, fixed_sigma_unit
from .optimize import minimize_theta
from .parallel import run_all
from .responses import numeric_response
from .results import LmerResult, build_lmer_result
from .scaling import theta_units_from_sums
from .start import applies, moment_theta_from_sums
from .terms import ReTerm, check_identifiable, order_terms
from .validate import (
    check_column_types,
    check_has_rows,
    check_residual_variation,
    check_response_varies,
    check_size,
    check_values,
    row_label,
)

STREAM_ABOVE_ROWS = 5_000_000  # lmer(streaming=None) streams Parquet holding more rows

log = logging.getLogger(__name__)


class RowsNotKeptError(DataError):
    """A method needs the rows of a fit that streamed them from Parquet."""


# -- what the model reads ---------------------------------------------------------------
@dataclass(frozen=True)
class StreamPlan:
    """The columns a model reads and how each is encoded in a batch's pandas frame."""

    columns: tuple[str, ...]  # every used column, read from the files
    groups: tuple[str, ...]  # grouping columns (level codes computed directly)
    factors: tuple[str, ...]  # columns given to formulaic as Categoricals


_C_ARG = r"\bC\(\s*{}\s*[,)]"


def stream_plan(parsed, formula: str, schema, weights, offset) -> StreamPlan:
    """The used columns, checked against the files' schema as an in-memory fit checks them."""
    import pyarrow as pa

    for value, what in ((weights, "weights"), (offset, "offset")):
        if value is not None and not isinstance(value, str):
            raise ModelSpecError(f"a streamed fit reads {what} from a column: pass its name "
                                 f"({what}='w'), or fit in memory with streaming=False")
        if isinstance(value, str) and value not in schema.names:
            raise DataError(f"the {what} column {value!r} is not in the data")
    cols = used_columns(parsed, [a for a in (weights, offset) if isinstance(a, str)], formula)
    empty = schema.empty_table().to_pandas()
    check_columns(cols, empty, formula)
    groups = tuple(dict.fromkeys(g for t in parsed.random for g in t.group))
    check_column_types(empty, [c for c in cols if c not in groups])
    exprs = " ".join([parsed.fixed, *(t.lhs for t in parsed.random)])
    factors = []
    for name in cols:
        typ = schema.field(name).type
        if pa.types.is_dictionary(typ):
            typ = typ.value_type
        text = pa.types.is_string(typ) or pa.types.is_large_string(typ)
        in_c = re.search(_C_ARG.format(re.escape(name)), exprs) is not None
        if in_c and not text:
            rest = re.sub(_C_ARG.format(re.escape(name)), "C(", exprs)
            if re.search(rf"(?<![\w.]){re.escape(name)}(?![\w.])", rest):
                raise ModelSpecError(f"column {name!r} is used both inside C() and as a "
                                     "number; a streamed fit encodes it one way: fit in "
                                     "memory with streaming=False")
        if (text or in_c or pa.types.is_dictionary(schema.field(name).type)) and \
                re.search(rf"(?<![\w.]){re.escape(name)}(?![\w.])", exprs):
            factors.append(name)
    return StreamPlan(tuple(cols), groups, tuple(factors))


@dataclass(frozen=True)
class ResponseShift:
    """y - offset of a batch's complete rows, evaluated as the second pass evaluates them:
    the first pass sums it for the centre c (module docstring). Picklable, for workers."""

    parsed: object
    formula: str
    offset: str | None
    columns: tuple[str, ...]  # the columns the response and offsets read

    @classmethod
    def of(cls, parsed, formula: str, plan: StreamPlan, offset) -> ResponseShift:
        exprs = " ".join([parsed.response or "", *parsed.offsets, offset or ""])
        cols = tuple(c for c in plan.columns
                     if re.search(rf"(?<![\w.]){re.escape(c)}(?![\w.])", exprs))
        return cls(parsed, formula, offset, cols)

    def __call__(self, batch, complete: np.ndarray, start: int, labels=None) -> np.ndarray:
        import pyarrow as pa

        batch = batch.select(list(self.columns)).filter(pa.array(complete))
        rows = pd.Index(np.flatnonzero(complete) + start if labels is None
                        else labels[complete])
        df = pd.DataFrame({c: column_values(batch.column(c)) for c in self.columns},
                          index=rows, copy=False)
        y, _ = numeric_response(self.parsed.response, df,
                                partial(numeric_column, formula=self.formula))
        off = total_offset(self.parsed, df, self.offset, len(df), self.formula)
        return y if off is None else y - off


# -- levels -------------------------------------------------------------------------------
@dataclass(frozen=True)
class TermLevels:
    """A random term's levels: labels, and the key of each (mixed radix of column codes)."""

    labels: tuple[str, ...]
    keys: np.ndarray | None  # sorted int64 keys for an interaction, None for one column
    radix: tuple[int, ...]  # levels of each grouping column


def term_levels(group: tuple[str, ...], column_levels: dict, combos) -> TermLevels:
    """lme4's levels of the interaction of ``group`` (terms.grouping_codes' order and labels)."""
    if len(group) == 1:
        values = column_levels[group[0]]
        return TermLevels(tuple(str(v) for v in values), None, (len(values),))
    rows = combos[group].rows()
    codes = [pd.Index(column_levels[g]).get_indexer(rows[g].to_numpy()) for g in group]
    radix = tuple(len(column_levels[g]) for g in group)
    if np.prod([float(r) for r in radix]) >= 2.0 ** 62:
        raise ModelSpecError(f"the grouping interaction {':'.join(group)} has too many "
                             "possible level combinations for a streamed fit")
    keys = np.zeros(len(rows), dtype=np.int64)
    for c, r in zip(codes, radix):
        keys = keys * r + c
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    labels = [":".join(str(column_levels[g][c[i]]) for g, c in zip(group, codes))
              for i in order]
    return TermLevels(tuple(labels), keys, radix)


def encode(col, index: pd.Index) -> np.ndarray:
    """Codes of an Arrow column's values among ``index`` (-1 for others), int64."""
    import pyarrow as pa

    if pa.types.is_dictionary(col.type):
        pos = index.get_indexer(col.dictionary.to_numpy(zero_copy_only=False))
        return pos[col.indices.to_numpy(zero_copy_only=False)].astype(np.int64)
    return index.get_indexer(column_values(col)).astype(np.int64)


# -- level-pair blocks of crossed terms ---------------------------------------------------
class BlockRuns:
    """Blocks keyed by level pair, merged as they arrive: runs of sorted unique keys, two
    runs merged when they hold as many batches (a binary counter), so each block is
    copied O(log batches) times."""

    def __init__(self, shape: tuple[int, int]):
        self.shape = shape
        self.runs: list[tuple[int, np.ndarray, np.ndarray]] = []  # (batches, keys, A)

    def add(self, keys: np.ndarray, A: np.ndarray) -> None:
        self.runs.append((1, keys, A))
        while len(self.runs) > 1 and self.runs[-2][0] == self.runs[-1][0]:
            b, a = self.runs.pop(), self.runs.pop()
            self.runs.append((a[0] + b[0], *_merge_blocks(a[1:], b[1:])))

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        keys, A = np.zeros(0, dtype=np.int64), np.zeros((0, *self.shape))
        for _, k, a in self.runs:
            keys, A = _merge_blocks((keys, A), (k, a))
        return keys, A

    def compact(self) -> None:
        """One run holding every block (before shipping: the smallest form)."""
        if len(self.runs) > 1:
            self.runs = [(sum(r[0] for r in self.runs), *self.result())]

    def merged(self, other: BlockRuns) -> BlockRuns:
        """The blocks of both, summed by key."""
        out = BlockRuns(self.shape)
        runs = [r for r in (*self.runs, *other.runs)]
        if runs:
            keys, A = self.result()
            k2, A2 = other.result()
            out.runs = [(sum(r[0] for r in runs), *_merge_blocks((keys, A), (k2, A2)))]
        return out


def _merge_blocks(a, b):
    """Sum of two keyed block sets (sorted unique keys each), sorted by key."""
    keys = np.union1d(a[0], b[0])
    A = np.zeros((len(keys), *a[1].shape[1:]))
    A[np.searchsorted(keys, a[0])] += a[1]
    A[np.searchsorted(keys, b[0])] += b[1]
    return keys, A


# -- the second pass ----------------------------------------------------------------------
@dataclass
class Sums:
    """Running sums of the second pass (all n-free)."""

    diag: list
    cross: list
    pairs: list  # BlockRuns per term pair
    gram: np.ndarray
    R: np.ndarray  # R of [X, y - offset - c] (unweighted: the rank test)
    Rw: np.ndarray | None  # R of W^1/2 [X, y - offset - c] (weighted fits)
    level_n: list  # per term, rows per level (moment start)
    level_y: list  # per term, sum of y - c per level
    col_sumsq: list  # per term, sum of squares of each column of Z_t
    col_nonzero: list
    n_pos: int = 0  # rows with w > 0
    sum_log_w: float = 0.0
    sum_w_pos: float = 0.0
    y_sum: float = 0.0  # of y - c
    y_sumsq: float = 0.0
    y_min: float = np.inf
    y_max: float = -np.inf
    r_max: float = 0.0  # max |y - offset|

    def merged(self, other: Sums) -> Sums:
        """The sums of both sets of rows (same layout): R's by a QR of the stacked R's,
        level-pair blocks by key, counts and sums added, extremes by min and max."""
        add = lambda a, b: [x + y for x, y in zip(a, b)]
        Rw = None if self.Rw is None else _qr_update(self.Rw, other.Rw)
        return Sums(diag=add(self.diag, other.diag), cross=add(self.cross, other.cross),
                    pairs=[a.merged(b) for a, b in zip(self.pairs, other.pairs)],
                    gram=self.gram + other.gram, R=_qr_update(self.R, other.R), Rw=Rw,
                    level_n=add(self.level_n, other.level_n),
                    level_y=add(self.level_y, other.level_y),
                    col_sumsq=add(self.col_sumsq, other.col_sumsq),
                    col_nonzero=add(self.col_nonzero, other.col_nonzero),
                    n_pos=self.n_pos + other.n_pos, sum_log_w=self.sum_log_w + other.sum_log_w,
                    sum_w_pos=self.sum_w_pos + other.sum_w_pos,
                    y_sum=self.y_sum + other.y_sum, y_sumsq=self.y_sumsq + other.y_sumsq,
                    y_min=min(self.y_min, other.y_min), y_max=max(self.y_max, other.y_max),
                    r_max=max(self.r_max, other.r_max))


@dataclass
class PartialSums:
    """The sums of some rows and the model-matrix columns they were laid out by (None for
    rows that were all incomplete): what a partition ships back, n-free and picklable."""

    xnames: tuple[str, ...] | None = None
    cnames: list | None = None
    sums: Sums | None = None
    rows: int = 0  # complete rows added


def merge_partials(a: PartialSums, b: PartialSums) -> PartialSums:
    """The partial sums of the rows of ``a`` and of ``b``."""
    if a.sums is None or b.sums is None:
        out = b if a.sums is None else a
        return replace(out, rows=a.rows + b.rows)
    if a.xnames != b.xnames or a.cnames != b.cnames:
        raise DataError("two partitions of the data gave different model-matrix columns "
                        f"({list(a.xnames)} and {list(b.xnames)}); give every partition "
                        "the same column types (e.g. one set of categories)")
    return PartialSums(a.xnames, a.cnames, a.sums.merged(b.sums), a.rows + b.rows)


def tree_merge(items: list, merge):
    """Pairwise (balanced) reduction of ``items`` in their order."""
    items = list(items)
    if not items:
        raise DataError("the data have no partitions")
    while len(items) > 1:
        items = [merge(items[i], items[i + 1]) if i + 1 < len(items) else items[i]
                 for i in range(0, len(items), 2)]
    return items[0]


@dataclass
class BatchFrame:
    """One batch's model frame (complete rows): as frame.build_frame makes it for all rows."""

    y: np.ndarray
    XB: np.ndarray  # [X, slot for the response]
    xnames: tuple[str, ...]
    offset: np.ndarray | None
    w: np.ndarray | None
    xs: list  # per parsed term, its columns of Z
    cnames: list  # per parsed term, their names
    codes: list  # per parsed term, global level codes


@dataclass
class Layout:
    """What the first non-empty batch fixes: column names of X and of each term."""

    xnames: tuple[str, ...]
    cnames: list  # per parsed term
    order: list  # parsed-term index of each term in lme4's order
    centre: float


def _qr_update(R: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """R of [R; rows] (the R of all rows so far)."""
    return np.linalg.qr(np.vstack([R, rows]), mode="r")


class Accumulator:
    """Pass 2: one batch at a time, the frame of its complete rows and the running sums."""

    def __init__(self, parsed, formula: str, plan: StreamPlan, scan, *, weights, offset):
        self.parsed, self.formula, self.plan = parsed, formula, plan
        self.weights, self.offset = weights, offset
        levels = {g: scan.levels[g].categories(keep_unused=False) for g in plan.groups}
        self.group_index = {g: pd.Index(v) for g, v in levels.items()}
        self.term_levels = [term_levels(t.group, levels, scan.combos) for t in parsed.random]
        self.key_index = [None if tl.keys is None else pd.Index(tl.keys)
                          for tl in self.term_levels]
        self.categories = {c: scan.levels[c].categories(keep_unused=True) for c in plan.factors}
        self.cat_index = {c: pd.Index(v) for c, v in self.categories.items()}
        self.n = scan.n_complete
        self.centre = scan.centre
        self.layout: Layout | None = None
        self.sums: Sums | None = None
        self.rows = 0

    def fresh(self) -> Accumulator:
        """A copy that has seen no rows (sharing the levels): one per partition."""
        acc = copy.copy(self)
        acc.layout, acc.sums, acc.rows = None, None, 0
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
        """One batch; its rows are numbered from ``start`` (or labelled by ``labels``)."""
        import pyarrow as pa

        complete = complete_rows(batch, list(self.plan.columns))
        if not complete.any():
            return
        if not complete.all():
            batch = batch.filter(pa.array(complete))
        rows = pd.Index(np.flatnonzero(complete) + start if labels is None
                        else labels[complete])
        self.rows += len(rows)
        df = self._frame(batch, rows)
        bf = self._model_frame(df, batch)
        if self.layout is None:
            self._start(df, bf)
        elif bf.xnames != self.layout.xnames or bf.cnames != self.layout.cnames:
            raise DataError("a batch of the Parquet data gave other model-matrix columns "
                            f"({list(bf.xnames)}) than the first ({list(self.layout.xnames)}); "
                            "fit in memory with streaming=False")
        self._accumulate(batch.num_rows, bf)

    def _frame(self, batch, rows: pd.Index) -> pd.DataFrame:
        """The batch's used columns as the in-memory frame has them (factors: Categoricals
        with the global levels); grouping-only text columns are left out."""
        import pyarrow as pa

        cols = {}
        for name in self.plan.columns:
            col = batch.column(name)
            if name in self.cat_index:
                cols[name] = pd.Categorical.from_codes(encode(col, self.cat_index[name]),
                                                       categories=self.categories[name])
            elif name in self.plan.groups and not (
                    pa.types.is_integer(col.type) or pa.types.is_floating(col.type)
                    or pa.types.is_boolean(col.type)):
                continue  # text grouping columns are read as level codes only
            else:
                cols[name] = column_values(col)
        return pd.DataFrame(cols, index=rows, copy=False)

    def _model_frame(self, df: pd.DataFrame, batch) -> BatchFrame:
        """The batch's model frame: each term's columns and codes in formula order."""
        parsed, formula = self.parsed, self.formula
        y, _ = numeric_response(parsed.response, df, partial(numeric_column, formula=formula))
        check_values(y, [parsed.response], df.index, "the response {}")
        XB, xnames = model_matrix(parsed.fixed, df, formula, "fixed-effects term",
                                  extra_columns=1)
        check_values(XB[:, :-1], xnames, df.index, "the fixed-effects column {}")
        off = total_offset(parsed, df, self.offset, len(df), formula)
        w = None if self.weights is None else self._weights(df)
        xs, codes = [], []
        for t, tl, ki in zip(parsed.random, self.term_levels, self.key_index):
            what = f"random-effects term ({t.lhs} | {t.group_name})"
            X, names = model_matrix(t.lhs, df, formula, what)
            if X.shape[1] == 0:
                raise ModelSpecError(f"{what} has no columns")
            check_values(X, names, df.index, f"the column {{}} of the {what}")
            xs.append((X, tuple(names)))
            codes.append(self._codes(t.group, tl, ki, batch))
        return BatchFrame(y, XB, tuple(xnames), off, w, [x for x, _ in xs],
                          [n for _, n in xs], codes)

    def _codes(self, group, tl: TermLevels, key_index, batch) -> np.ndarray:
        """Each row's level of a term: global codes (of the interaction's key for a:b)."""
        cols = [encode(batch.column(g), self.group_index[g]) for g in group]
        if key_index is None:
            return cols[0]
        keys = np.zeros(batch.num_rows, dtype=np.int64)
        for c, r in zip(cols, tl.radix):
            keys = keys * r + c
        return key_index.get_indexer(keys).astype(np.int64)

    def _weights(self, df: pd.DataFrame) -> np.ndarray:
        from .validate import numeric_argument

        w = numeric_argument(self.weights, df, len(df), "weights")
        bad = ~np.isfinite(w) | (w < 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataError(f"weights must be finite and >= 0; row {row_label(df.index, i)} "
                            f"has {w[i]} ({int(bad.sum())} row(s) in this batch)")
        check_size(w, ["weights"], "the prior {}")
        return w

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
        check_identifiable(ordered, self.n)
        centre = self.centre if xnames and xnames[0] == "(Intercept)" else 0.0
        self.layout = Layout(tuple(xnames), list(cnames), order, centre)
        self.terms = tuple(ordered)
        m = len(xnames) + 1
        ks = [t.k for t in ordered]
        self.sums = Sums(
            diag=[np.zeros((t.nlev, t.k, t.k)) for t in ordered],
            cross=[np.zeros((t.q, m)) for t in ordered],
            pairs=[BlockRuns((ks[i], ks[j])) for i in range(len(ks))
                   for j in range(i + 1, len(ks))],
            gram=np.zeros((m, m)), R=np.zeros((0, m)),
            Rw=None if self.weights is None else np.zeros((0, m)),
            level_n=[np.zeros(t.nlev) for t in ordered],
            level_y=[np.zeros(t.nlev) for t in ordered],
            col_sumsq=[np.zeros(t.k) for t in ordered],
            col_nonzero=[np.zeros(t.k, dtype=np.int64) for t in ordered])

    def _accumulate(self, nb: int, bf: BatchFrame) -> None:
        s, order = self.sums, self.layout.order
        y, XB, w = bf.y, bf.XB, bf.w
        r = y if bf.offset is None else y - bf.offset
        XB[:, -1] = r - self.layout.centre
        if w is None:
            w = np.ones(nb)
        xs = [np.ascontiguousarray(bf.xs[i]) for i in order]
        codes = [bf.codes[i] for i in order]
        tasks = [lambda c=c, X=X, D=D: _crossprod.add_term_diag(c, X, w, D)
                 for c, X, D in zip(codes, xs, s.diag)]
        tasks += [lambda c=c, X=X, C=C: _crossprod.add_term_cross(c, X, XB, w, C)
                  for c, X, C in zip(codes, xs, s.cross)]
        tasks.append(lambda: _crossprod.add_weighted_gram(XB, w, s.gram))
        tasks.append(lambda: setattr(s, "R", _qr_update(s.R, XB)))
        if s.Rw is not None:
            tasks.append(lambda: setattr(s, "Rw", _qr_update(s.Rw, XB * np.sqrt(w)[:, None])))
        tasks += self._pair_tasks(codes, xs, w)
        run_all(tasks, nb)
        pos = w > 0
        s.n_pos += int(pos.sum())
        s.sum_log_w += float(np.log(w[pos]).sum()) if self.weights is not None else 0.0
        s.sum_w_pos += float(w[pos].sum())
        yc = y - self.layout.centre
        s.y_sum += float(yc.sum())
        s.y_sumsq += float(yc @ yc)
        s.y_min, s.y_max = min(s.y_min, float(y.min())), max(s.y_max, float(y.max()))
        s.r_max = max(s.r_max, float(np.abs(r).max()))
        for t, (c, X) in enumerate(zip(codes, xs)):
            nlev = s.level_n[t].shape[0]
            s.level_n[t] += np.bincount(c, minlength=nlev)
            s.level_y[t] += np.bincount(c, weights=yc, minlength=nlev)
            s.col_sumsq[t] += np.einsum("ij,ij->j", X, X)
            s.col_nonzero[t] += np.count_nonzero(X, axis=0)

    def _pair_tasks(self, codes, xs, w):
        """Level-pair blocks of this batch, merged into the running BlockRuns."""
        tasks, at = [], 0
        terms = self.terms
        for i in range(len(terms)):
            for j in range(i + 1, len(terms)):
                runs = self.sums.pairs[at]
                at += 1

                def task(i=i, j=j, runs=runs):
                    key = codes[i] * np.int64(terms[j].nlev) + codes[j]
                    block, uniques = pd.factorize(key, sort=True)
                    A = np.zeros((len(uniques), terms[i].k, terms[j].k))
                    _crossprod.add_pair_blocks(block.astype(np.int64), xs[i], xs[j], w, A)
                    runs.add(np.asarray(uniques, dtype=np.int64), A)
                tasks.append(task)
        return tasks


def check_stateless(exprs, df: pd.DataFrame) -> None:
    """Refuse stateful transforms (scale, center, poly, ...): their state (a mean, an SD,
    orthogonal polynomials) comes from all rows, which a batch does not have."""
    import formulaic

    for expr in exprs:
        if "(" not in expr:
            continue
        try:
            spec = formulaic.model_matrix(expr, df.iloc[:16], na_action="ignore").model_spec
        except Exception:  # the batch's own evaluation reports formula errors
            continue
        if spec.transform_state:
            names = ", ".join(spec.transform_state)
            raise ModelSpecError(f"{names} is a stateful transform: its state comes from all "
                                 "rows, which a streamed fit never holds at once; compute the "
                                 "column beforehand, or fit in memory with streaming=False")


# -- from the sums to the cross-products ---------------------------------------------------
def crossproducts(acc: Accumulator, formula_stack: int) -> tuple[CrossProducts, list[str], list[str]]:
    """CrossProducts of the kept fixed-effects columns, their names and the dropped ones."""
    s, lay, terms = acc.sums, acc.layout, acc.terms
    p = len(lay.xnames)
    R = _square(s.R, p + 1)
    dropped = aliased_columns(R[:, :p], R)
    if dropped:
        names = [lay.xnames[j] for j in dropped]
        warnings.warn(f"fixed-effect model matrix is rank deficient so dropping "
                      f"{len(dropped)} column(s): {', '.join(names)}", RankDeficiencyWarning,
                      stacklevel=formula_stack)
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
    G = s.gram
    XtWXy = np.empty((pk + 1, pk + 1))
    XtWXy[:pk, :pk] = G[np.ix_(keep, keep)]
    XtWXy[:pk, pk] = XtWXy[pk, :pk] = G[keep, p] - G[np.ix_(keep, keep)] @ beta1
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
                 "({what}); fit in memory (lmer(..., streaming=False)) for methods that need "
                 "the rows: refit, simulate, bootstrap, residuals, predictions on the fit's rows")


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
        return self.cp

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

    @property
    def columns(self) -> list[str]:
        return list(self.plan.columns)

    def scan_partition(self, data) -> LevelScan:
        """The first pass over one partition (pandas DataFrame or pyarrow Table)."""
        return scan_partition(data, self.columns, list(self.factors), list(self.interactions),
                              self.batch_rows, response=self.response)

    def accumulator(self, scan: LevelScan) -> Accumulator:
        return Accumulator(self.parsed, self.formula, self.plan, scan, weights=self.weights,
                           offset=self.offset)


def stream_spec(formula: str, parsed, schema, *, weights, offset, na_action: str,
                batch_rows: int = BATCH_ROWS) -> StreamSpec:
    """The StreamSpec of a model on data of this Arrow schema (arguments checked)."""
    if na_action not in ("omit", "raise"):
        raise ModelSpecError(f"na_action must be 'omit' or 'raise', not {na_action!r}")
    if not isinstance(batch_rows, (int, np.integer)) or isinstance(batch_rows, bool) \
            or batch_rows < 1:
        raise TypeError(f"batch_rows must be a positive integer, not {batch_rows!r}")
    plan = stream_plan(parsed, formula, schema, weights, offset)
    return StreamSpec(parsed, formula, plan, tuple(sorted(set(plan.groups) | set(plan.factors))),
                      tuple(t.group for t in parsed.random if len(t.group) > 1),
                      ResponseShift.of(parsed, formula, plan, offset), weights, offset,
                      int(batch_rows))


def accumulate_partition(acc: Accumulator, data, batch_rows: int = BATCH_ROWS) -> PartialSums:
    """The second pass over one partition (pandas DataFrame or pyarrow Table) with a fresh
    copy of ``acc`` (built from the merged first pass): its PartialSums."""
    part = acc.fresh()
    for start, batch, labels in frame_batches(data, list(acc.plan.columns), batch_rows):
        part.add(start, batch, labels)
    return part.partial()


def lmer_parquet(formula: str, data, parsed, *, reml: bool, weights, offset, sigma,
                 na_action: str, start, check_convergence: bool, options: dict,
                 factor_mode: str, batch_rows: int = BATCH_ROWS, stacklevel: int = 3,
                 progress: bool | None = None) -> LmerResult:
    """``lmer`` on a Parquet source, in two passes of bounded memory (module docstring).

    ``stacklevel`` is the user's call site as seen from here, for the warnings;
    ``progress``: a tqdm bar per pass (None: when stderr is a terminal).
    """
    source = open_source(data)
    spec = stream_spec(formula, parsed, source.schema(), weights=weights, offset=offset,
                       na_action=na_action, batch_rows=batch_rows)
    source.check_schemas(spec.columns)
    total = source.num_rows
    log.info("streaming %d rows from %d Parquet file(s) of %s in batches of %d: columns %s",
             total, len(source.files), source.name, batch_rows, spec.columns)
    t0 = time.perf_counter()
    scan = scan_levels(source, spec.columns, list(spec.factors), list(spec.interactions),
                       batch_rows, response=spec.response, progress=progress)
    log_scan(scan, time.perf_counter() - t0)
    check_missing(scan, spec.plan, na_action, stacklevel + 1)
    acc = spec.accumulator(scan)
    t0 = time.perf_counter()
    bar = progress_bar(progress, total=total, desc="cross-products pass", unit="row")
    try:
        for start_row, batch in source.batches(spec.columns, batch_rows):
            acc.add(start_row, batch)
            bar.update(batch.num_rows)
    finally:
        bar.close()
    log.info("cross-products pass: %d rows in %.2f s", acc.rows, time.perf_counter() - t0)
    if acc.sums is None:
        raise DataError("every row has a missing value in a used column; nothing is left to fit")
    return fit_sums(spec, scan, acc, source_name=source.name,
                    data_name=data if isinstance(data, str) else None, reml=reml,
                    sigma=sigma, start=start, check_convergence=check_convergence,
                    options=options, factor_mode=factor_mode, stacklevel=stacklevel + 1)


def log_scan(scan: LevelScan, seconds: float) -> None:
    """The first pass's findings, for pipeline logs."""
    log.info("levels pass: %d rows (%d complete) in %.2f s; levels %s", scan.n_rows,
             scan.n_complete, seconds, scan.n_levels())


def fit_sums(spec: StreamSpec, scan: LevelScan, acc: Accumulator, *, source_name: str,
             data_name, reml: bool, sigma, start, check_convergence: bool, options: dict,
             factor_mode: str, stacklevel: int) -> LmerResult:
    """The fit from an accumulator holding the sums of every row (n-free from here on)."""
    from .models import start_theta

    t0 = time.perf_counter()
    s = acc.sums
    check_response_varies(np.array([s.y_min, s.y_max]), spec.parsed.response)
    if s.n_pos == 0:
        raise DataError("every prior weight is 0: no row carries information; check the "
                        "weights column")
    cp, xnames, dropped = crossproducts(acc, stacklevel + 1)
    obj = LmmObjective(cp, reml=bool(reml), factor_mode=factor_mode, sigma=sigma)
    units = theta_units_sums(acc.terms, obj.theta_map, s, spec.weights is not None)
    theta0 = None
    if obj.fixed_sigma is not None:
        units = units * fixed_sigma_unit(cp, obj.fixed_sigma)
    elif start is None:
        theta0 = moment_theta_sums(acc.terms, s, scan.n_complete)
    if theta0 is None:
        theta0 = start_theta(start, obj.theta_map, units)
    opt = minimize_theta(obj, theta0, obj.theta_map.lower, check=check_convergence,
                         units=units, **options)
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
                                        optimizer_options=options))


def fit_partials(spec: StreamSpec, scan: LevelScan, acc: Accumulator, merged: PartialSums, *,
                 source_name: str, reml: bool, sigma, start, check_convergence: bool,
                 options: dict, factor_mode: str, stacklevel: int) -> LmerResult:
    """The fit from the merged partial sums of every partition (Dask, Spark)."""
    acc.absorb(merged)
    return fit_sums(spec, scan, acc, source_name=source_name, data_name=None, reml=reml,
                    sigma=sigma, start=start, check_convergence=check_convergence,
                    options=options, factor_mode=factor_mode, stacklevel=stacklevel + 1)


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
        raise DataError("every row has a missing value in a used column; nothing is left to fit")
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
    return replace(result, nobs=scan.n_complete, fitted=None, residuals=None,
                   scaled_residuals=None, model=context)
