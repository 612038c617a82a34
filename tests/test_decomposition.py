"""ICC, R2, design effect and shrinkage (decomposition.py) against lme4 fits and NumPy.

References: tests/reference/inference/decomposition.json, made by generate_decomposition.R
(lme4 1.1-31; the R packages performance and insight are not installed there, so the script
computes Nakagawa's formulas from VarCorr / fixef / getME(m, "mmList") / model.matrix, and
the Poisson lambda from the null model refitted with update() as insight's null_model();
the GLMMs are refitted with PIRLS converged, glmm/README.md "PIRLS noise"). Measured
agreement: 4e-6 relative or better on every number (ICC, R2, by-group ICC, design effect,
shrinkage factors, BLUPs, group mean residuals; the Poisson lambda, null intercept and null
variance to 1.2e-7); the tests ask for 1e-4, the tolerance of the variance components
themselves in test_lmer_reference.py.
"""
import json
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from refdata import load_data

import glmm_sparse as gs

REF = json.loads((Path(__file__).parent / "reference" / "inference" /
                  "decomposition.json").read_text())
CASES = {c["id"]: c for c in REF["cases"]}
BASE = {".": "shared", "extra": "extra", "glmm": "glmm"}
REL = 1e-4


@cache
def fit_case(case_id: str):
    c = CASES[case_id]
    data = load_data(c["data"], BASE[c["data_dir"]])
    if c["family"] == "gaussian":
        return gs.lmer(c["formula"], data, weights=c["weights"])
    return gs.glmer(c["formula"], data, family=c["family"], link=c["link"])


def as_list(v):
    return v if isinstance(v, list) else [v]


@pytest.mark.parametrize("case_id", list(CASES))
def test_icc_and_r2_match_the_reference(case_id):
    c, m = CASES[case_id], fit_case(case_id)
    icc, r2 = m.icc(), m.r2()
    assert icc["adjusted"] == pytest.approx(c["icc_adjusted"], rel=REL)
    assert icc["conditional"] == pytest.approx(c["icc_conditional"], rel=REL)
    assert r2["marginal"] == pytest.approx(c["r2_marginal"], rel=REL, abs=1e-12)
    assert r2["conditional"] == pytest.approx(c["r2_conditional"], rel=REL)
    parts = m.variance_decomposition()
    assert parts["var_residual"] == pytest.approx(c["var_residual"], rel=REL)
    assert parts.attrs["residual"] == c["residual_method"]
    for key in ("lambda", "null_intercept", "null_var_random"):  # Poisson: the null model
        if key in c:
            assert parts.attrs[key] == pytest.approx(c[key], rel=REL), key


@pytest.mark.parametrize("case_id", [k for k, c in CASES.items() if c.get("by_group")])
def test_icc_by_group_and_design_effect_match_the_reference(case_id):
    want, m = CASES[case_id]["by_group"], fit_case(case_id)
    groups = as_list(want["group"])
    table = m.icc(by_group=True)
    assert list(table["group"]) == groups
    assert np.allclose(table["icc"], as_list(want["icc"]), rtol=REL, atol=0)
    assert np.allclose(table["variance"], as_list(want["variance"]), rtol=REL, atol=0)
    for i, g in enumerate(groups):
        deff = m.design_effect(g)
        assert deff.name == g
        assert deff["mean_size"] == pytest.approx(as_list(want["mean_size"])[i], rel=1e-12)
        assert deff["design_effect"] == pytest.approx(as_list(want["design_effect"])[i], rel=REL)
        assert deff["n_effective"] == pytest.approx(m.nobs / deff["design_effect"], rel=1e-12)


SHRINK = [(k, s["term"]) for k, c in CASES.items() for s in c["shrinkage"]]


@pytest.mark.parametrize("case_id,group", SHRINK)
def test_shrinkage_table_matches_the_reference(case_id, group):
    want = next(s for s in CASES[case_id]["shrinkage"] if s["term"] == group)
    table = fit_case(case_id).shrinkage(group)
    assert list(table["grp"]) == want["grp"]
    assert list(table["n"]) == want["n"]
    assert np.allclose(table["n_eff"], want["n_eff"], rtol=REL, atol=0)
    assert np.allclose(table["factor"], want["factor"], rtol=REL, atol=0)
    for col in ("condval", "mean_resid"):
        scale = np.max(np.abs(want[col]))
        assert np.allclose(table[col], want[col], rtol=0, atol=REL * scale), col


@pytest.mark.parametrize("case_id,group", SHRINK)
def test_blup_is_the_factor_times_the_mean_residual(case_id, group):
    """The normal equations of a random intercept: b_j = factor_j * mean_j, exactly at the
    optimum (to rounding) for LMMs, weighted LMMs, multi-term models and GLMMs alike."""
    table = fit_case(case_id).shrinkage(group)
    assert np.allclose(table["condval"], table["factor"] * table["mean_resid"],
                       rtol=1e-9, atol=1e-10 * np.max(np.abs(table["condval"])))


