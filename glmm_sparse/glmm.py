"""The GLMM objective: Laplace and adaptive Gauss-Hermite deviance, two-stage optimization.

Like lme4: stage 1 (nAGQ = 0) optimizes theta with beta found inside PIRLS; stage 2
optimizes (theta, beta) jointly with PIRLS on u only, the deviance by the Laplace
approximation (nAGQ = 1) or adaptive Gauss-Hermite quadrature (nAGQ > 1, one scalar
random-effects term). All deviances here are -2 log-likelihood including the saturated
part, so Laplace and AGQ values are on the same scale.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from .crossprod import CrossprodPlan
from .errors import DataError, NumericalError
from .objective import LmmObjective
from .optimize import OptSummary, minimize_theta
from .parallel import row_chunks
from .pirls import (
    GlmmData,
    PirlsState,
    deviance,
    factor_at_mode,
    linear_predictor,
    pirls,
    point_of,
    same_effects,
)
from .rowpass import Point, row_pass
from .scaling import beta_units
from .terms import ones_column
from .warmstart import ModeTangent


def start_eta(data: GlmmData) -> np.ndarray:
    """The family's start, eta = g(mustart(y)), chunk by chunk (no n-long temporaries).

    On a refusal (mustart checks the response for some links) the whole response again,
    so that the message names and counts rows of all the data."""
    fam, eta = data.family, np.empty(data.n)
    try:
        for sl in row_chunks(data.n):
            eta[sl] = fam.link.linkfun(fam.mustart(data.y[sl], data.prior_w[sl]))
    except DataError:
        fam.mustart(data.y, data.prior_w)
        raise
    return eta


def saturated_loglik(data: GlmmData) -> float:
    """The family's log p(y | mu = y), summed chunk by chunk in chunk order (its lgamma
    terms made whole would be several n-long temporaries)."""
    fam = data.family
    return float(sum(fam.loglik_saturated(data.y[sl], data.prior_w[sl])
                     for sl in row_chunks(data.n)))


class GlmmObjective:
    """Deviance of a GLMM as a function of theta (stage 1) or (theta, beta) (stage 2)."""

    def __init__(self, data: GlmmData, *, nagq: int = 1, factor_mode: str = "measure"):
        self.data = data
        self.nagq = nagq
        fam = data.family
        eta0 = start_eta(data)
        beta0 = np.zeros(data.X.shape[1])
        # the structure (pattern, analysis) at the start's working weights
        cp0 = row_pass(data, Point(beta0, (), True, eta0)).cp
        self.pls = LmmObjective(cp0, reml=False, factor_mode=factor_mode)
        self.n_theta = self.pls.theta_map.n_theta
        self.eta0 = eta0  # the family's start, where PIRLS restarts when a warm start fails
        self.state = PirlsState(np.zeros(cp0.q), beta0, eta0, from_start=True)
        self.mode_T = None  # the T_t of the theta at which self.state is the mode
        self.joint = True  # which PIRLS the factor in self.pls reflects
        # stage 2's best mode with its first-order move: where its PIRLS starts
        self.tangent = ModeTangent(self.pls.theta_map, cp0.offsets)
        # binomial, Poisson: -2 sum log p(y | mu) = sum devres - 2 loglik_saturated, and the
        # saturated part depends on y only: once per fit instead of lgamma per row and call
        self.saturated = None if fam.has_dispersion else saturated_loglik(data)

    # -- updates ----------------------------------------------------------------------
    def update_stage1(self, theta) -> None:
        """PIRLS for (u, beta) at theta, then the factor at the mode."""
        self.state = self._pirls(self._warm(theta, self.state.beta), theta, joint=True)
        self.mode_T = self.pls.T
        factor_at_mode(self.pls, self.data, self.state, theta, joint=True)
        self.joint = True

    def update_stage2(self, params) -> None:
        """PIRLS for u at (theta, beta) = params, then the factor at the mode."""
        params = np.asarray(params, dtype=np.float64)
        theta, beta = params[:self.n_theta], params[self.n_theta:]
        self.state = self._pirls(self._warm(theta, beta, params), theta, joint=False)
        self.mode_T = self.pls.T
        factor_at_mode(self.pls, self.data, self.state, theta, joint=False)
        self.joint = False

    def _warm(self, theta, beta, params=None) -> PirlsState:
        """Where PIRLS at (theta, beta) starts: in stage 2 (``params`` given) the best
        earlier mode moved to first order (``ModeTangent``); else, or beyond its
        trust, the previous mode's random effects b (``same_effects``); the family's
        start before any mode exists."""
        state = self.state
        if state.from_start or self.mode_T is None:
            return PirlsState(state.u, beta, state.eta, from_start=state.from_start)
        T_new = self.pls.theta_map.factors(np.asarray(theta, dtype=np.float64))
        u = None if params is None else self.tangent.predict(params, T_new)
        if u is None:
            u = same_effects(state.u, self.mode_T, T_new, self.pls.cp.offsets)
        return PirlsState(u, beta)

    def _zt_wx(self) -> np.ndarray:
        """Z'WX at the current mode's weights: one pass with X on the right-hand side."""
        pls, p = self.pls, self.data.X.shape[1]
        if p == 0:
            return np.zeros((pls.cp.q, 0))
        point = point_of(self.data, pls.T, self.state, pls.cp.offsets, joint=True)
        return np.array(row_pass(self.data, point).cp.ZtWXy[:, :p])

    def _pirls(self, start: PirlsState, theta, *, joint: bool) -> PirlsState:
        """PIRLS from the previous mode; if that fails, once more from the family's start.

        The previous mode's random effects can still be far from the new mode's (a
        trial point far from the last one, or a theta that leaves its bound, where the
        previous u is kept: ``same_effects``); an eta of 20 or more makes weights
        (exp(eta) for Poisson) whose first system is numerically singular. The family's
        start (mustart) is the one every fit begins from.
        """
        try:
            return pirls(self.pls, self.data, start, theta, joint=joint)
        except NumericalError:
            if start.from_start:
                raise
            fresh = PirlsState(np.zeros_like(start.u), start.beta, self.eta0, from_start=True)
            return pirls(self.pls, self.data, fresh, theta, joint=joint)

    # -- queries ----------------------------------------------------------------------
    def eta(self) -> np.ndarray:
        """The linear predictor at the mode, on all rows (n-long: for results only)."""
        return linear_predictor(self.data, self.pls.T, self.state, self.pls.cp.offsets)

    def mu(self) -> np.ndarray:
        return self.data.family.link.linkinv(self.eta())

    def conditional_deviance(self) -> float:
        """sum of deviance residuals at the mode (lme4's deviance() of a GLMM).

        PIRLS's last pass already summed them at this mode (same kernel, same chunks).
        """
        if self.state.at_mode is not None:
            return self.state.at_mode.dev
        return deviance(self.data, point_of(self.data, self.pls.T, self.state,
                                            self.pls.cp.offsets, joint=True))

    def minus2_loglik_conditional(self) -> float:
        """-2 sum log p(y | mu) at the mode (R's family aic; with the dispersion dev / sum(w))."""
        d, dev = self.data, self.conditional_deviance()
        if self.saturated is not None:
            return dev - 2.0 * self.saturated
        return float(d.family.aic(d.y, self.mu(), d.prior_w, dev))

    def laplace(self) -> float:
        """-2 log L by Laplace: -2 sum log p(y | mu) + |u|^2 + log|L|^2."""
        u = self.state.u
        return float(self.minus2_loglik_conditional() + u @ u + self.pls.ldL2)

    def deviance(self) -> float:
        """The criterion of the current stage: Laplace, or AGQ when nagq > 1 in stage 2."""
        if self.nagq > 1 and not self.joint:
            from .agq import agq_deviance

            return agq_deviance(self)
        return self.laplace()

    def stage1(self, theta) -> float:
        self.update_stage1(theta)
        return self.laplace()

    def stage2(self, params) -> float:
        self.update_stage2(params)
        value = self.deviance()
        self.tangent.add_mode(self.pls, self.state.u, params, value, self._zt_wx)
        return value


# Stage 1 only starts stage 2 (unless nagq == 0), so it can stop early; stage 2 stops at
# moderate tolerances and the convergence check's Newton steps finish it. Measured on the
# GLMM references: the same optimum (log-likelihood to 1e-8, scaled gradient ~1e-10) with
# 40-60% fewer evaluations than tight tolerances in both stages (STAGE2).
# With few parameters stage 2 stops earlier still (STAGE2_LOOSE): the check then takes up
# to three Newton steps and the Hessian again where a step lands far (optimize._polish),
# and where they leave a scaled gradient above optimize.REFINE_SG BOBYQA goes on at
# STAGE2. Measured against STAGE2: on every reference the log-likelihood equal to
# 1.3e-11, fixed effects to 2e-7 SE, theta to 5.4e-8, standard errors to 2.7e-5
# relative (as close to lme4's as before, or closer), evaluations within -12% to +16%;
# on the 10^6-row binomial benchmark 112 evaluations instead of 159 (39 BOBYQA steps
# instead of 118, each of the early ones several PIRLS iterations), the same estimates
# to 1e-10. The second Hessian costs P^2 + P evaluations, so beyond LOOSE_MAX_PARAMS
# (P^2 + P = 42) the tail of BOBYQA it replaces is the cheaper.
STAGE1_START_ONLY = {"ftol_abs": 1e-6, "xtol_abs": 1e-4}
STAGE2 = {"ftol_abs": 1e-8, "xtol_abs": 1e-6}
STAGE2_LOOSE = {"ftol_abs": 1e-6, "xtol_abs": 1e-4}
LOOSE_MAX_PARAMS = 6
# When stage 1 only starts stage 2, it runs on every k-th row of large data: stage 2 then
# converges to the same optimum on all rows (1.4M-row binomial: stage 1 took 19 of 48 s).
STAGE1_MAX_ROWS = 200_000


def subsample(data: GlmmData, rows: np.ndarray) -> GlmmData:
    """The same model on a subset of the rows (same levels, so the same theta and beta)."""
    terms = tuple(replace(t, codes=np.ascontiguousarray(t.codes[rows]),
                          X=ones_column(len(rows)) if t.z_values is None
                          else np.ascontiguousarray(t.X[rows])) for t in data.plan.terms)
    return GlmmData(data.y[rows], np.ascontiguousarray(data.X[rows]), data.offset[rows],
                    data.prior_w[rows], data.family, CrossprodPlan.from_terms(terms))


def stage1_objective(obj: GlmmObjective) -> tuple[GlmmObjective, float]:
    """The objective stage 1 runs on, and sqrt(n / rows used) to rescale its standard errors."""
    n = obj.data.n
    if obj.nagq == 0 or n <= 2 * STAGE1_MAX_ROWS:
        return obj, 1.0
    rows = np.arange(0, n, -(-n // STAGE1_MAX_ROWS))
    return GlmmObjective(subsample(obj.data, rows), nagq=0), float(np.sqrt(n / rows.shape[0]))


def fit_glmm(obj: GlmmObjective, *, theta0=None, check: bool = True,
             optimizer_options: dict | None = None,
             units: np.ndarray | None = None) -> tuple[OptSummary, OptSummary | None]:
    """Stage 1 over theta; then, unless nagq == 0, stage 2 over (theta, beta).

    ``units``: those of theta (scaling.py); stage 2 adds beta's, from its standard errors.
    """
    lower = obj.pls.theta_map.lower
    start = obj.pls.theta_map.start if theta0 is None else np.asarray(theta0, dtype=np.float64)
    units = np.ones_like(lower) if units is None else units
    final1 = obj.nagq == 0
    opts1 = dict({} if final1 else STAGE1_START_ONLY, **(optimizer_options or {}))
    s1, se_scale = stage1_objective(obj)
    stage1 = minimize_theta(s1.stage1, start, lower, check=check and final1, units=units, **opts1)
    s1.update_stage1(stage1.theta)
    if final1:
        return stage1, None
    p = obj.data.X.shape[1]
    params0 = np.concatenate([stage1.theta, s1.state.beta])
    bounds = np.concatenate([lower, np.full(p, -np.inf)])
    # stage 1 ends near the optimum: lme4's first steps, 0.02 for theta and 0.2 standard
    # errors (from R_X at the stage-1 mode, rescaled to all rows) for beta
    se = np.sqrt(np.diag(s1.pls.vcov_unscaled())) / se_scale
    beta_u = beta_units(se)
    steps = np.concatenate([0.02 * units, 0.2 * np.minimum(se, 10.0 * beta_u)])
    units2 = np.concatenate([units, beta_u])
    loose = check and params0.shape[0] <= LOOSE_MAX_PARAMS
    opts2 = dict((STAGE2_LOOSE if loose else STAGE2) if check else {}, initial_step=steps,
                 **(optimizer_options or {}))
    stage2 = minimize_theta(obj.stage2, params0, bounds, check=check, units=units2,
                            refine=STAGE2 if loose else None, **opts2)
    obj.update_stage2(stage2.theta)
    return stage1, stage2
