"""Invariances that reference numbers cannot cover (STYLE.md 12).

Row order, level labels, unit weights and an affine change of the response must not
change the fit beyond what the algebra says.
"""
import numpy as np
import pandas as pd
import pytest

import glmm_sparse as gs
from refdata import load_data

FORMULA = "Reaction ~ Days + (Days | Subject)"


@pytest.fixture(scope="module")
def sleep():
    return load_data("sleepstudy")


@pytest.fixture(scope="module", params=[True, False], ids=["REML", "ML"])
def base_fit(request, sleep):
    return request.param, gs.lmer(FORMULA, sleep, reml=request.param)


def assert_same_fit(a, b, rtol=1e-6):
    assert a.loglik == pytest.approx(b.loglik, rel=1e-10)
    assert np.allclose(a.fixef.to_numpy(), b.fixef.to_numpy(), rtol=rtol)
    assert np.allclose(a.varcorr["sdcor"].to_numpy(), b.varcorr["sdcor"].to_numpy(), rtol=rtol)


def test_row_permutation(base_fit, sleep):
    reml, m = base_fit
    shuffled = sleep.sample(frac=1.0, random_state=3)
    m2 = gs.lmer(FORMULA, shuffled, reml=reml)
    assert_same_fit(m, m2)
    # fitted values follow their rows
    assert np.allclose(m2.fitted.sort_index().to_numpy(), m.fitted.to_numpy(), rtol=1e-6)


def test_relabelled_levels(base_fit, sleep):
    reml, m = base_fit
    relabelled = sleep.assign(Subject=sleep["Subject"].astype(str).map(lambda s: f"S{s[::-1]}"))
    m2 = gs.lmer(FORMULA, relabelled, reml=reml)
    assert_same_fit(m, m2)
    mapping = dict(zip(sleep["Subject"].astype(str), relabelled["Subject"]))
    a = m.ranef.assign(grp=m.ranef["grp"].map(mapping)).set_index(["term", "grp"]).sort_index()
    b = m2.ranef.set_index(["term", "grp"]).sort_index()
    assert np.allclose(a["condval"], b["condval"], rtol=1e-5, atol=1e-6)


def test_unit_weights_equal_no_weights(base_fit, sleep):
    reml, m = base_fit
    m2 = gs.lmer(FORMULA, sleep.assign(w=1.0), reml=reml, weights="w")
    assert m2.loglik == m.loglik
    assert np.array_equal(m2.fixef.to_numpy(), m.fixef.to_numpy())


def test_affine_response(base_fit, sleep):
    """y -> a + c y: theta unchanged, beta and sigma scale, loglik shifts by -dof log c."""
    reml, m = base_fit
    a, c = 17.0, 0.01
    m2 = gs.lmer(FORMULA, sleep.assign(Reaction=a + c * sleep["Reaction"]), reml=reml)
    dof = m.nobs - (len(m.fixef) if reml else 0)
    assert m2.loglik == pytest.approx(m.loglik - dof * np.log(c), rel=1e-9)
    assert np.allclose(m2.theta, m.theta, rtol=1e-4, atol=1e-6)
    want = c * m.fixef.to_numpy() + np.array([a, 0.0])
    assert np.allclose(m2.fixef.to_numpy(), want, rtol=1e-6)
    assert m2.sigma == pytest.approx(c * m.sigma, rel=1e-6)


def test_scaling_all_weights(sleep):
    """Weights c w describe the same distribution of y: sigma -> sqrt(c) sigma, theta ->
    theta / sqrt(c); loglik, beta and the random-effect covariances are unchanged."""
    rng = np.random.default_rng(0)
    data = sleep.assign(w=rng.uniform(0.5, 2.0, len(sleep)))
    c = 4.0
    m1 = gs.lmer(FORMULA, data, weights="w")
    m2 = gs.lmer(FORMULA, data.assign(w=c * data["w"]), weights="w")
    assert m2.loglik == pytest.approx(m1.loglik, rel=1e-10)
    assert np.allclose(m2.fixef.to_numpy(), m1.fixef.to_numpy(), rtol=1e-6)
    assert np.allclose(m2.theta, m1.theta / np.sqrt(c), rtol=1e-5, atol=1e-7)
    assert m2.sigma == pytest.approx(np.sqrt(c) * m1.sigma, rel=1e-6)
    re1, re2 = m1.varcorr.iloc[:-1], m2.varcorr.iloc[:-1]
    assert np.allclose(re2["vcov"].to_numpy(), re1["vcov"].to_numpy(), rtol=1e-5)


def criterion_at(data: pd.DataFrame, theta, reml: bool):
    """The n-free criterion and beta at a fixed theta (no optimizer involved)."""
    from glmm_sparse.crossprod import accumulate
    from glmm_sparse.formula import parse_formula
    from glmm_sparse.frame import build_frame
    from glmm_sparse.objective import LmmObjective

    obj = LmmObjective(accumulate(build_frame(parse_formula(FORMULA), FORMULA, data)), reml=reml)
    return obj(np.asarray(theta)), obj.beta()


@pytest.mark.parametrize("reml", [True, False])
def test_criterion_is_exactly_invariant_at_fixed_theta(sleep, reml):
    """Row order and labels change only the summation order: 1e-12 relative."""
    theta = [0.9, 0.05, 0.2]
    value, beta = criterion_at(sleep, theta, reml)
    shuffled = sleep.sample(frac=1.0, random_state=11)
    relabelled = sleep.assign(Subject=sleep["Subject"].astype(str) + "x")
    for other in (shuffled, relabelled):
        v2, b2 = criterion_at(other, theta, reml)
        assert v2 == pytest.approx(value, rel=1e-12)
        assert np.allclose(b2, beta, rtol=1e-11)
