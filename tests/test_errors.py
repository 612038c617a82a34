"""Bad input gets a clear error and nothing breaks (issue 4): the catalogue of refusals.

Every case asserts the exception type and the words that name the culprit (formula
position, column, term, level, row or value) and the fix. This file adds 62 cases:
FORMULAS (12), LMER_DATA (33), GLMER_DATA (12) and 5 numerical failures
(test_exact_fit_by_the_random_effects_is_refused_with_theta,
test_variance_ratio_beyond_double_precision_is_refused,
test_non_positive_definite_downdate_names_theta, test_nan_objective_names_theta,
test_pirls_divergence_explains_separation); with the 108 below, 170 in all.
Cases tested elsewhere, not repeated here:

- tests/test_formula.py
  test_malformed_formula_names_culprit: 47 malformed formulas (MALFORMED: syntax errors
      with the caret position, unbalanced parentheses and bars, empty sides, bad grouping)
  test_non_string_formula_is_type_error: 4 (None, 1, bytes, list)
  test_caret_lines_up_on_multiline_formula: 1
- tests/test_families.py
  test_check_response_names_row_and_value: 14 (BAD_RESPONSES: binomial outside [0, 1],
      non-integer successes, negative or non-integer Poisson counts, non-positive Gamma and
      inverse Gaussian, NaN / inf responses, negative weights)
  test_impossible_pairs_name_the_allowed_links: 9 family / link pairs
  test_wrong_argument_types_are_type_errors: 6
  test_unknown_family_is_a_model_spec_error: 1
  test_check_response_rejects_mismatched_weights: 1
  test_gaussian_mustart_refuses_what_r_refuses: 2
- tests/test_lmer_api.py
  test_bad_input_errors_name_the_culprit: 12 (no random-effects term, unknown column and
      grouping column with close matches, no response, unbalanced parenthesis, a
      single-level grouping factor, as many levels as observations, a factor response,
      negative weights, na_action, reml type, start length)
  test_wrong_data_type_is_a_type_error: 1
  test_unknown_factor_mode_lists_the_choices: 1
  test_na_action_raise_names_the_column: 1
- tests/test_glmer_consistency.py
  test_agq_needs_one_scalar_term: 1
  test_agq_refuses_scale_families: 1
  test_impossible_family_link_pairs: 2
  test_bad_responses_name_the_problem: 3 (binomial > 1, negative Poisson, zero Gamma)
  test_pirls_failure_names_theta_iteration_and_cause: 1
"""
import json
import pickle
import warnings
from dataclasses import fields

import numpy as np
import pandas as pd
import pytest
from refdata import load_data

import glmm_sparse as gs
from glmm_sparse.crossprod import accumulate
from glmm_sparse.formula import parse_formula
from glmm_sparse.frame import build_frame
from glmm_sparse.objective import LmmObjective
from glmm_sparse.optimize import minimize_theta

F = "Reaction ~ Days + (Days | Subject)"
CBPP = "cbind(incidence, size - incidence) ~ period + (1 | herd)"


@pytest.fixture(scope="module")
def sleep():
    data = load_data("sleepstudy")
    row3 = data.index == 3
    return data.assign(
        Session=data["Subject"].astype(str), inf_days=np.where(row3, np.inf, data["Days"]),
        inf_y=np.where(row3, np.inf, data["Reaction"]), w_text="a",
        x_neg_inf=np.where(row3, -np.inf, data["Days"] * 1.0),
        o_inf=np.where(row3, np.inf, 0.0), when=pd.Timestamp("2020-01-01")
        + pd.to_timedelta(data["Days"], "D"), flag=data["Days"] > 3, const=1.0,
        linear=2.0 * data["Days"] + 1.0, huge=data["Reaction"] * 1e150,
        tiny=data["Days"] * 1e-200, weights=1.0,
        exact=2.0 * data["Days"] + data["Subject"].cat.codes.to_numpy())


