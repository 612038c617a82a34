"""Dense Cholesky on both cores with the same bits for any thread count.

Where it sits: the Schur factor (schur.py) and the count classes (classed.py) end every
evaluation with one dense Cholesky of the later terms' block, of order 1,000 on the
crossed shapes of the benchmarks (10 ms on one core here). OpenBLAS's own threaded
potrf is faster on two cores, but its blocking depends on its thread count, and its
threads, spinning between calls, compete with the fit's own (blas.py). Here the matrix
is cut into fixed NB x NB tiles and each tile gets the same sequence of single-threaded
BLAS calls whichever thread makes them (``_core/_tilechol.pyx``): 10.0 ms -> 5.4 ms at
order 1,000, 14.7 ms -> 7.9 ms at 1,156 (2 threads, this machine kind).
"""
from __future__ import annotations

import numpy as np
from scipy.linalg import lapack

from ._core import _tilechol
from .blas import holds_one_thread, one_blas_thread
from .parallel import help_with

NB = 128  # tile order: fixed, since the bits depend on it (96-256 measured alike)
PARALLEL_MIN_ORDER = 640  # below 5 tiles the helpers' hand-off costs more than they save


def cholesky_lower(S: np.ndarray) -> int:
    """In place: the lower triangle of the C-ordered square S becomes L with L L' = S
    (S's lower triangle read; the strict upper triangle is left as it was).

    Returns LAPACK's info: 0, or j > 0 when the leading minor of order j is not positive
    definite (L is then incomplete) or L's j-th pivot is not a finite number (NaN, which
    the reference LAPACK also reports and OpenBLAS's potrf passes on, or an infinity).

    On the main thread every BLAS is held at one thread and the tiles run on the pool's
    threads as well: the same bits for any thread count. Elsewhere (a fit in a worker
    thread) the BLAS keeps its own threads, which the tiles' small calls would fight, so
    LAPACK's potrf factors S whole, as the BLAS's threads divide it.
    """
    if S.ndim != 2 or S.shape[0] != S.shape[1] or not S.flags.c_contiguous:
        raise ValueError("S must be a square C-ordered array")
    if S.dtype != np.float64:
        raise ValueError(f"S must hold float64, not {S.dtype}")
    with one_blas_thread():
        if holds_one_thread():
            run = _tilechol.TiledRun(S.T, NB)  # S's lower triangle: S.T's upper, column-major
            try:
                if S.shape[0] >= PARALLEL_MIN_ORDER:
                    help_with(run.work)
            finally:  # no helper is left writing into S once this returns, whatever happened
                run.work()
                run.wait()
            info = run.info
        else:
            _, info = lapack.dpotrf(S.T, lower=0, clean=0, overwrite_a=1)
    if info != 0:
        return int(info)
    bad = np.flatnonzero(~np.isfinite(S.diagonal()))
    return int(bad[0]) + 1 if bad.size else 0
