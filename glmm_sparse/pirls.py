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

from ._core import _glm
from .crossprod import CrossprodPlan, add_z_times
from .errors import NumericalError
from .families import Family
from .objective import LmmObjective
from .parallel import row_chunks, run_all

MAX_ITER = 200
MAX_HALVINGS = 30
TOL = 1e-10  # relative change of the penalized deviance at convergence
STEP_TOL = 1e-10  # and of (u, beta): derivatives of the deviance by finite differences need
# the mode to ~1e-10, while a 1e-10 change in the deviance still allows errors of ~1e-5
# Canonical links make PIRLS Newton's method: after a step below 1e-7 (relative) the
# error is ~1e-14, so the confirming iteration is skipped: 21% fewer iterations. Measured
# against STEP_TOL on the references: log-likelihood equal to 5e-13, fixed effects to
# 1e-10, standard errors to 1.2e-6 relative (the Hessian's finite differences amplify the
# mode's error by 1/h^2; a threshold of 1e-5 moved them by 2e-5 and was not taken).
NEWTON_STEP_TOL = 1e-7


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
    working: "Working | None" = None  # the per-row quantities at eta, when known


def z_lambda(data: GlmmData, T: list[np.ndarray], u: np.ndarray, offsets, out: np.ndarray) -> np.ndarray:
    """out += Z Lambda u: b = Lambda u per term (q values), then Z b through the codes."""
    terms = data.plan.terms
    b = np.concatenate([(u[offsets[i]:offsets[i + 1]].reshape(t.nlev, t.k) @ Tt.T).ravel()
                        for i, (t, Tt) in enumerate(zip(terms, T))])
    return add_z_times(terms, b, offsets, out)


def linear_predictor(data: GlmmData, fixed: np.ndarray, T, u, offsets, X_beta=None) -> np.ndarray:
    """eta = fixed (+ X beta) + Z Lambda u."""
    eta = fixed.copy() if X_beta is None else fixed + X_beta
    return z_lambda(data, T, u, offsets, eta)


def kernel_codes(family: Family) -> tuple[int, int]:
    """The compiled kernel's codes of a family and its link."""
    return _glm.FAMILY_CODES[family.name], _glm.LINK_CODES[family.link.name]


@dataclass(frozen=True, eq=False)
class Working:
    """PIRLS's per-row quantities at one linear predictor, from one compiled pass."""

    eta: np.ndarray
    mu: np.ndarray
    w: np.ndarray  # prior_w (dmu/deta)^2 / V(mu)
    resid: np.ndarray  # (y - mu) / (dmu/deta)
    dev: float  # sum of deviance residuals


def working_at(data: GlmmData, eta: np.ndarray) -> Working:
    """mu, weights, working residuals and the deviance at eta (tested against families.py).

    Row chunks run in parallel; their deviances are added in chunk order.
    """
    mu, w, resid = np.empty(data.n), np.empty(data.n), np.empty(data.n)
    codes = kernel_codes(data.family)

    def chunk(sl):
        return lambda: _glm.working(*codes, data.y[sl], data.prior_w[sl], eta[sl], mu[sl],
                                    w[sl], resid[sl])

    parts = run_all([chunk(sl) for sl in row_chunks(data.n)], data.n)
    return Working(eta, mu, w, resid, float(sum(parts)))


def usable_weights(wk: Working, theta, family: Family) -> np.ndarray:
    if not np.all(np.isfinite(wk.w)):
        raise NumericalError("PIRLS weights are not finite (the linear predictor diverged)"
                             f"{divergence_hint(wk.eta, np.inf, family)}", theta=np.asarray(theta))
    return wk.w


def deviance(data: GlmmData, eta: np.ndarray) -> float:
    """sum of deviance residuals at mu = linkinv(eta): the chunked sum of working_at."""
    codes = kernel_codes(data.family)
    parts = run_all([lambda sl=sl: _glm.deviance(*codes, data.y[sl], data.prior_w[sl], eta[sl])
                     for sl in row_chunks(data.n)], data.n)
    return float(sum(parts))


def penalized_working(data: GlmmData, eta: np.ndarray, u: np.ndarray) -> tuple[Working, float]:
    """The working quantities at eta and the penalized deviance sum(devres) + |u|^2."""
    wk = working_at(data, eta)
    return wk, wk.dev + float(u @ u)


def factor_at_mode(pls: LmmObjective, data: GlmmData, state: PirlsState, theta, joint: bool) -> None:
    """Cross-products and factor at the weights of the mode (for log|L|^2, R_X, condVar)."""
    wk = state.working if state.working is not None else working_at(data, state.eta)
    fixed = data.offset + (0.0 if joint else data.X @ state.beta)
    z = state.eta - fixed + wk.resid
    rhs = np.column_stack([data.X, z]) if joint else z[:, None]
    pls.set_crossproducts(data.plan.accumulate(usable_weights(wk, theta, data.family), rhs))
    pls.set_theta(theta)
    pls.update_L()
    pls.update_RZX()
    if joint:
        pls.update_RX()


