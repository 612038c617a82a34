"""Profile likelihood of a mixed model: zeta curves and the intervals they give.

After the results stage (... -> results -> inference). As lme4's ``profile``: the
deviance is the ML deviance (a REML fit is refitted by ML first, as lme4's ``devfun2``
does), the parameters are on lme4's standard-deviation / correlation scale, sigma (when
the model estimates it), and the fixed effects. For one parameter held at x and the
others optimized,

    zeta(x) = sign(x - x_hat) sqrt(d(x) - d_hat),

and the level-L interval is where |zeta| = qnorm((1 + L) / 2). lme4 interpolates a spline
through its profile points; here the limits are roots of the exact profile (brentq,
bracketed by the points). A limit beyond a parameter's bound (an SD of 0, a correlation
of +-1) is the bound, as in lme4.

Every profile point is an optimization on an objective of its own, n-free:
- a variance parameter: the ML deviance at given (sds, correlations, sigma),
  log|L|^2 + pwrss / sigma^2 + n log(2 pi sigma^2) - sum(log w), beta profiled out;
- a fixed effect beta_j = v: X_j v moves into the offset, which in cross-product terms
  drops column j of X and changes the response column only (Z'Wr, X'Wr, r'Wr from Z'WX_j
  and X'WX_j); the profiled ML deviance of the reduced model is optimized over theta.
- with the residual SD fixed (``lmer(..., sigma=)``), sigma is not a parameter: the
  same two objectives with the fixed-sigma ML criterion (objective.fixed_sigma_criterion).
- a GLMM (binomial, Poisson; nagq >= 1): -2 log L of stage 2 (Laplace or AGQ, PIRLS on u
  inside) as a function of (sd, cor, beta) with sigma = 1, as lme4's devfun2 for glmer;
  every parameter, a fixed effect too, is held in turn and all the others optimized.
  Like lme4, families with a dispersion (Gamma, inverse Gaussian) are refused.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import nlopt
import numpy as np
import pandas as pd
import scipy.optimize
from scipy.stats import norm

from .context import require_model
from .errors import ModelSpecError, NumericalError

LOG_2PI = float(np.log(2.0 * np.pi))
# inner optimizations: a deviance error of 1e-10 moves zeta at 2 by 3e-11
INNER = {"ftol_abs": 1e-11, "xtol_rel": 1e-9, "maxeval": 5000}
ZETA_STEPS = 8  # points per unit of |zeta| while stepping out (lme4: delta = cutoff / 8)
MAX_POINTS = 60  # per direction
MAX_GROWTH = 10.0  # a step at most this many times the previous one (lme4's maxmult)
BOUNDARY_SNAP = 1e-8  # a diagonal theta below this is taken to be on its bound (0)
DEV_TOL = 1e-6  # a profile deviance this far below the optimum is a better optimum


# -- names and the sd/cor scale ---------------------------------------------------------

def variance_names(terms) -> list[str]:
    """lme4's oldNames = FALSE names in theta's order: sd_x|g on the diagonal, cor_y.x|g below."""
    from .results import unique_group_labels

    names = []
    for label, t in zip(unique_group_labels(terms), terms):
        for c in range(t.k):
            for r in range(c, t.k):
                names.append(f"sd_{t.cnames[r]}|{label}" if r == c
                             else f"cor_{t.cnames[r]}.{t.cnames[c]}|{label}")
    return names


def sdcor_from_theta(theta: np.ndarray, ks, sigma: float) -> np.ndarray:
    """(sd, cor) per theta position: sd on T's diagonal, cor below it (0 where an sd is 0)."""
    from .objective import ThetaMap

    out = []
    for T in ThetaMap(tuple(ks)).factors(theta):
        S = sigma**2 * T @ T.T
        sd = np.sqrt(np.diag(S))
        c, r = np.triu_indices(T.shape[0])
        for i, j in zip(r, c):
            if i == j:
                out.append(sd[i])
            else:
                out.append(S[i, j] / (sd[i] * sd[j]) if sd[i] > 0 and sd[j] > 0 else 0.0)
    return np.asarray(out)


