"""selected_inverse (Takahashi recurrences) against np.linalg.inv on the pattern of L.

L comes either from CHOLMOD (supernodal structure turned simplicial, so it carries the
amalgamation's explicit zeros) or from a dense NumPy Cholesky with its exact fill, which
keeps this test independent of the CHOLMOD wrapper.
"""
import numpy as np
import pytest

from glmm_sparse._core._cholmod import SymbolicFactor
from glmm_sparse._core._selinv import selected_inverse

KINDS = ("block", "crossed", "sparse", "dense")
SEEDS = (0, 1, 2)
TOL = 1e-10


def on_pattern(Z, indptr, indices):
    """Entries of dense Z at the CSC positions (indices, column)."""
    return Z[indices, np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))]


def lower_csc(L, mask):
    """(indptr, indices, data) int64 CSC of L restricted to the lower-triangular mask."""
    mask = np.tril(mask) | np.eye(L.shape[0], dtype=bool)
    cols = [np.flatnonzero(mask[:, j]) for j in range(L.shape[0])]
    indptr = np.concatenate([[0], np.cumsum([len(c) for c in cols])]).astype(np.int64)
    indices = np.concatenate(cols).astype(np.int64)
    return indptr, indices, on_pattern(L, indptr, indices)


def assert_selected_inverse(indptr, indices, Lx, M):
    """selected_inverse(L) equals inv(M) on the lower pattern of L, M = L L'."""
    Zx = selected_inverse(indptr, indices, Lx)
    assert Zx.shape == Lx.shape and Zx.dtype == np.float64
    expected = on_pattern(np.linalg.inv(M), indptr, indices)
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(Zx, expected, rtol=0, atol=TOL * scale)


@pytest.mark.parametrize("size", ["small", "large"])
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", KINDS)
def test_cholmod_factor(spd, to_upper_csc, kind, seed, size):
    M = spd(kind, seed, size)
    ip, ix, data = to_upper_csc(M)
    F = SymbolicFactor(ip, ix, M.shape[0])
    F.factorize(data)
    perm = F.perm()
    assert_selected_inverse(*F.sparse_L(), M[np.ix_(perm, perm)])


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", ["crossed", "sparse"])
def test_cholmod_factor_with_zero_values_in_pattern(spd, to_upper_csc, kind, seed):
    M = spd(kind, seed, "large")
    ip, ix, data = to_upper_csc(M)
    cols = np.repeat(np.arange(M.shape[0]), np.diff(ip))
    data = np.where((ix != cols) & (np.arange(len(ix)) % 3 == 0), 0.0, data)
    Mz = np.zeros_like(M)
    Mz[ix, cols] = data
    Mz = np.triu(Mz) + np.triu(Mz, 1).T
    F = SymbolicFactor(ip, ix, M.shape[0])
    F.factorize(data)
    perm = F.perm()
    assert_selected_inverse(*F.sparse_L(), Mz[np.ix_(perm, perm)])


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", KINDS)
def test_numpy_factor_with_exact_fill(spd, kind, seed):
    M = spd(kind, seed)
    L = np.linalg.cholesky(M)
    assert_selected_inverse(*lower_csc(L, L != 0), M)


@pytest.mark.parametrize("n", [1, 2, 5, 40])
def test_numpy_factor_full_lower_pattern(n):
    G = np.random.default_rng(n).standard_normal((n, n))
    M = G @ G.T / n + np.eye(n)
    L = np.linalg.cholesky(M)
    assert_selected_inverse(*lower_csc(L, np.ones_like(L, dtype=bool)), M)


@pytest.mark.parametrize("n", [2, 10, 60])
def test_tridiagonal_has_no_fill(n):
    rng = np.random.default_rng(n)
    off = rng.uniform(-1.0, 1.0, n - 1)
    M = np.diag(rng.uniform(2.5, 4.0, n)) + np.diag(off, 1) + np.diag(off, -1)
    L = np.linalg.cholesky(M)
    band = np.eye(n, dtype=bool) | np.eye(n, k=-1, dtype=bool)
    assert np.array_equal(L != 0, band)
    assert_selected_inverse(*lower_csc(L, band), M)
