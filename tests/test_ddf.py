"""Denominator df: Satterthwaite (lmerTest), Kenward-Roger (pbkrtest), type III tables.

References (tests/reference/inference, README.md there): cake_ddf.json and
pastes_profile.json (generate_inference.R: balanced cake, where pbkrtest's adjusted SEs
equal the unadjusted ones) and ddf_kr_unbalanced.json (generate_ddf_kr.R: sleepstudy,
cake, cake with temperature as a factor and Penicillin with rows removed, fitted by lme4
to rhoend = 1e-12 so that R's optimum is ours). Tolerances are the issue's: df and
p-values 1e-4 relative, estimates and SEs 1e-6 (lme4's default optimizer on cake; the
unbalanced fits are tight and agree to ~1e-7).
"""
import json
import pickle
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import glmm_sparse as gs
from glmm_sparse import GlmmSparseWarning
from glmm_sparse import kenward_roger
from glmm_sparse.ddf import normalize_ddf, type3_contrasts, varpar_derivatives
from glmm_sparse.synthetic import Design, simulate
from refdata import load_data

INF = Path(__file__).parent / "reference" / "inference"
CAKE = "angle ~ recipe * temp + (1 | recipe:replicate)"
REL_DF, REL_EST = 1e-4, 1e-6
UNBAL = json.loads((INF / "ddf_kr_unbalanced.json").read_text())


def rel(a, b):
    return np.max(np.abs(np.asarray(a, float) / np.asarray(b, float) - 1.0))


@pytest.fixture(scope="module")
def cake():
    return gs.lmer(CAKE, load_data("cake"))


def unbalanced_data(case: str) -> pd.DataFrame:
    ref = UNBAL[case]
    df = load_data(ref["data"]).drop(index=np.array(ref["dropped_rows_1based"]) - 1)
    df = df.reset_index(drop=True)
    if "tf_levels" in ref:
        df["tf"] = pd.Categorical(df["temp"].map(lambda v: str(int(v))),
                                  categories=ref["tf_levels"])
    return df


@pytest.fixture(scope="module")
def unbalanced():
    cache = {}

    def get(case: str, reml: bool = True):
        if (case, reml) not in cache:
            cache[case, reml] = gs.lmer(UNBAL[case]["formula"], unbalanced_data(case),
                                        reml=reml)
        return cache[case, reml]

    return get


def check_coefs(table: pd.DataFrame, ref: dict, rel_est: float = REL_EST):
    ref = {k: (v if isinstance(v, list) else [v]) for k, v in ref.items()}  # jsonlite scalars
    assert list(table.index) == ref["names"]
    assert rel(table["Estimate"], ref["estimate"]) < rel_est
    assert rel(table["Std. Error"], ref["se"]) < rel_est
    assert rel(table["t value"], ref["t"]) < rel_est
    assert rel(table["df"], ref["df"]) < REL_DF
    assert rel(table["Pr(>|t|)"], ref["p"]) < REL_DF


def check_anova(table: pd.DataFrame, ref: dict):
    assert list(table.index) == ref["terms"]
    assert table["NumDF"].tolist() == ref["num_df"]
    assert rel(table["F value"], ref["F"]) < REL_EST
    assert rel(table["DenDF"], ref["den_df"]) < REL_DF
    assert rel(table["Pr(>F)"], ref["p"]) < REL_DF
    if "sum_sq" in ref:
        assert rel(table["Sum Sq"], ref["sum_sq"]) < REL_EST
        assert rel(table["Mean Sq"], ref["mean_sq"]) < REL_EST


# ---- the references -------------------------------------------------------------------------

def test_cake_satterthwaite(cake):
    check_coefs(cake.coef_table(), json.loads((INF / "cake_ddf.json").read_text())["satterthwaite"])


def test_cake_kenward_roger(cake):
    ref = json.loads((INF / "cake_ddf.json").read_text())["kenward_roger"]
    check_coefs(cake.coef_table(ddf="Kenward-Roger"), ref)


def test_cake_type3_satterthwaite(cake):
    ref = json.loads((INF / "cake_ddf.json").read_text())["anova_type3_satterthwaite"]
    check_anova(cake.anova(), ref)


