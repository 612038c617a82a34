"""Likelihood-ratio tests (glmm_sparse.lrt) against lme4 1.1-31's anova.merMod.

References: tests/reference/inference/lrt_references.json (generate_lrt.R). Tolerances
(issue 6): log-likelihoods to 1e-6 relative, statistics and p-values to 1e-4 relative.
"""
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from refdata import load_data
from scipy import stats

import glmm_sparse as gs
from glmm_sparse import lrt

REF = json.loads((Path(__file__).parent / "reference" / "inference"
                  / "lrt_references.json").read_text())
CBPP = "cbind(incidence, size - incidence) ~ {} + (1 | herd)"


def num(values):
    """R's NA (written as "NA" by jsonlite) as NaN."""
    return np.array([np.nan if v == "NA" else v for v in values], dtype=float)


def quiet(fit, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gs.GlmmSparseWarning)
        return fit(*args, **kwargs)


@pytest.fixture(scope="module")
def sleep():
    return load_data("sleepstudy")


@pytest.fixture(scope="module")
def sleep_ml(sleep):
    forms = ["Reaction ~ Days + (1 | Subject)", "Reaction ~ Days + (Days | Subject)",
             "Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)"]
    return [quiet(gs.lmer, f, sleep, reml=False) for f in forms]


@pytest.fixture(scope="module")
def cbpp_fits():
    cb = load_data("cbpp")
    return [quiet(gs.glmer, CBPP.format(x), cb, family="binomial") for x in ("1", "period")]


def check_table(table, ref, loglik_rtol=1e-6):
    assert table["npar"].tolist() == ref["npar"]
    assert np.allclose(table["logLik"], ref["logLik"], rtol=loglik_rtol, atol=0)
    for col in ("AIC", "BIC", "deviance"):
        assert np.allclose(table[col], ref[col], rtol=loglik_rtol, atol=0)
    assert np.isnan(table["Chisq"].iloc[0]) and np.isnan(table["Pr(>Chisq)"].iloc[0])
    assert np.allclose(table["Chisq"].iloc[1:], num(ref["Chisq"])[1:], rtol=1e-4, atol=0)
    assert np.array_equal(table["Df"].iloc[1:], num(ref["Df"])[1:])
    assert np.allclose(table["Pr(>Chisq)"].iloc[1:], num(ref["p"])[1:], rtol=1e-4, atol=0)


def test_reml_fits_with_different_fixed_effects_are_refitted_by_ml(sleep):
    """lme4 refits every REML fit by ML; rows come in increasing npar whatever the order."""
    m1 = quiet(gs.lmer, "Reaction ~ Days + (Days | Subject)", sleep)
    m0 = quiet(gs.lmer, "Reaction ~ 1 + (Days | Subject)", sleep)
    table = lrt.anova(m1, m0)
    ref = REF["sleepstudy_fixed"]
    assert table.index.tolist() == ref["formulas"]
    check_table(table, ref)
    assert table.attrs["refitted_ml"] and "refitted by maximum likelihood" in str(table)
    # fixed effects differ: the plain chi-square applies, no chi-bar column value
    assert np.isnan(table["Pr(>Chisq) chi-bar"]).all()
    assert table.attrs["p_value"] == [None, "Pr(>Chisq)"]


def test_random_slope_gets_the_stram_lee_mixture(sleep_ml):
    i1, c2, _ = sleep_ml
    table = lrt.anova(i1, c2, names=["i1", "c2"])
    ref = REF["sleepstudy_slope"]
    check_table(table, ref)
    assert table.index.tolist() == ["i1", "c2"]
    assert table["Pr(>Chisq) chi-bar"].iloc[1] == pytest.approx(ref["p_chibar"], rel=1e-4)
    assert table.attrs["p_value"][1] == "Pr(>Chisq) chi-bar"
    assert "0.5 chi2_1 + 0.5 chi2_2" in table.attrs["note"]
    assert "Models:" in str(table) and "i1: Reaction ~ Days + (1 | Subject)" in str(table)


def test_one_added_variance_gets_the_50_50_mixture(sleep_ml):
    i1, c2, u2 = sleep_ml
    table = lrt.anova(c2, u2, i1)  # three models: sorted to i1, u2, c2
    ref = REF["sleepstudy_uncorrelated"]
    assert table["npar"].tolist() == [4, 5, 6]
    check_table(table.iloc[:2], ref)
    chibar = table["Pr(>Chisq) chi-bar"]
    assert chibar.iloc[1] == pytest.approx(ref["p_chibar"], rel=1e-4)
    assert chibar.iloc[1] == pytest.approx(table["Pr(>Chisq)"].iloc[1] / 2, rel=1e-12)
    # u2 -> c2 adds a covariance with an interior null value: the chi-square applies
    assert np.isnan(chibar.iloc[2])
    assert table.attrs["p_value"] == [None, "Pr(>Chisq) chi-bar", "Pr(>Chisq)"]
    assert "0.5 chi2_0 + 0.5 chi2_1" in table.attrs["note"]


