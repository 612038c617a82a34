"""A fixed residual SD (``lmer(..., sigma=)``): the known-variance meta-regression against
metafor's rma, the fixed-sigma criterion against dense NumPy, and its relation to the
profiled fit.

References: tests/reference/inference/raudenbush1985_known_variances.json (rma with its
default convergence threshold, from generate_inference.R) and
raudenbush1985_known_variances_converged.json (the same fits iterated to convergence,
generate_known_variances.R); see the README there.
"""
from __future__ import annotations

import json
import warnings
from functools import cache

import numpy as np
import pandas as pd
import pytest
from refdata import REFERENCE, load_data

import glmm_sparse as gs
from glmm_sparse.crossprod import accumulate
from glmm_sparse.errors import ModelSpecError
from glmm_sparse.formula import parse_formula
from glmm_sparse.frame import build_frame
from glmm_sparse.objective import LmmObjective

INFERENCE = REFERENCE / "inference"
META = "yi ~ weeks + (1 | study)"
RTOL = 1e-5  # the tolerance for metafor's tau^2, betas and SEs


@cache
def raudenbush() -> pd.DataFrame:
    d = pd.read_csv(INFERENCE / "raudenbush1985.csv")
    d["study"] = pd.Categorical(d["study"].astype(str), categories=[str(s) for s in d["study"]])
    d["w"] = 1.0 / d["vi"]
    return d


@cache
def meta_fit(reml: bool):
    return gs.lmer(META, raudenbush(), weights="w", sigma=1.0, reml=reml)


def reference(name: str) -> dict:
    return json.loads((INFERENCE / name).read_text())


def half_logdet_XtX() -> float:
    """metafor's REMLf = TRUE term, + 1/2 log|X'X|, absent from lme4's REML criterion."""
    X = np.column_stack([np.ones(19), raudenbush()["weeks"].to_numpy(float)])
    return 0.5 * np.linalg.slogdet(X.T @ X)[1]


# ---- metafor ---------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["reml", "ml"])
def test_metafor_rma_converged(method):
    """tau^2, beta, SEs and vcov to 1e-5 relative; log-likelihoods and AIC with metafor's
    constant: its REML log-likelihood adds 1/2 log|X'X| (REMLf = TRUE)."""
    ref = reference("raudenbush1985_known_variances_converged.json")[method]
    m = meta_fit(method == "reml")
    assert m.sigma == 1.0 and m.varcorr["vcov"].iloc[-1] == 1.0
    np.testing.assert_allclose(m.varcorr["vcov"].iloc[0], ref["tau2"], rtol=RTOL)
    np.testing.assert_allclose(m.fixef.to_numpy(), ref["beta"], rtol=RTOL)
    np.testing.assert_allclose(np.sqrt(np.diag(m.vcov)), ref["se"], rtol=RTOL)
    np.testing.assert_allclose(m.vcov.to_numpy(), ref["vb"], rtol=2 * RTOL)
    # npar counts beta and tau^2 (metafor's parms), not the fixed sigma
    assert m.npar == ref["parms"] == 3
    if method == "ml":
        np.testing.assert_allclose(m.loglik, ref["loglik"], rtol=1e-8)
        np.testing.assert_allclose(m.aic, ref["aic"], rtol=1e-8)
        np.testing.assert_allclose(m.bic, ref["bic"], rtol=1e-8)  # both log(k) for ML
    else:
        np.testing.assert_allclose(m.loglik, ref["loglik_remlf_false"], rtol=1e-8)
        np.testing.assert_allclose(m.loglik + half_logdet_XtX(), ref["loglik"], rtol=1e-7)
        np.testing.assert_allclose(m.aic - 2 * half_logdet_XtX(), ref["aic"], rtol=1e-8)
        # metafor's REML BIC uses log(k - p), lme4 (and we) log(n)
        assert m.bic == pytest.approx(m.objective + 3 * np.log(19), rel=1e-12)


