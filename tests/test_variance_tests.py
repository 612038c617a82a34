"""Tests of one variance component (glmm_sparse.variance_tests): the likelihood-ratio test
with its chi-bar-square p-value, the exact F test, and the ANOVA estimators.

References: tests/reference/inference/dyestuff2_variance_tests.json and
pastes_lrt_variance.json (generate_inference.R), lrt_references.json (generate_lrt.R; the
exact F tests there are lm's sequential ANOVA F, an independent computation). Tolerances
(issue 6): statistics and p-values 1e-4 relative, log-likelihoods 1e-6 relative.
"""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fits import CBPP, dataset, glmer, lmer, quiet
from scipy import stats

import glmm_sparse as gs
from glmm_sparse import variance_tests as vt

INF = Path(__file__).parent / "reference" / "inference"
D2 = json.loads((INF / "dyestuff2_variance_tests.json").read_text())
PASTES = json.loads((INF / "pastes_lrt_variance.json").read_text())
REF = json.loads((INF / "lrt_references.json").read_text())


@pytest.fixture(scope="module")
def pastes():
    return dataset("pastes")


@pytest.fixture(scope="module")
def dyestuff2_fit():
    return lmer("Yield ~ 1 + (1 | Batch)", "dyestuff2")


def dense_exact_f(y, X, Zs, tested):
    """The oracle: ranks and least-squares residuals of dense [X Z] and [X Z_-tested]."""
    def rss_rank(A):
        coef = np.linalg.lstsq(A, y, rcond=None)[0]
        return float(np.sum((y - A @ coef) ** 2)), np.linalg.matrix_rank(A)

    rss1, r1 = rss_rank(np.column_stack([X, *Zs]))
    rss0, r0 = rss_rank(np.column_stack([X, *(Z for i, Z in enumerate(Zs) if i != tested)]))
    F = ((rss0 - rss1) / (r1 - r0)) / (rss1 / (len(y) - r1))
    return F, r1 - r0, len(y) - r1


def indicators(col):
    return pd.get_dummies(col.astype(str)).to_numpy(dtype=float)


# ------------------------------------------------------------------ Dyestuff2


def test_dyestuff2_lrt_on_the_boundary(dyestuff2_fit):
    """REML (and ML) put the batch variance at 0: statistic 0, both p-values 1."""
    r = vt.variance_component_test(dyestuff2_fit, "(1 | Batch)")
    want = D2["lrt_variance_component"]
    assert r.statistic == pytest.approx(want["statistic"], abs=1e-8)
    assert r.p_chisq == pytest.approx(want["p_chisq1"], rel=1e-4)
    assert r.p_chibar == pytest.approx(want["p_chibar"], rel=1e-4)
    assert r.applies == "chi-bar-square" and "boundary" in r.reason
    assert r.reduced.endswith("(no random effects)") and r.df == 1


def test_dyestuff2_exact_f(dyestuff2_fit):
    f = vt.exact_f_test(dyestuff2_fit, "Batch")
    want = D2["exact_F"]
    assert (f.df1, f.df2) == (want["df1"], want["df2"])
    assert f.F == pytest.approx(want["F"], rel=1e-4)
    assert f.p == pytest.approx(want["p"], rel=1e-4)


def test_dyestuff2_anova_estimate_is_negative_where_reml_is_zero(dyestuff2_fit):
    a = vt.anova_estimators(dyestuff2_fit)
    want = D2["anova_estimators"]
    assert a.table.loc["Batch", "Mean Sq"] == pytest.approx(want["MSA"], rel=1e-9)
    assert a.table.loc["Residual", "Mean Sq"] == pytest.approx(want["MSE"], rel=1e-9)
    est = a.estimates
    assert est.loc["Batch", "anova"] == pytest.approx(want["sigma2_between"], rel=1e-9)
    assert est.loc["Residual", "anova"] == pytest.approx(want["sigma2_within"], rel=1e-9)
    assert est.loc["Batch", "reml"] == pytest.approx(D2["reml_sigma2_between"], abs=1e-10)
    assert est["outside_parameter_space"].tolist() == [True, False]
    assert "outside the parameter space" in str(a)


# --------------------------------------------------------------------- Pastes