def test_one_factor_lmm_ratio_equals_factor_and_mean_is_from_the_fixed_part():
    m = fit_case("sleep_intercept")
    table = m.shrinkage()
    assert np.allclose(table["ratio"], table["factor"], rtol=1e-10)
    d = load_data("sleepstudy")
    X = np.column_stack([np.ones(len(d)), d["Days"]])
    r = d["Reaction"].to_numpy() - X @ m.fixef.to_numpy()
    means = pd.Series(r).groupby(d["Subject"].to_numpy(), observed=True).mean()
    assert np.allclose(table.set_index("grp")["mean_resid"], means.loc[table["grp"]], rtol=1e-12)
    assert (table["n_eff"] == table["n"]).all() and (table["n"] == 10).all()
    assert table.attrs["residual"].startswith("y - X beta - offset (")


def test_weighted_blups_solve_the_dense_mixed_model_equations():
    """Henderson's equations with W, solved densely: (Z'WZ + sigma^2/sigma_u^2 I) b =
    Z'W(y - X beta)."""
    m = fit_case("weighted")
    d = load_data("weighted", "extra")
    codes = d["g"].cat.codes.to_numpy()
    Z = np.zeros((len(d), d["g"].cat.categories.size))
    Z[np.arange(len(d)), codes] = 1.0
    X = np.column_stack([np.ones(len(d)), d["x"]])
    w = d["w"].to_numpy()
    vc = m.varcorr.set_index("grp")["vcov"]
    lhs = Z.T @ (w[:, None] * Z) + vc["Residual"] / vc["g"] * np.eye(Z.shape[1])
    b = np.linalg.solve(lhs, Z.T @ (w * (d["y"].to_numpy() - X @ m.fixef.to_numpy())))
    table = m.shrinkage()
    assert np.allclose(table["condval"], b, rtol=1e-8, atol=1e-10)
    assert np.allclose(table["n_eff"], Z.T @ w, rtol=1e-12)
    assert np.allclose(table["ratio"], table["factor"], rtol=1e-9)


def test_random_slope_decomposition_by_an_independent_numpy_computation():
    """Johnson's var_random = mean_i z_i' Sigma z_i and var(X beta), from varcorr and the data."""
    m = fit_case("sleep_slope")
    d = load_data("sleepstudy")
    Zi = np.column_stack([np.ones(len(d)), d["Days"]])
    vc = m.varcorr
    v_int, v_days, cov = vc["vcov"].iloc[:3]
    S = np.array([[v_int, cov], [cov, v_days]])
    var_random = np.mean(np.sum((Zi @ S) * Zi, axis=1))
    var_fixed = np.var(Zi @ m.fixef.to_numpy(), ddof=1)
    var_resid = m.sigma**2
    total = var_fixed + var_random + var_resid
    assert m.icc()["adjusted"] == pytest.approx(var_random / (var_random + var_resid), rel=1e-12)
    assert m.r2()["marginal"] == pytest.approx(var_fixed / total, rel=1e-12)
    assert m.r2()["conditional"] == pytest.approx((var_fixed + var_random) / total, rel=1e-12)
    parts = m.variance_decomposition()
    assert parts["var_random[Subject]"] == pytest.approx(var_random, rel=1e-12)


def test_poisson_lambda_comes_from_the_null_model():
    """lambda = exp(beta_0 + var_random_0 / 2) of the intercept-only model with the same
    random terms (as insight): here fitted again from the data, the independent path."""
    m = fit_case("poisson_log")
    parts = m.variance_decomposition()
    null = gs.glmer("count ~ 1 + (1 | g)", load_data("poisson_agq", "glmm"), family="poisson")
    assert parts.attrs["null_intercept"] == pytest.approx(null.fixef["(Intercept)"], rel=1e-6)
    assert parts.attrs["null_var_random"] == pytest.approx(null.varcorr["vcov"].iloc[0], rel=1e-5)
    lam = np.exp(parts.attrs["null_intercept"] + parts.attrs["null_var_random"] / 2)
    assert parts.attrs["lambda"] == pytest.approx(lam, rel=1e-12)
    assert parts["var_residual"] == pytest.approx(np.log1p(1 / lam), rel=1e-12)
    # the null model is the model itself when it has no covariate
    assert null.variance_decomposition()["var_residual"] == pytest.approx(parts["var_residual"],
                                                                          rel=1e-6)


