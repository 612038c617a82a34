"""lmer's default start (start.py) against the start lme4 1.1-31 chose on the same data.

Reference: the InstEval-shaped data of glmm_sparse.synthetic.insteval_like(seed=1),
written to CSV by benchmarks/peers (make bench-peers PEERS=insteval) and fitted in R with
an optimizer wrapper that prints its starting values:

    myopt <- function(par, fn, lower, upper, control = list(), ...) {
      cat("start", sprintf("%.15g", par), "\\n"); nloptwrap(par, fn, lower, upper, control, ...) }
    lmer(y ~ service + (1 | s) + (1 | d) + (1 | dept:service), d,
         control = lmerControl(optimizer = myopt))
    # start 0.36364048051839 0.501609414891462 0.220030147096326
"""
import numpy as np
import pytest

import glmm_sparse as gs
from glmm_sparse.formula import parse_formula
from glmm_sparse.frame import build_frame
from glmm_sparse.start import moment_theta
from glmm_sparse.synthetic import INSTEVAL_FORMULA, Design, insteval_like, simulate

LME4_INSTEVAL_START = [0.36364048051839, 0.501609414891462, 0.220030147096326]


def frame_of(formula, data):
    return build_frame(parse_formula(formula), formula, data)


def test_start_is_lme4s_on_the_insteval_shape():
    frame = frame_of(INSTEVAL_FORMULA, insteval_like(seed=1)[0])
    np.testing.assert_allclose(moment_theta(frame.terms, frame.y), LME4_INSTEVAL_START,
                               rtol=1e-12)


def test_start_is_the_square_root_of_variance_ratios_of_group_means():
    data, _ = simulate(Design((40, 7)), 3000, seed=4)
    frame = frame_of("y ~ x1 + (1 | g1) + (1 | g2)", data)
    y = data["y"].to_numpy()
    v = [np.var(data.groupby(g, observed=True)["y"].transform("mean"), ddof=1)
         for g in ("g1", "g2")]
    expected = np.sqrt(np.array(v) / (np.var(y, ddof=1) - sum(v)))
    np.testing.assert_allclose(moment_theta(frame.terms, frame.y), expected, rtol=1e-12)


@pytest.mark.parametrize("formula", ["y ~ x1 + (1 + x1 | g1)", "y ~ x1 + (1 | g1) + (0 + x1 | g1)",
                                     "y ~ (x1 || g1)"])
def test_no_moment_start_unless_every_term_is_an_intercept_on_its_own_factor(formula):
    data, _ = simulate(Design((40,), slope=True), 3000, seed=4)
    frame = frame_of(formula, data)
    assert moment_theta(frame.terms, frame.y) is None


def test_no_moment_start_when_group_means_explain_all_the_variance():
    data, _ = simulate(Design((40,)), 400, seed=4)
    data["y"] = data["g1"].cat.codes.astype(float)  # y is its group mean: v_e = 0
    frame = frame_of("y ~ 1 + (1 | g1)", data)
    assert moment_theta(frame.terms, frame.y) is None


def test_the_fit_lands_on_the_same_optimum_from_either_start():
    data, _ = simulate(Design((60, 9)), 4000, seed=8)
    formula = "y ~ x1 + x2 + (1 | g1) + (1 | g2)"
    default = gs.lmer(formula, data)
    from_one = gs.lmer(formula, data, start=[1.0, 1.0])
    assert default.objective == pytest.approx(from_one.objective, abs=1e-7)
    np.testing.assert_allclose(default.theta, from_one.theta, rtol=1e-5)
