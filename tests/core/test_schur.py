"""The Schur-complement factor (schur.py) and its kernels (_core/_schur.pyx) against dense
NumPy: S - B' D^-1 B tile by tile, L, log det and the solves of M = [D B; B' C]."""
import numpy as np
import pytest
import scipy.sparse as sp
from glmm_sparse._core._cholmod import CholmodError, CholmodNotPositiveDefiniteError

from glmm_sparse import schur
from glmm_sparse._core import _schur
from glmm_sparse.pattern import MPattern


def random_csr(q1, q2, per_row, seed):
    """B (q1 x q2) with about per_row entries a row, some rows empty, columns sorted."""
    rng = np.random.default_rng(seed)
    B = sp.random(q1, q2, density=per_row / q2, random_state=rng, format="csr")
    B.data = rng.standard_normal(B.nnz)
    B.sort_indices()
    return B


def spd_problem(nlev, q2, per_row, seed, k=1, c_density=0.05):
    """M with a block-diagonal first block (nlev blocks of k x k), as
    objective.build_pattern lays it out: the upper triangle in CSC, the first term's
    levels first, each level's k rows of B with the same columns; and the dense matrix."""
    rng = np.random.default_rng(seed)
    q1 = nlev * k
    Bl = random_csr(nlev, q2, per_row, seed)  # the columns each level meets
    B = sp.kron(Bl != 0, np.ones((k, 1)), format="csr").astype(float)
    B.data = rng.standard_normal(B.nnz)
    G = rng.standard_normal((nlev, k, k))
    D = sp.block_diag(list(G @ G.transpose(0, 2, 1) + 0.5 * np.eye(k)))
    C = sp.random(q2, q2, density=c_density, random_state=rng)
    C = C + C.T
    M = sp.bmat([[D, B], [B.T, C]]).toarray()
    M += np.diag(np.abs(M).sum(axis=1) * rng.uniform(0.6, 1.2, q1 + q2) + 0.1)
    U = sp.csc_matrix(np.triu(M))
    U.sort_indices()
    diag_pos = np.full((nlev, k, k), -1, dtype=np.int64)
    for c in range(q1):  # the first q1 columns hold their level's block only
        for at in range(U.indptr[c], U.indptr[c + 1]):
            r = U.indices[at]
            diag_pos[c // k, r % k, c % k] = at
    pattern = MPattern(q1 + q2, U.indptr.astype(np.int64), U.indices.astype(np.int64),
                       (diag_pos, np.zeros((q2, 1, 1), dtype=np.int64)), ())
    return pattern, U.data.copy(), M


def test_row_cuts_mark_where_each_tile_starts_in_each_row():
    B = random_csr(50, 37, 6, seed=1)
    tile, ntiles = 8, 5
    cuts = np.empty((50, ntiles + 1), dtype=np.int32)
    _schur.row_cuts(B.indptr.astype(np.int32), B.indices.astype(np.int32), tile, ntiles, cuts)
    for i in range(50):
        cols = B.indices[B.indptr[i]:B.indptr[i + 1]]
        want = B.indptr[i] + np.searchsorted(cols, tile * np.arange(ntiles + 1))
        want[-1] = B.indptr[i + 1]
        np.testing.assert_array_equal(cuts[i], want)


@pytest.mark.parametrize("tile", [4, 16, 64])
def test_schur_subtract_equals_dense_lower_triangle(tile):
    q1, q2 = 80, 45
    B = random_csr(q1, q2, 9, seed=tile)
    rng = np.random.default_rng(tile)
    S0 = rng.standard_normal((q2, q2))
    ntiles = -(-q2 // tile)
    bptr, bcol = B.indptr.astype(np.int32), B.indices.astype(np.int32)
    cuts = np.empty((q1, ntiles + 1), dtype=np.int32)
    _schur.row_cuts(bptr, bcol, tile, ntiles, cuts)
    pairs = np.array([(a, b) for a in range(ntiles) for b in range(a + 1)], dtype=np.int32)
    S = S0.copy()
    _schur.schur_subtract(B.data, bcol, cuts, pairs, S)
    Bd = B.toarray()
    want = S0 - Bd.T @ Bd
    lower = np.tril_indices(q2)
    np.testing.assert_allclose(S[lower], want[lower], rtol=0, atol=1e-12)
    upper = np.triu_indices(q2, 1)
    np.testing.assert_array_equal(S[upper], S0[upper])  # never written


def test_schur_subtract_refuses_a_pair_above_the_diagonal_or_outside():
    B = random_csr(10, 8, 3, seed=0)
    cuts = np.empty((10, 3), dtype=np.int32)
    _schur.row_cuts(B.indptr.astype(np.int32), B.indices.astype(np.int32), 4, 2, cuts)
    S = np.zeros((8, 8))
    for bad in ([[0, 1]], [[2, 0]]):
        with pytest.raises(ValueError, match="tile pair"):
            _schur.schur_subtract(B.data, B.indices.astype(np.int32), cuts,
                                  np.array(bad, dtype=np.int32), S)


@pytest.mark.parametrize("beta", [0.0, 1.0])
@pytest.mark.parametrize("tile", [8, 256])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_factor_logdet_and_solves_match_dense(beta, tile, k, monkeypatch):
    monkeypatch.setattr(schur, "TILE", tile)
    pattern, values, M = spd_problem(120 // k, 40, 7, seed=3, k=k)
    A = M + beta * np.eye(M.shape[0])
    F = schur.SchurFactor(pattern)
    F.factorize(values, beta)
    L = np.linalg.cholesky(A)
    indptr, rows, Lx = F.sparse_L()
    got = np.zeros_like(A)
    got[rows, np.repeat(np.arange(A.shape[0]), np.diff(indptr))] = Lx
    np.testing.assert_allclose(got, L, rtol=0, atol=1e-12)
    assert np.all(np.diff(rows)[np.diff(np.repeat(np.arange(A.shape[0]),
                                                  np.diff(indptr))) == 0] > 0)  # sorted
    assert F.factor_nnz() == Lx.shape[0]
    np.testing.assert_allclose(F.logdet(), np.linalg.slogdet(A)[1], rtol=1e-13)
    rng = np.random.default_rng(0)
    for rhs in (rng.standard_normal(A.shape[0]), rng.standard_normal((A.shape[0], 3))):
        np.testing.assert_allclose(F.solve("L", rhs), np.linalg.solve(L, rhs), atol=1e-12)
        np.testing.assert_allclose(F.solve("Lt", rhs), np.linalg.solve(L.T, rhs), atol=1e-12)
        np.testing.assert_allclose(F.solve("A", rhs), np.linalg.solve(A, rhs), atol=1e-12)
        np.testing.assert_array_equal(F.solve("P", rhs), rhs)
        np.testing.assert_array_equal(F.solve("Pt", rhs), rhs)
    np.testing.assert_array_equal(F.perm(), np.arange(A.shape[0]))


def test_the_bits_do_not_depend_on_how_the_tiles_are_split(monkeypatch):
    monkeypatch.setattr(schur, "TILE", 8)
    pattern, values, _ = spd_problem(200, 60, 12, seed=4)
    factors = []
    for slots in (1, 2, 5):
        monkeypatch.setattr(schur, "SLOTS", slots)
        F = schur.SchurFactor(pattern)
        assert len(F.runs) == min(slots, len(np.concatenate(F.runs)))
        F.factorize(values, 1.0)
        factors.append(F.S.copy())
    for S in factors[1:]:
        np.testing.assert_array_equal(S, factors[0])


def test_not_positive_definite_names_the_column():
    pattern, values, _ = spd_problem(30, 10, 4, seed=5)
    F = schur.SchurFactor(pattern)
    bad = values.copy()
    bad[7] = -1.0  # the 8th diagonal entry of D (the first q1 columns hold it alone)
    with pytest.raises(CholmodNotPositiveDefiniteError) as err:
        F.factorize(bad)
    assert err.value.column == 7
    with pytest.raises(CholmodError, match="no numeric factorization"):
        F.logdet()
    # a non-positive pivot in S: shrink one diagonal entry of C far below its row
    diag_c = pattern.indptr[30 + 4 + 1] - 1  # last entry of column 34 is its diagonal
    assert pattern.indices[diag_c] == 34
    bad = values.copy()
    bad[diag_c] = -5.0
    with pytest.raises(CholmodNotPositiveDefiniteError) as err:
        F.factorize(bad)
    assert 30 <= err.value.column <= 34


def test_applies_to_a_first_term_of_a_few_columns_with_a_narrow_rest(monkeypatch):
    pattern, _, _ = spd_problem(15, 10, 4, seed=6, k=2)
    assert schur.applies(pattern)
    one_term = MPattern(pattern.q, pattern.indptr, pattern.indices, pattern.diag_pos[:1], ())
    assert not schur.applies(one_term)
    monkeypatch.setattr(schur, "MAX_K", 1)
    assert not schur.applies(pattern)
    monkeypatch.setattr(schur, "MAX_K", 8)
    monkeypatch.setattr(schur, "MAX_COLUMNS", 9)
    assert not schur.applies(pattern)
    with pytest.raises(ValueError, match="first term of at most"):
        schur.SchurFactor(pattern)


def test_applies_refuses_patterns_beyond_the_kernels_int32_indices():
    from types import SimpleNamespace

    pattern, _, _ = spd_problem(15, 10, 4, seed=6, k=2)
    big = SimpleNamespace(diag_pos=pattern.diag_pos, q=pattern.q, nnz=2**31 - 1)
    assert schur.applies(SimpleNamespace(diag_pos=pattern.diag_pos, q=pattern.q,
                                         nnz=2**31 - 2))
    assert not schur.applies(big)


def test_level_rows_solve_equals_dense_block_solves():
    rng = np.random.default_rng(9)
    nlev, k = 12, 3
    Bl = random_csr(nlev, 20, 5, seed=9)
    B = sp.kron(Bl != 0, np.ones((k, 1)), format="csr").astype(float)
    B.data = rng.standard_normal(B.nnz)
    L = np.tril(rng.standard_normal((nlev, k, k))) + 3 * np.eye(k)
    Bd = B.toarray()
    out = np.empty(B.nnz)
    for transpose in (False, True):
        _schur.level_rows_solve(L, B.data, B.indptr.astype(np.int32), out, transpose)
        got = sp.csr_matrix((out, B.indices, B.indptr), shape=B.shape).toarray()
        for lev in range(nlev):
            blk = slice(lev * k, lev * k + k)
            want = np.linalg.solve(L[lev].T if transpose else L[lev], Bd[blk])
            np.testing.assert_allclose(got[blk], want, atol=1e-12)
    in_place = B.data.copy()
    _schur.level_rows_solve(L, in_place, B.indptr.astype(np.int32), in_place, False)
    _schur.level_rows_solve(L, B.data, B.indptr.astype(np.int32), out, False)
    np.testing.assert_array_equal(in_place, out)
    ragged = B.indptr.astype(np.int32).copy()
    ragged[1] -= 1
    with pytest.raises(ValueError, match="level 0 do not have the same columns"):
        _schur.level_rows_solve(L, B.data, ragged, out, False)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_selected_inverse_equals_the_dense_inverse_on_the_pattern_of_L(k):
    pattern, values, M = spd_problem(90 // k, 30, 6, seed=7, k=k)
    A = M + np.eye(M.shape[0])
    F = schur.SchurFactor(pattern)
    F.factorize(values, 1.0)
    inv = F.selected_inverse()
    Ainv = np.linalg.inv(A)
    indptr, rows, _ = F.sparse_L()
    cols = np.repeat(np.arange(A.shape[0]), np.diff(indptr))
    at = inv.positions(rows, cols)
    assert at.min() >= 0
    np.testing.assert_allclose(inv.values[at], Ainv[rows, cols], rtol=1e-11, atol=1e-14)
    # off L's pattern: pairs of levels of the first term, B's structural zeros
    in_b = (rows >= 90) & (cols < 90)
    Bd = np.zeros((90, 30), dtype=bool)
    Bd[cols[in_b], rows[in_b] - 90] = True
    i, j = np.argwhere(~Bd)[0]
    assert inv.positions(np.array([3 * k, 90 + j]), np.array([0, i])).tolist() == [-1, -1]


def test_on_pattern_product_equals_dense_b_times_sigma():
    B = random_csr(40, 12, 4, seed=8)
    rng = np.random.default_rng(8)
    G = rng.standard_normal((12, 12))
    Sigma = G + G.T
    out = np.empty(B.nnz)
    _schur.on_pattern_product(B.data, B.indptr.astype(np.int32), B.indices.astype(np.int32),
                              Sigma, out)
    rows = np.repeat(np.arange(40), np.diff(B.indptr))
    np.testing.assert_allclose(out, (B.toarray() @ Sigma)[rows, B.indices], atol=1e-13)
