"""Conditional covariances of the random effects: sigma^2 Lambda M^-1 Lambda', diagonal blocks.

Once per fit. Only the k x k block of each level is needed (lme4's condVar), and it lies
inside the pattern of L + L', so the selected inverse on L's pattern gives it exactly.
An objective without a sparse factor (classed.ClassedObjective) has its own
``condvar_blocks``, which is used instead.
"""
from __future__ import annotations

import numpy as np

from ._core._selinv import selected_inverse
from .objective import LmmObjective


class SelectedInverse:
    """Entries of M^-1 on the pattern of L + L', looked up in M's original order."""

    def __init__(self, obj: LmmObjective):
        indptr, indices, Lx = obj.factor.sparse_L()
        self.q = obj.cp.q
        self.Z = selected_inverse(indptr, indices, Lx)
        self.pinv = np.empty(self.q, dtype=np.int64)
        self.pinv[obj.factor.perm()] = np.arange(self.q)
        # L's pattern is sorted by (column, row): one increasing key per stored entry
        self.keys = np.repeat(np.arange(self.q, dtype=np.int64), np.diff(indptr)) * self.q + indices

    def entries(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """(M^-1)[rows, cols]; every pair must lie inside the pattern of M."""
        pr, pc = self.pinv[rows], self.pinv[cols]
        want = np.minimum(pr, pc) * self.q + np.maximum(pr, pc)
        at = np.minimum(np.searchsorted(self.keys, want), self.keys.shape[0] - 1)
        if np.any(self.keys[at] != want):
            raise AssertionError("requested entry of M^-1 outside the factor's pattern")
        return self.Z[at]


def condvar_blocks(obj: LmmObjective, sigma: float) -> list[np.ndarray]:
    """Per term, (nlev, k, k): sigma^2 T_t (M^-1)_block T_t' for each level."""
    own = getattr(obj, "condvar_blocks", None)
    if own is not None:
        return own(sigma)
    cp = obj.cp
    offs = cp.offsets
    minv = SelectedInverse(obj)
    out = []
    for t, (k, nlev) in enumerate(zip(cp.k, cp.nlev)):
        base = offs[t] + np.arange(nlev, dtype=np.int64)[:, None, None] * k
        rows = np.broadcast_to(base + np.arange(k)[None, :, None], (nlev, k, k))
        cols = np.broadcast_to(base + np.arange(k)[None, None, :], (nlev, k, k))
        blocks = minv.entries(rows.ravel(), cols.ravel()).reshape(nlev, k, k)
        T = obj.T[t]
        out.append(sigma**2 * np.einsum("ij,ajk,lk->ail", T, blocks, T))
    return out
