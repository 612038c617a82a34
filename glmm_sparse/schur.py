"""The Cholesky factor of M through the Schur complement of a diagonal first block.

When the first random-effects term is a scalar ``(1 | g1)`` (lme4's order puts the factor
with most levels first), M's first q1 x q1 block is diagonal, D, and

    M + beta I = [D  B]  =  L L',   L = [D^1/2         0  ]
                 [B' C]                 [B' D^-1/2    L_S ]

with L_S L_S' = S = C - B' D^-1 B, the q2 x q2 Schur complement of the other terms. On
crossed designs S is dense (every level of g2 meets every other through some level of
g1), and this is what a sparse factorization spends its time on: CHOLMOD's supernodal
code forms S by one small update per level of g1, each scattered into S, then factors
S. Here S is formed tile by tile (``_core/_schur.pyx``: each pass of the rows' updates
lands in one cache-sized tile), on both cores, and factored by LAPACK: 3x faster than
CHOLMOD on 10^4 x 10^3 crossed levels with PIRLS weights (binomial), 2x on the InstEval
shape, where S is 1,156 wide.

``SchurFactor`` has the interface of ``_core._cholmod.SymbolicFactor`` that the
objective, PIRLS, the conditional variances and the memory guard use (as
``blockdiag.BlockDiagonalFactor``); it is one of the candidates that
``objective.fastest_factor`` times, or named by ``factor_mode="schur"``. No permutation.
"""
from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.sparse
from scipy.linalg import lapack

from ._core import _schur
from ._core._cholmod import CholmodError, CholmodNotPositiveDefiniteError
from .blas import one_blas_thread
from .parallel import run_all
from .pattern import MPattern

SYSTEMS = ("A", "L", "Lt", "P", "Pt")
TILE = 256  # S's tiles, TILE x TILE doubles (512 KB: one core's L2 here)
# Above this width the dense S (8 q2^2 bytes) and its O(q2^3) factorization stop paying:
# a sparse factor keeps whatever sparsity the later terms' blocks have.
MAX_COLUMNS = 4096
SLOTS = 2  # the tile pairs are split into this many runs, one per task (results do not
# depend on it: each tile pair is one task's, rows in order)


def applies(pattern: MPattern) -> bool:
    """Whether M has the structure: a scalar first term (diagonal first block) and later
    terms of at most MAX_COLUMNS columns in all."""
    if len(pattern.diag_pos) < 2 or pattern.diag_pos[0].shape[1] != 1:
        return False
    q1 = pattern.diag_pos[0].shape[0]
    return 0 < pattern.q - q1 <= MAX_COLUMNS


