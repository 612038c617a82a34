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


def level_problem(nlev, k, m, seed):
    """A single term's Z'WZ blocks D (SPD), its T (lower triangular) and C = Z'W[X y]."""
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((nlev, 6, k))
    D = Z.transpose(0, 2, 1) @ Z
    T = np.tril(rng.uniform(0.3, 1.5, (k, k)))
    C = rng.standard_normal((nlev * k, m))
    return D, T, C


def dense_level_update(D, T, C, beta):
    """The same quantities from dense NumPy, level by level."""
    nlev, k, _ = D.shape
    L = np.linalg.cholesky(T.T @ D @ T + beta * np.eye(k))
    R = np.concatenate([np.linalg.solve(L[l], T.T @ C[l * k:(l + 1) * k])
                        for l in range(nlev)])
    logdet = 2.0 * np.log(np.diagonal(L, axis1=1, axis2=2)).sum()
    return L, R, R.T @ R, logdet


@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("m", [1, 4])
def test_level_update_matches_dense_and_the_separate_kernels(k, m):
    from glmm_sparse._core import _lambda

    nlev = 700  # more than one chunk of levels
    D, T, C = level_problem(nlev, k, m, seed=k + m)
    L, R, G = np.zeros((nlev, k, k)), np.zeros((nlev * k, m)), np.zeros((m, m))
    bad, logdet = _blockdiag.level_update(D, T, C, 1.0, L, R, G, 0, nlev)
    L0, R0, G0, ld0 = dense_level_update(D, T, C, 1.0)
    assert bad == -1
    np.testing.assert_allclose(L, L0, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(R, R0, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(G, G0, rtol=1e-12)
    assert np.array_equal(G, G.T)
    assert logdet == pytest.approx(ld0, rel=1e-13)
    # the separate kernels (congruence, Cholesky, T'C, forward solve) give the same bits
    (_, _, _), pos, _ = block_problem(nlev, k, seed=0)
    values = np.zeros(int(pos.max()) + 1)
    _lambda.congruence_scatter(D, T, T, pos, values)
    Ls = np.zeros_like(L)
    _blockdiag.block_cholesky(values, pos, 1.0, Ls)
    TC = np.empty_like(C)
    _lambda.lambdat_apply(T, C, TC)
    Rs = np.empty_like(C)
    _blockdiag.block_lower_solve(Ls, TC, Rs)
    assert np.array_equal(L, Ls) and np.array_equal(R, Rs)


def test_level_update_in_parts_adds_up_to_the_whole():
    nlev, k, m = 501, 2, 3
    D, T, C = level_problem(nlev, k, m, seed=4)
    L, R, G = np.zeros((nlev, k, k)), np.zeros((nlev * k, m)), np.zeros((m, m))
    _, logdet = _blockdiag.level_update(D, T, C, 1.0, L, R, G, 0, nlev)
    L2, R2, parts, lds = np.zeros_like(L), np.zeros_like(R), [], []
    for lo, hi in ((0, 0), (0, 200), (200, 501)):
        Gp = np.full((m, m), np.nan)  # overwritten, not added to
        _, ld = _blockdiag.level_update(D, T, C, 1.0, L2, R2, Gp, lo, hi)
        parts.append(Gp)
        lds.append(ld)
    assert np.array_equal(L, L2) and np.array_equal(R, R2)
    assert np.array_equal(parts[0], np.zeros((m, m))) and lds[0] == 0.0
    np.testing.assert_allclose(parts[1] + parts[2], G, rtol=1e-13)
    assert sum(lds) == pytest.approx(logdet, rel=1e-14)


@pytest.mark.parametrize("k", [1, 2])
def test_level_update_reports_the_first_failing_pivot(k):
    nlev = 10
    D, T, C = level_problem(nlev, k, 2, seed=7)
    D[6] = -D[6]  # level 6's M is negative definite: its first pivot fails with beta 0
    L, R, G = np.zeros((nlev, k, k)), np.zeros((nlev * k, 2)), np.zeros((2, 2))
    bad, _ = _blockdiag.level_update(D, T, C, 0.0, L, R, G, 0, nlev)
    assert bad == 6 * k
    nan = D.copy()
    nan[3, k - 1, k - 1] = np.nan  # a NaN reaches level 3's first pivot through T
    bad, _ = _blockdiag.level_update(nan, T, C, 1.0, L, R, G, 0, nlev)
    assert bad == 3 * k
    if k == 2:  # the second pivot: M_5 = diag(1, -1)
        D[6] = -D[6]
        D[5] = np.diag([1.0, -1.0])
        bad, _ = _blockdiag.level_update(D, np.eye(2), C, 0.0, L, R, G, 0, nlev)
        assert bad == 11


def test_level_update_refuses_other_shapes():
    D, T, C = level_problem(4, 2, 3, seed=1)
    L, R, G = np.zeros((4, 2, 2)), np.zeros((8, 3)), np.zeros((3, 3))
    D3, T3, C3 = level_problem(4, 3, 3, seed=1)
    with pytest.raises(ValueError, match="k = 1 or 2"):
        _blockdiag.level_update(D3, T3, C3, 1.0, np.zeros((4, 3, 3)), np.zeros((12, 3)), G, 0, 4)
    with pytest.raises(ValueError, match="T must be k x k"):
        _blockdiag.level_update(D, np.eye(1), C, 1.0, L, R, G, 0, 4)
    with pytest.raises(ValueError, match=r"C and R must be \(nlev \* k, m\)"):
        _blockdiag.level_update(D, T, C, 1.0, L, np.zeros((8, 2)), G, 0, 4)
    with pytest.raises(ValueError, match="G must be m x m"):
        _blockdiag.level_update(D, T, C, 1.0, L, R, np.zeros((2, 2)), 0, 4)
    with pytest.raises(ValueError, match="levels lo .. hi - 1"):
        _blockdiag.level_update(D, T, C, 1.0, L, R, G, 2, 5)
    with pytest.raises(ValueError, match="L_out must have the shape"):
        _blockdiag.level_update(D, T, C, 1.0, np.zeros((3, 2, 2)), R, G, 0, 4)
