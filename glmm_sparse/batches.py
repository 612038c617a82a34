"""Parquet sources read in batches of rows.

Data in, for data larger than memory (data -> terms -> cross-products -> ...; the first
pass, which finds the factor levels, is ``levelscan.py``; the second pass, which
accumulates the cross-products of an LMM, is ``streaming.py``; for a GLMM it encodes the
rows to memory-mapped files, ``outofcore.py``; both encode each batch with
``batchframe.py``). A source is a Parquet
file, a directory of them, a glob, or a ``pyarrow.dataset.Dataset`` of Parquet files;
its rows are read file by file with ``pyarrow.parquet.ParquetFile.iter_batches``, only
the used columns, one batch at a time (pyarrow's threaded dataset scanner holds about
1 GB ahead of the reader; ``iter_batches`` keeps memory flat), a reader thread decoding
the next batch while a pass works on the current one (``ReadAhead``). Besides
Parquet sources, ``frame_batches`` reads a pandas DataFrame or pyarrow Table / RecordBatch
(one partition) in the same batches. Which rows are complete (``complete_rows``,
``missing_rows``) is decided here, as the in-memory path does. Progress bars
(``progress_bar``) and the ``glmm_sparse`` logger report the passes to pipeline jobs.
"""
from __future__ import annotations

import glob as globmod
import logging
import queue
import sys
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import DataError
from .parallel import n_threads

PARQUET_SUFFIXES = (".parquet", ".pq")
BATCH_ROWS = 1 << 16  # rows per batch: memory is a few columns of this many rows
GLOB_CHARS = "*?["
IGNORE_PREFIXES = ("_", ".")  # pyarrow.dataset's ignore_prefixes
READ_AHEAD = 1  # batches a reader thread decodes ahead of the one the pass works on

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
    """The Parquet files of a source, in reading order, and the filesystem holding them.

    ``casts``: (column, Arrow type) pairs that every batch is cast to, set by
    ``check_schemas`` when files hold a numeric column in types of different widths.
    """

    files: tuple[str, ...]
    name: str
    filesystem: object = field(default=None, repr=False)
    casts: tuple = ()
    partition_columns: tuple[str, ...] = ()  # Hive partitioning: not inside the files

    def open(self, path: str):
        import pyarrow.parquet as pq

        # pre_buffer=False: the default pre-buffers a whole file's used columns (measured
        # 86 MB of Arrow's pool for 4e6 rows in one file, against 8 MB read row group by
        # row group)
        try:
            if self.filesystem is None:
                return pq.ParquetFile(path, pre_buffer=False)
            return pq.ParquetFile(self.filesystem.open_input_file(path), pre_buffer=False)
        except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
            raise DataError(f"cannot read the Parquet file {path!r}: {err}") from None

    @property
    def num_rows(self) -> int:
        """Rows in all files, from the Parquet footers (nothing else is read)."""
        return sum(self.open(f).metadata.num_rows for f in self.files)

    def schema(self):
        """The Arrow schema of the first file, as the batches have it: decimal columns as
        float64, and a column of type null (an empty file written from an empty pandas
        object column) with the type the first other file gives it."""
        first = self.open(self.files[0])
        schema = normal_schema(first.schema_arrow)
        nulls = [f.name for f in schema if _is_null(f.type)]
        for path in self.files[1:]:
            if not nulls:
                break
            other = normal_schema(self.open(path).schema_arrow)
            for name in list(nulls):
                if name in other.names and not _is_null(other.field(name).type):
                    schema = schema.set(schema.get_field_index(name), other.field(name))
                    nulls.remove(name)
        for name, typ in self.casts:
            schema = schema.set(schema.get_field_index(name), schema.field(name).with_type(typ))
        return schema

    def check_schemas(self, columns) -> ParquetSource:
        """This source, checked: every file holds the used columns with the same type, or a
        DataError names the file, the column and both types. Dictionary encoding and
        string offsets (string / large_string) do not count as differences; numbers of
        other widths (int32 / int64, float32 / float64, integers and floats) are cast to
        one type, as ``pyarrow.unify_schemas(promote_options="permissive")`` unifies
        them; files without rows whose column has type null (pandas writes an empty
        object column so) are left out, as they add nothing."""
        import pyarrow as pa

        files, seen = [], {}
        for path in self.files:
            pf = self.open(path)
            schema = normal_schema(pf.schema_arrow)
            if pf.metadata.num_rows == 0 and any(
                    name in schema.names and _is_null(schema.field(name).type)
                    for name in columns):
                continue
            files.append(path)
            for name in columns:
                if name in schema.names:
                    seen.setdefault(name, []).append((path, schema.field(name).type))
                elif seen.get(name):
                    raise DataError(f"column {name!r} is in {seen[name][0][0]!r} but not in "
                                    f"{path!r}: every Parquet file of the data must hold "
                                    "the columns the model uses")
                # a column missing from every file: the formula check names it
        casts = []
        for name, types in seen.items():
            (path0, t0), bases = types[0], {_base_type(t) for _, t in types}
            if len(bases) == 1:
                continue
            if all(_is_number(b) for b in bases):
                unified = pa.unify_schemas([pa.schema([pa.field(name, b)]) for b in bases],
                                           promote_options="permissive").field(name).type
                casts.append((name, unified))
                continue
            path1, t1 = next((p, t) for p, t in types if _base_type(t) != _base_type(t0))
            raise DataError(f"column {name!r} has type {t0} in {path0!r} but {t1} in "
                            f"{path1!r}: write the files with one schema (or cast the "
                            "column) before fitting")
        if not files:
            files = list(self.files[:1])
        return replace(self, files=tuple(files), casts=tuple(casts))

    def batches(self, columns: list[str], batch_rows: int = BATCH_ROWS):
        """(first row number, RecordBatch of ``columns``) for every batch, file by file:
        decimals as float64, ``casts`` applied."""
        start = 0
        casts = {n: t for n, t in self.casts if n in columns}
        for path in self.files:
            pf = self.open(path)
            for batch in pf.iter_batches(batch_size=batch_rows, columns=columns,
                                         use_threads=False):
                yield start, normal_batch(batch, casts)
                start += batch.num_rows