@pytest.mark.parametrize("method", ["reml", "ml"])
def test_metafor_blups_and_study_effects(method):
    """fitted = metafor's blup() (X beta + the study's EBLUP); ranef = ranef(); condsd is
    lme4's conditional SD given beta, sqrt(l_i v_i) with l_i = tau^2 / (tau^2 + v_i),
    while metafor's ranef SE adds the beta part l_i^2 x_i' vb x_i."""
    ref = reference("raudenbush1985_known_variances_converged.json")[method]
    m = meta_fit(method == "reml")
    scale = np.max(np.abs(ref["blup"]))
    np.testing.assert_allclose(m.fitted.to_numpy(), ref["blup"], rtol=RTOL, atol=RTOL * scale)
    re = m.ranef
    np.testing.assert_allclose(re["condval"].to_numpy(), ref["ranef"], rtol=RTOL,
                               atol=RTOL * scale)
    d = raudenbush()
    X = np.column_stack([np.ones(19), d["weeks"].to_numpy(float)])
    v = d["vi"].to_numpy()
    li = ref["tau2"] / (ref["tau2"] + v)
    beta_part = li**2 * np.einsum("ij,jk,ik->i", X, np.asarray(ref["vb"]), X)
    np.testing.assert_allclose(re["condsd"].to_numpy() ** 2,
                               np.asarray(ref["ranef_se"]) ** 2 - beta_part, rtol=2 * RTOL)


def test_shared_reference_default_threshold():
    """The shared reference (rma's default threshold 1e-5 on tau^2's change) stopped short
    of the REML and ML maxima: tau^2 1.8e-4 / 9e-4 relative from the converged values
    (test above), so its tau^2 and betas cannot be matched to 1e-5. Our optimum is better
    than it: the criterion at our theta is below the criterion at its tau^2, and our
    log-likelihood is above its (by 9e-9 for REML, 7.6e-8 for ML: the maximum is flat).
    Its BLUPs agree to what its tau^2 allows."""
    ref = reference("raudenbush1985_known_variances.json")
    for method in ("reml", "ml"):
        m = meta_fit(method == "reml")
        obj = LmmObjective(m.model.crossproducts(), reml=m.reml, sigma=1.0)
        at_r = obj(np.sqrt([ref[method]["tau2"]]))
        assert m.objective < at_r
        shift = half_logdet_XtX() if m.reml else 0.0
        assert ref[method]["loglik"] < m.loglik + shift < ref[method]["loglik"] + 1e-7
    scale = np.max(np.abs(ref["blup_reml"]))
    np.testing.assert_allclose(meta_fit(True).fitted.to_numpy(), ref["blup_reml"],
                               atol=1e-4 * scale)


# ---- the criterion against dense NumPy ----------------------------------------------------

SLOPE = "y ~ x + (1 + x | g)"


@cache
def slope_data() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    g = np.repeat(np.arange(6), 5)
    x = rng.normal(size=30)
    b0, b1 = rng.normal(scale=0.8, size=6), rng.normal(scale=0.4, size=6)
    w = rng.uniform(0.5, 2.0, size=30)
    y = 1.0 + 0.5 * x + b0[g] + b1[g] * x + rng.normal(size=30) * 0.7 / np.sqrt(w)
    return pd.DataFrame({"y": y, "x": x, "g": pd.Categorical(g.astype(str)), "w": w})


def dense_fixed_sigma(theta, sigma, reml, d):
    """-2 log L (ML) or the REML criterion from V = sigma^2 (Z Lambda Lambda' Z' + W^-1),
    beta by GLS, and u = Lambda^-1 b from b = Lambda Lambda' Z' V0^-1 (y - X beta)."""
    n = len(d)
    g = d["g"].cat.codes.to_numpy()
    x = d["x"].to_numpy()
    X = np.column_stack([np.ones(n), x])
    Z = np.zeros((n, 12))
    Z[np.arange(n), 2 * g], Z[np.arange(n), 2 * g + 1] = 1.0, x
    T = np.array([[theta[0], 0.0], [theta[1], theta[2]]])
    Lam = np.kron(np.eye(6), T)
    V0 = Z @ Lam @ Lam.T @ Z.T + np.diag(1.0 / d["w"].to_numpy())
    V = sigma**2 * V0
    Vi = np.linalg.inv(V)
    A = X.T @ Vi @ X
    beta = np.linalg.solve(A, X.T @ Vi @ d["y"].to_numpy())
    r = d["y"].to_numpy() - X @ beta
    dof = n - 2 if reml else n
    crit = np.linalg.slogdet(V)[1] + r @ Vi @ r + dof * np.log(2 * np.pi)
    if reml:
        crit += np.linalg.slogdet(A)[1]
    b = Lam @ Lam.T @ Z.T @ np.linalg.solve(V0, r)
    return crit, beta, np.linalg.inv(A), b