def test_pastes_batch_variance_lrt(pastes):
    m = lmer("strength ~ 1 + (1 | batch) + (1 | cask:batch)", "pastes")  # REML fit
    r = vt.variance_component_test(m, "(1 | batch)")
    assert r.method == "ML" and r.reduced == PASTES["reduced"]
    assert [r.loglik_reduced, r.loglik_full] == pytest.approx(PASTES["loglik"], rel=1e-6)
    assert r.statistic == pytest.approx(PASTES["statistic"], rel=1e-4)
    assert r.p_chisq == pytest.approx(PASTES["p_chisq1"], rel=1e-4)
    assert r.p_chibar == pytest.approx(PASTES["p_chibar"], rel=1e-4)
    # batch is nested in cask:batch's span: no exact F test, and the reason given
    assert r.exact_f is None and "0 numerator df" in r.exact_f_note
    with pytest.raises(gs.ModelSpecError, match="nested in another term"):
        vt.exact_f_test(m, "batch")


def test_pastes_exact_f_against_lm_and_a_dense_oracle(pastes):
    m = lmer("strength ~ 1 + (1 | batch) + (1 | sample)", "pastes")
    f = vt.exact_f_test(m, "(1 | sample)")
    want = REF["pastes_exact_F"]
    assert (f.df1, f.df2) == (want["df1"], want["df2"])
    assert f.F == pytest.approx(want["F"], rel=1e-4)
    assert f.p == pytest.approx(want["p"], rel=1e-4)
    X = np.ones((len(pastes), 1))
    F, df1, df2 = dense_exact_f(pastes["strength"].to_numpy(), X,
                                [indicators(pastes["batch"]), indicators(pastes["sample"])], 1)
    assert (f.df1, f.df2) == (df1, df2) and f.F == pytest.approx(F, rel=1e-9)
    # the same term written as in a nested formula
    mn = lmer("strength ~ 1 + (1 | batch/cask)", "pastes")
    assert vt.exact_f_test(mn, "(1 | cask:batch)").F == pytest.approx(f.F, rel=1e-10)


def test_unbalanced_exact_f_against_lm_and_a_dense_oracle(pastes):
    want = REF["pastes_unbalanced_exact_F"]
    data = pastes.drop(index=np.array(want["dropped_rows_1based"]) - 1).reset_index(drop=True)
    m = quiet(gs.lmer, want["formula"], data)
    f = vt.exact_f_test(m, want["term"])
    assert (f.df1, f.df2) == (want["df1"], want["df2"])
    assert f.F == pytest.approx(want["F"], rel=1e-4)
    assert f.p == pytest.approx(want["p"], rel=1e-4)
    F, df1, df2 = dense_exact_f(data["strength"].to_numpy(), np.ones((len(data), 1)),
                                [indicators(data["batch"]), indicators(data["sample"])], 1)
    assert (f.df1, f.df2) == (df1, df2) and f.F == pytest.approx(F, rel=1e-9)


def test_exact_f_with_a_slope_term_and_weights_against_the_dense_oracle():
    """Vector-valued terms, covariates in X, prior weights: W^1/2 [X Z] projections."""
    sleep = dataset("sleepstudy")
    w = np.linspace(0.5, 2.0, len(sleep))
    m = quiet(gs.lmer, "Reaction ~ Days + (Days | Subject)", sleep, weights=w)
    f = vt.exact_f_test(m, 0)
    sw = np.sqrt(w)
    X = np.column_stack([np.ones(len(sleep)), sleep["Days"]])
    S = indicators(sleep["Subject"])
    Z = np.column_stack([S, S * sleep["Days"].to_numpy()[:, None]])
    F, df1, df2 = dense_exact_f(sleep["Reaction"].to_numpy() * sw, X * sw[:, None],
                                [Z * sw[:, None]], 0)
    assert (f.df1, f.df2) == (df1, df2) == (34, 144)
    assert f.F == pytest.approx(F, rel=1e-9)
    assert f.p == pytest.approx(stats.f.sf(F, df1, df2), rel=1e-9)


def test_pastes_nested_anova_estimators(pastes):
    m = lmer("strength ~ 1 + (1 | batch/cask)", "pastes")
    a = vt.anova_estimators(m)
    want = REF["pastes_anova"]
    assert a.design == "balanced two-level nested"
    assert a.table["Df"].tolist() == want["df"]
    assert a.table["Mean Sq"].tolist() == pytest.approx([want["MSA"], want["MSB"], want["MSE"]],
                                                        rel=1e-9)
    est = a.estimates
    assert est.loc["batch", "anova"] == pytest.approx(want["sigma2_batch"], rel=1e-9)
    assert est.loc["cask:batch", "anova"] == pytest.approx(want["sigma2_cask"], rel=1e-9)
    assert est.loc["Residual", "anova"] == pytest.approx(want["sigma2_within"], rel=1e-9)
    # balanced, all positive: REML equals ANOVA (lme4's optimum to its 1e-6 convergence)
    reml = dict(zip(want["reml_grp"], want["reml_vcov"]))
    assert est["reml"].to_dict() == pytest.approx(reml, rel=2e-6)
    assert np.allclose(est["reml"], est["anova"], rtol=1e-5)
    assert not est["outside_parameter_space"].any()


