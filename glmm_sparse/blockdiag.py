"""The Cholesky factor of M when M is block diagonal: one random-effects term.

With a single term (``(1 | g)``, ``(1 + x | g)``), M = Lambda'Z'WZ Lambda + I is block
diagonal, one k x k block per level, and so is L. CHOLMOD factors it as a general sparse
matrix (a permuted transpose, column counts, one column at a time), which cost 7 ms per
evaluation for 10^5 levels of k = 2, and 4 ms more for each triangular solve with its
copies; as a stack of k x k blocks the same work is one pass of a compiled kernel
(``_core/_blockdiag.pyx``): 6 ms per evaluation in all.

``BlockDiagonalFactor`` has the interface of ``_core._cholmod.SymbolicFactor`` that the
objective, PIRLS, the conditional variances and the memory guard use: ``factorize``,
``logdet``, ``solve`` ("A", "L", "Lt", "P", "Pt"), ``perm``, ``sparse_L``, ``factor_nnz``,
``n``, ``nnz``, ``is_supernodal``, ``update_size``. There is no fill and no permutation.
"""
from __future__ import annotations

import numpy as np

from ._core import _blockdiag
from ._core._cholmod import CholmodError, CholmodNotPositiveDefiniteError

SYSTEMS = ("A", "L", "Lt", "P", "Pt")


def right_side(system: str, B, n: int) -> tuple[np.ndarray, bool]:
    """A factor's solve arguments checked: B as an n x m float array, and whether it was
    a vector (the solution is returned as one then)."""
    if system not in SYSTEMS:
        raise ValueError(f"unknown system {system!r}; use one of {sorted(SYSTEMS)}")
    arr = np.asarray(B, dtype=np.float64)
    rhs = arr.reshape(-1, 1) if arr.ndim == 1 else arr
    if rhs.shape[0] != n:
        raise ValueError(f"right side has {rhs.shape[0]} rows, factor has {n}")
    return rhs, arr.ndim == 1


def unpermuted_solve(system: str, B, n: int, lower, upper) -> np.ndarray:
    """X solving ``system`` for a factor without fill-reducing permutation (P = I), from
    its two triangular solves: ``lower(r)`` = L^-1 r and ``upper(r)`` = L'^-1 r, each on
    an n x m array. B is a vector or n x m; "A" is L' \\ (L \\ B)."""
    rhs, vector = right_side(system, B, n)
    if system in ("P", "Pt"):
        out = rhs.copy()
    elif system == "L":
        out = lower(rhs)
    elif system == "Lt":
        out = upper(rhs)
    else:
        out = upper(lower(rhs))
    return out[:, 0] if vector else out


class BlockDiagonalFactor:
    """L L' = M + beta I for M block diagonal; ``diag_pos`` (nlev, k, k) are the positions
    of each block's upper-triangle entries in M's values (-1 below the diagonal)."""

    def __init__(self, diag_pos: np.ndarray, nnz: int):
        self.diag_pos = np.ascontiguousarray(diag_pos, dtype=np.int64)
        nlev, k, _ = self.diag_pos.shape
        self.nlev, self.k = nlev, k
        self.n = nlev * k
        self.nnz = nnz
        self.is_supernodal = False
        self.is_factorized = False
        self.L = np.zeros((nlev, k, k))

    def factorize(self, values, beta: float = 0.0) -> None:
        """L of each block of M + beta I (values: M's upper triangle, length nnz)."""
        values = np.ascontiguousarray(values, dtype=np.float64)
        if values.shape != (self.nnz,):
            raise ValueError(f"expected {self.nnz} values, got {values.shape}")
        self.is_factorized = False
        bad = _blockdiag.block_cholesky(values, self.diag_pos, float(beta), self.L)
        if bad >= 0:
            raise CholmodNotPositiveDefiniteError(
                f"matrix not positive definite at column {bad}", int(bad))
        self.is_factorized = True

    def _require_numeric(self) -> None:
        if not self.is_factorized:
            raise CholmodError("no numeric factorization: call factorize() first")

    def logdet(self) -> float:
        """log det(M + beta I) = 2 sum log diag(L)."""
        self._require_numeric()
        return float(2.0 * np.log(np.diagonal(self.L, axis1=1, axis2=2)).sum())

    def solve(self, system: str, B) -> np.ndarray:
        """X solving ``system`` for the dense right side B (a vector or n x m)."""
        self._require_numeric()
        return unpermuted_solve(system, B, self.n, self._lower, self._upper)

    def _lower(self, r: np.ndarray) -> np.ndarray:
        """L^-1 r, block by block."""
        r = np.ascontiguousarray(r)
        out = np.empty_like(r)
        _blockdiag.block_lower_solve(self.L, r, out)
        return out

    def _upper(self, r: np.ndarray) -> np.ndarray:
        """L'^-1 r, block by block."""
        r = np.ascontiguousarray(r)
        out = np.empty_like(r)
        _blockdiag.block_upper_solve(self.L, r, out)
        return out

    def perm(self) -> np.ndarray:
        """No fill-reducing permutation: the identity."""
        return np.arange(self.n, dtype=np.int64)

    def sparse_L(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """L in CSC (indptr, row indices sorted within columns, values), lower triangle."""
        self._require_numeric()
        k = self.k
        rows_in_col = [np.arange(c, k) for c in range(k)]
        counts = np.tile([k - c for c in range(k)], self.nlev)
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        base = (np.arange(self.nlev, dtype=np.int64) * k)[:, None]
        indices = np.concatenate([base + rows_in_col[c][None, :] for c in range(k)], axis=1)
        values = np.concatenate([self.L[:, rows_in_col[c], c] for c in range(k)], axis=1)
        # per level, columns in order: [col 0 rows 0..k-1, col 1 rows 1..k-1, ...]
        return indptr, indices.reshape(-1), values.reshape(-1)

    def factor_nnz(self) -> int:
        return self.nlev * self.k * (self.k + 1) // 2

    def update_size(self) -> int:
        return 0
