"""predict(): new data, re_form, new levels, type, standard errors, missing values.

References: tests/reference/inference/cake_predict.json (generate_inference.R) and the
*_predict.json files made by generate_predict.R (lme4 1.1-31's predict.merMod). Each of
the latter also holds lme4's own beta and b ("estimates"): predicting from those tests
the prediction itself (encodings, levels, offsets, link) to rounding, apart from how
closely our fit matches lme4's, which is tested against the fit's own tolerance.
"""
from __future__ import annotations

import json
import pickle
from dataclasses import replace
from functools import cache

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from refdata import REFERENCE, load_data

import glmm_sparse as gs
from glmm_sparse.errors import DataError, ModelSpecError

INFERENCE = REFERENCE / "inference"


def reference(name: str) -> dict:
    return json.loads((INFERENCE / f"{name}.json").read_text())


def rel_err(got, want) -> float:
    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    return float(np.max(np.abs(got - want) / np.abs(want)))


FITS = {
    "cake_predict": ("lmer", "cake", {}),
    "cbpp_predict": ("glmer", "cbpp", {"family": "binomial"}),
    "cbpp_poisson_offset_predict": ("glmer", "cbpp", {"family": "poisson"}),
    "sleepstudy_predict": ("lmer", "sleepstudy", {}),
    "penicillin_predict": ("lmer", "penicillin", {}),
}


@cache
def fitted(name: str):
    """The reference case's model fitted once per test run."""
    how, data, kwargs = FITS[name]
    return getattr(gs, how)(reference(name)["formula"], load_data(data), **kwargs)


def with_lme4_estimates(m, ref: dict):
    """The result with lme4's beta and b in place of ours (same model and encodings)."""
    est = ref["estimates"]
    beta = pd.Series(np.atleast_1d(est["fixef"]), index=m.fixef.index, name="Estimate")
    return replace(m, fixef=beta, b=np.asarray(est["b"], dtype=float))


# -- against lme4 ------------------------------------------------------------------------

def test_cake_matches_lme4():
    ref = reference("cake_predict")
    m = fitted("cake_predict")
    nd = pd.DataFrame(ref["newdata"])
    # measured: 5.3e-9 (conditional: theta as close as the optimizers get), 1e-13
    assert rel_err(m.predict(nd, allow_new_levels=True), ref["conditional_allow_new_levels"]) < 1e-8
    assert rel_err(m.predict(nd, re_form="population"), ref["population"]) < 1e-8


# (reference, key, predict keyword arguments, whether newdata is passed)
CASES = [
    ("cbpp_predict", "fitted_link", {"type": "link"}, False),
    ("cbpp_predict", "fitted_response", {"type": "response"}, False),
    ("cbpp_predict", "link_allow_new_levels", {"allow_new_levels": True, "type": "link"}, True),
    ("cbpp_predict", "response_allow_new_levels",
     {"allow_new_levels": True, "type": "response"}, True),
    ("cbpp_predict", "population_link", {"re_form": "~0", "type": "link"}, True),
    ("cbpp_predict", "population_response", {"re_form": "population", "type": "response"},
     True),
    ("cbpp_poisson_offset_predict", "link_allow_new_levels",
     {"allow_new_levels": True, "type": "link"}, True),
    ("cbpp_poisson_offset_predict", "response_allow_new_levels",
     {"allow_new_levels": True, "type": "response"}, True),
    ("cbpp_poisson_offset_predict", "population_response",
     {"re_form": "NA", "type": "response"}, True),
    ("sleepstudy_predict", "fitted", {}, False),
    ("sleepstudy_predict", "conditional_allow_new_levels", {"allow_new_levels": True}, True),
    ("sleepstudy_predict", "population", {"re_form": "population"}, True),
    ("penicillin_predict", "conditional", {}, True),
    ("penicillin_predict", "plate_only", {"re_form": "~(1 | plate)"}, True),
    ("penicillin_predict", "sample_only", {"re_form": "~ (1|sample)"}, True),
]


def _predict(m, ref, kwargs, new):
    return m.predict(pd.DataFrame(ref["newdata"]) if new else None, **kwargs)


