"""Small random symmetric positive definite problems shared by the kernel tests.

Each kind mimics a structure the model layer produces for M = Lambda' Z'WZ Lambda + I:
one grouping factor with a vector term (block diagonal), two crossed scalar factors
([[D1, C], [C', D2]]), an unstructured sparse pattern and a fully dense matrix.
All are returned dense: the tests compare the sparse kernels against NumPy on them.
"""
import numpy as np
import pytest
from csc import upper_csc


def block_spd(rng, nlev, k):
    """Block diagonal I_nlev (x) blocks: T' X_g'X_g T + I with a random T per level."""
    M = np.zeros((nlev * k, nlev * k))
    for g in range(nlev):
        X = rng.standard_normal((k + 2, k))
        T = np.tril(rng.standard_normal((k, k)))
        M[g * k:(g + 1) * k, g * k:(g + 1) * k] = T.T @ X.T @ X @ T + np.eye(k)
    return M


def crossed_spd(rng, n1, n2, nobs):
    """theta-scaled Z'WZ + I for two crossed scalar factors: [[D1, C], [C', D2]] + I."""
    Z = np.zeros((nobs, n1 + n2))
    Z[np.arange(nobs), rng.integers(0, n1, nobs)] = 1.0
    Z[np.arange(nobs), n1 + rng.integers(0, n2, nobs)] = 1.0
    theta = np.concatenate([np.full(n1, rng.uniform(0.3, 2.0)), np.full(n2, rng.uniform(0.3, 2.0))])
    w = rng.uniform(0.5, 2.0, nobs)
    ZL = Z * theta
    return ZL.T @ (w[:, None] * ZL) + np.eye(n1 + n2)


def sparse_spd(rng, n, density):
    """Random symmetric sparse pattern made strictly diagonally dominant."""
    S = np.where(rng.random((n, n)) < density, rng.standard_normal((n, n)), 0.0)
    S = np.triu(S, 1)
    S = S + S.T
    return S + np.diag(np.abs(S).sum(axis=1) + rng.uniform(0.5, 2.0, n))


def dense_spd(rng, n):
    """G G' + I: dense, correlated, not diagonally dominant."""
    G = rng.standard_normal((n, n))
    return G @ G.T / n + np.eye(n)


def make_spd(kind, seed, size="small"):
    """A dense SPD matrix of the given kind; size "small" (tens) or "large" (hundreds)."""
    rng = np.random.default_rng(seed)
    big = size == "large"
    if kind == "block":
        return block_spd(rng, 120 if big else 7, 3 if big else 2)
    if kind == "crossed":
        return crossed_spd(rng, *((240, 60, 2000) if big else (15, 6, 60)))
    if kind == "sparse":
        return sparse_spd(rng, 300 if big else 25, 0.01 if big else 0.1)
    if kind == "dense":
        return dense_spd(rng, 120 if big else 12)
    raise ValueError(kind)


@pytest.fixture
def spd():
    """Factory make_spd(kind, seed, size) of dense SPD test matrices."""
    return make_spd


@pytest.fixture
def to_upper_csc():
    """The function upper_csc(M) -> (indptr, indices, data) of the upper triangle."""
    return upper_csc
