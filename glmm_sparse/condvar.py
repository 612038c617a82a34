"""Conditional covariances of the random effects: sigma^2 Lambda M^-1 Lambda', diagonal blocks.

Once per fit. Only the k x k block of each level is needed (lme4's condVar), and it lies
inside the pattern of L + L', so the selected inverse on L's pattern gives it exactly.
``SelectedInverse`` also serves every entry of M^-1 on M's pattern (tr(M^-1 dM/dtheta)).
An objective without a sparse factor (classed.ClassedObjective) has its own
``condvar_blocks``, which is used instead.
"""
from __future__ import annotations

import numpy as np

from ._core._selinv import selected_inverse
from ._core._supinv import column_supernodes, supernodal_positions, supernodal_selected_inverse
from .blas import one_blas_thread
from .objective import LmmObjective


class SelectedInverse:
    """Entries of M^-1 on the pattern of L + L', looked up in M's original order.

    A supernodal factor is inverted in its own storage (``_core/_supinv.pyx``, BLAS on the
    dense blocks); a simplicial one, or a block-diagonal one, by Takahashi's recurrences
    on its CSC copy (``_core/_selinv.pyx``); a Schur factor from its block form
    (``schur.SchurInverse``). All give the same entries to rounding.
    """

    def __init__(self, obj: LmmObjective):
        factor = obj.factor
        self.q = obj.cp.q
        self.pinv = np.empty(self.q, dtype=np.int64)
        self.pinv[factor.perm()] = np.arange(self.q)
        if hasattr(factor, "selected_inverse"):  # schur.SchurFactor: from its block form
            self._Z = factor.selected_inverse()
        elif factor.is_supernodal:
            self._Z = _SupernodalZ(factor)
        else:
            self._Z = _SimplicialZ(factor)

    def entries(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """(M^-1)[rows, cols]; every pair must lie inside the pattern of the factor of M.

        rows and cols index M in its original (unpermuted) order and broadcast together;
        the result has their broadcast shape.
        """
        rows, cols = np.broadcast_arrays(np.asarray(rows, dtype=np.int64),
                                         np.asarray(cols, dtype=np.int64))
        pr, pc = self.pinv[rows.ravel()], self.pinv[cols.ravel()]
        at = self._Z.positions(np.maximum(pr, pc), np.minimum(pr, pc))
        if at.size and at.min() < 0:
            k = int(np.argmin(at))
            raise AssertionError(
                f"requested entry ({rows.ravel()[k]}, {cols.ravel()[k]}) of M^-1 lies outside "
                "the pattern of M's factor: only entries of M's pattern (and of L + L') are "
                "computed")
        return self._Z.values[at].reshape(rows.shape)

    def on_pattern(self, indptr: np.ndarray, indices: np.ndarray) -> np.ndarray:
        """(M^-1) at every entry of a CSC pattern (M's original order), in its storage order.

        The pattern may hold the upper, the lower or both triangles of (part of) M's pattern.
        """
        indptr = np.asarray(indptr, dtype=np.int64)
        cols = np.repeat(np.arange(indptr.shape[0] - 1, dtype=np.int64), np.diff(indptr))
        return self.entries(np.asarray(indices, dtype=np.int64), cols)


class _SupernodalZ:
    """M^-1 in the layout of CHOLMOD's supernodal L->x; positions of (i >= j) permuted."""

    def __init__(self, factor):
        self.super, self.pi, self.px, self.s, Lx = factor.supernodal_L()
        self.colsup = column_supernodes(self.super)
        self.values = np.empty_like(Lx)
        with one_blas_thread():
            supernodal_selected_inverse(self.super, self.pi, self.px, self.s, Lx, self.values)

    def positions(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Index into ``values`` of each (i[k], j[k]), i >= j (permuted), or -1 off the pattern."""
        out = np.empty(i.shape[0], dtype=np.int64)
        supernodal_positions(self.super, self.pi, self.px, self.s, self.colsup,
                             np.ascontiguousarray(i), np.ascontiguousarray(j), out)
        return out


class _SimplicialZ:
    """M^-1 on the lower CSC pattern of L (sorted rows); positions of (i >= j) permuted."""

    def __init__(self, factor):
        indptr, indices, Lx = factor.sparse_L()
        q = indptr.shape[0] - 1
        self.q = q
        self.values = selected_inverse(indptr, indices, Lx)
        # L's pattern is sorted by (column, row): one increasing key per stored entry
        self.keys = np.repeat(np.arange(q, dtype=np.int64), np.diff(indptr)) * q + indices

    def positions(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Index into ``values`` of each (i[k], j[k]), i >= j (permuted), or -1 off the pattern."""
        if self.keys.shape[0] == 0:
            return np.full(i.shape[0], -1, dtype=np.int64)
        want = j * self.q + i
        at = np.minimum(np.searchsorted(self.keys, want), self.keys.shape[0] - 1)
        return np.where(self.keys[at] == want, at, -1)


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