def _base_type(typ):
    """A column's type up to dictionary encoding and string offsets (decimals: float64)."""
    import pyarrow as pa

    if pa.types.is_dictionary(typ):
        typ = typ.value_type
    if pa.types.is_large_string(typ) or pa.types.is_string_view(typ):
        return pa.string()
    if pa.types.is_large_binary(typ):
        return pa.binary()
    if pa.types.is_decimal(typ):
        return pa.float64()
    return typ


def _is_null(typ) -> bool:
    import pyarrow as pa

    return pa.types.is_null(typ) or (pa.types.is_dictionary(typ)
                                     and pa.types.is_null(typ.value_type))


def _is_number(typ) -> bool:
    import pyarrow as pa

    return pa.types.is_integer(typ) or pa.types.is_floating(typ)


def normal_schema(schema):
    """An Arrow schema with its decimal columns as float64 (as ``normal_batch`` reads them)."""
    import pyarrow as pa

    for i, f in enumerate(schema):
        if pa.types.is_decimal(f.type):
            schema = schema.set(i, f.with_type(pa.float64()))
    return schema


def normal_batch(batch, casts: dict | None = None):
    """A RecordBatch as the model reads it: decimal columns as float64 (an in-memory fit
    reads them so too, ``read_whole``), and the columns of ``casts`` in their type."""
    import pyarrow as pa

    for i, f in enumerate(batch.schema):
        typ = (casts or {}).get(f.name)
        if typ is None and pa.types.is_decimal(f.type):
            typ = pa.float64()
        if typ is not None and f.type != typ:
            batch = batch.set_column(i, f.with_type(typ), batch.column(i).cast(typ))
    return batch


def open_source(data) -> ParquetSource:
    """The ParquetSource of a path, directory, glob or pyarrow Dataset. A directory's files
    are its ``.parquet`` files at any depth, except those with a path component starting
    with ``_`` or ``.`` (``_temporary/``, ``_SUCCESS``, hidden files), which pyarrow's
    datasets and ``pd.read_parquet`` of a directory leave out too."""
    if is_dataset(data):
        return _dataset_source(data)
    text = str(data)
    path = Path(text)
    partition_columns: tuple[str, ...] = ()
    if path.is_dir():
        found = [p for p in path.rglob("*")
                 if p.is_file() and p.suffix.lower() in PARQUET_SUFFIXES
                 and not any(part.startswith(IGNORE_PREFIXES)
                             for part in p.relative_to(path).parts)]
        if not found:
            raise DataError(f"the directory {text!r} holds no .parquet files")
        files = sorted(str(p) for p in found)
        partition_columns = tuple(dict.fromkeys(
            part.split("=", 1)[0] for p in found for part in p.relative_to(path).parts[:-1]
            if "=" in part))
    elif path.exists():
        files = [text]
    elif any(c in text for c in GLOB_CHARS):
        files = sorted(f for f in globmod.glob(text, recursive=True) if Path(f).is_file())
        if not files:
            raise DataError(f"no file matches the pattern {text!r}")
    else:
        raise DataError(f"data file {text!r} does not exist")
    return ParquetSource(tuple(files), text, partition_columns=partition_columns)


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
    partitioning = getattr(dataset, "partitioning", None)
    partition_columns = tuple(partitioning.schema.names) if partitioning is not None else ()
    return ParquetSource(tuple(files), f"Dataset of {len(files)} file(s)", dataset.filesystem,
                         partition_columns=partition_columns)


