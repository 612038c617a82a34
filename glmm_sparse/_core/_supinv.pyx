# cython: language_level=3
"""Supernodal selected inverse: M^-1 on the pattern of CHOLMOD's supernodal factor L.

The SelInv scheme (Lin, Yang, Meza, Lu, Ying & E 2011, ACM TOMS 37(4)) on CHOLMOD's
supernodal storage, with BLAS on the dense blocks. Supernode J holds columns
super[J] .. super[J+1]-1 of L; its rows are s[pi[J] .. pi[J+1]], the nscol columns
themselves first, then the rows R below them (sorted); its values are an nsrow x nscol
column-major block at x[px[J]]: L_JJ (lower triangular) on top of L_RJ. With Z = M^-1
(permuted) and supernodes taken from last to first,

    Y    = L_RJ L_JJ^-1
    Z_RJ = -Z_RR Y
    Z_JJ = L_JJ^-T L_JJ^-1 - Y' Z_RJ

Z_RR is gathered from the blocks of later supernodes, already computed: R is a clique
of the filled graph, so every (a, b) of R with a >= b lies in b's supernode. Z is
returned in L's layout; the diagonal block holds the whole symmetric Z_JJ.

The BLAS and LAPACK are SciPy's (their Cython capsules, looked up at import, so the
build needs no SciPy headers); the kernel runs without the GIL on the calling thread.
"""
import numpy as np
cimport numpy as cnp
from glmm_sparse._core._capsules cimport capsule_pointer
from libc.string cimport memcpy
from scipy.linalg import cython_blas as _blas, cython_lapack as _lapack

cnp.import_array()

ctypedef void (*trsm_t)(char *side, char *uplo, char *transa, char *diag, int *m, int *n,
                        double *alpha, double *a, int *lda, double *b, int *ldb) noexcept nogil
ctypedef void (*symm_t)(char *side, char *uplo, int *m, int *n, double *alpha, double *a,
                        int *lda, double *b, int *ldb, double *beta, double *c,
                        int *ldc) noexcept nogil
ctypedef void (*gemm_t)(char *transa, char *transb, int *m, int *n, int *k, double *alpha,
                        double *a, int *lda, double *b, int *ldb, double *beta, double *c,
                        int *ldc) noexcept nogil
ctypedef void (*trtri_t)(char *uplo, char *diag, int *n, double *a, int *lda,
                         int *info) noexcept nogil
ctypedef void (*lauum_t)(char *uplo, int *n, double *a, int *lda, int *info) noexcept nogil


cdef trsm_t dtrsm = <trsm_t> capsule_pointer(_blas, "dtrsm")
cdef symm_t dsymm = <symm_t> capsule_pointer(_blas, "dsymm")
cdef gemm_t dgemm = <gemm_t> capsule_pointer(_blas, "dgemm")
cdef trtri_t dtrtri = <trtri_t> capsule_pointer(_lapack, "dtrtri")
cdef lauum_t dlauum = <lauum_t> capsule_pointer(_lapack, "dlauum")


def column_supernodes(const int[::1] super_):
    """s[j] = the supernode holding column j (int32, length super_[-1])."""
    cdef Py_ssize_t nsuper = super_.shape[0] - 1
    out = np.empty(super_[nsuper] if nsuper >= 0 else 0, dtype=np.int32)
    cdef int[::1] o = out
    cdef Py_ssize_t J, j
    for J in range(nsuper):
        for j in range(super_[J], super_[J + 1]):
            o[j] = <int> J
    return out


def scratch_sizes(const int[::1] super_, const int[::1] pi):
    """(largest nr, largest nr * nscol) over the supernodes: the kernel's scratch sizes."""
    cdef Py_ssize_t J, nscol, nr, most_r = 0, most_y = 0
    for J in range(super_.shape[0] - 1):
        nscol = super_[J + 1] - super_[J]
        nr = pi[J + 1] - pi[J] - nscol
        most_r = max(most_r, nr)
        most_y = max(most_y, nr * nscol)
    return most_r, most_y


cdef int _diagonal_inverse(const double *L, double *Z, int nscol, int ld) noexcept nogil:
    """Z_JJ = L_JJ^-T L_JJ^-1 (lower part), both blocks with leading dimension ld."""
    cdef int c, info = 0
    for c in range(nscol):
        memcpy(&Z[c * ld + c], &L[c * ld + c], (nscol - c) * sizeof(double))
    dtrtri(b"L", b"N", &nscol, Z, &ld, &info)      # lower part of Z_JJ = L_JJ^-1
    if info != 0:
        return info
    dlauum(b"L", &nscol, Z, &ld, &info)            # lower part of Z_JJ = L_JJ^-T L_JJ^-1
    return info


cdef void _gather_ZRR(const int *R, int nr, const int *super_, const int *pi,
                      const int *px, const int *s, const int *colsup, const double *Z,
                      int *kmap, int *mapped, double *Zrr) noexcept nogil:
    """Zrr[a, b] = Z[R[a], R[b]] for a >= b, from R[b]'s supernode K (column-major, ld nr).

    kmap[row] = position of row in K's row list, refreshed only when K changes (mapped[0]
    is the supernode it holds now); rows of other supernodes may hold stale positions,
    and only rows of K are looked up.
    """
    cdef int a, b, p, K, nsrowK, rb
    cdef const double *col
    for b in range(nr):
        rb = R[b]
        K = colsup[rb]
        nsrowK = pi[K + 1] - pi[K]
        if K != mapped[0]:
            for p in range(nsrowK):
                kmap[s[pi[K] + p]] = p
            mapped[0] = K
        col = &Z[px[K] + (rb - super_[K]) * nsrowK]   # column rb of Z in K's block
        for a in range(b, nr):
            Zrr[<Py_ssize_t> b * nr + a] = col[kmap[R[a]]]