@pytest.mark.parametrize("name, key, kwargs, new", CASES)
def test_predictions_from_lme4_estimates(name, key, kwargs, new):
    """From lme4's own beta and b, lme4's predictions to rounding."""
    ref = reference(name)
    m = with_lme4_estimates(fitted(name), ref)
    assert rel_err(_predict(m, ref, kwargs, new), ref[key]) < 1e-12


# our own fits against lme4's predictions: as close as the two optimizers agree on theta
# (the GLMM references are lme4 fits converged tightly, generate_predict.R; our Laplace
# log-likelihood is 7e-9 above lme4's for cbpp). Measured, relative: sleepstudy 7.5e-7,
# Penicillin 3e-8, cbpp binomial 6.4e-8, cbpp Poisson 3.2e-7 (the link scale is compared
# relative to max(|eta|, 1): the Poisson case's eta is near 0)
FIT_RTOL = 1e-6


@pytest.mark.parametrize("name, key, kwargs, new", CASES)
def test_predictions_match_lme4(name, key, kwargs, new):
    ref = reference(name)
    m = fitted(name)
    got = _predict(m, ref, kwargs, new).to_numpy()
    want = np.asarray(ref[key])
    scale = np.abs(want) if kwargs.get("type") != "link" else np.maximum(np.abs(want), 1.0)
    assert np.all(np.abs(got - want) <= FIT_RTOL * scale)


# -- conditional and population predictions on the fit's rows ------------------------------

def test_no_newdata_is_fitted():
    m = fitted("sleepstudy_predict")
    assert np.array_equal(m.predict().to_numpy(), m.fitted.to_numpy())
    assert m.predict().index.equals(m.fitted.index)
    g = fitted("cbpp_predict")
    np.testing.assert_allclose(g.predict(type="response").to_numpy(), g.fitted.to_numpy(),
                               rtol=1e-13)
    eta = g.predict(type="link").to_numpy()
    np.testing.assert_allclose(1 / (1 + np.exp(-eta)), g.fitted.to_numpy(), rtol=1e-13)


def test_population_is_x_beta():
    m = fitted("sleepstudy_predict")
    X = m.model.frame.X
    np.testing.assert_allclose(m.predict(re_form="population").to_numpy(),
                               X @ m.fixef.to_numpy(), rtol=1e-14)


def test_newdata_rows_of_the_fit_give_the_fitted_values():
    """Stateful transforms keep the fit's state: scale(Days) is centred and scaled by the
    fit's mean and SD, not the new rows' (R's predict would recompute scale() here)."""
    ss = load_data("sleepstudy")
    m = gs.lmer("Reaction ~ scale(Days) + C(Days > 4) + (Days | Subject)", ss)
    rows = [5, 17, 40, 179]
    got = m.predict(ss.iloc[rows])
    np.testing.assert_allclose(got.to_numpy(), m.fitted.iloc[rows].to_numpy(), rtol=1e-13)
    assert list(got.index) == rows


def test_row_order_and_index_are_kept():
    ref = reference("sleepstudy_predict")
    m = fitted("sleepstudy_predict")
    nd = pd.DataFrame(ref["newdata"], index=list("abcde"))
    shuffled = nd.iloc[[3, 0, 4, 2, 1]]
    a = m.predict(nd, allow_new_levels=True)
    b = m.predict(shuffled, allow_new_levels=True)
    assert list(b.index) == list("daecb")
    np.testing.assert_array_equal(b.loc[list("abcde")].to_numpy(), a.to_numpy())


def test_level_types_and_category_orders_are_matched_by_label():
    """Fixed factors and grouping factors are matched by label: integers for text
    levels, a Categorical in another order, or a dict of columns."""
    ref = reference("cbpp_predict")
    g = fitted("cbpp_predict")
    nd = pd.DataFrame(ref["newdata"])
    want = g.predict(nd, allow_new_levels=True).to_numpy()
    as_ints = nd.assign(herd=nd["herd"].astype(int), period=nd["period"].astype(float))
    np.testing.assert_array_equal(g.predict(as_ints, allow_new_levels=True).to_numpy(), want)
    reordered = nd.assign(period=pd.Categorical(nd["period"], categories=["4", "3", "2", "1"]))
    np.testing.assert_array_equal(g.predict(reordered, allow_new_levels=True).to_numpy(), want)
    as_dict = {c: nd[c].tolist() for c in nd.columns}
    np.testing.assert_array_equal(g.predict(as_dict, allow_new_levels=True).to_numpy(), want)


