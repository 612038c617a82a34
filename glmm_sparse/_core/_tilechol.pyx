# cython: language_level=3
"""Dense Cholesky by tiles on several threads, the same bits for any number of them.

A = U'U for a column-major n x n A (its upper triangle read and overwritten by U), in
tiles of nb x nb. Right-looking: at step k,

    U_kk = chol(A_kk)                    (potrf)
    U_kc = U_kk^-T A_kc,   c > k         (trsm)
    A_rc -= U_kr' U_kc,    k < r <= c    (syrk on the diagonal, gemm elsewhere)

Each tile sees the same sequence of single-threaded BLAS calls whichever thread makes
them: its updates in the order k = 0, 1, ..., then its own potrf or trsm. Threads claim
the tasks in that fixed sequence from a shared counter and wait, before running one,
until the tasks it depends on are done (``ver[r, c]`` counts the operations a tile has
had). So the result does not depend on how many threads take part, or which does what.

No thread waits for another to start: the caller's thread can run every task, and helper
threads (started by the Python layer, tilechol.py) only take what is left. A helper that
starts after the last task has been claimed returns at once. Claims come in a
topological order, so the earliest unfinished claimed task is always runnable: no
deadlock. The BLAS and LAPACK are SciPy's (their Cython capsules, as _supinv.pyx).
"""
import numpy as np
cimport numpy as cnp
from glmm_sparse._core._capsules cimport capsule_pointer
from scipy.linalg import cython_blas as _blas, cython_lapack as _lapack

cnp.import_array()

cdef extern from *:
    """
    #include <sched.h>
    static inline int tc_load(int *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
    static inline void tc_store(int *p, int v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
    static inline int tc_fetch_add(int *p, int v) {
        return __atomic_fetch_add(p, v, __ATOMIC_ACQ_REL);
    }
    static inline int tc_claim_error(int *p, int v) {
        int expected = 0;
        return __atomic_compare_exchange_n(p, &expected, v, 0, __ATOMIC_ACQ_REL,
                                           __ATOMIC_ACQUIRE);
    }
    static inline void tc_relax(long spins) {
    #if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
    #elif defined(__aarch64__)
        __asm__ __volatile__("yield");
    #endif
        if (spins % 1024 == 1023) sched_yield();  /* an oversubscribed machine */
    }
    """
    int tc_load(int *p) nogil
    void tc_store(int *p, int v) nogil
    int tc_fetch_add(int *p, int v) nogil
    int tc_claim_error(int *p, int v) nogil
    void tc_relax(long spins) nogil

ctypedef void (*potrf_t)(char *uplo, int *n, double *a, int *lda, int *info) noexcept nogil
ctypedef void (*trsm_t)(char *side, char *uplo, char *transa, char *diag, int *m, int *n,
                        double *alpha, double *a, int *lda, double *b, int *ldb) noexcept nogil
ctypedef void (*syrk_t)(char *uplo, char *trans, int *n, int *k, double *alpha, double *a,
                        int *lda, double *beta, double *c, int *ldc) noexcept nogil
ctypedef void (*gemm_t)(char *transa, char *transb, int *m, int *n, int *k, double *alpha,
                        double *a, int *lda, double *b, int *ldb, double *beta, double *c,
                        int *ldc) noexcept nogil


cdef potrf_t dpotrf = <potrf_t> capsule_pointer(_lapack, "dpotrf")
cdef trsm_t dtrsm = <trsm_t> capsule_pointer(_blas, "dtrsm")
cdef syrk_t dsyrk = <syrk_t> capsule_pointer(_blas, "dsyrk")
cdef gemm_t dgemm = <gemm_t> capsule_pointer(_blas, "dgemm")

cdef enum:
    POTRF = 0
    TRSM = 1
    UPDATE = 2

_task_lists = {}  # ntiles -> task_list(ntiles), read-only


def task_list(Py_ssize_t ntiles):
    """The tasks (kind, k, r, c) of a factorization in ``ntiles`` x ``ntiles`` tiles, in
    the order they are claimed: step by step; within a step the potrf, the trsm of the
    panel, then the updates row by row, so that the next step's panel is ready first."""
    tasks = []
    for k in range(ntiles):
        tasks.append((POTRF, k, k, k))
        tasks.extend((TRSM, k, k, c) for c in range(k + 1, ntiles))
        tasks.extend((UPDATE, k, r, c) for r in range(k + 1, ntiles) for c in range(r, ntiles))
    out = np.array(tasks, dtype=np.int32).reshape(-1, 4)
    out.flags.writeable = False
    return out


