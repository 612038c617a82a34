"""Where PIRLS starts in stage 2: the best mode so far moved to first order in (theta, beta).

Sits between the optimizer and PIRLS (glmm.py): each stage-2 evaluation leaves a mode
u(theta, beta) and the factor of M = Lambda'Z'WZ Lambda + I at its weights. The mode
solves G(u) = Lambda' Z' r(eta) - u = 0, eta = offset + X beta + Z Lambda u, where r is
the weighted working residual and dG/du = -M (Fisher scoring's M; the exact Jacobian
for canonical links). The implicit function theorem then gives the derivatives of the
random effects b = Lambda u at the mode, column by column of a q x (P) matrix D:

    db/dtheta_j = Lambda M^-1 (Lambda_j' Lambda'^-1 u + Lambda^-1 Lambda_j u)
    db/dbeta    = -Lambda M^-1 Lambda' Z'W X

(Lambda_j = dLambda/dtheta_j: one entry of one T_t per level; Lambda' Z' r = u at the
mode turned the first column's Z' r into Lambda'^-1 u). One solve with P right-hand
sides and the factor that is already there, at each new best mode. The next
evaluation starts from b + D (params - params_mode), turned into u by the new T_t: its
error is second order in the step for canonical links, so near the optimum (BOBYQA's
last steps, the convergence check's differences) one Newton step reaches the mode instead
of two. (For other links M holds Fisher's weights, not the Jacobian's: the prediction's
error is first order, smaller than the previous mode's, and PIRLS still decides.)

Z'WX is not in stage 2's passes (their right-hand side is the working response only,
rowpass.py): it is taken from one pass with X at a mode and refreshed by another when
a new best point is more than REFRESH (in b) from where it was taken; its weights only
need to be close, since they only move the start.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .memory import memory_budget

__all__ = ["MEMORY_SHARE", "REFRESH", "TRUST", "Anchor", "ModeTangent", "tangent_bytes"]

# Predicted change in b (linear-predictor units) beyond which Z'WX is retaken at a new
# best mode (its weights' error times the step is the prediction's first-order error).
# On the binomial benchmark 1e-3 retook it 11 times, 1e-4 17 times, with the same PIRLS
# iterations and estimates.
REFRESH = 1e-3
# and beyond which a prediction is not used (the previous mode's b is the start then:
# BOBYQA's first steps move b by 0.003-0.03 on the binomial benchmark; profiles, whose
# points never beat the optimum, go further from it than from their previous point)
TRUST = 0.1
# Share of the memory budget (memory.py) the tangent may take; above it there is none
MEMORY_SHARE = 0.1


def tangent_bytes(q: int, n_params: int, p: int) -> int:
    """Bytes the tangent holds and needs at its peak: D and Z'WX, and while D is made the
    right-hand sides (and their concatenation), the solve's result and Lambda times it."""
    return 8 * q * (5 * n_params + p + 1)


@dataclass(frozen=True, eq=False)
class Anchor:
    """A mode and its tangent: params = (theta, beta), b = Lambda u, D = db/dparams."""

    params: np.ndarray
    b: np.ndarray
    D: np.ndarray
    value: float

    def displacement(self, params: np.ndarray, since: np.ndarray | None = None) -> float:
        """max |D (params - since)|: how far b moves, to first order, from ``since``
        (default: the anchor's own params) to params."""
        origin = self.params if since is None else since
        return float(np.max(np.abs(self.D @ (params - origin)), initial=0.0))


def nonsingular(T: list[np.ndarray]) -> bool:
    """Whether every T_t (lower triangular) is nonsingular, so that b = Lambda u gives u."""
    return all(np.all(np.diagonal(Tt) != 0.0) for Tt in T)