def pirls(pls: LmmObjective, data: GlmmData, state: PirlsState, theta, *, joint: bool) -> PirlsState:
    """Conditional modes at theta: of u given beta, or of (u, beta) jointly (nAGQ = 0)."""
    offsets = pls.cp.offsets
    pls.set_theta(theta)
    fixed = data.offset if joint else data.offset + data.X @ state.beta
    u, beta = state.u, state.beta
    eta = state.eta if state.from_start else linear_predictor(
        data, fixed, pls.T, u, offsets, data.X @ beta if joint else None)
    cur, pdev = penalized_working(data, eta, u)
    p = data.X.shape[1] if joint else 0
    newton = data.family.link.name == data.family.canonical
    rhs = np.empty((data.n, p + 1))  # [X z]: X written once, z every iteration
    rhs[:, :p] = data.X[:, :p]
    for it in range(1, MAX_ITER + 1):
        np.subtract(cur.eta, fixed, out=rhs[:, p])
        rhs[:, p] += cur.resid
        pls.set_crossproducts(data.plan.accumulate(usable_weights(cur, theta, data.family), rhs))
        pls.update_L()
        pls.update_RZX()
        if joint:
            pls.update_RX()
            beta_new, u_new = pls.beta(), pls.u()
        else:
            beta_new, u_new = beta, pls.factor.solve("Pt", pls.factor.solve("Lt", pls.RZXy[:, 0]))
        eta_new = linear_predictor(data, fixed, pls.T, u_new, offsets,
                                   data.X @ beta_new if joint else None)
        u_new, beta_new, nxt, pdev_new = _halve(data, (u, beta, cur, pdev),
                                                (u_new, beta_new, eta_new),
                                                it == 1 and state.from_start, theta, it)
        step = max(np.max(np.abs(u_new - u), initial=0.0), np.max(np.abs(beta_new - beta), initial=0.0))
        scale = 1.0 + max(np.max(np.abs(u_new), initial=0.0), np.max(np.abs(beta_new), initial=0.0))
        step_tol = NEWTON_STEP_TOL if newton else STEP_TOL
        converged = abs(pdev - pdev_new) < TOL * (0.1 + abs(pdev_new)) and step < step_tol * scale
        u, beta, cur, pdev = u_new, beta_new, nxt, pdev_new
        if converged:
            return PirlsState(u, beta, cur.eta, it, working=cur)
    raise NumericalError(f"PIRLS did not converge in {MAX_ITER} iterations (penalized "
                         f"deviance {pdev:.6g}, last step {step:.3g} in (u, beta))"
                         f"{divergence_hint(cur.eta, pdev, data.family)}", theta=np.asarray(theta))


def _step_size(u0, u1, b0, b1) -> float:
    return max(np.max(np.abs(u1 - u0), initial=0.0), np.max(np.abs(b1 - b0), initial=0.0))


# Links whose mean reaches the edge of its range (0, or 0 and 1) as |eta| grows past ~30.
EDGE_LINKS = ("logit", "probit", "cloglog", "cauchit", "log")


def divergence_hint(eta: np.ndarray, pdev: float, family: Family) -> str:
    """Why PIRLS may not settle, when the linear predictor runs off or the fit is exact."""
    largest = float(np.max(np.abs(eta), initial=0.0))
    runs_off = family.link.name in EDGE_LINKS and largest > 30
    if not (pdev < 1e-8 * max(eta.shape[0], 1) or runs_off):
        return ""
    return ("; the fitted values approach the edge of the family's range (|eta| up to "
            f"{largest:.3g}): the maximum-likelihood estimates are "
            "infinite, typically complete separation (a fixed-effect predictor splits the "
            "0s from the 1s, or all counts of a category are 0), or an offset far outside "
            "the link's range; remove or merge the separating predictor or categories, or "
            "check the offset")


def _halve(data, old, new, accept_first: bool, theta, iteration: int):
    """Step from old towards new, halving until the penalized deviance does not rise.

    The first step from the family's starting values is taken whole: that start is not
    of the form X beta + Z Lambda u, so its penalized deviance is no yardstick. Returns
    the accepted (u, beta), its working quantities and penalized deviance.
    """
    u0, b0, cur, pdev0 = old
    u1, b1, e1 = new
    for _ in range(MAX_HALVINGS):
        wk, pdev1 = penalized_working(data, e1, u1)
        if np.isfinite(pdev1) and (accept_first or pdev1 <= pdev0 + 1e-12 * (1 + abs(pdev0))):
            return u1, b1, wk, pdev1
        u1, b1, e1 = 0.5 * (u0 + u1), 0.5 * (b0 + b1), 0.5 * (cur.eta + e1)
    hint = divergence_hint(np.concatenate([cur.eta, new[2]]), pdev0, data.family)
    raise NumericalError(f"PIRLS iteration {iteration}: the penalized deviance did not decrease "
                         f"from {pdev0:.6g}{hint}; the proposed step of "
                         f"{_step_size(u0, new[0], b0, new[1]):.3g} in (u, beta) failed in "
                         f"{MAX_HALVINGS} step halvings", theta=np.asarray(theta))