def tolerant_cholesky(C: np.ndarray, tol: float = 1e-10) -> np.ndarray | None:
    """Lower Cholesky factor of a correlation matrix, semi-definite allowed; None if indefinite."""
    k = C.shape[0]
    L = np.zeros_like(C)
    for j in range(k):
        d = C[j, j] - L[j, :j] @ L[j, :j]
        if d < -tol:
            return None
        L[j, j] = np.sqrt(max(d, 0.0))
        for i in range(j + 1, k):
            off = C[i, j] - L[i, :j] @ L[j, :j]
            if L[j, j] > 0:
                L[i, j] = off / L[j, j]
            elif abs(off) > tol:
                return None
    return L


def theta_from_sdcor(pars: np.ndarray, ks, sigma: float) -> np.ndarray | None:
    """theta for (sd, cor) in theta's positions: T = diag(sd) chol(C) / sigma; None if C
    is not a correlation matrix."""
    out, at = [], 0
    for k in ks:
        c, r = np.triu_indices(k)
        vals = pars[at:at + len(r)]
        at += len(r)
        C = np.eye(k)
        sd = np.zeros(k)
        for v, i, j in zip(vals, r, c):
            if i == j:
                sd[i] = v
            else:
                C[i, j] = C[j, i] = v
        L = tolerant_cholesky(C)
        if L is None:
            return None
        T = sd[:, None] * L / sigma
        out.append(T[r, c])
    return np.concatenate(out)


