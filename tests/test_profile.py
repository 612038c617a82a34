"""Profile likelihood against lme4 1.1-31's profile / confint (oldNames = FALSE).

References: tests/reference/inference/pastes_profile.json (generate_inference.R) and
profile_more.json (generate_profile.R). The limits are matched to 1e-3 relative (the
issue's tolerance); measured agreement is 5e-5 or better, except where lme4's spline
through its profile points bends between them: Dyestuff2's intercept (1.7e-4) and the
ML fit's correlation (1.5e-4). Our limits are roots of the exact profile: at lme4's own
profile points our zeta agrees with lme4's (below), so the difference is its spline's.
"""
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

import glmm_sparse as gs
from glmm_sparse.errors import ModelSpecError
from glmm_sparse.profile import (profile_model, sdcor_from_theta, theta_from_sdcor,
                                 tolerant_cholesky)
from refdata import as_list, load_data

REF = Path(__file__).parent / "reference" / "inference"
PROFILE_MORE = json.loads((REF / "profile_more.json").read_text())


def fit(data, formula, reml=True):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Dyestuff2 is singular
        return gs.lmer(formula, load_data(data), reml=reml)


def check_limits(ci, ref, rel=1e-3):
    assert list(ci.index) == as_list(ref["names"])
    for col in ("lower", "upper"):
        want = np.asarray(as_list(ref[col]), dtype=float)
        got = ci[col].to_numpy()
        zero = want == 0.0
        assert np.all(got[zero] == 0.0), (col, got)  # a limit on the boundary is exactly 0
        np.testing.assert_allclose(got[~zero], want[~zero], rtol=rel)


@pytest.fixture(scope="module")
def pastes():
    return fit("pastes", "strength ~ 1 + (1 | batch/cask)")


@pytest.fixture(scope="module")
def profiles():
    """Each profile_more.json case, profiled once at its level."""
    out = {}
    for key, ref in PROFILE_MORE.items():
        m = fit(ref["data"], ref["formula"], ref["REML"])
        out[key] = (m, profile_model(m, level=ref["level"]))
    return out


def test_pastes_profile_limits_match_lme4(pastes):
    ref = json.loads((REF / "pastes_profile.json").read_text())["profile_ci"]
    check_limits(pastes.confint(method="profile"), ref)


@pytest.mark.parametrize("case", sorted(PROFILE_MORE))
def test_profile_limits_match_lme4(profiles, case):
    ref = PROFILE_MORE[case]
    _, prof = profiles[case]
    check_limits(prof.confint(ref["level"]), ref["profile_ci"])


@pytest.mark.parametrize("case", ["sleepstudy_reml", "dyestuff2_reml"])
def test_zeta_at_lme4_profile_points(profiles, case):
    """Where lme4's inner optimizer stopped short (sleepstudy's far tails, |zeta| > 3.5)
    our deviance is lower, so our |zeta| smaller; elsewhere they agree to 1e-4."""
    pts = PROFILE_MORE[case]["points"]
    _, prof = profiles[case]
    for name, value, zeta in zip(pts["parameter"], pts["value"], pts["zeta"]):
        curve = prof.curves[name]
        ours, _ = curve.zeta(value, curve.prof.start())
        if abs(zeta) <= 3.0:
            assert ours == pytest.approx(zeta, abs=1e-4), (name, value)
        else:
            assert abs(ours) <= abs(zeta) + 1e-4, (name, value)


def test_profile_table_columns_order_and_shape(profiles):
    _, prof = profiles["sleepstudy_reml"]
    table = prof.table()
    assert list(table.columns) == ["parameter", "value", "zeta"]
    names = list(dict.fromkeys(table.parameter))
    assert names == ["sd_(Intercept)|Subject", "cor_Days.(Intercept)|Subject",
                     "sd_Days|Subject", "sigma", "(Intercept)", "Days"]
    for name, part in table.groupby("parameter", sort=False):
        assert np.all(np.diff(part.value.to_numpy()) > 0)
        assert np.all(np.diff(part.zeta.to_numpy()) >= -1e-8), name  # zeta rises with value
        assert (part.zeta == 0).sum() == 1  # the estimate
        assert part.zeta.max() > 1.96 and part.zeta.min() < -1.96  # stepped past the limits


