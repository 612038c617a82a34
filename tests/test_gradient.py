"""The analytic gradient of the LMM criterion (gradient.py) and the L-BFGS-B optimizer.

The gradient is checked against a 4-point central difference of the criterion (error
O(h^4): about 1e-10 relative here) on every structure, REML and ML, with prior weights and
with sigma fixed, at interior thetas and at the boundary (one-sided there). L-BFGS-B fits
must reach BOBYQA's optimum, and the lme4 reference tests pass with it unchanged.
"""
import warnings

import numpy as np
import pandas as pd
import pytest

import glmm_sparse as gs
from glmm_sparse.crossprod import accumulate
from glmm_sparse.formula import parse_formula
from glmm_sparse.frame import build_frame
from glmm_sparse.objective import LmmObjective
from glmm_sparse.optimize import OPTIMIZERS, minimize_theta
from glmm_sparse.refit import refit_ml
from glmm_sparse.scaling import theta_units
from glmm_sparse.synthetic import Design, simulate
from refdata import case_ids, load_data

import test_lmer_reference as reference

STRUCTURES = {
    "scalar": (Design((40,)), None),
    "slopes": (Design((30,), slope=True), None),
    "uncorrelated": (Design((30,), slope=True), "y ~ x1 + x2 + (x1 || g1)"),
    "nested": (Design((12, 5), nested=True), None),
    "crossed": (Design((30, 12)), None),
    "crossed_slopes": (Design((20, 8), slope=True), None),
}
FD_STEP = 1e-4
GRAD_RTOL = 1e-6


def structure_frame(name: str, weights: bool = False, rows: int = 3000):
    design, formula = STRUCTURES[name]
    formula = formula or design.formula()
    data = simulate(design, rows, seed=3)[0]
    w = None
    if weights:
        w = np.random.default_rng(4).uniform(0.3, 3.0, len(data))
    return formula, data, build_frame(parse_formula(formula), formula, data, weights=w)


def fd_gradient(obj, theta, one_sided):
    """4-point differences of obj at theta: central, or forward (up) where one_sided."""
    g = np.empty_like(theta)
    h = FD_STEP
    for i in range(theta.shape[0]):
        e = np.zeros_like(theta)
        e[i] = h
        if one_sided[i]:  # f'(0) = (-25 f0 + 48 f1 - 36 f2 + 16 f3 - 3 f4) / 12h
            f = [obj(theta + j * e) for j in range(5)]
            g[i] = (-25 * f[0] + 48 * f[1] - 36 * f[2] + 16 * f[3] - 3 * f[4]) / (12 * h)
        else:
            g[i] = (obj(theta - 2 * e) - 8 * obj(theta - e) + 8 * obj(theta + e)
                    - obj(theta + 2 * e)) / (12 * h)
    return g


def interior_theta(obj, seed):
    """A theta away from the bound and from identity factors, with correlations."""
    rng = np.random.default_rng(seed)
    tm = obj.theta_map
    diag = np.isfinite(tm.lower)
    return np.where(diag, 0.4 + rng.random(tm.n_theta), rng.uniform(-0.5, 0.5, tm.n_theta))


def check_gradient(obj, theta, one_sided):
    value, g = obj.value_and_gradient(theta)
    assert value == obj(theta)
    fd = fd_gradient(obj, theta, one_sided)
    scale = max(1.0, np.max(np.abs(fd)))
    assert np.max(np.abs(g - fd)) <= GRAD_RTOL * scale, (g, fd)


@pytest.mark.parametrize("name", list(STRUCTURES))
@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize("weights", [False, True])
def test_gradient_matches_differences_inside(name, reml, weights):
    _, _, frame = structure_frame(name, weights)
    obj = LmmObjective(accumulate(frame), reml=reml)
    theta = interior_theta(obj, 1)
    check_gradient(obj, theta, np.zeros(theta.shape, bool))


@pytest.mark.parametrize("name", ["nested", "crossed", "crossed_slopes"])
def test_gradient_through_the_schur_factor(name):
    """The Schur factor's selected inverse (schur.SchurInverse) in the gradient."""
    _, _, frame = structure_frame(name, weights=True)
    obj = LmmObjective(accumulate(frame), reml=True, factor_mode="schur")
    check_gradient(obj, interior_theta(obj, 2), np.zeros(obj.theta_map.n_theta, bool))