@pytest.fixture(scope="module")
def cbpp():
    return load_data("cbpp")


# formula -> (exception, regex naming the culprit, caret position or None)
FORMULAS = {
    "Reaction ~ Days[1 + (1 | Subject)": (gs.FormulaError, r"'Days\[1'", 11),
    "Reaction ~ sqrt(Days) + (1 | Subject)":
        (gs.FormulaError, r"unknown function 'sqrt'.*np\.sqrt", 11),
    "Reaction ~ Days + (Dayz | Subject)": (gs.FormulaError, r"'Dayz'.*did you mean 'Days'", 19),
    "Reaction ~ Days + offset(Dayz) + (1 | Subject)":
        (gs.FormulaError, r"'Dayz'.*did you mean", 25),
    "log(Reactin) ~ Days + (1 | Subject)":
        (gs.FormulaError, r"'Reactin'.*did you mean 'Reaction'", 4),
    "Reaction ~ Days + (1 | Subject/Sesion)":
        (gs.FormulaError, r"'Sesion'.*did you mean 'Session'", 31),
    "Reaction ~ C(Subject, contr.bogus) + (1 | Days)":
        (gs.FormulaError, r"'C\(Subject, contr\.bogus\)'.*bogus", 11),
    "Reaction ~ I(Days +) + (1 | Subject)":
        (gs.FormulaError, r"'I\(Days \+\)'.*invalid syntax", 11),
    "Reaction ~ log(Subject) + (1 | Days)":
        (gs.FormulaError, r"'log\(Subject\)'.*category", 11),
    "Reaction ~ ": (gs.FormulaError, r"nothing on the right of '~'", 9),
    "Reaction ~ Days + (Days | Subject))": (gs.FormulaError, r"unmatched '\)'", 34),
    "Reaction ~ Days + (Days || | Subject)": (gs.FormulaError, r"more than one bar", 27),
}


@pytest.mark.parametrize("formula", FORMULAS)
def test_formula_errors_point_at_the_culprit(sleep, formula):
    exc, words, position = FORMULAS[formula]
    with pytest.raises(exc, match=words) as info:
        gs.lmer(formula, sleep)
    assert info.value.position == position
    if position is not None:
        shown, caret = str(info.value).splitlines()[-2:]
        assert caret.index("^") - 4 == position and shown.strip() == formula.strip()


