# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Kernels of a block-diagonal Cholesky factor: nlev lower-triangular k x k blocks.

M = Lambda'Z'WZ Lambda + I of a single random-effects term is block diagonal (one k x k
block per level), and so is its factor L. The blocks are stored as a C-ordered
(nlev, k, k) array; right-hand sides as C-ordered (nlev * k, m) arrays, so block l holds
rows l*k .. l*k + k - 1. Outputs are buffers allocated by the caller.
"""
import numpy as np
cimport numpy as cnp
from libc.math cimport sqrt

cnp.import_array()


def _require(ok, message):
    if not ok:
        raise ValueError(message)


def block_cholesky(const double[::1] values, const cnp.int64_t[:, :, ::1] pos, double beta,
                   double[:, :, ::1] L_out):
    """L_out[l] = chol(B_l + beta I), lower, with B_l[i, j] = values[pos[l, min, max]];
    returns -1, or the first column (l * k + j) whose pivot is not positive.

    pos holds, per level, the positions of the block's upper-triangle entries in
    ``values`` (M's stored upper triangle); the lower triangle mirrors it.
    """
    cdef Py_ssize_t nlev = pos.shape[0], k = pos.shape[1], l, i, j, c
    cdef Py_ssize_t n = values.shape[0]
    cdef Py_ssize_t bad = -1
    cdef bint outside = False
    cdef double s
    _require(pos.shape[2] == k, "pos must be (nlev, k, k)")
    _require(L_out.shape[0] == nlev and L_out.shape[1] == k and L_out.shape[2] == k,
             "L_out must have the shape of pos")
    with nogil:
        for l in range(nlev):  # every upper position inside values, before any is read
            for j in range(k):
                for i in range(j, k):
                    if pos[l, j, i] < 0 or pos[l, j, i] >= n:
                        outside = True
        if outside:
            nlev = 0
        for l in range(nlev):
            for j in range(k):
                # pivot: B[j, j] + beta - sum_c L[j, c]^2
                s = values[pos[l, j, j]] + beta
                for c in range(j):
                    s = s - L_out[l, j, c] * L_out[l, j, c]
                if not s > 0.0:
                    bad = l * k + j
                    break
                L_out[l, j, j] = sqrt(s)
                for i in range(j):
                    L_out[l, i, j] = 0.0
                for i in range(j + 1, k):
                    # L[i, j] = (B[i, j] - sum_c L[i, c] L[j, c]) / L[j, j]
                    s = values[pos[l, j, i]]
                    for c in range(j):
                        s = s - L_out[l, i, c] * L_out[l, j, c]
                    L_out[l, i, j] = s / L_out[l, j, j]
            if bad >= 0:
                break
    _require(not outside, "pos points outside values above the diagonal")
    return bad


def block_lower_solve(const double[:, :, ::1] L, const double[:, ::1] B, double[:, ::1] X):
    """X = L^-1 B, block by block (forward substitution); X may not alias B."""
    cdef Py_ssize_t nlev = L.shape[0], k = L.shape[1], m = B.shape[1], l, i, c, col, r
    cdef double s
    _require(L.shape[2] == k, "L must be (nlev, k, k)")
    _require(B.shape[0] == nlev * k and X.shape[0] == B.shape[0] and X.shape[1] == m,
             "B and X must be (nlev * k, m)")
    with nogil:
        for l in range(nlev):
            r = l * k
            for i in range(k):
                for col in range(m):
                    s = B[r + i, col]
                    for c in range(i):
                        s = s - L[l, i, c] * X[r + c, col]
                    X[r + i, col] = s / L[l, i, i]


def block_upper_solve(const double[:, :, ::1] L, const double[:, ::1] B, double[:, ::1] X):
    """X = L'^-1 B, block by block (back substitution); X may not alias B."""
    cdef Py_ssize_t nlev = L.shape[0], k = L.shape[1], m = B.shape[1], l, i, c, col, r
    cdef double s
    _require(L.shape[2] == k, "L must be (nlev, k, k)")
    _require(B.shape[0] == nlev * k and X.shape[0] == B.shape[0] and X.shape[1] == m,
             "B and X must be (nlev * k, m)")
    with nogil:
        for l in range(nlev):
            r = l * k
            for i in range(k - 1, -1, -1):
                for col in range(m):
                    s = B[r + i, col]
                    for c in range(i + 1, k):
                        s = s - L[l, c, i] * X[r + c, col]
                    X[r + i, col] = s / L[l, i, i]