def test_population_needs_no_grouping_column():
    ref = reference("cake_predict")
    m = fitted("cake_predict")
    nd = pd.DataFrame(ref["newdata"]).drop(columns="replicate")
    assert rel_err(m.predict(nd, re_form="population"), ref["population"]) < 1e-8


def test_aliased_column_is_dropped_in_new_data_too():
    ss = load_data("sleepstudy").assign(Days2=lambda d: 2 * d["Days"])
    with pytest.warns(gs.GlmmSparseWarning, match="Days2"):
        m = gs.lmer("Reaction ~ Days + Days2 + (1 | Subject)", ss)
    np.testing.assert_allclose(m.predict(ss.iloc[:7]).to_numpy(), m.fitted.iloc[:7].to_numpy(),
                               rtol=1e-13)


def test_offset_argument_is_read_from_newdata_or_given():
    cb = load_data("cbpp").assign(logsize=lambda d: np.log(d["size"]))
    by_name = gs.glmer("incidence ~ period + (1 | herd)", cb, family="poisson", offset="logsize")
    nd = cb.iloc[[0, 9, 30]]
    np.testing.assert_allclose(by_name.predict(nd, type="response").to_numpy(),
                               by_name.fitted.iloc[[0, 9, 30]].to_numpy(), rtol=1e-12)
    as_array = gs.glmer("incidence ~ period + (1 | herd)", cb, family="poisson",
                        offset=cb["logsize"].to_numpy())
    with pytest.raises(DataError, match="offset= was an array"):
        as_array.predict(nd)
    np.testing.assert_allclose(as_array.predict(nd, offset=nd["logsize"].to_numpy()).to_numpy(),
                               by_name.predict(nd).to_numpy(), rtol=1e-12)


def test_pickled_result_predicts_the_same():
    ref = reference("sleepstudy_predict")
    m = fitted("sleepstudy_predict")
    nd = pd.DataFrame(ref["newdata"])
    back = pickle.loads(pickle.dumps(m))
    pd.testing.assert_frame_equal(back.predict(nd, allow_new_levels=True, se_fit=True),
                                  m.predict(nd, allow_new_levels=True, se_fit=True))


# -- missing values and errors ------------------------------------------------------------

def test_missing_values_give_nan_rows_or_an_error():
    ref = reference("sleepstudy_predict")
    m = fitted("sleepstudy_predict")
    nd = pd.DataFrame(ref["newdata"])
    holes = nd.copy()
    holes.loc[1, "Days"] = np.nan
    holes.loc[3, "Subject"] = None
    got = m.predict(holes, allow_new_levels=True)
    want = m.predict(nd, allow_new_levels=True)
    assert got.isna().tolist() == [False, True, False, True, False]
    np.testing.assert_array_equal(got.dropna().to_numpy(), want.iloc[[0, 2, 4]].to_numpy())
    # the grouping column is not read at the population level
    pop = m.predict(holes, re_form="population")
    assert pop.isna().tolist() == [False, True, False, False, False]
    with pytest.raises(DataError, match=r"2 new rows have missing values \(in columns \['Days', 'Subject'\]"):
        m.predict(holes, na_action="raise")


def test_unseen_grouping_level_is_an_error_naming_term_and_level():
    ref = reference("cake_predict")
    m = fitted("cake_predict")
    with pytest.raises(DataError, match=r"grouping factor 'recipe:replicate'.*'C:99'.*allow_new_levels=True"):
        m.predict(pd.DataFrame(ref["newdata"]))


