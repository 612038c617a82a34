"""Results do not depend on the number of threads (fixed row chunks, ordered sums)."""
import numpy as np
import pandas as pd
import pytest

import glmm_sparse as gs
import glmm_sparse.parallel as parallel


@pytest.fixture()
def small_chunks(monkeypatch):
    """Chunks of 997 rows and no size threshold, so that small data use several threads."""
    monkeypatch.setattr(parallel, "CHUNK", 997)
    monkeypatch.setattr(parallel, "PARALLEL_MIN_ROWS", 0)


def data(n=6000, seed=2):
    rng = np.random.default_rng(seed)
    g, h = rng.integers(0, 60, n), rng.integers(0, 15, n)
    x = rng.normal(size=n)
    eta = 0.2 + 0.6 * x + rng.normal(0, 0.7, 60)[g] + rng.normal(0, 0.4, 15)[h]
    return pd.DataFrame({"y": (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float),
                         "r": eta + rng.normal(size=n), "x": x, "g": g, "h": h})


def fits(d, threads, monkeypatch):
    monkeypatch.setenv("GLMM_SPARSE_THREADS", str(threads))
    return (gs.glmer("y ~ x + (1 | g) + (1 | h)", d, family="binomial"),
            gs.lmer("r ~ x + (x | g) + (1 | h)", d))


def test_one_and_two_threads_give_identical_fits(small_chunks, monkeypatch):
    d = data()
    one, two = fits(d, 1, monkeypatch), fits(d, 2, monkeypatch)
    for a, b in zip(one, two):
        assert a.loglik == b.loglik
        assert np.array_equal(a.theta, b.theta)
        assert np.array_equal(a.fixef.to_numpy(), b.fixef.to_numpy())
        assert np.array_equal(a.ranef["condsd"].to_numpy(), b.ranef["condsd"].to_numpy())


def test_bad_thread_setting_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("GLMM_SPARSE_THREADS", "two")
    with pytest.raises(ValueError, match="GLMM_SPARSE_THREADS must be a whole number, not 'two'"):
        parallel.n_threads()


def test_row_chunks_cover_every_row_once():
    for n in (0, 1, parallel.CHUNK - 1, parallel.CHUNK, 3 * parallel.CHUNK + 5):
        covered = np.concatenate([np.arange(n)[sl] for sl in parallel.row_chunks(n)])
        assert np.array_equal(covered, np.arange(n))


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_chunked_qr_is_the_same_for_any_thread_count_and_matches_numpy(threads, monkeypatch):
    from glmm_sparse.frame import tsqr_r

    monkeypatch.setattr(parallel, "PARALLEL_MIN_ROWS", 0)
    A = np.random.default_rng(4).standard_normal((5000, 6)) + 1e3 * np.arange(6)
    monkeypatch.setenv("GLMM_SPARSE_THREADS", "1")
    reference = tsqr_r(A, chunk=700)
    monkeypatch.setenv("GLMM_SPARSE_THREADS", str(threads))
    R = tsqr_r(A, chunk=700)
    np.testing.assert_array_equal(R, reference)
    dense = np.linalg.qr(A, mode="r")
    signs = np.sign(np.diag(R)) * np.sign(np.diag(dense))
    np.testing.assert_allclose(R * signs[:, None], dense, rtol=1e-10, atol=1e-9 * np.abs(dense).max())


def test_concurrent_chunked_qrs_leave_the_blas_threads_as_they_were(monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_info

    from glmm_sparse.frame import tsqr_r

    monkeypatch.setattr(parallel, "PARALLEL_MIN_ROWS", 0)
    A = np.random.default_rng(5).standard_normal((20_000, 5))
    before = [(i["filepath"], i["num_threads"]) for i in threadpool_info()]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda _: tsqr_r(A, chunk=1000), range(12)))
    assert all(np.array_equal(R, results[0]) for R in results)
    assert [(i["filepath"], i["num_threads"]) for i in threadpool_info()] == before
