"""The n-free criterion equals -2 log L computed densely from V, for many theta.

V = sigma^2 (Z Lambda Lambda' Z' + W^-1). The profiled ML deviance and REML criterion
are computed here from V with dense NumPy (GLS beta, sigma^2 profiled out) on small
random designs with a correlated slope term crossed with an intercept term, prior
weights, and theta drawn at random, with zeros on the boundary and negative
off-diagonals.
"""
import numpy as np
import pandas as pd
import pytest

from glmm_sparse.crossprod import accumulate
from glmm_sparse.formula import parse_formula
from glmm_sparse.frame import build_frame
from glmm_sparse.objective import LmmObjective

FORMULA = "y ~ x + z + (1 + x | g) + (1 | h)"


def random_data(seed: int, n: int = 60) -> pd.DataFrame:
    """Unbalanced crossed design with a continuous slope and positive weights."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "y": rng.normal(size=n), "x": rng.normal(size=n), "z": rng.uniform(size=n),
        "g": rng.choice(list("abcdef"), n), "h": rng.choice(list("PQRS"), n),
        "w": rng.uniform(0.3, 3.0, n),
    })


def dense_Z_and_Lambda(frame, obj):
    """Z (n x q) and Lambda (q x q) as dense arrays from the frame's terms and obj.T."""
    blocks_Z, blocks_L = [], []
    for t, T in zip(frame.terms, obj.T):
        Zt = np.zeros((frame.n, t.q))
        for r in range(t.k):
            Zt[np.arange(frame.n), t.codes * t.k + r] = t.X[:, r]
        blocks_Z.append(Zt)
        blocks_L.append(np.kron(np.eye(t.nlev), T))
    q = sum(b.shape[1] for b in blocks_Z)
    Lam = np.zeros((q, q))
    at = 0
    for B in blocks_L:
        Lam[at:at + B.shape[0], at:at + B.shape[0]] = B
        at += B.shape[0]
    return np.hstack(blocks_Z), Lam


def dense_criterion(y, X, Z, Lam, w, reml):
    """-2 log L (ML) or the REML criterion with beta and sigma^2 profiled out, from V."""
    n, p = X.shape
    V = Z @ Lam @ Lam.T @ Z.T + np.diag(1.0 / w)
    Vi = np.linalg.inv(V)
    XtViX = X.T @ Vi @ X
    beta = np.linalg.solve(XtViX, X.T @ Vi @ y)
    r = y - X @ beta
    dof = n - p if reml else n
    s2 = r @ Vi @ r / dof
    dev = dof * (1 + np.log(2 * np.pi * s2)) + np.linalg.slogdet(V)[1]
    return dev + (np.linalg.slogdet(XtViX)[1] if reml else 0.0), beta, np.sqrt(s2)


def thetas(seed: int, count: int = 12):
    """Random theta vectors (5 entries: 2x2 lower triangle, then a scalar), some on bounds."""
    rng = np.random.default_rng(seed)
    out = [np.array([1.0, 0.0, 1.0, 1.0]), np.zeros(4), np.array([0.0, 0.0, 0.5, 0.0])]
    for _ in range(count):
        th = np.array([rng.uniform(0, 2), rng.normal(), rng.uniform(0, 2), rng.uniform(0, 2)])
        th[rng.random(4) < 0.2 * np.array([1, 0, 1, 1])] = 0.0
        out.append(th)
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("reml", [True, False])
def test_n_free_criterion_equals_dense_likelihood(seed, reml):
    data = random_data(seed)
    frame = build_frame(parse_formula(FORMULA), FORMULA, data, weights="w")
    obj = LmmObjective(accumulate(frame), reml=reml)
    for theta in thetas(seed):
        assert_dense(obj, frame, theta, reml)


def assert_dense(obj, frame, theta, reml):
    """The criterion, beta and sigma at theta equal the dense formulas from V."""
    value = obj(theta)
    Z, Lam = dense_Z_and_Lambda(frame, obj)
    want, beta, sigma = dense_criterion(frame.y, frame.X, Z, Lam, frame.weights, reml)
    assert value == pytest.approx(want, rel=1e-10, abs=1e-9), theta
    assert np.allclose(obj.beta(), beta, rtol=1e-8, atol=1e-10)
    assert obj.sigma() == pytest.approx(sigma, rel=1e-9)


def test_conditional_modes_and_variances_equal_dense_formulas():
    """u solves (Lambda'Z'WZ Lambda + I) u = Lambda'Z'W(y - X beta); condvar from M^-1."""
    from glmm_sparse.condvar import condvar_blocks

    data = random_data(7)
    frame = build_frame(parse_formula(FORMULA), FORMULA, data, weights="w")
    obj = LmmObjective(accumulate(frame), reml=True)
    obj.update(np.array([0.8, -0.3, 0.6, 1.2]))
    Z, Lam = dense_Z_and_Lambda(frame, obj)
    W = np.diag(frame.weights)
    M = Lam.T @ Z.T @ W @ Z @ Lam + np.eye(Lam.shape[0])
    u = np.linalg.solve(M, Lam.T @ Z.T @ W @ (frame.y - frame.X @ obj.beta()))
    assert np.allclose(obj.u(), u, atol=1e-10)
    sigma = obj.sigma()
    C = sigma**2 * Lam @ np.linalg.inv(M) @ Lam.T
    offs = obj.cp.offsets
    for t, blocks in enumerate(condvar_blocks(obj, sigma)):
        k = obj.cp.k[t]
        for a in range(obj.cp.nlev[t]):
            s = offs[t] + a * k
            assert np.allclose(blocks[a], C[s:s + k, s:s + k], atol=1e-10)


@pytest.mark.parametrize("formula, n_theta", [("y ~ x + z + (1 + x | g)", 3),
                                              ("y ~ x + (1 | g)", 1)])
@pytest.mark.parametrize("reml", [True, False])
def test_single_term_criterion_by_levels_equals_dense_likelihood(formula, n_theta, reml):
    """One term, k = 1 or 2: the objective's one pass over the levels (update_levels)."""
    data = random_data(11, n=80)
    frame = build_frame(parse_formula(formula), formula, data, weights="w")
    obj = LmmObjective(accumulate(frame), reml=reml)
    assert obj.by_levels
    rng = np.random.default_rng(3)
    for theta in [np.zeros(n_theta), np.ones(n_theta)] + [
            np.where(rng.random(n_theta) < 0.2, 0.0, rng.uniform(0.1, 2.0, n_theta))
            for _ in range(8)]:
        if n_theta == 3:
            theta[1] = rng.normal()  # the correlation's entry may be negative
        assert_dense(obj, frame, theta, reml)
