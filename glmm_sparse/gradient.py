"""The gradient in theta of the profiled LMM criterion, from an updated objective, n-free.

Between the factor and the optimizer (... -> factor -> gradient -> optimize): after
``LmmObjective.update(theta)``, the derivative of ``objective()`` with respect to each
theta needs the cross-products, the factor and M^-1 on the pattern of M only.

With A = Z'WZ, Lambda_k = dLambda / dtheta_k (the 0/1 pattern of theta_k's entry (r, c)
of T_t, on every level of term t), M = Lambda' A Lambda + I:

    d log|M| / dtheta_k  = tr(M^-1 dM_k) = 2 sum_j [(A Lambda M^-1)_jj]_rc
    d r2 / dtheta_k      = -2 (Z'Wy - Z'WX beta - A Lambda u)' Lambda_k u

(j: the levels of term t, _jj: their diagonal k x k blocks; r2 by the envelope theorem,
u and beta at their minimum). The diagonal blocks of A Lambda M^-1 need M^-1 only where
A (so M) has blocks: the selected inverse. REML adds log|R_X|^2 = log|S_X|, S_X = X'WX -
B' M^-1 B with B = Lambda' Z'WX; with C = M^-1 B and V = S_X^-1,

    d log|S_X| / dtheta_k = tr(V C' dM_k C) - 2 tr(V C' Lambda_k' Z'WX)
                          = 2 sum_j [(A Lambda C V C')_jj]_rc - 2 sum_j [(Z'WX V C')_jj]_rc

(p solves for C). The criteria of objective.py then combine these:

    ML:    dlog|M| + n / r2 dr2              REML:  dlog|M| + dlog|S_X| + (n - p) / r2 dr2
    sigma fixed: dlog|M| (+ dlog|S_X|) + dr2 / sigma^2
"""
from __future__ import annotations

import numpy as np

from .blas import one_blas_thread
from .objective import LmmObjective


def minv_on_pattern(obj: LmmObjective) -> np.ndarray:
    """M^-1 at the stored entries of M's upper triangle (its pattern, CSC order): the
    selected inverse (condvar.SelectedInverse, supernodal or Takahashi's by the factor)."""
    from .condvar import SelectedInverse

    pat = obj.pattern
    return SelectedInverse(obj).on_pattern(pat.indptr, pat.indices)


def _full_diag_positions(pos: np.ndarray) -> np.ndarray:
    """Slots of every entry of the diagonal blocks (nlev, k, k), the lower ones mirrored."""
    return np.where(pos >= 0, pos, np.swapaxes(pos, 1, 2))


def _blocks(x: np.ndarray, off: int, nlev: int, k: int) -> np.ndarray:
    """The rows of term t in x (q, m) as (nlev, k, m)."""
    return x[off:off + nlev * k].reshape(nlev, k, -1)


