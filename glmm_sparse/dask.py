"""A linear mixed model fitted from a ``dask.dataframe.DataFrame``: the two passes of
``streaming.py`` run per partition on the Dask workers, their results are reduced by a
binary tree of merges on the cluster, and only the merged, n-free sums reach the client,
which fits them.

Where it sits: data (a Dask DataFrame, partitions of pandas rows) -> per partition,
``StreamSpec.scan_partition`` (levels, missing rows, the response's sum) and
``streaming.accumulate_partition`` (the cross-products) -> ``LevelScan.merge`` /
``streaming.merge_partials`` in a tree -> ``streaming.partitioned_fit`` on the client ->
the same ``LmerResult`` as ``glmm_sparse.lmer`` (without per-row values).

What travels: the spec (formula and column plan) and, for the second pass, the
accumulator built from the merged levels (the levels, O(levels)) to the workers, once
per worker; partial scans and partial sums (O(levels + nnz(Z'Z))) between workers; one
merged scan and one set of sums to the client. Never a row.

Needs the ``dask`` extra: ``pip install glmm_sparse[dask]``.
"""
from __future__ import annotations

import logging
import uuid

try:
    import dask
    import dask.dataframe as dd
except ImportError as err:  # pragma: no cover - exercised without the extra only
    raise ImportError("glmm_sparse.dask needs Dask: pip install glmm_sparse[dask] "
                      f"(dask[dataframe] and distributed); {err}") from None

import pandas as pd

from .batches import BATCH_ROWS, progress_bar
from .blas import one_blas_thread
from .errors import DataError
from .models import check_lmer_arguments, warn_if_singular
from .partials import merge_partials, tree_merge
from .results import LmerResult
from .streaming import accumulate_partition, partitioned_fit, stream_spec

log = logging.getLogger(__name__)

__all__ = ["lmer"]


def lmer(formula: str, ddf, *, reml: bool = True, weights: str | None = None,
         offset: str | None = None, sigma: float | None = None, na_action: str = "omit",
         start=None, check_convergence: bool = True, optimizer_options: dict | None = None,
         factor_mode: str = "measure", batch_rows: int = BATCH_ROWS,
         progress: bool | None = None, optimizer: str = "bobyqa") -> LmerResult:
    """Fit a linear mixed model to a Dask DataFrame on the current Dask scheduler.

    Runs on the ``distributed.Client`` in use (``distributed.get_client()``), or else on
    Dask's default scheduler. Two passes over the partitions, each reduced by a binary
    tree of merges on the cluster: the levels (and missing rows), then the cross-products;
    the fit itself runs on the client from n-free sums. Estimates equal
    ``glmm_sparse.lmer(formula, ddf.compute())`` (summation order only).

    Parameters
    ----------
    formula : str
        An lme4 formula, as for ``glmm_sparse.lmer``.
    ddf : dask.dataframe.DataFrame
        The rows. Text columns give sorted levels; Categorical columns keep their
        categories' order (known categories, the same in every partition).
    reml, sigma, na_action, start, check_convergence, optimizer_options, factor_mode, optimizer
        As for ``glmm_sparse.lmer``.
    weights, offset : str, optional
        Names of the prior-weights and offset columns (arrays are not accepted: the rows
        live on the workers).
    batch_rows : int
        Rows per Arrow batch within a partition (bounds the workers' memory per task).
    progress : bool, optional
        A tqdm bar over the partitions of each pass (on a distributed client); None: only
        when stderr is a terminal.

    Returns
    -------
    LmerResult
        As ``glmm_sparse.lmer`` on Parquet with ``streaming=True``: every n-free result;
        ``fitted``, ``residuals`` and ``scaled_residuals`` are None.
    """
    with one_blas_thread():
        if not isinstance(ddf, dd.DataFrame):
            raise TypeError(f"ddf must be a dask.dataframe.DataFrame, not {type(ddf).__name__}; "
                            "for pandas data use glmm_sparse.lmer")
        sigma, parsed, options = check_lmer_arguments(
            formula, reml=reml, sigma=sigma, optimizer_options=optimizer_options,
            optimizer=optimizer, factor_mode=factor_mode)
        spec = stream_spec(formula, parsed, arrow_schema(ddf._meta), weights=weights,
                           offset=offset, na_action=na_action, batch_rows=batch_rows, sigma=sigma)
        parts = ddf[spec.columns].to_delayed()
        log.info("Dask fit of %s: %d partition(s), columns %s", formula, len(parts), spec.columns)

        def scan_pass():
            scan_part = dask.delayed(spec.scan_partition, pure=True)
            return reduce_on_cluster([scan_part(p) for p in parts], _merge_scans, progress,
                                     "levels pass")

        def sums_pass(acc):
            acc_d = dask.delayed(acc, name=f"glmm-sparse-accumulator-{uuid.uuid4().hex}")
            add = dask.delayed(accumulate_partition, pure=True)
            return reduce_on_cluster([add(acc_d, p, spec.batch_rows) for p in parts],
                                     merge_partials, progress, "cross-products pass")

        result = partitioned_fit(spec, scan_pass, sums_pass,
                                 source_name=f"a Dask DataFrame of {len(parts)} partition(s)",
                                 na_action=na_action, reml=reml, sigma=sigma, start=start,
                                 check_convergence=check_convergence, options=options,
                                 factor_mode=factor_mode, optimizer=optimizer)
        warn_if_singular(result)
        return result


def _merge_scans(a, b):
    return a.merge(b)


def arrow_schema(meta: pd.DataFrame):
    """The Arrow schema of a Dask DataFrame's (empty) meta: object columns, whose type an
    empty frame cannot tell, are taken as text (numbers are never object columns)."""
    import pyarrow as pa

    schema = pa.Schema.from_pandas(meta, preserve_index=False)
    for i, f in enumerate(schema):
        typ = f.type
        if pa.types.is_null(typ):
            schema = schema.set(i, pa.field(f.name, pa.string()))
        elif pa.types.is_dictionary(typ) and pa.types.is_null(typ.value_type):
            schema = schema.set(i, pa.field(f.name, pa.dictionary(typ.index_type, pa.string())))
    return schema


def _client():
    """The distributed Client in use, or None (then Dask's default scheduler runs)."""
    try:
        from distributed import get_client
    except ImportError:
        return None
    try:
        return get_client()
    except ValueError:
        return None


def reduce_on_cluster(leaves: list, merge, progress, desc: str):
    """The tree reduction of the per-partition results: on a distributed client as futures
    (a progress bar over the partitions), else one delayed tree on the default scheduler."""
    if not leaves:
        raise DataError("the Dask DataFrame has no partitions")
    client = _client()
    if client is None:
        root = tree_merge(leaves, dask.delayed(merge, pure=True))
        return dask.compute(root)[0]
    from distributed import as_completed

    futures = client.compute(leaves)
    root = tree_merge(futures, lambda a, b: client.submit(merge, a, b, pure=False))
    bar = progress_bar(progress, total=len(futures), desc=desc, unit="partition")
    try:
        for _ in as_completed(futures):
            bar.update(1)
    finally:
        bar.close()
    del futures
    return root.result()
