"""The lmer API: data types in, missing values, aliased columns, errors, result tables."""
import warnings

import numpy as np
import pandas as pd
import pytest

import glmm_sparse as gs
from refdata import load_data

FORMULA = "Reaction ~ Days + (Days | Subject)"


@pytest.fixture(scope="module")
def sleep():
    return load_data("sleepstudy")


@pytest.fixture(scope="module")
def fit(sleep):
    return gs.lmer(FORMULA, sleep)


@pytest.mark.parametrize("kind", ["dict", "pyarrow", "polars"])
def test_other_table_types_give_the_same_fit(sleep, fit, kind):
    plain = sleep.assign(Subject=sleep["Subject"].astype(str))
    if kind == "dict":
        data = {c: plain[c].to_numpy() for c in plain.columns}
    elif kind == "pyarrow":
        pa = pytest.importorskip("pyarrow")
        data = pa.Table.from_pandas(plain)
    else:
        pl = pytest.importorskip("polars")
        data = pl.from_pandas(plain)
    m = gs.lmer(FORMULA, data)
    assert m.loglik == pytest.approx(fit.loglik, rel=1e-10)
    assert np.allclose(m.fixef.to_numpy(), fit.fixef.to_numpy(), rtol=1e-6)


def test_csv_path_is_accepted(tmp_path, sleep, fit):
    path = tmp_path / "sleep.csv"
    sleep.to_csv(path, index=False)
    m = gs.lmer(FORMULA, str(path))
    assert m.loglik == pytest.approx(fit.loglik, rel=1e-10)
    assert m.data_name == str(path)


def test_missing_values_are_dropped_and_counted(sleep):
    data = sleep.copy()
    data.loc[[3, 50], "Reaction"] = np.nan
    data.loc[7, "Days"] = np.nan
    with pytest.warns(gs.DroppedRowsWarning, match="3 rows with missing values dropped"):
        m = gs.lmer(FORMULA, data)
    assert m.n_dropped == 3 and m.nobs == len(sleep) - 3
    ref = gs.lmer(FORMULA, sleep.drop(index=[3, 50, 7]))
    assert m.loglik == pytest.approx(ref.loglik, rel=1e-12)
    assert list(m.fitted.index) == list(ref.fitted.index)


def test_missing_values_in_unused_columns_are_ignored(sleep, fit):
    m = gs.lmer(FORMULA, sleep.assign(unused=np.nan))
    assert m.nobs == fit.nobs


def test_na_action_raise_names_the_column(sleep):
    data = sleep.copy()
    data.loc[0, "Days"] = np.nan
    with pytest.raises(gs.DataError, match=r"1 rows have missing values \(in columns \['Days'\]\)"):
        gs.lmer(FORMULA, data, na_action="raise")


def test_aliased_fixed_effects_are_dropped_with_a_warning(sleep, fit):
    data = sleep.assign(Days2=2.0 * sleep["Days"] + 1.0)
    with pytest.warns(gs.RankDeficiencyWarning, match="dropping 1 column\\(s\\): Days2"):
        m = gs.lmer("Reaction ~ Days + Days2 + (Days | Subject)", data)
    assert list(m.fixef.index) == ["(Intercept)", "Days"]
    assert m.dropped_columns == ("Days2",)
    assert m.loglik == pytest.approx(fit.loglik, rel=1e-9)


def test_coef_adds_fixed_and_random_effects(fit):
    coef = fit.coef["Subject"]
    re = fit.ranef.pivot(index="grp", columns="term", values="condval")
    assert list(coef.columns) == ["(Intercept)", "Days"]
    for name in coef.columns:
        want = fit.fixef[name] + re.loc[coef.index, name].to_numpy()
        assert np.allclose(coef[name].to_numpy(), want)


def test_residuals_are_response_minus_fitted(sleep, fit):
    assert np.allclose(fit.residuals + fit.fitted, sleep["Reaction"].to_numpy())
    assert np.allclose(fit.scaled_residuals, fit.residuals.to_numpy() / fit.sigma)


def test_results_are_immutable(fit):
    with pytest.raises(AttributeError):
        fit.sigma = 1.0


def test_optimizer_summary(fit):
    opt = fit.optimizer
    assert opt.n_evals > 0 and opt.seconds > 0
    assert opt.converged and fit.converged
    assert opt.grad_norm < 1e-3
    assert opt.method == "NLopt BOBYQA"


def test_fitting_twice_gives_identical_results(sleep, fit):
    again = gs.lmer(FORMULA, sleep)
    assert again.loglik == fit.loglik
    assert np.array_equal(again.theta, fit.theta)


def test_singular_fit_warns_and_says_what_it_means():
    data = load_data("dyestuff2")
    with pytest.warns(gs.SingularFitWarning, match="variance is estimated as 0"):
        m = gs.lmer("Yield ~ 1 + (1 | Batch)", data)
    assert m.is_singular and m.theta[0] == 0.0
    assert m.converged  # on the boundary with the gradient pointing outwards: no false alarm


def test_well_identified_fits_raise_no_warning(sleep):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gs.lmer(FORMULA, sleep)
        gs.lmer("diameter ~ 1 + (1 | plate) + (1 | sample)", load_data("penicillin"))


def test_offset_argument_equals_formula_offset(sleep):
    data = sleep.assign(o=0.5 * sleep["Days"])
    a = gs.lmer("Reaction ~ Days + offset(o) + (Days | Subject)", data)
    b = gs.lmer(FORMULA, data, offset="o")
    c = gs.lmer(FORMULA, data, offset=data["o"].to_numpy())
    assert a.loglik == pytest.approx(b.loglik, rel=1e-12) == c.loglik
    # an offset of 0.5 * Days moves exactly 0.5 into the offset
    plain = gs.lmer(FORMULA, sleep)
    assert a.fixef["Days"] == pytest.approx(plain.fixef["Days"] - 0.5, rel=1e-6)