def test_unseen_fixed_factor_level_is_an_error_naming_column_and_level():
    m = fitted("cake_predict")
    nd = pd.DataFrame({"recipe": ["A", "D"], "temp": [175, 185], "replicate": ["1", "2"]})
    with pytest.raises(DataError, match=r"column 'recipe'.*\['D'\].*did not see"):
        m.predict(nd, allow_new_levels=True)


def test_missing_column_is_an_error_naming_it():
    m = fitted("sleepstudy_predict")
    with pytest.raises(DataError, match=r"no column 'Days' \(for the fixed effects\)"):
        m.predict(pd.DataFrame({"Subject": ["308"]}))
    with pytest.raises(DataError, match=r"no column 'Subject' \(for the random-effects term"):
        m.predict(pd.DataFrame({"Days": [1.0]}))


def test_text_where_the_fit_had_numbers_is_an_error():
    m = fitted("sleepstudy_predict")
    with pytest.raises(DataError, match="'Days'.*numeric in the fit"):
        m.predict(pd.DataFrame({"Days": ["one"], "Subject": ["308"]}))


@pytest.mark.parametrize("kwargs, error, match", [
    ({"re_form": "~(1 | Days)"}, ModelSpecError, r"\(1 \| Days\) is not one of the fit's random terms: \(1 \+ Days \| Subject\)"),
    ({"re_form": "~(0 + x | Subject)"}, ModelSpecError, r"'x' of \(0 \+ x \| Subject\) is not a column of the fit's terms on 'Subject' \(columns \['\(Intercept\)', 'Days'\]\)"),
    ({"re_form": "~."}, ModelSpecError, r"'~\.' names no random-effects term .*'~\(1 \+ Days \| Subject\)'"),
    ({"re_form": "~1"}, ModelSpecError, "names no random-effects term"),
    ({"re_form": "~ Days"}, ModelSpecError, "names no random-effects term"),
    ({"re_form": "(1 | Subject)"}, ModelSpecError, "one-sided formula"),
    ({"re_form": 3}, TypeError, "re_form must be"),
    ({"type": "mean"}, ModelSpecError, "type must be one of 'response', 'link'"),
    ({"na_action": "omit"}, ModelSpecError, "na_action must be one of"),
    ({"offset": [1.0]}, ModelSpecError, "offset= is for new rows"),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        fitted("sleepstudy_predict").predict(**kwargs)


def test_conditional_se_of_a_glmm_is_refused():
    with pytest.raises(ModelSpecError, match="re_form='population'"):
        fitted("cbpp_predict").predict(se_fit=True)


# -- standard errors --------------------------------------------------------------------

def test_population_se_is_sqrt_diag_x_vcov_x():
    ref = reference("cake_predict")
    m = fitted("cake_predict")
    nd = pd.DataFrame(ref["newdata"])
    got = m.predict(nd, re_form="population", se_fit=True)
    # X of the new rows by hand: recipe B, C treatment columns, temp, interactions
    rec = nd["recipe"].to_numpy()
    b, c, t = (rec == "B") * 1.0, (rec == "C") * 1.0, nd["temp"].to_numpy(dtype=float)
    X = np.column_stack([np.ones(3), b, c, t, b * t, c * t])
    assert list(m.fixef.index) == ["(Intercept)", "recipeB", "recipeC", "temp",
                                   "recipeB:temp", "recipeC:temp"]
    V = m.vcov.to_numpy()
    np.testing.assert_allclose(got["se_fit"].to_numpy(), np.sqrt(np.diag(X @ V @ X.T)), rtol=1e-12)
    np.testing.assert_allclose(got["fit"].to_numpy(), X @ m.fixef.to_numpy(), rtol=1e-12)


def test_glmm_population_se_on_both_scales():
    ref = reference("cbpp_predict")
    g = fitted("cbpp_predict")
    nd = pd.DataFrame(ref["newdata"])
    link = g.predict(nd, re_form="population", type="link", se_fit=True)
    resp = g.predict(nd, re_form="population", type="response", se_fit=True)
    period = nd["period"].astype(int).to_numpy()
    X = np.column_stack([np.ones(4)] + [(period == k) * 1.0 for k in (2, 3, 4)])
    V = g.vcov.to_numpy()
    se_eta = np.sqrt(np.diag(X @ V @ X.T))
    np.testing.assert_allclose(link["se_fit"].to_numpy(), se_eta, rtol=1e-12)
    mu = 1 / (1 + np.exp(-link["fit"].to_numpy()))
    np.testing.assert_allclose(resp["fit"].to_numpy(), mu, rtol=1e-13)
    np.testing.assert_allclose(resp["se_fit"].to_numpy(), mu * (1 - mu) * se_eta, rtol=1e-12)


def dense_pev(m, X_new, Z_new, new_prior):
    """sigma^2 a' A^-1 a from dense matrices: A = [[L'Z'ZL + I, L'Z'X], [X'ZL, X'X]]."""
    frame = m.model.frame
    n, offs = frame.n, np.cumsum([0] + [t.q for t in frame.terms])
    blocks, lam = [], []
    for t, T in zip(frame.terms, m.model.at_optimum().T):
        Zt = sp.csr_matrix((t.X.ravel(), (np.repeat(np.arange(n), t.k),
                                          (t.codes[:, None] * t.k + np.arange(t.k)).ravel())),
                           shape=(n, t.q)).toarray()
        blocks.append(Zt)
        lam.append(np.kron(np.eye(t.nlev), T))
    Z = np.hstack(blocks)
    Lam = np.zeros((offs[-1], offs[-1]))
    for i, L in enumerate(lam):
        Lam[offs[i]:offs[i + 1], offs[i]:offs[i + 1]] = L
    ZL, X = Z @ Lam, frame.X
    A = np.block([[ZL.T @ ZL + np.eye(offs[-1]), ZL.T @ X], [X.T @ ZL, X.T @ X]])
    a = np.hstack([Z_new @ Lam, X_new])
    return m.sigma**2 * (np.einsum("ij,ji->i", a, np.linalg.solve(A, a.T)) + new_prior)


def test_conditional_se_is_the_prediction_error_variance():
    """Random slopes and a new level: against the dense PLS system."""
    ref = reference("sleepstudy_predict")
    m = fitted("sleepstudy_predict")
    nd = pd.DataFrame(ref["newdata"])
    got = m.predict(nd, allow_new_levels=True, se_fit=True)
    levels = list(m.model.frame.terms[0].levels)
    days = nd["Days"].to_numpy(dtype=float)
    X_new = np.column_stack([np.ones(5), days])
    Z_new = np.zeros((5, 2 * len(levels)))
    prior = np.zeros(5)
    T = m.model.at_optimum().T[0]
    for r, subj in enumerate(nd["Subject"]):
        z = np.array([1.0, days[r]])
        if subj in levels:
            Z_new[r, 2 * levels.index(subj):2 * levels.index(subj) + 2] = z
        else:
            prior[r] = z @ T @ T.T @ z
    np.testing.assert_allclose(got["se_fit"].to_numpy() ** 2,
                               dense_pev(m, X_new, Z_new, prior), rtol=1e-9)
    assert prior[3] > 0 and got["se_fit"].iloc[3] > got["se_fit"].iloc[0]


def test_conditional_se_crossed_and_one_term():
    """Crossed terms (a fill-reducing permutation in the factor) and re_form of one term."""
    ref = reference("penicillin_predict")
    m = fitted("penicillin_predict")
    nd = pd.DataFrame(ref["newdata"])
    plates = list(m.model.frame.terms[0].levels)
    samples = list(m.model.frame.terms[1].levels)
    Z_both = np.zeros((3, len(plates) + len(samples)))
    for r, (pl, sa) in enumerate(zip(nd["plate"], nd["sample"])):
        Z_both[r, plates.index(pl)] = 1.0
        Z_both[r, len(plates) + samples.index(sa)] = 1.0
    Z_plate = Z_both.copy()
    Z_plate[:, len(plates):] = 0.0
    X_new = np.ones((3, 1))
    both = m.predict(nd, se_fit=True)["se_fit"].to_numpy()
    plate = m.predict(nd, re_form="~(1 | plate)", se_fit=True)["se_fit"].to_numpy()
    np.testing.assert_allclose(both**2, dense_pev(m, X_new, Z_both, 0.0), rtol=1e-9)
    np.testing.assert_allclose(plate**2, dense_pev(m, X_new, Z_plate, 0.0), rtol=1e-9)


def test_fitted_rows_se_matches_new_rows_se():
    m = fitted("sleepstudy_predict")
    ss = load_data("sleepstudy")
    rows = [0, 33, 100]
    a = m.predict(se_fit=True).iloc[rows]
    b = m.predict(ss.iloc[rows], se_fit=True)
    np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), rtol=1e-12)


