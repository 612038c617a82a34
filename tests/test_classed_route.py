"""Which route lmer takes (classed.takes_classes) and a fit through the count classes
used as any other fit: the methods that need M's sparse factor, refits, pickling.

The sparse-factor fit of the same data (factor_mode="simplicial") is the reference: both
routes minimize the same criterion, evaluated to ~1e-15 relative (tests/test_classed.py).
"""
from __future__ import annotations

import pickle
import warnings
from functools import cache

import numpy as np
import pandas as pd
import pytest

import glmm_sparse as gs
from glmm_sparse.classed import ClassedObjective, classes_pay, takes_classes
from glmm_sparse.crossprod import accumulate
from glmm_sparse.errors import ModelSpecError
from glmm_sparse.formula import parse_formula
from glmm_sparse.frame import build_frame
from glmm_sparse.objective import LmmObjective

FIT_RTOL = 1e-8  # two routes to the same optimum, each optimized to BOBYQA's tolerances
FORMULA = "y ~ x1 + (1 | g1) + (1 | g2)"


@cache
def crossed(seed: int = 3, n: int = 6000) -> pd.DataFrame:
    """600 x 40 crossed levels, ~10 rows per g1 level, each meeting ~9 g2 levels."""
    rng = np.random.default_rng(seed)
    g1, g2 = rng.integers(0, 600, n), rng.integers(0, 40, n)
    x1 = rng.standard_normal(n)
    y = (2.0 + 0.5 * x1 + 0.7 * rng.standard_normal(600)[g1]
         + 1.2 * rng.standard_normal(40)[g2] + rng.standard_normal(n))
    return pd.DataFrame({"y": y, "x1": x1, "g1": [f"a{i}" for i in g1],
                         "g2": [f"b{i}" for i in g2]})


def cp_of(formula: str, data: pd.DataFrame):
    return accumulate(build_frame(parse_formula(formula), formula, data))


@cache
def fits():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gs.GlmmSparseWarning)
        return (gs.lmer(FORMULA, crossed()),
                gs.lmer(FORMULA, crossed(), factor_mode="simplicial"))


def assert_close(a, b, rtol=FIT_RTOL):
    np.testing.assert_allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float),
                               rtol=rtol, atol=rtol * np.max(np.abs(b)))


def test_lmer_takes_the_classes_where_they_pay_and_gives_the_sparse_fit():
    got, ref = fits()
    assert isinstance(got.model.objective, ClassedObjective)
    assert isinstance(ref.model.objective, LmmObjective)
    assert_close(got.theta, ref.theta)
    assert_close(got.fixef, ref.fixef)
    assert got.loglik == pytest.approx(ref.loglik, rel=1e-12)
    assert got.sigma == pytest.approx(ref.sigma, rel=FIT_RTOL)
    assert_close(got.vcov, ref.vcov)
    assert_close(got.ranef["condval"], ref.ranef["condval"])
    assert_close(got.ranef["condsd"], ref.ranef["condsd"])
    assert_close(got.fitted, ref.fitted)


def test_the_sparse_route_is_kept_where_the_classes_do_not_pay():
    # one g1 level meets few g2 levels (InstEval-like): the sparse updates are cheap
    rng = np.random.default_rng(0)
    n = 4000
    g1 = rng.integers(0, 1000, n)
    g2 = (g1 % 50) * 4 + rng.integers(0, 2, n)  # each g1 level meets at most 2 of 200
    df = pd.DataFrame({"y": rng.standard_normal(n) + rng.standard_normal(1000)[g1]
                       + rng.standard_normal(200)[g2], "g1": g1, "g2": g2})
    cp = cp_of("y ~ 1 + (1 | g1) + (1 | g2)", df)
    assert not classes_pay(cp)
    assert not takes_classes(cp, "measure")
    assert takes_classes(cp, "classes")  # it applies, and can be asked for
    m = gs.lmer("y ~ 1 + (1 | g1) + (1 | g2)", df)
    assert isinstance(m.model.objective, LmmObjective)


def test_named_cholmod_modes_never_take_the_classes():
    cp = cp_of(FORMULA, crossed())
    assert takes_classes(cp, "measure")
    for mode in ("simplicial", "supernodal", "auto"):
        assert not takes_classes(cp, mode)


