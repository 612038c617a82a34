"""optimize.py's bookkeeping and the check's Newton polish, on functions with known minima."""

import warnings

import numpy as np
import pytest

from glmm_sparse import optimize
from glmm_sparse.errors import ConvergenceWarning
from glmm_sparse.optimize import _polish, _Tally, minimize_theta

CENTRE = np.array([0.7, -0.4, 1.3])


def smooth(x):
    """Minimum 3 at CENTRE; not quadratic, so a Newton step with a Hessian from one point
    does not land on the minimum."""
    d = np.asarray(x) - CENTRE
    return float(np.sum(np.cosh(d) + 0.3 * d**3 * np.tanh(d)) + 0.2 * d[0] * d[1])


def test_a_call_at_the_point_just_evaluated_is_not_an_evaluation():
    calls = []
    tally = _Tally(lambda x: calls.append(x.copy()) or float(x @ x))
    x = np.array([1.0, 2.0])
    assert tally(x) == 5.0 and tally(x.copy()) == 5.0
    assert len(calls) == 1 and tally.count == 1
    x[0] = 3.0  # the caller's array changed in place: a new point
    assert tally(x) == 13.0 and len(calls) == 2 and tally.count == 2
    assert tally(np.array([1.0, 2.0])) == 5.0 and tally.count == 3  # only the last is kept


def test_the_polish_takes_newton_steps_until_the_scaled_gradient_is_small(monkeypatch):
    start = CENTRE + np.array([0.05, -0.04, 0.03])  # where a loose BOBYQA would stop
    lower = np.full(3, -np.inf)
    x, f, _, _, sg = _polish(_Tally(smooth), start, smooth(start), lower)
    assert sg < optimize.POLISH_TOL
    assert np.max(np.abs(x - CENTRE)) < 1e-6
    monkeypatch.setattr(optimize, "POLISH_STEPS", 1)
    x1, f1, _, _, sg1 = _polish(_Tally(smooth), start, smooth(start), lower)
    assert sg1 > optimize.POLISH_TOL  # one step was not enough here
    assert f <= f1 and np.max(np.abs(x - CENTRE)) < np.max(np.abs(x1 - CENTRE))


def test_one_step_when_it_lands_within_tolerance():
    start = CENTRE + 1e-7
    tally = _Tally(smooth)
    _polish(tally, start, smooth(start), np.full(3, -np.inf))
    # Hessian (P^2 + P + 1, f0 included), one Newton step (within REHESSIAN) and its
    # gradient (2P; its f0 is the step's value): a second step would add 2P + 1
    assert tally.count == 9 + 3 + 1 + 1 + 6


def test_a_far_step_takes_the_hessian_again_where_it_lands(monkeypatch):
    """The Hessian reported is the one at the polished point, not where BOBYQA stopped."""
    lower = np.full(3, -np.inf)
    start = CENTRE + np.array([0.05, -0.04, 0.03])
    x, _, _, H, _ = _polish(_Tally(smooth), start, smooth(start), lower)
    _, H_end, _ = optimize.check_derivatives(smooth, x, lower)
    _, H_start, _ = optimize.check_derivatives(smooth, start, lower)
    assert np.max(np.abs(H_start - H_end)) > 1e-3  # what makes the case informative
    assert np.max(np.abs(H - H_end)) < 1e-5 * np.max(np.abs(H_end))
    monkeypatch.setattr(optimize, "REHESSIAN", np.inf)  # the Hessian of the start, kept
    _, _, _, H_kept, _ = _polish(_Tally(smooth), start, smooth(start), lower)
    assert np.array_equal(H_kept, H_start)


def test_loose_bobyqa_and_the_polish_reach_the_minimum():
    res = minimize_theta(smooth, np.zeros(3), np.full(3, -np.inf), ftol_abs=1e-4,
                         xtol_abs=1e-2)
    assert np.max(np.abs(res.theta - CENTRE)) < 1e-6 and res.converged
    assert res.n_total_evals > res.n_evals


def test_a_newton_point_that_fails_is_not_taken():
    """An evaluation that raises NumericalError at the Newton point (PIRLS failing there)
    ends the polish at the point it had, with its derivatives."""
    from glmm_sparse.errors import NumericalError

    start = CENTRE + np.array([0.05, -0.04, 0.03])

    def fragile(x):
        if np.max(np.abs(x - start)) > 1e-3:  # beyond the difference steps
            raise NumericalError("PIRLS failed here", theta=x)
        return smooth(x)

    x, f, _, H, sg = _polish(_Tally(fragile), start, smooth(start), np.full(3, -np.inf))
    assert np.array_equal(x, start) and f == smooth(start)
    assert sg > optimize.POLISH_TOL and np.all(np.isfinite(H))


def test_refine_runs_bobyqa_on_where_the_newton_steps_do_not_finish(monkeypatch):
    monkeypatch.setattr(optimize, "POLISH_STEPS", 0)  # no Newton step: the refining run
    with pytest.warns(ConvergenceWarning, match="failed to converge"):
        loose = minimize_theta(smooth, np.zeros(3), np.full(3, -np.inf), ftol_abs=1e-4,
                               xtol_abs=1e-2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the refined fit has nothing to warn
        refined = minimize_theta(smooth, np.zeros(3), np.full(3, -np.inf), ftol_abs=1e-4,
                                 xtol_abs=1e-2, refine={"ftol_abs": 1e-12, "xtol_abs": 1e-8})
    assert loose.scaled_gradient > optimize.REFINE_SG
    assert refined.scaled_gradient < loose.scaled_gradient and refined.n_evals > loose.n_evals
    assert np.max(np.abs(refined.theta - CENTRE)) < 1e-5
