# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Kernels of the Schur-complement factor (schur.py): S -= B' B, tile by tile.

B is q1 x q2 in CSR (rows: the first term's random effects, columns sorted within a
row), already scaled by the first block's factor (L_D^-1 B, ``level_rows_solve``), S a
C-ordered q2 x q2 array of which the lower triangle (S[a, b], b <= a) is read and
written. Row i of B subtracts B[i, a] * B[i, b] from every (a, b) of its columns: a scattered update of S, which does not fit in cache when
q2 is in the thousands. Tiles of TILE x TILE entries do: each tile pair (ta, tb) walks
every row's columns that fall in tile ta and tile tb (``cuts`` marks where each tile
begins within each row), so the updates of one pass land in one tile. A tile pair is
owned by one call, and within it rows go in order: the result does not depend on how
the pairs are split between threads.
"""
import numpy as np
cimport numpy as cnp

cnp.import_array()


def row_cuts(const int[::1] bptr, const int[::1] bcol, Py_ssize_t tile, Py_ssize_t ntiles,
             int[:, ::1] cuts):
    """cuts[i, t] = the first position p of row i (bptr[i] <= p <= bptr[i + 1]) whose
    column is at least t * tile, for t = 0 .. ntiles (the last is bptr[i + 1])."""
    cdef Py_ssize_t q1 = bptr.shape[0] - 1, i, t, p
    if cuts.shape[0] != q1 or cuts.shape[1] != ntiles + 1:
        raise ValueError("cuts must be (q1, ntiles + 1)")
    with nogil:
        for i in range(q1):
            p = bptr[i]
            for t in range(ntiles + 1):
                while p < bptr[i + 1] and bcol[p] < t * tile:
                    p += 1
                cuts[i, t] = p


def schur_subtract(const double[::1] bx, const int[::1] bcol, const int[:, ::1] cuts,
                   const int[:, ::1] pairs, double[:, ::1] S):
    """For each tile pair (ta, tb), tb <= ta, of ``pairs``: S[a, b] -= sum_i B[i, a] *
    B[i, b] over a in tile ta, b in tile tb, b <= a (rows i in order)."""
    cdef Py_ssize_t q1 = cuts.shape[0], npairs = pairs.shape[0], k, i, p, r, a, rend
    cdef int ta, tb
    cdef double va
    cdef double *row
    if pairs.shape[1] != 2:
        raise ValueError("pairs must be (npairs, 2)")
    for k in range(npairs):
        if not (0 <= pairs[k, 1] <= pairs[k, 0] < cuts.shape[1] - 1):
            raise ValueError("a tile pair must satisfy 0 <= tb <= ta < ntiles")
    with nogil:
        for k in range(npairs):
            ta, tb = pairs[k, 0], pairs[k, 1]
            for i in range(q1):
                for p in range(cuts[i, ta], cuts[i, ta + 1]):
                    a = bcol[p]
                    va = bx[p]
                    row = &S[a, 0]
                    rend = cuts[i, tb + 1]
                    if ta == tb:
                        rend = p + 1
                    for r in range(cuts[i, tb], rend):
                        row[bcol[r]] -= va * bx[r]


def on_pattern_product(const double[::1] bx, const int[::1] bptr, const int[::1] bcol,
                       const double[:, ::1] Sigma, double[::1] out):
    """out[p] = (B Sigma)[i, bcol[p]] for every entry p of B (row i): the sum over row i's
    entries r of bx[r] * Sigma[bcol[r], bcol[p]]; Sigma symmetric, q2 x q2."""
    cdef Py_ssize_t q1 = bptr.shape[0] - 1, i, p, r
    cdef double acc
    cdef const double *col
    if out.shape[0] != bx.shape[0] or Sigma.shape[0] != Sigma.shape[1]:
        raise ValueError("out must have one entry per entry of B, and Sigma be square")
    with nogil:
        for i in range(q1):
            for p in range(bptr[i], bptr[i + 1]):
                col = &Sigma[bcol[p], 0]  # Sigma's row bcol[p] = its column (symmetric)
                acc = 0.0
                for r in range(bptr[i], bptr[i + 1]):
                    acc = acc + bx[r] * col[bcol[r]]
                out[p] = acc


def level_rows_solve(const double[:, :, ::1] L, const double[::1] bx, const int[::1] bptr,
                     double[::1] out, bint transpose):
    """Per level l, the k rows l*k .. l*k + k - 1 of a CSR matrix (the same columns in
    each, so their entries line up): out = L_l^-1 B_l, or L_l^-T B_l if ``transpose``,
    with L (nlev, k, k) lower triangular. ``out`` has B's layout and may be ``bx``."""
    cdef Py_ssize_t nlev = L.shape[0], k = L.shape[1], l, a, c, t, length
    cdef Py_ssize_t[8] head
    cdef double v
    if L.shape[2] != k or bptr.shape[0] != nlev * k + 1 or k > 8:
        raise ValueError("L must be (nlev, k, k) with k <= 8 and bptr have nlev * k + 1 entries")
    if out.shape[0] != bx.shape[0]:
        raise ValueError("out must have B's entries")
    for l in range(nlev):
        for a in range(1, k):
            if bptr[l * k + a + 1] - bptr[l * k + a] != bptr[l * k + 1] - bptr[l * k]:
                raise ValueError(f"the rows of level {l} do not have the same columns")
    with nogil:
        for l in range(nlev):
            length = bptr[l * k + 1] - bptr[l * k]
            for a in range(k):
                head[a] = bptr[l * k + a]
            for t in range(length):
                if not transpose:
                    for a in range(k):
                        v = bx[head[a] + t]
                        for c in range(a):
                            v = v - L[l, a, c] * out[head[c] + t]
                        out[head[a] + t] = v / L[l, a, a]
                else:
                    for a in range(k - 1, -1, -1):
                        v = bx[head[a] + t]
                        for c in range(a + 1, k):
                            v = v - L[l, c, a] * out[head[c] + t]
                        out[head[a] + t] = v / L[l, a, a]
