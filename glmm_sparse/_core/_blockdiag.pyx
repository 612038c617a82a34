# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Kernels of a block-diagonal Cholesky factor: nlev lower-triangular k x k blocks.

M = Lambda'Z'WZ Lambda + I of a single random-effects term is block diagonal (one k x k
block per level), and so is its factor L. The blocks are stored as a C-ordered
(nlev, k, k) array; right-hand sides as C-ordered (nlev * k, m) arrays, so block l holds
rows l*k .. l*k + k - 1. Outputs are buffers allocated by the caller.
"""
import numpy as np
cimport numpy as cnp
from libc.math cimport log, sqrt

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


DEF LEVEL_CHUNK = 256  # levels factored before their products are formed (in L1/L2)


def level_update(const double[:, :, ::1] D, const double[:, ::1] T,
                 const double[:, ::1] C, double beta, double[:, :, ::1] L_out,
                 double[:, ::1] R, double[:, ::1] G, Py_ssize_t lo, Py_ssize_t hi):
    """One evaluation of a single term's objective (k = 1 or 2 columns) on its levels
    lo .. hi - 1, in one pass: for each level l (rows l*k .. l*k + k - 1 of C and R),

        M_l = T' D[l] T                                 (as _lambda.congruence_scatter)
        L_out[l] = chol(M_l + beta I)                   (as block_cholesky)
        R[l] = L_out[l]^-1 T' C[l]                      (as _lambda.lambdat_apply, then
                                                         block_lower_solve)

    with the same operations in the same order as those kernels (the same bits), and
    G = sum_l R[l]' R[l] (m x m, both triangles, overwritten; summed per chunk, the
    chunks' sums added in order). Returns (bad, logdet): bad is -1 or the first column
    (l * k + j) whose pivot is not positive, NaN included (the outputs are then
    incomplete), logdet = 2 sum log diag(L) over these levels (summed as G).

    The separate kernels and NumPy's R'R each make a pass over nlev blocks (70-90 ms an
    evaluation for 10^6 levels of k = 2). Here the levels go in chunks of LEVEL_CHUNK:
    the chunk's blocks are formed and factored, then its products formed while its
    factors are in cache.
    (Both steps level by level in one loop kept a level's chain of square roots and
    divisions from overlapping the next level's, and ran slower than the separate
    kernels.) Written out for k = 1 and 2, the common terms.
    """
    cdef Py_ssize_t nlev = D.shape[0], k = D.shape[1], m = C.shape[1]
    cdef Py_ssize_t l, col, a, b, r, end
    cdef Py_ssize_t bad = -1
    cdef double s, ld = 0.0, lc, m00, m01, m11, l00, l10, l11, r0, r1
    cdef double t00, t10, t11, c0, c1
    _require(k == 1 or k == 2, "level_update takes blocks of k = 1 or 2 columns")
    _require(D.shape[2] == k and m > 0, "D must be (nlev, k, k), C non-empty")
    _require(T.shape[0] == k and T.shape[1] == k, "T must be k x k")
    _require(L_out.shape[0] == nlev and L_out.shape[1] == k and L_out.shape[2] == k,
             "L_out must have the shape of D")
    _require(C.shape[0] == nlev * k and R.shape[0] == C.shape[0] and R.shape[1] == m,
             "C and R must be (nlev * k, m)")
    _require(0 <= lo <= hi <= nlev, "levels lo .. hi - 1 must lie within D's")
    _require(G.shape[0] == m and G.shape[1] == m, "G must be m x m")
    # G's sums (upper triangle): each chunk's in gc, added into g (then copied out); the
    # log-determinant likewise (lc into ld): blocked sums, whose rounding error grows with
    # chunks plus levels per chunk rather than with all levels
    cdef double[::1] gbuf = np.zeros(2 * m * m)
    cdef double *g = &gbuf[0]
    cdef double *gc = g + m * m
    t00 = T[0, 0]
    t10 = T[1, 0] if k == 2 else 0.0
    t11 = T[1, 1] if k == 2 else 0.0
    with nogil:
        while lo < hi and bad < 0:
            end = min(lo + LEVEL_CHUNK, hi)
            lc = 0.0
            for a in range(m * m):
                gc[a] = 0.0
            if k == 1:
                for l in range(lo, end):
                    m00 = t00 * D[l, 0, 0] * t00
                    s = m00 + beta
                    if not s > 0.0:
                        bad = l
                        break
                    L_out[l, 0, 0] = sqrt(s)
                if bad >= 0:
                    break
                for l in range(lo, end):
                    l00 = L_out[l, 0, 0]
                    lc += log(l00)
                    for col in range(m):
                        s = t00 * C[l, col]
                        R[l, col] = s / l00
                    for a in range(m):
                        r0 = R[l, a]
                        for b in range(a, m):
                            gc[a * m + b] += r0 * R[l, b]
            else:
                for l in range(lo, end):
                    # (T' D T)[i, j] summed over c >= i, col >= j as congruence_scatter
                    s = 0.0
                    s += t00 * D[l, 0, 0] * t00
                    s += t00 * D[l, 0, 1] * t10
                    s += t10 * D[l, 1, 0] * t00
                    s += t10 * D[l, 1, 1] * t10
                    m00 = s
                    s = 0.0
                    s += t00 * D[l, 0, 1] * t11
                    s += t10 * D[l, 1, 1] * t11
                    m01 = s
                    s = 0.0
                    s += t11 * D[l, 1, 1] * t11
                    m11 = s
                    s = m00 + beta
                    if not s > 0.0:
                        bad = 2 * l
                        break
                    l00 = sqrt(s)
                    l10 = m01 / l00
                    s = m11 + beta
                    s = s - l10 * l10
                    if not s > 0.0:
                        bad = 2 * l + 1
                        break
                    L_out[l, 0, 0] = l00
                    L_out[l, 0, 1] = 0.0
                    L_out[l, 1, 0] = l10
                    L_out[l, 1, 1] = sqrt(s)
                if bad >= 0:
                    break
                for l in range(lo, end):
                    r = 2 * l
                    l00, l10, l11 = L_out[l, 0, 0], L_out[l, 1, 0], L_out[l, 1, 1]
                    lc += log(l00)
                    lc += log(l11)
                    for col in range(m):
                        c0 = C[r, col]
                        c1 = C[r + 1, col]
                        s = 0.0
                        s += t00 * c0
                        s += t10 * c1
                        r0 = s / l00
                        R[r, col] = r0
                        s = 0.0
                        s += t11 * c1
                        s = s - l10 * r0
                        R[r + 1, col] = s / l11
                    for a in range(m):
                        r0 = R[r, a]
                        r1 = R[r + 1, a]
                        for b in range(a, m):
                            gc[a * m + b] += r0 * R[r, b] + r1 * R[r + 1, b]
            ld += lc
            for a in range(m * m):
                g[a] += gc[a]
            lo = end
        for a in range(m):
            for b in range(m):
                G[a, b] = g[a * m + b] if a <= b else g[b * m + a]
    return bad, 2.0 * ld