def variance_bounds(theta_lower: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bounds of (sd, cor, sigma): sd in [0, inf), cor in [-1, 1], sigma in [0, inf)."""
    diag = np.isfinite(theta_lower)
    lower = np.append(np.where(diag, 0.0, -1.0), 0.0)
    upper = np.append(np.where(diag, np.inf, 1.0), np.inf)
    return lower, upper


# -- the ML optimum ---------------------------------------------------------------------

@dataclass(eq=False)
class MlOptimum:
    """The ML fit the profile is centred on, and the objective behind it."""

    objective: object  # LmmObjective (ML) or GlmmObjective (stage 2), left at the optimum
    theta: np.ndarray
    sigma: float  # 1 for a GLMM
    beta: np.ndarray
    se: np.ndarray
    deviance: float
    ks: tuple = field(default=())
    fixed_sigma: float | None = None  # lmer(..., sigma=): sigma is not a parameter
    glmm: bool = False

    @property
    def has_sigma(self) -> bool:
        """sigma is a profiled parameter (an LMM that estimates it)."""
        return not self.glmm and self.fixed_sigma is None

    @property
    def sdcor(self) -> np.ndarray:
        return sdcor_from_theta(self.theta, self.ks, self.sigma)


def check_profilable(result) -> None:
    """LMMs (sigma estimated or fixed) and GLMMs without a dispersion, fitted with nagq >= 1."""
    ctx = require_model(result, "a profile")
    if not ctx.is_glmm:
        return
    if ctx.family_object.has_dispersion:
        raise ModelSpecError(f"profile likelihood intervals of a {ctx.options['family']} GLMM "
                             "(a family with a dispersion parameter) are not available (lme4 "
                             "refuses them too); use confint(method='wald') or "
                             "confint(method='boot')")
    if int(ctx.options["nagq"]) == 0:
        raise ModelSpecError("profile likelihood needs the deviance as a function of theta and "
                             "beta, which a nagq=0 fit does not optimize; refit with nagq=1 "
                             "(Laplace), or use confint(method='wald') or confint(method='boot')")


def ml_optimum(result) -> MlOptimum:
    """The ML optimum: the fit itself, or a REML fit refitted by ML (n-free, from its theta).

    With sigma fixed the refit is of the fixed-sigma ML criterion; a GLMM's optimum is its
    stage 2 (theta, beta), evaluated on an objective of the profile's own.
    """
    from .objective import LmmObjective, fixed_sigma_unit
    from .optimize import minimize_theta
    from .scaling import theta_units

    ctx = result.model
    if ctx.is_glmm:
        return glmm_optimum(result)
    fixed = ctx.options.get("sigma")
    obj = LmmObjective(ctx.crossproducts(), reml=False,
                       factor_mode=ctx.options.get("factor_mode", "measure"), sigma=fixed)
    theta = np.asarray(result.theta, dtype=np.float64)
    if result.reml:
        units = theta_units(ctx.frame.terms, obj.theta_map, ctx.frame.weights)
        if fixed is not None:
            units = units * fixed_sigma_unit(obj.cp, obj.fixed_sigma)
        theta = minimize_theta(obj, theta, obj.theta_map.lower, check=True, units=units,
                               optimizer=ctx.options.get("optimizer", "bobyqa")).theta
    # a Newton polish can leave a singular fit's theta at 1e-11 instead of its bound; the
    # profile then starts at the bound (its deviance differs by ~1e-20)
    theta = snap_to_bounds(theta, obj.theta_map.lower)
    obj.update(theta)
    sigma = obj.sigma()
    se = sigma * np.sqrt(np.diag(obj.vcov_unscaled()))
    return MlOptimum(obj, theta.copy(), sigma, obj.beta(), se, obj.objective(),
                     tuple(obj.cp.k), fixed_sigma=obj.fixed_sigma)


def snap_to_bounds(theta: np.ndarray, lower: np.ndarray) -> np.ndarray:
    bounded = np.isfinite(lower)
    return np.where(bounded & (theta < BOUNDARY_SNAP), 0.0, theta)


def glmm_optimum(result) -> MlOptimum:
    """A GLMM's stage-2 optimum on a new objective; standard errors from the fit's vcov."""
    ctx = result.model
    obj = ctx.new_objective()
    n_theta = ctx.n_theta
    theta = snap_to_bounds(np.asarray(ctx.params[:n_theta], dtype=np.float64),
                           obj.pls.theta_map.lower)
    beta = np.asarray(ctx.params[n_theta:], dtype=np.float64)
    deviance = obj.stage2(np.concatenate([theta, beta]))
    se = np.sqrt(np.diag(result.vcov.to_numpy()))
    return MlOptimum(obj, theta, 1.0, beta.copy(), se, deviance, tuple(obj.pls.cp.k),
                     glmm=True)


# -- one parameter's profile deviance ---------------------------------------------------

def bobyqa_bounded(fun, x0: np.ndarray, lower: np.ndarray, upper: np.ndarray,
                   step: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """min fun over lower <= x <= upper from x0 (NLopt BOBYQA, the profile's tolerances);
    ``step``: the initial step per coordinate (default 5% of x0, at least 0.02)."""
    if x0.shape[0] == 0:
        return x0, float(fun(x0))
    opt = nlopt.opt(nlopt.LN_BOBYQA, x0.shape[0])
    best = {"x": x0.copy(), "f": np.inf}

    def wrapped(x, grad):
        value = float(fun(np.asarray(x)))
        if value < best["f"]:
            best["x"], best["f"] = np.array(x), value
        return value

    opt.set_min_objective(wrapped)
    opt.set_lower_bounds(lower)
    opt.set_upper_bounds(upper)
    opt.set_ftol_abs(INNER["ftol_abs"])
    opt.set_xtol_rel(INNER["xtol_rel"])
    opt.set_maxeval(INNER["maxeval"])
    width = np.where(np.isfinite(upper - lower), (upper - lower) / 4.0, np.inf)
    if step is None:
        step = np.maximum(0.05 * np.abs(x0), 0.02)
    step = np.minimum(step, width)
    opt.set_initial_step(step)
    x0 = np.clip(x0, lower, upper)
    try:
        opt.optimize(x0)
    except nlopt.RoundoffLimited:
        pass
    return best["x"], best["f"]


class VarianceProfile:
    """d(x) for one of (sd, cor, sigma) held at x, the others (beta profiled out) optimized.

    With sigma fixed the parameters are (sd, cor) only and d is the fixed-sigma ML
    criterion (the objective's own).
    """

    def __init__(self, ml: MlOptimum, index: int):
        self.ml, self.index = ml, index
        self.obj = ml.objective
        self.cp = ml.objective.cp
        lower, upper = variance_bounds(ml.objective.theta_map.lower)
        n = lower.shape[0] if ml.has_sigma else lower.shape[0] - 1
        self.lower, self.upper = lower[:n], upper[:n]
        self.free = np.arange(n) != index
        self.estimate = float(self.optimum[index])

    @property
    def optimum(self) -> np.ndarray:
        """(sd, cor) and, when estimated, sigma at the ML optimum."""
        return np.append(self.ml.sdcor, self.ml.sigma) if self.ml.has_sigma else self.ml.sdcor

    def deviance(self, pars: np.ndarray) -> float:
        """ML deviance at (sd, cor[, sigma]) = pars; a large value outside the model."""
        sigma = pars[-1] if self.ml.has_sigma else self.ml.sigma
        sdcor = pars[:-1] if self.ml.has_sigma else pars
        theta = theta_from_sdcor(sdcor, self.ml.ks, sigma) if sigma > 0 else None
        if theta is None:
            return 1e30
        try:
            self.obj.update(theta)
        except NumericalError:
            return 1e30
        if not self.ml.has_sigma:
            return self.obj.objective()
        return float(self.obj.ldL2 + self.obj.pwrss / sigma**2
                     + self.cp.n * (LOG_2PI + np.log(sigma**2)) - self.cp.sum_log_w)

    def start(self) -> np.ndarray:
        return self.optimum[self.free]

    def at(self, x: float, start: np.ndarray) -> tuple[float, np.ndarray]:
        """(d(x), the optimized other parameters)."""
        pars = self.optimum

        def fun(free):
            pars[self.free] = free
            pars[self.index] = x
            return self.deviance(pars)

        best, value = bobyqa_bounded(fun, start, self.lower[self.free], self.upper[self.free])
        return value, best

    @property
    def bounds(self) -> tuple[float, float]:
        return float(self.lower[self.index]), float(self.upper[self.index])

    def first_step(self) -> float:
        est = self.estimate
        return 0.01 * abs(est) if est != 0 else 0.01 * self.ml.sigma


class FixedEffectProfile:
    """d(v) for beta_j held at v: the reduced model's profiled ML deviance, over theta."""

    def __init__(self, ml: MlOptimum, j: int):
        from .objective import LmmObjective

        self.ml, self.j = ml, j
        cp = ml.objective.cp
        p = cp.p
        self.keep = [i for i in range(p) if i != j]
        self.shift_j = 0.0 if cp.beta_shift is None else float(cp.beta_shift[j])
        self.obj = LmmObjective(self.crossproducts(self.shift_j), reml=False,
                                sigma=ml.fixed_sigma)
        self.estimate = float(ml.beta[j])

    def crossproducts(self, v: float):
        """The cross-products of the model with X_j v in the offset (column j of X dropped).

        The fit's response column is r = y - offset - X beta0; with beta_j = v the new one
        is r - X_j (v - beta0_j), up to a multiple of the kept columns (which moves their
        coefficients, not the criterion).
        """
        cp = self.ml.objective.cp
        p, j, keep = cp.p, self.j, self.keep
        d = v - self.shift_j
        ZtWXy = np.column_stack([cp.ZtWXy[:, keep], cp.ZtWXy[:, p] - d * cp.ZtWXy[:, j]])
        A = cp.XtWXy
        XtWXy = np.empty((p, p))
        XtWXy[:-1, :-1] = A[np.ix_(keep, keep)]
        XtWXy[:-1, -1] = XtWXy[-1, :-1] = A[keep, p] - d * A[keep, j]
        XtWXy[-1, -1] = A[p, p] - 2.0 * d * A[j, p] + d * d * A[j, j]
        shift = None if cp.beta_shift is None else cp.beta_shift[keep]
        return replace(cp, ZtWXy=np.ascontiguousarray(ZtWXy), XtWXy=XtWXy, beta_shift=shift)

    def start(self) -> np.ndarray:
        return self.ml.theta.copy()

    def at(self, v: float, start: np.ndarray) -> tuple[float, np.ndarray]:
        self.obj.set_crossproducts(self.crossproducts(v))
        lower = self.obj.theta_map.lower
        return bobyqa_bounded(self._deviance, start, lower, np.full_like(lower, np.inf))[::-1]

    def _deviance(self, theta: np.ndarray) -> float:
        try:
            return self.obj(theta)
        except NumericalError:
            return 1e30

    @property
    def bounds(self) -> tuple[float, float]:
        return -np.inf, np.inf

    def first_step(self) -> float:
        return float(self.ml.se[self.j]) / ZETA_STEPS


class GlmmProfile:
    """d(x) of a GLMM for one of (sd, cor, beta) held at x, all the others optimized.

    d is -2 log L of stage 2 (Laplace, or AGQ for nagq > 1) at the theta that the
    (sd, cor) values give with sigma = 1, as lme4's devfun2 for glmer; PIRLS on u runs
    inside every evaluation, warm-started from the previous mode.
    """

    def __init__(self, ml: MlOptimum, index: int):
        self.ml, self.index = ml, index
        self.obj = ml.objective
        self.n_var = ml.theta.shape[0]
        lower, upper = variance_bounds(self.obj.pls.theta_map.lower)
        p = ml.beta.shape[0]
        self.lower = np.concatenate([lower[:-1], np.full(p, -np.inf)])
        self.upper = np.concatenate([upper[:-1], np.full(p, np.inf)])
        self.optimum = np.concatenate([ml.sdcor, ml.beta])
        self.free = np.arange(self.optimum.shape[0]) != index
        self.estimate = float(self.optimum[index])
        # BOBYQA's first steps: 0.02 on the sd/cor scale (lme4's 0.1 x 0.2 for theta), a
        # fifth of a standard error for beta (lme4's stage-2 start)
        self.steps = np.concatenate([np.full(self.n_var, 0.02), 0.2 * ml.se])[self.free]

    def deviance(self, pars: np.ndarray) -> float:
        theta = theta_from_sdcor(pars[:self.n_var], self.ml.ks, 1.0)
        if theta is None:
            return 1e30
        try:
            return self.obj.stage2(np.concatenate([theta, pars[self.n_var:]]))
        except NumericalError:
            return 1e30

    def start(self) -> np.ndarray:
        return self.optimum[self.free]

    def at(self, x: float, start: np.ndarray) -> tuple[float, np.ndarray]:
        pars = self.optimum.copy()

        def fun(free):
            pars[self.free] = free
            pars[self.index] = x
            return self.deviance(pars)

        best, value = bobyqa_bounded(fun, start, self.lower[self.free], self.upper[self.free],
                                     step=self.steps)
        return value, best

    @property
    def bounds(self) -> tuple[float, float]:
        return float(self.lower[self.index]), float(self.upper[self.index])

    def first_step(self) -> float:
        if self.index >= self.n_var:
            return float(self.ml.se[self.index - self.n_var]) / ZETA_STEPS
        est = self.estimate
        return 0.01 * abs(est) if est != 0 else 0.001  # lme4's shiftpar


# -- stepping out and the limits ----------------------------------------------------------

@dataclass
class ProfileCurve:
    """One parameter's profile points (value, zeta, the optimized others) and its function."""

    name: str
    prof: object
    base: float
    values: list = field(default_factory=list)
    zetas: list = field(default_factory=list)
    starts: list = field(default_factory=list)

    def zeta(self, x: float, start: np.ndarray) -> tuple[float, np.ndarray]:
        dev, others = self.prof.at(x, start)
        diff = dev - self.base
        if diff < -DEV_TOL * max(1.0, abs(self.base)):
            raise NumericalError(f"profiling {self.name} found a lower deviance ({dev:.10g} < "
                                 f"{self.base:.10g}) at {x:.6g}: the fit is not at its "
                                 "optimum; refit with tighter optimizer_options")
        return float(np.sign(x - self.prof.estimate) * np.sqrt(max(diff, 0.0))), others

    def add(self, x: float, z: float, start: np.ndarray) -> None:
        self.values.append(float(x))
        self.zetas.append(float(z))
        self.starts.append(start)

    def sorted_points(self) -> tuple[np.ndarray, np.ndarray]:
        order = np.argsort(self.values)
        return np.asarray(self.values)[order], np.asarray(self.zetas)[order]


def step_out(curve: ProfileCurve, direction: int, cutoff: float) -> None:
    """Add points from the estimate in one direction until |zeta| > cutoff or a bound.

    Steps aim at a zeta increment of 1 / ZETA_STEPS from the local slope dx / dzeta,
    growing at most MAX_GROWTH-fold (lme4's rule).
    """
    prof = curve.prof
    lo, hi = prof.bounds
    est = prof.estimate
    if (direction < 0 and est <= lo) or (direction > 0 and est >= hi):
        return
    x_prev, z_prev, start = est, 0.0, prof.start()
    x = float(np.clip(est + direction * prof.first_step(), lo, hi))
    for _ in range(MAX_POINTS):
        z, start = curve.zeta(x, start)
        curve.add(x, z, start)
        if abs(z) > cutoff or x in (lo, hi):
            return
        dz = abs(z - z_prev)
        dx = abs(x - x_prev)
        step = dx / ZETA_STEPS / dz if dz > 0 else dx
        step = min(step, MAX_GROWTH * dx)
        x_prev, z_prev = x, z
        x = float(np.clip(x + direction * step, lo, hi))


def profile_curve(name: str, prof, base: float, cutoff: float) -> ProfileCurve:
    """Points on both sides of the estimate (the estimate itself at zeta 0)."""
    curve = ProfileCurve(name, prof, base)
    curve.add(prof.estimate, 0.0, prof.start())
    for direction in (1, -1):
        step_out(curve, direction, cutoff)
    return curve


def limit(curve: ProfileCurve, target: float) -> float:
    """The x where zeta = target (its sign gives the side): a root of the exact profile
    between the bracketing points; the parameter's bound if zeta never gets there; NaN if
    the points stop short of it."""
    values, zetas = curve.sorted_points()
    side = zetas < 0 if target < 0 else zetas > 0
    past = np.flatnonzero(side & (np.abs(zetas) >= abs(target)))
    lo, hi = curve.prof.bounds
    if past.shape[0] == 0:
        end = values[0] if target < 0 else values[-1]
        bound = lo if target < 0 else hi
        return float(bound) if end == bound else float("nan")
    i = past[-1] if target < 0 else past[0]  # the point just beyond the limit
    inner = i + 1 if target < 0 else i - 1
    start = curve.starts[curve.values.index(values[inner])]

    def fun(x):
        return curve.zeta(x, start)[0] - target

    return float(scipy.optimize.brentq(fun, values[i], values[inner], xtol=1e-12,
                                       rtol=1e-12))


# -- what the result methods call -------------------------------------------------------

@dataclass(eq=False)
class Profile:
    """The profile curves of a fit (lme4's ``thpr``): points and interval limits."""

    curves: dict
    ml: MlOptimum

    def table(self) -> pd.DataFrame:
        """Long table: parameter, value, zeta; by parameter (lme4's order), then value."""
        parts = []
        for name, curve in self.curves.items():
            values, zetas = curve.sorted_points()
            parts.append(pd.DataFrame({"parameter": name, "value": values, "zeta": zetas}))
        return pd.concat(parts, ignore_index=True)

    def confint(self, level: float = 0.95) -> pd.DataFrame:
        z = float(norm.ppf((1.0 + level) / 2.0))
        rows = {name: (limit(c, -z), limit(c, z)) for name, c in self.curves.items()}
        return pd.DataFrame.from_dict(rows, orient="index", columns=["lower", "upper"])


def parameter_names(result) -> list[str]:
    """lme4's oldNames = FALSE parameter names: variance parameters, sigma (an LMM that
    estimates it), fixed effects."""
    ctx = result.model
    sigma = [] if ctx.is_glmm or ctx.options.get("sigma") is not None else ["sigma"]
    return variance_names(ctx.frame.terms) + sigma + list(result.fixef.index)


def select_parameters(result, which) -> list[str]:
    """Names asked for: None (all), "theta_" (variance parameters and any sigma), "beta_"
    (fixed effects), a name, or a list of names / positions."""
    names = parameter_names(result)
    n_var = len(names) - len(result.fixef)
    if which is None:
        return names
    if isinstance(which, str):
        if which == "theta_":
            return names[:n_var]
        if which == "beta_":
            return names[n_var:]
        which = [which]
    out = []
    for item in which:
        if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            if not 0 <= item < len(names):
                raise ModelSpecError(f"parameter position {item} is out of range: the model "
                                     f"has {len(names)} parameters ({', '.join(names)})")
            out.append(names[item])
        elif item in names:
            out.append(item)
        else:
            raise ModelSpecError(f"unknown parameter {item!r}; the parameters are "
                                 f"{', '.join(names)} (or 'theta_', 'beta_')")
    return out


def profile_model(result, which=None, level: float = 0.95) -> Profile:
    """Profiles of the parameters in ``which``, each stepped out past |zeta| =
    qnorm((1 + level) / 2)."""
    check_profilable(result)
    check_level(level)
    names = parameter_names(result)
    n_var = len(names) - len(result.fixef)
    chosen = select_parameters(result, which)
    ml = ml_optimum(result)
    cutoff = float(norm.ppf((1.0 + level) / 2.0))
    curves = {}
    for name in chosen:
        i = names.index(name)
        if ml.glmm:
            prof = GlmmProfile(ml, i)
        else:
            prof = VarianceProfile(ml, i) if i < n_var else FixedEffectProfile(ml, i - n_var)
        curves[name] = profile_curve(name, prof, ml.deviance, cutoff)
    if not ml.glmm:
        ml.objective.update(ml.theta)
    return Profile(curves, ml)


def check_level(level) -> None:
    if not (isinstance(level, (float, int, np.floating)) and 0.0 < level < 1.0):
        raise ModelSpecError(f"level must be a number between 0 and 1, not {level!r}")
