"""Kenward-Roger: the small-sample adjusted vcov(beta) and denominator df (pbkrtest's).

After the results stage (... -> results -> inference). Kenward & Roger (1997, Biometrics
53); pbkrtest's vcovAdj and Lb_ddf (Halekoh & Hojsgaard 2014, JSS 59(9)). The covariance
V = sum_r gamma_r G_r is linear in gamma: per random-effects term t, the entries (i <= j)
of its covariance matrix Sigma_t = sigma^2 T_t T_t' with G = Z_t (I (x) (E_ij + E_ji)) Z_t',
then the residual variance sigma^2 with G = W^-1 (the identity without prior weights).
With Phi = vcov(beta):

    P_r = -X' V^-1 G_r V^-1 X,     Q_rs = X' V^-1 G_r V^-1 G_s V^-1 X,
    IE_rs = tr(V^-1 G_r V^-1 G_s) - 2 tr(Phi Q_rs) + tr(Phi P_r Phi P_s),   W = 2 IE^-1,
    Phi_A = Phi + 2 Phi [sum_rs W_rs (Q_rs - P_r Phi P_s)] Phi.

Nothing here is n x n. With N = W - W Z C Z' W, C = Lambda M^-1 Lambda' (V^-1 = N /
sigma^2, Woodbury) and the (q+p) x (q+p) cross-products A = [Z X]'W[Z X], S = [[C, 0],
[0, 0]]:

    [Z X]' N [Z X]                 = K  = A - A S A
    [Z X]' N W^-1 N [Z X]          = K1 = (I - A S) K
    [Z X]' N W^-1 N W^-1 N [Z X]   = K2 = (I - A S) K1
    tr((N W^-1)^2)                 = n - 2 tr(C A_ZZ) + tr(C A_ZZ C A_ZZ)

so every term above is a product of blocks of K, K1, K2 (dense, q x q at most).
"""
from __future__ import annotations

import numpy as np
import scipy.linalg

from .errors import ModelSpecError
from .objective import ThetaMap

KR_MAX_Q = 3000  # random-effects columns above which dense (q+p) x (q+p) algebra is refused


class KenwardRoger:
    """Phi, the adjusted Phi_A, P_r and W of one REML fit; df and F tests of contrasts."""

    def __init__(self, Phi: np.ndarray, PhiA: np.ndarray, P: list[np.ndarray], W: np.ndarray):
        self.vcov = Phi
        self.vcov_adjusted = PhiA
        self.P = P
        self.W = W

    def _a1_a2(self, L: np.ndarray) -> tuple[float, float]:
        Phi = self.vcov
        Theta = L.T @ np.linalg.solve(L @ Phi @ L.T, L)
        U = [Theta @ Phi @ P @ Phi for P in self.P]
        A1 = A2 = 0.0
        m = len(U)
        for i in range(m):
            for j in range(i, m):
                e = 1.0 if i == j else 2.0
                A1 += e * self.W[i, j] * np.trace(U[i]) * np.trace(U[j])
                A2 += e * self.W[i, j] * np.sum(U[i] * U[j].T)
        return A1, A2

    def df_and_scale(self, L: np.ndarray) -> tuple[float, float]:
        """pbkrtest's .KR_adjust: the denominator df and the F scaling for L (q x p)."""
        L = np.atleast_2d(L)
        q = L.shape[0]
        A1, A2 = self._a1_a2(L)
        B = (A1 + 6.0 * A2) / (2.0 * q)
        g = ((q + 1) * A1 - (q + 4) * A2) / ((q + 2) * A2)
        den = 3.0 * q + 2.0 * (1.0 - g)
        c1, c2, c3 = g / den, (q - g) / den, (q + 2 - g) / den
        V0, V1, V2 = 1.0 + c1 * B, 1.0 - c2 * B, 1.0 - c3 * B
        V0 = 0.0 if abs(V0) < 1e-10 else V0
        x = 1.0 - A2 / q
        ratio = 1.0 if abs(x) < 1e-14 and abs(V1) < 1e-14 else x / V1
        rho = ratio**2 * V0 / V2 / q
        df2 = 4.0 + (q + 2.0) / (q * rho - 1.0)
        scale = 1.0 if abs(df2 - 2.0) < 1e-2 else df2 * x / (df2 - 2.0)
        return float(df2), float(scale)

    def df(self, L: np.ndarray) -> float:
        """Kenward-Roger df of the test of the contrast(s) L (pbkrtest's Lb_ddf)."""
        return self.df_and_scale(L)[0]

    def f_test(self, L: np.ndarray, beta: np.ndarray) -> tuple[float, int, float, float]:
        """(unscaled F with Phi_A, numerator df, denominator df, F scaling) for L beta = 0.

        L is first reduced to a basis of its rows (pbkrtest needs full row rank; F, the df
        and the scaling do not depend on the basis); a contrast of rank 0 is refused."""
        from .ddf import rank_reduced

        L = rank_reduced(np.atleast_2d(L), self.vcov)[1]
        Lb = L @ beta
        F_u = float(Lb @ np.linalg.solve(L @ self.vcov_adjusted @ L.T, Lb)) / L.shape[0]
        df2, scale = self.df_and_scale(L)
        return F_u, L.shape[0], df2, scale


