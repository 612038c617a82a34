"""Parametric bootstrap: reproducibility, workers, progress, failures, percentile intervals,
and agreement with the profile intervals within Monte-Carlo error."""
import importlib
import multiprocessing
import threading
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm
from threadpoolctl import threadpool_info, threadpool_limits

import glmm_sparse as gs
from glmm_sparse.bootstrap import BootstrapResult, bootstrap, norm_inter
from glmm_sparse.errors import DataError
from refdata import load_data

bootstrap_module = importlib.import_module("glmm_sparse.bootstrap")  # not gs.bootstrap: a function
FORKS = (multiprocessing.get_start_method(allow_none=True)
         or multiprocessing.get_all_start_methods()[0]) == "fork"
needs_fork = pytest.mark.skipif(not FORKS, reason="workers are forked processes only where "
                                                  "fork is the start method (Linux)")


@pytest.fixture(scope="module")
def dyestuff_ml():
    return gs.lmer("Yield ~ 1 + (1 | Batch)", load_data("dyestuff"), reml=False)


@pytest.fixture(scope="module")
def boot48(dyestuff_ml):
    return bootstrap(dyestuff_ml, n=48, seed=11, n_jobs=2, progress=False)


def test_result_layout(dyestuff_ml, boot48):
    assert isinstance(boot48, BootstrapResult)
    assert list(boot48.t0.index) == ["sd_(Intercept)|Batch", "sigma", "(Intercept)"]
    assert boot48.t0["sigma"] == pytest.approx(dyestuff_ml.sigma)
    assert boot48.t.shape == (48, 3) and boot48.n_failed == 0
    assert list(boot48.t.columns) == list(boot48.t0.index)


def test_same_seed_same_replicates_for_any_n_jobs(dyestuff_ml, boot48):
    serial = bootstrap(dyestuff_ml, n=24, seed=11, n_jobs=1, progress=False)
    pd.testing.assert_frame_equal(serial.t, boot48.t.iloc[:24])  # replicate i: child i
    other = bootstrap(dyestuff_ml, n=24, seed=12, n_jobs=1, progress=False)
    assert not np.allclose(other.t.to_numpy(), serial.t.to_numpy())


@pytest.fixture(scope="module")
def one_way_ml():
    """A seeded balanced one-way design, 12 groups of 60: large enough within-group df
    (708) that the percentile interval of sigma is not pulled away from the likelihood
    interval by skewness (with Dyestuff's 24 df the two differ by 0.4 SE, for a
    chi-square reason, not Monte-Carlo error)."""
    rng = np.random.default_rng(2024)
    g = np.repeat(np.arange(12), 60)
    y = 5.0 + rng.normal(size=12)[g] + rng.normal(size=g.shape[0])
    return gs.lmer("y ~ 1 + (1 | g)", pd.DataFrame({"y": y, "g": g}), reml=False)


def test_percentile_intervals_agree_with_profile_within_monte_carlo_error(one_way_ml):
    """Both from the ML fit. The a-quantile of R replicates has Monte-Carlo SE
    sqrt(a (1 - a) / R) / f(q); with f the normal density of the replicates' SD s that is
    0.19 s for a = 0.025 at R = 400: the limits must agree within 3 of those. Checked for
    sigma and the intercept; the between-group SD rests on 12 groups, whose ML estimate
    is biased (by sqrt(11/12)) and skewed (chi-square on 11 df), which moves its
    percentile limits away from the likelihood limits by more than Monte-Carlo error
    (lower limit 0.52 against 0.68 here): a property of the percentile method."""
    boot = bootstrap(one_way_ml, n=400, seed=11, n_jobs=2, progress=False)
    ci = boot.confint()
    prof = one_way_ml.confint(method="profile")
    a = 0.025
    for name in ("sigma", "(Intercept)"):
        s = boot.t[name].std()
        mc_se = np.sqrt(a * (1 - a) / boot.n) / norm.pdf(norm.ppf(a)) * s
        for col in ("lower", "upper"):
            assert abs(ci.loc[name, col] - prof.loc[name, col]) < 3.0 * mc_se, (name, col)


def test_confint_method_boot(dyestuff_ml, boot48):
    ci = dyestuff_ml.confint(method="boot", n=48, seed=11, progress=False)
    pd.testing.assert_frame_equal(ci, boot48.confint())


def test_norm_inter_is_boots_rule():
    t = np.arange(1.0, 1000.0)  # R = 999: (R + 1) 0.025 = 25 is an order statistic
    assert norm_inter(t, 0.025) == 25.0 and norm_inter(t, 0.975) == 975.0
    t = np.arange(1.0, 101.0)  # R = 100: 2.525 lies between the 2nd and 3rd
    z = norm.ppf([0.025, 2 / 101, 3 / 101])
    assert norm_inter(t, 0.025) == pytest.approx(2.0 + (z[0] - z[1]) / (z[2] - z[1]))


