"""One BLAS thread for dense work that runs inside a fit.

NumPy and SciPy each load their own OpenBLAS, each with a thread per core that keeps
spinning for a while after a call returns. Inside a fit, dense calls alternate with the
project's own threads (parallel.py) and with the other library's BLAS, so their threads
compete for the same two cores: measured on the count-class route (crossed_1e6 of the
peers harness, a dense Cholesky of order 1,003 per evaluation), a whole fit took 2.0-2.6 s
with the libraries' default threads and 1.4-1.9 s with one, the Cholesky alone 15-17 ms
against 12 ms. ``one_blas_thread`` limits every loaded BLAS to one thread for a block.

A whole fit runs in such a block (the bodies of lmer, glmer and the Dask and Spark fits,
and every optimization, ``optimize.minimize_theta``, so refits, profiles and the
bootstrap's refits too; a ``with`` block adds no frame, so the warnings' stacklevels still
name the caller's line). The limit set and restored around each dense call was not enough: a
binomial GLMM on 10^6 rows (the peers harness's binomial_1e6) took 36.8 s with the limit
around the dense calls only and 25.8 s with it around the whole fit, the same optimum to
every printed digit: between the limited blocks the libraries' threads woke for small
products and then spun, and the fit's own kernels (row passes, the Schur update) waited
for the cores they held. The limit is process-wide: while a fit runs on the main thread,
BLAS calls made by the user's other threads run on one thread too.

Only the main thread sets the limit: OpenBLAS (0.3.30, 0.3.31 here) ignores a change of
its thread count made from any other thread, so a block entered elsewhere (a fit run in a
worker thread) leaves the libraries as they are. Nested blocks share one limit, which the
outermost restores. The libraries are looked up once (2 ms), at the first block, when
every BLAS the package's imports load is loaded; a block then costs about 12 microseconds.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager

_depth = 0  # open blocks of the main thread
_controller = None  # threadpoolctl's view of the loaded libraries, made at the first block


@contextmanager
def one_blas_thread():
    """A block in which every loaded BLAS uses one thread, when entered from the main
    thread (elsewhere: nothing changes); the libraries' own settings come back after."""
    global _depth, _controller
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    from threadpoolctl import ThreadpoolController

    limited = None
    if _depth == 0:
        if _controller is None:
            _controller = ThreadpoolController()
        limited = _controller.limit(limits=1, user_api="blas")
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if limited is not None:
            limited.restore_original_limits()


def holds_one_thread() -> bool:
    """Whether the calling thread is inside a block that holds every BLAS at one thread
    (the main thread, within ``one_blas_thread``)."""
    return _depth > 0 and threading.current_thread() is threading.main_thread()