# (formula, keyword arguments) -> (exception, regex naming the culprit and the fix)
RANDOM_SLOPE = "Reaction ~ Days + (x_neg_inf | Subject)"
LMER_DATA = [
    (F, {"data": "empty"}, gs.DataError, r"0 rows: there is nothing to fit"),
    (F, {"data": "all_missing"}, gs.DataError, r"every row has a missing value"),
    ("flag ~ Days + (1 | Subject)", {}, gs.DataError,
     r"response 'flag' must be one numeric column, not bool"),
    ("inf_y ~ Days + (1 | Subject)", {}, gs.DataError, r"response 'inf_y' is inf at row 3 \(1 row"),
    ("log(Reaction - 300) ~ Days + (1 | Subject)", {}, gs.DataError,
     r"response 'log\(Reaction - 300\)' is nan at row 0 .*transformation"),
    ("Reaction ~ inf_days + (1 | Subject)", {}, gs.DataError,
     r"fixed-effects column 'inf_days' is inf at row 3 .*replace infinite values"),
    ("Reaction ~ log(Days) + (1 | Subject)", {}, gs.DataError,
     r"fixed-effects column 'log\(Days\)' is -inf at row 0 \(18 row\(s\) in all\).*log of 0"),
    (RANDOM_SLOPE, {}, gs.DataError, (r"column 'x_neg_inf' of the random-effects term "
     r"\(1 \+ x_neg_inf \| Subject\) is -inf at row 3")),
    ("Reaction ~ Days + offset(o_inf) + (1 | Subject)", {}, gs.DataError,
     r"offset 'offset\(o_inf\)' is inf at row 3"),
    (F, {"offset": "o_inf_array"}, gs.DataError, r"'offset=' argument is inf at row 3"),
    (F, {"offset": "w_text"}, gs.DataError, r"offset column 'w_text' must be numeric"),
    (F, {"offset": "dict"}, gs.DataError, r"offset must be a column name or numbers"),
    (F, {"weights": "nan_array"}, gs.DataError, r"weights must be finite and >= 0; row 3 has nan"),
    (F, {"weights": "inf_days"}, gs.DataError, r"weights must be finite and >= 0; row 3 has inf"),
    (F, {"weights": "zeros"}, gs.DataError, r"every prior weight is 0"),
    (F, {"weights": "w_text"}, gs.DataError, r"weights column 'w_text' must be numeric, not"),
    ("huge ~ Days + (1 | Subject)", {}, gs.DataError,
     r"response 'huge' has values of size 4.66e\+152, beyond .*rescale it"),
    ("Reaction ~ tiny + (1 | Subject)", {}, gs.DataError,
     r"fixed-effects column 'tiny' has values of size 9e-200.*divide by 1e-199"),
    (F, {"weights": "huge"}, gs.DataError, r"prior 'weights' has values of size 4.66e\+152"),
    (F, {"weights": "wieghts"}, gs.DataError,
     r"the weights column 'wieghts' is not in the data; did you mean 'weights'"),
    (F, {"weights": "short"}, gs.DataError,
     r"weights must have one value per row \(180\), got shape \(5,\)"),
    ("Reaction ~ when + (1 | Subject)", {}, gs.DataError,
     r"column 'when' has type datetime64.*convert it to a number"),
    ("inf_y ~ Days + (1 | Subject)", {"data": "text_index"}, gs.DataError,
     r"is inf at row 'r3'"),
    (F, {"data": "bad_csv"}, gs.DataError, r"cannot read the data file .*bad\.csv"),
    (F, {"data": "missing_file"}, gs.DataError, r"data file .*nowhere\.csv' does not exist"),
    (F, {"data": "few_rows"}, gs.ModelSpecError,
     (r"number of observations \(=36\) <= number of random effects \(=36\) for term "
     r"\(1 \+ Days \| Subject\).*simplify the term")),
    ("const ~ Days + (1 | Subject)", {}, gs.DataError,
     r"response 'const' is constant \(every value is 1\)"),
    ("linear ~ Days + (1 | Subject)", {}, gs.DataError,
     r"exact linear function of the fixed effects"),
    (F, {"start": [np.nan, 0.0, 1.0]}, gs.ModelSpecError, r"start must be finite"),
    (F, {"start": "abc"}, TypeError, r"start must be a sequence of numbers"),
    (F, {"optimizer_options": {"tol": 1e-8}}, TypeError,
     r"unknown optimizer option 'tol'.*ftol_abs"),
    (F, {"optimizer_options": {"maxeval": "many"}}, TypeError, r"maxeval must be an integer"),
    (F, {"optimizer_options": [1]}, TypeError, r"optimizer_options must be a dict"),
]


def _argument(name, sleep, tmp_path):
    n, row3 = len(sleep), sleep.index == 3
    values = {
        "empty": sleep.iloc[:0], "all_missing": sleep.assign(Days=np.nan),
        "text_index": sleep.set_axis([f"r{i}" for i in range(n)]),
        "few_rows": sleep.groupby("Subject", observed=True).head(2),
        "o_inf_array": np.where(row3, np.inf, 0.0), "nan_array": np.where(row3, np.nan, 1.0),
        "zeros": np.zeros(n), "short": np.ones(5), "dict": {"a": 1},
        "missing_file": str(tmp_path / "nowhere.csv"),
    }
    if name == "bad_csv":
        (tmp_path / "bad.csv").write_text('a,b\n1,2,3\n"x')
        return str(tmp_path / "bad.csv")
    return values.get(name, name)