@pytest.mark.parametrize("reml", [True, False])
def test_fixed_sigma_criterion_dense(reml):
    """The n-free fixed-sigma criterion, beta, vcov and b = Lambda u at several theta
    (one on the boundary) against the dense formulas, to 1e-10 relative."""
    d = slope_data()
    frame = build_frame(parse_formula(SLOPE), SLOPE, d, weights="w")
    sigma = 0.8
    obj = LmmObjective(accumulate(frame), reml=reml, sigma=sigma)
    for theta in ([1.0, 0.0, 1.0], [0.7, -0.3, 0.4], [1.3, 0.5, 0.0], [0.0, 0.0, 0.2]):
        theta = np.array(theta)
        crit, beta, vcov, b = dense_fixed_sigma(theta, sigma, reml, d)
        assert obj(theta) == pytest.approx(crit, rel=1e-10)
        np.testing.assert_allclose(obj.beta(), beta, rtol=1e-10)
        np.testing.assert_allclose(sigma**2 * obj.vcov_unscaled(), vcov, rtol=1e-9)
        np.testing.assert_allclose(obj.lambda_times(obj.u()), b, rtol=1e-8, atol=1e-10)
        assert obj.sigma() == sigma


@pytest.mark.parametrize("reml", [True, False])
def test_fixed_sigma_fit_is_dense_optimum(reml):
    """The fit's theta minimizes the dense criterion: no direction lowers it."""
    d = slope_data()
    m = gs.lmer(SLOPE, d, weights="w", sigma=0.8, reml=reml)
    f0 = dense_fixed_sigma(m.theta, 0.8, reml, d)[0]
    assert m.objective == pytest.approx(f0, rel=1e-10)
    for i in range(3):
        for h in (1e-3, -1e-3):
            th = m.theta.copy()
            th[i] += h
            if th[0] < 0 or th[2] < 0:
                continue
            assert dense_fixed_sigma(th, 0.8, reml, d)[0] >= f0 - 1e-9


# ---- relation to the profiled fit ---------------------------------------------------------

