"""glmer against lme4 1.1-31 on every GLMM reference case.

Tolerances (issue 3): -2 log-likelihood within 1e-6 relative, or a higher log-likelihood;
fixed effects within 0.02 SE; VarCorr within 1e-3 relative; conditional modes within 0.02
conditional SD.

Why ours is often higher for Laplace fits (by 3e-4 to 3e-3): lme4 evaluates log|L|^2
with a factor one PIRLS iteration old. On binary_crossed, at lme4's own optimum,
log det(Lambda'Z'WZ Lambda + I) with the weights of lme4's final fitted values is
538.95941 (computed in R from getME(m, "Lambdat"), getME(m, "Zt") and fitted(m)), while
lme4 reports 538.96447 (getME(m, "L")); ours at the same theta and beta is 538.95935.
The modes u agree. Our Laplace approximation is evaluated exactly at the mode, so its
optimum differs slightly from lme4's. AGQ fits (nAGQ > 1) recompute the curvature at the
mode in lme4 too, and there the log-likelihoods agree to ~1e-9.
"""
import warnings

import numpy as np
import pytest

import glmm_sparse as gs
from refdata import case_ids, glmer_args, load_case, load_data

CASES = case_ids("glmm")


@pytest.fixture(scope="module", params=CASES, ids=[c for _, c in CASES])
def fitted(request):
    base, case = request.param
    ref = load_case(case, base)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gs.SingularFitWarning)
        m = gs.glmer(ref["formula"], load_data(ref["data"], base), **glmer_args(ref))
    return ref, m


# lme4's default Laplace objective differs from the exactly evaluated Laplace approximation
# by up to 1.45e-2 on the deviance scale (inverse_gaussian_log; tests/reference/glmm/
# README.md, "PIRLS noise"), from PIRLS stopping at tolPwrss = 1e-7 and the stale log|L|^2.
LME4_PIRLS_NOISE = 0.02


def test_loglik_equal_or_higher(fitted):
    """Equal to 1e-6 relative or higher; where the reference has lme4 refitted with PIRLS
    converged (tolPwrss = 1e-13, bobyqa rhoend = 1e-10), equal to that to 1e-6."""
    ref, m = fitted
    tight = ref.get("tight_refit")
    want = tight["logLik"] if tight else ref["logLik"]  # both on the full scale
    assert m.loglik >= want - 1e-6 * abs(want)
    bound = 1e-6 * abs(want) if tight else LME4_PIRLS_NOISE / 2
    assert m.loglik - want < bound  # and not a different model


def test_loglik_close_to_default_lme4(fitted):
    """lme4's default fit, noise and all: within its documented PIRLS noise."""
    ref, m = fitted
    assert abs(-2 * m.loglik - (-2 * ref["logLik"])) < LME4_PIRLS_NOISE


def test_information_criteria_and_counts(fitted):
    ref, m = fitted
    assert m.npar == ref["df"]
    assert m.nobs == ref["nobs"]
    assert m.aic == pytest.approx(-2 * m.loglik + 2 * ref["df"])
    assert m.ngrps == {k: v for k, v in ref["ngrps"].items()}


def test_fixef_within_two_hundredths_of_se(fitted):
    ref, m = fitted
    assert list(m.fixef.index) == ref["beta_names"]
    se = np.asarray(ref["beta_se"])
    assert np.all(np.abs(m.fixef.to_numpy() - ref["beta"]) <= 0.02 * se)
    assert np.allclose(np.sqrt(np.diag(m.vcov)), se, rtol=0.02)


def test_varcorr(fitted):
    ref, m = fitted
    want = ref["varcorr"]
    assert list(m.varcorr["grp"]) == [r["grp"] for r in want]
    assert np.allclose(m.varcorr["sdcor"].to_numpy(), [r["sdcor"] for r in want], rtol=1e-3)


def test_ranef(fitted):
    ref, m = fitted
    want = ref["ranef"]
    assert list(m.ranef["grp"]) == [r["level"] for r in want]
    condsd = np.array([r["condsd"] for r in want])
    assert np.all(np.abs(m.ranef["condval"].to_numpy() - [r["value"] for r in want]) <= 0.02 * condsd)
    assert np.allclose(m.ranef["condsd"].to_numpy(), condsd, rtol=0.01)


def test_fitted_are_means(fitted):
    ref, m = fitted
    head = np.asarray(ref["fitted_head"])
    assert np.allclose(m.fitted.to_numpy()[: len(head)], head, rtol=2e-3, atol=1e-4)
