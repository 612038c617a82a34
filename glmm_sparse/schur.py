"""The Cholesky factor of M through the Schur complement of its block-diagonal first block.

lme4's term order puts the factor with most levels first, and M's block of that first
term is block diagonal: D, one k x k block per level (diagonal for a scalar ``(1 | g1)``).
With L_D the Cholesky factors of those blocks,

    M + beta I = [D  B]  =  L L',   L = [L_D           0  ]     B~ = L_D^-1 B
                 [B' C]                 [B~'          L_S ]

with L_S L_S' = S = C - B~'B~, the q2 x q2 Schur complement of the other terms. On
crossed designs S is dense (every level of g2 meets every other through some level of
g1), and this is what a sparse factorization spends its time on: CHOLMOD's supernodal
code forms S by one small update per level of g1, each scattered into S, then factors
S. Here S is formed tile by tile (``_core/_schur.pyx``: each pass of the rows' updates
lands in one cache-sized tile), on both cores, and factored by LAPACK: 3x faster than
CHOLMOD on 10^4 x 10^3 crossed levels with PIRLS weights (binomial), 1.5x on the
InstEval shape, where S is 1,156 wide. S's Cholesky now runs by tiles on both cores as
well (tilechol.py: 10 ms -> 5.4 ms at order 1,000).

``SchurFactor`` has the interface of ``_core._cholmod.SymbolicFactor`` that the
objective, PIRLS, the conditional variances and the memory guard use (as
``blockdiag.BlockDiagonalFactor``); it is one of the candidates that
``objective.fastest_factor`` picks (by its fill, else by timing), or named by
``factor_mode="schur"``. No permutation.
"""
from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.sparse
from scipy.linalg import lapack

from ._core import _schur
from ._core._cholmod import CholmodError, CholmodNotPositiveDefiniteError
from .blas import one_blas_thread
from .blockdiag import BlockDiagonalFactor, unpermuted_solve
from .parallel import run_all
from .pattern import MPattern
from .tilechol import cholesky_lower

TILE = 256  # S's tiles, TILE x TILE doubles (512 KB: one core's L2 here)
# Above this width the dense S (8 q2^2 bytes) and its O(q2^3) factorization stop paying:
# a sparse factor keeps whatever sparsity the later terms' blocks have.
MAX_COLUMNS = 4096
MAX_K = 8  # columns of the first term (the compiled per-level solves hold k on the stack)
SLOTS = 2  # the tile pairs are split into this many runs, one per task (results do not
# depend on it: each tile pair is one task's, rows in order)


def applies(pattern: MPattern) -> bool:
    """Whether M has the structure: at least two terms, the first of at most MAX_K
    columns (its block of M is block diagonal), the later ones of at most MAX_COLUMNS
    random effects in all; and fewer than 2^31 entries (the kernels' int32 indices)."""
    if len(pattern.diag_pos) < 2 or pattern.diag_pos[0].shape[1] > MAX_K:
        return False
    return 0 < pattern.q - first_columns(pattern) <= MAX_COLUMNS and pattern.nnz < 2**31 - 1


def first_columns(pattern: MPattern) -> int:
    """q1: the first term's random effects (levels times columns)."""
    return pattern.diag_pos[0].shape[0] * pattern.diag_pos[0].shape[1]


def b_entries(pattern: MPattern) -> int:
    """Entries of B, M's block that joins the first term's random effects to the later
    terms' (in M's upper triangle: rows < q1 of the later columns)."""
    q1 = first_columns(pattern)
    return int(np.count_nonzero(np.asarray(pattern.indices[pattern.indptr[q1]:]) < q1))


def factor_entries(pattern: MPattern) -> int:
    """The entries that the Schur factor of this pattern stores (its ``factor_nnz``),
    without setting it up: L_D's blocks, B~ (B's pattern) and S's dense lower triangle."""
    k = pattern.diag_pos[0].shape[1]
    q2 = pattern.q - first_columns(pattern)
    return pattern.diag_pos[0].shape[0] * k * (k + 1) // 2 + b_entries(pattern) \
        + q2 * (q2 + 1) // 2


