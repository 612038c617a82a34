"""B = Z0'WZ2 by level rows: the count-class route's coupling of the first term's levels
(rows) with the other terms' random effects (columns), as CSR.

Made from each row's level codes here (``b_from_rows``: what a streamed pass keeps,
rowcodes.py, and the in-memory route's terms) or from in-memory cross-products
(``classed.b_from_pairs``: the first term's level-pair blocks); read by classed.py
(the class sums, u0, the conditional variances). Its values are counts of rows, in the
smallest unsigned type that holds them, where the terms are unweighted intercepts
(``count_dtype``), else float64.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse

from ._core import _classed
from .errors import ModelSpecError


@dataclass(frozen=True, eq=False)
class LevelRows:
    """A CSR matrix: row g holds columns ``indices[indptr[g]:indptr[g + 1]]`` (sorted,
    distinct) with values ``data[...]``; here B = Z0'WZ2, one row per level of the first
    term, one column per random effect of the other terms."""

    indptr: np.ndarray  # int64 (nrows + 1,)
    indices: np.ndarray  # int32 (nnz,)
    data: np.ndarray  # (nnz,) float64, or uint8 / uint16 counts of rows (count_dtype)
    ncols: int

    @property
    def nrows(self) -> int:
        return self.indptr.shape[0] - 1

    @property
    def nnz(self) -> int:
        return self.indices.shape[0]

    def toarray(self) -> np.ndarray:
        return self.to_scipy().toarray()

    def to_scipy(self) -> scipy.sparse.csr_array:
        return scipy.sparse.csr_array((self.data, self.indices, self.indptr),
                                      shape=(self.nrows, self.ncols))


def as_level_rows(B, nrows: int, ncols: int) -> LevelRows:
    """B as LevelRows: given as LevelRows, a scipy.sparse matrix (converted to CSR, sorted,
    duplicates summed) or an (indptr, indices, data) triple (sorted, distinct per row)."""
    if isinstance(B, LevelRows):
        out = B
    elif scipy.sparse.issparse(B):
        if B.shape != (nrows, ncols):
            raise ModelSpecError(f"B must be ({nrows}, {ncols}) (levels of the first term x "
                                 f"random effects of the others), not {B.shape}")
        csr = scipy.sparse.csr_array(B)  # a copy: sorting and summing must not touch B
        csr.sum_duplicates()
        csr.sort_indices()
        out = LevelRows(csr.indptr.astype(np.int64), csr.indices.astype(np.int32),
                        csr.data.astype(np.float64), ncols)
    else:
        indptr, indices, data = B
        out = LevelRows(np.ascontiguousarray(indptr, dtype=np.int64),
                        np.ascontiguousarray(indices, dtype=np.int32),
                        np.ascontiguousarray(data, dtype=np.float64), ncols)
    if out.nrows != nrows or out.ncols != ncols:
        raise ModelSpecError(f"B must have {nrows} rows (levels of the first term) and "
                             f"{ncols} columns (random effects of the others), not "
                             f"{out.nrows} x {out.ncols}")
    return out


def b_from_rows(codes0, rest_codes, rest_values, nlev, k, weights=None, *,
                overwrite: bool = False) -> LevelRows:
    """B = Z0'WZ2 from the rows: each term's int32 level code per row.

    Parameters
    ----------
    codes0 : (n,) int32
        The first term's level of each row (the term must be ``(1 | g)``: its Z column
        is taken for ones; a ``(0 + x | g)`` needs its pairs summed with x).
    rest_codes : sequence of (n,) int32
        The level of each row for each other term, in lme4's order (uint16 is taken as
        it is for the one other term of the two-intercept case below, whose codes
        ``rowcodes.RowCodes`` keeps in two bytes).
    rest_values : sequence of (n, k_t) float64 or None
        Each other term's Z values per row; None for an intercept-only term (k_t = 1).
    nlev, k : sequences of int
        Levels and columns of every term, the first term's first.
    weights : (n,) float64, optional
        Prior weights (None: all 1).
    overwrite : bool
        codes0 may be overwritten (the caller drops it after: ``rowcodes.RowCodes``).

    Peak memory beyond the inputs: one int32 per row (rows sorted by codes0, a counting
    sort; with one more term, an intercept without weights, its codes sorted by both
    terms, and one more int32 per row unless ``overwrite``), a workspace of one term's
    columns, and the CSR itself, whose values are counts of rows in the smallest type
    that holds them where they are counts (``count_dtype``).

    With one more term, an intercept, and no weights (``(1 | g1) + (1 | g2)``), the rows
    are sorted by both codes (two counting sorts) and each level's row of B is the
    run-length code of its partners (``_classed.sorted_partners``): 10^8 rows of
    10^6 x 10^3 levels took 11.3 s through the per-level gathers and sorts of the
    general case (its random reads of the partners, in row order, and a qsort per
    level), 2.4 s this way (3.9 s without ``overwrite``: the extra array's pages are
    faulted in). The CSR is the same, entry for entry.
    """
    nlev, k = tuple(int(v) for v in nlev), tuple(int(v) for v in k)
    if (len(nlev) != len(k) or len(rest_codes) != len(nlev) - 1
            or len(rest_values) != len(rest_codes)):
        raise ModelSpecError("b_from_rows needs nlev and k for every term and codes and values "
                             f"for each term after the first: got {len(nlev)} nlev, {len(k)} k, "
                             f"{len(rest_codes)} codes and {len(rest_values)} values")
    if len(nlev) < 2 or k[0] != 1:
        raise ModelSpecError("b_from_rows needs a scalar first term (k = 1) and at least one "
                             f"more term, got k = {k}")
    codes0 = _int32_codes(codes0, "codes0")
    pair = weights is None and len(rest_codes) == 1 and rest_values[0] is None
    rest = _rest_terms(rest_codes, rest_values, k, codes0.shape[0], keep_uint16=pair)
    if pair:
        return _pair_counts(codes0, rest[0][0], nlev[0], nlev[1], overwrite)
    w = None if weights is None else np.ascontiguousarray(weights, dtype=np.float64)
    start, rows = _classed.bucket_rows(codes0, nlev[0])
    counts = []
    for t, (codes, _) in enumerate(rest, start=1):
        c = np.zeros(nlev[0], dtype=np.int64)
        _classed.count_level_partners(start, rows, codes, nlev[t], c)
        counts.append(c * k[t])
    indptr = np.zeros(nlev[0] + 1, dtype=np.int64)
    np.cumsum(np.sum(counts, axis=0), out=indptr[1:])
    indices = np.empty(indptr[-1], dtype=np.int32)
    counts_only = w is None and all(values is None for _, values in rest)
    data = np.empty(indptr[-1], dtype=count_dtype(np.diff(start), counts_only))
    pos, col = indptr[:-1].copy(), 0
    for t, (codes, values) in enumerate(rest, start=1):
        _classed.fill_level_rows(start, rows, codes, values, w, nlev[t], col, pos, indices, data)
        col += nlev[t] * k[t]
    return LevelRows(indptr, indices, data, col)


def _pair_counts(codes0: np.ndarray, codes1: np.ndarray, nlev0: int, nlev1: int,
                 overwrite: bool) -> LevelRows:
    """b_from_rows for two intercept terms without weights: B's entries count the rows of
    each pair of levels (rows sorted by both codes, then run-length coded)."""
    start = _classed.level_starts(codes0, nlev0)
    partners = codes0 if overwrite and codes0.flags.writeable else np.empty_like(codes0)
    _classed.sorted_partners(codes0, codes1, start, nlev1, partners)
    counts = np.zeros(nlev0, dtype=np.int64)
    _classed.count_runs(start, partners, counts)
    indptr = np.zeros(nlev0 + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    indices = np.empty(indptr[-1], dtype=np.int32)
    data = np.empty(indptr[-1], dtype=count_dtype(np.diff(start), True))
    _classed.fill_runs(start, partners, 0, indptr[:-1].copy(), indices, data)
    return LevelRows(indptr, indices, data, nlev1)


def count_dtype(rows_per_level: np.ndarray, counts_only: bool) -> np.dtype:
    """The type of B's values: where they are counts of rows (unweighted intercept terms),
    uint8 or uint16 when a level's rows, the largest count, fit; else float64."""
    if not counts_only:
        return np.dtype(np.float64)
    return smallest_unsigned(rows_per_level.max(initial=0), (np.uint8, np.uint16))