def partition_column_error(name: str, source_name: str) -> DataError:
    """The refusal of a Hive partition column (a ``name=value`` directory) in a streamed
    fit, which reads the columns inside the files only."""
    return DataError(f"column {name!r} is a partition column of {source_name!r} (directories "
                     f"named {name}=value): a streamed fit reads only the columns inside the "
                     f"Parquet files; write {name!r} into the files, or fit in memory a "
                     "pyarrow Dataset opened with partitioning='hive' (streaming=False)")


def read_whole(data) -> pd.DataFrame:
    """All rows of a Parquet source in one pandas DataFrame (the in-memory path), read as
    ``pd.read_parquet`` reads a list of files: dictionaries unified in file order. As the
    streamed passes read them: decimal columns as float64, and files without rows whose
    columns include one of type null (an empty pandas object column) left out."""
    import pyarrow as pa

    source = open_source(data)
    try:
        if is_dataset(data):
            table = data.to_table()
            return table.cast(normal_schema(table.schema)).to_pandas()
        files = [f for f in source.files if not _empty_with_nulls(source.open(f))]
        df = pd.read_parquet(files or list(source.files[:1]))
        schema = source.open((files or source.files)[0]).schema_arrow
        for f in schema:
            if pa.types.is_decimal(f.type) and f.name in df.columns:
                df[f.name] = df[f.name].astype(np.float64)
        return df
    # pyarrow's ArrowInvalid is a ValueError; ArrowNotImplementedError (a cast that
    # pyarrow cannot do between files' types) is neither
    except (OSError, ValueError, pa.ArrowException) as err:
        raise DataError(f"cannot read the Parquet data {source.name!r}: {err}") from None


def _empty_with_nulls(pf) -> bool:
    return pf.metadata.num_rows == 0 and any(_is_null(f.type) for f in pf.schema_arrow)


def frame_batches(data, columns: list[str], batch_rows: int = BATCH_ROWS):
    """(first row number, RecordBatch of ``columns``, row labels or None) for every batch of
    one partition: a pandas DataFrame (labels: its index), a pyarrow Table or RecordBatch,
    or an iterable of RecordBatches (a Spark partition), cut into batches of at most
    ``batch_rows`` rows; decimals as float64 (``normal_batch``)."""
    import pyarrow as pa

    if isinstance(data, pd.DataFrame):
        for start in range(0, len(data), batch_rows):
            part = data.iloc[start:start + batch_rows]
            table = pa.Table.from_pandas(part[columns], preserve_index=False)
            yield (start, normal_batch(table.combine_chunks().to_batches()[0]),
                   part.index.to_numpy())
        return
    if isinstance(data, pa.RecordBatch):
        data = pa.Table.from_batches([data])
    if isinstance(data, pa.Table):
        data = data.select(columns).to_batches(max_chunksize=batch_rows)
    elif isinstance(data, (str, bytes)) or not hasattr(data, "__iter__"):
        raise TypeError("a partition must be a pandas DataFrame, a pyarrow Table or "
                        f"RecordBatch, or an iterable of RecordBatches, not "
                        f"{type(data).__name__}")
    start = 0
    for big in data:
        for at in range(0, big.num_rows, batch_rows):
            batch = normal_batch(big.slice(at, batch_rows).select(columns))
            yield start, batch, None
            start += batch.num_rows


