"""blas.one_blas_thread: every loaded BLAS on one thread inside a block of the main thread,
the original settings restored by the outermost block, whatever the nesting or exceptions."""
import threading

import numpy as np
import pytest
import scipy.linalg
from threadpoolctl import threadpool_info, threadpool_limits

from glmm_sparse.blas import one_blas_thread


def blas_threads() -> list[int]:
    return [d["num_threads"] for d in threadpool_info() if d["user_api"] == "blas"]


@pytest.fixture
def two_threads():
    """Every BLAS on two threads (as on the 2-core machines), whatever the host has."""
    with threadpool_limits(limits=2, user_api="blas"):
        yield


def test_one_thread_inside_and_restored_after(two_threads):
    assert blas_threads() and set(blas_threads()) == {2}
    with one_blas_thread():
        assert set(blas_threads()) == {1}
        with one_blas_thread():
            assert set(blas_threads()) == {1}
        assert set(blas_threads()) == {1}  # the outer block still holds the limit
    assert set(blas_threads()) == {2}


def test_restored_after_an_exception(two_threads):
    with pytest.raises(ZeroDivisionError), one_blas_thread():
        raise ZeroDivisionError
    assert set(blas_threads()) == {2}


def test_other_threads_leave_the_libraries_alone(two_threads):
    """A block entered from a worker thread changes nothing (OpenBLAS ignores a thread
    count set from there), and one inside the main thread's block keeps its limit."""
    seen = {}

    def worker(key):
        with one_blas_thread():
            seen[key] = set(blas_threads())

    for key in ("alone", "inside main's block"):
        thread = threading.Thread(target=worker, args=(key,))
        if key == "alone":
            thread.start()
            thread.join(10)
        else:
            with one_blas_thread():
                thread.start()
                thread.join(10)
                seen["main after the worker"] = set(blas_threads())
    assert seen == {"alone": {2}, "inside main's block": {1}, "main after the worker": {1}}
    assert set(blas_threads()) == {2}


def test_results_unchanged():
    rng = np.random.default_rng(3)
    A = rng.standard_normal((300, 300))
    S = A @ A.T + 300 * np.eye(300)
    with one_blas_thread():
        inside = scipy.linalg.cholesky(S)
    np.testing.assert_allclose(inside, scipy.linalg.cholesky(S), rtol=1e-12, atol=1e-12)


def test_fits_hold_every_blas_on_one_thread(two_threads, monkeypatch):
    """lmer and glmer run whole on one BLAS thread (a ``one_blas_thread`` block around
    their bodies), seen from inside the fit (at the optimizer's call), and restore the
    settings after."""
    import pandas as pd

    import glmm_sparse
    from glmm_sparse import models

    seen = []
    minimize = models.minimize_theta

    def watching(*args, **kwargs):
        seen.append(set(blas_threads()))
        return minimize(*args, **kwargs)

    monkeypatch.setattr(models, "minimize_theta", watching)
    monkeypatch.setattr("glmm_sparse.glmm.minimize_theta", watching)
    rng = np.random.default_rng(5)
    g = rng.integers(0, 20, 400)
    y = rng.standard_normal(20)[g] + rng.standard_normal(400)
    df = pd.DataFrame({"y": y, "yb": (y > 0).astype(float), "g": g.astype(str)})
    glmm_sparse.lmer("y ~ 1 + (1 | g)", df)
    glmm_sparse.glmer("yb ~ 1 + (1 | g)", df, family="binomial")
    assert len(seen) >= 2 and all(s == {1} for s in seen)
    assert set(blas_threads()) == {2}


def test_every_optimization_holds_one_blas_thread(two_threads):
    """minimize_theta evaluates inside the block too, so refits, profiles and the
    bootstrap's refits, which call it outside lmer, get the same limit."""
    from glmm_sparse.optimize import minimize_theta

    seen = []

    def criterion(theta):
        seen.append(set(blas_threads()))
        return float((theta[0] - 1.0) ** 2 + 1.0)

    minimize_theta(criterion, np.array([0.5]), np.array([0.0]), check=False)
    assert seen and all(s == {1} for s in seen)
    assert set(blas_threads()) == {2}


def test_warnings_of_a_fit_name_the_callers_line():
    """The block adds no frame: a fit's warnings (rows dropped, a singular fit) still
    point at the line that called lmer."""
    import warnings

    import pandas as pd

    import glmm_sparse

    rng = np.random.default_rng(2)
    g = rng.integers(0, 10, 200)
    df = pd.DataFrame({"y": rng.standard_normal(200), "g": g.astype(str)})
    df.loc[3, "y"] = np.nan
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        glmm_sparse.lmer("y ~ 1 + (1 | g)", df)
    assert caught
    assert {w.filename for w in caught} == {__file__}, [(w.filename, str(w.message)) for w in caught]