def test_custom_func_and_normal_intervals(dyestuff_ml):
    b = bootstrap(dyestuff_ml, n=16, seed=3, n_jobs=1, progress=False,
                  func=lambda r: r.fixef)
    assert list(b.t.columns) == ["(Intercept)"]
    ci = b.confint(type="norm")
    sd = b.t["(Intercept)"].std()
    assert ci.loc["(Intercept)", "upper"] - ci.loc["(Intercept)", "lower"] == \
        pytest.approx(2 * 1.959963984540054 * sd)
    scalar = bootstrap(dyestuff_ml, n=4, seed=3, n_jobs=1, progress=False,
                       func=lambda r: r.sigma)
    assert list(scalar.t.columns) == [0]


@pytest.mark.parametrize("error", [DataError, ValueError, KeyError, ZeroDivisionError])
def test_failed_refits_are_counted_not_fatal(dyestuff_ml, error):
    """Any error from a replicate's refit or func fails that replicate only (as bootMer)."""
    def func(result):
        if result.fixef.iloc[0] > dyestuff_ml.fixef.iloc[0]:
            raise error("refused on purpose")
        return result.fixef

    with pytest.warns(RuntimeWarning, match="bootstrap refits failed"):
        b = bootstrap(dyestuff_ml, n=20, seed=5, n_jobs=1, progress=False, func=func)
    failed = b.t["(Intercept)"].isna()
    assert b.n_failed == failed.sum() and 0 < b.n_failed < 20
    assert "refused on purpose" in b.errors[0] and error.__name__ in b.errors[0]


def _sigma_and_intercept(result, reverse: bool) -> pd.Series:
    s = pd.Series({"sigma": result.sigma, "(Intercept)": result.fixef.iloc[0]})
    return s.iloc[::-1] if reverse else s


def test_func_results_are_matched_to_t0_by_label(dyestuff_ml):
    """A func whose Series comes in a different order for some replicates (here: those
    with sigma above the fit's) gives the same table as one with a fixed order."""
    fixed = bootstrap(dyestuff_ml, n=16, seed=4, n_jobs=1, progress=False,
                      func=lambda r: _sigma_and_intercept(r, reverse=False))
    varying = bootstrap(dyestuff_ml, n=16, seed=4, n_jobs=1, progress=False,
                        func=lambda r: _sigma_and_intercept(r, r.sigma > dyestuff_ml.sigma))
    assert (fixed.t["sigma"] > dyestuff_ml.sigma).sum() not in (0, 16)  # both orders occur
    pd.testing.assert_frame_equal(varying.t[fixed.t.columns], fixed.t)


def test_func_with_other_labels_fails_that_replicate(dyestuff_ml):
    def func(result):
        s = _sigma_and_intercept(result, reverse=False)
        return s.rename({"sigma": "s"}) if result.sigma > dyestuff_ml.sigma else s

    with pytest.warns(RuntimeWarning, match="bootstrap refits failed"):
        b = bootstrap(dyestuff_ml, n=16, seed=4, n_jobs=1, progress=False, func=func)
    assert b.n_failed == (b.t["sigma"].isna()).sum() and 0 < b.n_failed < 16
    assert "labelled ['s', '(Intercept)']" in b.errors[0]
    assert np.all(b.t.dropna()["sigma"] <= dyestuff_ml.sigma)


def _serial(m, n, seed):
    return bootstrap(m, n=n, seed=seed, n_jobs=1, progress=False).t


@pytest.fixture(scope="module")
def dyestuff_x10():
    d = load_data("dyestuff")
    return gs.lmer("Yield ~ 1 + (1 | Batch)", d.assign(Yield=d.Yield * 10), reml=False)


@needs_fork
def test_a_bootstrap_forking_while_another_runs_keeps_its_model(dyestuff_ml, dyestuff_x10,
                                                                 monkeypatch):
    """Two bootstraps at once in threads of one process: each refits its own model. The
    other one runs at the worst moment, after this one has made its replicator and
    before its workers fork (inside the pool's constructor)."""
    real_pool = bootstrap_module.ProcessPoolExecutor
    inner = {}

    class PoolWithAnotherBootstrapFirst(real_pool):
        def __init__(self, *args, **kwargs):
            if "started" not in inner:  # the inner bootstrap's own pool starts plainly
                inner["started"] = True
                inner["t"] = bootstrap(dyestuff_x10, n=8, seed=2, n_jobs=2, progress=False).t
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(bootstrap_module, "ProcessPoolExecutor", PoolWithAnotherBootstrapFirst)
    outer = bootstrap(dyestuff_ml, n=8, seed=1, n_jobs=2, progress=False)
    pd.testing.assert_frame_equal(outer.t, _serial(dyestuff_ml, 8, 1))
    pd.testing.assert_frame_equal(inner["t"], _serial(dyestuff_x10, 8, 2))


