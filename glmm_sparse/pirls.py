"""Penalized iteratively reweighted least squares: the conditional modes of a GLMM.

For fixed theta (and, in the second stage, fixed beta) PIRLS finds the u (and beta)
maximizing the penalized log-likelihood. Each iteration is one weighted pass over the
rows that refreshes the values of the cross-products on their fixed block structure
(``CrossprodPlan.accumulate``), then the PLS solve of the LMM engine on the same
CHOLMOD analysis. Steps that do not lower the penalized deviance are halved.
Frozen inputs (``GlmmData``) are kept apart from the iterates (``PirlsState``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .crossprod import CrossprodPlan
from .errors import NumericalError
from .families import Family
from .objective import LmmObjective

MAX_ITER = 200
MAX_HALVINGS = 30
TOL = 1e-10  # relative change of the penalized deviance at convergence
STEP_TOL = 1e-10  # and of (u, beta): derivatives of the deviance by finite differences need
# the mode to ~1e-10, while a 1e-10 change in the deviance still allows errors of ~1e-5


@dataclass(frozen=True, eq=False)
class GlmmData:
    """What PIRLS reads and never changes: response, X, offset, prior weights, family, Z."""

    y: np.ndarray
    X: np.ndarray
    offset: np.ndarray
    prior_w: np.ndarray
    family: Family
    plan: CrossprodPlan

    @property
    def n(self) -> int:
        return self.y.shape[0]


@dataclass
class PirlsState:
    """The iterates: spherical random effects u, fixed effects beta, linear predictor eta."""

    u: np.ndarray
    beta: np.ndarray
    eta: np.ndarray
    iterations: int = 0
    from_start: bool = False  # eta comes from the family's mustart, not from (u, beta)


def z_lambda(data: GlmmData, T: list[np.ndarray], u: np.ndarray, offsets) -> np.ndarray:
    """Z Lambda u through the terms' codes (n,)."""
    out = np.zeros(data.n)
    for i, (t, Tt) in enumerate(zip(data.plan.terms, T)):
        b = (u[offsets[i]:offsets[i + 1]].reshape(t.nlev, t.k)) @ Tt.T
        out += np.einsum("ij,ij->i", t.X, b[t.codes])
    return out


def working_quantities(data: GlmmData, eta: np.ndarray):
    """mu, PIRLS weights prior_w (dmu/deta)^2 / V(mu) and the working residual (y - mu) / mu_eta."""
    fam = data.family
    mu = fam.link.linkinv(eta)
    mu_eta = fam.link.mu_eta(eta)
    var = fam.variance(mu)
    w = data.prior_w * mu_eta**2 / var
    if not np.all(np.isfinite(w)):
        raise NumericalError("PIRLS weights are not finite (the linear predictor diverged)")
    return mu, w, (data.y - mu) / mu_eta


def penalized_deviance(data: GlmmData, eta: np.ndarray, u: np.ndarray) -> float:
    """sum of deviance residuals + |u|^2."""
    mu = data.family.link.linkinv(eta)
    return float(data.family.dev_resids(data.y, mu, data.prior_w).sum() + u @ u)


def factor_at_mode(pls: LmmObjective, data: GlmmData, state: PirlsState, theta, joint: bool) -> None:
    """Cross-products and factor at the weights of the mode (for log|L|^2, R_X, condVar)."""
    _, w, resid = working_quantities(data, state.eta)
    fixed = data.offset + (0.0 if joint else data.X @ state.beta)
    z = state.eta - fixed + resid
    pls.set_crossproducts(data.plan.accumulate(w, np.column_stack([data.X, z]) if joint else z[:, None]))
    pls.set_theta(theta)
    pls.update_L()
    pls.update_RZX()
    if joint:
        pls.update_RX()


def pirls(pls: LmmObjective, data: GlmmData, state: PirlsState, theta, *, joint: bool) -> PirlsState:
    """Conditional modes at theta: of u given beta, or of (u, beta) jointly (nAGQ = 0)."""
    offsets = pls.cp.offsets
    pls.set_theta(theta)
    fixed = data.offset + (0.0 if joint else data.X @ state.beta)
    u, beta = state.u, state.beta
    eta = state.eta if state.from_start else (
        fixed + z_lambda(data, pls.T, u, offsets) + (data.X @ beta if joint else 0.0))
    pdev = penalized_deviance(data, eta, u)
    p = data.X.shape[1] if joint else 0
    rhs = np.empty((data.n, p + 1))  # [X z]: X written once, z every iteration
    rhs[:, :p] = data.X[:, :p]
    for it in range(1, MAX_ITER + 1):
        _, w, resid = working_quantities(data, eta)
        np.subtract(eta, fixed, out=rhs[:, p])
        rhs[:, p] += resid
        pls.set_crossproducts(data.plan.accumulate(w, rhs))
        pls.update_L()
        pls.update_RZX()
        if joint:
            pls.update_RX()
            beta_new, u_new = pls.beta(), pls.u()
        else:
            beta_new, u_new = beta, pls.factor.solve("Pt", pls.factor.solve("Lt", pls.RZXy[:, 0]))
        eta_new = fixed + z_lambda(data, pls.T, u_new, offsets) + (data.X @ beta_new if joint else 0.0)
        u_new, beta_new, eta_new, pdev_new = _halve(data, (u, beta, eta, pdev),
                                                    (u_new, beta_new, eta_new),
                                                    it == 1 and state.from_start, theta, it)
        step = max(np.max(np.abs(u_new - u), initial=0.0), np.max(np.abs(beta_new - beta), initial=0.0))
        scale = 1.0 + max(np.max(np.abs(u_new), initial=0.0), np.max(np.abs(beta_new), initial=0.0))
        converged = abs(pdev - pdev_new) < TOL * (0.1 + abs(pdev_new)) and step < STEP_TOL * scale
        u, beta, eta, pdev = u_new, beta_new, eta_new, pdev_new
        if converged:
            return PirlsState(u, beta, eta, it)
    raise NumericalError(f"PIRLS did not converge in {MAX_ITER} iterations (penalized "
                         f"deviance {pdev:.6g})", theta=np.asarray(theta))


def _halve(data, old, new, accept_first: bool, theta, iteration: int):
    """Step from old towards new, halving until the penalized deviance does not rise.

    The first step from the family's starting values is taken whole: that start is not
    of the form X beta + Z Lambda u, so its penalized deviance is no yardstick.
    """
    u0, b0, e0, pdev0 = old
    u1, b1, e1 = new
    for _ in range(MAX_HALVINGS):
        pdev1 = penalized_deviance(data, e1, u1)
        if np.isfinite(pdev1) and (accept_first or pdev1 <= pdev0 + 1e-12 * (1 + abs(pdev0))):
            return u1, b1, e1, pdev1
        u1, b1, e1 = 0.5 * (u0 + u1), 0.5 * (b0 + b1), 0.5 * (e0 + e1)
    raise NumericalError(f"PIRLS iteration {iteration}: the penalized deviance did not decrease "
                         f"from {pdev0:.6g} in {MAX_HALVINGS} step halvings", theta=np.asarray(theta))