def kenward_roger(result) -> KenwardRoger:
    """The Kenward-Roger quantities of an LMM fitted by REML, cached on the result."""
    from .ddf import _cache

    cache = _cache(result)
    if "kr" not in cache:
        cache["kr"] = _compute(result)
    return cache["kr"]


def _compute(result) -> KenwardRoger:
    ctx = result.model
    if ctx is None or ctx.is_glmm:
        raise ModelSpecError("Kenward-Roger applies to linear mixed models fitted by lmer")
    if not result.reml:
        raise ModelSpecError("Kenward-Roger's method is only available for REML fits (as in "
                             "lmerTest); refit with reml=True or use ddf='satterthwaite'")
    if ctx.options.get("sigma") is not None:
        raise ModelSpecError("Kenward-Roger needs an estimated residual variance; with sigma "
                             "fixed use ddf='satterthwaite' or 'normal'")
    cp = ctx.crossproducts()
    q, p = cp.q, cp.p
    if q > KR_MAX_Q:
        raise ModelSpecError(
            f"Kenward-Roger here uses dense (q+p) x (q+p) matrices and this model has "
            f"q = {q} random-effects columns (limit {KR_MAX_Q}, {8 * (q + p)**2 / 1e6:.0f} MB "
            "each); use ddf='satterthwaite', which works at any size")
    T = ThetaMap(tuple(cp.k)).factors(np.asarray(ctx.theta, dtype=float))
    blocks = _blocks(cp, T, result.sigma)
    Phi = result.vcov.to_numpy()
    P, Q, Ktrace = _p_q_ktrace(blocks, q, p)
    return _adjust(Phi, P, Q, Ktrace)


def dense_gram(cp) -> np.ndarray:
    """[X Z y]' W [X Z y] as a dense (p + q + 1) square matrix from the cross-products
    (crossprod.CrossProducts: Z'WZ's blocks, Z'W[X y], [X y]'W[X y]). y there is the
    cross-products' response column: y - offset less its least-squares fit on X, which
    leaves the residuals of projections that include X unchanged and keeps RSS's digits.
    Dense in q: (p + q + 1)^2 doubles."""
    p, q = cp.p, cp.q
    off = p + np.asarray(cp.offsets)
    G = np.zeros((p + q + 1, p + q + 1))
    G[:p, :p], G[:p, -1], G[-1, :p] = cp.XtWXy[:p, :p], cp.XtWXy[:p, p], cp.XtWXy[p, :p]
    G[-1, -1] = cp.XtWXy[p, p]
    G[p:p + q, :p], G[p:p + q, -1] = cp.ZtWXy[:, :p], cp.ZtWXy[:, p]
    G[:p, p:p + q], G[-1, p:p + q] = cp.ZtWXy[:, :p].T, cp.ZtWXy[:, p]
    for t, (k, D) in enumerate(zip(cp.k, cp.diag)):
        for lev in range(D.shape[0]):
            i = off[t] + lev * k
            G[i:i + k, i:i + k] = D[lev]
    for pb in cp.pairs:
        kt, ks = cp.k[pb.t], cp.k[pb.s]
        for lt, ls, A in zip(pb.lev_t, pb.lev_s, pb.A):
            i, j = off[pb.t] + lt * kt, off[pb.s] + ls * ks
            G[i:i + kt, j:j + ks] = A
            G[j:j + ks, i:i + kt] = A.T
    return G


