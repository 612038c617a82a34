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

/* CHOLMOD reports through Common->status; our wrapper turns it into exceptions, so the
 * handler only has to keep CHOLMOD quiet. */
static void glmm_cholmod_silent_handler(int status, const char *file, int line,
                                        const char *message)
{
    (void) status; (void) file; (void) line; (void) message;
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
