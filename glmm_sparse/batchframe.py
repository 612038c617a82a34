"""One batch of rows as its model frame, with the levels of all rows.

Between the Parquet batches (``batches.py``: sources, the levels pass) and what is done
with each batch's frame: summed into cross-products (``streaming.Accumulator``, the LMM)
or written to memory-mapped arrays (``outofcore.py``, the GLMM). A batch's complete rows
become the frame ``frame.build_frame`` would make of them in memory, except that factors
are pandas Categoricals with the global levels (so formulaic gives every batch the same
columns) and grouping columns become global level codes directly.

``stream_plan`` decides, from the formula and the files' schema, which columns are read
and which are factors; ``BatchEncoder`` holds the levels of the first pass and encodes
batches; ``check_stateless`` refuses transforms whose state needs all rows.
"""
from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd

from .batches import (
    column_values,
    complete_rows,
    missing_rows,
    normal_schema,
    partition_column_error,
)
from .design import level_labels, model_matrix
from .errors import DataError, ModelSpecError
from .frame import check_columns, numeric_column, total_offset, used_columns
from .levelscan import DENSE_RATIO, DENSE_SPAN, offsets
from .responses import numeric_response
from .terms import column_run
from .validate import check_column_types, check_size, check_values, row_label


# -- what the model reads ---------------------------------------------------------------
@dataclass(frozen=True)
class StreamPlan:
    """The columns a model reads and how each is encoded in a batch's pandas frame."""

    columns: tuple[str, ...]  # every used column, read from the files
    groups: tuple[str, ...]  # grouping columns (level codes computed directly)
    factors: tuple[str, ...]  # columns given to formulaic as Categoricals


_C_ARG = r"\bC\(\s*{}\s*[,)]"


def stream_plan(parsed, formula: str, schema, weights, offset, *,
                partition_columns=(), source_name: str = "the data") -> StreamPlan:
    """The used columns, checked against the files' schema as an in-memory fit checks them.
    A used column that is not in the files but names a Hive partition (``k=value``
    directories) is refused by name."""
    import pyarrow as pa

    schema = normal_schema(schema)
    for value, what in ((weights, "weights"), (offset, "offset")):
        if value is not None and not isinstance(value, str):
            raise ModelSpecError(f"a streamed fit reads {what} from a column: pass its name "
                                 f"({what}='w'), or fit in memory with streaming=False")
        if isinstance(value, str) and value not in schema.names:
            raise DataError(f"the {what} column {value!r} is not in the data")
    cols = used_columns(parsed, [a for a in (weights, offset) if isinstance(a, str)], formula)
    for name in cols:
        if name not in schema.names and name in partition_columns:
            raise partition_column_error(name, source_name)
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
        # text, dates, times, timestamps: every type but numbers and booleans is a
        # factor in memory (an object or datetime column becomes a Categorical)
        text = not (pa.types.is_integer(typ) or pa.types.is_floating(typ)
                    or pa.types.is_boolean(typ))
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

        y = self._plain(batch)
        if y is not None:
            return y if complete.all() else y[complete]
        batch = batch.select(list(self.columns)).filter(pa.array(complete))
        rows = pd.Index(np.flatnonzero(complete) + start if labels is None
                        else labels[complete])
        df = pd.DataFrame({c: column_values(batch.column(c)) for c in self.columns},
                          index=rows, copy=False)
        y, _ = numeric_response(self.parsed.response, df,
                                partial(numeric_column, formula=self.formula))
        off = total_offset(self.parsed, df, self.offset, len(df), self.formula)
        return y if off is None else y - off

    def _plain(self, batch) -> np.ndarray | None:
        """The response as float64 when it is one plain numeric column without offsets
        (what numeric_column gives it through pandas), else None."""
        import pyarrow as pa

        name = self.parsed.response
        if self.parsed.offsets or self.offset is not None or self.columns != (name,):
            return None
        typ = batch.column(name).type
        if not (pa.types.is_integer(typ) or pa.types.is_floating(typ)):
            return None
        return np.asarray(column_values(batch.column(name)), dtype=np.float64)


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
        return TermLevels(tuple(labels_of(values)), None, (len(values),))
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
    names = [labels_of(column_levels[g]) for g in group]
    labels = [":".join(n[c[i]] for n, c in zip(names, codes)) for i in order]
    return TermLevels(tuple(labels), keys, radix)