def schur_bytes(pattern: MPattern) -> int:
    """Bytes the Schur factor of this pattern holds and needs at its peak: S, and for the
    selected inverse S^-1 twice (LAPACK's and the symmetric copy), each q2 x q2 dense; B's
    entries (values, column, position in M's values, scipy's index copy: 24 bytes; and
    the objective's copy in B's order with its positions, objective.DirectB: 16), the
    tile cuts and the per-tile counts that split the work, and the set-up's
    temporaries (56 bytes per entry of M)."""
    q1 = first_columns(pattern)
    q2 = pattern.q - q1
    pairs = pattern.nnz - pattern.q  # M's off-diagonal entries: at most B's and C's
    ntiles = -(-q2 // TILE)
    held = 3 * 8 * q2 * q2 + 40 * pairs + 8 * q1 * (ntiles + 1) + 24 * q1
    return held + 56 * pattern.nnz


class SchurFactor:
    """L L' = M + beta I by the Schur complement of M's block-diagonal first block.

    ``pattern``: M's upper triangle in CSC (objective.build_pattern), whose structure
    ``applies``.
    """

    def __init__(self, pattern: MPattern):
        if not applies(pattern):
            raise ValueError(f"the Schur factor needs a first term of at most {MAX_K} columns "
                             f"and at most {MAX_COLUMNS} columns in the later terms")
        self.D = BlockDiagonalFactor(pattern.diag_pos[0], pattern.nnz)  # L_D, block by block
        nlev, k = self.D.nlev, self.D.k
        q, q1 = pattern.q, nlev * k
        indptr = np.asarray(pattern.indptr, dtype=np.int64)
        rows = np.asarray(pattern.indices, dtype=np.int64)
        cols = np.repeat(np.arange(q, dtype=np.int64), np.diff(indptr))
        first = np.arange(indptr[q1], dtype=np.int64)
        if np.any(rows[first] // k != cols[first] // k):
            raise ValueError("the first term's block of M is not block diagonal")
        self.n, self.nnz, self.q1, self.q2, self.nlev, self.k = (
            q, int(rows.shape[0]), q1, q - q1, nlev, k)
        upper = np.arange(indptr[q1], rows.shape[0], dtype=np.int64)
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
        self.B = scipy.sparse.csr_matrix(  # B~ = L_D^-1 B once factored
            (np.zeros(self.bpos.shape[0]), self.bcol, self.bptr), shape=(q1, self.q2))
        self.S = np.zeros((self.q2, self.q2))  # L_S in its lower triangle once factored
        self.is_supernodal = False
        self.is_factorized = False

    # -- factorization -----------------------------------------------------------------
    def factorize(self, values, beta: float = 0.0, b_values=None) -> None:
        """L_D, B~ and L_S of M + beta I for M's upper-triangle values (length nnz).

        ``b_values``: B's entries in B's own (row) order, when the caller made them there
        (objective.DirectB); values' entries of B are then not read.
        """
        values = np.ascontiguousarray(values, dtype=np.float64)
        self.is_factorized = False
        self.D.factorize(values, beta)  # checks the values; its columns are M's first q1
        bx = self.B.data
        if b_values is None:
            bx[:] = values[self.bpos]
        elif b_values.shape != bx.shape:
            raise ValueError(f"b_values must hold B's {bx.shape[0]} entries")
        else:
            bx[:] = b_values
        _schur.level_rows_solve(self.LD, bx, self.bptr, bx, False)
        S = self.S
        S.fill(0.0)
        S.ravel()[self.c_at] = values[self.cpos]
        S.ravel()[:: self.q2 + 1] += beta
        run_all([lambda pairs=pairs: _schur.schur_subtract(bx, self.bcol, self.cuts, pairs, S)
                 for pairs in self.runs], self.updates)
        info = cholesky_lower(S)  # tiles on both cores, the same bits on any number
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

    @property
    def LD(self) -> np.ndarray:
        """The first block's factors, (nlev, k, k) lower triangular."""
        return self.D.L

    # -- queries -------------------------------------------------------------------------
    def logdet(self) -> float:
        """log det(M + beta I) = 2 sum log diag(L_D) + 2 sum log diag(L_S)."""
        self._require_numeric()
        return float(self.D.logdet() + 2.0 * np.log(np.diagonal(self.S)).sum())

    def solve(self, system: str, B) -> np.ndarray:
        """X solving ``system`` for the dense right side B (a vector or n x m)."""
        self._require_numeric()
        with one_blas_thread():  # as the factorization: the same bits, no idle spinners
            return unpermuted_solve(system, B, self.n, self._lower, self._upper)

    def _lower(self, r: np.ndarray) -> np.ndarray:
        """L y = r: y1 = L_D^-1 r1, y2 = L_S^-1 (r2 - B~' y1)."""
        q1 = self.q1
        y = np.empty_like(r)
        y1 = self.D.solve("L", r[:q1])
        y[:q1] = y1
        rhs2 = r[q1:] - self.B.T @ y1
        y[q1:] = scipy.linalg.solve_triangular(self.S, rhs2, lower=True, check_finite=False)
        return y

    def _upper(self, y: np.ndarray) -> np.ndarray:
        """L' x = y: x2 = L_S^-T y2, x1 = L_D^-T (y1 - B~ x2)."""
        q1 = self.q1
        x = np.empty_like(y)
        x[q1:] = scipy.linalg.solve_triangular(self.S, y[q1:], lower=True, trans="T",
                                               check_finite=False)
        x[:q1] = self.D.solve("Lt", y[:q1] - self.B @ x[q1:])
        return x

    def perm(self) -> np.ndarray:
        """No fill-reducing permutation: the identity."""
        return np.arange(self.n, dtype=np.int64)

    def sparse_L(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """L in CSC (indptr, row indices sorted within columns, values), lower triangle."""
        self._require_numeric()
        q1, q2, k = self.q1, self.q2, self.k
        counts_b = np.diff(self.bptr).astype(np.int64)
        # columns < q1 (level l, component j): L_D's rows l*k + j .. l*k + k - 1, then
        # rows q1 + B~'s columns in row l*k + j
        within = k - np.arange(q1, dtype=np.int64) % k
        counts1 = within + counts_b
        heads = np.concatenate([[0], np.cumsum(counts1)])[:-1]
        idx1 = np.empty(int(counts1.sum()), dtype=np.int64)
        val1 = np.empty(idx1.shape[0])
        in_block = np.zeros(idx1.shape[0], dtype=bool)
        for d in range(k):  # the d-th entry below the diagonal of each column's block
            has = within > d
            at = heads[has] + d
            col = np.flatnonzero(has)
            idx1[at] = col + d
            val1[at] = self.LD[col // k, col % k + d, col % k]
            in_block[at] = True
        idx1[~in_block] = q1 + self.bcol.astype(np.int64)
        val1[~in_block] = self.B.data
        # columns >= q1: L_S's lower triangle, column by column
        ii, jj = np.tril_indices(q2)
        order = np.lexsort((ii, jj))
        ii, jj = ii[order], jj[order]
        counts = np.concatenate([counts1, q2 - np.arange(q2, dtype=np.int64)])
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return (indptr, np.concatenate([idx1, q1 + ii.astype(np.int64)]),
                np.concatenate([val1, self.S[ii, jj]]))

    def selected_inverse(self) -> SchurInverse:
        """M^-1 on the pattern of L + L' (for condvar.SelectedInverse)."""
        self._require_numeric()
        return SchurInverse(self)

    def factor_nnz(self) -> int:
        return int(self.nlev * self.k * (self.k + 1) // 2 + self.bpos.shape[0]
                   + self.q2 * (self.q2 + 1) // 2)

    def update_size(self) -> int:
        return 0


def _split_pairs(ntiles: int, cuts: np.ndarray, slots: int) -> tuple[list[np.ndarray], int]:
    """The tile pairs (ta, tb), tb <= ta, in ``slots`` runs of about equal work (the
    updates each pair holds: sum over rows of its entries in tile ta times in tile tb),
    and the updates in all (which decide, as rows do for a pass, whether to use threads)."""
    per_tile = np.diff(cuts, axis=1)  # (q1, ntiles) int32: each row's entries per tile
    pairs, work = [], []
    for ta in range(ntiles):
        col_a = per_tile[:, ta].astype(np.float64)
        for tb in range(ta + 1):
            pairs.append((ta, tb))
            w = float(col_a @ per_tile[:, tb])
            work.append(0.5 * w if ta == tb else w)
    pairs = np.asarray(pairs, dtype=np.int32).reshape(-1, 2)
    bounds = np.searchsorted(np.cumsum(work), np.sum(work) * np.arange(1, slots) / slots)
    runs = [np.ascontiguousarray(run) for run in np.split(pairs, bounds) if run.shape[0]]
    return runs, int(np.sum(work))


class SchurInverse:
    """Entries of (M + beta I)^-1 where L has entries, from the block form

        M^-1 = [L_D^-T (I + B~ Sigma B~') L_D^-1    -L_D^-T B~ Sigma]    Sigma = S^-1
               [-Sigma B~' L_D^-1                    Sigma          ]

    On L's pattern that is: the first block's diagonal blocks, B's entries, all of
    Sigma; each needs (B~ Sigma) on B's own pattern only (``_core/_schur``). In the
    layout of condvar's selected inverses: ``values`` and ``positions(i, j)``.
    """

    def __init__(self, factor: SchurFactor):
        q1, q2, k, nlev = factor.q1, factor.q2, factor.k, factor.nlev
        self.q1, self.q2, self.k = q1, q2, k
        nb = factor.bpos.shape[0]
        self.values = np.empty(nlev * k * k + nb + q2 * q2)
        Sigma = self.values[nlev * k * k + nb:].reshape(q2, q2)
        with one_blas_thread():
            U, info = lapack.dpotri(factor.S.T, lower=0, overwrite_c=0)  # upper of S^-1
        if info != 0:
            raise CholmodError(f"LAPACK dpotri failed with info {info}")
        # U's other triangle is S.T's, zeros (factorize fills S's lower triangle only)
        np.add(U, U.T, out=Sigma)
        Sigma.ravel()[:: q2 + 1] = np.diagonal(U)
        del U
        Bt = factor.B.data
        BS = np.empty(nb)  # (B~ Sigma) on B's pattern
        _schur.on_pattern_product(Bt, factor.bptr, factor.bcol, Sigma, BS)
        # first block: L_D^-T (I + B~ Sigma B~') L_D^-1, level by level
        level = np.repeat(np.arange(q1) // k, np.diff(factor.bptr))
        comp = np.repeat(np.arange(q1) % k, np.diff(factor.bptr))
        inner = np.zeros((nlev, k, k))
        for a in range(k):
            for b in range(k):  # rows a and b of a level hold the same columns, in order
                inner[:, a, b] = np.bincount(level[comp == a],
                                             weights=BS[comp == a] * Bt[comp == b],
                                             minlength=nlev)
        inner += np.eye(k)
        Linv = np.linalg.inv(factor.LD)  # k x k triangular blocks
        self.values[:nlev * k * k] = np.einsum("lba,lbc,lcd->lad", Linv, inner,
                                               Linv).ravel()
        # off-diagonal block: -(L_D^-T B~ Sigma) on B's pattern
        off = self.values[nlev * k * k:nlev * k * k + nb]
        _schur.level_rows_solve(factor.LD, BS, factor.bptr, off, True)
        off *= -1.0
        rows = np.repeat(np.arange(q1), np.diff(factor.bptr))
        self.keys = rows * q2 + factor.bcol  # B's entries (int64), sorted (CSR)
        self.first = nlev * k * k

    def positions(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Index into ``values`` of each (i[k], j[k]), i >= j, or -1 off L's pattern."""
        q1, q2, k = self.q1, self.q2, self.k
        i, j = np.asarray(i, dtype=np.int64), np.asarray(j, dtype=np.int64)
        out = np.full(i.shape[0], -1, dtype=np.int64)
        block = (i < q1) & (i // k == j // k)
        out[block] = (i[block] // k) * k * k + (i[block] % k) * k + j[block] % k
        cross = (i >= q1) & (j < q1)
        if self.keys.shape[0] and cross.any():
            want = j[cross] * q2 + (i[cross] - q1)
            at = np.minimum(np.searchsorted(self.keys, want), self.keys.shape[0] - 1)
            out[cross] = np.where(self.keys[at] == want, self.first + at, -1)
        later = (i >= q1) & (j >= q1)
        out[later] = (self.first + self.keys.shape[0] + (i[later] - q1) * q2
                      + (j[later] - q1))
        return out