cdef void _mirror_lower(double *Z, int nscol, int ld) noexcept nogil:
    """Copy the strictly lower part of the nscol x nscol block to its upper part."""
    cdef int a, b
    for b in range(nscol):
        for a in range(b + 1, nscol):
            Z[a * ld + b] = Z[b * ld + a]


def supernodal_selected_inverse(const int[::1] super_, const int[::1] pi, const int[::1] px,
                                const int[::1] s, const double[::1] Lx, double[::1] Zx):
    """Zx = M^-1 on the pattern of the supernodal factor (L's layout), M = L L'.

    super_, pi, px, s, Lx are CHOLMOD's L->super, L->pi, L->px, L->s and L->x (LL', real);
    Zx, as long as Lx, is overwritten. Raises ValueError if a diagonal block is singular
    (naming the supernode), which a factor of a positive definite M never has.
    """
    cdef int nsuper = super_.shape[0] - 1
    if pi.shape[0] != nsuper + 1 or px.shape[0] != nsuper + 1:
        raise ValueError("super_, pi and px must all have nsuper + 1 entries")
    if Zx.shape[0] != Lx.shape[0] or (nsuper > 0 and Lx.shape[0] < px[nsuper]):
        raise ValueError(f"Lx and Zx must both hold px[nsuper] = {px[nsuper]} values")
    if nsuper == 0:
        return
    cdef int n = super_[nsuper]
    colsup_arr = column_supernodes(super_)
    most_r, most_y = scratch_sizes(super_, pi)
    Zrr_arr = np.empty(max(most_r * most_r, 1), dtype=np.float64)
    Y_arr = np.empty(max(most_y, 1), dtype=np.float64)
    kmap_arr = np.zeros(max(n, 1), dtype=np.int32)
    cdef int[::1] colsup = colsup_arr
    cdef double[::1] Zrr = Zrr_arr
    cdef double[::1] Y = Y_arr
    cdef int[::1] kmap = kmap_arr
    cdef int J, c, nscol, nsrow, nr, info = 0, failed = -1
    cdef int mapped = -1
    cdef double one = 1.0, minus_one = -1.0, zero = 0.0
    cdef const double *L
    cdef double *Z
    with nogil:
        for J in range(nsuper - 1, -1, -1):
            nscol = super_[J + 1] - super_[J]
            nsrow = pi[J + 1] - pi[J]
            nr = nsrow - nscol
            L = &Lx[px[J]]
            Z = &Zx[px[J]]
            info = _diagonal_inverse(L, Z, nscol, nsrow)
            if info != 0:
                failed = J
                break
            if nr > 0:
                # Y = L_RJ L_JJ^-1  (nr x nscol, ld nr)
                for c in range(nscol):
                    memcpy(&Y[c * nr], &L[c * nsrow + nscol], nr * sizeof(double))
                dtrsm(b"R", b"L", b"N", b"N", &nr, &nscol, &one, <double *> L, &nsrow,
                      &Y[0], &nr)
                _gather_ZRR(&s[pi[J] + nscol], nr, &super_[0], &pi[0], &px[0], &s[0],
                            &colsup[0], &Zx[0], &kmap[0], &mapped, &Zrr[0])
                # Z_RJ = -Z_RR Y  (Z_RR symmetric, lower part stored)
                dsymm(b"L", b"L", &nr, &nscol, &minus_one, &Zrr[0], &nr, &Y[0], &nr,
                      &zero, &Z[nscol], &nsrow)
                # Z_JJ = Z_JJ - Y' Z_RJ
                dgemm(b"T", b"N", &nscol, &nscol, &nr, &minus_one, &Y[0], &nr, &Z[nscol],
                      &nsrow, &one, Z, &nsrow)
            _mirror_lower(Z, nscol, nsrow)
    if failed >= 0:
        raise ValueError(f"diagonal block of supernode {failed} is singular (LAPACK info "
                         f"{info}): not the factor of a positive definite matrix")


def supernodal_positions(const int[::1] super_, const int[::1] pi, const int[::1] px,
                         const int[::1] s, const int[::1] colsup,
                         const cnp.int64_t[::1] i, const cnp.int64_t[::1] j,
                         cnp.int64_t[::1] out):
    """out[k] = index in L->x of entry (i[k], j[k]), i >= j permuted, or -1 off the pattern.

    Column j lies in supernode K = colsup[j]; row i is found by bisection in K's sorted
    row list from j's own position on.
    """
    cdef Py_ssize_t m = i.shape[0], k
    if j.shape[0] != m or out.shape[0] != m:
        raise ValueError(f"i, j and out must have the same length, got {m}, {j.shape[0]}, "
                         f"{out.shape[0]}")
    cdef Py_ssize_t n = colsup.shape[0]
    cdef int K, lo, hi, mid, first
    cdef cnp.int64_t row, col
    with nogil:
        for k in range(m):
            row = i[k]
            col = j[k]
            if col < 0 or row < col or row >= n:
                out[k] = -1
                continue
            K = colsup[col]
            first = pi[K] + <int> (col - super_[K])     # col's own row position
            lo = first
            hi = pi[K + 1]
            while lo < hi:
                mid = (lo + hi) >> 1
                if s[mid] < row:
                    lo = mid + 1
                else:
                    hi = mid
            if lo < pi[K + 1] and s[lo] == row:
                out[k] = px[K] + <cnp.int64_t> (col - super_[K]) * (pi[K + 1] - pi[K]) \
                    + (lo - pi[K])
            else:
                out[k] = -1
