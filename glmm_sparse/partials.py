"""Mergeable sums of rows for a linear mixed model: what one batch, file or partition adds.

Between the per-batch model frame (``batchframe.py``) and the cross-products
(``streaming.crossproducts``): the running sums of DESIGN.md section 2 over some rows
(``Sums``), the level-pair blocks of crossed terms keyed by level pair (``BlockRuns``),
and their reduction: ``merge_partials`` adds the ``PartialSums`` of two sets of rows (R's
by a QR of the stacked R's, level-pair blocks by key, the rest by sum, min and max) and
``tree_merge`` reduces a list of them pairwise in order. Everything here is n-free and
picklable: Dask workers and Spark executors ship it back.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy.linalg import lapack

from .errors import DataError


class QRStack:
    """The R of all rows so far, updated batch by batch: [R; rows] is stacked in a
    Fortran-ordered buffer kept for the next stack of the same shape (every batch of a
    pass but the last) and factored there in place by LAPACK's dgeqrf. np.linalg.qr
    copied the stack twice more, into fresh memory: 1.8 ms for a batch of 65,536 x 3
    against 0.3 ms. One per running R (the calls on one must not overlap); it is
    pickled without its buffer."""

    def __init__(self):
        self.buf = None

    def __getstate__(self):
        return {"buf": None}

    def update(self, R: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """R of [R; rows], as np.linalg.qr(..., mode="r") gives it."""
        k, nb, m = R.shape[0], rows.shape[0], rows.shape[1]
        if R.shape[1] != m:
            raise ValueError(f"R has {R.shape[1]} columns, the rows {m}")
        shape = (k + nb, m)
        if min(shape) == 0:
            return np.zeros((0, m))
        if self.buf is None or self.buf.shape != shape:
            self.buf = np.empty(shape, order="F")
        buf = self.buf
        buf[:k] = R
        buf[k:] = rows
        qr, _, _, info = lapack.dgeqrf(buf, overwrite_a=True)
        if info != 0:
            raise ValueError(f"LAPACK dgeqrf rejected argument {-info}")
        return np.triu(qr[:min(shape)])


def qr_update(R: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """R of [R; rows] (the R of all rows so far), once (``QRStack`` keeps the buffer)."""
    return QRStack().update(R, rows)


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


def union_of_sorted(ka: np.ndarray, kb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The sorted union of two sorted runs of unique keys, and where each key of
    [ka, kb] lands in it.

    A stable sort of the two runs side by side (timsort merges runs in linear time), not
    np.union1d: on two runs of 5 x 10^6 keys union1d took 11 s (NumPy 2.4 hashes) against
    0.06 s, and the merges of a crossed model's level pairs at 10^8 rows (about 95
    million pairs) ran for hours.
    """
    keys = np.concatenate([ka, kb])
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    first = np.empty(ordered.shape[0], dtype=bool)
    first[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    where = np.empty(keys.shape[0], dtype=np.int64)
    where[order] = np.cumsum(first) - 1
    return ordered[first], where


def _merge_blocks(a, b):
    """Sum of two keyed block sets (sorted unique keys each), sorted by key."""
    (ka, A_a), (kb, A_b) = a, b
    keys, where = union_of_sorted(ka, kb)
    A = np.zeros((keys.shape[0], *A_a.shape[1:]))
    A[where[:ka.shape[0]]] += A_a  # keys are unique within each run: no repeated index
    A[where[ka.shape[0]:]] += A_b
    return keys, A


# -- the second pass ----------------------------------------------------------------------
@dataclass
class Sums:
    """Running sums of the second pass (all n-free)."""

    diag: list
    cross: list
    pairs: list  # BlockRuns per term pair
    R: np.ndarray  # R of [X, y - offset - c] (unweighted: the rank test, X'X and X'y)
    Rw: np.ndarray | None  # R of W^1/2 [X, y - offset - c] (weighted fits: X'WX, X'Wy)
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
        Rw = None if self.Rw is None else qr_update(self.Rw, other.Rw)
        return Sums(diag=add(self.diag, other.diag), cross=add(self.cross, other.cross),
                    pairs=[a.merged(b) for a, b in zip(self.pairs, other.pairs)],
                    R=qr_update(self.R, other.R), Rw=Rw,
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
