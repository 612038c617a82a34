# cython: language_level=3
"""Sparse Cholesky of M = A + beta * I with a fixed pattern: analyse once, refactor per theta.

The symmetric matrix is stored as its upper triangle in CSC (CHOLMOD stype = 1). The pattern
is given once at construction; ``factorize`` only copies new values in, so a zero value never
prunes structure. CHOLMOD's status becomes a typed exception here, and CHOLMOD prints nothing.
"""
import numpy as np
cimport numpy as cnp
from libc.string cimport memcpy

cnp.import_array()


cdef extern from "glmm_cholmod.h":
    ctypedef struct cholmod_common:
        int supernodal
        int final_ll
        int print "print"
        int status
        int quick_return_if_not_posdef
        void (*error_handler)(int, const char *, int, const char *)
        int nmethods
        int postorder
        size_t memory_usage
        size_t memory_inuse

    ctypedef struct cholmod_sparse:
        size_t nrow
        size_t ncol
        size_t nzmax
        void *p
        void *i
        void *x
        int stype
        int sorted
        int packed

    ctypedef struct cholmod_factor:
        size_t n
        size_t minor
        void *Perm
        int is_super
        int is_ll
        size_t maxcsize
        size_t nsuper
        void *super_ "super"
        void *pi
        void *px
        void *s
        void *x

    ctypedef struct cholmod_dense:
        size_t nrow
        size_t ncol
        size_t nzmax
        size_t d
        void *x
        void *z
        int xtype
        int dtype

    int CHOLMOD_REAL, CHOLMOD_DOUBLE, CHOLMOD_INT, CHOLMOD_SUPERNODAL, CHOLMOD_SIMPLICIAL, CHOLMOD_AUTO
    int CHOLMOD_OK, CHOLMOD_NOT_POSDEF, CHOLMOD_OUT_OF_MEMORY
    int CHOLMOD_A, CHOLMOD_L, CHOLMOD_Lt, CHOLMOD_P, CHOLMOD_Pt

    int cholmod_start(cholmod_common *c)
    int cholmod_finish(cholmod_common *c)
    cholmod_sparse *cholmod_allocate_sparse(size_t nrow, size_t ncol, size_t nzmax, int sorted,
                                            int packed, int stype, int xtype, cholmod_common *c)
    int cholmod_free_sparse(cholmod_sparse **A, cholmod_common *c)
    cholmod_factor *cholmod_analyze(cholmod_sparse *A, cholmod_common *c) nogil
    int cholmod_factorize_p(cholmod_sparse *A, double *beta, int *fset, size_t fsize,
                            cholmod_factor *L, cholmod_common *c) nogil
    int cholmod_free_factor(cholmod_factor **L, cholmod_common *c)
    cholmod_factor *cholmod_copy_factor(cholmod_factor *L, cholmod_common *c)
    int cholmod_change_factor(int to_xtype, int to_ll, int to_super, int to_packed,
                              int to_monotonic, cholmod_factor *L, cholmod_common *c)
    cholmod_sparse *cholmod_factor_to_sparse(cholmod_factor *L, cholmod_common *c)
    cholmod_dense *cholmod_solve(int sys, cholmod_factor *L, cholmod_dense *B,
                                 cholmod_common *c) nogil
    int cholmod_free_dense(cholmod_dense **X, cholmod_common *c)

    void glmm_cholmod_silent_handler(int status, const char *file, int line, const char *msg)
    void glmm_cholmod_set_ordering(cholmod_common *c, int ordering)
    void glmm_cholmod_serial_begin() nogil
    void glmm_cholmod_serial_end() nogil
    double glmm_cholmod_logdet(const cholmod_factor *L)
    double glmm_cholmod_factor_nnz(const cholmod_factor *L)


class CholmodError(RuntimeError):
    """CHOLMOD reported a failure (out of memory, invalid input)."""


