"""The first pass over batches of rows: missing values and the levels of every factor.

The first pass (``scan_levels``) reads every used column once and keeps, in memory
bounded by the number of levels:

- the rows that are complete (no null, no NaN in a used column: pandas' ``isna``, which
  the in-memory path applies) and the number of each column's missing values;
- for every factor column, its levels in the order the in-memory path gives them:
  a dictionary-encoded column (a pandas Categorical written to Parquet) keeps its
  dictionary in order of first appearance across files, as ``pd.read_parquet`` unifies
  it; any other column's levels are its sorted distinct values. Grouping factors keep
  only the levels of complete rows (terms._factor_codes drops unused categories);
  fixed-effects factors of a dictionary column keep every category (formulaic does);
- for a grouping interaction ``a:b``, the combinations that occur in complete rows;
- the sum and count of the response minus offsets over complete rows (a callable given by
  ``streaming.py`` evaluates them), whose mean centres the second pass.

Every piece of a ``LevelScan`` merges with another (``LevelScan.merge``): partitions of
the rows can be scanned anywhere (Dask workers, Spark executors) and the scans reduced,
left before right, with the result of a scan of the partitions in that order. The rows
come from ``batches.py`` (a Parquet source, or one partition through ``frame_batches``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .batches import (
    BATCH_ROWS,
    ParquetSource,
    ReadAhead,
    column_values,
    frame_batches,
    missing_rows,
    progress_bar,
    read_ahead_depth,
)

DENSE_SPAN = 1 << 24  # integer levels kept as a presence table up to this span (16 MB) ...
DENSE_RATIO = 8  # ... or this many times their number


class _Distinct:
    """Distinct items seen so far, in memory bounded by their number: each batch's distinct
    items wait in a list that is merged into the set (hashing) when it outgrows it.
    Subclasses say how a batch's items are made distinct and how parts are combined."""

    def __init__(self, empty):
        self.merged = empty
        self.pending: list = []
        self.pending_size = 0

    def _add_distinct(self, new) -> None:
        self.pending.append(new)
        self.pending_size += len(new)
        held = 0 if self.merged is None else len(self.merged)
        if self.pending_size > max(2 * held, BATCH_ROWS):
            self._merge()

    def _merge(self) -> None:
        if self.pending:
            self.merged = self._combine([self.merged, *self.pending])
            self.pending, self.pending_size = [], 0

    def _combine(self, parts: list):
        raise NotImplementedError


class DistinctValues(_Distinct):
    """The distinct values of one column, in order of first appearance, in the column's
    own dtype (int32 codes stay int32: hashing and sorting Python objects cost ten times
    more). Integers of a span not much larger than their count are kept as a presence
    table (``DenseSeen``): a batch costs one gather, and the sorted values are the table's
    non-zero entries. Others are hashed (``pd.unique``) in merges of pending batches.
    The sorted values are computed once and kept until a value is added."""

    def __init__(self):
        super().__init__(None)
        self.dense: DenseSeen | None = None
        self.started = False
        self._sorted = None

    def add(self, values: np.ndarray) -> None:
        self._sorted = None
        if not self.started:
            self.started = True
            self.dense = DenseSeen.of(values)
        if self.dense is not None:
            if self.dense.add(values):
                return
            self.merged, self.dense = self.dense.ordered(), None  # too sparse: hash from here
        self._add_distinct(pd.unique(values))

    def _combine(self, parts: list) -> np.ndarray:
        parts = [p for p in parts if p is not None]
        return pd.unique(np.concatenate(parts)) if len(parts) > 1 else parts[0]

    def merge(self, other: DistinctValues) -> None:
        """Add the values another partition saw."""
        values = other.ordered()
        if len(values):
            self.add(values)

    def sorted(self) -> np.ndarray:
        """The distinct values in pd.factorize(sort=True)'s order."""
        if self._sorted is None:
            if self.dense is not None:
                self._sorted = self.dense.sorted()
            else:
                self._sorted = pd.Index(self.ordered()).sort_values().to_numpy()
        return self._sorted

    def ordered(self) -> np.ndarray:
        """The distinct values in order of first appearance (pd.unique keeps it)."""
        if self.dense is not None:
            return self.dense.ordered()
        self._merge()
        return np.empty(0, dtype=object) if self.merged is None else self.merged