def test_dyestuff_one_way_estimators_and_exact_f_of_an_ml_fit():
    m = lmer("Yield ~ 1 + (1 | Batch)", "dyestuff", reml=False)
    a = vt.anova_estimators(m)  # REML column from a REML refit
    want = REF["dyestuff_anova"]
    assert a.estimates.loc["Batch", "anova"] == pytest.approx(want["sigma2_between"], rel=1e-9)
    assert a.estimates.loc["Batch", "reml"] == pytest.approx(want["reml_between"], rel=1e-6)
    assert a.estimates.loc["Residual", "reml"] == pytest.approx(want["reml_within"], rel=1e-6)
    f = vt.exact_f_test(m, "(1 | Batch)")
    assert f.F == pytest.approx(REF["dyestuff_exact_F"]["F"], rel=1e-4)
    assert f.p == pytest.approx(REF["dyestuff_exact_F"]["p"], rel=1e-4)


# ------------------------------------------------- no random effect left: lm, glm


def test_random_intercept_against_the_linear_model():
    m = lmer("Reaction ~ Days + (1 | Subject)", "sleepstudy")
    r = vt.variance_component_test(m, "Subject")
    want = REF["sleepstudy_variance"]
    assert r.loglik_reduced == pytest.approx(want["loglik_lm"], rel=1e-6)
    assert r.loglik_full == pytest.approx(want["loglik_lmm"], rel=1e-6)
    assert r.statistic == pytest.approx(want["statistic"], rel=1e-4)
    assert r.p_chisq == pytest.approx(want["p_chisq1"], rel=1e-4)
    assert r.p_chibar == pytest.approx(want["p_chibar"], rel=1e-4)
    assert r.exact_f is not None and r.exact_f.df1 == 17
    table = r.to_frame()
    assert table.index.tolist() == ["LRT chi-square", "LRT chi-bar-square", "exact F"]


def test_glmm_variance_against_the_glm():
    g = glmer(CBPP.format("period"), "cbpp", family="binomial")
    r = vt.variance_component_test(g, "(1 | herd)")
    want, tight = REF["cbpp_variance"], REF["cbpp_variance_tight"]
    assert r.loglik_reduced == pytest.approx(want["loglik_glm"], rel=1e-6)
    # lme4 with PIRLS converged (its default Laplace is ~3e-4 lower: test_lrt.py)
    assert r.loglik_full == pytest.approx(tight["loglik_glmm"], rel=1e-6)
    assert r.statistic == pytest.approx(tight["statistic"], rel=1e-4)
    assert r.p_chisq == pytest.approx(tight["p_chisq1"], rel=1e-4)
    assert r.p_chibar == pytest.approx(tight["p_chibar"], rel=1e-4)
    assert r.exact_f is None


def test_reml_lrt_and_a_vector_term():
    m = lmer("Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)", "sleepstudy")
    r = vt.variance_component_test(m, "(0 + Days | Subject)", reml=True)
    reduced = lmer("Reaction ~ Days + (1 | Subject)", "sleepstudy")
    assert r.method == "REML"
    assert r.statistic == pytest.approx(2 * (m.loglik - reduced.loglik), rel=1e-6)
    full = lmer("Reaction ~ Days + (Days | Subject)", "sleepstudy")
    rv = vt.variance_component_test(full, "(1 + Days | Subject)")
    assert rv.df == 3 and np.isnan(rv.p_chibar) and rv.applies == "chi-square"


# ---------------------------------------------------------------------- errors


def test_errors_name_the_problem(pastes, dyestuff2_fit, monkeypatch):
    with pytest.raises(gs.ModelSpecError, match=r"matches no term.*\(1 \| Batch\)"):
        vt.variance_component_test(dyestuff2_fit, "(1 | batch)")
    with pytest.raises(gs.ModelSpecError, match="unbalanced"):
        vt.anova_estimators(quiet(gs.lmer, "strength ~ 1 + (1 | batch)", pastes.iloc[1:]))
    with pytest.raises(gs.ModelSpecError, match="intercept-only fixed part"):
        vt.anova_estimators(lmer("strength ~ cask + (1 | batch)", "pastes"))
    with pytest.raises(gs.ModelSpecError, match="not nested"):
        vt.anova_estimators(lmer("strength ~ 1 + (1 | batch) + (1 | cask)", "pastes"))
    g = glmer(CBPP.format("period"), "cbpp", family="binomial")
    with pytest.raises(gs.ModelSpecError, match="linear mixed models"):
        vt.exact_f_test(g, "herd")
    monkeypatch.setattr(vt, "MAX_DENSE_COLUMNS", 5)
    with pytest.raises(gs.ModelSpecError, match=r"p \+ q = 7 columns, more than 5"):
        vt.exact_f_test(dyestuff2_fit, "Batch")