class CholmodNotPositiveDefiniteError(CholmodError):
    """The matrix is not positive definite; ``column`` is where the factorization stopped."""

    def __init__(self, message, column):
        super().__init__(message)
        self.column = column


_SYSTEMS = {"A": 0, "L": 4, "Lt": 5, "P": 7, "Pt": 8}
# fill-reducing orderings (CHOLMOD's codes); "default" is CHOLMOD's own strategy
ORDERINGS = {"default": -1, "natural": 0, "amd": 2, "metis": 3, "nesdis": 4}


cdef class SymbolicFactor:
    """CHOLMOD factor of an n x n symmetric matrix with a fixed upper-triangular CSC pattern."""

    cdef cholmod_common c
    cdef cholmod_sparse *A
    cdef cholmod_factor *L
    cdef readonly Py_ssize_t n
    cdef readonly Py_ssize_t nnz
    cdef readonly bint is_factorized

    def __cinit__(self):
        self.A = NULL
        self.L = NULL
        cholmod_start(&self.c)
        self.c.print = 0
        self.c.error_handler = glmm_cholmod_silent_handler
        self.c.supernodal = CHOLMOD_SUPERNODAL
        self.c.final_ll = 1
        self.c.quick_return_if_not_posdef = 1

    def __init__(self, indptr, indices, Py_ssize_t n, str mode="auto", str ordering="default"):
        """Analyse the pattern (indptr, indices) of the upper triangle, CSC, n x n.

        mode: "supernodal", "simplicial" or "auto" (CHOLMOD's choice from the flop count).
        ordering: "default" (CHOLMOD's strategy), "natural" (no fill-reducing permutation;
        etree postordering only), "amd", "metis" or "nesdis".
        """
        modes = {"auto": CHOLMOD_AUTO, "supernodal": CHOLMOD_SUPERNODAL,
                 "simplicial": CHOLMOD_SIMPLICIAL}
        if mode not in modes:
            raise ValueError(f"mode must be one of {sorted(modes)}, not {mode!r}")
        if ordering not in ORDERINGS:
            raise ValueError(f"ordering must be one of {sorted(ORDERINGS)}, not {ordering!r}")
        self.c.supernodal = modes[mode]
        glmm_cholmod_set_ordering(&self.c, ORDERINGS[ordering])
        cdef int[::1] p = np.ascontiguousarray(indptr, dtype=np.int32)
        cdef int[::1] i = np.ascontiguousarray(indices, dtype=np.int32)
        _check_pattern(np.asarray(p), np.asarray(i), n)
        self.n = n
        self.nnz = p[n]
        self.A = cholmod_allocate_sparse(n, n, max(self.nnz, 1), 1, 1, 1, CHOLMOD_REAL, &self.c)
        self._check("allocate")
        memcpy(self.A.p, &p[0], (n + 1) * sizeof(int))
        if self.nnz:
            memcpy(self.A.i, &i[0], self.nnz * sizeof(int))
        # M = Lambda'ALambda + I is positive definite for any theta; analyse with unit values
        cdef double *ax = <double *> self.A.x
        cdef Py_ssize_t k
        for k in range(self.nnz):
            ax[k] = 1.0
        with nogil:
            self.L = cholmod_analyze(self.A, &self.c)
        self._check("analyze")
        self.is_factorized = False

    def __dealloc__(self):
        if self.L != NULL:
            cholmod_free_factor(&self.L, &self.c)
        if self.A != NULL:
            cholmod_free_sparse(&self.A, &self.c)
        cholmod_finish(&self.c)

    cdef _check(self, str step):
        if self.c.status == CHOLMOD_OUT_OF_MEMORY:
            raise MemoryError(f"CHOLMOD ran out of memory in {step} (n = {self.n}, nnz = {self.nnz})")
        if self.c.status < CHOLMOD_OK:
            raise CholmodError(f"CHOLMOD failed in {step} with status {self.c.status}")

    def factorize(self, values, double beta=0.0):
        """L L' = P (A + beta I) P' for the stored pattern with these values (length nnz)."""
        cdef double[::1] v = np.ascontiguousarray(values, dtype=np.float64)
        if v.shape[0] != self.nnz:
            raise ValueError(f"expected {self.nnz} values, got {v.shape[0]}")
        if self.nnz:
            memcpy(self.A.x, &v[0], self.nnz * sizeof(double))
        cdef double b[2]
        b[0] = beta
        b[1] = 0.0
        self.is_factorized = False
        with nogil:
            glmm_cholmod_serial_begin()
            cholmod_factorize_p(self.A, b, NULL, 0, self.L, &self.c)
            glmm_cholmod_serial_end()
        if self.c.status == CHOLMOD_NOT_POSDEF:
            raise CholmodNotPositiveDefiniteError(
                f"matrix not positive definite at column {self.L.minor}", int(self.L.minor))
        self._check("factorize")
        self.is_factorized = True

    cdef _require_numeric(self):
        if not self.is_factorized:
            raise CholmodError("no numeric factorization: call factorize() first")

    def logdet(self):
        """log det(A + beta I) = 2 sum log diag(L)."""
        self._require_numeric()
        return glmm_cholmod_logdet(self.L)

    def solve(self, str system, B):
        """X solving `system` (one of "A", "L", "Lt", "P", "Pt") for the dense right side B."""
        self._require_numeric()
        if system not in _SYSTEMS:
            raise ValueError(f"unknown system {system!r}; use one of {sorted(_SYSTEMS)}")
        arr = np.asarray(B, dtype=np.float64)
        vector = arr.ndim == 1
        cdef cnp.ndarray[double, ndim=2, mode="fortran"] b = np.asfortranarray(
            arr.reshape(-1, 1) if vector else arr)
        if b.shape[0] != self.n:
            raise ValueError(f"right side has {b.shape[0]} rows, factor has {self.n}")
        out = np.empty((self.n, b.shape[1]), dtype=np.float64, order="F")
        if b.shape[1] == 0 or self.n == 0:
            return out[:, 0] if vector else out
        cdef cholmod_dense bd
        bd.nrow = self.n
        bd.ncol = b.shape[1]
        bd.nzmax = self.n * b.shape[1]
        bd.d = self.n
        bd.x = <void *> b.data
        bd.z = NULL
        bd.xtype = CHOLMOD_REAL
        bd.dtype = CHOLMOD_DOUBLE
        cdef int sys = _SYSTEMS[system]
        cdef cholmod_dense *x
        with nogil:
            x = cholmod_solve(sys, self.L, &bd, &self.c)
        if x == NULL:
            self._check("solve")
            raise CholmodError("CHOLMOD solve returned nothing")
        cdef cnp.ndarray[double, ndim=2, mode="fortran"] o = out
        memcpy(o.data, x.x, self.n * b.shape[1] * sizeof(double))
        cholmod_free_dense(&x, &self.c)
        return out[:, 0] if vector else out

    def perm(self):
        """The fill-reducing permutation: row k of P A P' is row perm[k] of A."""
        cdef int *pp = <int *> self.L.Perm
        return np.array(<int[:self.n]> pp, dtype=np.int64) if self.n else np.zeros(0, np.int64)

    def factor_nnz(self):
        """Entries stored for the factor L (from the symbolic analysis)."""
        return int(glmm_cholmod_factor_nnz(self.L))

    @property
    def is_supernodal(self):
        """Whether the analysis chose a supernodal L (mode "auto" decides by flop count)."""
        return bool(self.L.is_super)

    def update_size(self):
        """Entries of the largest supernodal update matrix (CHOLMOD's maxcsize); 0 if simplicial.

        The supernodal factorization allocates this many doubles of scratch beside L.
        """
        return int(self.L.maxcsize) if self.L.is_super else 0

    def cholmod_memory(self):
        """(bytes CHOLMOD holds now, most it has held) for this factor since construction."""
        return int(self.c.memory_inuse), int(self.c.memory_usage)

    def supernodal_L(self):
        """(super, pi, px, s, x): copies of the numeric supernodal factor's arrays (CHOLMOD's).

        Supernode J holds columns super[J] .. super[J+1]-1 (permuted order); its rows are
        s[pi[J] .. pi[J+1]], its own columns first, then the rows below them, sorted; its
        values are the nsrow x nscol column-major block x[px[J] .. px[J+1]] (L_JJ lower
        triangular on top). The four index arrays are int32 (CHOLMOD's int version).
        """
        self._require_numeric()
        if not self.L.is_super:
            raise CholmodError("supernodal_L needs a supernodal factor; this one is "
                               "simplicial (use sparse_L, or mode='supernodal')")
        cdef Py_ssize_t ns = self.L.nsuper
        cdef int *pi = <int *> self.L.pi
        cdef int *px = <int *> self.L.px
        super_ = np.array(<int[:ns + 1]> (<int *> self.L.super_), dtype=np.int32)
        pi_ = np.array(<int[:ns + 1]> pi, dtype=np.int32)
        px_ = np.array(<int[:ns + 1]> px, dtype=np.int32)
        s = np.array(<int[:pi[ns]]> (<int *> self.L.s), dtype=np.int32) if pi[ns] else \
            np.zeros(0, np.int32)
        x = np.array(<double[:px[ns]]> (<double *> self.L.x)) if px[ns] else np.zeros(0)
        return super_, pi_, px_, s, x

    def sparse_L(self):
        """(indptr, indices, data) of L in CSC, permuted order, rows sorted, diagonal first."""
        self._require_numeric()
        cdef cholmod_factor *F = cholmod_copy_factor(self.L, &self.c)
        self._check("copy factor")
        cdef cholmod_sparse *S = NULL
        try:
            cholmod_change_factor(CHOLMOD_REAL, 1, 0, 1, 1, F, &self.c)
            self._check("change factor")
            S = cholmod_factor_to_sparse(F, &self.c)
            self._check("factor to sparse")
            nz = (<int *> S.p)[self.n]
            indptr = np.array(<int[:self.n + 1]> (<int *> S.p), dtype=np.int64)
            indices = np.array(<int[:nz]> (<int *> S.i), dtype=np.int64) if nz else np.zeros(0, np.int64)
            data = np.array(<double[:nz]> (<double *> S.x)) if nz else np.zeros(0)
        finally:
            if S != NULL:
                cholmod_free_sparse(&S, &self.c)
            cholmod_free_factor(&F, &self.c)
        return _sorted_csc(indptr, indices, data)


def _check_pattern(indptr, indices, Py_ssize_t n):
    """Reject a pattern CHOLMOD would read out of bounds: wrong lengths or row indices."""
    if n < 0 or indptr.shape[0] != n + 1:
        raise ValueError(f"indptr must have n + 1 = {n + 1} entries, got {indptr.shape[0]}")
    if indptr[0] != 0 or np.any(np.diff(indptr) < 0):
        raise ValueError("indptr must start at 0 and never decrease")
    if indices.shape[0] != indptr[n]:
        raise ValueError(f"indices must have indptr[n] = {indptr[n]} entries, got {indices.shape[0]}")
    if indices.shape[0] and (indices.min() < 0 or indices.max() >= n):
        raise ValueError(f"row indices must lie in [0, {n})")


def _sorted_csc(indptr, indices, data):
    """Sort row indices within each column (CHOLMOD leaves supernodal rows sorted; be sure)."""
    cols = np.repeat(np.arange(indptr.shape[0] - 1), np.diff(indptr))
    order = np.lexsort((indices, cols))
    return indptr, indices[order], data[order]
