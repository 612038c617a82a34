"""Lambda kernels against dense NumPy: Tr' A_b Tc scattered by position, (I (x) T') B, (I (x) T) B.

T is the lower-triangular relative covariance factor of one term; it may have zeros on
its diagonal (theta on the boundary), which the kernels must treat as ordinary values.
"""
import numpy as np
import pytest

from glmm_sparse._core._lambda import congruence_scatter, lambda_apply, lambdat_apply

KS = (1, 2, 3, 4)
TOL = 1e-12


def assert_close(actual, expected):
    """|actual - expected| <= TOL * max(1, max|expected|), elementwise."""
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=TOL * scale)


def lower_factor(rng, k, zero_diagonal):
    """Random lower-triangular k x k; with zero_diagonal, every other diagonal entry is 0."""
    T = np.tril(rng.standard_normal((k, k)))
    if zero_diagonal:
        T[np.arange(0, k, 2), np.arange(0, k, 2)] = 0.0
    return T


def scatter_positions(rng, nb, kr, kc, size, strict_lower_unused):
    """pos (nb, kr, kc): distinct random slots in range(size), -1 on unused entries."""
    pos = rng.permutation(size)[:nb * kr * kc].reshape(nb, kr, kc).astype(np.int64)
    if strict_lower_unused:
        pos[:, np.tril(np.ones((kr, kc), dtype=bool), -1)] = -1
    return pos


@pytest.mark.parametrize("zero_diagonal", [False, True])
@pytest.mark.parametrize("nb", [1, 6])
@pytest.mark.parametrize("kc", KS)
@pytest.mark.parametrize("kr", KS)
def test_congruence_scatter(kr, kc, nb, zero_diagonal):
    rng = np.random.default_rng(100 * kr + 10 * kc + nb)
    A = rng.standard_normal((nb, kr, kc))
    Tr, Tc = lower_factor(rng, kr, zero_diagonal), lower_factor(rng, kc, zero_diagonal)
    square = kr == kc
    size = nb * kr * kc + 5
    pos = scatter_positions(rng, nb, kr, kc, size, strict_lower_unused=square)
    sentinel = -123.25
    out = np.full(size, sentinel)
    assert congruence_scatter(A, Tr, Tc, pos, out) is None
    expected = np.full(size, sentinel)
    for b in range(nb):
        blk = Tr.T @ A[b] @ Tc
        keep = pos[b] >= 0
        expected[pos[b][keep]] = blk[keep]
    assert_close(out, expected)
    untouched = np.setdiff1d(np.arange(size), pos[pos >= 0])
    assert np.all(out[untouched] == sentinel)


def test_congruence_scatter_symmetric_block_upper_triangle():
    rng = np.random.default_rng(7)
    k, nb = 3, 4
    G = rng.standard_normal((nb, k + 2, k))
    A = np.ascontiguousarray(np.einsum("bik,bil->bkl", G, G))
    T = lower_factor(rng, k, zero_diagonal=True)
    pos = np.full((nb, k, k), -1, dtype=np.int64)
    r, c = np.triu_indices(k)
    pos[:, r, c] = np.arange(nb * len(r)).reshape(nb, -1)
    out = np.zeros(nb * len(r))
    congruence_scatter(A, T, T, pos, out)
    expected = np.concatenate([(T.T @ A[b] @ T)[r, c] for b in range(nb)])
    assert_close(out, expected)


def blockwise(T, B):
    """(I_nlev (x) T) B computed densely with a Kronecker product."""
    nlev = B.shape[0] // T.shape[0]
    return np.kron(np.eye(nlev), T) @ B


@pytest.mark.parametrize("zero_diagonal", [False, True])
@pytest.mark.parametrize("nlev", [1, 9])
@pytest.mark.parametrize("m", [1, 5])
@pytest.mark.parametrize("k", KS)
def test_lambdat_and_lambda_apply(k, m, nlev, zero_diagonal):
    rng = np.random.default_rng(1000 * k + 10 * m + nlev)
    T = lower_factor(rng, k, zero_diagonal)
    B = rng.standard_normal((nlev * k, m))
    B_before = B.copy()
    out_t = np.full_like(B, np.nan)
    out = np.full_like(B, np.nan)
    assert lambdat_apply(T, B, out_t) is None
    assert lambda_apply(T, B, out) is None
    assert np.array_equal(B, B_before)
    assert_close(out_t, blockwise(T.T, B))
    assert_close(out, blockwise(T, B))


@pytest.mark.parametrize("k", KS)
def test_lambda_and_lambdat_are_adjoint(k):
    rng = np.random.default_rng(k)
    T = lower_factor(rng, k, zero_diagonal=False)
    nlev = 7
    U, V = rng.standard_normal((nlev * k, 3)), rng.standard_normal((nlev * k, 3))
    LU, LtV = np.empty_like(U), np.empty_like(V)
    lambda_apply(T, U, LU)
    lambdat_apply(T, V, LtV)
    assert_close(V.T @ LU, LtV.T @ U)


def test_congruence_scatter_scalar_blocks():
    """Scalar terms take their own loop: out = (Tr A) Tc per block, the rounding of the
    general loop nest, and slots marked -1 left alone."""
    rng = np.random.default_rng(11)
    nb = 50
    A = rng.standard_normal((nb, 1, 1))
    Tr, Tc = np.array([[0.7]]), np.array([[1.3]])
    pos = rng.permutation(nb + 5)[:nb].reshape(nb, 1, 1).astype(np.int64)
    pos[::7] = -1
    out = np.full(nb + 5, -1.5)
    congruence_scatter(A, Tr, Tc, pos, out)
    keep = pos[:, 0, 0] >= 0
    expected = np.full(nb + 5, -1.5)
    expected[pos[keep, 0, 0]] = (0.7 * A[keep, 0, 0]) * 1.3
    assert np.array_equal(out, expected)
