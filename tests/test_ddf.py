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


# ---- type III: codings, names, edge cases (review fixes) -------------------------------------
#
# lmerTest 3.1-3's anova(m, type = 3) (Satterthwaite) on the unbalanced cake of
# ddf_kr_unbalanced.json (every 7th row from row 3 dropped), each model fitted to bobyqa
# rhoend = 1e-12; our criterion equals R's to 5e-12 on every fit. R script (run from
# tests/reference/inference, its load_data as in generate_ddf_kr.R):
#   c1 <- ck[-seq(3, 270, by = 7), ]; c1$t <- c1$temp; c1$t2 <- (c1$temp - 200)^2 / 100
#   c1$r <- c1$recipe; c1$rt <- factor(c1$temp); c1$rc <- factor(paste0("r:", c1$recipe))
#   prefix_numeric: angle ~ t + t2;  prefix_factor: angle ~ r + rt
#   x_xf: angle ~ temp + temp:recipe
#   sum / helmert: angle ~ recipe * temp, contrasts = list(recipe = "contr.sum" / "contr.helmert")
#   poly: angle ~ recipe * rt, contrasts = list(rt = "contr.poly")
#   colon_levels: angle ~ rc * temp         (each + (1 | recipe:replicate), REML)
TYPE3_CODINGS = {  # formula (ours), terms (R's labels), F, NumDF, DenDF, Pr(>F)
    "prefix_numeric": ("angle ~ t + t2", ["t", "t2"], [81.1220463103228, 0.0716956019491991],
                       [1, 1], [185.208000992328, 185.258910318415],
                       [2.57793988895646e-16, 0.7891816754499]),
    "prefix_factor": ("angle ~ r + rt", ["r", "rt"], [0.295348457470533, 18.3395415750964],
                      [2, 5], [42.0257758547857, 182.226032340072],
                      [0.745804291896941, 9.92927239434344e-15]),
    "x_xf": ("angle ~ temp + temp:recipe", ["temp", "temp:recipe"],
             [75.5390146542129, 0.234097958139103], [1, 2],
             [220.328593128949, 48.8670033725388], [8.25839478633167e-16, 0.792166548230721]),
    "sum": ("angle ~ C(recipe, contr.sum) * temp", ["recipe", "temp", "recipe:temp"],
            [0.0974164182596232, 80.6711832424477, 0.0342790142808414], [2, 1, 2],
            [207.507887734794, 184.189969771931, 184.189881451932],
            [0.907219624893613, 3.11529797197955e-16, 0.966308018077308]),
    "helmert": ("angle ~ C(recipe, contr.helmert) * temp", ["recipe", "temp", "recipe:temp"],
                [0.0974164187237888, 80.671183510299, 0.0342790145432874], [2, 1, 2],
                [207.507889045964, 184.18997241316, 184.189882417578],
                [0.907219624472646, 3.11529743028342e-16, 0.966308017823766]),
    "poly": ("angle ~ recipe * C(rt, contr.poly)", ["recipe", "rt", "recipe:rt"],
             [0.287831259802064, 17.956770586537, 0.67459753893706], [2, 5, 10],
             [41.9990165046314, 172.233567853861, 172.230710434911],
             [0.751355393880624, 2.59059941233922e-14, 0.74700873487102]),
    "colon_levels": ("angle ~ rc * temp", ["rc", "temp", "rc:temp"],
                     [0.0974164185015858, 80.6711833826012, 0.0342790144176867], [2, 1, 2],
                     [207.507886921788, 184.189967751186, 184.189880131616],
                     [0.907219624674468, 3.11529800814113e-16, 0.966308017945166]),
}


@pytest.fixture(scope="module")
def cake_columns():
    """The unbalanced cake with the columns of TYPE3_CODINGS."""
    c1 = unbalanced_data("cake")
    temps = [str(v) for v in range(175, 230, 10)]
    return c1.assign(t=c1.temp, t2=(c1.temp - 200) ** 2 / 100, r=c1.recipe,
                     rt=pd.Categorical(c1.temp.map(lambda v: str(int(v))), categories=temps),
                     rc=pd.Categorical("r:" + c1.recipe.astype(str)))


@pytest.mark.parametrize("case", list(TYPE3_CODINGS))
def test_type3_codings_and_names_match_lmertest(cake_columns, case):
    """Names that start with another variable's, x + x:f, sum / Helmert / polynomial codings
    and levels holding ":" give lmerTest's table (terms in R's order; our labels keep the
    formula's spelling, e.g. C(recipe, contr.sum))."""
    formula, terms, F, num_df, den_df, p = TYPE3_CODINGS[case]
    table = gs.lmer(formula + " + (1 | recipe:replicate)", cake_columns).anova()
    assert len(table) == len(terms)
    assert table["NumDF"].tolist() == num_df
    assert rel(table["F value"], F) < REL_EST
    assert rel(table["DenDF"], den_df) < REL_DF
    assert rel(table["Pr(>F)"], p) < REL_DF