def smallest_unsigned(bound, dtypes) -> np.dtype:
    """The first of the unsigned ``dtypes`` whose largest value is at least ``bound``,
    else float64 (B's counts, the class sums' Z2 block)."""
    for dtype in dtypes:
        if bound <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.float64)


def _rest_terms(rest_codes, rest_values, k, n: int, *,
                keep_uint16: bool = False) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """(int32 codes, float64 values or None) of each term after the first, checked;
    uint16 codes kept as they are if ``keep_uint16`` (the kernels of _pair_counts read
    them)."""
    rest = []
    for t, (codes, values) in enumerate(zip(rest_codes, rest_values), start=1):
        codes = np.asarray(codes)
        if keep_uint16 and codes.dtype == np.uint16:
            codes = np.ascontiguousarray(codes)
        else:
            codes = _int32_codes(codes, f"rest_codes[{t - 1}]")
        if values is not None:
            values = np.asarray(values, dtype=np.float64)
        kt = 1 if values is None else values.shape[1]
        if kt != k[t] or codes.shape[0] != n or (values is not None and values.shape[0] != n):
            raise ModelSpecError(f"term {t}: codes and values must have {n} rows and {k[t]} "
                                 f"columns (values None only for k = 1)")
        rest.append((codes, values))
    return rest


def _int32_codes(codes, name: str) -> np.ndarray:
    codes = np.asarray(codes)
    if codes.dtype != np.int32:
        if codes.size and (codes.min() < 0 or codes.max() > np.iinfo(np.int32).max):
            raise ModelSpecError(f"{name}: level codes must be non-negative and fit in int32")
        codes = codes.astype(np.int32)
    return np.ascontiguousarray(codes)
