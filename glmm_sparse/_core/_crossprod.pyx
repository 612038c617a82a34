# cython: language_level=3
"""One pass over the rows: the weighted cross-products of Z (implicit) with Z, X and y.

Z is never formed: a term is its level code per row and its k covariate values per row.
Each kernel adds into a caller-allocated buffer, so row chunks can be accumulated one
after another (or on different workers) and the sums added.
"""
import numpy as np
cimport numpy as cnp

cnp.import_array()


def add_term_diag(const cnp.int64_t[::1] codes, const double[:, ::1] Xt,
                  const double[::1] w, double[:, :, ::1] out):
    """out[g] += sum_{i: codes[i] = g} w_i x_i x_i'  (diagonal blocks of Z'WZ for a term)."""
    cdef Py_ssize_t n = codes.shape[0], k = Xt.shape[1], i, r, c
    cdef cnp.int64_t g
    cdef double wr
    _check_rows(n, Xt.shape[0], w.shape[0])
    _require(out.shape[1] == k and out.shape[2] == k, "out must be (nlev, k, k)")
    _check_codes(codes, out.shape[0])
    with nogil:
        for i in range(n):
            g = codes[i]
            for r in range(k):
                wr = w[i] * Xt[i, r]
                for c in range(k):
                    out[g, r, c] += wr * Xt[i, c]
    return None


def add_pair_blocks(const cnp.int64_t[::1] block, const double[:, ::1] Xt,
                    const double[:, ::1] Xs, const double[::1] w, double[:, :, ::1] out):
    """out[b] += sum_{i: block[i] = b} w_i xt_i xs_i'  (off-diagonal blocks of Z'WZ)."""
    cdef Py_ssize_t n = block.shape[0], kt = Xt.shape[1], ks = Xs.shape[1], i, r, c
    cdef cnp.int64_t b
    cdef double wr
    _check_rows(n, Xt.shape[0], w.shape[0])
    _require(Xs.shape[0] == n, "Xs must have one row per row of block")
    _require(out.shape[1] == kt and out.shape[2] == ks, "out must be (nblocks, k_t, k_s)")
    _check_codes(block, out.shape[0])
    with nogil:
        for i in range(n):
            b = block[i]
            for r in range(kt):
                wr = w[i] * Xt[i, r]
                for c in range(ks):
                    out[b, r, c] += wr * Xs[i, c]
    return None


def add_term_cross(const cnp.int64_t[::1] codes, const double[:, ::1] Xt,
                   const double[:, ::1] B, const double[::1] w, double[:, ::1] out):
    """out[g k + r, :] += sum_{i: codes[i] = g} w_i Xt[i, r] B[i, :]  (rows of Z'W[X y])."""
    cdef Py_ssize_t n = codes.shape[0], k = Xt.shape[1], m = B.shape[1], i, r, c
    cdef cnp.int64_t row
    cdef double wr
    _check_rows(n, Xt.shape[0], w.shape[0])
    _require(B.shape[0] == n and out.shape[1] == m and out.shape[0] % max(k, 1) == 0,
             "B must have n rows and out (nlev * k, B.shape[1])")
    _check_codes(codes, out.shape[0] // max(k, 1))
    with nogil:
        for i in range(n):
            row = codes[i] * k
            for r in range(k):
                wr = w[i] * Xt[i, r]
                for c in range(m):
                    out[row + r, c] += wr * B[i, c]
    return None


def add_weighted_gram(const double[:, ::1] B, const double[::1] w, double[:, ::1] out):
    """out += B' W B (upper triangle and mirror), for the p + 1 columns of [X y]."""
    cdef Py_ssize_t n = B.shape[0], m = B.shape[1], i, r, c
    cdef double wr
    _require(w.shape[0] == n and out.shape[0] == m and out.shape[1] == m,
             "w must have n entries and out be (m, m)")
    with nogil:
        for i in range(n):
            for r in range(m):
                wr = w[i] * B[i, r]
                for c in range(r, m):
                    out[r, c] += wr * B[i, c]
        for r in range(m):
            for c in range(r):
                out[r, c] = out[c, r]
    return None


cdef _require(bint ok, str message):
    if not ok:
        raise ValueError(message)


cdef _check_rows(Py_ssize_t n, Py_ssize_t nx, Py_ssize_t nw):
    _require(nx == n and nw == n, "codes, covariates and weights must have the same rows")


cdef _check_codes(const cnp.int64_t[::1] codes, Py_ssize_t nlev):
    """Level codes index the output: every one must lie in [0, nlev) (kernels skip bounds checks)."""
    if codes.shape[0]:
        arr = np.asarray(codes)
        _require(arr.min() >= 0 and arr.max() < nlev, f"codes must lie in [0, {nlev})")


def add_term_times(const cnp.int64_t[::1] codes, const double[:, ::1] Xt,
                   const double[:, ::1] b, double[::1] out):
    """out[i] += sum_r Xt[i, r] b[codes[i], r]  (Z_t b for one term, Z implicit)."""
    cdef Py_ssize_t n = codes.shape[0], k = Xt.shape[1], i, r
    cdef double s
    cdef cnp.int64_t g
    _require(Xt.shape[0] == n and out.shape[0] == n and b.shape[1] == k,
             "codes, Xt and out must have n rows and b k columns")
    _check_codes(codes, b.shape[0])
    with nogil:
        for i in range(n):
            g = codes[i]
            s = 0.0
            for r in range(k):
                s += Xt[i, r] * b[g, r]
            out[i] += s
    return None
