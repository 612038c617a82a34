"""A linear mixed model fitted from a ``pyspark.sql.DataFrame``: the two passes of
``streaming.py`` run per partition on the executors through ``DataFrame.mapInArrow``,
each partition emitting its pickled partial result as one binary row; the driver merges
them (a balanced tree, in partition order) and fits the n-free sums.

Where it sits: data (a Spark DataFrame; its partitions arrive as Arrow record batches)
-> per partition, ``StreamSpec.scan_partition`` and ``streaming.accumulate_partition`` on
the partition's record batches -> one pickled ``LevelScan`` / ``PartialSums`` row per
partition (or the glmm_sparse error it raised, raised again on the driver) -> merged on
the driver -> ``streaming.partitioned_fit`` -> an ``LmerResult``.

Why mapInArrow and a driver-side merge: the partitions' rows reach Python as Arrow
batches without a per-row conversion, and the partial results are small (n-free); a
reduction through the RDD API measured 3x slower (issue 7).

What travels: the spec (formula, column plan) to every task, and for the second pass the
accumulator built from the merged levels (O(levels), a broadcast variable); back to the
driver one row per partition of O(levels + nnz(Z'Z)) bytes. Never a row of data.

Needs the ``spark`` extra: ``pip install glmm_sparse[spark]`` (and Java for Spark).
"""
from __future__ import annotations

import logging
import pickle

try:
    import pyspark.sql
    from pyspark.sql.pandas.types import to_arrow_schema
except ImportError as err:  # pragma: no cover - exercised without the extra only
    raise ImportError("glmm_sparse.spark needs PySpark: pip install glmm_sparse[spark]; "
                      f"{err}") from None


from .batches import BATCH_ROWS
from .blas import one_blas_thread
from .errors import GlmmSparseError
from .levelscan import LevelScan
from .models import check_lmer_arguments, warn_if_singular
from .partials import merge_partials, tree_merge
from .results import LmerResult
from .streaming import accumulate_partition, partitioned_fit, stream_spec

log = logging.getLogger(__name__)

__all__ = ["lmer"]

PART_SCHEMA = "part binary"  # one pickled partial result per partition


def lmer(formula: str, sdf, *, reml: bool = True, weights: str | None = None,
         offset: str | None = None, sigma: float | None = None, na_action: str = "omit",
         start=None, check_convergence: bool = True, optimizer_options: dict | None = None,
         factor_mode: str = "measure", batch_rows: int = BATCH_ROWS,
         optimizer: str = "bobyqa") -> LmerResult:
    """Fit a linear mixed model to a Spark DataFrame.

    Two Spark jobs, each one ``mapInArrow`` over the partitions of the used columns: the
    levels (and missing rows), then the cross-products; the driver merges the
    partitions' results and fits. Estimates equal ``glmm_sparse.lmer(formula,
    sdf.toPandas())`` (summation order only).

    Parameters
    ----------
    formula : str
        An lme4 formula, as for ``glmm_sparse.lmer``.
    sdf : pyspark.sql.DataFrame
        The rows. Text columns give sorted levels; ``C(col)`` makes a numeric column a
        factor.
    reml, sigma, na_action, start, check_convergence, optimizer_options, factor_mode, optimizer
        As for ``glmm_sparse.lmer``.
    weights, offset : str, optional
        Names of the prior-weights and offset columns.
    batch_rows : int
        Rows per Arrow batch (``spark.sql.execution.arrow.maxRecordsPerBatch`` bounds
        the batches Spark hands over as well).

    Returns
    -------
    LmerResult
        As ``glmm_sparse.lmer`` on Parquet with ``streaming=True``: every n-free result;
        ``fitted``, ``residuals`` and ``scaled_residuals`` are None.
    """
    with one_blas_thread():
        if not isinstance(sdf, pyspark.sql.DataFrame):
            raise TypeError(f"sdf must be a pyspark.sql.DataFrame, not {type(sdf).__name__}; "
                            "for pandas data use glmm_sparse.lmer")
        sigma, parsed, options = check_lmer_arguments(
            formula, reml=reml, sigma=sigma, optimizer_options=optimizer_options,
            optimizer=optimizer, factor_mode=factor_mode)
        spec = stream_spec(formula, parsed, to_arrow_schema(sdf.schema), weights=weights,
                           offset=offset, na_action=na_action, batch_rows=batch_rows, sigma=sigma)
        used = sdf.select(*spec.columns)
        n_parts = used.rdd.getNumPartitions()
        log.info("Spark fit of %s: %d partition(s), columns %s", formula, n_parts, spec.columns)

        def scan_pass():
            return tree_merge(_collect(used.mapInArrow(_ScanPartition(spec), PART_SCHEMA)),
                              LevelScan.merge)

        def sums_pass(acc):
            shared = sdf.sparkSession.sparkContext.broadcast(acc)
            try:
                parts = _collect(used.mapInArrow(_AddPartition(shared, spec.batch_rows),
                                                 PART_SCHEMA))
            finally:
                shared.destroy()  # unpersist() left the driver's pickle in Spark's temp dir
            return tree_merge(parts, merge_partials)

        result = partitioned_fit(spec, scan_pass, sums_pass,
                                 source_name=f"a Spark DataFrame of {n_parts} partition(s)",
                                 na_action=na_action, reml=reml, sigma=sigma, start=start,
                                 check_convergence=check_convergence, options=options,
                                 factor_mode=factor_mode, optimizer=optimizer)
        warn_if_singular(result)
        return result


def _collect(parts_df) -> list:
    """The partitions' results, in partition order; a glmm_sparse error raised in a
    partition is raised here, as itself (not wrapped in Spark's PythonException)."""
    parts = [pickle.loads(row[0]) for row in parts_df.collect()]
    for part in parts:
        if isinstance(part, PartitionFailure):
            raise part.error
    return parts


class PartitionFailure:
    """A glmm_sparse error raised in a partition, shipped back as its result."""

    def __init__(self, error: Exception):
        self.error = error


def _one_row(obj):
    """An Arrow batch of one binary row: the pickled partial result."""
    import pyarrow as pa

    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return pa.RecordBatch.from_arrays([pa.array([data], type=pa.binary())], ["part"])


def _result_row(compute):
    """The row of ``compute()``'s result, or of the glmm_sparse error it raised."""
    try:
        return _one_row(compute())
    except GlmmSparseError as err:
        return _one_row(PartitionFailure(err))


class _ScanPartition:
    """mapInArrow function of the first pass: the partition's LevelScan."""

    def __init__(self, spec):
        self.spec = spec

    def __call__(self, batches):
        yield _result_row(lambda: self.spec.scan_partition(batches))


class _AddPartition:
    """mapInArrow function of the second pass: the partition's PartialSums."""

    def __init__(self, shared, batch_rows: int):
        self.shared, self.batch_rows = shared, batch_rows

    def __call__(self, batches):
        yield _result_row(lambda: accumulate_partition(self.shared.value, batches,
                                                       self.batch_rows))