@pytest.mark.parametrize("name", list(STRUCTURES))
@pytest.mark.parametrize("reml", [True, False])
def test_gradient_with_fixed_sigma(name, reml):
    _, _, frame = structure_frame(name, weights=True)
    obj = LmmObjective(accumulate(frame), reml=reml, sigma=0.8)
    check_gradient(obj, interior_theta(obj, 2), np.zeros(obj.theta_map.n_theta, bool))


@pytest.mark.parametrize("name", list(STRUCTURES))
@pytest.mark.parametrize("reml", [True, False])
def test_gradient_at_and_near_the_boundary(name, reml):
    """Each diagonal theta at 0 in turn (one-sided differences), then at 1e-3."""
    _, _, frame = structure_frame(name)
    obj = LmmObjective(accumulate(frame), reml=reml)
    base = interior_theta(obj, 5)
    for i in np.flatnonzero(np.isfinite(obj.theta_map.lower)):
        theta = base.copy()
        theta[i] = 0.0
        at = np.zeros(theta.shape, bool)
        at[i] = True
        check_gradient(obj, theta, at)
        theta[i] = 1e-3
        check_gradient(obj, theta, np.zeros(theta.shape, bool))


def test_boundary_gradient_of_a_last_diagonal_is_zero():
    """The criterion depends on T T': a diagonal theta alone in its column of T is even,
    so its derivative at 0 vanishes (why lbfgsb probes off the bound)."""
    _, _, frame = structure_frame("crossed")
    obj = LmmObjective(accumulate(frame), reml=True)
    _, g = obj.value_and_gradient(np.array([0.7, 0.0]))
    assert g[1] == 0.0 and g[0] != 0.0


def optimum(frame, reml, optimizer, sigma=None):
    obj = LmmObjective(accumulate(frame), reml=reml, sigma=sigma)
    units = theta_units(frame.terms, obj.theta_map, frame.weights)
    return minimize_theta(obj, obj.theta_map.start * units, obj.theta_map.lower, units=units,
                          optimizer=optimizer)


@pytest.mark.parametrize("name", list(STRUCTURES))
@pytest.mark.parametrize("reml", [True, False])
def test_lbfgsb_reaches_the_bobyqa_optimum(name, reml):
    _, _, frame = structure_frame(name, weights=True)
    bobyqa = optimum(frame, reml, "bobyqa")
    lbfgsb = optimum(frame, reml, "lbfgsb")
    assert lbfgsb.method == "scipy L-BFGS-B" and lbfgsb.converged
    assert lbfgsb.fmin <= bobyqa.fmin + 1e-7
    assert lbfgsb.n_evals < bobyqa.n_evals
    assert np.allclose(lbfgsb.theta, bobyqa.theta, rtol=1e-3, atol=1e-4)


def test_lbfgsb_leaves_a_stationary_bound():
    """From theta = 0 (a stationary point of the criterion, where the gradient is 0), the
    probes off the bound find the interior optimum."""
    _, _, frame = structure_frame("scalar")
    obj = LmmObjective(accumulate(frame), reml=True)
    bobyqa = minimize_theta(obj, np.array([1.0]), obj.theta_map.lower)
    zero = minimize_theta(obj, np.array([0.0]), obj.theta_map.lower, optimizer="lbfgsb")
    assert bobyqa.theta[0] > 0.1
    assert zero.fmin <= bobyqa.fmin + 1e-7


def test_lbfgsb_singular_fit_stays_at_the_bound():
    """A grouping with no variance: both optimizers end at theta = 0, at one criterion."""
    rng = np.random.default_rng(7)
    n = 600
    data = pd.DataFrame({"x": rng.normal(size=n), "g": rng.integers(0, 30, n).astype(str)})
    data["y"] = 1.0 + 0.5 * data["x"] + rng.normal(size=n)
    fits = {}
    for opt in OPTIMIZERS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", gs.SingularFitWarning)
            fits[opt] = gs.lmer("y ~ x + (1 | g)", data, optimizer=opt)
    assert fits["bobyqa"].is_singular and fits["lbfgsb"].is_singular
    assert fits["lbfgsb"].objective <= fits["bobyqa"].objective + 1e-7