def schur_bytes(pattern: MPattern) -> int:
    """Bytes the Schur factor of this pattern holds and needs at its peak: S, and for the
    selected inverse S^-1 twice (LAPACK's and the symmetric copy), each q2 x q2 dense; B's
    entries (values, column, position in M's values, scipy's index copy: 24 bytes), the
    tile cuts, and the set-up's temporaries (56 bytes per entry of M)."""
    q1 = pattern.diag_pos[0].shape[0]
    q2 = pattern.q - q1
    pairs = pattern.nnz - pattern.q  # M's off-diagonal entries: at most B's and C's
    ntiles = -(-q2 // TILE)
    held = 3 * 8 * q2 * q2 + 24 * pairs + 4 * q1 * (ntiles + 1) + 8 * q1
    return held + 56 * pattern.nnz


class SchurFactor:
    """L L' = M + beta I by the Schur complement of M's diagonal first block.

    ``pattern``: M's upper triangle in CSC (objective.build_pattern), whose first term is
    scalar (``applies``).
    """

    def __init__(self, pattern: MPattern):
        if not applies(pattern):
            raise ValueError("the Schur factor needs a scalar first term and at most "
                             f"{MAX_COLUMNS} columns in the later terms")
        q, q1 = pattern.q, pattern.diag_pos[0].shape[0]
        indptr = np.asarray(pattern.indptr, dtype=np.int64)
        rows = np.asarray(pattern.indices, dtype=np.int64)
        cols = np.repeat(np.arange(q, dtype=np.int64), np.diff(indptr))
        if indptr[q1] != q1 or np.any(rows[:q1] != np.arange(q1)):
            raise ValueError("the first term's block of M is not diagonal")
        self.n, self.nnz, self.q1, self.q2 = q, int(rows.shape[0]), q1, q - q1
        self.dpos = np.arange(q1, dtype=np.int64)  # the diagonal's columns come first
        upper = np.arange(q1, rows.shape[0], dtype=np.int64)
        in_b = rows[upper] < q1
        b_at, c_at = upper[in_b], upper[~in_b]
        order = np.argsort(rows[b_at], kind="stable")  # CSR: by row, columns kept in order
        self.bpos = b_at[order]
        self.bcol = np.ascontiguousarray(cols[self.bpos] - q1, dtype=np.int32)
        counts = np.bincount(rows[self.bpos], minlength=q1)
        self.bptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
        # C's entries (r <= c) land in S[c, r]: the lower triangle of the C-ordered S
        self.cpos, self.c_at = c_at, (cols[c_at] - q1) * self.q2 + (rows[c_at] - q1)
        ntiles = -(-self.q2 // TILE)
        self.cuts = np.empty((q1, ntiles + 1), dtype=np.int32)
        _schur.row_cuts(self.bptr, self.bcol, TILE, ntiles, self.cuts)
        self.runs, self.updates = _split_pairs(ntiles, self.cuts, SLOTS)
        self.B = scipy.sparse.csr_matrix(
            (np.zeros(self.bpos.shape[0]), self.bcol, self.bptr), shape=(q1, self.q2))
        self.S = np.zeros((self.q2, self.q2))  # L_S in its lower triangle once factored
        self.d = np.ones(q1)
        self.is_supernodal = False
        self.is_factorized = False

    # -- factorization -----------------------------------------------------------------
    def factorize(self, values, beta: float = 0.0) -> None:
        """D, B and L_S of M + beta I for M's upper-triangle values (length nnz)."""
        values = np.ascontiguousarray(values, dtype=np.float64)
        if values.shape != (self.nnz,):
            raise ValueError(f"expected {self.nnz} values, got {values.shape}")
        self.is_factorized = False
        d = values[self.dpos] + beta
        bad = np.flatnonzero(~(d > 0))
        if bad.size:
            raise CholmodNotPositiveDefiniteError(
                f"matrix not positive definite at column {bad[0]}", int(bad[0]))
        self.d = d
        bx = values[self.bpos]
        self.B.data[:] = bx
        S = self.S
        S.fill(0.0)
        S.ravel()[self.c_at] = values[self.cpos]
        S.ravel()[:: self.q2 + 1] += beta
        dinv = 1.0 / d
        run_all([lambda pairs=pairs: _schur.schur_subtract(bx, self.bcol, dinv, self.cuts,
                                                           pairs, S)
                 for pairs in self.runs], self.updates)
        with one_blas_thread():  # one thread: faster at these orders, and the same bits
            _, info = lapack.dpotrf(S.T, lower=0, clean=0, overwrite_a=1)
        if info > 0:
            col = self.q1 + int(info) - 1
            raise CholmodNotPositiveDefiniteError(
                f"matrix not positive definite at column {col}", col)
        if info < 0:
            raise CholmodError(f"LAPACK dpotrf rejected argument {-info}")
        self.is_factorized = True

    def _require_numeric(self) -> None:
        if not self.is_factorized:
            raise CholmodError("no numeric factorization: call factorize() first")

    # -- queries -------------------------------------------------------------------------
    def logdet(self) -> float:
        """log det(M + beta I) = sum log d + 2 sum log diag(L_S)."""
        self._require_numeric()
        return float(np.log(self.d).sum() + 2.0 * np.log(np.diagonal(self.S)).sum())

    def solve(self, system: str, B) -> np.ndarray:
        """X solving ``system`` for the dense right side B (a vector or n x m)."""
        self._require_numeric()
        if system not in SYSTEMS:
            raise ValueError(f"unknown system {system!r}; use one of {sorted(SYSTEMS)}")
        arr = np.asarray(B, dtype=np.float64)
        vector = arr.ndim == 1
        rhs = arr.reshape(-1, 1) if vector else arr
        if rhs.shape[0] != self.n:
            raise ValueError(f"right side has {rhs.shape[0]} rows, factor has {self.n}")
        if system in ("P", "Pt"):
            out = rhs.copy()
        else:
            with one_blas_thread():  # as the factorization: the same bits, no idle spinners
                if system == "L":
                    out = self._lower(rhs)
                elif system == "Lt":
                    out = self._upper(rhs)
                else:
                    out = self._upper(self._lower(rhs))
        return out[:, 0] if vector else out

    def _lower(self, r: np.ndarray) -> np.ndarray:
        """L y = r: y1 = D^-1/2 r1, y2 = L_S^-1 (r2 - B' D^-1 r1)."""
        q1, sd = self.q1, np.sqrt(self.d)[:, None]
        y = np.empty_like(r)
        y[:q1] = r[:q1] / sd
        rhs2 = r[q1:] - self.B.T @ (r[:q1] / self.d[:, None])
        y[q1:] = scipy.linalg.solve_triangular(self.S, rhs2, lower=True, check_finite=False)
        return y

    def _upper(self, y: np.ndarray) -> np.ndarray:
        """L' x = y: x2 = L_S^-T y2, x1 = D^-1/2 y1 - D^-1 B x2."""
        q1, sd = self.q1, np.sqrt(self.d)[:, None]
        x = np.empty_like(y)
        x[q1:] = scipy.linalg.solve_triangular(self.S, y[q1:], lower=True, trans="T",
                                               check_finite=False)
        x[:q1] = y[:q1] / sd - (self.B @ x[q1:]) / self.d[:, None]
        return x

    def perm(self) -> np.ndarray:
        """No fill-reducing permutation: the identity."""
        return np.arange(self.n, dtype=np.int64)

    def sparse_L(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """L in CSC (indptr, row indices sorted within columns, values), lower triangle."""
        self._require_numeric()
        q1, q2 = self.q1, self.q2
        sd = np.sqrt(self.d)
        counts_b = np.diff(self.bptr).astype(np.int64)
        # columns < q1: the diagonal, then rows q1 + B's columns (sorted within a row)
        heads = np.concatenate([[0], np.cumsum(counts_b + 1)])[:-1]
        n_first = int(q1 + counts_b.sum())
        idx1 = np.empty(n_first, dtype=np.int64)
        val1 = np.empty(n_first)
        idx1[heads] = np.arange(q1)
        val1[heads] = sd
        tail = np.ones(n_first, dtype=bool)
        tail[heads] = False
        idx1[tail] = q1 + self.bcol.astype(np.int64)
        val1[tail] = self.B.data / np.repeat(sd, counts_b)
        # columns >= q1: L_S's lower triangle, column by column
        ii, jj = np.tril_indices(q2)
        order = np.lexsort((ii, jj))
        ii, jj = ii[order], jj[order]
        idx2 = q1 + ii.astype(np.int64)
        val2 = self.S[ii, jj]
        counts = np.concatenate([counts_b + 1, q2 - np.arange(q2, dtype=np.int64)])
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return indptr, np.concatenate([idx1, idx2]), np.concatenate([val1, val2])

    def selected_inverse(self) -> "SchurInverse":
        """M^-1 on the pattern of L + L' (for condvar.SelectedInverse)."""
        self._require_numeric()
        return SchurInverse(self)

    def factor_nnz(self) -> int:
        return int(self.q1 + self.bpos.shape[0] + self.q2 * (self.q2 + 1) // 2)

    def update_size(self) -> int:
        return 0


def _split_pairs(ntiles: int, cuts: np.ndarray, slots: int) -> tuple[list[np.ndarray], int]:
    """The tile pairs (ta, tb), tb <= ta, in ``slots`` runs of about equal work (the
    updates each pair holds: sum over rows of its entries in tile ta times in tile tb),
    and the updates in all (which decide, as rows do for a pass, whether to use threads)."""
    per_tile = np.diff(cuts, axis=1).astype(np.float64)  # (q1, ntiles)
    pairs, work = [], []
    for ta in range(ntiles):
        for tb in range(ta + 1):
            pairs.append((ta, tb))
            w = per_tile[:, ta] @ per_tile[:, tb]
            work.append(0.5 * w if ta == tb else w)
    pairs = np.asarray(pairs, dtype=np.int32).reshape(-1, 2)
    bounds = np.searchsorted(np.cumsum(work), np.sum(work) * np.arange(1, slots) / slots)
    runs = [np.ascontiguousarray(run) for run in np.split(pairs, bounds) if run.shape[0]]
    return runs, int(np.sum(work))


class SchurInverse:
    """Entries of (M + beta I)^-1 where L has entries, from the block form

        M^-1 = [D^-1 + D^-1 B Sigma B' D^-1   -D^-1 B Sigma]    Sigma = S^-1
               [-Sigma B' D^-1                 Sigma       ]

    On L's pattern that is: the first block's diagonal, B's entries, all of Sigma; each
    needs (B Sigma) on B's own pattern only (``_core/_schur.on_pattern_product``). In
    the layout of condvar's selected inverses: ``values`` and ``positions(i, j)``.
    """

    def __init__(self, factor: SchurFactor):
        q1, q2 = factor.q1, factor.q2
        self.q1, self.q2 = q1, q2
        nb = factor.bpos.shape[0]
        self.values = np.empty(q1 + nb + q2 * q2)
        Sigma = self.values[q1 + nb:].reshape(q2, q2)
        with one_blas_thread():
            U, info = lapack.dpotri(factor.S.T, lower=0, overwrite_c=0)  # upper of S^-1
        if info != 0:
            raise CholmodError(f"LAPACK dpotri failed with info {info}")
        # U's other triangle is S.T's, zeros (factorize fills S's lower triangle only)
        np.add(U, U.T, out=Sigma)
        Sigma.ravel()[:: q2 + 1] = np.diagonal(U)
        del U
        BS = np.empty(nb)
        _schur.on_pattern_product(factor.B.data, factor.bptr, factor.bcol, Sigma, BS)
        dinv = 1.0 / factor.d
        rows = np.repeat(np.arange(q1), np.diff(factor.bptr))
        self.values[:q1] = dinv + dinv**2 * np.bincount(rows, weights=BS * factor.B.data,
                                                        minlength=q1)
        self.values[q1:q1 + nb] = -dinv[rows] * BS
        self.keys = rows.astype(np.int64) * q2 + factor.bcol  # B's entries, sorted (CSR)

    def positions(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Index into ``values`` of each (i[k], j[k]), i >= j, or -1 off L's pattern."""
        q1, q2 = self.q1, self.q2
        i, j = np.asarray(i, dtype=np.int64), np.asarray(j, dtype=np.int64)
        out = np.full(i.shape[0], -1, dtype=np.int64)
        first = i < q1
        out[first & (i == j)] = i[first & (i == j)]
        cross = ~first & (j < q1)
        if self.keys.shape[0] and cross.any():
            want = j[cross] * q2 + (i[cross] - q1)
            at = np.minimum(np.searchsorted(self.keys, want), self.keys.shape[0] - 1)
            out[cross] = np.where(self.keys[at] == want, q1 + at, -1)
        later = ~first & ~cross
        out[later] = q1 + self.keys.shape[0] + (i[later] - q1) * q2 + (j[later] - q1)
        return out
