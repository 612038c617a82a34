"""warmstart.ModeTangent: stage 2's first-order prediction of the PIRLS mode.

The tangent's columns are checked against central differences of the modes themselves
(PIRLS converged at params +- h e_j), for scalar and 2 x 2 T_t and both families'
canonical links; then what it is for: one Newton iteration where the previous mode's b
needs more, and the same optimum with and without it.
"""

import warnings

import numpy as np
import pandas as pd
import pytest

import glmm_sparse as gs
from glmm_sparse import warmstart
from glmm_sparse.families import get_family
from glmm_sparse.formula import parse_formula
from glmm_sparse.frame import build_frame
from glmm_sparse.glmm import GlmmObjective
from glmm_sparse.pirls import GlmmData

CROSSED = "y ~ x1 + x2 + (1 | g1) + (1 | g2)"
SLOPES = "y ~ x1 + x2 + (1 + x1 | g1) + (1 | g2)"


def crossed_data(family: str, seed: int = 1, n: int = 3000) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g1, g2 = rng.integers(0, 60, n), rng.integers(0, 12, n)
    x1, x2 = rng.standard_normal(n), rng.standard_normal(n)
    eta = (-0.3 + 0.4 * x1 - 0.3 * x2 + 0.8 * rng.standard_normal(60)[g1]
           + 0.3 * rng.standard_normal(60)[g1] * x1 + 0.4 * rng.standard_normal(12)[g2])
    if family == "binomial":
        y = (rng.random(n) < 1.0 / (1.0 + np.exp(-eta))).astype(float)
    else:
        y = rng.poisson(np.exp(eta)).astype(float)
    return pd.DataFrame({"y": y, "x1": x1, "x2": x2, "g1": pd.Categorical(g1),
                         "g2": pd.Categorical(g2)})


def objective(formula: str, df: pd.DataFrame, family: str, link: str | None = None,
              factor_mode: str = "measure") -> GlmmObjective:
    frame = build_frame(parse_formula(formula), formula, df)
    data = GlmmData.from_frame(frame, get_family(family, link))
    return GlmmObjective(data, factor_mode=factor_mode)


def mode_b(obj: GlmmObjective, params: np.ndarray) -> np.ndarray:
    """b = Lambda u at the stage-2 mode of params, converged from the family's start (so
    that the tangent does not take part)."""
    fresh = GlmmObjective(obj.data)
    fresh.update_stage2(params)
    T, offs = fresh.pls.T, fresh.pls.cp.offsets
    return warmstart.lambda_times(T, fresh.state.u[:, None], offs, fresh.pls.theta_map.ks)[:, 0]


@pytest.mark.parametrize("formula, family", [(CROSSED, "binomial"), (SLOPES, "binomial"),
                                             (CROSSED, "poisson"), (SLOPES, "poisson")])
def test_the_tangent_is_the_derivative_of_the_mode(formula, family):
    df = crossed_data(family)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = gs.glmer(formula, df, family=family)
    params = np.concatenate([m.theta, m.fixef.to_numpy()])
    obj = objective(formula, df, family)
    obj.stage2(params)
    anchor = obj.tangent.best
    assert anchor is not None and anchor.D.shape == (obj.pls.cp.q, params.shape[0])
    assert np.allclose(anchor.b, mode_b(obj, params), rtol=0, atol=1e-12)
    h = 1e-4
    for j in range(params.shape[0]):
        e = np.zeros_like(params)
        e[j] = h
        central = (mode_b(obj, params + e) - mode_b(obj, params - e)) / (2 * h)
        # central differences err by O(h^2) and the mode's convergence (~1e-14 / h)
        scale = np.max(np.abs(central))
        assert np.max(np.abs(anchor.D[:, j] - central)) < 1e-6 * max(scale, 1.0), j