def without_model_spec(m):
    """The result as a fit that keeps only X's names (a streamed fit's frame)."""
    import dataclasses

    frame = dataclasses.replace(m.model.frame, fixed_spec=None)
    return dataclasses.replace(m, model=dataclasses.replace(m.model, frame=frame))


@pytest.mark.parametrize("case", ["prefix_numeric", "prefix_factor", "x_xf", "colon_levels"])
def test_type3_from_column_names_equals_the_model_spec(cake_columns, case):
    """Without a model spec the terms are read from R's column names: matched exactly
    (t is not t2's term, rt's columns are not r's levels), ":" inside levels allowed."""
    m = gs.lmer(TYPE3_CODINGS[case][0] + " + (1 | recipe:replicate)", cake_columns)
    from_spec, from_names = type3_contrasts(m), type3_contrasts(without_model_spec(m))
    assert list(from_names) == list(from_spec)
    for term, L in from_spec.items():
        assert from_names[term] == pytest.approx(L, abs=1e-7)


def test_anova_of_a_streamed_fit(tmp_path):
    """anova() reads no rows: a fit streamed from Parquet gives the in-memory table."""
    data = load_data("cake")
    data.to_parquet(tmp_path / "cake.parquet")
    streamed = gs.lmer(CAKE, str(tmp_path / "cake.parquet"), streaming=True)
    memory = gs.lmer(CAKE, data)
    for ddf in ("satterthwaite", "kenward-roger"):
        a, b = streamed.anova(ddf=ddf), memory.anova(ddf=ddf)
        assert list(a.index) == list(b.index) == ["recipe", "temp", "recipe:temp"]
        assert a["F value"].to_numpy() == pytest.approx(b["F value"].to_numpy(), rel=1e-6)
        assert a["DenDF"].to_numpy() == pytest.approx(b["DenDF"].to_numpy(), rel=1e-5)


@pytest.mark.parametrize("fixed", ["0", "1"])
@pytest.mark.parametrize("ddf", ["satterthwaite", "kenward-roger", "none", "normal"])
def test_anova_without_tested_terms_is_empty(fixed, ddf):
    """No fixed effects, or the intercept only: an empty table (lmerTest's), not an error."""
    m = gs.lmer(f"Reaction ~ {fixed} + (1 | Subject)", load_data("sleepstudy"))
    table = m.anova(ddf=ddf)
    assert len(table) == 0
    assert list(table.columns) == {
        "none": ["Sum Sq", "Mean Sq", "NumDF", "F value"],
        "normal": ["Chisq", "Df", "Pr(>Chisq)"]}.get(
            ddf, ["Sum Sq", "Mean Sq", "NumDF", "DenDF", "F value", "Pr(>F)"])


@pytest.mark.parametrize("ddf", ["kr", "satterthwaite", "none", "normal"])
def test_a_zero_contrast_tests_nothing(unbalanced, ddf):
    m = unbalanced("sleepstudy")
    with pytest.raises(gs.ModelSpecError, match="rank 0: it tests nothing"):
        m.contrast_test(np.zeros(2), ddf=ddf)


def test_kr_test_of_dependent_rows_is_that_of_a_basis(unbalanced):
    """A contrast with a repeated row tests the same hypothesis with one numerator df."""
    m = unbalanced("sleepstudy")
    one = m.contrast_test(np.array([[0.0, 1.0]]), ddf="kr").iloc[0]
    two = m.contrast_test(np.array([[0.0, 1.0], [0.0, 2.0]]), ddf="kr").iloc[0]
    assert two["NumDF"] == 1
    assert two.to_dict() == pytest.approx(one.to_dict(), rel=1e-10)


def test_satterthwaite_df_do_not_depend_on_the_units_of_the_response(unbalanced):
    """y -> 1e6 y changes no df (the sigma coordinate is sigma / sigma_hat, so no Hessian
    eigenvalue falls under the tolerance because of the units)."""
    data = unbalanced_data("sleepstudy")
    formula = UNBAL["sleepstudy"]["formula"]
    base = unbalanced("sleepstudy").coef_table()
    with warnings.catch_warnings():
        warnings.simplefilter("error", GlmmSparseWarning)
        for scale in (1e-6, 1e6):
            scaled = gs.lmer(formula, data.assign(Reaction=data.Reaction * scale)).coef_table()
            assert scaled["df"].to_numpy() == pytest.approx(base["df"].to_numpy(), rel=1e-5)


def test_dropped_hessian_directions_are_reported():
    from glmm_sparse.ddf import _pseudo_inverse

    with pytest.warns(GlmmSparseWarning, match="1 negative eigenvalue"):
        inv = _pseudo_inverse(np.diag([2.0, -1.0, 4.0]))
    assert inv == pytest.approx(np.diag([0.5, 0.0, 0.25]))
    with pytest.warns(GlmmSparseWarning, match="1 close to zero eigenvalue"):
        _pseudo_inverse(np.diag([2.0, 1e-12]))