def test_glmer_anova_matches_lme4_with_converged_pirls(cbpp_fits):
    g0, g1 = cbpp_fits
    table = lrt.anova(g0, g1)
    check_table(table, REF["cbpp_fixed_tight"])
    assert not table.attrs["refitted_ml"]
    # lme4's default Laplace (log|L|^2 one PIRLS iteration old, tests/test_glmer_reference.py)
    # is 2-3e-4 below ours in log-likelihood: ours is the higher (exact Laplace) optimum
    default = REF["cbpp_fixed"]
    assert (table["logLik"].to_numpy() > np.array(default["logLik"])).all()
    assert np.allclose(table["logLik"], default["logLik"], rtol=0, atol=1e-3)
    assert table["Chisq"].iloc[1] == pytest.approx(num(default["Chisq"])[1], rel=1e-4)


def test_refit_false_compares_reml_criteria_of_equal_fixed_parts(sleep):
    a = quiet(gs.lmer, "Reaction ~ Days + (1 | Subject)", sleep)
    b = quiet(gs.lmer, "Reaction ~ Days + (Days | Subject)", sleep)
    table = lrt.anova(a, b, refit=False)
    assert table["logLik"].tolist() == [a.loglik, b.loglik]
    assert table["Chisq"].iloc[1] == pytest.approx(2 * (b.loglik - a.loglik))
    assert table["Pr(>Chisq) chi-bar"].iloc[1] == pytest.approx(
        0.5 * stats.chi2.sf(table["Chisq"].iloc[1], 1) + 0.5 * stats.chi2.sf(table["Chisq"].iloc[1], 2))
    c = quiet(gs.lmer, "Reaction ~ 1 + (Days | Subject)", sleep)
    with pytest.raises(gs.ModelSpecError, match="REML criteria of models with different fixed"):
        lrt.anova(c, b, refit=False)
    with pytest.raises(gs.ModelSpecError, match="some by ML"):
        lrt.anova(a, quiet(gs.lmer, "Reaction ~ Days + (Days | Subject)", sleep, reml=False),
                  refit=False)


def test_refuses_models_of_different_data(sleep, sleep_ml, cbpp_fits):
    i1 = sleep_ml[0]
    fewer = quiet(gs.lmer, "Reaction ~ Days + (Days | Subject)", sleep.iloc[:-10], reml=False)
    with pytest.raises(gs.ModelSpecError, match=r"same number of rows \(\[180, 170\]\)"):
        lrt.anova(i1, fewer)
    other = quiet(gs.lmer, "Reaction ~ Days + (Days | Subject)",
                  sleep.assign(Reaction=np.log(sleep["Reaction"])), reml=False)
    with pytest.raises(gs.ModelSpecError, match="different response"):
        lrt.anova(i1, other)
    with pytest.raises(gs.ModelSpecError, match="lmer fits with glmer fits"):
        lrt.anova(i1, cbpp_fits[0])
    with pytest.raises(TypeError, match="argument 1 is a str"):
        lrt.anova(i1, "m1")
    with pytest.raises(ValueError, match="distinct labels"):
        lrt.anova(i1, sleep_ml[1], names=["a", "a"])


def test_equal_formulas_get_generic_names(sleep_ml):
    i1 = sleep_ml[0]
    table = lrt.anova(i1, i1)
    assert table.index.tolist() == ["m0", "m1"]
    assert np.isnan(table["Pr(>Chisq)"].iloc[1])  # Df 0: no test, as lme4's NA


def test_one_model_delegates_to_its_type_iii_table():
    class Fit:
        def anova(self):
            return "type III"

    assert lrt.anova(Fit()) == "type III"


@pytest.mark.parametrize("x,df", [(0.0, 1), (0.3, 1), (4.2, 1), (0.0, 2), (3.1, 2), (7.5, 4)])
def test_chibar_pvalue_is_the_50_50_mixture(x, df):
    lower = float(x <= 0) if df == 1 else stats.chi2.sf(x, df - 1)
    assert lrt.chibar_pvalue(x, df) == pytest.approx(0.5 * lower + 0.5 * stats.chi2.sf(x, df))
    # by simulation of the mixture: within 4 Monte-Carlo SEs
    rng = np.random.default_rng(1)
    draws = np.where(rng.random(200_000) < 0.5, rng.chisquare(df, 200_000),
                     rng.chisquare(df - 1, 200_000) if df > 1 else 0.0)
    p = lrt.chibar_pvalue(x, df)
    assert abs(np.mean(draws >= x) - p) < 4 * np.sqrt(p * (1 - p) / 200_000) + 1e-12


def test_no_random_loglik_is_the_lmm_criterion_at_theta_zero(sleep):
    """Independent of R: the linear model's ML and REML criteria are the LMM's at theta = 0."""
    m = quiet(gs.lmer, "Reaction ~ Days + (1 | Subject)", sleep, weights=np.linspace(0.5, 2, 180))
    for reml in (False, True):
        obj = m.model.new_objective(reml=reml)
        obj.update(np.zeros(1))
        fit = lrt.no_random_loglik(m, reml=reml)
        assert -2 * fit.loglik == pytest.approx(obj.objective(), rel=1e-12)
        assert fit.npar == 3


def test_glm_without_random_effects_matches_r(cbpp_fits):
    fit = lrt.no_random_loglik(cbpp_fits[1])
    assert fit.loglik == pytest.approx(REF["cbpp_variance"]["loglik_glm"], rel=1e-9)
    assert fit.npar == 4