# -- re_form: lme4's matching rules ------------------------------------------------------
# lme4 1.1-31 (R 4.2.2), data loaded as generate_predict.R loads them:
#   ms <- lmer(Reaction ~ Days + (Days | Subject), ss)      # ns: sleepstudy_predict newdata
#   p <- function(...) unname(predict(ms, newdata = ns, allow.new.levels = TRUE, ...))
#   p(re.form = ~ (1 | Subject)); p(re.form = ~ (0 + Days | Subject))
#   p(re.form = ~ (Days || Subject))
#   mp <- lmer(strength ~ 1 + (1 | batch) + (1 | cask:batch), pastes)
#   np <- data.frame(batch = c("A", "A", "D", "J"), cask = c("a", "b", "c", "a"))
#   predict(mp, newdata = np, re.form = ~ (1 | cask:batch))
#   predict(mp, newdata = np, re.form = ~ (1 | batch:cask))  # Error: "grouping factors
#     specified in re.form that were not present in original model"
#   predict(mp, re.form = ~ .)  # Error: "No random effects terms specified in formula"
# (re.form of fewer columns than the fitted term keeps those columns of the fitted b:
# mkNewReTrms matches a term's random effects by column name.)
SLEEPSTUDY_SUBSETS = {
    "~(1 | Subject)": [253.663655798386, 258.109153587862, 368.392556552156,
                       272.339676767677, 377.012536363637],
    "~(0 + Days | Subject)": [251.405104848485, 259.719328898072, 368.918185209771,
                              272.339676767677, 377.012536363637],
    "~(Days || Subject)": [253.663655798386, 219.320590819267, 381.232777317482,
                           272.339676767677, 377.012536363637],
}
PASTES = {
    "formula": "strength ~ 1 + (1 | batch) + (1 | cask:batch)",
    "newdata": {"batch": ["A", "A", "D", "J"], "cask": ["a", "b", "c", "a"]},
    "fixef": [60.0533333333354],
    "b": [1.77468628537195, 0.883655895342906, -2.57220932873269, -3.05280869871191,
          -3.31756514803976, 3.59755667042486, 2.45351158809995, -1.78952323222987,
          -4.57390066363349, -0.693695813021345, 0.332650417107131, -2.48109446394169,
          2.61911979702067, -2.09145145320203, -3.94244735762119, -1.641840317604,
          -0.142152974776737, 4.26702741448238, 4.27058599505743, -0.309152914817383,
          1.96695773447393, 0.210705823485985, 3.62854490480606, 4.49384567854067,
          -0.385425549234625, -0.151736587063692, -2.59361395082693, 3.16146658214602,
          -2.21857541213427, -1.70312092080671, 0.800645020017794, -0.272508696573303,
          0.72226862498595, -0.127813813437531, -1.50241520322845, 0.354502463682162,
          -0.0554663718695711, 1.10812164668164, -0.495579974741257, -0.531753695525126],
    "cask_batch": [61.8280196187074, 60.3859837504426, 64.5471790118761, 59.3596375203141],
}