class DenseSeen:
    """Distinct integers as a presence table over [lo, lo + len(seen)) and the new values
    of each batch in order of first appearance; it gives up (``add`` returns False) when
    the span of the values grows beyond ``DENSE_SPAN`` entries and ``DENSE_RATIO`` times
    their number (unless ``bounded`` is False: indices into a dictionary held anyway)."""

    def __init__(self, dtype, lo: int | None, *, bounded: bool = True):
        self.dtype, self.lo, self.bounded = dtype, lo, bounded
        self.seen = np.zeros(0, dtype=bool)
        self.parts: list = []
        self.count = 0

    @classmethod
    def of(cls, values: np.ndarray) -> DenseSeen | None:
        """A table for values of this integer dtype (None for other dtypes)."""
        if values.dtype.kind not in "iu" or values.dtype.itemsize > 8:
            return None
        return cls(values.dtype, None)

    def add(self, values: np.ndarray) -> bool:
        if values.dtype.kind not in "iu":
            return False
        if not len(values):
            return True
        lo, hi = int(values.min()), int(values.max())
        if not self._cover(lo, hi):
            return False
        seen = np.take(self.seen, offsets(values, self.lo, len(self.seen)))
        if not seen.all():
            new = ~seen
            fresh = pd.unique(values[new])
            self.seen[fresh.astype(np.int64) - self.lo] = True
            self.parts.append(fresh.astype(self.dtype, copy=False))
            self.count += len(fresh)
        return True

    def _cover(self, lo: int, hi: int) -> bool:
        """Extend the table to [lo, hi]; False if it would be too sparse."""
        if self.lo is None:
            self.lo = lo
        new_lo, new_hi = min(self.lo, lo), max(self.lo + len(self.seen) - 1, hi)
        span = new_hi - new_lo + 1
        too_sparse = self.bounded and span > max(DENSE_SPAN, DENSE_RATIO * (self.count + 1))
        if too_sparse or new_lo < -(1 << 62) or new_hi >= (1 << 62):
            return False
        if new_lo < self.lo or span > len(self.seen):
            grown = np.zeros(max(span, min(2 * len(self.seen), DENSE_SPAN)), dtype=bool)
            grown[self.lo - new_lo:self.lo - new_lo + len(self.seen)] = self.seen
            self.seen, self.lo = grown, new_lo
        return True

    def ordered(self) -> np.ndarray:
        if len(self.parts) > 1:
            self.parts = [np.concatenate(self.parts)]
        return self.parts[0] if self.parts else np.zeros(0, dtype=self.dtype)

    def sorted(self) -> np.ndarray:
        return (np.flatnonzero(self.seen) + self.lo).astype(self.dtype)


def offsets(values: np.ndarray, lo: int, size: int) -> np.ndarray:
    """values - lo for integers known to lie in [lo, lo + size): int32 for int32 values
    when size < 2^31 (the difference wrapped modulo 2^32 is then the true one; half the
    memory traffic of int64), int64 otherwise."""
    if values.dtype == np.int32 and size < 2**31 and -(2**31) <= lo < 2**31:
        return values - np.int32(lo)
    return values.astype(np.int64) - lo


class DistinctRows(_Distinct):
    """The distinct combinations of several columns (a grouping interaction a:b)."""

    def __init__(self, names: tuple[str, ...]):
        super().__init__(pd.DataFrame({n: [] for n in names}))
        self.names = names

    def add(self, columns: list[np.ndarray]) -> None:
        self._add_distinct(pd.DataFrame(dict(zip(self.names, columns))).drop_duplicates())

    def _combine(self, parts: list) -> pd.DataFrame:
        frames = [f for f in parts if len(f)]
        return pd.concat(frames, ignore_index=True).drop_duplicates() if frames else parts[0]

    def rows(self) -> pd.DataFrame:
        self._merge()
        return self.merged.reset_index(drop=True)

    def merge(self, other: DistinctRows) -> None:
        """Add the combinations another partition saw."""
        rows = other.rows()
        if len(rows):
            self.add([rows[n].to_numpy() for n in self.names])