def test_lbfgsb_first_step_does_not_jump_to_a_boundary_minimum():
    """Weights x 4 (theta halves): L-BFGS-B's unit first step on theta / units had jumped
    from (1, 0, 1) to a local minimum at theta_1 = theta_3 = 0, 11 log-likelihood units
    down; its first step is now BOBYQA's initial radius (optimize.FIRST_STEP)."""
    rng = np.random.default_rng(0)
    sleep = load_data("sleepstudy")
    data = sleep.assign(w=rng.uniform(0.5, 2.0, len(sleep)))
    formula = "Reaction ~ Days + (Days | Subject)"
    m1 = gs.lmer(formula, data, weights="w", optimizer="lbfgsb")
    m4 = gs.lmer(formula, data.assign(w=4.0 * data["w"]), weights="w", optimizer="lbfgsb")
    assert m4.loglik == pytest.approx(m1.loglik, rel=1e-10)
    assert np.allclose(m4.theta, m1.theta / 2.0, rtol=1e-5, atol=1e-7)


def test_lmer_option_and_refit_keep_the_optimizer():
    data = load_data("sleepstudy")
    formula = "Reaction ~ Days + (Days | Subject)"
    fit = gs.lmer(formula, data, optimizer="lbfgsb")
    base = gs.lmer(formula, data)
    assert fit.optimizer.method == "scipy L-BFGS-B"
    assert base.optimizer.method == "NLopt BOBYQA"
    assert fit.objective <= base.objective + 1e-7
    assert fit.optimizer.n_evals < base.optimizer.n_evals
    again = fit.refit(data["Reaction"].to_numpy() * 2.0)
    assert again.optimizer.method == "scipy L-BFGS-B"
    # y -> 2 y: the REML criterion gains (n - p) log 4, theta is unchanged
    assert again.objective == pytest.approx(fit.objective + 2 * (len(data) - 2) * np.log(2.0),
                                            abs=1e-6)
    ml = refit_ml(fit)
    assert ml.optimizer.method == "scipy L-BFGS-B"
    assert ml.objective <= refit_ml(base).objective + 1e-7


def test_unknown_optimizer_is_refused():
    with pytest.raises(ValueError, match="'bobyqa', 'lbfgsb'"):
        gs.lmer("Reaction ~ Days + (1 | Subject)", load_data("sleepstudy"), optimizer="nm")


def test_lbfgsb_refuses_an_objective_without_gradient():
    with pytest.raises(ValueError, match="analytic gradient"):
        minimize_theta(lambda th: float(th @ th), np.ones(1), np.zeros(1), optimizer="lbfgsb")


def test_lbfgsb_refuses_options_it_has_not():
    with pytest.raises(TypeError, match="xtol_abs"):
        gs.lmer("Reaction ~ Days + (1 | Subject)", load_data("sleepstudy"), optimizer="lbfgsb",
                optimizer_options={"xtol_abs": 1e-6})


def test_lbfgsb_refused_for_glmm():
    with pytest.raises(ValueError, match="GLMM"):
        gs.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", load_data("cbpp"),
                 family="binomial", optimizer="lbfgsb")


def classes_data():
    """Crossed scalar terms where factor_mode="measure" takes the count classes."""
    rng = np.random.default_rng(11)
    n = 20_000
    g1 = rng.integers(0, 2000, n)
    g2 = rng.integers(0, 20, n)
    y = rng.normal(size=2000)[g1] + rng.normal(size=20)[g2] + rng.normal(size=n)
    return pd.DataFrame({"y": y, "g1": g1.astype(str), "g2": g2.astype(str)})


def test_lbfgsb_with_classes_refused_and_measure_goes_sparse():
    data = classes_data()
    formula = "y ~ 1 + (1 | g1) + (1 | g2)"
    with pytest.raises(ValueError, match="factor_mode='classes'"):
        gs.lmer(formula, data, factor_mode="classes", optimizer="lbfgsb")
    classed = gs.lmer(formula, data)
    assert type(classed.model.objective).__name__ == "ClassedObjective"
    sparse = gs.lmer(formula, data, optimizer="lbfgsb")
    assert type(sparse.model.objective).__name__ == "LmmObjective"
    assert sparse.objective <= classed.objective + 1e-7
    assert sparse.objective == pytest.approx(classed.objective, abs=1e-6)