def _blocks(cp, T: list[np.ndarray], sigma: float) -> dict:
    """K, K1, K2 (each divided by the power of sigma^2 that makes it V^-1's), the index
    sets of the parameters' G_r, and tr((V^-1 W^-1)^2)."""
    q, p, offs = cp.q, cp.p, cp.offsets
    order = np.r_[p:p + q, 0:p]  # [Z X] from dense_gram's [X Z y]
    A = dense_gram(cp)[np.ix_(order, order)]
    AZZ = A[:q, :q]
    Lam = scipy.linalg.block_diag(*[np.kron(np.eye(nl), Tt) for nl, Tt in zip(cp.nlev, T)]) \
        if q else np.zeros((0, 0))
    M = Lam.T @ AZZ @ Lam + np.eye(q)
    C = Lam @ scipy.linalg.cho_solve(scipy.linalg.cho_factor(M), Lam.T)
    AS = np.zeros_like(A)
    AS[:, :q] = A[:, :q] @ C  # A S, S = [[C, 0], [0, 0]]
    K = A - AS @ A
    K1 = K - AS @ K
    K2 = K1 - AS @ K1
    CA = C @ AZZ
    tr_res = cp.n - 2.0 * np.trace(CA) + np.sum(CA * CA.T)
    s2 = sigma**2
    params = []
    for t, (k, nl) in enumerate(zip(cp.k, cp.nlev)):
        idx = [offs[t] + np.arange(nl) * k + i for i in range(k)]
        for j in range(k):
            for i in range(j, k):
                params.append([(idx[i], idx[i])] if i == j else
                              [(idx[i], idx[j]), (idx[j], idx[i])])
    return {"K": K / s2, "K1": K1 / s2**2, "K2": K2 / s2**3, "tr_res": tr_res / s2**2,
            "params": params, "X": np.arange(q, q + p)}


def _p_q_ktrace(b: dict, q: int, p: int):
    """P_r, Q_rs (r <= s, a dict) and the trace matrix, the residual parameter last."""
    K, K1, K2, X = b["K"], b["K1"], b["K2"], b["X"]
    params = b["params"]
    m = len(params) + 1
    res = m - 1

    def left(r, M):  # X' V^-1 G_r (M as the right factor's cross-product), p x (q+p)
        return sum(K[np.ix_(X, a)] @ M[bb, :] for a, bb in params[r])

    KX = K[:, X]
    P, left_K, left_K1 = [], [], []
    for r in range(len(params)):
        lk = left(r, K)  # X'V^-1 G_r V^-1 [Z X]
        left_K.append(lk)
        left_K1.append(left(r, K1))  # X'V^-1 G_r V^-1 W^-1 V^-1 [Z X]
        P.append(-lk[:, X])
    P.append(-K1[np.ix_(X, X)])
    Q = {}
    for r in range(m):
        for s in range(r, m):
            if r == res:
                Q[r, s] = K2[np.ix_(X, X)]
            elif s == res:
                Q[r, s] = left_K1[r][:, X]
            else:
                Q[r, s] = sum(left_K[r][:, c] @ KX[d, :] for c, d in params[s])
    Kt = np.empty((m, m))
    for r in range(m):
        for s in range(r, m):
            if r == res:
                val = b["tr_res"]
            elif s == res:
                val = sum(np.trace(K1[np.ix_(bb, a)]) for a, bb in params[r])
            else:
                val = sum(np.sum(K[np.ix_(bb, c)] * K[np.ix_(a, d)])
                          for a, bb in params[r] for c, d in params[s])
            Kt[r, s] = Kt[s, r] = val
    return P, Q, Kt


def _adjust(Phi: np.ndarray, P: list, Q: dict, Kt: np.ndarray) -> KenwardRoger:
    """pbkrtest's vcovAdj: W = 2 IE^-1 and Phi_A."""
    m = len(P)
    IE = np.empty((m, m))
    for i in range(m):
        PhiPi = Phi @ P[i]
        for j in range(i, m):
            IE[i, j] = IE[j, i] = (Kt[i, j] - 2.0 * np.sum(Phi * Q[i, j])
                                   + np.sum(PhiPi * (P[j] @ Phi)))
    cond = np.min(np.abs(np.linalg.eigvalsh(IE)))
    W = 2.0 * (np.linalg.inv(IE) if cond > 1e-10 else np.linalg.pinv(IE))
    W = 0.5 * (W + W.T)
    U = np.zeros_like(Phi)
    for i in range(m):
        for j in range(i + 1, m):
            U += W[i, j] * (Q[i, j] - P[i] @ Phi @ P[j])
    U = U + U.T
    for i in range(m):
        U += W[i, i] * (Q[i, i] - P[i] @ Phi @ P[i])
    return KenwardRoger(Phi, Phi + 2.0 * Phi @ U @ Phi, P, W)