def labels_of(values: list) -> list[str]:
    """design.level_labels of a column's levels, temporal ones through a pandas Index as
    the in-memory frame holds them ('2024-01-01 00:00:00', not NumPy's ISO text), and
    integers through Arrow's cast to text (the same decimal digits as ``str``; half the
    time of a ``str`` per level: 0.08 s against 0.15 s for 10^6 levels)."""
    if len(values) and isinstance(values[0], (np.datetime64, np.timedelta64)):
        return level_labels(pd.Index(values))
    if isinstance(values, np.ndarray) and values.dtype.kind in "iu":
        import pyarrow as pa

        return pa.array(values).cast(pa.string()).to_pylist()
    return level_labels(values)


class LevelCoder:
    """Codes of a column's values among fixed levels (-1 for other values): int32 from
    the table, int64 otherwise.

    Integer levels of a span up to ``DENSE_SPAN`` (or ``DENSE_RATIO`` times their number)
    are looked up in a table indexed by value - min (one gather per row; none when the
    levels are every integer from their min up, in order: the code is value - min); other levels
    through a pandas Index, whose hash table is built once. A dictionary-encoded batch is
    coded through its dictionary, whose codes are kept while the next batches carry an
    equal dictionary (pyarrow gives every batch of a row group the whole dictionary).
    """

    def __init__(self, levels: np.ndarray):
        self.index = pd.Index(levels)
        self.table, self.lo, self.identity = None, 0, False
        if levels.dtype.kind in "iu" and len(levels):
            lo, hi = int(levels.min()), int(levels.max())
            span = hi - lo + 1
            if span <= max(DENSE_SPAN, DENSE_RATIO * len(levels)) and \
                    -(1 << 62) <= lo and hi < (1 << 62) and len(levels) < 2**31:
                self.table = np.full(span, -1, dtype=np.int32)
                self.table[levels.astype(np.int64) - lo] = np.arange(len(levels), dtype=np.int32)
                self.lo = lo
                self.identity = span == len(levels) and bool(
                    (self.table == np.arange(span, dtype=np.int32)).all())
        # (dictionary, codes of its values + [-1]) of the last dictionary seen: one
        # attribute, replaced whole, so that threads sharing this coder (Dask's threaded
        # partitions, through Accumulator.fresh) never pair one's codes with another's
        self._dictionary_map = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_dictionary_map"] = None
        return state

    def codes(self, col) -> np.ndarray:
        """Codes of an Arrow column's values (nulls: -1)."""
        import pyarrow as pa

        if pa.types.is_dictionary(col.type):
            d = col.dictionary
            known = self._dictionary_map
            if known is None or not (d is known[0] or d.equals(known[0])):
                known = (d, np.append(self.of(column_values(d)), -1))
                self._dictionary_map = known
            at = col.indices.fill_null(-1) if col.null_count else col.indices
            return known[1][at.to_numpy(zero_copy_only=False)]
        return self.of(column_values(col))

    def of(self, values: np.ndarray) -> np.ndarray:
        """Codes of NumPy values: int32 from the table (the kernels take them), int64
        through the Index."""
        if self.table is not None and values.dtype.kind in "iu":
            if not len(values):
                return np.zeros(0, dtype=np.int32)
            if self.lo <= int(values.min()) and int(values.max()) - self.lo < len(self.table):
                at = offsets(values, self.lo, len(self.table))
                if self.identity:  # the table maps every offset to itself
                    return at.astype(np.int32, copy=False)
                return np.take(self.table, at)
            at = values.astype(np.int64) - self.lo
            inside = (at >= 0) & (at < len(self.table))
            out = np.full(len(values), -1, dtype=np.int32)
            out[inside] = self.table[at[inside]]
            return out
        return self.index.get_indexer(values).astype(np.int64)


