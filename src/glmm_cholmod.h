/* glmm_cholmod.h: the part of CHOLMOD that glmm_sparse uses, in one place.
 *
 * Only the int32 cholmod_* API that exists in SuiteSparse 5.x (CHOLMOD 3) and 7.x
 * (CHOLMOD 4/5) is used. Debian/Ubuntu install the header as suitesparse/cholmod.h;
 * conda-forge and Homebrew put it there too, some builds put it at the top level.
 */
#ifndef GLMM_CHOLMOD_H
#define GLMM_CHOLMOD_H

#if defined(__has_include)
#  if __has_include(<suitesparse/cholmod.h>)
#    include <suitesparse/cholmod.h>
#  else
#    include <cholmod.h>
#  endif
#else
#  include <suitesparse/cholmod.h>
#endif

#include <math.h>
#include <pthread.h>

/* CHOLMOD reports through Common->status; our wrapper turns it into exceptions, so the
 * handler only has to keep CHOLMOD quiet. */
static void glmm_cholmod_silent_handler(int status, const char *file, int line,
                                        const char *message)
{
    (void) status; (void) file; (void) line; (void) message;
}

/* Fill-reducing ordering for cholmod_analyze: ordering < 0 keeps CHOLMOD's default
 * strategy (AMD, METIS when AMD fills badly); otherwise exactly one method is tried
 * (CHOLMOD_NATURAL = 0, CHOLMOD_AMD = 2, CHOLMOD_METIS = 3, CHOLMOD_NESDIS = 4). */
static void glmm_cholmod_set_ordering(cholmod_common *c, int ordering)
{
    if (ordering < 0) return;
    c->nmethods = 1;
    c->method[0].ordering = ordering;
    c->postorder = 1;
}

/* CHOLMOD 3's supernodal factorization opens an OpenMP parallel region (4 threads, fixed at
 * its compile time) for every large enough descendant update. On two cores, with our own
 * threads and BLAS threads around, thousands of small regions per factorization cost more
 * than they save (a crossed 10^4 x 10^3 factorization: 1.3-1.9 s, half of it in the kernel
 * and libgomp, against 0.12-0.14 s serial).
 * Making the calling thread's regions inactive runs them on that thread alone. The symbol
 * is weak: a CHOLMOD built without OpenMP leaves it unresolved and the call is skipped. */
extern void omp_set_max_active_levels(int) __attribute__((weak));
extern int omp_get_max_active_levels(void) __attribute__((weak));
/* The same holds for a threaded OpenBLAS behind CHOLMOD (Debian's libopenblas0-pthread): its
 * many small dsyrk/dgemm calls ran 2x faster on one thread (0.14 s vs 0.27 s per crossed
 * 10^4 x 10^3 factorization). NumPy's own OpenBLAS has prefixed symbols and is not touched.
 * Both settings are process-wide (or per thread) state of libraries others may use too, so
 * they are changed only around CHOLMOD's call and restored after it. */
extern void openblas_set_num_threads(int) __attribute__((weak));
extern int openblas_get_num_threads(void) __attribute__((weak));

typedef struct { int omp_levels; int blas_threads; } glmm_thread_state;

/* Factorizations may run in several threads at once: the first to enter saves the settings
 * and makes them serial, the last to leave restores them (a count under a lock, so that
 * interleaved save/restore pairs cannot leave them serial for good). */
static pthread_mutex_t glmm_serial_lock = PTHREAD_MUTEX_INITIALIZER;
static int glmm_serial_depth = 0;
static glmm_thread_state glmm_serial_saved = {-1, -1};

static void glmm_cholmod_serial_begin(void)
{
    pthread_mutex_lock(&glmm_serial_lock);
    if (glmm_serial_depth++ == 0) {
        glmm_serial_saved.omp_levels = -1;
        glmm_serial_saved.blas_threads = -1;
        if (omp_set_max_active_levels && omp_get_max_active_levels) {
            glmm_serial_saved.omp_levels = omp_get_max_active_levels();
            omp_set_max_active_levels(0);
        }
        if (openblas_set_num_threads && openblas_get_num_threads) {
            glmm_serial_saved.blas_threads = openblas_get_num_threads();
            openblas_set_num_threads(1);
        }
    }
    pthread_mutex_unlock(&glmm_serial_lock);
}

static void glmm_cholmod_serial_end(void)
{
    pthread_mutex_lock(&glmm_serial_lock);
    if (--glmm_serial_depth == 0) {
        if (glmm_serial_saved.omp_levels >= 0)
            omp_set_max_active_levels(glmm_serial_saved.omp_levels);
        if (glmm_serial_saved.blas_threads >= 1)
            openblas_set_num_threads(glmm_serial_saved.blas_threads);
    }
    pthread_mutex_unlock(&glmm_serial_lock);
}

/* log det(L L') = 2 * sum(log(diag(L))) for a numeric LL' factor, supernodal or simplicial. */
static double glmm_cholmod_logdet(const cholmod_factor *L)
{
    double s = 0.0;
    const double *x = (const double *) L->x;
    if (L->is_super) {
        const int *super = (const int *) L->super;
        const int *pi = (const int *) L->pi;
        const int *px = (const int *) L->px;
        for (size_t k = 0; k < L->nsuper; k++) {
            int ncols = super[k + 1] - super[k];
            int nrows = pi[k + 1] - pi[k];
            const double *blk = x + px[k];
            for (int j = 0; j < ncols; j++) s += log(blk[j * nrows + j]);
        }
    } else {
        const int *p = (const int *) L->p;
        for (size_t j = 0; j < L->n; j++) s += log(x[p[j]]);
    }
    return 2.0 * s;
}

/* Entries of the factor L as the symbolic analysis predicts them (memory prediction):
 * the supernodal value array, or the simplicial column counts (a symbolic simplicial
 * factor has no value array yet). */
static double glmm_cholmod_factor_nnz(const cholmod_factor *L)
{
    if (L->is_super) return (double) L->xsize;
    const int *cc = (const int *) L->ColCount;
    double s = 0.0;
    for (size_t j = 0; j < L->n; j++) s += cc[j];
    return s;
}

#endif