# ------------------------------------------------------ naming a term as written


@pytest.fixture(scope="module")
def factor_slope_fit():
    """A factor slope (1 + k | Subject), a transformed covariate (1 + I(Days**2) | h) and
    an uncorrelated pair (Days || Subject) would not fit together; two models."""
    sleep = dataset("sleepstudy")
    d = sleep.assign(k=pd.Categorical(np.where(sleep["Days"] < 5, "hi", "lo"),
                                      categories=["hi", "lo"]),
                     h=pd.Categorical(np.arange(len(sleep)) % 6))
    return quiet(gs.lmer, "Reaction ~ Days + (1 + k | Subject) + (1 + I(Days**2) | h)", d)


# written term -> the label of the term it names
FACTOR_SLOPE_NAMES = {
    "(1 + k | Subject)": "(1 + k | Subject)",
    "(k | Subject)": "(1 + k | Subject)",
    "(k+1|Subject)": "(1 + k | Subject)",
    "1 + k | Subject": "(1 + k | Subject)",
    "Subject": "(1 + k | Subject)",
    "(1 + I(Days**2) | h)": "(1 + I(Days**2) | h)",
    "(1 + I(Days ** 2) | h)": "(1 + I(Days**2) | h)",
    "(I(Days ^ 2) | h)": None,  # another expression: no match
    "(0 + k | Subject)": None,
    "(1 | Subject)": None,
}


@pytest.mark.parametrize("written,label", list(FACTOR_SLOPE_NAMES.items()))
def test_terms_are_found_as_the_formula_writes_them(factor_slope_fit, written, label):
    labels = gs.lrt.term_labels(factor_slope_fit.model)
    assert sorted(labels) == ["(1 + I(Days**2) | h)", "(1 + k | Subject)"]
    if label is None:
        with pytest.raises(gs.ModelSpecError, match=r"matches no term.*\(1 \+ k \| Subject\)"):
            vt.find_term(factor_slope_fit, written)
    else:
        assert labels[vt.find_term(factor_slope_fit, written)] == label


UNCORRELATED_NAMES = {
    "(1 | Subject)": "(1 | Subject)",
    "(0 + Days | Subject)": "(0 + Days | Subject)",
    "(Days - 1 | Subject)": "(0 + Days | Subject)",
    "(-1 + Days | Subject)": "(0 + Days | Subject)",
    "(Days | Subject)": None,  # that is (1 + Days | Subject), which the model does not have
}


@pytest.mark.parametrize("written,label", list(UNCORRELATED_NAMES.items()))
def test_terms_of_a_double_bar_are_found_as_lme4_expands_them(written, label):
    m = lmer("Reaction ~ Days + (Days || Subject)", "sleepstudy")
    labels = gs.lrt.term_labels(m.model)
    if label is None:
        with pytest.raises(gs.ModelSpecError, match="matches no term"):
            vt.find_term(m, written)
    else:
        assert labels[vt.find_term(m, written)] == label
    with pytest.raises(gs.ModelSpecError, match="matches more than one term"):
        vt.find_term(m, "Subject")


def test_exact_f_of_a_factor_slope_term_by_its_written_name(factor_slope_fit):
    f = vt.exact_f_test(factor_slope_fit, "(1 + k | Subject)")
    assert f.term == "(1 + k | Subject)"
    sleep = dataset("sleepstudy")
    days = sleep["Days"].to_numpy(dtype=float)
    S, H = indicators(sleep["Subject"]), indicators(pd.Series(np.arange(len(sleep)) % 6))
    X = np.column_stack([np.ones(len(sleep)), days])
    Zs = [np.column_stack([S, S * (days >= 5)[:, None]]), np.column_stack([H, H * days[:, None]**2])]
    F, df1, df2 = dense_exact_f(sleep["Reaction"].to_numpy(), X, Zs, 0)
    assert (f.df1, f.df2) == (df1, df2) and f.F == pytest.approx(F, rel=1e-9)