@dataclass
class BatchFrame:
    """One batch's model frame (complete rows): as frame.build_frame makes it for all rows."""

    y: np.ndarray
    XB: np.ndarray  # [X, slot for the response]
    xnames: tuple[str, ...]
    offset: np.ndarray | None
    w: np.ndarray | None  # the weights column (without binomial trials)
    xs: list  # per parsed term, its columns of Z
    cnames: list  # per parsed term, their names
    codes: list  # per parsed term, global level codes
    trials: np.ndarray | None = None  # binomial cbind() counts (prior weights multiply)
    rows: pd.Index | None = None  # the rows' numbers or labels (for messages)


class BatchEncoder:
    """The levels of the first pass, and each batch's complete rows as a BatchFrame.

    ``response(expr, df, evaluate)`` gives (y, trials or None), as in ``frame.build_frame``
    (``responses.numeric_response`` for an LMM, ``binomial_response`` for a binomial GLMM).
    """

    def __init__(self, parsed, formula: str, plan: StreamPlan, scan, *, weights, offset,
                 response=numeric_response):
        self.parsed, self.formula, self.plan = parsed, formula, plan
        self.weights, self.offset, self.response = weights, offset, response
        levels = {g: scan.levels[g].levels(keep_unused=False) for g in plan.groups}
        self.group_coder = {g: LevelCoder(v) for g, v in levels.items()}
        self.term_levels = [term_levels(t.group, levels, scan.combos) for t in parsed.random]
        self.key_index = [None if tl.keys is None else pd.Index(tl.keys)
                          for tl in self.term_levels]
        self.categories = {c: scan.levels[c].levels(keep_unused=True) for c in plan.factors}
        self.cat_coder = {c: LevelCoder(v) for c, v in self.categories.items()}
        self.n = scan.n_complete
        self.lean: LeanPlan | None = None  # set by the first non-empty batch, if it may
        self._lean_decided = False

    def encode_batch(self, start: int, batch, labels=None):
        """(pandas frame, BatchFrame) of a batch's complete rows, or None if it has none.
        Its rows are numbered from ``start`` (or labelled by ``labels``). The first
        non-empty batch goes through pandas and formulaic, and decides whether the next
        ones may take the lean path (``LeanPlan``), whose frame is None."""
        import pyarrow as pa

        columns = list(self.plan.columns)
        missing = missing_rows(batch, columns)
        if missing:
            complete = complete_rows(batch, columns, missing)
            if not complete.any():
                return None
            batch = batch.filter(pa.array(complete))
            rows = pd.Index(np.flatnonzero(complete) + start if labels is None
                            else labels[complete])
        elif not batch.num_rows:
            return None
        else:  # every row complete (the usual batch): no mask, no n-long index of numbers
            rows = (pd.RangeIndex(start, start + batch.num_rows) if labels is None
                    else pd.Index(labels))
        if self.lean is not None:
            with in_this_batch():
                return None, self.lean.frame(self, batch, rows)
        df = self._frame(batch, rows)
        bf = self._model_frame(df, batch)
        if not self._lean_decided:
            self._lean_decided = True
            self.lean = LeanPlan.of(self, batch, bf)
        return df, bf

    def _frame(self, batch, rows: pd.Index) -> pd.DataFrame:
        """The batch's used columns as the in-memory frame has them (factors: Categoricals
        with the global levels); grouping-only text columns are left out."""
        import pyarrow as pa

        cols = {}
        for name in self.plan.columns:
            col = batch.column(name)
            if name in self.cat_coder:
                cols[name] = pd.Categorical.from_codes(self.cat_coder[name].codes(col),
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
        with in_this_batch():
            return self._checked_frame(df, batch)

    def _checked_frame(self, df: pd.DataFrame, batch) -> BatchFrame:
        parsed, formula = self.parsed, self.formula
        y, trials = self.response(parsed.response, df, partial(numeric_column, formula=formula))
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
                          [n for _, n in xs], codes, trials, df.index)

    def _codes(self, group, tl: TermLevels, key_index, batch) -> np.ndarray:
        """Each row's level of a term: global codes (of the interaction's key for a:b)."""
        cols = [self.group_coder[g].codes(batch.column(g)) for g in group]
        if key_index is None:
            return cols[0]
        keys = np.zeros(batch.num_rows, dtype=np.int64)
        for c, r in zip(cols, tl.radix):
            keys = keys * r + c
        return key_index.get_indexer(keys).astype(np.int64)

    def _weights(self, df: pd.DataFrame) -> np.ndarray:
        from .validate import numeric_argument

        return checked_weights(numeric_argument(self.weights, df, len(df), "weights"),
                               df.index)