@pytest.mark.parametrize("re_form", list(SLEEPSTUDY_SUBSETS))
def test_re_form_with_some_columns_of_a_term_matches_lme4(re_form):
    """(1 | Subject) out of a fitted (Days | Subject): the intercepts' random effects only,
    as lme4 (columns matched by name); (Days || Subject) names both columns: all of b."""
    ref = reference("sleepstudy_predict")
    nd = pd.DataFrame(ref["newdata"])
    want = np.asarray(SLEEPSTUDY_SUBSETS[re_form])
    theirs = with_lme4_estimates(fitted("sleepstudy_predict"), ref)
    assert rel_err(theirs.predict(nd, re_form=re_form, allow_new_levels=True), want) < 1e-12
    # our fit: as close as the fits agree (measured 6.2e-7, 3.9e-7, 2.7e-7)
    ours = fitted("sleepstudy_predict").predict(nd, re_form=re_form, allow_new_levels=True)
    assert rel_err(ours, want) < FIT_RTOL


def test_re_form_of_the_whole_term_split_is_the_conditional_prediction():
    m = fitted("sleepstudy_predict")
    np.testing.assert_array_equal(m.predict(re_form="~(Days || Subject)").to_numpy(),
                                  m.predict().to_numpy())


@cache
def pastes():
    return gs.lmer(PASTES["formula"], load_data("pastes"))