class ColumnLevels:
    """The levels of one factor column, in the order ``pd.read_parquet`` of the files gives
    them. Their type is the first batch's: when it is dictionary-encoded (a pandas
    Categorical), the column is read as a Categorical whose categories are the values in
    order of first appearance across batches, each dictionary batch contributing its
    whole dictionary (used or not) and each plain batch its values; otherwise it is read
    as values, whose levels are the sorted distinct values of complete rows.

    Dictionary batches are read through their indices: a dictionary is decoded once and
    kept while the next batches carry an equal one (pyarrow gives every batch of a row
    group the whole dictionary); the entries used by complete rows are collected as
    indices (``DenseSeen``, in order of first use) and decoded when the dictionary changes.
    """

    def __init__(self):
        self.dictionary_first: bool | None = None  # decided by the first batch
        self.appearance = DistinctValues()  # dictionaries and values, first appearance
        self._used = DistinctValues()  # values of complete rows
        self._dictionary = None  # the current dictionary batches' dictionary (Arrow)
        self._dictionary_used: DenseSeen | None = None  # its entries used, as indices
        self._levels: dict = {}  # keep_unused -> levels (until something is added)

    def add(self, col, complete: np.ndarray) -> None:
        import pyarrow as pa

        self._levels = {}
        dictionary = pa.types.is_dictionary(col.type)
        if self.dictionary_first is None:
            self.dictionary_first = dictionary
        if dictionary:
            self._see_dictionary(col.dictionary)
            indices = col.indices
            if indices.null_count:
                indices = indices.fill_null(0)  # null rows are incomplete
            at = indices.to_numpy(zero_copy_only=False)
            self._dictionary_used.add(at if complete.all() else at[complete])
            return
        values = column_values(col)
        if self.dictionary_first:  # else the levels are sorted: no order to keep
            if col.null_count:
                self.appearance.add(values[col.is_valid().to_numpy(zero_copy_only=False)])
            else:
                self.appearance.add(values)
        self._used.add(values if complete.all() else values[complete])

    def _see_dictionary(self, dictionary) -> None:
        """Start collecting the used entries of ``dictionary`` unless it equals the current
        one (a memory comparison, far cheaper than decoding it)."""
        current = self._dictionary
        if current is not None and (dictionary is current or dictionary.equals(current)):
            return
        self._flush()
        self._dictionary = dictionary
        self._dictionary_used = DenseSeen(np.dtype(np.int64), 0, bounded=False)
        if self.dictionary_first:
            self.appearance.add(column_values(dictionary))

    def _flush(self) -> None:
        """The used entries of the current dictionary, decoded into the used values."""
        if self._dictionary is not None:
            at = self._dictionary_used.ordered()
            if len(at):
                self._used.add(column_values(self._dictionary.take(at)))
            self._dictionary, self._dictionary_used = None, None

    @property
    def used(self) -> DistinctValues:
        """The values of complete rows."""
        self._flush()
        return self._used

    def __getstate__(self):
        self._flush()  # no Arrow dictionary travels with a pickled scan
        return self.__dict__

    def merge(self, other: ColumnLevels) -> None:
        """Add the levels of a partition of the rows after ours."""
        self._levels = {}
        self._flush()
        if self.dictionary_first is None:
            self.dictionary_first = other.dictionary_first
        if self.dictionary_first:
            # a partition that began plain kept no order of all its values: its values
            # of complete rows, in order of first appearance, stand for them (a value
            # only in its incomplete rows is then not a category)
            self.appearance.merge(other.appearance if other.dictionary_first else other.used)
        self._used.merge(other.used)

    def levels(self, *, keep_unused: bool) -> np.ndarray:
        """The levels in the in-memory order (see the class docstring), as an array of the
        column's dtype: all categories (``keep_unused``: fixed-effects factors, as
        formulaic keeps them) or those of complete rows (grouping factors:
        terms._factor_codes drops unused ones). Computed once."""
        key = bool(keep_unused) or not self.dictionary_first
        if key not in self._levels:
            if not self.dictionary_first:
                found = self.used.sorted()
            else:
                found = self.appearance.ordered()
                if not keep_unused:
                    found = found[pd.Index(found).isin(self.used.ordered())]
            self._levels[key] = found
        return self._levels[key]

    def categories(self, *, keep_unused: bool) -> list:
        """``levels`` as a list (NumPy numbers as Python numbers)."""
        found = self.levels(keep_unused=keep_unused)
        return found.tolist() if found.dtype.kind in "biuf" else list(found)


