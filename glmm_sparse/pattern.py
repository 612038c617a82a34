"""The fixed sparsity pattern of M = Lambda' Z'WZ Lambda + I and where each block lands.

Built once per model from the block structure of the cross-products. Upper triangle,
CSC, as CHOLMOD takes it; every entry of every level-pair block is kept, so no value of
theta can change the pattern.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
    the memory budget, before allocating it.
    """
    nnz, block_entries = pattern_size(cp)
    check_pattern_fits(nnz, cp.q, block_entries=block_entries, levels=cp.nlev)
    offs = cp.offsets
    rows, cols, masks = [], [], []
    for t, (k, nl) in enumerate(zip(cp.k, cp.nlev)):
        start = offs[t] + np.arange(nl, dtype=np.int64) * k
        r, c = _block_coords(start, start, k, k)
        rows.append(r)
        cols.append(c)
        masks.append(r <= c)
    for pb in cp.pairs:
        kt, ks = cp.k[pb.t], cp.k[pb.s]
        r, c = _block_coords(offs[pb.t] + pb.lev_t * kt, offs[pb.s] + pb.lev_s * ks, kt, ks)
        rows.append(r)
        cols.append(c)
        masks.append(np.ones(r.shape, dtype=bool))
    flat_r = np.concatenate([r[m] for r, m in zip(rows, masks)])
    flat_c = np.concatenate([c[m] for c, m in zip(cols, masks)])
    order = np.lexsort((flat_r, flat_c))
    slot = np.empty_like(order)
    slot[order] = np.arange(order.shape[0])
    positions, start = [], 0
    for m in masks:
        pos = np.full(m.shape, -1, dtype=np.int64)
        count = int(m.sum())
        pos[m] = slot[start:start + count]
        positions.append(pos)
        start += count
    indptr = np.concatenate([[0], np.cumsum(np.bincount(flat_c, minlength=cp.q))]).astype(np.int64)
    nterms = len(cp.k)
    return MPattern(cp.q, indptr, flat_r[order].astype(np.int64),
                    tuple(positions[:nterms]), tuple(positions[nterms:]))
