"""Bounded minimization over theta and the convergence report.

Fifth stage (... -> factor -> optimize -> results). BOBYQA (NLopt, as lme4's default
``nloptwrap``) minimizes the n-free criterion. Evaluations are cheap, so tolerances are
tighter than lme4's. The report follows lme4's checks: a finite-difference gradient and
Hessian at the optimum, the gradient scaled by the Hessian on the free parameters, and a
singular fit when a diagonal element of some T_t is (nearly) 0.

``optimizer="lbfgsb"`` uses the analytic gradient instead (gradient.py; objectives with
a ``value_and_gradient`` method): scipy's L-BFGS-B on (criterion, gradient) pairs, and a
convergence check whose Hessian is the forward difference of the analytic gradient
(P gradient calls instead of P^2 + P + 1 criterion calls).
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import nlopt
import numpy as np
import scipy.optimize

from .blas import one_blas_thread
from .errors import ConvergenceWarning, ModelSpecError, NumericalError

SINGULAR_TOL = 1e-4  # lme4's isSingular tolerance on theta / its bounds
GRAD_TOL = 2e-3  # lme4's check.conv.grad tolerance on the scaled gradient
F_NOISE = 1e-12  # relative rounding noise of the criterion (a sum of logs of O(n) terms)
# The check's Newton polish: steps at most, and the scaled gradient (the next Newton step,
# in the optimizer's units) below which it stops
POLISH_STEPS = 3
POLISH_TOL = 1e-6
# and the step (optimizer's units) beyond which the Hessian is taken again where it lands:
# one taken 1e-4 from the optimum moved standard errors by 5e-5 relative (poisson_agq)
REHESSIAN = 1e-5
# minimize_theta's ``refine``: the scaled gradient after the Newton steps above which BOBYQA
# runs again from there at the refining tolerances
REFINE_SG = 1e-5
# A relative covariance factor (a diagonal theta, in the optimizer's units) beyond which
# the "+ I" of Lambda'Z'WZ Lambda + I and the residual are below rounding: the criterion
# no longer tells such thetas apart. Reached when the random effects fit the data exactly.
THETA_LIMIT = 1e5
OPTIMIZERS = ("bobyqa", "lbfgsb")
# L-BFGS-B: the largest projected gradient (optimizer's units) at which it stops, and the
# step of the forward differences of the analytic gradient that make the check's Hessian
LBFGSB_GTOL = 1e-6
GRADIENT_FD_STEP = 1e-5
# A diagonal theta at 0 is a stationary point of the criterion (it depends on T_t T_t'),
# so a gradient method that reaches the bound stays there: the criterion is probed at
# these distances from it (optimizer's units) before the bound is accepted.
BOUNDARY_PROBES = (1e-1, 1e-2, 1e-3, 1e-4)
MAX_RESTARTS = 5
# L-BFGS-B's first step has length 1 in the variables it is given; on x (theta / units,
# O(1)) that jumped from theta = (1, 0, 1) to a local minimum on the bound (theta_1 =
# theta_3 = 0, 11 log-likelihood units below the optimum; sleepstudy, weights x 4). It
# is given x / FIRST_STEP instead: a first step of BOBYQA's initial radius; after it,
# L-BFGS-B's own curvature estimate (s'y / y'y) sets the step, whatever the scale.
FIRST_STEP = 0.25


@dataclass(frozen=True)
class OptSummary:
    """What the optimizer did: start, optimum, evaluations, time, the convergence check."""

    theta0: np.ndarray
    theta: np.ndarray
    fmin: float
    n_evals: int
    seconds: float
    method: str
    return_code: str
    gradient: np.ndarray = field(repr=False)
    scaled_gradient: float
    converged: bool
    messages: tuple[str, ...] = ()
    hessian: np.ndarray | None = field(default=None, repr=False)
    units: np.ndarray | None = field(default=None, repr=False)  # see scaling.py
    n_total_evals: int = 0  # n_evals plus the convergence check's and the Newton polish's

    @property
    def grad_norm(self) -> float:
        return float(np.linalg.norm(self.gradient))


class _Counted:
    """The objective with an evaluation count; a NaN becomes an error that names theta."""

    def __init__(self, fun):
        self.fun = fun
        self.count = 0
        self.best_x = None
        self.best_f = np.inf

    def __call__(self, x, grad=None):
        self.count += 1
        x = np.array(x, dtype=np.float64)
        value = self.fun(x)
        if np.isnan(value):
            raise NumericalError("the objective evaluated to NaN", theta=x)
        if value < self.best_f:
            self.best_x, self.best_f = x, value
        return value


class _Tally:
    """fun, counting every evaluation (the optimizer's and the convergence check's).

    A call at the point just evaluated returns that value without evaluating again: the
    check's first point is the optimum minimize_theta has just evaluated, the polish's
    gradient starts at the Newton point it has just evaluated (two evaluations a fit;
    the objective's state is already at that point, and it is deterministic).
    """

    def __init__(self, fun):
        self.fun = fun
        self.count = 0
        self.last: tuple[np.ndarray, float] | None = None

    def __call__(self, x):
        if self.last is not None and np.array_equal(x, self.last[0]):
            return self.last[1]
        self.count += 1
        value = self.fun(x)
        self.last = (np.array(x, dtype=np.float64), value)
        return value


class _InUnits:
    """fun of theta = x * units, for an optimizer that works on x (scaling.py)."""

    def __init__(self, fun, units: np.ndarray):
        self.fun = fun
        self.units = units

    def __call__(self, x):
        theta = x * self.units
        value = self.fun(theta)
        if np.isnan(value):
            raise NumericalError("the objective evaluated to NaN", theta=theta)
        return value


def bobyqa(fun, theta0: np.ndarray, lower: np.ndarray, *, ftol_abs=1e-8, xtol_abs=1e-8,
           ftol_rel=0.0, xtol_rel=0.0, maxeval=100_000,
           initial_step=None) -> tuple[np.ndarray, float, int, str]:
    """Minimize fun over theta >= lower from theta0; (theta, f, evaluations, NLopt result)."""
    opt = nlopt.opt(nlopt.LN_BOBYQA, theta0.shape[0])
    counted = _Counted(fun)
    opt.set_min_objective(counted)
    opt.set_lower_bounds(lower)
    opt.set_ftol_abs(ftol_abs)
    opt.set_ftol_rel(ftol_rel)
    opt.set_xtol_abs(xtol_abs)
    opt.set_xtol_rel(xtol_rel)
    opt.set_maxeval(maxeval)
    if initial_step is None:
        initial_step = np.where(np.abs(theta0) > 0, 0.25 * np.abs(theta0), 0.25)
    opt.set_initial_step(np.asarray(initial_step, dtype=np.float64))
    start = np.maximum(theta0, lower)
    try:
        opt.optimize(start)
        code = _result_name(opt)
    except nlopt.RoundoffLimited:  # the best point so far is as good as it gets
        code = "ROUNDOFF_LIMITED"
    return counted.best_x, counted.best_f, counted.count, code


def _result_name(opt) -> str:
    names = {nlopt.SUCCESS: "SUCCESS", nlopt.STOPVAL_REACHED: "STOPVAL_REACHED",
             nlopt.FTOL_REACHED: "FTOL_REACHED", nlopt.XTOL_REACHED: "XTOL_REACHED",
             nlopt.MAXEVAL_REACHED: "MAXEVAL_REACHED", nlopt.MAXTIME_REACHED: "MAXTIME_REACHED"}
    return names.get(opt.last_optimize_result(), str(opt.last_optimize_result()))


def check_optimizer(name) -> str:
    """The optimizer's name, one of OPTIMIZERS."""
    if name not in OPTIMIZERS:
        raise ModelSpecError(f"unknown optimizer {name!r}; the choices are "
                             f"{', '.join(repr(o) for o in OPTIMIZERS)}")
    return name


def has_gradient(fun) -> bool:
    """Whether the objective gives its analytic gradient (``value_and_gradient``)."""
    return callable(getattr(fun, "value_and_gradient", None))


class _WithGradient:
    """fun and its gradient in x = theta / units, counting every request of either.

    ``value(x)`` is the criterion alone, ``value_and_gradient(x)`` both (one update);
    a NaN becomes an error that names theta.
    """

    def __init__(self, obj, units: np.ndarray):
        self.obj = obj
        self.units = units
        self.count = 0

    def value(self, x) -> float:
        self.count += 1
        theta = np.asarray(x, dtype=np.float64) * self.units
        value = self.obj(theta)
        if np.isnan(value):
            raise NumericalError("the objective evaluated to NaN", theta=theta)
        return value

    __call__ = value

    def value_and_gradient(self, x) -> tuple[float, np.ndarray]:
        self.count += 1
        theta = np.asarray(x, dtype=np.float64) * self.units
        value, g = self.obj.value_and_gradient(theta)
        if np.isnan(value) or not np.all(np.isfinite(g)):
            raise NumericalError("the objective or its gradient evaluated to NaN", theta=theta)
        return value, g * self.units


class _Best:
    """value_and_gradient in z = x / scale, remembering the lowest x it was asked for."""

    def __init__(self, fg, scale: float):
        self.fg = fg
        self.scale = scale
        self.best_x = None
        self.best_f = np.inf

    def __call__(self, z):
        x = np.array(z, dtype=np.float64) * self.scale
        value, g = self.fg(x)
        if value < self.best_f:
            self.best_x, self.best_f = x, value
        return value, g * self.scale


def lbfgsb_options(f0: float, *, ftol_abs=1e-8, ftol_rel=0.0, maxeval=100_000,
                   **others) -> dict:
    """scipy's L-BFGS-B options from optimizer_options (lmer's names, BOBYQA's meaning).

    L-BFGS-B stops on the relative decrease of f per iteration (ftol) and on the projected
    gradient: ftol_abs becomes a relative decrease at the start's criterion f0, ftol_rel
    is one already. It has no step tolerance: xtol_abs and xtol_rel are refused.
    """
    if others:
        raise TypeError(f"optimizer option(s) {', '.join(sorted(others))} do not apply to "
                        "optimizer='lbfgsb' (it stops on the decrease of the criterion and "
                        "its projected gradient): use ftol_abs, ftol_rel or maxeval")
    ftol = max(ftol_abs / max(1.0, abs(f0)), ftol_rel)
    return {"ftol": ftol, "gtol": LBFGSB_GTOL * FIRST_STEP, "maxfun": int(maxeval),
            "maxiter": int(maxeval), "maxls": 40}


def lbfgsb(fun: _WithGradient, x0: np.ndarray, lower: np.ndarray,
           **options) -> tuple[np.ndarray, float, int, str]:
    """Minimize over x >= lower from x0 with the gradient; (x, f, requests, result).

    L-BFGS-B works on x / FIRST_STEP. After each run, a bounded parameter left at its
    bound is probed off it (``off_boundary``); a lower criterion there starts the run
    again from that point.
    """
    start = fun.count
    best = _Best(fun.value_and_gradient, FIRST_STEP)
    x = np.maximum(x0, lower)
    opts = lbfgsb_options(fun.value(x), **options)
    bounds = scipy.optimize.Bounds(lower / FIRST_STEP, np.full_like(lower, np.inf))
    code = "MAXEVAL_REACHED"
    for _ in range(MAX_RESTARTS):
        left = opts["maxfun"] - (fun.count - start)
        if left <= 0:
            code = "MAXEVAL_REACHED"
            break
        res = scipy.optimize.minimize(best, x / FIRST_STEP, jac=True, method="L-BFGS-B",
                                      bounds=bounds, options=dict(opts, maxfun=left))
        code = _lbfgsb_result(res)
        x = np.maximum(best.best_x, lower)
        probe = off_boundary(fun.value, x, best.best_f, lower)
        if probe is None:
            break
        x = probe
    return best.best_x, best.best_f, fun.count - start, code


def _lbfgsb_result(res) -> str:
    if res.status == 1:
        return "MAXEVAL_REACHED"
    if res.status == 2:
        return "ABNORMAL_TERMINATION_IN_LNSRCH"
    return "SUCCESS"


def off_boundary(value, x: np.ndarray, f: float, lower: np.ndarray):
    """A point off the bound with a lower criterion than f at x, or None.

    Each bounded parameter at its bound is moved by BOUNDARY_PROBES in turn; the best
    probe wins if it beats f by more than rounding.
    """
    at_bound = np.flatnonzero(np.isfinite(lower) & (x <= lower))
    best_x, best_f = None, f - F_NOISE * max(1.0, abs(f))
    for i in at_bound:
        for step in BOUNDARY_PROBES:
            y = x.copy()
            y[i] += step
            fy = value(y)
            if fy < best_f:
                best_x, best_f = y, fy
    return best_x


def _axis_values(fun, x, i, h, one_sided):
    """f at the two points along axis i: x + h e_i, x - h e_i (or x + h, x + 2h at a bound)."""
    ei = np.zeros_like(x)
    ei[i] = h
    return (fun(x + ei), fun(x + 2 * ei)) if one_sided else (fun(x + ei), fun(x - ei))


def fd_gradient(fun, x: np.ndarray, lower: np.ndarray, h: float = 1e-4):
    """Central-difference gradient (one-sided, second order, at a bound), f(x), at_bound."""
    at_bound = x - h < lower
    f0 = fun(x)
    g = np.zeros_like(x)
    for i in range(x.shape[0]):
        a, b = _axis_values(fun, x, i, h, at_bound[i])
        g[i] = (-3 * f0 + 4 * a - b) / (2 * h) if at_bound[i] else (a - b) / (2 * h)
    return g, at_bound


def fd_derivatives(fun, x: np.ndarray, lower: np.ndarray, h: float = 1e-4):
    """Central-difference gradient and Hessian; one-sided for parameters at their bound.

    Mixed partials reuse the axis points: H_ij = (f(+i+j) + f(-i-j) - f(+i) - f(-i) - f(+j)
    - f(-j) + 2 f0) / (2 h^2), O(h^2) like the 4-point rule but with 2 new evaluations per
    pair instead of 4 (P^2 + P + 1 evaluations in all instead of 2 P^2 + 1).
    """
    p = x.shape[0]
    at_bound = x - h < lower
    f0 = fun(x)
    g = np.zeros(p)
    H = np.zeros((p, p))
    plus, minus = np.zeros(p), np.zeros(p)
    for i in range(p):
        plus[i], minus[i] = _axis_values(fun, x, i, h, at_bound[i])
        if at_bound[i]:  # minus[i] holds f(x + 2h e_i) here
            g[i] = (-3 * f0 + 4 * plus[i] - minus[i]) / (2 * h)
            H[i, i] = (f0 - 2 * plus[i] + minus[i]) / h**2
        else:
            g[i] = (plus[i] - minus[i]) / (2 * h)
            H[i, i] = (plus[i] - 2 * f0 + minus[i]) / h**2
    for i in range(p):
        for j in range(i + 1, p):
            if at_bound[i] or at_bound[j]:
                continue
            ei, ej = np.zeros(p), np.zeros(p)
            ei[i], ej[j] = h, h
            H[i, j] = H[j, i] = (fun(x + ei + ej) + fun(x - ei - ej) - plus[i] - minus[i]
                                 - plus[j] - minus[j] + 2 * f0) / (2 * h * h)
    return g, H, at_bound


def gradient_derivatives(fun: _WithGradient, x: np.ndarray, lower: np.ndarray,
                         h: float = GRADIENT_FD_STEP):
    """f, the analytic gradient and a Hessian from its forward differences (P + 1 calls).

    Steps go up (into the feasible set, also at a lower bound); the Hessian is symmetrized.
    ``at_bound`` as in fd_derivatives: within the central-difference step of the bound.
    """
    f0, g = fun.value_and_gradient(x)
    H = np.empty((x.shape[0], x.shape[0]))
    for j in range(x.shape[0]):
        xj = x.copy()
        xj[j] += h
        H[:, j] = (fun.value_and_gradient(xj)[1] - g) / h
    return f0, g, 0.5 * (H + H.T), x - 1e-4 < lower


def scaled_gradient(g: np.ndarray, H: np.ndarray, free: np.ndarray) -> float:
    """max |H^-1 g| over the free parameters (lme4's scaled gradient), inf if H is singular."""
    if not free.any():
        return 0.0
    gf, Hf = g[free], H[np.ix_(free, free)]
    try:
        return float(np.max(np.abs(np.linalg.solve(Hf, gf))))
    except np.linalg.LinAlgError:
        return float(np.inf)


def newton_step(fun, theta, g, H, free, lower):
    """theta - H^-1 g on the free parameters (clipped to the bounds) and its value, or None."""
    if not free.any():
        return None
    step = np.zeros_like(theta)
    try:
        step[free] = np.linalg.solve(H[np.ix_(free, free)], g[free])
    except np.linalg.LinAlgError:
        return None
    candidate = np.maximum(theta - step, lower)
    return candidate, fun(candidate)


def check_derivatives(fun, theta, lower):
    """Gradient, Hessian and the free set at theta (bound parameters pushed outward are fixed)."""
    g, H, at_bound = fd_derivatives(fun, theta, lower)
    free = ~(at_bound & (g >= 0))
    return g, H, free


def minimize_theta(fun, theta0: np.ndarray, lower: np.ndarray, *, check: bool = True,
                   units: np.ndarray | None = None, optimizer: str = "bobyqa",
                   refine: dict | None = None, **options) -> OptSummary:
    """Optimize, polish and check convergence; warns (ConvergenceWarning) only when it is real.

    The optimizer and the derivative checks work on theta / units (scaling.py; default 1);
    theta, the gradient and the Hessian are reported in theta's own units, the scaled
    gradient in the optimizer's. ``initial_step`` is in theta's units, the tolerances in
    the optimizer's. ``optimizer``: "bobyqa" (derivative-free) or "lbfgsb" (for an
    objective with ``value_and_gradient``: ``minimize_with_gradient``). ``refine``:
    BOBYQA's options (tolerances) for a second run from the polished point when the
    check's Newton steps left a scaled gradient above REFINE_SG (for loose ``options``
    that rely on those steps to finish).
    """
    with one_blas_thread():
        if check_optimizer(optimizer) == "lbfgsb":
            return minimize_with_gradient(fun, theta0, lower, check=check, units=units, **options)
        t0 = time.perf_counter()
        units = np.ones_like(theta0, dtype=np.float64) if units is None else units
        if options.get("initial_step") is not None:
            options["initial_step"] = np.asarray(options["initial_step"]) / units
        fun = _Tally(fun if np.all(units == 1.0) else _InUnits(fun, units))
        x0, lower = theta0 / units, lower / units
        x, fmin, n_evals, code = bobyqa(fun, x0, lower, **options)
        x = at_optimum(x, lower, units)
        fmin = fun(x)
        messages: list[str] = []
        g = np.zeros_like(x)
        H = None
        sg = 0.0
        if check:
            x, fmin, g, H, sg = _polish(fun, x, fmin, lower)
            if refine is not None and not sg <= REFINE_SG:
                x, fmin, more, code = bobyqa(fun, x, lower, **dict(options, **refine))
                n_evals += more
                x = at_optimum(x, lower, units)
                x, fmin, g, H, sg = _polish(fun, x, fun(x), lower)
            if sg > GRAD_TOL:
                messages.append(f"Model failed to converge with max|grad| = {sg:.3g} (tol = "
                                f"{GRAD_TOL}); the scaled gradient at the optimum is not small")
        if code == "MAXEVAL_REACHED":
            messages.append(f"the optimizer stopped at its evaluation limit ({n_evals})")
        return _summary(theta0, x, fmin, n_evals, t0, "NLopt BOBYQA", code, g, H, sg, messages,
                        units, fun.count, stacklevel=4)


def _summary(theta0, x, fmin, n_evals, t0, method, code, g, H, sg, messages, units,
             total, *, stacklevel: int) -> OptSummary:
    """Warn the messages (stacklevel: minimize_theta's caller's caller, as seen from here)
    and report in theta's units."""
    for msg in messages:
        warnings.warn(msg, ConvergenceWarning, stacklevel=stacklevel)
    return OptSummary(np.asarray(theta0), x * units, float(fmin), n_evals,
                      time.perf_counter() - t0, method, code, g / units, sg,
                      not messages, tuple(messages),
                      None if H is None else H / np.outer(units, units), units, total)


def minimize_with_gradient(obj, theta0: np.ndarray, lower: np.ndarray, *, check: bool = True,
                           units: np.ndarray | None = None, **options) -> OptSummary:
    """minimize_theta with L-BFGS-B and the analytic gradient of ``obj``.

    The same steps as with BOBYQA (optimize in the optimizer's units, snap to the bound,
    check and polish), with the check's derivatives from the analytic gradient
    (gradient_derivatives). ``n_evals`` counts (criterion, gradient) requests.
    """
    if not has_gradient(obj):
        raise ModelSpecError(f"optimizer='lbfgsb' needs the analytic gradient, which "
                             f"{type(obj).__name__} does not have; use optimizer='bobyqa'")
    options.pop("initial_step", None)  # BOBYQA's; L-BFGS-B takes no initial step
    t0 = time.perf_counter()
    units = np.ones_like(theta0, dtype=np.float64) if units is None else units
    fun = _WithGradient(obj, units)
    x0, lower = theta0 / units, lower / units
    x, fmin, n_evals, code = lbfgsb(fun, x0, lower, **options)
    x = at_optimum(x, lower, units)
    messages: list[str] = []
    g = np.zeros_like(x)
    H = None
    sg = 0.0
    if check:
        x, fmin, g, H, sg = _polish_with_gradient(fun, x, lower)
        if sg > GRAD_TOL:
            messages.append(f"Model failed to converge with max|grad| = {sg:.3g} (tol = "
                            f"{GRAD_TOL}); the scaled gradient at the optimum is not small")
    else:
        fmin = fun.value(x)
    if code == "MAXEVAL_REACHED":
        messages.append(f"the optimizer stopped at its evaluation limit ({n_evals})")
    return _summary(theta0, x, fmin, n_evals, t0, "scipy L-BFGS-B", code, g, H, sg, messages,
                    units, fun.count, stacklevel=5)


def at_optimum(x: np.ndarray, lower: np.ndarray, units: np.ndarray) -> np.ndarray:
    """An optimizer's result (optimizer's units) snapped to the bound where within 1e-10
    of it, and refused where a variance ratio is beyond rounding (check_theta_limit)."""
    x = np.where(np.abs(x - lower) < 1e-10, lower, x)
    check_theta_limit(x, lower, units)
    return x


def check_theta_limit(x: np.ndarray, lower: np.ndarray, units: np.ndarray) -> None:
    """Refuse an optimum where a variance ratio is beyond what double precision resolves."""
    huge = np.isfinite(lower) & (x > THETA_LIMIT)
    if huge.any():
        i = int(np.flatnonzero(huge)[0])
        raise NumericalError(
            f"theta[{i}] went to {x[i] * units[i]:.3g}: a random-effect standard deviation "
            f"over {THETA_LIMIT:.0e} times the residual one, so the random effects fit the "
            "data (almost) exactly and the residual variance is below rounding; check that "
            "the response is not computed from the grouping factors, or drop that term",
            theta=x * units)


def _polish(fun, x, fmin, lower):
    """Derivatives at x and Newton steps from them: (x, f, gradient, Hessian, scaled gradient).

    BOBYQA resolves x only to about sqrt(ftol / curvature): Newton steps with the check's
    Hessian get closer. f cannot always tell the points apart (the decrease is below its
    rounding noise), so the scaled gradient decides then. One step is always tried, more
    while the scaled gradient (the next step's length) stays above POLISH_TOL, at most
    POLISH_STEPS. A step within REHESSIAN of where the Hessian was taken keeps it and
    costs one evaluation and a gradient (2P + 1); the first step that lands further
    takes the Hessian again there (P^2 + P + 1; once), so that the Hessian reported (it
    gives a GLMM's vcov) is the optimum's. A step whose evaluation fails, or whose new
    Hessian is singular, is not taken.
    """
    g, H, free = check_derivatives(fun, x, lower)
    sg = scaled_gradient(g, H, free)
    origin, retaken = x, False  # where H was taken; whether it was taken again
    for _ in range(POLISH_STEPS):
        try:
            step = newton_step(fun, x, g, H, free, lower)
        except NumericalError:
            break
        if step is None or not step[1] <= fmin + F_NOISE * max(1.0, abs(fmin)):
            break
        far = np.max(np.abs(step[0] - origin), initial=0.0) > REHESSIAN
        if far and not retaken:
            g2, H2, free2 = check_derivatives(fun, step[0], lower)
        else:
            g2, at_bound2 = fd_gradient(fun, step[0], lower)
            H2, free2 = H, ~(at_bound2 & (g2 >= 0))
        sg2 = scaled_gradient(g2, H2, free2)
        if not np.isfinite(sg2) or not (step[1] < fmin or sg2 < sg):
            break
        if H2 is not H:
            origin, retaken = step[0], True
        x, fmin, g, H, sg, free = step[0], step[1], g2, H2, sg2, free2
        if sg < POLISH_TOL:
            break
    return x, fmin, g, H, sg


def _polish_with_gradient(fun: _WithGradient, x, lower):
    """_polish with the analytic gradient and its differences for the Hessian."""
    fmin, g, H, at_bound = gradient_derivatives(fun, x, lower)
    free = ~(at_bound & (g >= 0))
    sg = scaled_gradient(g, H, free)
    step = newton_step(fun.value, x, g, H, free, lower)
    if step is not None and step[1] <= fmin + F_NOISE * max(1.0, abs(fmin)):
        f2, g2 = fun.value_and_gradient(step[0])
        free2 = ~((step[0] - 1e-4 < lower) & (g2 >= 0))
        sg2 = scaled_gradient(g2, H, free2)
        if f2 < fmin or sg2 < sg:
            x, fmin, g, sg = step[0], f2, g2, sg2
    return x, fmin, g, H, sg


def is_singular(theta: np.ndarray, lower: np.ndarray, tol: float = SINGULAR_TOL,
                units: np.ndarray | None = None) -> bool:
    """lme4's isSingular: a bounded (diagonal) theta within tol of its bound (in the
    optimizer's units, scaling.py; 1 unless a covariate is of extreme size)."""
    bounded = np.isfinite(lower)
    units = np.ones_like(theta) if units is None else units
    return bool(np.any((theta[bounded] - lower[bounded]) / units[bounded] < tol))