def test_pastes_satterthwaite():
    ref = json.loads((INF / "pastes_profile.json").read_text())
    m = gs.lmer(ref["formula"], load_data("pastes"))
    check_coefs(m.coef_table(), ref["satterthwaite"])


@pytest.mark.parametrize("case, reml, part, method", [
    ("sleepstudy", True, "satterthwaite", "satterthwaite"),
    ("sleepstudy", True, "kenward_roger", "kr"),
    ("sleepstudy", False, "satterthwaite_ml", "satterthwaite"),
    ("cake", True, "satterthwaite", "satterthwaite"),
    ("cake", True, "kenward_roger", "kenward-roger"),
    ("cake_factors", True, "satterthwaite", "satterthwaite"),
    ("penicillin", True, "satterthwaite", "Satterthwaite"),
    ("penicillin", True, "kenward_roger", "KR"),
])
def test_unbalanced_t_tests(unbalanced, case, reml, part, method):
    m = unbalanced(case, reml)
    ref = UNBAL[case]
    criterion = ref["criterion"] if reml else ref["criterion_ml"]
    assert m.objective <= criterion + 1e-7  # the same optimum (ours is not worse)
    check_coefs(m.coef_table(ddf=method), ref[part])


def test_unbalanced_kenward_roger_adjusts_the_vcov(unbalanced):
    """Where the adjustment is not zero, Phi_A is pbkrtest's vcovAdj to 1e-6."""
    kr = kenward_roger.kenward_roger(unbalanced("sleepstudy"))
    expected = np.array(UNBAL["sleepstudy"]["vcov_kr"])
    assert np.allclose(kr.vcov_adjusted, expected, rtol=1e-6, atol=0)
    assert not np.allclose(kr.vcov_adjusted, kr.vcov, rtol=1e-4)


@pytest.mark.parametrize("case, part, method", [
    ("cake", "anova_type3_satterthwaite", "satterthwaite"),
    ("cake", "anova_type3_kenward_roger", "kenward-roger"),
    ("cake_factors", "anova_type3_satterthwaite", "satterthwaite"),
    ("cake_factors", "anova_type3_kenward_roger", "kenward-roger"),
])
def test_unbalanced_type3_tables(unbalanced, case, part, method):
    check_anova(unbalanced(case).anova(type=3, ddf=method), UNBAL[case][part])


# ---- Satterthwaite against a dense brute force ----------------------------------------------

def dense_deviance(y, X, Z, theta, sigma, reml):
    """-2 log-likelihood (or REML criterion) from V = sigma^2 (Z Lambda Lambda' Z' + I),
    for scalar random-intercept terms (Lambda = diag(theta per column))."""
    n, p = X.shape
    V = sigma**2 * (Z @ np.diag(theta**2) @ Z.T + np.eye(n))
    Vi = np.linalg.inv(V)
    XViX = X.T @ Vi @ X
    beta = np.linalg.solve(XViX, X.T @ Vi @ y)
    r = y - X @ beta
    dev = np.linalg.slogdet(V)[1] + r @ Vi @ r + n * np.log(2 * np.pi)
    if reml:
        dev += np.linalg.slogdet(XViX)[1] - p * np.log(2 * np.pi)
    return dev, np.linalg.inv(XViX)


def dense_satterthwaite(y, X, Z, theta_cols, varpar, reml, L):
    """nu = 2 (L'CL)^2 / (g'Ag), every derivative by 5-point differences of dense formulas."""
    def dev(vp):
        return dense_deviance(y, X, Z, theta_cols(vp[:-1]), vp[-1], reml)[0]

    def var_l(vp):
        return L @ dense_deviance(y, X, Z, theta_cols(vp[:-1]), vp[-1], reml)[1] @ L

    m, h = varpar.shape[0], 1e-3
    E = np.eye(m) * h

    def d1(f, i):
        return (-f(varpar + 2 * E[i]) + 8 * f(varpar + E[i]) - 8 * f(varpar - E[i])
                + f(varpar - 2 * E[i])) / (12 * h)

    H = np.array([[d1(lambda v, j=j: d1_at(dev, v, j, E, h), i) for j in range(m)]
                  for i in range(m)])
    g = np.array([d1(var_l, i) for i in range(m)])
    A = 2 * np.linalg.inv(0.5 * (H + H.T))
    return 2 * var_l(varpar) ** 2 / (g @ A @ g)


