"""simulate(): seeded draws from the fitted model, checked by their moments.

Moments are compared with the fitted model's within a multiple of their Monte-Carlo
standard error (computed, not guessed); the seeds are fixed, so the checks are
deterministic.
"""
import warnings

import numpy as np
import pandas as pd
import pytest

import glmm_sparse as gs
from glmm_sparse.errors import ModelSpecError
from glmm_sparse.simulate import Simulator, simulate_responses
from refdata import load_data

NSIM = 400


@pytest.fixture(scope="module")
def sleep_fit():
    return gs.lmer("Reaction ~ Days + (Days | Subject)", load_data("sleepstudy"))


@pytest.fixture(scope="module")
def cbpp_fit():
    return gs.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)",
                    load_data("cbpp"), family="binomial")


def test_table_shape_names_and_index(sleep_fit):
    sims = sleep_fit.simulate(nsim=3, seed=1)
    assert isinstance(sims, pd.DataFrame)
    assert list(sims.columns) == ["sim_1", "sim_2", "sim_3"]
    assert sims.index.equals(sleep_fit.model.frame.row_index)


def test_seeded_draws_are_reproducible_and_prefix_stable(sleep_fit):
    a = sleep_fit.simulate(nsim=4, seed=7)
    b = sleep_fit.simulate(nsim=4, seed=7)
    c = sleep_fit.simulate(nsim=2, seed=7)
    d = sleep_fit.simulate(nsim=2, seed=8)
    pd.testing.assert_frame_equal(a, b)
    pd.testing.assert_frame_equal(a.iloc[:, :2], c)  # column j uses the j-th child seed
    assert not np.allclose(c.to_numpy(), d.to_numpy())


def test_population_draws_have_mean_x_beta_and_variance_sigma2(sleep_fit):
    y = simulate_responses(sleep_fit, nsim=NSIM, seed=3, re_form="population")
    frame = sleep_fit.model.frame
    mean = frame.X @ sleep_fit.fixef.to_numpy()
    resid = y - mean[:, None]
    # per-row means: each within 4.5 SE (180 rows; a normal exceeds 4.5 with p 7e-6)
    se = sleep_fit.sigma / np.sqrt(NSIM)
    assert np.max(np.abs(resid.mean(axis=1))) < 4.5 * se
    # pooled variance over 180 x 400 draws: relative SE sqrt(2 / N)
    ratio = resid.var() / sleep_fit.sigma**2
    assert abs(ratio - 1.0) < 4.5 * np.sqrt(2.0 / resid.size)


def test_new_random_effects_give_the_marginal_covariance(sleep_fit):
    y = simulate_responses(sleep_fit, nsim=2000, seed=4)
    frame = sleep_fit.model.frame
    vc = sleep_fit.varcorr
    var0, var1, cov01 = vc.vcov.iloc[0], vc.vcov.iloc[1], vc.vcov.iloc[2]
    rows = np.flatnonzero(frame.terms[0].codes == 0)  # one subject, Days 0..9
    days = frame.X[rows, 1]
    Z = np.column_stack([np.ones_like(days), days])
    V = Z @ np.array([[var0, cov01], [cov01, var1]]) @ Z.T + sleep_fit.sigma**2 * np.eye(len(rows))
    S = np.cov(y[rows])
    # each entry of a sample covariance has SE sqrt((V_ii V_jj + V_ij^2) / N)
    se = np.sqrt((np.outer(np.diag(V), np.diag(V)) + V**2) / y.shape[1])
    assert np.max(np.abs(S - V) / se) < 4.5


def test_conditional_draws_centre_on_the_fitted_values(sleep_fit):
    y = simulate_responses(sleep_fit, nsim=NSIM, seed=5, re_form="conditional")
    dev = y.mean(axis=1) - sleep_fit.fitted.to_numpy()
    assert np.max(np.abs(dev)) < 4.5 * sleep_fit.sigma / np.sqrt(NSIM)


def test_prior_weights_scale_the_noise():
    rng = np.random.default_rng(0)
    g = np.repeat(np.arange(20), 10)
    w = np.tile([1.0, 4.0], 100)
    y = 1.0 + rng.normal(size=20)[g] + rng.normal(size=200) / np.sqrt(w)
    m = gs.lmer("y ~ 1 + (1 | g)", pd.DataFrame({"y": y, "g": g.astype(str)}), weights=w)
    sims = simulate_responses(m, nsim=NSIM, seed=6, re_form="conditional")
    resid = sims - m.fitted.to_numpy()[:, None]
    for wt in (1.0, 4.0):
        sel = resid[w == wt]
        ratio = sel.var() * wt / m.sigma**2
        assert abs(ratio - 1.0) < 4.5 * np.sqrt(2.0 / sel.size)


