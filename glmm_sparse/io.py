"""Data in: any DataFrame-like object or file becomes a pandas DataFrame.

First step of the pipeline (data -> terms -> cross-products -> ...). pandas, polars and
pyarrow tables go through narwhals, so none of them has to be imported here; a dict of
equal-length arrays is accepted too; files are CSV or Parquet (a file, a directory or
glob of them, or a pyarrow Dataset, read whole here; ``batches.py`` and ``streaming.py``
read Parquet in batches instead).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from .batches import is_dataset, is_parquet_source, read_whole
from .errors import DataError


def as_pandas(data) -> pd.DataFrame:
    """A pandas DataFrame holding the same columns as ``data`` (no copy for pandas)."""
    if isinstance(data, pd.DataFrame):
        return data
    if isinstance(data, dict):
        try:
            return pd.DataFrame(data)
        except ValueError as err:
            raise DataError(f"the dict of columns cannot form a table: {err}") from None
    if isinstance(data, (str, Path)):
        return read_table(data)
    if is_dataset(data):
        return read_whole(data)
    try:
        import narwhals as nw

        return nw.from_native(data, eager_only=True).to_pandas()
    except TypeError:
        raise TypeError(
            f"data must be a pandas, polars or pyarrow table, a dict of arrays or a file "
            f"path, not {type(data).__name__}"
        ) from None


def read_table(path) -> pd.DataFrame:
    """Read a CSV or Parquet file; text columns become (sorted) categoricals later."""
    if is_parquet_source(path) and not Path(path).is_file():
        return read_whole(path)  # a directory or glob of Parquet files
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".pq", ".csv", ".txt", ".tsv"):
        raise DataError(f"cannot read {str(path)!r}: use a .csv, .tsv or .parquet file")
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        return pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
    # pandas' ParserError and EmptyDataError and pyarrow's ArrowInvalid are ValueErrors;
    # an unreadable file or a directory is an OSError
    except (ValueError, UnicodeDecodeError, OSError) as err:
        raise DataError(f"cannot read the data file {str(path)!r}: {err}") from None