def checked_weights(w: np.ndarray, rows: pd.Index) -> np.ndarray:
    """A batch's prior weights, refused (naming the row) unless finite and >= 0."""
    bad = ~np.isfinite(w) | (w < 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"weights must be finite and >= 0; row {row_label(rows, i)} "
                        f"has {w[i]} ({int(bad.sum())} row(s) in this batch)")
    check_size(w, ["weights"], "the prior {}")
    return w


@dataclass(frozen=True)
class LeanPlan:
    """The model frame of a batch made with NumPy alone, for the common case: the
    response, the weights and every column of X and of each term's Z are plain numeric
    columns (or the intercept: None), without offsets. Same arrays, same checks and
    messages as the pandas and formulaic path (``BatchEncoder._checked_frame``), at a
    fraction of its cost per batch; the level codes are made as there.
    """

    response: str
    weights: str | None
    fixed: tuple  # per column of X: a column name, or None for the intercept
    terms: tuple  # per parsed term, per column of its Z: a column name or None

    @classmethod
    def of(cls, enc: BatchEncoder, batch, bf: BatchFrame) -> LeanPlan | None:
        """The plan that reproduces ``bf`` (the first batch's frame, made through
        pandas and formulaic) from ``batch``, or None if this model does not allow one
        or it does not give exactly ``bf``'s arrays."""
        import pyarrow as pa

        numeric = {name for name in enc.plan.columns if name not in enc.cat_coder and (
            pa.types.is_integer(batch.column(name).type)
            or pa.types.is_floating(batch.column(name).type))}

        def column_of(name):
            return None if name == "(Intercept)" else name if name in numeric else False

        parsed = enc.parsed
        if (enc.response is not numeric_response or parsed.response not in numeric
                or parsed.offsets or enc.offset is not None or bf.trials is not None
                or not (enc.weights is None or enc.weights in numeric)):
            return None
        fixed = tuple(column_of(n) for n in bf.xnames)
        terms = tuple(tuple(column_of(n) for n in names) for names in bf.cnames)
        if False in fixed or any(False in t for t in terms):
            return None
        plan = cls(parsed.response, enc.weights, fixed, terms)
        return plan if _same_frame(plan.frame(enc, batch, bf.rows), bf) else None

    def frame(self, enc: BatchEncoder, batch, rows: pd.Index) -> BatchFrame:
        """The BatchFrame of a batch of complete rows."""
        parsed = enc.parsed
        values = {}

        def col(name):
            if name not in values:
                values[name] = column_values(batch.column(name))
            return values[name]

        y = np.asarray(col(self.response), dtype=np.float64)
        check_values(y, [parsed.response], rows, "the response {}")
        n = len(y)
        XB = _columns([None if c is None else col(c) for c in self.fixed], n, 1)
        xnames = tuple("(Intercept)" if c is None else c for c in self.fixed)
        _check_data_columns(XB, self.fixed, xnames, (), rows, "the fixed-effects column {}")
        w = None if self.weights is None else checked_weights(
            np.asarray(col(self.weights), dtype=np.float64), rows)
        xs, cnames, codes = [], [], []
        for t, cols, tl, ki in zip(parsed.random, self.terms, enc.term_levels, enc.key_index):
            at = column_run(cols, self.fixed)
            if at is None:
                X = _columns([None if c is None else col(c) for c in cols], n, 0)
            else:  # (1 + x | g) of y ~ x + ...: X's columns themselves, as a view
                X = XB[:, at:at + len(cols)]
            names = tuple("(Intercept)" if c is None else c for c in cols)
            _check_data_columns(X, cols, names, self.fixed, rows, f"the column {{}} of the "
                                f"random-effects term ({t.lhs} | {t.group_name})")
            xs.append(X)
            cnames.append(names)
            codes.append(enc._codes(t.group, tl, ki, batch))
        return BatchFrame(y, XB, xnames, None, w, xs, cnames, codes, None, rows)