@pytest.mark.parametrize("formula, kwargs, exc, words", LMER_DATA)
def test_lmer_data_errors_name_the_culprit(sleep, tmp_path, formula, kwargs, exc, words):
    kwargs = {k: _argument(v, sleep, tmp_path) if isinstance(v, str) and k != "start" else v
              for k, v in kwargs.items()}
    data = kwargs.pop("data", sleep)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gs.GlmmSparseWarning)
        warnings.simplefilter("ignore", RuntimeWarning)  # NumPy's, for log(0) in the data
        with pytest.raises(exc, match=words):
            gs.lmer(formula, data, **kwargs)


GLMER_DATA = [
    ("cbind(incidence, size - incidence - 30) ~ period + (1 | herd)", "binomial", {},
     gs.DataError, r"counts 'size - incidence - 30' must be whole numbers >= 0; row 0 has -18"),
    ("cbind(incidence + 0.5, size - incidence) ~ period + (1 | herd)", "binomial", {},
     gs.DataError, r"counts 'incidence \+ 0.5' must be whole numbers >= 0; row 0 has 2.5"),
    ("cbind(incidence, size, size) ~ period + (1 | herd)", "binomial", {},
     gs.DataError, r"cbind\(\) in the response needs two columns"),
    ("half ~ period + (1 | herd)", "poisson", {"data": "labelled"},
     gs.DataError, r"half: non-integer counts .*first at row 'h0' \(value 0.5\)"),
    ("zero ~ period + (1 | herd)", "binomial", {}, gs.DataError,
     r"response 'zero' is 0 \(failure\) in every row.*no finite maximum"),
    ("zero ~ period + (1 | herd)", "poisson", {}, gs.DataError,
     r"response 'zero' is 0 in every row"),
    ("two ~ period + (1 | herd)", "gamma", {}, gs.DataError, r"response 'two' is constant"),
    ("incidence ~ period + (1 | herd)", "poisson", {"offset": "inf_offset"}, gs.DataError,
     r"'offset=' argument is inf at row 3"),
    ("cbind(incidence, size - incidence) ~ period + (period | herd)", "binomial", {},
     gs.ModelSpecError, (r"number of observations \(=56\) < number of random effects \(=60\) "
     r"for term \(1 \+ period2 \+ period3 \+ period4 \| herd\)")),
    ("y ~ period + (1 | herd)", "binomial", {"start": [1.0, 2.0]}, gs.ModelSpecError,
     r"start must have 1 values"),
    ("y ~ period + (1 | herd)", "binomial", {"nagq": 1.5}, TypeError,
     r"nagq must be a non-negative integer"),
    ("y ~ period", "binomial", {}, gs.ModelSpecError, r"no random-effects term.*GLM"),
]


@pytest.mark.parametrize("formula, family, kwargs, exc, words", GLMER_DATA)
def test_glmer_data_errors_name_the_culprit(cbpp, formula, family, kwargs, exc, words):
    data = cbpp.assign(half=0.5, zero=0, two=2.0, y=(cbpp["incidence"] > 0).astype(int))
    if kwargs.pop("data", None) == "labelled":
        data = data.set_axis([f"h{i}" for i in range(len(data))])
    if kwargs.get("offset") == "inf_offset":
        kwargs = dict(kwargs, offset=np.where(np.arange(len(data)) == 3, np.inf, 0.0))
    with pytest.raises(exc, match=words):
        gs.glmer(formula, data, family=family, **kwargs)


# ------------------------------------------------------------------------ numerics


