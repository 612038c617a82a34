"""The fixed sparsity pattern of M = Lambda' Z'WZ Lambda + I and where each block lands.

Built once per model from the block structure of the cross-products. Upper triangle,
CSC, as CHOLMOD takes it; every entry of every level-pair block is kept, so no value of
theta can change the pattern.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np

from ._core import _pattern
from .crossprod import CrossProducts
from .memory import check_pattern_fits


@dataclass(frozen=True, eq=False)
class MPattern:
    """indptr/indices of M's upper triangle and the slot of each block entry in its values."""

    q: int
    indptr: np.ndarray
    indices: np.ndarray
    diag_pos: tuple[np.ndarray, ...]  # per term (nlev, k, k); -1 below the diagonal
    pair_pos: tuple[np.ndarray, ...]  # per PairBlocks (nb, k_t, k_s)

    @property
    def nnz(self) -> int:
        return int(self.indices.shape[0])


def _block_coords(row_start: np.ndarray, col_start: np.ndarray, kr: int, kc: int):
    """Row and column of every entry of blocks whose top-left corners are given, (nb, kr, kc)."""
    r = row_start[:, None, None] + np.arange(kr)[None, :, None]
    c = col_start[:, None, None] + np.arange(kc)[None, None, :]
    return np.broadcast_to(r, (len(row_start), kr, kc)), np.broadcast_to(c, (len(col_start), kr, kc))


def pattern_size(cp: CrossProducts) -> tuple[int, int]:
    """(entries of M's upper triangle, entries of all its blocks), before anything is built."""
    upper = sum(int(nl) * k * (k + 1) // 2 for k, nl in zip(cp.k, cp.nlev))
    full = sum(int(nl) * k * k for k, nl in zip(cp.k, cp.nlev))
    pairs = sum(int(pb.lev_t.shape[0]) * cp.k[pb.t] * cp.k[pb.s] for pb in cp.pairs)
    return upper + pairs, full + pairs


def build_pattern(cp: CrossProducts) -> MPattern:
    """The pattern of M and the positions of every block entry in the CSC value array.

    Refuses (FactorMemoryError) a pattern whose construction and analysis would not fit
    the memory budget, before allocating it. The entries are placed one group of blocks
    at a time by a counting sort on columns (_place_blocks), which holds one group's
    coordinates at a time; if blocks do not come in sorted order, all entries are
    sorted by (column, row) instead (_sorted_pattern). Both give the same pattern.
    """
    nnz, block_entries = pattern_size(cp)
    check_pattern_fits(nnz, cp.q, block_entries=block_entries, levels=cp.nlev)
    diag, pairs = _block_groups(cp)
    return _place_blocks(cp.q, nnz, diag, pairs) or _sorted_pattern(cp.q, diag, pairs)


def _block_groups(cp: CrossProducts) -> tuple[list, list]:
    """Functions giving the (rows, cols, stored-entry mask or None) of each term's diagonal
    blocks and of each level-pair group's blocks, each (nb, kr, kc), made when called."""
    offs = cp.offsets

    def diag(t: int):
        start = offs[t] + np.arange(cp.nlev[t], dtype=np.int64) * cp.k[t]
        r, c = _block_coords(start, start, cp.k[t], cp.k[t])
        return r, c, r <= c  # upper triangle

    def pair(pb):
        kt, ks = cp.k[pb.t], cp.k[pb.s]
        r, c = _block_coords(offs[pb.t] + pb.lev_t.astype(np.int64) * kt,
                             offs[pb.s] + pb.lev_s.astype(np.int64) * ks, kt, ks)
        return r, c, None

    return ([partial(diag, t) for t in range(len(cp.k))],
            [partial(pair, pb) for pb in cp.pairs])


def _entries(group) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, tuple]:
    """A group's stored entries as flat (rows, cols), its mask and its blocks' shape."""
    r, c, mask = group()
    if mask is None:
        return r.ravel(), c.ravel(), None, r.shape
    return r[mask], c[mask], mask, r.shape


def _positions(slots: np.ndarray, mask, shape) -> np.ndarray:
    """Each block entry's slot in M's values, (nb, kr, kc); -1 where not stored."""
    if mask is None:
        return slots.reshape(shape)
    pos = np.full(shape, -1, dtype=np.int64)
    pos[mask] = slots
    return pos


def _place_blocks(q: int, nnz: int, diag: list, pairs: list) -> MPattern | None:
    """M's pattern by placing each entry in the next free slot of its column, the pair
    groups first in their order (t ascending; rows above the diagonal blocks of the same
    columns), then the diagonal blocks; None if a column's rows do not come in order."""
    counts = np.zeros(q, dtype=np.int64)
    for group in diag + pairs:
        counts += np.bincount(_entries(group)[1], minlength=q)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    next_free = indptr[:-1].copy()
    indices = np.empty(nnz, dtype=np.int64)
    placed = []
    for group in pairs + diag:
        rows, cols, mask, shape = _entries(group)
        slots = np.empty(rows.shape[0], dtype=np.int64)
        if not _pattern.place_entries(rows, cols, indptr, next_free, indices, slots):
            return None
        placed.append(_positions(slots, mask, shape))
    return MPattern(q, indptr, indices, tuple(placed[len(pairs):]), tuple(placed[:len(pairs)]))


def _sorted_pattern(q: int, diag: list, pairs: list) -> MPattern:
    """M's pattern by sorting all block entries by (column, row)."""
    entries = [_entries(group) for group in diag + pairs]
    flat_r = np.concatenate([r for r, _, _, _ in entries])
    flat_c = np.concatenate([c for _, c, _, _ in entries])
    order = np.lexsort((flat_r, flat_c))
    slot = np.empty_like(order)
    slot[order] = np.arange(order.shape[0])
    positions, start = [], 0
    for r, _, mask, shape in entries:
        positions.append(_positions(slot[start:start + r.shape[0]], mask, shape))
        start += r.shape[0]
    indptr = np.concatenate([[0], np.cumsum(np.bincount(flat_c, minlength=q))]).astype(np.int64)
    return MPattern(q, indptr, flat_r[order].astype(np.int64), tuple(positions[:len(diag)]),
                    tuple(positions[len(diag):]))
