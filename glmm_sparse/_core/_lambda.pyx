# cython: language_level=3
"""Lambda(theta) applied blockwise: Lambda is block diagonal, I_levels (x) T per term.

Every kernel works on one term (or one pair of terms) at a time; the Python layer loops
over terms. Outputs are buffers allocated by the caller.
"""
import numpy as np
cimport numpy as cnp

cnp.import_array()


def congruence_scatter(const double[:, :, ::1] A, const double[:, ::1] Tr,
                       const double[:, ::1] Tc, const cnp.int64_t[:, :, ::1] pos,
                       double[::1] out):
    """out[pos[b, r, c]] = (Tr' A[b] Tc)[r, c] for every block b and pos >= 0.

    Blocks of Lambda' A_ZZ Lambda: A[b] is the kr x kc block of Z'WZ for one pair of
    levels, Tr and Tc the relative covariance factors of the row and column terms.
    """
    cdef Py_ssize_t nb = A.shape[0], kr = A.shape[1], kc = A.shape[2]
    cdef Py_ssize_t b, r, c, i, j
    cdef double s
    _require(Tr.shape[0] == kr and Tr.shape[1] == kr and Tc.shape[0] == kc and Tc.shape[1] == kc,
             "Tr, Tc must be square with the block's row and column sizes")
    _require(pos.shape[0] == nb and pos.shape[1] == kr and pos.shape[2] == kc,
             "pos must have the shape of A")
    if nb and kr and kc:
        _require(np.max(pos) < out.shape[0], "pos points past the end of out")
    cdef double tr, tc
    if kr == 1 and kc == 1:  # scalar terms: one product per block, no loop nest
        tr, tc = Tr[0, 0], Tc[0, 0]
        with nogil:
            for b in range(nb):
                if pos[b, 0, 0] >= 0:
                    out[pos[b, 0, 0]] = tr * A[b, 0, 0] * tc  # the rounding of the sum below
        return None
    with nogil:
        for b in range(nb):
            for r in range(kr):
                for c in range(kc):
                    if pos[b, r, c] < 0:
                        continue
                    s = 0.0
                    # (Tr' A Tc)[r, c] = sum_i sum_j Tr[i, r] A[i, j] Tc[j, c]; T lower triangular
                    for i in range(r, kr):
                        for j in range(c, kc):
                            s += Tr[i, r] * A[b, i, j] * Tc[j, c]
                    out[pos[b, r, c]] = s
    return None


def lambdat_apply(const double[:, ::1] T, const double[:, ::1] B, double[:, ::1] out):
    """out = (I (x) T') B: for each level block of k rows, out_blk = T' B_blk."""
    _check_apply(T, B, out)
    cdef Py_ssize_t k = T.shape[0], m = B.shape[1], nlev = B.shape[0] // k
    cdef Py_ssize_t a, r, c, col
    cdef double s
    with nogil:
        for a in range(nlev):
            for r in range(k):
                for col in range(m):
                    s = 0.0
                    for c in range(r, k):
                        s += T[c, r] * B[a * k + c, col]
                    out[a * k + r, col] = s
    return None


def lambda_apply(const double[:, ::1] T, const double[:, ::1] B, double[:, ::1] out):
    """out = (I (x) T) B: for each level block of k rows, out_blk = T B_blk."""
    _check_apply(T, B, out)
    cdef Py_ssize_t k = T.shape[0], m = B.shape[1], nlev = B.shape[0] // k
    cdef Py_ssize_t a, r, c, col
    cdef double s
    with nogil:
        for a in range(nlev):
            for r in range(k):
                for col in range(m):
                    s = 0.0
                    for c in range(r + 1):
                        s += T[r, c] * B[a * k + c, col]
                    out[a * k + r, col] = s
    return None


cdef _require(bint ok, str message):
    if not ok:
        raise ValueError(message)


cdef _check_apply(const double[:, ::1] T, const double[:, ::1] B, double[:, ::1] out):
    """Shapes the level-block kernels rely on (they run without bounds checks)."""
    _require(T.shape[0] == T.shape[1] and T.shape[0] > 0, "T must be square and non-empty")
    _require(B.shape[0] % T.shape[0] == 0, "B's rows must be whole blocks of k = T.shape[0]")
    _require(out.shape[0] == B.shape[0] and out.shape[1] == B.shape[1], "out must match B")
