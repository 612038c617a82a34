"""Parquet sources read in batches of rows, and the first pass that finds the factor levels.

Data in, for data larger than memory (data -> terms -> cross-products -> ...; the second
pass, which accumulates the cross-products of an LMM, is ``streaming.py``; for a GLMM it
encodes the rows to memory-mapped files, ``outofcore.py``; both encode each batch with
``batchframe.py``). A source is a Parquet
file, a directory of them, a glob, or a ``pyarrow.dataset.Dataset`` of Parquet files;
its rows are read file by file with ``pyarrow.parquet.ParquetFile.iter_batches``, only
the used columns, one batch at a time (pyarrow's threaded dataset scanner holds about
1 GB ahead of the reader; ``iter_batches`` keeps memory flat).

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
left before right, with the result of a scan of the partitions in that order. Besides
Parquet sources, ``frame_batches`` reads a pandas DataFrame or pyarrow Table / RecordBatch
(one partition) in the same batches. Progress bars (``progress_bar``) and the
``glmm_sparse`` logger report the passes to pipeline jobs.
"""
from __future__ import annotations

import glob as globmod
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import DataError

PARQUET_SUFFIXES = (".parquet", ".pq")
BATCH_ROWS = 1 << 16  # rows per batch: memory is a few columns of this many rows
GLOB_CHARS = "*?["

log = logging.getLogger(__name__)


# -- sources ----------------------------------------------------------------------------
def is_dataset(data) -> bool:
    """Whether ``data`` is a pyarrow Dataset (without importing pyarrow for other inputs)."""
    module = type(data).__module__ or ""
    if not module.startswith("pyarrow"):
        return False
    import pyarrow.dataset as ds

    return isinstance(data, ds.Dataset)


def is_parquet_source(data) -> bool:
    """A Parquet file path, a directory, a glob, or a pyarrow Dataset."""
    if is_dataset(data):
        return True
    if not isinstance(data, (str, Path)):
        return False
    text = str(data)
    if any(c in text for c in GLOB_CHARS) and not Path(text).exists():
        return True
    path = Path(text)
    return path.is_dir() or path.suffix.lower() in PARQUET_SUFFIXES


@dataclass(frozen=True)
class ParquetSource:
    """The Parquet files of a source, in reading order, and the filesystem holding them."""

    files: tuple[str, ...]
    name: str
    filesystem: object = field(default=None, repr=False)

    def open(self, path: str):
        import pyarrow.parquet as pq

        try:
            if self.filesystem is None:
                return pq.ParquetFile(path)
            return pq.ParquetFile(self.filesystem.open_input_file(path))
        except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
            raise DataError(f"cannot read the Parquet file {path!r}: {err}") from None

    @property
    def num_rows(self) -> int:
        """Rows in all files, from the Parquet footers (nothing else is read)."""
        return sum(self.open(f).metadata.num_rows for f in self.files)

    def schema(self):
        """The Arrow schema of the first file."""
        return self.open(self.files[0]).schema_arrow

    def check_schemas(self, columns) -> None:
        """Every file holds the used columns with the same type, or a DataError names the
        file, the column and both types. Dictionary encoding and string offsets (string /
        large_string) do not count as differences."""
        first = self.schema()
        for path in self.files:
            schema = self.open(path).schema_arrow
            for name in columns:
                if name not in schema.names:
                    if name in first.names:
                        raise DataError(f"column {name!r} is in {self.files[0]!r} but not in "
                                        f"{path!r}: every Parquet file of the data must hold "
                                        "the columns the model uses")
                    continue  # the formula check names a column missing from every file
                a, b = _base_type(first.field(name).type), _base_type(schema.field(name).type)
                if a != b:
                    raise DataError(f"column {name!r} has type {first.field(name).type} in "
                                    f"{self.files[0]!r} but {schema.field(name).type} in "
                                    f"{path!r}: write the files with one schema (or cast the "
                                    "column) before fitting")

    def batches(self, columns: list[str], batch_rows: int = BATCH_ROWS):
        """(first row number, RecordBatch of ``columns``) for every batch, file by file."""
        start = 0
        for path in self.files:
            pf = self.open(path)
            for batch in pf.iter_batches(batch_size=batch_rows, columns=columns,
                                         use_threads=False):
                yield start, batch
                start += batch.num_rows


def _base_type(typ):
    """A column's type up to dictionary encoding and string offsets."""
    import pyarrow as pa

    if pa.types.is_dictionary(typ):
        typ = typ.value_type
    if pa.types.is_large_string(typ):
        return pa.string()
    if pa.types.is_large_binary(typ):
        return pa.binary()
    return typ


