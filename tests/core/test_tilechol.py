"""The dense Cholesky by tiles (tilechol.py, _core/_tilechol.pyx) against NumPy's, the
same bits for any thread count, LAPACK's info on a matrix that is not positive definite,
and no wait on a busy pool."""
import threading

import numpy as np
import pytest
from scipy.linalg import lapack

from glmm_sparse import parallel, tilechol
from glmm_sparse._core import _tilechol


def spd(n, seed):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, n))
    return X @ X.T + n * np.eye(n)


def factored(A):
    """A copy of A with its lower triangle factored by tiles, and the info."""
    S = A.copy()
    info = tilechol.cholesky_lower(S)
    return S, info


@pytest.mark.parametrize("n", [1, 5, 127, 128, 129, 300, 700, 1000])
def test_equals_numpy_cholesky(n):
    A = spd(n, n)
    S, info = factored(A)
    assert info == 0
    L = np.linalg.cholesky(A)
    np.testing.assert_allclose(np.tril(S), L, rtol=0, atol=1e-12 * np.abs(L).max())
    # the strict upper triangle is not touched (as LAPACK's dpotrf with clean=0)
    iu = np.triu_indices(n, 1)
    np.testing.assert_array_equal(S[iu], A[iu])


@pytest.mark.parametrize("n", [700, 1000])
def test_same_bits_for_any_thread_count(n, monkeypatch):
    A = spd(n, 7)
    results = []
    for threads in ("1", "2", "3"):
        monkeypatch.setenv("GLMM_SPARSE_THREADS", threads)
        results.append(factored(A)[0])
    assert np.array_equal(results[0], results[1])
    assert np.array_equal(results[0], results[2])


def test_tiles_of_other_sizes_give_the_same_factor():
    A = spd(333, 3)
    L = np.linalg.cholesky(A)
    for nb in (1, 16, 100, 333, 400):
        S = A.copy()
        run = _tilechol.TiledRun(S.T, nb)
        run.work()
        run.wait()
        assert run.info == 0
        np.testing.assert_allclose(np.tril(S), L, rtol=0, atol=1e-12 * np.abs(L).max())


@pytest.mark.parametrize("bad", [0, 59, 699, 999])
def test_not_positive_definite_gives_lapack_info(bad, monkeypatch):
    monkeypatch.setenv("GLMM_SPARSE_THREADS", "2")
    A = spd(1000, 11)
    A[bad, :] *= 1e-3  # keeps A symmetric while making its leading minor of order bad+1
    A[:, bad] *= 1e-3  # singular: the pivot's own entry goes to -1
    A[bad, bad] = -1.0
    ref = A.copy()
    _, ref_info = lapack.dpotrf(ref.T, lower=0, clean=0, overwrite_a=1)
    assert ref_info == bad + 1
    _, info = factored(A)
    assert info == ref_info


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_entries_are_a_failed_pivot(value):
    A = spd(700, 13)
    A[400, 300] = A[300, 400] = value
    _, info = factored(A)
    assert info == 401  # row 400's pivot is the first to read the entry


def test_busy_pool_does_not_delay_the_factorization(monkeypatch):
    """The caller's thread does every task when the helpers cannot start."""
    monkeypatch.setenv("GLMM_SPARSE_THREADS", "2")
    release = threading.Event()
    pool = parallel._executor()
    blockers = [pool.submit(release.wait, 30) for _ in range(parallel.n_threads())]
    try:
        A = spd(1000, 5)
        S, info = factored(A)
        assert info == 0
        assert not any(b.done() for b in blockers)  # the pool stayed busy throughout
        np.testing.assert_allclose(np.tril(S), np.linalg.cholesky(A), rtol=0, atol=1e-9)
    finally:
        release.set()


def test_off_the_main_thread_lapack_factors_it_whole():
    """In a worker thread the BLAS keeps its threads (blas.py), so no tiles: LAPACK's
    potrf, the same bits as its call there."""
    A = spd(700, 17)
    out = {}

    def worker():
        S = A.copy()
        out["info"] = tilechol.cholesky_lower(S)
        ref = A.copy()
        lapack.dpotrf(ref.T, lower=0, clean=0, overwrite_a=1)
        out["same"] = np.array_equal(S, ref)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(60)
    assert out == {"info": 0, "same": True}


def test_a_pool_that_takes_no_work_starts_no_helper(monkeypatch):
    """At interpreter shutdown the pool refuses new work: the caller factors alone."""
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setenv("GLMM_SPARSE_THREADS", "2")
    closed = ThreadPoolExecutor(max_workers=2)
    closed.shutdown()
    monkeypatch.setattr(parallel, "_executor", lambda: closed)
    A = spd(700, 19)
    S, info = factored(A)
    assert info == 0
    np.testing.assert_allclose(np.tril(S), np.linalg.cholesky(A), rtol=0, atol=1e-9)


def test_rejects_what_it_cannot_factor():
    with pytest.raises(ValueError, match="square C-ordered"):
        tilechol.cholesky_lower(np.asfortranarray(spd(4, 1)[:, :3]))
    with pytest.raises(ValueError, match="square C-ordered"):
        tilechol.cholesky_lower(np.asfortranarray(spd(4, 1)))
    with pytest.raises(ValueError, match="float64"):
        tilechol.cholesky_lower(spd(4, 1).astype(np.float32))
    with pytest.raises(ValueError, match="tile size"):
        _tilechol.TiledRun(np.asfortranarray(spd(4, 1)), 0)
