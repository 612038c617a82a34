"""Likelihood-ratio tests (glmm_sparse.lrt) against lme4 1.1-31's anova.merMod.

References: tests/reference/inference/lrt_references.json (generate_lrt.R). Tolerances
(issue 6): log-likelihoods to 1e-6 relative, statistics and p-values to 1e-4 relative.
"""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fits import CBPP, dataset, glmer, lmer, quiet
from scipy import stats

import glmm_sparse as gs
from glmm_sparse import lrt
from glmm_sparse import variance_tests as vt
from glmm_sparse.refit import Refitter

REF = json.loads((Path(__file__).parent / "reference" / "inference"
                  / "lrt_references.json").read_text())


def num(values):
    """R's NA (written as "NA" by jsonlite) as NaN."""
    return np.array([np.nan if v == "NA" else v for v in values], dtype=float)


@pytest.fixture(scope="module")
def sleep():
    return dataset("sleepstudy")


@pytest.fixture(scope="module")
def sleep_ml():
    forms = ["Reaction ~ Days + (1 | Subject)", "Reaction ~ Days + (Days | Subject)",
             "Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)"]
    return [lmer(f, "sleepstudy", reml=False) for f in forms]


@pytest.fixture(scope="module")
def cbpp_fits():
    return [glmer(CBPP.format(x), "cbpp", family="binomial") for x in ("1", "period")]


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
    m1 = lmer("Reaction ~ Days + (Days | Subject)", "sleepstudy")
    m0 = lmer("Reaction ~ 1 + (Days | Subject)", "sleepstudy")
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
    a = lmer("Reaction ~ Days + (1 | Subject)", "sleepstudy")
    b = lmer("Reaction ~ Days + (Days | Subject)", "sleepstudy")
    table = lrt.anova(a, b, refit=False)
    assert table["logLik"].tolist() == [a.loglik, b.loglik]
    assert table["Chisq"].iloc[1] == pytest.approx(2 * (b.loglik - a.loglik))
    assert table["Pr(>Chisq) chi-bar"].iloc[1] == pytest.approx(
        0.5 * stats.chi2.sf(table["Chisq"].iloc[1], 1) + 0.5 * stats.chi2.sf(table["Chisq"].iloc[1], 2))
    c = lmer("Reaction ~ 1 + (Days | Subject)", "sleepstudy")
    with pytest.raises(gs.ModelSpecError, match="REML criteria of models with different fixed"):
        lrt.anova(c, b, refit=False)
    with pytest.raises(gs.ModelSpecError, match="some by ML"):
        lrt.anova(a, lmer("Reaction ~ Days + (Days | Subject)", "sleepstudy", reml=False),
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


def null_statistics(replicates: int, *, groups: int, size: int, seed: int = 20240611):
    """LRT statistics and exact F of sigma_g^2 = 0 on data simulated with sigma_g = 0.

    Balanced one-way y ~ 1 + (1 | g), ML fits: each replicate is a new response refitted
    on the first fit's objective, then tested by variance_component_test (ML fit vs lm).
    """
    rng = np.random.default_rng(seed)
    g = np.repeat([f"g{i:03d}" for i in range(groups)], size)
    first = quiet(gs.lmer, "y ~ 1 + (1 | g)", pd.DataFrame({"g": g, "y": rng.normal(size=g.size)}),
                  reml=False)
    refitter = Refitter(first)
    tests = [vt.variance_component_test(quiet(refitter.fit, rng.normal(size=g.size)), 0)
             for _ in range(replicates)]
    return (np.array([t.statistic for t in tests]), np.array([t.p_chibar for t in tests]),
            np.array([t.exact_f.F for t in tests]))


def kolmogorov_distance_to_mixture(statistics: np.ndarray) -> float:
    """sup_x |ECDF(x) - (0.5 + 0.5 chi2_1.cdf(x))| with the atom at 0 (left limits too)."""
    x = np.sort(statistics)
    mix = np.where(x > 0, 0.5 + 0.5 * stats.chi2.cdf(x, 1), 0.5)
    right = np.searchsorted(x, x, "right") / x.size - mix
    left = np.searchsorted(x, x, "left") / x.size - np.where(x > 0, mix, 0.0)
    return float(np.max(np.abs(np.r_[right, left])))


def check_null_distribution(replicates: int, *, groups: int, size: int = 2):
    stat, p_chibar, F = null_statistics(replicates, groups=groups, size=size)
    # the ML estimate of sigma_g^2 is 0, so the statistic 0, exactly when F <= K / (K - 1)
    # (balanced one-way: n sigma_g^2 = SSA / K - SSE / (K (n - 1)) if positive)
    zero = stat < 1e-8  # the optimizer's 0 (theta at its bound)
    assert np.array_equal(zero, F <= groups / (groups - 1))
    stat = np.where(zero, 0.0, stat)
    # Dvoretzky-Kiefer-Wolfowitz: P(sup |ECDF - F| > eps) <= 2 exp(-2 R eps^2) = 1e-3, plus
    # the design's finite-sample excess P(statistic = 0) - 0.5 (0.020 for K = 100, n = 2;
    # 0.014 for K = 200): the 50:50 weights are the limit
    p_zero = stats.f.cdf(groups / (groups - 1), groups - 1, groups * (size - 1))
    eps = np.sqrt(np.log(2 / 1e-3) / (2 * replicates)) + (p_zero - 0.5)
    assert kolmogorov_distance_to_mixture(stat) < eps
    # the chi-bar p-value is uniform on (0, 0.5) under the null; the naive chi2_1 is not
    alphas = np.array([0.01, 0.05, 0.1, 0.2, 0.3, 0.4])
    rejected = (p_chibar[:, None] <= alphas).mean(axis=0)
    assert np.max(np.abs(rejected - alphas)) < eps
    naive = (stats.chi2.sf(stat, 1)[:, None] <= alphas).mean(axis=0)
    assert np.allclose(naive, rejected / 2, atol=eps)  # twice too large: half the rejections
    return stat


def test_lrt_under_the_null_follows_the_50_50_mixture():
    """200 simulated responses with no group variance, 100 groups of 2 (about 1 s): the
    statistic's distribution is 0.5 chi2_0 + 0.5 chi2_1 within Monte-Carlo error, not
    chi2_1."""
    stat = check_null_distribution(200, groups=100)
    # the naive law chi2_1 is far outside that error: half the statistics are 0
    x = np.sort(stat)
    naive = np.max(np.abs(np.searchsorted(x, x, "right") / x.size - stats.chi2.cdf(x, 1)))
    assert naive > 0.4


@pytest.mark.slow
def test_lrt_under_the_null_follows_the_50_50_mixture_many_replicates():
    """2,000 replicates of 200 groups of 2 (about a minute): eps = 0.058, which also rules
    out a statistic off by a factor of 2 (its distance to the mixture is 0.083)."""
    check_null_distribution(2000, groups=200)


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


def test_rows_of_weight_zero_count_as_absent(sleep):
    """A row of prior weight 0 is no observation (R's logLik.lm drops it, and so does the
    LMM's criterion): the linear model's log-likelihood, ML and REML, and the variance test
    equal those of the fit without these rows."""
    w = np.linspace(0.5, 2, len(sleep))
    w[:30] = 0.0
    m = quiet(gs.lmer, "Reaction ~ Days + (1 | Subject)", sleep, weights=w, reml=False)
    dropped = quiet(gs.lmer, "Reaction ~ Days + (1 | Subject)", sleep.iloc[30:], weights=w[30:],
                    reml=False)
    assert m.loglik == pytest.approx(dropped.loglik, rel=1e-10)
    for reml in (False, True):
        fit, want = lrt.no_random_loglik(m, reml=reml), lrt.no_random_loglik(dropped, reml=reml)
        assert fit.loglik == pytest.approx(want.loglik, rel=1e-12)
    r, r0 = vt.variance_component_test(m, 0), vt.variance_component_test(dropped, 0)
    assert r.statistic == pytest.approx(r0.statistic, rel=1e-6)


def test_reduced_models_are_written_with_the_formula_s_terms(sleep):
    """A factor slope keeps its written name (not its column "klo"), the reduced formula
    parses and refits to the reduced model's log-likelihood."""
    d = sleep.assign(k=pd.Categorical(np.where(sleep["Days"] < 5, "hi", "lo"),
                                      categories=["hi", "lo"]),
                     h=pd.Categorical(np.arange(len(sleep)) % 6))
    m = quiet(gs.lmer, "Reaction ~ Days + (1 + k | Subject) + (1 | h)", d, reml=False)
    r = vt.variance_component_test(m, "(1 | h)")
    assert r.reduced == "Reaction ~ Days + (1 + k | Subject)"
    refit = quiet(gs.lmer, r.reduced, d, reml=False)
    assert r.loglik_reduced == pytest.approx(refit.loglik, rel=1e-7)
    r2 = vt.variance_component_test(m, "(k | Subject)")
    assert r2.term == "(1 + k | Subject)" and r2.reduced == "Reaction ~ Days + (1 | h)"
    # the boundary note names the added term as written
    m0 = quiet(gs.lmer, "Reaction ~ Days + (1 | Subject)", d, reml=False)
    m1 = quiet(gs.lmer, "Reaction ~ Days + (1 | Subject) + (0 + k | Subject)", d, reml=False)
    note = lrt.anova(m0, m1).attrs["note"]
    assert "to (1 | Subject)" not in note and "(0 + k | Subject)" in note


def test_uncorrelated_terms_are_labelled_as_lme4_expands_them(sleep):
    m = lmer("Reaction ~ Days + (Days || Subject)", "sleepstudy", reml=False)
    assert lrt.term_labels(m.model) == ("(1 | Subject)", "(0 + Days | Subject)")
    r = vt.variance_component_test(m, "(0 + Days | Subject)")
    assert r.reduced == "Reaction ~ Days + (1 | Subject)"
    # the same as the reference model of the uncorrelated slope (test above)
    i1 = lmer("Reaction ~ Days + (1 | Subject)", "sleepstudy", reml=False)
    assert r.loglik_reduced == pytest.approx(i1.loglik, rel=1e-9)