def open_source(data) -> ParquetSource:
    """The ParquetSource of a path, directory, glob or pyarrow Dataset."""
    if is_dataset(data):
        return _dataset_source(data)
    text = str(data)
    path = Path(text)
    if path.is_dir():
        files = sorted(str(p) for p in path.rglob("*")
                       if p.is_file() and p.suffix.lower() in PARQUET_SUFFIXES)
        if not files:
            raise DataError(f"the directory {text!r} holds no .parquet files")
    elif path.exists():
        files = [text]
    elif any(c in text for c in GLOB_CHARS):
        files = sorted(f for f in globmod.glob(text, recursive=True) if Path(f).is_file())
        if not files:
            raise DataError(f"no file matches the pattern {text!r}")
    else:
        raise DataError(f"data file {text!r} does not exist")
    return ParquetSource(tuple(files), text)


def _dataset_source(dataset) -> ParquetSource:
    """A FileSystemDataset of Parquet files (its files in the dataset's order)."""
    import pyarrow.dataset as ds

    files = getattr(dataset, "files", None)
    if not isinstance(dataset, ds.FileSystemDataset) or not isinstance(
            dataset.format, ds.ParquetFileFormat):
        raise DataError("a pyarrow Dataset must be a FileSystemDataset of Parquet files "
                        f"(ds.dataset(path, format='parquet')), not {type(dataset).__name__}")
    if not files:
        raise DataError("the pyarrow Dataset holds no files")
    return ParquetSource(tuple(files), f"Dataset of {len(files)} file(s)", dataset.filesystem)


def read_whole(data) -> pd.DataFrame:
    """All rows of a Parquet source in one pandas DataFrame (the in-memory path), read as
    ``pd.read_parquet`` reads a list of files: dictionaries unified in file order."""
    source = open_source(data)
    try:
        if is_dataset(data):
            return data.to_table().to_pandas()
        return pd.read_parquet(list(source.files))
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
        raise DataError(f"cannot read the Parquet data {source.name!r}: {err}") from None


def frame_batches(data, columns: list[str], batch_rows: int = BATCH_ROWS):
    """(first row number, RecordBatch of ``columns``, row labels or None) for every batch of
    one partition: a pandas DataFrame (labels: its index), a pyarrow Table or RecordBatch."""
    import pyarrow as pa

    if isinstance(data, pd.DataFrame):
        for start in range(0, len(data), batch_rows):
            part = data.iloc[start:start + batch_rows]
            table = pa.Table.from_pandas(part[columns], preserve_index=False)
            yield start, table.combine_chunks().to_batches()[0], part.index.to_numpy()
        return
    if isinstance(data, pa.RecordBatch):
        data = pa.Table.from_batches([data])
    if not isinstance(data, pa.Table):
        raise TypeError("a partition must be a pandas DataFrame or a pyarrow Table or "
                        f"RecordBatch, not {type(data).__name__}")
    start = 0
    for batch in data.select(columns).to_batches(max_chunksize=batch_rows):
        yield start, batch, None
        start += batch.num_rows


class _Silent:
    """A progress bar that shows nothing."""

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(progress: bool | None, *, total: int | None, desc: str, unit: str):
    """A tqdm bar (``progress=True``), nothing (False), or, by default (None), a bar only when
    stderr is a terminal, so that pipeline logs stay free of bar updates."""
    if progress is None:
        progress = bool(getattr(sys.stderr, "isatty", lambda: False)())
    if not progress:
        return _Silent()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, leave=False)


# -- the first pass: missing rows and levels ----------------------------------------------
def complete_rows(batch, columns: list[str]) -> np.ndarray:
    """Bool mask of the batch's rows with a value in every column (null and NaN missing)."""
    import pyarrow.compute as pc

    ok = np.ones(batch.num_rows, dtype=bool)
    for name in columns:
        col = batch.column(name)
        if col.null_count or _is_floating(col.type):
            ok &= ~pc.is_null(col, nan_is_null=True).to_numpy(zero_copy_only=False)
    return ok


def _is_floating(typ) -> bool:
    import pyarrow as pa

    return pa.types.is_floating(_base_type(typ))


def column_values(col) -> np.ndarray:
    """An Arrow column's values as NumPy (dictionary columns decoded)."""
    import pyarrow as pa

    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    return col.to_numpy(zero_copy_only=False)


