"""Refits from the fit's cross-products (refit.py) against fresh fits of the same data."""
import pickle
import warnings

import numpy as np
import pandas as pd
import pytest

import glmm_sparse as gs
from glmm_sparse.refit import Refitter, refit_ml
from refdata import load_data

SLEEP = "Reaction ~ Days + (Days | Subject)"
CBPP = "cbind(incidence, size - incidence) ~ period + (1 | herd)"


@pytest.fixture(scope="module")
def sleep():
    return load_data("sleepstudy")


@pytest.fixture(scope="module")
def fit(sleep):
    return gs.lmer(SLEEP, sleep)


def new_response(sleep, seed=1):
    rng = np.random.default_rng(seed)
    return sleep["Reaction"].to_numpy() + rng.normal(0.0, 20.0, len(sleep))


def assert_same_fit(a, b, *, rtol):
    assert a.loglik == pytest.approx(b.loglik, rel=1e-9, abs=1e-7)
    np.testing.assert_allclose(a.fixef, b.fixef, rtol=rtol)
    np.testing.assert_allclose(a.varcorr["vcov"], b.varcorr["vcov"], rtol=rtol)
    np.testing.assert_allclose(a.ranef["condval"], b.ranef["condval"], rtol=rtol, atol=1e-8)


def test_refit_of_the_same_response_is_the_fit(fit, sleep):
    again = fit.refit(sleep["Reaction"])
    # BOBYQA starts at the optimum and its first steps probe around it: theta comes back
    # to within its tolerances (1e-8 here), not bit for bit
    np.testing.assert_allclose(again.theta, fit.theta, rtol=1e-7)
    np.testing.assert_allclose(again.fixef, fit.fixef, rtol=1e-9)
    assert again.objective == pytest.approx(fit.objective, rel=1e-13)


def test_refit_of_a_new_response_equals_a_fresh_fit(fit, sleep):
    y = new_response(sleep)
    fresh = gs.lmer(SLEEP, sleep.assign(Reaction=y))
    # the two start BOBYQA from different theta (the fit's optimum, lme4's default), so
    # they agree to the optimizer's tolerance, not to rounding
    assert_same_fit(fit.refit(y), fresh, rtol=1e-5)


def test_refit_with_weights_and_offset(sleep):
    data = sleep.assign(w=np.linspace(0.5, 2.0, len(sleep)), off=0.3 * sleep["Days"])
    m = gs.lmer(SLEEP, data, weights="w", offset="off")
    y = new_response(sleep, seed=2)
    fresh = gs.lmer(SLEEP, data.assign(Reaction=y), weights="w", offset="off")
    assert_same_fit(m.refit(y), fresh, rtol=1e-5)


def test_refit_ml_is_the_ml_fit(fit, sleep):
    ml = refit_ml(fit)
    direct = gs.lmer(SLEEP, sleep, reml=False)
    assert not ml.reml
    assert_same_fit(ml, direct, rtol=1e-5)
    assert refit_ml(direct) is direct  # an ML fit is returned as it is


def test_one_refitter_serves_many_responses(fit, sleep):
    refitter = Refitter(fit)
    first = refitter.fit(new_response(sleep, 3))
    second = refitter.fit(new_response(sleep, 4))
    # the first result's conditional SDs are computed after the Refitter moved on
    alone = fit.refit(new_response(sleep, 3))
    pd.testing.assert_frame_equal(first.ranef, alone.ranef, rtol=1e-10)
    assert second.loglik != first.loglik
    # and the original fit's objective is untouched
    assert fit.model.at_optimum().objective() == pytest.approx(fit.objective, rel=1e-13)


def test_a_pickled_result_refits(fit, sleep):
    again = pickle.loads(pickle.dumps(fit))
    assert again.model.objective is None
    y = new_response(sleep, 5)
    # the unpickled context sums its cross-products anew (same values to rounding), and
    # BOBYQA's path from them differs at the optimizer's tolerance
    assert_same_fit(again.refit(y), fit.refit(y), rtol=1e-7)