def d1_at(f, v, j, E, h):
    return (-f(v + 2 * E[j]) + 8 * f(v + E[j]) - 8 * f(v - E[j]) + f(v - 2 * E[j])) / (12 * h)


@pytest.mark.parametrize("reml", [True, False])
def test_satterthwaite_equals_dense_brute_force(reml):
    """Crossed intercepts on 60 rows: the n-free df equal a dense computation from V."""
    rng = np.random.default_rng(7)
    n = 60
    g1, g2 = rng.integers(0, 6, n), rng.integers(0, 4, n)
    x = rng.normal(size=n)
    y = 1 + 0.5 * x + rng.normal(size=6)[g1] * 0.8 + rng.normal(size=4)[g2] * 0.5 \
        + rng.normal(size=n)
    data = pd.DataFrame({"y": y, "x": x, "g1": [f"a{i}" for i in g1],
                         "g2": [f"b{i}" for i in g2]})
    m = gs.lmer("y ~ x + (1 | g1) + (1 | g2)", data, reml=reml)
    X = np.column_stack([np.ones(n), x])
    lev1, lev2 = sorted(set(data.g1)), sorted(set(data.g2))
    Z = np.column_stack([(data.g1 == lv).to_numpy(float) for lv in lev1]
                        + [(data.g2 == lv).to_numpy(float) for lv in lev2])

    def theta_cols(th):
        return np.concatenate([np.full(len(lev1), th[0]), np.full(len(lev2), th[1])])

    assert m.theta_names == ("g1.(Intercept)", "g2.(Intercept)")
    varpar = np.concatenate([m.theta, [m.sigma]])
    ours = m.coef_table()["df"].to_numpy()
    for j, L in enumerate(np.eye(2)):
        dense = dense_satterthwaite(y, X, Z, theta_cols, varpar, reml, L)
        assert ours[j] == pytest.approx(dense, rel=1e-6)


def test_satterthwaite_never_builds_n_by_n():
    """2 x 10^4 rows, crossed intercepts and a correlated slope: quick, and the memory it
    allocates is a small fraction of one n x n matrix (3.2 GB)."""
    design = Design((200, 40), slope=True)
    data, _ = simulate(design, 20_000, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GlmmSparseWarning)
        m = gs.lmer(design.formula(), data)
    tracemalloc.start()
    start = time.perf_counter()
    table = m.coef_table()
    elapsed = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert elapsed < 5.0
    assert peak < 20e6
    assert np.all(np.isfinite(table["df"])) and np.all(table["df"] > 10)


# ---- contrasts, type III, choices -----------------------------------------------------------

def test_contrast_test_one_row_is_the_t_test(cake):
    table = cake.coef_table()
    row = cake.contrast_test(pd.Series({"temp": 1.0}))
    assert row["F value"].iloc[0] == pytest.approx(table.loc["temp", "t value"] ** 2, rel=1e-12)
    assert row["DenDF"].iloc[0] == pytest.approx(table.loc["temp", "df"], rel=1e-12)
    assert row["NumDF"].iloc[0] == 1


def test_contrast_test_of_a_term_is_its_anova_row(cake):
    L = type3_contrasts(cake)["recipe"]
    assert L.shape == (2, 6)
    mine = cake.contrast_test(L).iloc[0]
    assert mine.to_dict() == pytest.approx(cake.anova().loc["recipe"].to_dict(), rel=1e-12)


def test_type3_contrast_of_a_contained_term_averages_the_slopes(cake):
    """temp is contained in recipe:temp: its hypothesis is the mean slope over recipes."""
    L = type3_contrasts(cake)["temp"]
    assert L == pytest.approx(np.array([[0, 0, 0, 1, 1 / 3, 1 / 3]]), abs=1e-7)


