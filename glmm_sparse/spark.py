"""A linear mixed model fitted from a ``pyspark.sql.DataFrame``: the two passes of
``streaming.py`` run per partition on the executors through ``DataFrame.mapInArrow``,
each partition emitting its pickled partial result as one binary row; the driver merges
them (a balanced tree, in partition order) and fits the n-free sums.

Where it sits: data (a Spark DataFrame; its partitions arrive as Arrow record batches)
-> per partition, ``StreamSpec.scan_partition``-like first pass and
``Accumulator.add`` second pass -> one pickled ``LevelScan`` / ``PartialSums`` row per
partition -> merged on the driver -> ``streaming.fit_partials`` -> an ``LmerResult``.

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
import time

try:
    import pyspark.sql
    from pyspark.sql.pandas.types import to_arrow_schema
except ImportError as err:  # pragma: no cover - exercised without the extra only
    raise ImportError("glmm_sparse.spark needs PySpark: pip install glmm_sparse[spark]; "
                      f"{err}") from None

import numpy as np

from .batches import BATCH_ROWS, LevelScan
from .models import check_optimizer_options, parse_mixed_formula, warn_if_singular
from .objective import check_fixed_sigma
from .partials import merge_partials, tree_merge
from .results import LmerResult
from .streaming import (
    check_missing,
    fit_partials,
    log_scan,
    stream_spec,
)

log = logging.getLogger(__name__)

__all__ = ["lmer"]

PART_SCHEMA = "part binary"  # one pickled partial result per partition


def lmer(formula: str, sdf, *, reml: bool = True, weights: str | None = None,
         offset: str | None = None, sigma: float | None = None, na_action: str = "omit",
         start=None, check_convergence: bool = True, optimizer_options: dict | None = None,
         factor_mode: str = "measure", batch_rows: int = BATCH_ROWS) -> LmerResult:
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
    reml, sigma, na_action, start, check_convergence, optimizer_options, factor_mode
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
    if not isinstance(sdf, pyspark.sql.DataFrame):
        raise TypeError(f"sdf must be a pyspark.sql.DataFrame, not {type(sdf).__name__}; "
                        "for pandas data use glmm_sparse.lmer")
    if not isinstance(reml, (bool, np.bool_)):
        raise TypeError(f"reml must be True or False, not {reml!r}")
    sigma = check_fixed_sigma(sigma)
    parsed = parse_mixed_formula(formula, "ordinary least squares (e.g. statsmodels OLS)")
    options = check_optimizer_options(optimizer_options)
    spec = stream_spec(formula, parsed, to_arrow_schema(sdf.schema), weights=weights,
                       offset=offset, na_action=na_action, batch_rows=batch_rows)
    used = sdf.select(*spec.columns)
    log.info("Spark fit of %s: %d partition(s), columns %s", formula,
             used.rdd.getNumPartitions(), spec.columns)
    t0 = time.perf_counter()
    scans = _collect(used.mapInArrow(_ScanPartition(spec), PART_SCHEMA))
    scan = tree_merge(scans, LevelScan.merge)
    log_scan(scan, time.perf_counter() - t0)
    check_missing(scan, spec.plan, na_action, stacklevel=3)
    acc = spec.accumulator(scan)
    t0 = time.perf_counter()
    shared = sdf.sparkSession.sparkContext.broadcast(acc)
    try:
        partials = _collect(used.mapInArrow(_AddPartition(shared, spec.batch_rows), PART_SCHEMA))
    finally:
        shared.unpersist()
    merged = tree_merge(partials, merge_partials)
    log.info("cross-products pass: %d rows from %d partition(s) in %.2f s", merged.rows,
             len(partials), time.perf_counter() - t0)
    result = fit_partials(spec, scan, acc, merged, source_name=f"a Spark DataFrame of "
                          f"{len(partials)} partition(s)", reml=reml, sigma=sigma,
                          start=start, check_convergence=check_convergence, options=options,
                          factor_mode=factor_mode, stacklevel=3)
    warn_if_singular(result)
    return result


def _collect(parts_df) -> list:
    """The partitions' pickled results, in partition order."""
    return [pickle.loads(row[0]) for row in parts_df.collect()]


def _one_row(obj):
    """An Arrow batch of one binary row: the pickled partial result."""
    import pyarrow as pa

    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return pa.RecordBatch.from_arrays([pa.array([data], type=pa.binary())], ["part"])


class _ScanPartition:
    """mapInArrow function of the first pass: the partition's LevelScan."""

    def __init__(self, spec):
        self.spec = spec

    def __call__(self, batches):
        spec = self.spec
        scan = LevelScan.empty(spec.columns, spec.factors, spec.interactions)
        start = 0
        for big in batches:
            for batch in _split(big, spec.batch_rows):
                scan.add(batch, spec.columns, spec.response, start)
                start += batch.num_rows
        yield _one_row(scan)


class _AddPartition:
    """mapInArrow function of the second pass: the partition's PartialSums."""

    def __init__(self, shared, batch_rows: int):
        self.shared, self.batch_rows = shared, batch_rows

    def __call__(self, batches):
        acc = self.shared.value.fresh()
        start = 0
        for big in batches:
            for batch in _split(big, self.batch_rows):
                acc.add(start, batch)
                start += batch.num_rows
        yield _one_row(acc.partial())


def _split(batch, rows: int):
    """A record batch in slices of at most ``rows`` rows (zero-copy)."""
    for start in range(0, batch.num_rows, rows):
        yield batch.slice(start, rows)