def test_re_form_of_an_interaction_group_matches_lme4():
    m = pastes()
    nd = pd.DataFrame(PASTES["newdata"])
    theirs = replace(m, fixef=pd.Series(PASTES["fixef"], index=m.fixef.index),
                     b=np.asarray(PASTES["b"]))
    assert rel_err(theirs.predict(nd, re_form="~(1 | cask:batch)"), PASTES["cask_batch"]) < 1e-12
    # our fit (measured 1.2e-8)
    assert rel_err(m.predict(nd, re_form="~(1 | cask:batch)"), PASTES["cask_batch"]) < 1e-7


def test_re_form_groups_are_matched_as_written_like_lme4():
    """lme4 refuses (1 | batch:cask) for a fitted (1 | cask:batch); the error says how to
    write it."""
    with pytest.raises(ModelSpecError, match=r"\(1 \| batch:cask\) is not one of the fit's "
                       r"random terms.*matched as written.*write 'cask:batch' for 'batch:cask'"):
        pastes().predict(pd.DataFrame(PASTES["newdata"]), re_form="~(1 | batch:cask)")


def test_conditional_se_with_some_columns_of_a_term():
    """re_form="~(1 | Subject)" from (Days | Subject): a = [Lambda'z; x] with z's Days
    entry 0, and a new level's prior variance z'TT'z of that z; against the dense system."""
    ref = reference("sleepstudy_predict")
    m = fitted("sleepstudy_predict")
    nd = pd.DataFrame(ref["newdata"])
    got = m.predict(nd, re_form="~(1 | Subject)", allow_new_levels=True, se_fit=True)
    levels = list(m.model.frame.terms[0].levels)
    X_new = np.column_stack([np.ones(5), nd["Days"].to_numpy(dtype=float)])
    Z_new = np.zeros((5, 2 * len(levels)))
    prior = np.zeros(5)
    T = m.model.at_optimum().T[0]
    for r, subj in enumerate(nd["Subject"]):
        if subj in levels:
            Z_new[r, 2 * levels.index(subj)] = 1.0
        else:
            prior[r] = T[0] @ T[0]  # z = (1, 0): (TT')[0, 0]
    np.testing.assert_allclose(got["se_fit"].to_numpy() ** 2,
                               dense_pev(m, X_new, Z_new, prior), rtol=1e-9)


# -- grouping levels: one labelling rule for the fit and for new rows ------------------------

def _ids(d: pd.DataFrame) -> pd.Series:
    return d["Subject"].astype(str).astype(int)


# the sleepstudy subjects' IDs in several column types (rows 0, 10, 100: subjects 308,
# 309, 349); "floats with a half" has a non-integral ID for subject 309 only
GROUP_COLUMNS = {
    "floats": lambda d: _ids(d).astype(float),
    "floats with a half": lambda d: _ids(d).astype(float) + 0.5 * (_ids(d) == 309),
    "nullable Int64": lambda d: _ids(d).astype("Int64"),
    "nullable Float64": lambda d: _ids(d).astype("Float64"),
    "text of numbers": lambda d: _ids(d).astype(str),
    "text of floats": lambda d: _ids(d).astype(float).astype(str),
    "Categorical of floats": lambda d: pd.Categorical(_ids(d).astype(float)),
    "booleans": lambda d: _ids(d) % 2 == 0,
}