def test_factor_mode_classes_is_refused_with_the_reason():
    df = crossed()
    with pytest.raises(ModelSpecError, match="factor_mode='classes' does not apply.*"
                                             "scalar term"):
        gs.lmer("y ~ x1 + (1 + x1 | g1) + (1 | g2)", df, factor_mode="classes")
    with pytest.raises(ModelSpecError, match="factor_mode='classes' does not apply.*"
                                             "single random-effects term"):
        gs.lmer("y ~ x1 + (1 | g1)", df, factor_mode="classes")
    with pytest.raises(ModelSpecError, match="factor_mode='classes' applies to lmer only"):
        gs.glmer("z ~ x1 + (1 | g1) + (1 | g2)", df.assign(z=(df.y > 2).astype(int)),
                 family="binomial", factor_mode="classes")


def test_predictions_with_standard_errors_use_the_sparse_factor():
    got, ref = fits()
    new = crossed().iloc[:50]
    pg = got.predict(new, se_fit=True)
    pr = ref.predict(new, se_fit=True)
    assert_close(pg["fit"], pr["fit"])
    assert_close(pg["se_fit"], pr["se_fit"], 1e-6)
    assert isinstance(got.model.sparse_at_optimum(), LmmObjective)
    assert got.model.sparse_at_optimum() is got.model.sparse_at_optimum()  # built once


def test_methods_on_a_classed_fit_match_the_sparse_fit():
    got, ref = fits()
    sg = got.coef_table(ddf="Satterthwaite")
    sr = ref.coef_table(ddf="Satterthwaite")
    assert_close(sg["df"], sr["df"], 1e-5)
    ci_g = got.confint(method="Wald")
    ci_r = ref.confint(method="Wald")
    assert_close(ci_g.dropna(), ci_r.dropna(), 1e-7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gs.GlmmSparseWarning)
        table = gs.anova(gs.lmer("y ~ 1 + (1 | g1) + (1 | g2)", crossed()), got)
    assert table["Pr(>Chisq)"].iloc[1] < 1e-10  # x1's slope is 0.5 with 6,000 rows


def test_a_classed_fit_survives_pickling():
    got, _ = fits()
    again = pickle.loads(pickle.dumps(got))
    assert_close(again.ranef["condsd"], got.ranef["condsd"], 1e-12)
    assert again.loglik == got.loglik
    assert_close(again.confint(method="Wald").dropna(), got.confint(method="Wald").dropna(),
                 1e-10)


def test_fixed_sigma_through_the_classes_equals_the_sparse_route():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gs.GlmmSparseWarning)
        got = gs.lmer(FORMULA, crossed(), sigma=1.0, reml=False)
        ref = gs.lmer(FORMULA, crossed(), sigma=1.0, reml=False, factor_mode="simplicial")
    assert isinstance(got.model.objective, ClassedObjective)
    assert_close(got.theta, ref.theta)
    assert got.loglik == pytest.approx(ref.loglik, rel=1e-12)


def test_a_fit_asked_for_the_classes_has_every_method():
    """Regression: with factor_mode="classes" (not the default's choice of them), every
    method that builds an objective with M's factor (Satterthwaite's df, a refit, the
    profile, the ML fit an LRT makes) failed: that objective was asked for factor mode
    "classes", which only lmer's route takes. It now factors M as a default fit does."""
    _, ref = fits()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gs.GlmmSparseWarning)
        asked = gs.lmer(FORMULA, crossed(), factor_mode="classes")
        assert isinstance(asked.model.objective, ClassedObjective)
        assert_close(asked.coef_table(ddf="Satterthwaite")["df"],
                     ref.coef_table(ddf="Satterthwaite")["df"], 1e-5)
        y = crossed()["y"].to_numpy()[::-1].copy()
        assert_close(asked.refit(y).theta, ref.refit(y).theta)
        profile = asked.confint(method="profile", parm=["x1"])
        assert_close(profile, ref.confint(method="profile", parm=["x1"]), 1e-6)
        table = gs.anova(gs.lmer("y ~ 1 + (1 | g1) + (1 | g2)", crossed(),
                                 factor_mode="classes"), asked)
    assert table["Pr(>Chisq)"].iloc[1] < 1e-10
    assert isinstance(asked.model.new_objective(), LmmObjective)