def test_lbfgsb_does_not_build_the_class_sums(monkeypatch, tmp_path):
    """With optimizer='lbfgsb' the count classes are never taken, so their sums (a pass
    over the first term's levels and the G stack) are not built only to be dropped, in
    memory or streamed; the fit is the one on the sparse route."""
    from glmm_sparse import classed

    data = classes_data()
    formula = "y ~ 1 + (1 | g1) + (1 | g2)"
    before = gs.lmer(formula, data, optimizer="lbfgsb")

    def refuse(*args, **kwargs):
        raise AssertionError("the class sums were built")

    monkeypatch.setattr(classed, "class_sums", refuse)
    in_memory = gs.lmer(formula, data, optimizer="lbfgsb")
    assert type(in_memory.model.objective).__name__ == "LmmObjective"
    assert in_memory.objective == before.objective
    path = tmp_path / "crossed.parquet"
    data.to_parquet(path)
    streamed = gs.lmer(formula, str(path), streaming=True, optimizer="lbfgsb")
    assert streamed.objective == pytest.approx(in_memory.objective, abs=1e-8)
    with pytest.raises(AssertionError, match="class sums"):
        gs.lmer(formula, data)  # BOBYQA takes the classes here


def test_classes_off_and_classes_asked_for_is_the_refusal():
    """frame_objective refuses factor_mode='classes' without the classes as lmer's
    argument check does (ModelSpecError naming factor_mode='classes')."""
    from glmm_sparse.classed import frame_objective
    from glmm_sparse.formula import parse_formula
    from glmm_sparse.frame import build_frame

    formula = "y ~ 1 + (1 | g1) + (1 | g2)"
    frame = build_frame(parse_formula(formula), formula, classes_data())
    with pytest.raises(gs.ModelSpecError, match="factor_mode='classes'.*gradient"):
        frame_objective(frame, reml=True, factor_mode="classes", classes=False)


@pytest.fixture(scope="module", params=case_ids("gaussian"), ids=[c for _, c in case_ids()])
def fitted(request):
    """The lme4 reference cases fitted with optimizer="lbfgsb"."""
    return reference.fit_case(*request.param, optimizer="lbfgsb")


# test_lmer_reference.py's tests, unchanged, on the fits above
test_reference_loglik = reference.test_loglik_equal_or_higher
test_reference_criterion = reference.test_criterion_and_information
test_reference_fixef = reference.test_fixef_within_hundredth_of_se
test_reference_varcorr = reference.test_varcorr_rows_and_values
test_reference_theta = reference.test_theta_and_singularity
test_reference_ranef = reference.test_ranef_condval_and_condsd
test_reference_fitted = reference.test_fitted_values


def test_streamed_fit_passes_the_optimizer(tmp_path):
    """A streamed fit (Parquet) optimizes with the chosen optimizer, and on the count-class
    route's data takes the sparse route as in memory."""
    data = classes_data()
    path = tmp_path / "crossed.parquet"
    data.to_parquet(path)
    formula = "y ~ 1 + (1 | g1) + (1 | g2)"
    streamed = gs.lmer(formula, str(path), streaming=True, optimizer="lbfgsb")
    in_memory = gs.lmer(formula, data, optimizer="lbfgsb")
    assert streamed.optimizer.method == "scipy L-BFGS-B"
    assert type(streamed.model.objective).__name__ == "LmmObjective"
    assert streamed.objective == pytest.approx(in_memory.objective, abs=1e-8)
    assert np.allclose(streamed.theta, in_memory.theta, rtol=1e-6)
    with pytest.raises(ValueError, match="factor_mode='classes'"):
        gs.lmer(formula, str(path), streaming=True, factor_mode="classes", optimizer="lbfgsb")


def test_model_comparisons_and_profiles_keep_the_optimizer(monkeypatch):
    """A fit with optimizer='lbfgsb' is refitted without a term (lrt) and by ML for its
    profile (profile.ml_optimum) with the same optimizer."""
    from glmm_sparse import lrt, optimize, profile

    data = load_data("sleepstudy")
    fit = gs.lmer("Reaction ~ Days + (1 | Subject) + (0 + Days | Subject)", data,
                  optimizer="lbfgsb")
    reduced = lrt.fit_without_terms(fit, [1])
    assert reduced.optimizer.method == "scipy L-BFGS-B"
    seen, minimize = [], optimize.minimize_theta

    def recording(*args, **kwargs):
        seen.append(kwargs.get("optimizer"))
        return minimize(*args, **kwargs)

    monkeypatch.setattr(optimize, "minimize_theta", recording)
    profile.ml_optimum(fit)
    assert seen == ["lbfgsb"]
