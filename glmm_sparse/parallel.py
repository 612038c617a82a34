"""Both cores for the passes over the rows, with results independent of the thread count.

The compiled kernels release the GIL, so plain threads run them in parallel. Determinism:
work is split into fixed row chunks (never by the number of threads) and partial sums are
added in chunk order; kernels that write separate outputs simply run side by side.
Set GLMM_SPARSE_THREADS=1 to stay on one thread.

``submit_all`` starts a batch's tasks and returns at once (``Pending``), so that the caller
can prepare the next batch while they run (the streamed passes do); ``run_all`` waits.
The passes keep the BLAS on one thread meanwhile (blas.one_blas_thread): their BLAS calls
are small (a QR of one batch), and OpenBLAS's own threads, spinning between them, took the
core the kernels needed (measured: the 10^7-row cross-products pass 1.1 s -> 0.7 s).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from functools import lru_cache

CHUNK = 1 << 16  # rows per chunk: fixed, so sums do not depend on the thread count
PARALLEL_MIN_ROWS = 50_000  # below this, thread hand-offs cost more than they save

_pool: ThreadPoolExecutor | None = None


def n_threads() -> int:
    """Threads to use: GLMM_SPARSE_THREADS, else the machine's cores (at most 8)."""
    value = os.environ.get("GLMM_SPARSE_THREADS")
    if value:
        try:
            return max(1, int(value))
        except ValueError:
            raise ValueError(f"GLMM_SPARSE_THREADS must be a whole number, not {value!r}") from None
    return _cores()


@lru_cache(maxsize=1)
def _cores() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


def _executor() -> ThreadPoolExecutor:
    global _pool
    if _pool is None or _pool._max_workers != n_threads():
        _pool = ThreadPoolExecutor(max_workers=n_threads(), thread_name_prefix="glmm_sparse")
    return _pool


def run_all(tasks, rows: int) -> list:
    """Results of the zero-argument callables, in order; in parallel for large inputs."""
    return submit_all(tasks, rows).wait()


def submit_all(tasks, rows: int) -> Pending:
    """The zero-argument callables started on the pool (large inputs on more than one
    thread), or run here and now (one thread, one task, or fewer than
    ``PARALLEL_MIN_ROWS`` rows: a task's exception is then raised here)."""
    if n_threads() == 1 or len(tasks) < 2 or rows < PARALLEL_MIN_ROWS:
        return Pending(results=[task() for task in tasks])
    pool = _executor()
    return Pending(futures=[pool.submit(task) for task in tasks])


def help_with(work) -> None:
    """Start ``work`` (a zero-argument callable) on up to n_threads() - 1 pool threads and
    return at once, without waiting for them: for kernels in which the calling thread can
    do all the work itself and helpers only take what is left (tilechol.py), so that a
    busy pool delays nothing. ``work`` must not raise. A pool that takes no more work
    (the interpreter shutting down) starts no helper."""
    if n_threads() > 1:
        pool = _executor()
        try:
            for _ in range(n_threads() - 1):
                pool.submit(work)
        except RuntimeError:  # "cannot schedule new futures after (interpreter) shutdown"
            pass


class Pending:
    """Tasks started by ``submit_all``; ``wait`` gives their results in order."""

    def __init__(self, *, futures=None, results=None):
        self._futures, self._results = futures, results

    def wait(self) -> list:
        """The results, once every task has finished (none is left writing into shared
        outputs); the exception of the first task that raised one, in task order."""
        if self._results is None:
            wait_futures(self._futures)
            for future in self._futures:
                err = future.exception()
                if err is not None:
                    raise err
            self._results = [future.result() for future in self._futures]
        return self._results

    def done(self) -> bool:
        """Whether every task has finished (with or without an exception)."""
        return self._results is not None or all(f.done() for f in self._futures)


def row_chunks(n: int) -> list[slice]:
    """Fixed chunks of rows: the same for any thread count."""
    return [slice(start, min(start + CHUNK, n)) for start in range(0, n, CHUNK)] or [slice(0, 0)]