@pytest.mark.parametrize("kind", list(GROUP_COLUMNS))
@pytest.mark.parametrize("rows", [[0, 10, 100], [0, 100]])
def test_a_grouping_column_of_any_type_predicts_its_own_rows(kind, rows):
    """The fit's own rows, as new data, get the fitted values: the level labels do not
    depend on the column's type nor on the other rows given (review finding: float IDs were
    '308.0' in the fit and '308' in new data, unless a non-integral ID was among them)."""
    ss = load_data("sleepstudy")
    d = ss.assign(S=GROUP_COLUMNS[kind](ss))
    m = gs.lmer("Reaction ~ Days + (1 | S)", d)
    np.testing.assert_allclose(m.predict(d.iloc[rows]).to_numpy(),
                               m.fitted.iloc[rows].to_numpy(), rtol=1e-13)


def test_float_ids_are_labelled_as_r_labels_them_and_match_other_types():
    """factor(308.0) is "308" in R: a float ID column gives the same levels (and the same
    fit) as the integer one, and new rows may bring the IDs as integers, floats or text."""
    ss = load_data("sleepstudy")
    as_int = gs.lmer("Reaction ~ Days + (1 | S)", ss.assign(S=_ids(ss)))
    as_float = gs.lmer("Reaction ~ Days + (1 | S)", ss.assign(S=_ids(ss).astype(float)))
    assert list(as_float.ranef["grp"]) == list(as_int.ranef["grp"])
    assert as_float.ranef["grp"].iloc[0] == "308"
    want = as_float.fitted.iloc[[0, 10]].to_numpy()
    for ids in ([308, 309], [308.0, 309.0], ["308", "309"], pd.array([308, 309], "Int64")):
        nd = pd.DataFrame({"Days": ss["Days"].iloc[[0, 10]].to_numpy(), "S": ids})
        np.testing.assert_allclose(as_float.predict(nd).to_numpy(), want, rtol=1e-13)
    # a Categorical of floats in the fit, plain floats in the new rows
    as_cat = gs.lmer("Reaction ~ Days + (1 | S)",
                     ss.assign(S=pd.Categorical(_ids(ss).astype(float))))
    nd = pd.DataFrame({"Days": ss["Days"].iloc[[0, 10]].to_numpy(), "S": [308.0, 309.0]})
    np.testing.assert_allclose(as_cat.predict(nd).to_numpy(),
                               as_cat.fitted.iloc[[0, 10]].to_numpy(), rtol=1e-13)


def test_float_ids_in_an_interaction_group():
    ss = load_data("sleepstudy")
    d = ss.assign(S=_ids(ss).astype(float), half=(ss["Days"] >= 5).astype(float))
    m = gs.lmer("Reaction ~ Days + (1 | S:half)", d)
    assert m.ranef["grp"].iloc[0] == "308:0"
    rows = [0, 7, 100]
    np.testing.assert_allclose(m.predict(d.iloc[rows]).to_numpy(),
                               m.fitted.iloc[rows].to_numpy(), rtol=1e-13)


def test_two_values_with_one_label_are_refused():
    ss = load_data("sleepstudy")
    ids = _ids(ss).astype(object)
    ids[ids == 308] = "308"  # text "308" beside integers 309, 310, ...
    ids[ids == 309] = 308.0  # ... and the float 308.0: both read as "308"
    with pytest.raises(DataError, match=r"grouping column 'S' has distinct values .* both "
                       r"read as the level '308'"):
        gs.lmer("Reaction ~ Days + (1 | S)", ss.assign(S=ids))


def test_term_offsets_delimit_each_terms_block_of_b():
    from glmm_sparse.terms import term_offsets

    m = pastes()
    terms = m.model.frame.terms
    offs = term_offsets(terms)
    assert offs[-1] == m.b.shape[0]
    for i, t in enumerate(terms):
        cond = m.ranef.loc[m.ranef["grpvar"] == t.group_name, "condval"].to_numpy()
        np.testing.assert_array_equal(m.b[offs[i]:offs[i + 1]], cond)