def test_exact_fit_by_the_random_effects_is_refused_with_theta(sleep):
    """y = 2 Days + subject code: the likelihood rises without bound as theta grows.

    Which check stops it depends on rounding along the optimizer's path: pwrss falling
    below its floor or to 0, or theta passing THETA_LIMIT; each names the cause and the
    remedy."""
    with pytest.raises(gs.NumericalError, match=r"fit the (response|data)( almost| \(almost\))?"
                       r" exactly.*not computed from the (grouping factors|predictors)") as info:
        gs.lmer("exact ~ Days + (1 | Subject)", sleep)
    assert info.value.theta is not None and info.value.theta[0] > 1e3


def test_variance_ratio_beyond_double_precision_is_refused(sleep):
    """A random intercept 1e6 times the residual sd: theta passes THETA_LIMIT."""
    rng = np.random.default_rng(1)
    y = sleep["exact"] + 1e-6 * rng.normal(size=len(sleep))
    with pytest.raises(gs.NumericalError, match=r"theta\[0\] went to .*times the residual"):
        gs.lmer("y ~ Days + (1 | Subject)", sleep.assign(y=y))


def test_non_positive_definite_downdate_names_theta(sleep):
    """R_X fails when theta makes Z reproduce the intercept to rounding (theta = 1e9)."""
    formula = "Reaction ~ Days + (1 | Subject)"
    obj = LmmObjective(accumulate(build_frame(parse_formula(formula), formula, sleep)), reml=True)
    words = (r"fixed-effects columns are \(numerically\) collinear given the random effects"
             r".*\(at theta = \[1000000000\.0\]\)")
    with pytest.raises(gs.NumericalError, match=words) as info:
        obj.update([1e9])
    assert info.value.theta.tolist() == [1e9]


def test_nan_objective_names_theta():
    with pytest.raises(gs.NumericalError, match=r"evaluated to NaN \(at theta = \[1\.0\]"):
        minimize_theta(lambda theta: np.nan, np.array([1.0]), np.array([0.0]))


def test_pirls_divergence_explains_separation(sleep):
    data = sleep.assign(y=(sleep["Days"] > 4).astype(int))
    with pytest.raises(gs.NumericalError, match=r"PIRLS did not converge in 200 iterations .*last "
                       r"step .* in \(u, beta\).*complete separation.*\(at theta = \[") as info:
        gs.glmer("y ~ Days + (1 | Subject)", data, family="binomial")
    assert info.value.theta is not None


# ------------------------------------------------------------- what must work


def test_quoted_names_with_spaces_and_non_ascii_work(sleep):
    """Backticked names as response, fixed effect, random slope and grouping factor."""
    plain = gs.lmer(F, sleep)
    data = sleep.rename(columns={"Reaction": "my col", "Days": "größe", "Subject": "sub ject"})
    quoted = gs.lmer("`my col` ~ `größe` + (`größe` | `sub ject`)", data)
    assert quoted.loglik == pytest.approx(plain.loglik, rel=1e-12)
    assert np.allclose(quoted.fixef.to_numpy(), plain.fixef.to_numpy(), rtol=1e-10)
    assert list(quoted.fixef.index) == ["(Intercept)", "größe"]
    assert quoted.ngrps == {"sub ject": 18}


@pytest.mark.filterwarnings("ignore::glmm_sparse.SingularFitWarning")
def test_quoted_names_in_glmer_cbind_and_factor_responses(cbpp):
    plain = gs.glmer(CBPP, cbpp)
    data = cbpp.rename(columns={"incidence": "in cidence", "herd": "hérd"})
    quoted = gs.glmer("cbind(`in cidence`, size - `in cidence`) ~ period + (1 | `hérd`)", data)
    assert quoted.loglik == pytest.approx(plain.loglik, rel=1e-12)
    y = pd.Categorical(np.where(cbpp["incidence"] > 0, "ill", "healthy"))
    g1 = gs.glmer("`any case` ~ period + (1 | herd)", cbpp.assign(**{"any case": y}))
    g2 = gs.glmer("y ~ period + (1 | herd)", cbpp.assign(y=(cbpp["incidence"] > 0) * 1))
    assert g1.loglik == g2.loglik