def _check_data_columns(X: np.ndarray, columns: tuple, names: tuple, checked: tuple,
                        rows: pd.Index, what: str) -> None:
    """check_values of X's first len(columns) columns (``names``), looking only at those
    made from data columns (``columns``: a name, or None for the intercept's ones, which
    need no check) and not ``checked`` already (a term's x that is also a fixed-effects
    column: the same values), each as a view. If one fails, all are checked together, as
    the pandas path does, for its message (the first bad row of any column, the rows
    bad in any)."""
    try:
        for j, name in enumerate(columns):
            if name is not None and name not in checked:
                check_values(X[:, j], (name,), rows, what)
    except DataError:
        check_values(X[:, :len(columns)], names, rows, what)
        raise


def _columns(columns: list, n: int, extra: int) -> np.ndarray:
    """The columns (None: ones) as a C-ordered float64 (n, k + extra) array."""
    X = np.empty((n, len(columns) + extra), dtype=np.float64)
    for j, values in enumerate(columns):
        X[:, j] = 1.0 if values is None else values
    return X


def _same_frame(a: BatchFrame, b: BatchFrame) -> bool:
    """Whether two frames hold the same arrays (values, dtypes, shapes) and names."""
    def same(x, y):
        if x is None or y is None:
            return x is None and y is None
        x, y = np.asarray(x), np.asarray(y)
        return x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y)

    return (same(a.y, b.y) and same(a.XB[:, :-1], b.XB[:, :-1]) and a.xnames == b.xnames
            and same(a.w, b.w) and a.offset is None and b.offset is None
            and len(a.xs) == len(b.xs) and all(same(x, y) for x, y in zip(a.xs, b.xs))
            and [tuple(c) for c in a.cnames] == [tuple(c) for c in b.cnames]
            and all(same(x, y) for x, y in zip(a.codes, b.codes)))


def check_same_columns(bf: BatchFrame, xnames, cnames) -> None:
    """A batch's model-matrix columns are those of the first non-empty batch, or a
    DataError says which differ."""
    if bf.xnames != tuple(xnames) or list(bf.cnames) != list(cnames):
        raise DataError(f"a batch of the data gave other model-matrix columns "
                        f"({list(bf.xnames)}) than the first ({list(xnames)}); fit in "
                        "memory (streaming=False, or the rows as one pandas DataFrame)")


@contextmanager
def in_this_batch():
    """DataErrors of per-row checks run on one batch count the rows of that batch: their
    "row(s) in all" becomes "row(s) in this batch"."""
    try:
        yield
    except DataError as err:
        if err.args and isinstance(err.args[0], str) and "row(s) in all" in err.args[0]:
            err.args = (err.args[0].replace("row(s) in all", "row(s) in this batch"),
                        *err.args[1:])
        raise


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
