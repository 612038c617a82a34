"""Block-diagonal Cholesky kernels (_core._blockdiag) and BlockDiagonalFactor against dense
NumPy, and against CHOLMOD on the same matrix."""
import numpy as np
import pytest
from glmm_sparse._core._cholmod import CholmodNotPositiveDefiniteError, SymbolicFactor

from glmm_sparse._core import _blockdiag
from glmm_sparse.blockdiag import BlockDiagonalFactor


def block_problem(nlev, k, seed):
    """Random SPD blocks, M's upper triangle in CSC order, and the positions map."""
    rng = np.random.default_rng(seed)
    G = rng.standard_normal((nlev, k, k))
    blocks = G @ G.transpose(0, 2, 1) + 0.1 * np.eye(k)
    indptr, indices, values = [0], [], []
    pos = np.full((nlev, k, k), -1, dtype=np.int64)
    for level in range(nlev):
        for c in range(k):
            for r in range(c + 1):
                pos[level, r, c] = len(values)
                indices.append(level * k + r)
                values.append(blocks[level, r, c])
            indptr.append(len(values))
    dense = np.zeros((nlev * k, nlev * k))
    for level in range(nlev):
        dense[level * k:(level + 1) * k, level * k:(level + 1) * k] = blocks[level]
    return (np.array(indptr), np.array(indices), np.array(values)), pos, dense


@pytest.mark.parametrize("k", [1, 2, 3, 4])
@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_factor_logdet_and_solves_match_dense(k, beta):
    (_, _, values), pos, dense = block_problem(30, k, seed=k)
    M = dense + beta * np.eye(dense.shape[0])
    F = BlockDiagonalFactor(pos, values.shape[0])
    F.factorize(values, beta)
    indptr_L, rows, Lx = F.sparse_L()
    L = np.zeros_like(M)
    L[rows, np.repeat(np.arange(M.shape[0]), np.diff(indptr_L))] = Lx
    np.testing.assert_allclose(L @ L.T, M, atol=1e-12)
    np.testing.assert_allclose(L, np.linalg.cholesky(M), atol=1e-12)
    assert F.logdet() == pytest.approx(np.linalg.slogdet(M)[1], rel=1e-12)
    B = np.random.default_rng(0).standard_normal((M.shape[0], 3))
    np.testing.assert_allclose(F.solve("L", B), np.linalg.solve(L, B), atol=1e-10)
    np.testing.assert_allclose(F.solve("Lt", B), np.linalg.solve(L.T, B), atol=1e-10)
    np.testing.assert_allclose(F.solve("A", B), np.linalg.solve(M, B), atol=1e-10)
    np.testing.assert_array_equal(F.solve("P", B), B)
    np.testing.assert_allclose(F.solve("L", B[:, 0]), np.linalg.solve(L, B[:, 0]), atol=1e-10)
    assert F.factor_nnz() == 30 * k * (k + 1) // 2 == Lx.shape[0]


@pytest.mark.parametrize("k", [1, 2, 3])
def test_same_criterion_pieces_as_cholmod(k):
    (indptr, indices, values), pos, dense = block_problem(50, k, seed=10 + k)
    ours = BlockDiagonalFactor(pos, values.shape[0])
    ours.factorize(values, 1.0)
    cholmod = SymbolicFactor(indptr, indices, dense.shape[0], "simplicial", "natural")
    cholmod.factorize(values, 1.0)
    assert ours.logdet() == pytest.approx(cholmod.logdet(), rel=1e-13)
    B = np.random.default_rng(1).standard_normal((dense.shape[0], 4))
    perm = cholmod.perm()
    np.testing.assert_allclose(ours.solve("A", B), cholmod.solve("A", B), atol=1e-11)
    np.testing.assert_allclose(np.linalg.norm(ours.solve("L", B)),
                               np.linalg.norm(cholmod.solve("L", B[perm])), rtol=1e-12)


def test_not_positive_definite_names_the_column_then_recovers():
    (_, _, values), pos, _ = block_problem(5, 2, seed=3)
    F = BlockDiagonalFactor(pos, values.shape[0])
    bad = values.copy()
    bad[pos[3, 1, 1]] = -50.0
    with pytest.raises(CholmodNotPositiveDefiniteError, match="column 7") as info:
        F.factorize(bad)
    assert info.value.column == 7
    with pytest.raises(Exception, match="call factorize"):
        F.logdet()
    F.factorize(values)
    assert np.isfinite(F.logdet())


def test_kernels_refuse_positions_outside_the_values_and_wrong_shapes():
    (_, _, values), pos, _ = block_problem(4, 2, seed=0)
    L = np.zeros((4, 2, 2))
    far = pos.copy()
    far[2, 0, 1] = values.shape[0] + 5
    with pytest.raises(ValueError, match="outside values"):
        _blockdiag.block_cholesky(values, far, 0.0, L)
    below = pos.copy()
    below[1, 0, 0] = -1
    with pytest.raises(ValueError, match="outside values"):
        _blockdiag.block_cholesky(values, below, 0.0, L)
    with pytest.raises(ValueError, match="L_out must have the shape"):
        _blockdiag.block_cholesky(values, pos, 0.0, np.zeros((3, 2, 2)))
    with pytest.raises(ValueError, match=r"L must be \(nlev, k, k\)"):
        _blockdiag.block_lower_solve(np.zeros((4, 3, 1)), np.zeros((12, 2)), np.zeros((12, 2)))
    with pytest.raises(ValueError, match=r"L must be \(nlev, k, k\)"):
        _blockdiag.block_upper_solve(np.zeros((1, 20, 1)), np.zeros((20, 1)), np.zeros((20, 1)))
    with pytest.raises(ValueError, match=r"\(nlev \* k, m\)"):
        _blockdiag.block_lower_solve(L, np.zeros((7, 2)), np.zeros((7, 2)))
    F = BlockDiagonalFactor(pos, values.shape[0])
    with pytest.raises(ValueError, match="expected"):
        F.factorize(values[:-1])
    F.factorize(values)
    with pytest.raises(ValueError, match="unknown system"):
        F.solve("LD", np.zeros(8))
    with pytest.raises(ValueError, match="rows"):
        F.solve("L", np.zeros(9))