def _tasks_for(Py_ssize_t ntiles):
    if ntiles not in _task_lists:
        _task_lists[ntiles] = task_list(ntiles)
    return _task_lists[ntiles]


cdef class TiledRun:
    """One factorization of a column-major A in place: ``work`` from any number of
    threads (the caller's first), then ``wait`` on the caller's; ``info`` as LAPACK's
    (0; j > 0: the leading minor of order j is not positive definite; j < 0: a tile's
    potrf refused its argument -j)."""

    cdef double *A
    cdef int n, nb, ntiles, ntasks
    cdef const int[:, ::1] tasks
    cdef int[::1] ver
    cdef int claimed, finished, failed
    cdef object keep  # A's array, alive while any thread may touch it

    def __init__(self, double[::1, :] A, int nb):
        if A.shape[0] != A.shape[1]:
            raise ValueError("A must be square")
        if nb < 1:
            raise ValueError("the tile size must be positive")
        self.n = <int> A.shape[0]
        self.nb = nb
        self.ntiles = (self.n + nb - 1) // nb
        self.tasks = _tasks_for(self.ntiles)
        self.ntasks = <int> self.tasks.shape[0]
        self.ver = np.zeros(self.ntiles * self.ntiles, dtype=np.int32)
        self.keep = A
        self.A = &A[0, 0] if self.n > 0 else NULL
        self.claimed = 0
        self.finished = 0
        self.failed = 0

    @property
    def info(self):
        return self.failed

    def work(self):
        """Run tasks until none is left to claim."""
        with nogil:
            self._work()

    def wait(self):
        """Return once every task is done (or skipped after a failed potrf)."""
        cdef long spins = 0
        with nogil:
            while tc_load(&self.finished) < self.ntasks:
                tc_relax(spins)
                spins += 1

    cdef double *_tile(self, int r, int c) noexcept nogil:
        return self.A + <Py_ssize_t> r * self.nb + <Py_ssize_t> c * self.nb * self.n

    cdef int _size(self, int t) noexcept nogil:
        return min(self.nb, self.n - t * self.nb)

    cdef bint _ready(self, int kind, int k, int r, int c) noexcept nogil:
        cdef int T = self.ntiles
        if kind == POTRF:
            return tc_load(&self.ver[k * T + k]) == k
        if kind == TRSM:
            return tc_load(&self.ver[k * T + k]) == k + 1 and tc_load(&self.ver[k * T + c]) == k
        return (tc_load(&self.ver[r * T + c]) == k and tc_load(&self.ver[k * T + r]) == k + 1
                and tc_load(&self.ver[k * T + c]) == k + 1)

    cdef void _work(self) noexcept nogil:
        cdef int t, kind, k, r, c, mk, mr, mc, info
        cdef long spins
        cdef int n = self.n, T = self.ntiles
        cdef double one = 1.0, minus_one = -1.0
        while True:
            t = tc_fetch_add(&self.claimed, 1)
            if t >= self.ntasks:
                return
            kind, k, r, c = self.tasks[t, 0], self.tasks[t, 1], self.tasks[t, 2], self.tasks[t, 3]
            spins = 0
            while tc_load(&self.failed) == 0 and not self._ready(kind, k, r, c):
                tc_relax(spins)
                spins += 1
            if tc_load(&self.failed) == 0:
                mk = self._size(k)
                if kind == POTRF:  # U_kk = chol(A_kk)
                    info = 0
                    dpotrf(b"U", &mk, self._tile(k, k), &n, &info)
                    if info != 0:
                        tc_claim_error(&self.failed, k * self.nb + info if info > 0 else info)
                elif kind == TRSM:  # U_kc = U_kk^-T A_kc
                    mc = self._size(c)
                    dtrsm(b"L", b"U", b"T", b"N", &mk, &mc, &one, self._tile(k, k), &n,
                          self._tile(k, c), &n)
                elif r == c:  # A_rr -= U_kr' U_kr
                    mr = self._size(r)
                    dsyrk(b"U", b"T", &mr, &mk, &minus_one, self._tile(k, r), &n, &one,
                          self._tile(r, r), &n)
                else:  # A_rc -= U_kr' U_kc
                    mr, mc = self._size(r), self._size(c)
                    dgemm(b"T", b"N", &mr, &mc, &mk, &minus_one, self._tile(k, r), &n,
                          self._tile(k, c), &n, &one, self._tile(r, c), &n)
                tc_store(&self.ver[r * T + c], self.ver[r * T + c] + 1)
            tc_fetch_add(&self.finished, 1)