def test_stateful_transforms_drop_rows_missing_in_their_argument(sleep):
    """scale(Days) reads Days: formulaic's required_variables misses it (a NaN reached X)."""
    data = sleep.assign(Days=sleep["Days"].where(sleep.index != 5))
    with pytest.warns(gs.DroppedRowsWarning, match="1 rows with missing values dropped"):
        m = gs.lmer("Reaction ~ scale(Days) + (1 | Subject)", data)
    assert m.nobs == len(sleep) - 1


def test_builtin_functions_are_not_taken_for_columns(sleep):
    m = gs.lmer("Reaction ~ abs(Days - 4) + (1 | Subject)", sleep)
    assert list(m.fixef.index) == ["(Intercept)", "abs(Days - 4)"]


def test_observation_level_random_effects_are_allowed_in_glmer(cbpp):
    """lme4's glmer allows as many levels as observations (overdispersion); lmer does not."""
    m = gs.glmer(CBPP + " + (1 | obs)", cbpp.assign(obs=np.arange(len(cbpp))))
    assert m.ngrps["obs"] == m.nobs


@pytest.mark.parametrize("column, factor", [("Reaction", 1e-12), ("Reaction", 1e12),
                                            ("Days", 1e9), ("Days", 1e-9)])
@pytest.mark.parametrize("reml", [True, False])
def test_extreme_scales_give_the_rescaled_fit(sleep, column, factor, reml):
    """x -> c x: the fit is the same model; theta of Days' slope and beta scale by 1/c, the
    log-likelihood shifts by -dof log c (response) or, for REML, -log c (a predictor)."""
    base = gs.lmer(F, sleep, reml=reml)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = gs.lmer(F, sleep.assign(**{column: sleep[column] * factor}), reml=reml)
    dof = base.nobs - (len(base.fixef) if reml else 0)
    if column == "Reaction":
        shift, beta, theta = -dof * np.log(factor), factor * np.ones(2), np.ones(3)
    else:
        shift = -np.log(factor) if reml else 0.0
        beta, theta = np.array([1.0, 1.0 / factor]), np.array([1.0, 1.0 / factor, 1.0 / factor])
    assert m.loglik == pytest.approx(base.loglik + shift, rel=1e-9, abs=1e-8)
    assert np.allclose(m.fixef.to_numpy(), base.fixef.to_numpy() * beta, rtol=1e-8)
    assert np.allclose(m.theta / theta, base.theta, rtol=1e-4, atol=1e-6)
    assert not m.is_singular and m.converged


@pytest.mark.parametrize("factor", [1e-50, 1e50])
def test_extreme_weights_describe_the_same_model(sleep, factor):
    """Weights c w: sigma -> sqrt(c) sigma, theta -> theta / sqrt(c), loglik unchanged
    (tests/test_invariance.py at c = 4); theta's unit follows the weights' size."""
    base = gs.lmer(F, sleep)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = gs.lmer(F, sleep, weights=np.full(len(sleep), factor))
    assert m.loglik == pytest.approx(base.loglik, rel=1e-9)
    assert np.allclose(m.fixef.to_numpy(), base.fixef.to_numpy(), rtol=1e-8)
    assert np.allclose(m.theta * np.sqrt(factor), base.theta, rtol=1e-4, atol=1e-6)
    assert m.sigma == pytest.approx(base.sigma * np.sqrt(factor), rel=1e-6)


def test_a_large_mean_of_the_response_costs_no_precision(sleep):
    """y + 1e9: pwrss from the downdate of y'y lost eps y'y (sigma off by 5% at 1e8)."""
    base = gs.lmer(F, sleep)
    m = gs.lmer(F, sleep.assign(Reaction=sleep["Reaction"] + 1e9))
    assert m.sigma == pytest.approx(base.sigma, rel=1e-8)
    assert m.loglik == pytest.approx(base.loglik, rel=1e-9)
    assert m.fixef["(Intercept)"] - 1e9 == pytest.approx(base.fixef["(Intercept)"], rel=1e-6)