# Stacks of many small blocks: each product below is one BLAS call on a reshaped stack
# (numpy's einsum and stacked matmul loop over the blocks: 5-30x slower for 10^5 levels).
def stacked_sum(P: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """sum_n P_n Q_n for P (n, a, c), Q (n, c, d)."""
    n, a, c = P.shape
    return P.transpose(1, 0, 2).reshape(a, n * c) @ Q.reshape(n * c, Q.shape[2])


def right_times(P: np.ndarray, T: np.ndarray) -> np.ndarray:
    """P_n T for every n, P (n, a, c), T (c, d)."""
    return (P.reshape(-1, P.shape[2]) @ T).reshape(P.shape[0], P.shape[1], T.shape[1])


def left_times(T: np.ndarray, X: np.ndarray) -> np.ndarray:
    """T X_n for every n, T (a, b), X (n, b, m)."""
    n, b, m = X.shape
    return (T @ X.transpose(1, 0, 2).reshape(b, n * m)).reshape(-1, n, m).transpose(1, 0, 2)


def blocks_times(A: np.ndarray, X: np.ndarray) -> np.ndarray:
    """A_n X_n for every n, A (n, a, b), X (n, b, m): a sum over the small b."""
    out = A[:, :, 0, None] * X[:, None, 0, :]
    for b in range(1, A.shape[2]):
        out += A[:, :, b, None] * X[:, None, b, :]
    return out


def scatter_add(out: np.ndarray, index: np.ndarray, Y: np.ndarray) -> None:
    """out[index[n]] += Y[n] (repeated indices add up), out (nlev, ...) C-contiguous."""
    flat_out = out.reshape(out.shape[0], -1)
    if not np.shares_memory(flat_out, out):
        raise ValueError("scatter_add needs a C-contiguous out")
    flat_y = Y.reshape(Y.shape[0], -1)
    for col in range(flat_y.shape[1]):
        flat_out[:, col] += np.bincount(index, weights=flat_y[:, col], minlength=out.shape[0])


def a_times(obj: LmmObjective, x: np.ndarray) -> np.ndarray:
    """A x = Z'WZ x for x (q, m), block by block (diagonal blocks and level pairs)."""
    cp = obj.cp
    offs = cp.offsets
    x = np.ascontiguousarray(x)
    out = np.zeros(x.shape)  # C order: the block views below write into it
    for t, D in enumerate(cp.diag):
        nlev, k = cp.nlev[t], cp.k[t]
        _blocks(out, offs[t], nlev, k)[...] = blocks_times(D, _blocks(x, offs[t], nlev, k))
    for pb in cp.pairs:
        xt = _blocks(x, offs[pb.t], cp.nlev[pb.t], cp.k[pb.t])
        xs = _blocks(x, offs[pb.s], cp.nlev[pb.s], cp.k[pb.s])
        # rows of t gain A_ij x_j, rows of s gain A_ij' x_i
        scatter_add(_blocks(out, offs[pb.t], cp.nlev[pb.t], cp.k[pb.t]), pb.lev_t,
                    blocks_times(pb.A, xs[pb.lev_s]))
        scatter_add(_blocks(out, offs[pb.s], cp.nlev[pb.s], cp.k[pb.s]), pb.lev_s,
                    blocks_times(pb.A.transpose(0, 2, 1), xt[pb.lev_t]))
    return out


def lambda_times(obj: LmmObjective, x: np.ndarray) -> np.ndarray:
    """Lambda x for x (q, m): T_t applied to each level's k rows."""
    cp = obj.cp
    x = np.ascontiguousarray(x)
    out = np.empty(x.shape)  # C order: the block views below write into it
    for t, T in enumerate(obj.T):
        off, nlev, k = cp.offsets[t], cp.nlev[t], cp.k[t]
        _blocks(out, off, nlev, k)[...] = left_times(T, _blocks(x, off, nlev, k))
    return out


def per_theta(obj: LmmObjective, F: list[np.ndarray]) -> np.ndarray:
    """The theta vector of per-term k x k matrices F_t: entry (r, c) of T_t -> F_t[r, c]."""
    tm = obj.theta_map
    return np.concatenate([Ft[r, c] for Ft, r, c in zip(F, tm.rows, tm.cols)])


def block_sums(obj: LmmObjective, P: np.ndarray, Q: np.ndarray) -> list[np.ndarray]:
    """Per term t, sum over its levels j of P_j Q_j' (k x k), P and Q (q, m) by rows."""
    cp = obj.cp
    out = []
    for t in range(len(cp.k)):
        off, nlev, k = cp.offsets[t], cp.nlev[t], cp.k[t]
        out.append(stacked_sum(_blocks(P, off, nlev, k),
                               _blocks(Q, off, nlev, k).transpose(0, 2, 1)))
    return out


def logdet_m_gradient(obj: LmmObjective, S: np.ndarray) -> list[np.ndarray]:
    """Per term, sum_j (A Lambda M^-1)_jj: half of d log|M| / dT_t, from S = M^-1 on M's
    pattern (``minv_on_pattern``).

    Each block A_ij of A (level i of term t, j of term s) adds A_ij' T_t S_ij to level
    j's diagonal block and, off the diagonal, A_ij T_s S_ij' to level i's.
    """
    cp, pat, T = obj.cp, obj.pattern, obj.T
    F = []
    for t, D in enumerate(cp.diag):
        St = S[_full_diag_positions(pat.diag_pos[t])]
        F.append(stacked_sum(right_times(D.transpose(0, 2, 1), T[t]), St))
    for pb, pos in zip(cp.pairs, pat.pair_pos):
        Sp = S[pos]
        F[pb.s] += stacked_sum(right_times(pb.A.transpose(0, 2, 1), T[pb.t]), Sp)
        F[pb.t] += stacked_sum(right_times(pb.A, T[pb.s]), Sp.transpose(0, 2, 1))
    return F


def pwrss_gradient(obj: LmmObjective) -> list[np.ndarray]:
    """Per term, sum_j res_j u_j' with res = Z'W(y - X beta) - A Lambda u: -1/2 dr2 / dT_t."""
    p = obj.cp.p
    ZtWXy = obj.cp.ZtWXy
    u = obj.u().reshape(-1, 1)
    res = ZtWXy[:, p:] - ZtWXy[:, :p] @ obj._beta_fitted().reshape(-1, 1) \
        - a_times(obj, lambda_times(obj, u))
    return block_sums(obj, res, u)


def logdet_rx_gradient(obj: LmmObjective) -> list[np.ndarray]:
    """Per term, sum_j [(A Lambda C V C')_jj - (Z'WX V C')_jj]: half of d log|S_X| / dT_t."""
    p = obj.cp.p
    if p == 0:
        return [np.zeros((k, k)) for k in obj.cp.k]
    RZX = obj.RZXy[:, :p]
    C = obj.factor.solve("Pt", obj.factor.solve("Lt", RZX))  # M^-1 Lambda' Z'WX
    RX = obj.Ry[:p, :p]
    Rinv = np.linalg.inv(RX)  # p x p upper triangular inverse
    V = Rinv @ Rinv.T
    CV = C @ V
    first = block_sums(obj, a_times(obj, lambda_times(obj, C)) @ V, C)
    second = block_sums(obj, obj.cp.ZtWXy[:, :p], CV)
    return [a - b for a, b in zip(first, second)]


def criterion_gradient(obj: LmmObjective) -> np.ndarray:
    """d objective() / d theta at the objective's current theta (after ``update``).

    The products after the selected inverse are thin (q x p at most) and many: on one
    BLAS thread (blas.py), as a (1 x 88k) by (88k x 1) product took 4 ms with two
    threads on a busy machine and 0.02 ms with one.
    """
    cp = obj.cp
    S = minv_on_pattern(obj)
    with one_blas_thread():
        logdet = logdet_m_gradient(obj, S)
        if obj.reml:
            logdet = [a + b for a, b in zip(logdet, logdet_rx_gradient(obj))]
        res_u = pwrss_gradient(obj)
    if obj.fixed_sigma is not None:
        pwrss_factor = 1.0 / obj.fixed_sigma**2
    else:
        dof = cp.n - cp.p if obj.reml else cp.n
        pwrss_factor = dof / obj.pwrss
    return per_theta(obj, [2.0 * a - 2.0 * pwrss_factor * b for a, b in zip(logdet, res_u)])