def test_type3_tables_do_not_depend_on_the_reference_level(unbalanced):
    """Another reference level (another treatment coding) tests the same hypotheses."""
    data = unbalanced_data("cake_factors")
    data["recipe"] = data["recipe"].cat.reorder_categories(["C", "A", "B"])
    data["tf"] = data["tf"].cat.reorder_categories(list(data["tf"].cat.categories[::-1]))
    other = gs.lmer(UNBAL["cake_factors"]["formula"], data)
    a, b = unbalanced("cake_factors").anova(), other.anova()
    assert a["F value"].to_numpy() == pytest.approx(b["F value"].to_numpy(), rel=1e-6)
    assert a["DenDF"].to_numpy() == pytest.approx(b["DenDF"].to_numpy(), rel=1e-5)


@pytest.mark.parametrize("given, glmm, method", [
    (None, False, "satterthwaite"), (None, True, "normal"),
    ("Satterthwaite", False, "satterthwaite"), ("Kenward-Roger", False, "kenward-roger"),
    ("kr", False, "kenward-roger"), ("KR", False, "kenward-roger"),
    ("kenward_roger", False, "kenward-roger"), ("NONE", True, "none"),
    ("normal", False, "normal"), ("normal", True, "normal"),
])
def test_ddf_spellings(given, glmm, method):
    assert normalize_ddf(given, glmm=glmm) == method


@pytest.mark.parametrize("given, glmm, words", [
    ("bonferroni", False, "ddf must be one of 'satterthwaite', 'kenward-roger', 'normal', 'none'"),
    ("satterthwaite", True, "linear mixed models only"),
    ("kr", True, "use ddf='normal'"),
])
def test_ddf_errors(given, glmm, words):
    with pytest.raises(gs.ModelSpecError, match=words):
        normalize_ddf(given, glmm=glmm)


def test_table_columns(cake):
    assert list(cake.coef_table().columns) == ["Estimate", "Std. Error", "df", "t value",
                                               "Pr(>|t|)"]
    assert list(cake.coef_table("none").columns) == ["Estimate", "Std. Error", "t value"]
    normal = cake.coef_table("normal")
    assert list(normal.columns) == ["Estimate", "Std. Error", "z value", "Pr(>|z|)"]
    assert list(cake.anova(ddf="none").columns) == ["Sum Sq", "Mean Sq", "NumDF", "F value"]
    assert list(cake.anova(ddf="normal").columns) == ["Chisq", "Df", "Pr(>Chisq)"]


def test_kenward_roger_refuses_ml_and_large_q(unbalanced, monkeypatch):
    with pytest.raises(gs.ModelSpecError, match="only available for REML"):
        unbalanced("sleepstudy", False).coef_table("kr")
    monkeypatch.setattr(kenward_roger, "KR_MAX_Q", 10)
    fresh = gs.lmer(UNBAL["sleepstudy"]["formula"], unbalanced_data("sleepstudy"))
    with pytest.raises(gs.ModelSpecError, match=r"q = 36 .*use ddf='satterthwaite'"):
        fresh.coef_table("kr")


def test_glmm_tests_are_wald(tmp_path):
    g = gs.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", load_data("cbpp"),
                 family="binomial")
    table = g.coef_table()
    assert list(table.columns) == ["Estimate", "Std. Error", "z value", "Pr(>|z|)"]
    with pytest.raises(gs.ModelSpecError, match="GLMM"):
        g.coef_table("satterthwaite")
    chisq = g.anova()
    L = type3_contrasts(g)["period"]
    b, V = g.fixef.to_numpy(), g.vcov.to_numpy()
    expected = (L @ b) @ np.linalg.solve(L @ V @ L.T, L @ b)
    assert chisq.loc["period", "Chisq"] == pytest.approx(expected, rel=1e-10)
    assert chisq.loc["period", "Df"] == 3


def test_bad_contrasts(cake):
    with pytest.raises(gs.ModelSpecError, match="one column per fixed effect"):
        cake.contrast_test(np.ones(3))
    with pytest.raises(gs.ModelSpecError, match="not fixed effects"):
        cake.contrast_test(pd.Series({"tmp": 1.0}))
    with pytest.raises(gs.ModelSpecError, match="type III"):
        cake.anova(type=2)


def test_cache_and_pickle(cake):
    first = varpar_derivatives(cake)
    assert varpar_derivatives(cake) is first
    again = pickle.loads(pickle.dumps(cake))
    pd.testing.assert_frame_equal(again.coef_table(), cake.coef_table())
    assert first.names == ["recipe:replicate.(Intercept)", "sigma"]