@pytest.mark.parametrize("factor_mode", ["measure", "schur"])
def test_one_newton_iteration_from_the_prediction(factor_mode):
    """A convergence-check step from the optimum: the prediction starts PIRLS within its
    tolerance (one iteration); the previous mode's b, the fallback, needs two. With the
    Schur factor as with CHOLMOD's."""
    df = crossed_data("binomial")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = gs.glmer(CROSSED, df, family="binomial")
    params = np.concatenate([m.theta, m.fixef.to_numpy()])
    obj = objective(CROSSED, df, "binomial", factor_mode=factor_mode)
    obj.stage2(params)
    step = np.zeros_like(params)
    step[-1] = 1e-4  # a beta moves every b
    obj.update_stage2(params + step)
    assert obj.state.iterations == 1
    obj.stage2(params)
    obj.tangent.best = None  # no anchor: the previous mode's b
    obj.update_stage2(params + step)
    assert obj.state.iterations == 2


def test_same_optimum_with_and_without_the_tangent(monkeypatch):
    df = crossed_data("binomial", seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with_tangent = gs.glmer(SLOPES, df, family="binomial")
        monkeypatch.setattr(warmstart, "TRUST", -1.0)  # every prediction refused
        without = gs.glmer(SLOPES, df, family="binomial")
    assert with_tangent.loglik == pytest.approx(without.loglik, rel=1e-10, abs=0)
    assert np.allclose(with_tangent.fixef, without.fixef, rtol=1e-5, atol=0)
    assert np.allclose(with_tangent.theta, without.theta, rtol=1e-4, atol=1e-6)
    assert np.allclose(with_tangent.vcov, without.vcov, rtol=1e-4, atol=0)


def test_no_prediction_beyond_trust_or_with_a_singular_t():
    df = crossed_data("binomial")
    obj = objective(CROSSED, df, "binomial")
    params = np.array([0.8, 0.4, -0.3, 0.4, -0.3])
    obj.stage2(params)
    T = obj.pls.theta_map.factors(params[:2])
    near = obj.tangent.predict(params, T)
    assert np.allclose(near, obj.state.u, rtol=0, atol=1e-14)  # at the anchor: its mode
    far = params + np.array([0, 0, 0.5, 0, 0])  # the intercept 0.5 up: b moves beyond TRUST
    assert obj.tangent.best.displacement(far) > warmstart.TRUST
    assert obj.tangent.predict(far, T) is None
    assert obj.tangent.predict(params + np.array([0, 0, np.nan, 0, 0]), T) is None
    T0 = obj.pls.theta_map.factors(np.array([0.0, 0.4]))
    assert obj.tangent.predict(np.array([0.0, 0.4, -0.3, 0.4, -0.3]), T0) is None


def test_a_non_canonical_link_still_starts_nearer_than_the_previous_mode():
    """probit: M holds Fisher's weights, so the prediction is first order only, but it
    starts PIRLS nearer the mode than the previous mode's b does."""
    df = crossed_data("binomial", seed=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = gs.glmer(CROSSED, df, family="binomial", link="probit")
    params = np.concatenate([m.theta, m.fixef.to_numpy()])
    obj = objective(CROSSED, df, "binomial", link="probit")
    obj.stage2(params)
    b0 = obj.tangent.best.b
    step = np.array([2e-3, -2e-3, 1e-3, 1e-3, -1e-3])
    T = obj.pls.theta_map.factors((params + step)[:2])
    u = obj.tangent.predict(params + step, T)
    predicted = warmstart.lambda_times(T, u[:, None], obj.pls.cp.offsets, obj.pls.theta_map.ks)
    exact = mode_b(obj, params + step)
    assert np.max(np.abs(predicted[:, 0] - exact)) < 0.1 * np.max(np.abs(b0 - exact))


def test_no_tangent_beyond_its_share_of_memory(monkeypatch):
    monkeypatch.setattr(warmstart, "MEMORY_SHARE", 0.0)
    obj = objective(CROSSED, crossed_data("binomial"), "binomial")
    obj.stage2(np.array([0.8, 0.4, -0.3, 0.4, -0.3]))
    assert obj.tangent.fits is False and obj.tangent.best is None
    assert warmstart.tangent_bytes(10**6, 7, 3) == 8 * 10**6 * (35 + 3 + 1)


def test_without_fixed_effects_zt_wx_needs_no_pass(monkeypatch):
    import glmm_sparse.glmm as glmm_module

    df = crossed_data("binomial")
    formula = "y ~ 0 + (1 | g1) + (1 | g2)"
    obj = objective(formula, df, "binomial")
    passes = []
    inner = glmm_module.row_pass
    monkeypatch.setattr(glmm_module, "row_pass", lambda *a, **k: passes.append(1) or inner(*a, **k))
    obj.stage2(np.array([0.8, 0.4]))
    assert obj.tangent.best is not None and obj.tangent.ZtWX.shape == (obj.pls.cp.q, 0)
    assert passes == []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with_tangent = gs.glmer(formula, df, family="binomial")
        monkeypatch.setattr(warmstart, "TRUST", -1.0)
        without = gs.glmer(formula, df, family="binomial")
    assert with_tangent.loglik == pytest.approx(without.loglik, rel=1e-10, abs=0)


def test_agq_fits_the_same_with_and_without_the_tangent(monkeypatch):
    df = crossed_data("poisson", seed=5)
    formula = "y ~ x1 + x2 + (1 | g1)"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with_tangent = gs.glmer(formula, df, family="poisson", nagq=7)
        monkeypatch.setattr(warmstart, "TRUST", -1.0)
        without = gs.glmer(formula, df, family="poisson", nagq=7)
    assert with_tangent.loglik == pytest.approx(without.loglik, rel=1e-10, abs=0)
    assert np.allclose(with_tangent.fixef, without.fixef, rtol=1e-6, atol=0)
    assert np.allclose(with_tangent.vcov, without.vcov, rtol=1e-4, atol=0)


def test_a_mode_on_the_bound_leaves_no_anchor():
    """theta_1 = 0: b = Lambda u does not determine u, so no tangent is taken there."""
    df = crossed_data("binomial")
    obj = objective(CROSSED, df, "binomial")
    obj.stage2(np.array([0.0, 0.4, -0.3, 0.4, -0.3]))
    assert obj.tangent.best is None


def test_only_a_new_best_is_kept_and_zt_wx_retaken_only_far_from_it(monkeypatch):
    df = crossed_data("binomial")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = gs.glmer(CROSSED, df, family="binomial")
    optimum = np.concatenate([m.theta, m.fixef.to_numpy()])
    obj = objective(CROSSED, df, "binomial")
    calls = []
    inner = GlmmObjective._zt_wx
    monkeypatch.setattr(GlmmObjective, "_zt_wx", lambda self: calls.append(1) or inner(self))
    obj.stage2(optimum + np.array([0.2, 0.2, 0.1, 0.1, 0.1]))
    assert len(calls) == 1  # the first mode takes it
    first = obj.tangent.best
    obj.stage2(optimum)  # a new best, its b far from there
    assert len(calls) == 2 and obj.tangent.best is not first
    best = obj.tangent.best
    obj.stage2(optimum + np.array([0.3, 0, 0, 0, 0]))  # worse: neither kept nor retaken
    assert len(calls) == 2 and obj.tangent.best is best
    lower = best.value - 1.0  # offered as a new best, 1e-9 from the last one taken
    obj.tangent.add_mode(obj.pls, obj.state.u, optimum + np.array([0, 0, 1e-9, 0, 0]), lower,
                         lambda: calls.append(1) or inner(obj))
    assert obj.tangent.best.value == lower and len(calls) == 2  # within REFRESH: kept
    obj.tangent.add_mode(obj.pls, obj.state.u, optimum + np.array([0, 0, 0.05, 0, 0]),
                         lower - 1.0, lambda: calls.append(1) or inner(obj))
    assert len(calls) == 3  # a new best far from where Z'WX was taken: retaken