# -- reading ahead -----------------------------------------------------------------------
class ReadAhead:
    """The items of an iterable, produced by a thread while the consumer works on the
    previous ones (Parquet decoding releases the GIL): a context manager to iterate::

        with ReadAhead(source.batches(columns)) as batches:
            for start, batch in batches: ...

    At most ``depth`` items are read ahead of the one the consumer holds (the reader
    waits for a free slot before reading the next), so memory stays at ``depth + 1``
    batches. The reader's exception is raised to the consumer, in order, after the items
    read before it. Leaving the ``with`` block, normally or by an exception, stops the
    reader and waits for its thread to end. ``depth=0`` reads in the consumer's thread
    (nothing ahead).
    """

    _END = object()

    def __init__(self, items, depth: int = READ_AHEAD):
        self._items, self.depth = items, int(depth)
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._slots = threading.Semaphore(max(self.depth, 1))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._iterated = False

    def __enter__(self) -> ReadAhead:
        if self.depth > 0:
            self._thread = threading.Thread(target=self._read, name="glmm_sparse-read-ahead",
                                            daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stop the reader and wait for its thread to end."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def __iter__(self):
        if self._thread is None and not self._stop.is_set():
            yield from self._items  # depth 0: read here
            return
        if self._iterated or self._stop.is_set():
            raise RuntimeError("a ReadAhead is iterated once, before it is closed")
        self._iterated = True
        while True:
            item = self._queue.get()
            self._slots.release()
            if item is self._END:
                return
            if isinstance(item, _Raised):
                raise item.error
            yield item

    def _read(self) -> None:
        """The reader thread: one item per free slot, then the end (or the exception)."""
        items = None
        try:
            items = iter(self._items)
            while self._free_slot():
                try:
                    item = next(items)
                except StopIteration:
                    self._queue.put(self._END)
                    return
                self._queue.put(item)
        except BaseException as err:  # noqa: BLE001 - handed to the consumer, in order
            self._queue.put(_Raised(err))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()  # a generator's files are closed in the thread that reads them

    def _free_slot(self) -> bool:
        """Wait for a free slot; False once the consumer has stopped."""
        while not self._stop.is_set():
            if self._slots.acquire(timeout=0.05):
                return not self._stop.is_set()
        return False


@dataclass(frozen=True)
class _Raised:
    error: BaseException


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
def complete_rows(batch, columns: list[str], missing: dict | None = None) -> np.ndarray:
    """Bool mask of the batch's rows with a value in every column (null and NaN missing);
    ``missing``: missing_rows(batch, columns) when the caller has it already."""
    ok = np.ones(batch.num_rows, dtype=bool)
    for rows in (missing_rows(batch, columns) if missing is None else missing).values():
        ok &= ~rows
    return ok


def missing_rows(batch, columns: list[str]) -> dict[str, np.ndarray]:
    """Per column that may lack values (nulls, or NaN in a floating column), the bool
    mask of its missing rows (as pandas' isna); columns surely complete are left out."""
    import pyarrow.compute as pc

    out = {}
    for name in columns:
        col = batch.column(name)
        if col.null_count or not _without_nan(col):
            out[name] = pc.is_null(col, nan_is_null=True).to_numpy(zero_copy_only=False)
    return out


def _without_nan(col) -> bool:
    """Whether a column without nulls surely holds no NaN: not floating, or a plain
    floating column whose sum is not NaN (a NaN makes any sum NaN; one pass, no mask)."""
    import pyarrow as pa

    if not _is_floating(col.type):
        return True
    if not pa.types.is_floating(col.type):
        return False  # dictionary-encoded floats: the full check
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf: NaN, checked in full
        return not np.isnan(np.add.reduce(col.to_numpy(zero_copy_only=False)))


def _is_floating(typ) -> bool:
    import pyarrow as pa

    return pa.types.is_floating(_base_type(typ))


def column_values(col) -> np.ndarray:
    """An Arrow column's values as NumPy, as the in-memory frame holds them: dictionary
    columns decoded, dates as ``datetime.date`` objects and time-zone-aware timestamps as
    ``pd.Timestamp`` objects (pandas' types for them), other types by ``to_numpy``."""
    import pyarrow as pa

    typ = col.type
    if pa.types.is_dictionary(typ):
        col = col.dictionary_decode()
        typ = col.type
    if pa.types.is_date(typ) or (pa.types.is_timestamp(typ) and typ.tz is not None):
        return col.to_pandas().to_numpy(dtype=object)
    return col.to_numpy(zero_copy_only=False)


def read_ahead_depth() -> int:
    """Batches to read ahead in a thread: ``READ_AHEAD``, none on one thread
    (GLMM_SPARSE_THREADS=1)."""
    return READ_AHEAD if n_threads() > 1 else 0