@pytest.mark.parametrize("reml", [True, False])
def test_sigma_fixed_at_estimate_reproduces_free_fit(reml):
    """At sigma = sigma-hat, the profiled optimum is a stationary point of the fixed-sigma
    criterion (the envelope theorem), so theta and beta agree, and the two criteria are
    equal there."""
    sleep = load_data("sleepstudy")
    formula = "Reaction ~ Days + (Days | Subject)"
    free = gs.lmer(formula, sleep, reml=reml)
    fixed = gs.lmer(formula, sleep, reml=reml, sigma=free.sigma)
    # measured: theta within 1.1e-7 relative, beta 7e-16, the criterion 2e-13 absolute
    np.testing.assert_allclose(fixed.theta, free.theta, rtol=1e-6)
    np.testing.assert_allclose(fixed.fixef.to_numpy(), free.fixef.to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(fixed.objective, free.objective, rtol=1e-12)
    assert fixed.npar == free.npar - 1 and fixed.n_scale == 0
    assert fixed.model.options["sigma"] == free.sigma and free.model.options["sigma"] is None


def test_rescaled_response_and_sigma():
    """y -> c y with sigma -> c sigma: theta unchanged, beta and tau^2 scale (with c = 1e4
    the optimizer's units for theta stay those of the unscaled fit)."""
    d = raudenbush().copy()
    base = meta_fit(True)
    for c in (1e4, 1e-4):
        d["yc"] = c * d["yi"]
        m = gs.lmer("yc ~ weeks + (1 | study)", d, weights="w", sigma=c, reml=True)
        np.testing.assert_allclose(m.theta, base.theta, rtol=1e-5)
        np.testing.assert_allclose(m.fixef.to_numpy(), c * base.fixef.to_numpy(), rtol=1e-6)


def test_sigma_far_from_the_data_scale():
    """sigma = 1 for a response of order 1e2 (theta near 1e2, optimizer unit 100): the fit
    reaches the dense optimum; a step of 1e-3 relative in any theta raises the dense
    criterion by 4e-7 to 1.2e-5, far above its rounding (1e-9 here)."""
    d = slope_data().copy()
    d["y"] = 1e2 * d["y"]
    m = gs.lmer(SLOPE, d, weights="w", sigma=1.0, reml=False)
    assert m.optimizer.units.tolist() == [100.0, 100.0, 100.0]
    f0 = dense_fixed_sigma(m.theta, 1.0, False, d)[0]
    assert m.objective == pytest.approx(f0, rel=1e-12)
    assert m.theta[0] > 30
    for i in range(3):
        for h in (1e-3, -1e-3):
            th = m.theta.copy()
            th[i] *= 1 + h
            assert dense_fixed_sigma(th, 1.0, False, d)[0] > f0


# ---- refits, inputs -----------------------------------------------------------------------

def test_refits_keep_sigma():
    m = meta_fit(True)
    again = m.refit(raudenbush()["yi"].to_numpy())
    assert again.sigma == 1.0 and again.model.options["sigma"] == 1.0
    np.testing.assert_allclose(again.theta, m.theta, rtol=1e-6)
    from glmm_sparse.refit import refit_ml

    ml = refit_ml(m)
    assert not ml.reml and ml.sigma == 1.0
    np.testing.assert_allclose(ml.theta, meta_fit(False).theta, rtol=1e-5)
    np.testing.assert_allclose(ml.objective, meta_fit(False).objective, rtol=1e-10)


@pytest.mark.parametrize("bad", [0, -1.0, np.nan, np.inf, "1", True, [1.0]])
def test_sigma_must_be_positive_finite(bad):
    with pytest.raises(ModelSpecError, match="sigma"):
        gs.lmer(META, raudenbush(), weights="w", sigma=bad)


def test_glmer_refuses_sigma():
    cbpp = load_data("cbpp")
    with pytest.raises(ModelSpecError, match="glmer does not take sigma"):
        gs.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", cbpp,
                 family="binomial", sigma=1.0)


def test_free_fit_still_refuses_one_level_per_row():
    """Only a known residual variance separates one random effect per row from it."""
    with pytest.raises(ModelSpecError, match="19 levels for 19 observations"):
        gs.lmer(META, raudenbush(), weights="w")


def test_summary_says_the_residual_sd_was_fixed():
    text = meta_fit(True).summary(ddf="none")
    assert "Residual standard deviation fixed at 1 (not estimated)" in text
    free = gs.lmer("Reaction ~ Days + (Days | Subject)", load_data("sleepstudy"))
    assert "fixed at" not in free.summary()


BCG = "yi ~ ablat + alloc + (1 | trial)"


@cache
def bcg() -> pd.DataFrame:
    d = pd.read_csv(INFERENCE / "bcg.csv")
    d["trial"] = d["trial"].astype(str)
    d["w"] = 1.0 / d["vi"]
    return d


@pytest.mark.parametrize("method", ["ml", "reml"])
def test_a_local_minimum_on_the_boundary_is_escaped(method):
    """metafor's BCG meta-regression: by ML the fixed-sigma criterion has a local minimum at
    tau^2 = 0 that BOBYQA reaches from tau = sigma; the fit must find the maximum at
    tau^2 = 0.0294 (metafor rma, converged)."""
    ref = reference("bcg_known_variances.json")[method]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = gs.lmer(BCG, bcg(), weights="w", sigma=1.0, reml=method == "reml")
    assert not m.is_singular
    tau2 = float(m.varcorr["vcov"].iloc[0])
    assert tau2 == pytest.approx(ref["tau2"], rel=1e-5)
    np.testing.assert_allclose(m.fixef.to_numpy(), ref["beta"], rtol=1e-5)
    np.testing.assert_allclose(np.sqrt(np.diag(m.vcov)), ref["se"], rtol=1e-5)
    if method == "ml":
        assert m.loglik == pytest.approx(ref["loglik_unrestricted"], rel=1e-7)