@dataclass
class LevelScan:
    """What the first pass found: rows, missing values, the levels of factor columns and
    the sum of the response minus offsets over complete rows."""

    n_rows: int = 0
    n_complete: int = 0
    missing: dict = field(default_factory=dict)  # column -> rows missing it
    levels: dict = field(default_factory=dict)  # column -> ColumnLevels
    combos: dict = field(default_factory=dict)  # group tuple -> DistinctRows
    r_sum: float = 0.0  # sum of y - offset over complete rows
    r_count: int = 0

    @classmethod
    def empty(cls, columns, factors, interactions) -> LevelScan:
        return cls(missing={c: 0 for c in columns}, levels={c: ColumnLevels() for c in factors},
                   combos={tuple(g): DistinctRows(tuple(g)) for g in interactions})

    def add(self, batch, columns: list[str], response=None, start: int = 0,
            labels=None) -> None:
        """One batch of rows; ``response(batch, complete, start, labels)`` gives y - offset
        of its complete rows (for the centre)."""
        complete = np.ones(batch.num_rows, dtype=bool)
        for name, missing in missing_rows(batch, columns).items():
            self.missing[name] += int(missing.sum())
            complete &= ~missing
        self.n_rows += batch.num_rows
        self.n_complete += int(complete.sum())
        for name, levels in self.levels.items():
            levels.add(batch.column(name), complete)
        for group, rows in self.combos.items():
            rows.add([column_values(batch.column(g))[complete] for g in group])
        if response is not None and complete.any():
            r = response(batch, complete, start, labels)
            self.r_sum += float(r.sum())
            self.r_count += len(r)

    def merge(self, other: LevelScan) -> LevelScan:
        """This scan extended by a scan of the rows after ours (in place; returns self)."""
        self.n_rows += other.n_rows
        self.n_complete += other.n_complete
        for name, count in other.missing.items():
            self.missing[name] = self.missing.get(name, 0) + count
        for name, levels in other.levels.items():
            self.levels.setdefault(name, ColumnLevels()).merge(levels)
        for group, rows in other.combos.items():
            self.combos.setdefault(group, DistinctRows(group)).merge(rows)
        self.r_sum += other.r_sum
        self.r_count += other.r_count
        return self

    @property
    def centre(self) -> float:
        """Mean of y - offset over complete rows (0 if none, or not finite: the second pass
        then reports the value that made it so)."""
        c = self.r_sum / self.r_count if self.r_count else 0.0
        return c if np.isfinite(c) else 0.0

    def n_levels(self) -> dict:
        """Levels seen per factor column (for the log)."""
        return {name: len(levels.levels(keep_unused=False))
                for name, levels in self.levels.items()}


def scan_levels(source: ParquetSource, columns: list[str], factors: list[str],
                interactions: list[tuple[str, ...]], batch_rows: int = BATCH_ROWS, *,
                response=None, progress: bool | None = None) -> LevelScan:
    """The first pass over the source (see the module docstring)."""
    scan = LevelScan.empty(columns, factors, interactions)
    bar = progress_bar(progress, total=source.num_rows, desc="levels pass", unit="row")
    try:
        with ReadAhead(source.batches(columns, batch_rows), read_ahead_depth()) as batches:
            for start, batch in batches:
                scan.add(batch, columns, response, start)
                bar.update(batch.num_rows)
    finally:
        bar.close()
    return scan


def scan_partition(data, columns: list[str], factors: list[str],
                   interactions: list[tuple[str, ...]], batch_rows: int = BATCH_ROWS, *,
                   response=None) -> LevelScan:
    """The first pass over one partition (pandas DataFrame, pyarrow Table or RecordBatch)."""
    scan = LevelScan.empty(columns, factors, interactions)
    for start, batch, labels in frame_batches(data, columns, batch_rows):
        scan.add(batch, columns, response, start, labels)
    return scan