def level_blocks(v: np.ndarray, offsets, ks) -> list[np.ndarray]:
    """Views of a length-q vector (or q x m array) per term: (nlev, k) (or (nlev, k, m))."""
    tail = v.shape[1:]
    return [v[offsets[t]:offsets[t + 1]].reshape((offsets[t + 1] - offsets[t]) // k, k, *tail)
            for t, k in enumerate(ks)]


def theta_columns(theta_map, T: list[np.ndarray], u: np.ndarray, offsets) -> np.ndarray:
    """Lambda_j' Lambda'^-1 u + Lambda^-1 Lambda_j u for every theta_j, q x n_theta
    (every T_t nonsingular)."""
    R = np.zeros((u.shape[0], theta_map.n_theta))
    j = 0
    for t, (Tt, U) in enumerate(zip(T, level_blocks(u, offsets, theta_map.ks))):
        Tinv = np.linalg.inv(Tt)
        UT = U @ Tinv  # row g: (T'^-1 u_g)'
        out = level_blocks(R, offsets, theta_map.ks)[t]  # (nlev, k, n_theta) view of R
        for r, c in zip(theta_map.rows[t], theta_map.cols[t]):
            out[:, :, j] = U[:, c, None] * Tinv[:, r]  # T^-1 E_rc u_g
            out[:, c, j] += UT[:, r]  # E_rc' T'^-1 u_g
            j += 1
    return R


def lambda_t(T: list[np.ndarray], A: np.ndarray, offsets, ks) -> np.ndarray:
    """Lambda' A for a q x m array A: T_t' A_g per level."""
    out = np.empty_like(A)
    for Tt, blk, dst in zip(T, level_blocks(A, offsets, ks), level_blocks(out, offsets, ks)):
        np.einsum("ji,gjm->gim", Tt, blk, out=dst)
    return out


def lambda_times(T: list[np.ndarray], Y: np.ndarray, offsets, ks) -> np.ndarray:
    """Lambda Y for a q x m array Y: T_t Y_g per level."""
    out = np.empty_like(Y)
    for Tt, blk, dst in zip(T, level_blocks(Y, offsets, ks), level_blocks(out, offsets, ks)):
        np.einsum("ij,gjm->gim", Tt, blk, out=dst)
    return out


class ModeTangent:
    """The best stage-2 mode so far with its tangent, and the Z'WX it uses.

    Only the best: BOBYQA's trial points lie around its best point, the convergence
    check's around the optimum. (Keeping the last mode too, the nearer one predicting,
    gave the same PIRLS iterations on the 10^6-row binomial benchmark, and its tangent
    cost 17 ms at every evaluation.)
    """

    def __init__(self, theta_map, offsets):
        self.theta_map = theta_map
        self.offsets = offsets
        self.best: Anchor | None = None
        self.ZtWX: np.ndarray | None = None
        self.ZtWX_params: np.ndarray | None = None
        self.fits: bool | None = None  # within MEMORY_SHARE (decided at the first mode)

    def add_mode(self, pls, u: np.ndarray, params: np.ndarray, value: float, zt_wx) -> None:
        """Offer the mode u at params with its criterion value (pls: the LMM objective
        holding M's factor at the mode's weights, and T); kept, with its tangent, if it
        is the best so far. ``zt_wx()`` gives Z'WX (q x p) at this mode (one pass with X),
        called when it is due. (A callable passed in, not held: held, a bound method of
        the GLMM objective would make a reference cycle that keeps its data,
        memory-mapped rows included, until the garbage collector runs.)"""
        if self.best is not None and not value < self.best.value:
            return
        params = np.array(params, dtype=np.float64)
        T, ks, offs = pls.T, self.theta_map.ks, self.offsets
        if self.fits is None:
            p = params.shape[0] - self.theta_map.n_theta
            self.fits = tangent_bytes(u.shape[0], params.shape[0], p) <= (
                MEMORY_SHARE * memory_budget())
        if not self.fits:
            return  # too large for its share of memory: the previous mode's b serves
        if not nonsingular(T):
            return  # a term at its bound: b does not determine u, no tangent
        if self.ZtWX is None or self._far(params):
            self.ZtWX, self.ZtWX_params = zt_wx(), params
        R = np.concatenate([theta_columns(self.theta_map, T, u, offs),
                            -lambda_t(T, self.ZtWX, offs, ks)], axis=1)
        D = lambda_times(T, pls.factor.solve("A", R), offs, ks)
        b = lambda_times(T, u[:, None], offs, ks)[:, 0]
        self.best = Anchor(params, b, D, float(value))

    def _far(self, params: np.ndarray) -> bool:
        """Whether Z'WX was taken more than REFRESH (change in b predicted by the best
        tangent) from params."""
        return self.best is None or self.best.displacement(params, self.ZtWX_params) > REFRESH

    def predict(self, params: np.ndarray, T_new: list[np.ndarray]) -> np.ndarray | None:
        """u at params from the best mode, or None (none within TRUST, or a new T_t
        singular)."""
        params = np.asarray(params, dtype=np.float64)
        best = self.best
        if best is None or not nonsingular(T_new):
            return None
        move = best.D @ (params - best.params)
        if not np.max(np.abs(move), initial=0.0) <= TRUST:  # far, or not finite
            return None
        b = best.b + move
        u = np.empty_like(b)
        ks = self.theta_map.ks
        for Tt, src, dst in zip(T_new, level_blocks(b, self.offsets, ks),
                                level_blocks(u, self.offsets, ks)):
            dst[:] = np.linalg.solve(Tt, src.T).T
        return u
