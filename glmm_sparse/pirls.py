"""Penalized iteratively reweighted least squares: the conditional modes of a GLMM.

For fixed theta (and, in the second stage, fixed beta) PIRLS finds the u (and beta)
maximizing the penalized log-likelihood. Each iteration is the PLS solve of the LMM
engine (same CHOLMOD analysis) on the cross-products at the current point, then one
streamed pass over the rows at the proposed point (``rowpass.row_pass``: eta, working
weights and response, deviance and cross-products chunk by chunk, nothing n-long).
Steps that do not lower the penalized deviance are halved, in (u, beta).
Frozen inputs (``GlmmData``) are kept apart from the iterates (``PirlsState``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._core import _crossprod
from .crossprod import CrossprodPlan
from .errors import NumericalError
from .families import Family
from .objective import LmmObjective
from .rowpass import PassResult, Point, kernel_codes, row_pass, term_effects

__all__ = ["GlmmData", "PirlsState", "deviance", "factor_at_mode", "kernel_codes", "pirls",
           "same_effects"]

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

    @classmethod
    def from_frame(cls, frame, family: Family, *, y: np.ndarray | None = None,
                   prior_w: np.ndarray | None = None,
                   plan: CrossprodPlan | None = None) -> GlmmData:
        """A model frame's GLMM inputs: no offset is zeros, no weights are ones; ``y``,
        ``prior_w`` (the caller's own, if it made them) and ``plan`` replace the frame's."""
        n = frame.n
        if prior_w is None:
            prior_w = np.ones(n) if frame.weights is None else frame.weights
        return cls(frame.y if y is None else y, frame.X,
                   np.zeros(n) if frame.offset is None else frame.offset, prior_w, family,
                   CrossprodPlan.from_terms(frame.terms) if plan is None else plan)


@dataclass
class PirlsState:
    """The iterates: spherical random effects u and fixed effects beta.

    eta = offset + X beta + Z Lambda u is recomputed chunk by chunk by each pass
    (rowpass.py), never held; only the family's start (``from_start``) is a given eta.
    """

    u: np.ndarray
    beta: np.ndarray
    eta: np.ndarray | None = None  # the family's start when from_start, else None
    iterations: int = 0
    from_start: bool = False
    at_mode: PassResult | None = None  # the last pass, at (u, beta)


def same_effects(u: np.ndarray, T_old: list[np.ndarray], T_new: list[np.ndarray],
                 offsets) -> np.ndarray:
    """The u whose random effects under T_new are those of u under T_old: Lambda_new u' =
    Lambda_old u, term by term (a term whose T_new is singular keeps its u).

    PIRLS's warm start at a new theta. The modes b = Lambda u are pinned by the data and
    move little with theta, while u = Lambda^-1 b moves in proportion to 1 / theta: from
    the previous mode's b the first Newton step is smaller, and PIRLS needs fewer
    iterations.
    """
    out = u.copy()
    for t, (To, Tn) in enumerate(zip(T_old, T_new)):
        diag = np.diagonal(Tn)
        if not np.all(diag != 0.0):
            continue
        k = Tn.shape[0]
        blk = slice(offsets[t], offsets[t + 1])
        if k == 1:
            out[blk] = u[blk] * (To[0, 0] / Tn[0, 0])
        else:  # per level: u' = T_new^-1 T_old u
            out[blk] = np.linalg.solve(Tn, To @ u[blk].reshape(-1, k).T).T.ravel()
    return out


def point_of(data: GlmmData, T: list[np.ndarray], state: PirlsState, offsets, *,
             joint: bool) -> Point:
    """Where the rows are evaluated for a state: its (beta, Lambda u), or its given eta."""
    if state.eta is not None:
        return Point(state.beta, (), joint, state.eta)
    return Point(state.beta, term_effects(data.plan.terms, T, state.u, offsets), joint)


def linear_predictor(data: GlmmData, T: list[np.ndarray], state: PirlsState, offsets) -> np.ndarray:
    """eta on all rows, with the roundings of the passes (for fitted values, mu)."""
    if state.eta is not None:
        return state.eta
    eta = np.add(data.offset, data.X @ state.beta)
    for t, bt in zip(data.plan.terms, term_effects(data.plan.terms, T, state.u, offsets)):
        _crossprod.add_term_times(t.codes, t.z_values, bt, eta)
    return eta


def deviance(data: GlmmData, point: Point) -> float:
    """sum of deviance residuals at mu = linkinv(eta): a pass without cross-products."""
    return row_pass(data, point, accumulate=False).dev


def penalized_working(data: GlmmData, point: Point, u: np.ndarray) -> tuple[PassResult, float]:
    """One pass at point (deviance, cross-products) and the penalized deviance
    sum(devres) + |u|^2."""
    res = row_pass(data, point)
    return res, res.dev + float(u @ u)


def check_weights(res: PassResult, theta, family: Family) -> None:
    """PIRLS cannot go on from weights that are not finite."""
    if res.nonfinite_w:
        raise NumericalError("PIRLS weights are not finite (the linear predictor diverged)"
                             f"{divergence_hint(res.max_abs_eta, np.inf, family, 1)}",
                             theta=np.asarray(theta))


def factor_at_mode(pls: LmmObjective, data: GlmmData, state: PirlsState, theta, joint: bool) -> None:
    """Cross-products and factor at the weights of the mode (for log|L|^2, R_X, condVar):
    those of PIRLS's last pass, or a new pass when that one had the other right-hand side."""
    pls.set_theta(theta)
    res = state.at_mode
    if res is None or res.cp is None or res.joint != joint:
        res = row_pass(data, point_of(data, pls.T, state, pls.cp.offsets, joint=joint))
    check_weights(res, theta, data.family)
    pls.set_crossproducts(res.cp)
    pls.update_L_RZX()
    if joint:
        pls.update_RX()


def pirls(pls: LmmObjective, data: GlmmData, state: PirlsState, theta, *, joint: bool) -> PirlsState:
    """Conditional modes at theta: of u given beta, or of (u, beta) jointly (nAGQ = 0).

    The pass at each accepted point serves twice: its deviance decides the step, its
    cross-products make the next system (and, at convergence, the factor at the mode).
    """
    offsets = pls.cp.offsets
    pls.set_theta(theta)
    u, beta = state.u, state.beta
    start = state if state.from_start else PirlsState(u, beta)
    cur, pdev = penalized_working(data, point_of(data, pls.T, start, offsets, joint=joint), u)
    newton = data.family.link.name == data.family.canonical
    for it in range(1, MAX_ITER + 1):
        check_weights(cur, theta, data.family)
        pls.set_crossproducts(cur.cp)
        pls.update_L_RZX()
        if joint:
            pls.update_RX()
            beta_new, u_new = pls.beta(), pls.u()
        else:
            beta_new, u_new = beta, pls.factor.solve("Pt", pls.factor.solve("Lt", pls.RZXy[:, 0]))
        u_new, beta_new, nxt, pdev_new = _halve(
            data, (pls.T, offsets, joint), (u, beta, cur, pdev), (u_new, beta_new),
            it == 1 and state.from_start, theta, it)
        step = _step_size(u, u_new, beta, beta_new)
        scale = 1.0 + max(np.max(np.abs(u_new), initial=0.0), np.max(np.abs(beta_new), initial=0.0))
        step_tol = NEWTON_STEP_TOL if newton else STEP_TOL
        converged = abs(pdev - pdev_new) < TOL * (0.1 + abs(pdev_new)) and step < step_tol * scale
        u, beta, cur, pdev = u_new, beta_new, nxt, pdev_new
        if converged:
            return PirlsState(u, beta, None, it, at_mode=cur)
    raise NumericalError(f"PIRLS did not converge in {MAX_ITER} iterations (penalized "
                         f"deviance {pdev:.6g}, last step {step:.3g} in (u, beta))"
                         f"{divergence_hint(cur.max_abs_eta, pdev, data.family, data.n)}",
                         theta=np.asarray(theta))


def _step_size(u0, u1, b0, b1) -> float:
    return max(np.max(np.abs(u1 - u0), initial=0.0), np.max(np.abs(b1 - b0), initial=0.0))


# Links whose mean reaches the edge of its range (0, or 0 and 1) as |eta| grows past ~30.
EDGE_LINKS = ("logit", "probit", "cloglog", "cauchit", "log")


def divergence_hint(largest: float, pdev: float, family: Family, n: int) -> str:
    """Why PIRLS may not settle, when the linear predictor runs off (``largest``: max |eta|
    of the passes) or the fit is exact."""
    runs_off = family.link.name in EDGE_LINKS and largest > 30
    if not (pdev < 1e-8 * max(n, 1) or runs_off):
        return ""
    return ("; the fitted values approach the edge of the family's range (|eta| up to "
            f"{largest:.3g}): the maximum-likelihood estimates are "
            "infinite, typically complete separation (a fixed-effect predictor splits the "
            "0s from the 1s, or all counts of a category are 0), or an offset far outside "
            "the link's range; remove or merge the separating predictor or categories, or "
            "check the offset")


def _halve(data, lam, old, new, accept_first: bool, theta, iteration: int):
    """Step from old towards new, halving (u, beta) until the penalized deviance does not
    rise; ``lam`` = (T, offsets, joint) turn (u, beta) into the rows' point.

    The first step from the family's starting values is taken whole: that start is not
    of the form X beta + Z Lambda u, so its penalized deviance is no yardstick. Returns
    the accepted (u, beta), its pass and penalized deviance.
    """
    T, offsets, joint = lam
    u0, b0, cur, pdev0 = old
    u1, b1 = new
    largest = cur.max_abs_eta
    for _ in range(MAX_HALVINGS):
        res, pdev1 = penalized_working(data, point_of(data, T, PirlsState(u1, b1), offsets,
                                                      joint=joint), u1)
        if np.isfinite(pdev1) and (accept_first or pdev1 <= pdev0 + 1e-12 * (1 + abs(pdev0))):
            return u1, b1, res, pdev1
        largest = max(largest, res.max_abs_eta)
        u1, b1 = 0.5 * (u0 + u1), 0.5 * (b0 + b1)
    hint = divergence_hint(largest, pdev0, data.family, data.n)
    raise NumericalError(f"PIRLS iteration {iteration}: the penalized deviance did not decrease "
                         f"from {pdev0:.6g}{hint}; the proposed step of "
                         f"{_step_size(u0, new[0], b0, new[1]):.3g} in (u, beta) failed in "
                         f"{MAX_HALVINGS} step halvings", theta=np.asarray(theta))
