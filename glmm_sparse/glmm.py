"""The GLMM objective: Laplace and adaptive Gauss-Hermite deviance, two-stage optimization.

Like lme4: stage 1 (nAGQ = 0) optimizes theta with beta found inside PIRLS; stage 2
optimizes (theta, beta) jointly with PIRLS on u only, the deviance by the Laplace
approximation (nAGQ = 1) or adaptive Gauss-Hermite quadrature (nAGQ > 1, one scalar
random-effects term). All deviances here are -2 log-likelihood including the saturated
part, so Laplace and AGQ values are on the same scale.
"""
from __future__ import annotations

import numpy as np

from .objective import LmmObjective
from .optimize import OptSummary, minimize_theta
from .pirls import GlmmData, PirlsState, factor_at_mode, pirls


class GlmmObjective:
    """Deviance of a GLMM as a function of theta (stage 1) or (theta, beta) (stage 2)."""

    def __init__(self, data: GlmmData, *, nagq: int = 1, factor_mode: str = "measure"):
        self.data = data
        self.nagq = nagq
        fam = data.family
        eta0 = fam.link.linkfun(fam.mustart(data.y, data.prior_w))
        mu0 = fam.link.linkinv(eta0)
        w0 = data.prior_w * fam.link.mu_eta(eta0) ** 2 / fam.variance(mu0)
        cp0 = data.plan.accumulate(w0, np.column_stack([data.X, eta0 - data.offset]))
        self.pls = LmmObjective(cp0, reml=False, factor_mode=factor_mode)
        self.n_theta = self.pls.theta_map.n_theta
        self.state = PirlsState(np.zeros(cp0.q), np.zeros(data.X.shape[1]), eta0, from_start=True)
        self.joint = True  # which PIRLS the factor in self.pls reflects

    # -- updates ----------------------------------------------------------------------
    def update_stage1(self, theta) -> None:
        """PIRLS for (u, beta) at theta, then the factor at the mode."""
        self.state = pirls(self.pls, self.data, self.state, theta, joint=True)
        factor_at_mode(self.pls, self.data, self.state, theta, joint=True)
        self.joint = True

    def update_stage2(self, params) -> None:
        """PIRLS for u at (theta, beta) = params, then the factor at the mode."""
        params = np.asarray(params, dtype=np.float64)
        theta, beta = params[:self.n_theta], params[self.n_theta:]
        start = PirlsState(self.state.u, beta, self.state.eta, from_start=self.state.from_start)
        self.state = pirls(self.pls, self.data, start, theta, joint=False)
        factor_at_mode(self.pls, self.data, self.state, theta, joint=False)
        self.joint = False

    # -- queries ----------------------------------------------------------------------
    def mu(self) -> np.ndarray:
        return self.data.family.link.linkinv(self.state.eta)

    def conditional_deviance(self) -> float:
        """sum of deviance residuals at the mode (lme4's deviance() of a GLMM)."""
        d = self.data
        return float(d.family.dev_resids(d.y, self.mu(), d.prior_w).sum())

    def laplace(self) -> float:
        """-2 log L by Laplace: family aic (-2 sum log p) + |u|^2 + log|L|^2."""
        d, u = self.data, self.state.u
        return float(d.family.aic(d.y, self.mu(), d.prior_w, self.conditional_deviance())
                     + u @ u + self.pls.ldL2)

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
        return self.deviance()


def fit_glmm(obj: GlmmObjective, *, theta0=None, check: bool = True,
             optimizer_options: dict | None = None) -> tuple[OptSummary, OptSummary | None]:
    """Stage 1 over theta; then, unless nagq == 0, stage 2 over (theta, beta)."""
    lower = obj.pls.theta_map.lower
    start = obj.pls.theta_map.start if theta0 is None else np.asarray(theta0, dtype=np.float64)
    opts = optimizer_options or {}
    stage1 = minimize_theta(obj.stage1, start, lower, check=check and obj.nagq == 0, **opts)
    obj.update_stage1(stage1.theta)
    if obj.nagq == 0:
        return stage1, None
    p = obj.data.X.shape[1]
    params0 = np.concatenate([stage1.theta, obj.state.beta])
    bounds = np.concatenate([lower, np.full(p, -np.inf)])
    stage2 = minimize_theta(obj.stage2, params0, bounds, check=check, **opts)
    obj.update_stage2(stage2.theta)
    return stage1, stage2