def test_poisson_icc_does_not_move_when_a_covariate_is_shifted():
    """Centring or shifting x changes the fitted intercept, not the model: ICC and R2 stay
    (they moved with it while lambda used the fitted intercept)."""
    d = load_data("poisson_agq", "glmm")
    m = fit_case("poisson_log")
    shifted = gs.glmer("count ~ x5 + (1 | g)", d.assign(x5=d["x"] + 5.0), family="poisson")
    assert shifted.fixef.iloc[0] != pytest.approx(m.fixef.iloc[0], abs=0.5)
    assert shifted.variance_decomposition().attrs["lambda"] == pytest.approx(
        m.variance_decomposition().attrs["lambda"], rel=1e-9)
    assert np.allclose(shifted.icc(), m.icc(), rtol=1e-6)
    assert np.allclose(shifted.r2(), m.r2(), rtol=1e-6)
    # a model without a fixed intercept has the same null model (it used to be refused)
    no_intercept = gs.glmer("count ~ 0 + x5 + (1 | g)", d.assign(x5=d["x"] + 5.0),
                            family="poisson")
    assert no_intercept.variance_decomposition().attrs["lambda"] == pytest.approx(
        m.variance_decomposition().attrs["lambda"], rel=1e-9)


def test_poisson_lambda_is_the_rate_at_offset_zero():
    """The null model keeps the offset (as insight's null_model): lambda is the mean count
    per unit of exposure, so exposure counted in pairs halves it."""
    m = fit_case("cbpp_poisson_offset")
    cb = load_data("cbpp", "glmm")
    pairs = gs.glmer("incidence ~ period + offset(log(pairs)) + (1 | herd)",
                     cb.assign(pairs=cb["size"] / 2.0), family="poisson")
    lam, lam2 = (f.variance_decomposition().attrs["lambda"] for f in (m, pairs))
    assert lam2 == pytest.approx(2 * lam, rel=1e-5)
    # the same as an offset given by name
    by_name = gs.glmer("incidence ~ period + (1 | herd)", cb.assign(o=np.log(cb["size"])),
                       family="poisson", offset="o")
    assert by_name.variance_decomposition().attrs["lambda"] == pytest.approx(lam, rel=1e-6)


def test_icc_is_invariant_to_an_affine_change_of_the_response():
    d = load_data("sleepstudy")
    m = fit_case("sleep_intercept")
    m2 = gs.lmer("Reaction ~ Days + (1 | Subject)", d.assign(Reaction=3.0 + 0.01 * d["Reaction"]))
    assert np.allclose(m2.icc(), m.icc(), rtol=1e-6)
    assert np.allclose(m2.r2(), m.r2(), rtol=1e-6)
    s, s2 = m.shrinkage(), m2.shrinkage()
    assert np.allclose(s2["factor"], s["factor"], rtol=1e-6)
    assert np.allclose(s2["condval"], 0.01 * s["condval"], rtol=1e-5)


def test_singular_fit_has_zero_icc_and_no_shrinkage_left():
    d = load_data("dyestuff2")
    with pytest.warns(gs.GlmmSparseWarning):
        m = gs.lmer("Yield ~ 1 + (1 | Batch)", d)
    assert m.icc()["adjusted"] == pytest.approx(0.0, abs=1e-8)
    table = m.shrinkage()
    assert np.allclose(table["factor"], 0.0, atol=1e-8)
    assert np.allclose(table["condval"], 0.0, atol=1e-8)
    assert m.design_effect()["design_effect"] == pytest.approx(1.0, abs=1e-8)


def test_errors_name_the_term_and_what_to_do():
    slope = fit_case("sleep_slope")
    with pytest.raises(gs.ModelSpecError, match=r"random intercepts only.*Days \| Subject"):
        slope.icc(by_group=True)
    with pytest.raises(gs.ModelSpecError, match=r"the term \(1 \+ Days \| Subject\) is not one"):
        slope.shrinkage("Subject")
    uncorrelated = gs.lmer("Reaction ~ Days + (Days || Subject)", load_data("sleepstudy"))
    # the slope term of (Days || Subject) is (0 + Days | Subject), not (Days | Subject)
    with pytest.raises(gs.ModelSpecError, match=r"the term\(s\) \(0 \+ Days \| Subject\) have"):
        uncorrelated.icc(by_group=True)
    with pytest.raises(gs.ModelSpecError, match="has none"):
        slope.design_effect()
    pastes = fit_case("pastes_nested")
    with pytest.raises(gs.ModelSpecError, match="needs group=.*'cask:batch', 'batch'"):
        pastes.shrinkage()
    with pytest.raises(gs.ModelSpecError, match="no random-effects term for group 'cask'"):
        pastes.design_effect("cask")


def test_families_without_a_latent_residual_are_refused():
    d = load_data("gamma", "glmm")
    m = gs.glmer("y ~ x + (1 | g)", d, family="gamma", link="log")
    with pytest.raises(gs.ModelSpecError, match="family 'gamma' with link 'log'"):
        m.icc()
    table = m.shrinkage()  # the shrinkage identity needs no latent variance
    assert np.allclose(table["condval"], table["factor"] * table["mean_resid"], rtol=1e-6,
                       atol=1e-8 * np.max(np.abs(table["condval"])))