@needs_fork
def test_bootstraps_in_two_threads_refit_their_own_models(dyestuff_ml, dyestuff_x10):
    models = {"a": dyestuff_ml, "b": dyestuff_x10}
    out = {}

    def run(name):
        out[name] = bootstrap(models[name], n=8, seed=1, n_jobs=2, progress=False).t

    for _ in range(2):
        threads = [threading.Thread(target=run, args=(name,)) for name in models]
        [t.start() for t in threads]
        [t.join() for t in threads]
        for name, m in models.items():
            pd.testing.assert_frame_equal(out[name], _serial(m, 8, 1))


def test_seed_sequence_and_generator_seeds(dyestuff_ml, boot48):
    by_int = boot48.t.iloc[:8]
    for seed in (np.random.SeedSequence(11), np.random.default_rng(11), np.int64(11)):
        b = bootstrap(dyestuff_ml, n=8, seed=seed, n_jobs=1, progress=False)
        pd.testing.assert_frame_equal(b.t, by_int)
    with pytest.raises(ValueError, match="seed must be >= 0"):
        bootstrap(dyestuff_ml, n=2, seed=-1, n_jobs=1, progress=False)


@needs_fork
def test_inside_a_daemonic_process_workers_are_threads(dyestuff_ml):
    """A multiprocessing.Pool worker is daemonic and may not fork children: the default
    n_jobs=2 must still work there (threads), with the replicates of a serial run."""
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()

    def child():
        try:
            queue.put(bootstrap(dyestuff_ml, n=8, seed=3, progress=False).t)
        except Exception as err:  # report it to the test, whatever it is
            queue.put(f"{type(err).__name__}: {err}")

    proc = ctx.Process(target=child, daemon=True)
    proc.start()
    got = queue.get(timeout=60)
    proc.join(timeout=60)
    assert not isinstance(got, str), got
    pd.testing.assert_frame_equal(got, _serial(dyestuff_ml, 8, 3))


def test_threads_where_fork_is_not_the_start_method(dyestuff_ml, monkeypatch):
    """macOS and Windows start processes by spawn: no fork there, threads instead."""
    monkeypatch.setattr(multiprocessing, "get_start_method", lambda allow_none=False: None)
    monkeypatch.setattr(multiprocessing, "get_all_start_methods",
                        lambda: ["spawn", "fork", "forkserver"])  # macOS's list

    def no_processes(*args, **kwargs):
        raise AssertionError("a process pool was started")

    monkeypatch.setattr(bootstrap_module, "ProcessPoolExecutor", no_processes)
    b = bootstrap(dyestuff_ml, n=8, seed=3, n_jobs=2, progress=False)
    pd.testing.assert_frame_equal(b.t, _serial(dyestuff_ml, 8, 3))


def _blas_threads() -> int:
    return max((p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"),
               default=0)


@needs_fork
def test_forked_workers_run_their_blas_on_one_thread(dyestuff_ml):
    with threadpool_limits(limits=2, user_api="blas"):
        if _blas_threads() < 2:
            pytest.skip("no BLAS with a thread pool in this process")
        b = bootstrap(dyestuff_ml, n=4, seed=1, n_jobs=2, progress=False,
                      func=lambda r: _blas_threads())
    assert list(b.t[0]) == [1, 1, 1, 1]


def test_progress_bar_on_and_off(dyestuff_ml, capsys):
    bootstrap(dyestuff_ml, n=3, seed=1, n_jobs=1, progress=False)
    assert capsys.readouterr().err == ""
    bootstrap(dyestuff_ml, n=3, seed=1, n_jobs=1, progress=True)
    assert "bootstrap" in capsys.readouterr().err


def test_glmm_bootstrap():
    g = gs.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)",
                 load_data("cbpp"), family="binomial")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b = g.bootstrap(n=6, seed=2, n_jobs=2, progress=False)
    assert list(b.t.columns) == ["sd_(Intercept)|herd", "(Intercept)", "period2", "period3",
                                 "period4"]
    assert b.n_failed == 0 and np.all(np.isfinite(b.t.to_numpy()))
    # the replicates scatter around the fit: each within 6 Wald SEs
    se = np.sqrt(np.diag(g.vcov.to_numpy()))
    assert np.all(np.abs(b.t.iloc[:, 1:].to_numpy() - g.fixef.to_numpy()) < 6 * se)


def test_bad_arguments(dyestuff_ml):
    with pytest.raises(TypeError, match="n must"):
        bootstrap(dyestuff_ml, n=0)
    with pytest.raises(TypeError, match="n_jobs"):
        bootstrap(dyestuff_ml, n=2, n_jobs=0)