ERRORS = [
    ("Reaction ~ Days", {}, gs.ModelSpecError, "no random-effects term"),
    ("Reaction ~ Dayz + (1 | Subject)", {}, gs.FormulaError, "'Dayz'.*did you mean 'Days'"),
    ("Reaction ~ Days + (1 | Subjct)", {}, gs.FormulaError, "'Subjct'.*did you mean 'Subject'"),
    ("~ Days + (1 | Subject)", {}, gs.FormulaError, "no response"),
    ("Reaction ~ Days + (1 | Subject", {}, gs.FormulaError, r"\("),
    ("Reaction ~ Days + (1 | one)", {}, gs.ModelSpecError, "'one' has only 1 level"),
    ("Reaction ~ Days + (1 | row)", {}, gs.ModelSpecError, "must be < number of observations"),
    ("Subject ~ Days + (1 | Subject)", {}, gs.DataError, "response 'Subject' must be one numeric"),
    (FORMULA, {"weights": "neg"}, gs.DataError, "weights must be finite and >= 0"),
    (FORMULA, {"na_action": "drop"}, ValueError, "na_action must be 'omit' or 'raise'"),
    (FORMULA, {"reml": "yes"}, TypeError, "reml must be True or False"),
    (FORMULA, {"start": [1.0]}, gs.ModelSpecError, "start must have 3 values"),
]


@pytest.mark.parametrize("formula, kwargs, exc, match", ERRORS)
def test_bad_input_errors_name_the_culprit(sleep, formula, kwargs, exc, match):
    data = sleep.assign(one="a", row=np.arange(len(sleep)).astype(str),
                        neg=np.where(sleep["Days"] > 5, -1.0, 1.0),
                        Subject=sleep["Subject"].astype(str))
    with pytest.raises(exc, match=match):
        gs.lmer(formula, data, **kwargs)


def test_wrong_data_type_is_a_type_error():
    with pytest.raises(TypeError, match="data must be a pandas, polars or pyarrow table"):
        gs.lmer(FORMULA, 42)


def test_unknown_factor_mode_lists_the_choices(sleep):
    with pytest.raises(ValueError, match="factor_mode must be one of .*'measure'.*not 'fast'"):
        gs.lmer(FORMULA, sleep, factor_mode="fast")


@pytest.mark.parametrize("mode", ["simplicial", "supernodal"])
def test_both_factorizations_give_the_same_fit(sleep, fit, mode):
    m = gs.lmer(FORMULA, sleep, factor_mode=mode)
    assert m.loglik == pytest.approx(fit.loglik, rel=1e-12)
    assert np.allclose(m.ranef["condsd"], fit.ranef["condsd"], rtol=1e-8)


def test_every_evaluation_is_counted(sleep, fit):
    # sleepstudy has 3 thetas: the check costs 2*3 + 2*3 (Hessian) evaluations (f at the
    # optimum was just evaluated: a call at the point just evaluated is not one), each
    # Newton step (one to three) 1 and its gradient 2*3, or once the Hessian again
    # (2*3 + 2*3), and the re-evaluation at the optimum 1, or 0 where BOBYQA's last
    # evaluation was there
    opt = fit.optimizer
    assert opt.n_evals + 12 <= opt.n_total_evals <= opt.n_evals + 1 + 12 + 13 + 2 * 7
    unchecked = gs.lmer("Reaction ~ Days + (Days | Subject)", sleep, check_convergence=False)
    assert 0 <= unchecked.optimizer.n_total_evals - unchecked.optimizer.n_evals <= 1


def test_conditional_sds_are_computed_on_first_use_and_pickle(sleep):
    import pickle

    fresh = gs.lmer(FORMULA, sleep)
    assert callable(fresh.ranef_source)  # not computed by the fit
    copy = pickle.loads(pickle.dumps(fresh))  # pickling computes it, without the factor
    assert isinstance(copy.ranef_source, pd.DataFrame)
    pd.testing.assert_frame_equal(copy.ranef, fresh.ranef)
    assert fresh.ranef is fresh.ranef  # computed once
    assert (fresh.ranef["condsd"] > 0).all()


def test_per_row_values_are_computed_on_first_use_and_pickle(sleep):
    """fitted, residuals and scaled residuals (three n-vectors) are made when first read,
    once, as X beta + Z b from the fit's rows; pickles carry them."""
    import pickle

    fresh = gs.lmer(FORMULA, sleep)
    assert callable(fresh.rows_source)  # not computed by the fit
    copy = pickle.loads(pickle.dumps(fresh))
    assert isinstance(copy.rows_source, tuple)
    X = np.column_stack([np.ones(len(sleep)), sleep["Days"]])
    subject = pd.Categorical(sleep["Subject"]).codes
    b = fresh.coef["Subject"].to_numpy() - fresh.fixef.to_numpy()  # per level: (b0, b1)
    expected = X @ fresh.fixef.to_numpy() + (X * b[subject]).sum(axis=1)
    np.testing.assert_allclose(fresh.fitted.to_numpy(), expected, rtol=1e-12)
    assert fresh.fitted is fresh.fitted  # computed once
    np.testing.assert_allclose(fresh.residuals.to_numpy(),
                               sleep["Reaction"].to_numpy() - expected, rtol=1e-10)
    for name in ("fitted", "residuals"):
        pd.testing.assert_series_equal(getattr(copy, name), getattr(fresh, name))
    np.testing.assert_array_equal(copy.scaled_residuals, fresh.scaled_residuals)