def test_profile_method_returns_the_table(pastes):
    table = pastes.profile(which="beta_", level=0.8)
    assert set(table.parameter) == {"(Intercept)"}
    assert table.zeta.abs().max() > 1.2816  # qnorm(0.9)
    assert table.zeta.abs().max() < 1.2816 + 1.0  # but not far beyond


def test_boundary_estimate_profiles_upwards_only(profiles):
    _, prof = profiles["dyestuff2_reml"]
    part = prof.table().query("parameter == 'sd_(Intercept)|Batch'")
    assert part.value.min() == 0.0 and part.zeta.min() == 0.0


def test_reml_and_ml_fits_have_the_same_profile():
    """lme4 profiles the ML deviance: a REML fit is refitted by ML first."""
    ml = fit("pastes", "strength ~ 1 + (1 | batch/cask)", reml=False)
    reml = fit("pastes", "strength ~ 1 + (1 | batch/cask)")
    a = ml.confint(parm=["sigma", "(Intercept)"])
    b = reml.confint(parm=["sigma", "(Intercept)"])
    np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), rtol=1e-6)


def test_fixed_effect_profile_equals_refits_with_an_offset(profiles):
    """The cross-product algebra of FixedEffectProfile against plain ML refits of the
    model with Days * v moved into the offset."""
    _, prof = profiles["sleepstudy_reml"]
    data = load_data("sleepstudy")
    base = prof.ml.deviance
    curve = prof.curves["Days"]
    for v in (8.0, 10.467, 13.0):
        refit = gs.lmer("Reaction ~ 1 + (Days | Subject)", data, reml=False,
                        offset=data["Days"].to_numpy() * v)
        want = np.sign(v - curve.prof.estimate) * np.sqrt(max(refit.objective - base, 0.0))
        got, _ = curve.zeta(v, curve.prof.start())
        assert got == pytest.approx(want, abs=2e-6)


def test_sdcor_and_theta_round_trip():
    # k = 1, then k = 3 (T11, T21, T31, T22, T32, T33: column-wise lower triangle)
    theta = np.array([0.9, 0.8, -0.3, 0.4, 1.2, 0.5, 0.7])
    ks = (1, 3)
    sdcor = sdcor_from_theta(theta, ks, 2.0)
    assert sdcor[1] == pytest.approx(2.0 * 0.8)  # sd of the first column
    assert sdcor[2] == pytest.approx(-0.3 / np.hypot(0.3, 1.2))  # cor of columns 1 and 2
    np.testing.assert_allclose(theta_from_sdcor(sdcor, ks, 2.0), theta, atol=1e-12)


def test_tolerant_cholesky_semidefinite_and_indefinite():
    C = np.array([[1.0, 1.0], [1.0, 1.0]])  # correlation +1: semi-definite
    L = tolerant_cholesky(C)
    np.testing.assert_allclose(L @ L.T, C, atol=1e-12)
    bad = np.array([[1.0, 0.9, -0.9], [0.9, 1.0, 0.9], [-0.9, 0.9, 1.0]])
    assert tolerant_cholesky(bad) is None


def test_glmm_profile_says_what_to_use():
    g = gs.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)",
                 load_data("cbpp"), family="binomial")
    with pytest.raises(ModelSpecError, match="wald.*boot"):
        g.confint(method="profile")
    with pytest.raises(ModelSpecError, match="wald.*boot"):
        g.profile()


def test_unknown_parameter_is_named(pastes):
    with pytest.raises(ModelSpecError, match="sd_x"):
        pastes.profile(which=["sd_x"])