class DistinctValues:
    """The distinct values seen so far, in memory bounded by their number: each batch's
    distinct values wait in a list that is merged (hashing) when it outgrows the merged set."""

    def __init__(self):
        self.merged = np.empty(0, dtype=object)
        self.pending: list[np.ndarray] = []
        self.pending_size = 0

    def add(self, values: np.ndarray) -> None:
        new = pd.unique(values)
        self.pending.append(new)
        self.pending_size += len(new)
        if self.pending_size > max(2 * len(self.merged), BATCH_ROWS):
            self._merge()

    def _merge(self) -> None:
        if self.pending:
            self.merged = pd.unique(np.concatenate([self.merged, *self.pending]))
            self.pending, self.pending_size = [], 0

    def merge(self, other: DistinctValues) -> None:
        """Add the values another partition saw."""
        other._merge()
        if len(other.merged):
            self.add(other.merged)

    def sorted(self) -> np.ndarray:
        """The distinct values in pd.factorize(sort=True)'s order."""
        self._merge()
        return pd.Index(self.merged).sort_values().to_numpy()


class DistinctRows:
    """The distinct combinations of several columns (a grouping interaction a:b)."""

    def __init__(self, names: tuple[str, ...]):
        self.names = names
        self.merged = pd.DataFrame({n: [] for n in names})
        self.pending: list[pd.DataFrame] = []
        self.pending_size = 0

    def add(self, columns: list[np.ndarray]) -> None:
        new = pd.DataFrame(dict(zip(self.names, columns))).drop_duplicates()
        self.pending.append(new)
        self.pending_size += len(new)
        if self.pending_size > max(2 * len(self.merged), BATCH_ROWS):
            self._merge()

    def _merge(self) -> None:
        if self.pending:
            frames = [f for f in (self.merged, *self.pending) if len(f)]
            self.merged = (pd.concat(frames, ignore_index=True).drop_duplicates()
                           if frames else self.merged)
            self.pending, self.pending_size = [], 0

    def rows(self) -> pd.DataFrame:
        self._merge()
        return self.merged.reset_index(drop=True)

    def merge(self, other: DistinctRows) -> None:
        """Add the combinations another partition saw."""
        rows = other.rows()
        if len(rows):
            self.add([rows[n].to_numpy() for n in self.names])


class ColumnLevels:
    """The levels of one factor column: dictionary categories in order of first
    appearance (if dictionary-encoded), and the distinct values of complete rows."""

    def __init__(self):
        self.dictionary: dict | None = None  # value -> position, insertion-ordered
        self.used = DistinctValues()

    def add(self, col, complete: np.ndarray) -> None:
        import pyarrow as pa

        if pa.types.is_dictionary(col.type):
            if self.dictionary is None:
                self.dictionary = {}
            for value in col.dictionary.to_pylist():
                self.dictionary.setdefault(value, len(self.dictionary))
        self.used.add(column_values(col)[complete])

    def merge(self, other: ColumnLevels) -> None:
        """Add another partition's levels (its dictionary's new values after ours)."""
        if other.dictionary is not None:
            if self.dictionary is None:
                self.dictionary = {}
            for value in other.dictionary:
                self.dictionary.setdefault(value, len(self.dictionary))
        self.used.merge(other.used)

    def categories(self, *, keep_unused: bool) -> list:
        """The levels in the in-memory order (see the module docstring)."""
        used = self.used.sorted()
        if self.dictionary is None:
            return list(used)
        if keep_unused:
            return list(self.dictionary)
        present = set(used.tolist())
        return [v for v in self.dictionary if v in present]


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
        import pyarrow.compute as pc

        complete = complete_rows(batch, columns)
        self.n_rows += batch.num_rows
        self.n_complete += int(complete.sum())
        for name in columns:
            col = batch.column(name)
            if col.null_count or _is_floating(col.type):
                self.missing[name] += int(pc.sum(pc.is_null(col, nan_is_null=True)).as_py() or 0)
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
        return {name: len(levels.categories(keep_unused=False))
                for name, levels in self.levels.items()}


def scan_levels(source: ParquetSource, columns: list[str], factors: list[str],
                interactions: list[tuple[str, ...]], batch_rows: int = BATCH_ROWS, *,
                response=None, progress: bool | None = None) -> LevelScan:
    """The first pass over the source (see the module docstring)."""
    scan = LevelScan.empty(columns, factors, interactions)
    bar = progress_bar(progress, total=source.num_rows, desc="levels pass", unit="row")
    try:
        for start, batch in source.batches(columns, batch_rows):
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