def test_binomial_draws_are_proportions_of_the_trials(cbpp_fit):
    y = simulate_responses(cbpp_fit, nsim=200, seed=1, re_form="population")
    trials = cbpp_fit.model.frame.weights
    counts = y * trials[:, None]
    assert np.allclose(counts, np.round(counts)) and y.min() >= 0 and y.max() <= 1
    mu = 1.0 / (1.0 + np.exp(-(cbpp_fit.model.frame.X @ cbpp_fit.fixef.to_numpy())))
    se = np.sqrt(mu * (1 - mu) / trials / 200)
    assert np.max(np.abs(y.mean(axis=1) - mu) / se) < 4.5


def test_glmm_random_effects_are_not_scaled_by_sigma(cbpp_fit):
    sim = Simulator.from_result(cbpp_fit)
    b = np.array([sim.new_b(np.random.default_rng(i)) for i in range(2000)])
    sd = cbpp_fit.theta[0]
    assert abs(b.std() / sd - 1.0) < 4.5 / np.sqrt(2 * b.size)


@pytest.mark.parametrize("family, case", [("gamma", "gamma"), ("inverse_gaussian", "invgauss")])
def test_dispersion_families_match_mean_and_variance(family, case):
    data = load_data(case, "glmm")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = gs.glmer("y ~ x + (1 | g)", data, family=family, link="log")
    y = simulate_responses(m, nsim=NSIM, seed=2, re_form="conditional")
    mu = m.fitted.to_numpy()
    var = m.sigma**2 * (mu**2 if family == "gamma" else mu**3)
    z = (y - mu[:, None]) / np.sqrt(var)[:, None]
    assert abs(z.mean()) < 4.5 / np.sqrt(z.size)
    # the sample variance of z has SE sqrt((E z^4 - 1) / N)
    m4 = np.mean(z**4)
    assert abs(z.var() - 1.0) < 4.5 * np.sqrt((m4 - 1.0) / z.size)


def test_poisson_draws_are_counts():
    data = load_data("poisson_nested", "glmm")
    m = gs.glmer("count ~ x + offset(log(exposure)) + (1 | region/site)", data,
                 family="poisson")
    y = m.simulate(nsim=5, seed=3).to_numpy()
    assert np.all(y >= 0) and np.allclose(y, np.round(y))


@pytest.mark.parametrize("re_form", ["population", "conditional", None, "new", " Conditional "])
def test_re_form_spellings(sleep_fit, re_form):
    assert sleep_fit.simulate(nsim=1, seed=1, re_form=re_form).shape == (sleep_fit.nobs, 1)


# lme4 1.1-31, sleepstudy, fm <- lmer(Reaction ~ Days + (Days | Subject)):
#   set.seed(1); simulate(fm, re.form = ~0) equals set.seed(1); simulate(fm, re.form = NA)
#   (max difference 0): new random effects; predict(fm, re.form = ~0) is X beta.
#   simulate(fm, re.form = ~.) and predict(fm, re.form = ~.) both stop with "No random
#   effects terms specified in formula".
@pytest.mark.parametrize("re_form, reason", [
    ("NA", "new random effects, its predict as none"),
    ("~0", "new random effects, its predict as none"),
    ("~ 0", "new random effects, its predict as none"),
    ("~-1", "new random effects, its predict as none"),
    ("~.", "lme4 refuses"),
    ("~ .", "lme4 refuses"),
])
def test_lme4_spellings_that_mean_something_else_are_refused(sleep_fit, re_form, reason):
    with pytest.raises(ModelSpecError, match=reason):
        sleep_fit.simulate(re_form=re_form)


def test_bad_arguments_are_refused(sleep_fit):
    with pytest.raises(ModelSpecError, match="re_form"):
        sleep_fit.simulate(re_form="~ (1 | Subject)")
    with pytest.raises(TypeError, match="nsim"):
        sleep_fit.simulate(nsim=0)


def test_seed_sequence_and_generator_seeds(sleep_fit):
    by_int = sleep_fit.simulate(nsim=3, seed=7)
    pd.testing.assert_frame_equal(sleep_fit.simulate(nsim=3, seed=np.random.SeedSequence(7)),
                                  by_int)
    pd.testing.assert_frame_equal(sleep_fit.simulate(nsim=3, seed=np.int64(7)), by_int)
    rng = np.random.default_rng(7)  # a fresh Generator spawns the children of its seed
    pd.testing.assert_frame_equal(sleep_fit.simulate(nsim=3, seed=rng), by_int)
    again = sleep_fit.simulate(nsim=3, seed=rng)  # ... and new ones when passed again
    assert not np.allclose(again.to_numpy(), by_int.to_numpy())


@pytest.mark.parametrize("seed, error", [(1.5, TypeError), ("7", TypeError), (True, TypeError),
                                         (-1, ValueError),
                                         (np.random.RandomState(1), TypeError)])
def test_bad_seeds_are_refused_clearly(sleep_fit, seed, error):
    with pytest.raises(error, match="seed must be"):
        sleep_fit.simulate(nsim=1, seed=seed)