@pytest.mark.parametrize("factor", [1e-6, 1e6])
def test_glmer_predictor_scale_changes_nothing_but_beta(factor):
    rng = np.random.default_rng(5)
    g, x = rng.integers(0, 40, 600), rng.normal(size=600)
    y = (rng.random(600) < 1 / (1 + np.exp(-(0.3 + 0.8 * x + rng.normal(0, 0.8, 40)[g])))) * 1
    data = pd.DataFrame({"y": y, "x": x, "g": g})
    base = gs.glmer("y ~ x + (1 | g)", data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = gs.glmer("y ~ x + (1 | g)", data.assign(x=x * factor))
    assert m.loglik == pytest.approx(base.loglik, rel=1e-10)
    scale = np.array([1.0, 1.0 / factor])
    assert np.allclose(m.fixef.to_numpy(), base.fixef.to_numpy() * scale, rtol=1e-6)
    assert np.allclose(np.sqrt(np.diag(m.vcov)), np.sqrt(np.diag(base.vcov)) * scale, rtol=1e-4)


# ------------------------------------------------------------------------ warnings


def test_evaluation_limit_is_a_convergence_warning(sleep):
    with pytest.warns(gs.ConvergenceWarning, match=r"stopped at its evaluation limit \(5\)"):
        m = gs.lmer(F, sleep, optimizer_options={"maxeval": 5}, check_convergence=False)
    assert not m.converged


# ------------------------------------------------------------- pickling, determinism


def _assert_same(a, b, path="result"):
    """Equal in every field, NaN equal to NaN; the optimizer's timing is not compared, nor
    the model context's objective (a CHOLMOD factor, rebuilt after unpickling), its cached
    cross-products or its lock."""
    if path.endswith((".seconds", ".model.objective", ".model._cp", ".model._lock")):
        return
    if isinstance(a, pd.Series):
        pd.testing.assert_series_equal(a, b)
    elif isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b)
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b, equal_nan=True), path
    elif isinstance(a, pd.Index):
        assert a.equals(b), path
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for key in a:
            _assert_same(a[key], b[key], f"{path}[{key!r}]")
    elif isinstance(a, (tuple, list)) and not isinstance(a, str):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{path}[{i}]")
    elif hasattr(a, "__dataclass_fields__"):
        for f in fields(a):
            _assert_same(getattr(a, f.name), getattr(b, f.name), f"{path}.{f.name}")
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b), path
    else:
        assert a == b, path


@pytest.fixture(scope="module")
def fits(sleep, cbpp):
    return [gs.lmer(F, sleep), gs.glmer(CBPP, cbpp), gs.glmer(CBPP, cbpp, nagq=0)]


@pytest.mark.parametrize("which", [0, 1, 2])
def test_results_pickle_round_trip(fits, which):
    fit = fits[which]
    again = pickle.loads(pickle.dumps(fit))
    assert type(again) is type(fit)
    _assert_same(fit, again)
    assert again.summary() == fit.summary()
    assert json.dumps(again.to_dict(), sort_keys=True) == json.dumps(fit.to_dict(), sort_keys=True)


def test_glmer_twice_gives_identical_results(fits, cbpp):
    again = gs.glmer(CBPP, cbpp)
    _assert_same(fits[1], again)


@pytest.mark.parametrize("formula", ["y ~ x + (1 | g)", "y ~ 1 + (x | g)", "x ~ 1 + (1 | g)"])
def test_a_duplicated_column_the_formula_uses_is_refused(formula):
    data = pd.DataFrame(np.random.default_rng(0).random((12, 3)), columns=["y", "x", "x"])
    data["g"] = list("aabbccddeeff")
    with pytest.raises(gs.DataError, match="column 'x' appears 2 times in the data"):
        gs.lmer(formula, data)
