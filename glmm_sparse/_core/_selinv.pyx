# cython: language_level=3
"""Selected inverse: entries of M^-1 on the pattern of its Cholesky factor L (Takahashi).

Used once per fit for the conditional variances of the random effects: the diagonal
k x k blocks of M^-1 lie inside the pattern of L + L', so no dense inverse is formed.
"""
import numpy as np
cimport numpy as cnp

cnp.import_array()


def selected_inverse(const cnp.int64_t[::1] indptr, const cnp.int64_t[::1] indices,
                     const double[::1] Lx):
    """Zx with Z = (L L')^-1 restricted to the (lower) pattern of L, same layout as Lx.

    L is lower triangular CSC with sorted rows and the diagonal first in each column.
    Z L = L^-T gives, for column j and i in struct(L[:, j]) (rows > j, set S_j):
        Z[i, j] = -sum_{k in S_j} Z[i, k] L[k, j] / L[j, j]
        Z[j, j] = (1 / L[j, j] - sum_{k in S_j} Z[k, j] L[k, j]) / L[j, j]
    computed for j from n-1 down; S_j is a clique of the filled graph, so every Z[i, k]
    needed is stored, in column min(i, k).
    """
    cdef Py_ssize_t n = indptr.shape[0] - 1
    Z = np.zeros(Lx.shape[0], dtype=np.float64)
    cdef double[::1] Zx = Z
    acc_arr = np.zeros(n, dtype=np.float64)
    pos_arr = np.full(n, -1, dtype=np.int64)
    cdef double[::1] acc = acc_arr
    cdef cnp.int64_t[::1] pos = pos_arr      # pos[row] = slot of row in column j, or -1
    cdef Py_ssize_t j, a, b, c, t, p0, p1, ra, rb
    cdef double ljj, lb, s, z
    with nogil:
        for j in range(n - 1, -1, -1):
            p0 = indptr[j]
            p1 = indptr[j + 1]
            ljj = Lx[p0]
            for a in range(p0 + 1, p1):
                pos[indices[a]] = a
                acc[indices[a]] = 0.0
            # acc[i] = sum_{k in S_j} Z[i, k] L[k, j] for i in S_j, column by column of Z
            for b in range(p0 + 1, p1):
                rb = indices[b]
                lb = Lx[b]
                c = indptr[rb]
                # diagonal of column rb: Z[rb, rb] L[rb, j]
                acc[rb] += Zx[c] * lb
                for t in range(c + 1, indptr[rb + 1]):
                    ra = indices[t]
                    if pos[ra] >= 0:
                        z = Zx[t]                   # Z[ra, rb], ra > rb
                        acc[ra] += z * lb           # contributes to row ra via k = rb
                        acc[rb] += z * Lx[pos[ra]]  # and to row rb via k = ra (symmetry)
            s = 0.0
            for a in range(p0 + 1, p1):
                ra = indices[a]
                Zx[a] = -acc[ra] / ljj
                s += Zx[a] * Lx[a]
                pos[ra] = -1
            Zx[p0] = (1.0 / ljj - s) / ljj
    return Z
