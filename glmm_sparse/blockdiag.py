"""The Cholesky factor of M when M is block diagonal: one random-effects term.

With a single term (``(1 | g)``, ``(1 + x | g)``), M = Lambda'Z'WZ Lambda + I is block
diagonal, one k x k block per level, and so is L. CHOLMOD factors it as a general sparse
matrix (a permuted transpose, column counts, one column at a time), which cost 7 ms per
evaluation for 10^5 levels of k = 2, and 4 ms more for each triangular solve with its
copies; as a stack of k x k blocks the same work is one pass of a compiled kernel
(``_core/_blockdiag.pyx``): 6 ms per evaluation in all; for k = 1 or 2 the objective
makes the whole evaluation one pass over the levels (``factorize_levels``).

``BlockDiagonalFactor`` has the interface of ``_core._cholmod.SymbolicFactor`` that the
objective, PIRLS, the conditional variances and the memory guard use: ``factorize``,
``logdet``, ``solve`` ("A", "L", "Lt", "P", "Pt"), ``perm``, ``sparse_L``, ``factor_nnz``,
``n``, ``nnz``, ``is_supernodal``, ``update_size``. There is no fill and no permutation.
"""
from __future__ import annotations

import numpy as np

from ._core import _blockdiag
from ._core._cholmod import CholmodError, CholmodNotPositiveDefiniteError
from .parallel import run_all

SYSTEMS = ("A", "L", "Lt", "P", "Pt")
LEVEL_KS = (1, 2)  # block sizes factorize_levels takes (its kernel is written out for them)
LEVEL_SLOTS = 2  # fixed parts of the levels in factorize_levels (not the thread count)
# columns of [X y] up to which factorize_levels pays: its R'R, a scalar loop per level, was
# even with BLAS's at 32 columns and lost beyond (64: 17.8 ms against 12.9 at 20,000 levels)
LEVEL_MAX_COLUMNS = 32


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
        self._logdet = None  # set by factorize_levels, which sums it in its pass

    def factorize(self, values, beta: float = 0.0) -> None:
        """L of each block of M + beta I (values: M's upper triangle, length nnz)."""
        values = np.ascontiguousarray(values, dtype=np.float64)
        if values.shape != (self.nnz,):
            raise ValueError(f"expected {self.nnz} values, got {values.shape}")
        self.is_factorized, self._logdet = False, None
        bad = _blockdiag.block_cholesky(values, self.diag_pos, float(beta), self.L)
        if bad >= 0:
            raise CholmodNotPositiveDefiniteError(
                f"matrix not positive definite at column {bad}", int(bad))
        self.is_factorized = True

    def factorize_levels(self, D: np.ndarray, T: np.ndarray, C: np.ndarray, beta: float,
                         R: np.ndarray) -> np.ndarray:
        """``factorize`` of M + beta I for M = T' D[l] T per level (a single term's
        Lambda'Z'WZ Lambda with k = 1 or 2 columns: ``LEVEL_KS``; D its (nlev, k, k)
        blocks of Z'WZ; M's values are not stored), and in the same pass over the levels
        the objective's products with C = Z'W[X y]: R = L^-1 (I x T') C into R; returns
        G = R'R (``_blockdiag.level_update``: the same bits as the separate kernels,
        except G's and the log-determinant's order of addition).

        The levels go in LEVEL_SLOTS fixed parts, on the pool's threads, their G and
        log-determinant added in order: the same bits for any number of threads.
        """
        self.is_factorized, self._logdet = False, None
        D, T, C = (np.ascontiguousarray(a, dtype=np.float64) for a in (D, T, C))
        m = C.shape[1]
        cuts = [self.nlev * i // LEVEL_SLOTS for i in range(LEVEL_SLOTS + 1)]
        parts = [np.empty((m, m)) for _ in range(LEVEL_SLOTS)]
        done = run_all([lambda lo=lo, hi=hi, G=G: _blockdiag.level_update(
            D, T, C, float(beta), self.L, R, G, lo, hi)
            for lo, hi, G in zip(cuts[:-1], cuts[1:], parts)], self.nlev * self.k * m)
        for bad, _ in done:
            if bad >= 0:
                raise CholmodNotPositiveDefiniteError(
                    f"matrix not positive definite at column {bad}", int(bad))
        G, logdet = parts[0], done[0][1]
        for part, (_, ld) in zip(parts[1:], done[1:]):
            G += part
            logdet += ld
        self.is_factorized, self._logdet = True, float(logdet)
        return G

    def _require_numeric(self) -> None:
        if not self.is_factorized:
            raise CholmodError("no numeric factorization: call factorize() first")

    def logdet(self) -> float:
        """log det(M + beta I) = 2 sum log diag(L)."""
        self._require_numeric()
        if self._logdet is not None:
            return self._logdet
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