def test_glmer_refit(cbpp_data):
    g = gs.glmer(CBPP, cbpp_data, family="binomial")
    same = g.refit(g.model.frame.y)
    assert same.loglik == pytest.approx(g.loglik, abs=1e-8)
    rng = np.random.default_rng(7)
    size = cbpp_data["size"].to_numpy()
    incidence = rng.binomial(size, 0.15)
    fresh = gs.glmer(CBPP, cbpp_data.assign(incidence=incidence), family="binomial")
    refitted = g.refit(incidence / size)
    assert refitted.loglik == pytest.approx(fresh.loglik, abs=1e-6)
    np.testing.assert_allclose(refitted.fixef, fresh.fixef, rtol=1e-4)


@pytest.fixture(scope="module")
def cbpp_data():
    return load_data("cbpp")


@pytest.mark.parametrize("bad, message", [
    (np.ones(10), "one value per row used in the fit \\(180\\)"),
    (np.full(180, np.nan), "missing or infinite value \\(position 0\\)"),
    (np.full(180, 3.0), "is constant"),
    (["a"] * 180, "must be numbers"),
])
def test_bad_new_responses_are_refused(fit, bad, message):
    with pytest.raises(gs.DataError, match=message):
        fit.refit(bad)


def test_binomial_refit_refuses_impossible_proportions(cbpp_data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = gs.glmer(CBPP, cbpp_data, family="binomial")
    with pytest.raises(gs.DataError):
        g.refit(np.full(g.nobs, 1.5))


def test_threads_asking_an_unpickled_result_for_its_objective_build_it_once(fit):
    from concurrent.futures import ThreadPoolExecutor

    again = pickle.loads(pickle.dumps(fit))
    with ThreadPoolExecutor(8) as pool:
        objectives = list(pool.map(lambda _: again.model.at_optimum(), range(16)))
    assert all(obj is objectives[0] for obj in objectives)
    assert objectives[0].objective() == pytest.approx(fit.objective, rel=1e-12)


def test_refits_of_an_unpickled_result_sum_the_cross_products_once(fit, sleep, monkeypatch):
    import glmm_sparse.context as context

    calls = []
    original = context.accumulate
    monkeypatch.setattr(context, "accumulate", lambda frame: calls.append(1) or original(frame))
    again = pickle.loads(pickle.dumps(fit))
    refitter = Refitter(again)
    for seed in (6, 7, 8):
        refitter.fit(new_response(sleep, seed))
    again.refit(new_response(sleep, 9))
    assert len(calls) == 1


def test_glmer_refit_refuses_a_response_without_a_finite_maximum(cbpp_data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        g = gs.glmer(CBPP, cbpp_data, family="binomial")
    with pytest.raises(gs.DataError, match="0 \\(failure\\) in every row"):
        g.refit(np.zeros(g.nobs))


@pytest.mark.parametrize("call", [
    lambda m: m.refit(m.fitted), lambda m: m.simulate(), lambda m: m.predict(),
    lambda m: m.coef_table(), lambda m: m.icc(), lambda m: m.profile(),
    lambda m: gs.variance_component_test(m, "Subject"), lambda m: gs.anova(m, m),
])
def test_methods_that_need_the_model_say_so_for_a_result_without_one(fit, call):
    import dataclasses

    bare = dataclasses.replace(fit, model=None)
    with pytest.raises(gs.ModelSpecError, match="needs the model behind the result"):
        call(bare)


def test_changing_the_data_after_the_fit_changes_nothing_in_the_result(sleep):
    data = sleep.copy().assign(w=np.linspace(0.5, 2.0, len(sleep)), off=0.1 * sleep["Days"])
    m = gs.lmer(SLEEP, data, reml=False, weights="w", offset="off")
    frame = m.model.frame
    before = [frame.y.copy(), frame.weights.copy(), frame.offset.copy()]
    # in place, as .loc writes (pandas then writes into the column's own buffer)
    data.loc[:, "Reaction"] = 2.0 * data["Reaction"]
    data.loc[0, "w"] = 7.0
    data.loc[0, "off"] = -5.0
    for kept, now in zip(before, [frame.y, frame.weights, frame.offset]):
        np.testing.assert_array_equal(now, kept)
    assert refit_ml(gs.lmer(SLEEP, sleep, weights=np.ones(len(sleep)))).loglik == pytest.approx(
        gs.lmer(SLEEP, sleep, reml=False).loglik, rel=1e-9)
