"""SymbolicFactor (CHOLMOD, supernodal LL') against dense NumPy on small SPD problems.

Oracles: slogdet for logdet, np.linalg.solve for each solve system, the dense L and P
rebuilt from sparse_L() and perm() for P M P' = L L'. The pattern is fixed at
construction, so refactorizing with zeros in it must keep the full factor structure.
"""
import numpy as np
import pytest

from glmm_sparse._core._cholmod import (
    CholmodError,
    CholmodNotPositiveDefiniteError,
    SymbolicFactor,
)

KINDS = ("block", "crossed", "sparse", "dense")
SEEDS = (0, 1, 2)
TOL = 1e-10


def assert_close(actual, expected, tol=TOL):
    """|actual - expected| <= tol * max(1, max|expected|), elementwise."""
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=tol * scale)


def dense_L(F):
    """The factor L of F as a dense lower-triangular array (permuted order)."""
    indptr, indices, data = F.sparse_L()
    L = np.zeros((F.n, F.n))
    L[indices, np.repeat(np.arange(F.n), np.diff(indptr))] = data
    return L


def factored(M, to_upper_csc, beta=0.0):
    """A SymbolicFactor of the pattern of M, factorized with M's values."""
    indptr, indices, data = to_upper_csc(M)
    F = SymbolicFactor(indptr, indices, M.shape[0])
    F.factorize(data, beta=beta)
    return F


@pytest.mark.parametrize("size", ["small", "large"])
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("beta", [0.0, 0.75])
def test_logdet_matches_slogdet(spd, to_upper_csc, kind, seed, size, beta):
    M = spd(kind, seed, size)
    F = factored(M, to_upper_csc, beta)
    sign, expected = np.linalg.slogdet(M + beta * np.eye(M.shape[0]))
    assert sign == 1.0
    assert F.logdet() == pytest.approx(expected, rel=TOL, abs=TOL)


@pytest.mark.parametrize("size", ["small", "large"])
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", KINDS)
def test_factor_reproduces_permuted_matrix(spd, to_upper_csc, kind, seed, size):
    M = spd(kind, seed, size)
    F = factored(M, to_upper_csc)
    perm = F.perm()
    assert np.array_equal(np.sort(perm), np.arange(M.shape[0]))
    L = dense_L(F)
    assert np.array_equal(L, np.tril(L))
    assert np.all(np.diag(L) > 0)
    assert_close(L @ L.T, M[np.ix_(perm, perm)])


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", KINDS)
def test_sparse_L_layout(spd, to_upper_csc, kind, seed):
    M = spd(kind, seed)
    indptr, indices, data = factored(M, to_upper_csc).sparse_L()
    assert indptr.dtype == indices.dtype == np.int64 and data.dtype == np.float64
    assert indptr[0] == 0 and indptr[-1] == len(indices) == len(data)
    for j in range(M.shape[0]):
        rows = indices[indptr[j]:indptr[j + 1]]
        assert rows[0] == j, "diagonal first"
        assert np.all(np.diff(rows) > 0), "rows sorted, no duplicates"


def solve_oracle(system, Mb, L, perm, B):
    """Dense answer of F.solve(system, B) for A = Mb, factor L and permutation perm."""
    if system == "A":
        return np.linalg.solve(Mb, B)
    if system == "L":
        return np.linalg.solve(L, B)
    if system == "Lt":
        return np.linalg.solve(L.T, B)
    if system == "P":
        return B[perm]
    X = np.empty_like(B)
    X[perm] = B
    return X


@pytest.mark.parametrize("ncol", [None, 1, 4])
@pytest.mark.parametrize("system", ["A", "L", "Lt", "P", "Pt"])
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", KINDS)
def test_solve_matches_dense(spd, to_upper_csc, kind, seed, system, ncol):
    M = spd(kind, seed, "large")
    beta = 0.25
    F = factored(M, to_upper_csc, beta)
    rng = np.random.default_rng(100 + seed)
    B = rng.standard_normal(M.shape[0] if ncol is None else (M.shape[0], ncol))
    B_before = B.copy()
    X = F.solve(system, B)
    assert X.shape == B.shape
    assert np.array_equal(B, B_before), "right side untouched"
    expected = solve_oracle(system, M + beta * np.eye(M.shape[0]), dense_L(F), F.perm(), B)
    if system in ("P", "Pt"):
        assert np.array_equal(X, expected)
    else:
        assert_close(X, expected)


def test_permutation_solves_round_trip(spd, to_upper_csc):
    F = factored(spd("crossed", 0, "large"), to_upper_csc)
    b = np.arange(F.n, dtype=float)
    assert np.array_equal(F.solve("P", b), b[F.perm()])
    assert np.array_equal(F.solve("Pt", b)[F.perm()], b)
    assert np.array_equal(F.solve("Pt", F.solve("P", b)), b)


def zero_some_offdiagonal(indptr, indices, data, rng):
    """Copy of data with a random half of the off-diagonal values set to exactly 0."""
    cols = np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))
    off = np.flatnonzero(indices != cols)
    out = data.copy()
    out[rng.choice(off, size=len(off) // 2, replace=False)] = 0.0
    return out


@pytest.mark.parametrize("all_zero", [False, True])
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", ["crossed", "sparse"])
def test_refactorize_with_zeros_keeps_pattern(spd, to_upper_csc, kind, seed, all_zero):
    M = spd(kind, seed, "large")
    indptr, indices, data = to_upper_csc(M)
    F = SymbolicFactor(indptr, indices, M.shape[0])
    nnz_symbolic = F.factor_nnz()
    F.factorize(data)
    L_pattern = F.sparse_L()[:2]
    cols = np.repeat(np.arange(M.shape[0]), np.diff(indptr))
    rng = np.random.default_rng(seed)
    zeroed = np.where(indices == cols, data, 0.0) if all_zero else zero_some_offdiagonal(
        indptr, indices, data, rng)
    F.factorize(zeroed)
    Mz = np.zeros_like(M)
    Mz[indices, cols] = zeroed
    Mz = np.triu(Mz) + np.triu(Mz, 1).T
    assert F.logdet() == pytest.approx(np.linalg.slogdet(Mz)[1], rel=TOL, abs=TOL)
    assert F.factor_nnz() == nnz_symbolic
    assert all(np.array_equal(a, b) for a, b in zip(F.sparse_L()[:2], L_pattern))
    F.factorize(data)
    assert F.factor_nnz() == nnz_symbolic
    assert F.logdet() == pytest.approx(np.linalg.slogdet(M)[1], rel=TOL, abs=TOL)
    assert_close(dense_L(F) @ dense_L(F).T, M[np.ix_(F.perm(), F.perm())])
    new_pattern = F.sparse_L()[:2]
    assert all(np.array_equal(a, b) for a, b in zip(new_pattern, L_pattern))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", KINDS)
def test_refactorize_with_new_values(spd, to_upper_csc, kind, seed):
    M1, M2 = spd(kind, seed, "large"), spd(kind, seed + 50, "large")
    union = (M1 != 0) | (M2 != 0)   # each matrix has exact zeros where only the other is
    indptr, indices, _ = to_upper_csc(np.where(union, 1.0, 0.0))
    cols = np.repeat(np.arange(M1.shape[0]), np.diff(indptr))
    F = SymbolicFactor(indptr, indices, M1.shape[0])
    for M in (M1, M2, M1):
        F.factorize(M[indices, cols])
        assert F.logdet() == pytest.approx(np.linalg.slogdet(M)[1], rel=TOL, abs=TOL)


def indefinite_shift(M):
    """beta such that M + beta I has exactly one negative eigenvalue."""
    ev = np.linalg.eigvalsh(M)
    return -(ev[0] + ev[1]) / 2


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", KINDS)
def test_indefinite_raises_with_column_then_recovers(spd, to_upper_csc, kind, seed):
    M = spd(kind, seed, "large")
    indptr, indices, data = to_upper_csc(M)
    F = SymbolicFactor(indptr, indices, M.shape[0])
    beta = indefinite_shift(M)
    with pytest.raises(CholmodNotPositiveDefiniteError) as info:
        F.factorize(data, beta=beta)
    column = info.value.column
    assert isinstance(column, int) and 0 <= column < M.shape[0]
    assert not F.is_factorized
    with pytest.raises(CholmodError):
        F.logdet()
    # column k failed: the leading k x k block of P(M + beta I)P' is PD, k + 1 is not
    perm = F.perm()
    Ms = (M + beta * np.eye(M.shape[0]))[np.ix_(perm, perm)]
    assert np.linalg.eigvalsh(Ms[:column, :column]).min(initial=1.0) > 0
    assert np.linalg.eigvalsh(Ms[:column + 1, :column + 1]).min() < 0
    F.factorize(data)
    assert F.is_factorized
    assert F.logdet() == pytest.approx(np.linalg.slogdet(M)[1], rel=TOL, abs=TOL)
    assert_close(dense_L(F) @ dense_L(F).T, M[np.ix_(perm, perm)])


def test_not_positive_definite_error_is_a_cholmod_error():
    assert issubclass(CholmodNotPositiveDefiniteError, CholmodError)


def test_queries_before_factorize_raise(spd, to_upper_csc):
    M = spd("crossed", 0)
    indptr, indices, _ = to_upper_csc(M)
    F = SymbolicFactor(indptr, indices, M.shape[0])
    assert not F.is_factorized
    assert F.n == M.shape[0] and F.nnz == len(indices)
    assert F.factor_nnz() >= len(indices)
    assert np.array_equal(np.sort(F.perm()), np.arange(M.shape[0]))
    for query in (F.logdet, lambda: F.solve("A", np.ones(F.n)), F.sparse_L):
        with pytest.raises(CholmodError):
            query()


@pytest.mark.parametrize("delta", [-1, 1])
def test_wrong_number_of_values_raises(spd, to_upper_csc, delta):
    indptr, indices, data = to_upper_csc(spd("sparse", 0))
    F = SymbolicFactor(indptr, indices, len(indptr) - 1)
    with pytest.raises(ValueError):
        F.factorize(np.ones(len(data) + delta))


@pytest.mark.parametrize("system", ["B", "a", "LD", "Pt ", ""])
def test_unknown_system_raises(spd, to_upper_csc, system):
    F = factored(spd("sparse", 0), to_upper_csc)
    with pytest.raises(ValueError):
        F.solve(system, np.ones(F.n))


@pytest.mark.parametrize("shape", [(3,), (3, 2)])
def test_right_side_with_wrong_rows_raises(spd, to_upper_csc, shape):
    F = factored(spd("sparse", 0), to_upper_csc)
    with pytest.raises(ValueError):
        F.solve("A", np.ones(shape))


def test_indptr_of_wrong_length_raises():
    with pytest.raises(ValueError):
        SymbolicFactor(np.array([0, 1]), np.array([0]), 2)


def test_one_by_one():
    F = SymbolicFactor(np.array([0, 1]), np.array([0]), 1)
    F.factorize(np.array([4.0]))
    assert F.n == 1 and F.nnz == 1
    assert F.logdet() == pytest.approx(np.log(4.0), rel=1e-15)
    assert np.array_equal(F.perm(), [0])
    assert F.solve("A", np.array([2.0])) == pytest.approx([0.5], rel=1e-15)
    assert F.solve("L", np.array([2.0])) == pytest.approx([1.0], rel=1e-15)
    assert F.solve("A", np.array([[2.0, 8.0]])) == pytest.approx(np.array([[0.5, 2.0]]), rel=1e-15)
    indptr, indices, data = F.sparse_L()
    assert list(indptr) == [0, 1] and list(indices) == [0] and list(data) == [2.0]
    F.factorize(np.array([1.0]), beta=3.0)
    assert F.logdet() == pytest.approx(np.log(4.0), rel=1e-15)
    with pytest.raises(CholmodNotPositiveDefiniteError) as info:
        F.factorize(np.array([-1.0]))
    assert info.value.column == 0
    F.factorize(np.array([9.0]))
    assert F.logdet() == pytest.approx(np.log(9.0), rel=1e-15)


@pytest.mark.parametrize(
    "indptr, indices, match",
    [
        ([0, 1, 3], [1, 0], "indices must have"),
        ([0, 1, 3], [0], "indices must have"),
        ([0, 1, 3], [0, -1, 1], r"row indices must lie in \[0, 2\)"),
        ([0, 1, 3], [0, 0, 2], r"row indices must lie in \[0, 2\)"),
        ([0, 2, 1], [0, 0], "never decrease"),
        ([0, 1], [0], "n \\+ 1"),
    ],
)
def test_malformed_pattern_is_rejected_before_cholmod_reads_it(indptr, indices, match):
    """A pattern CHOLMOD would read out of bounds is a ValueError, never a crash."""
    with pytest.raises(ValueError, match=match):
        SymbolicFactor(np.array(indptr), np.array(indices), 2)


@pytest.mark.parametrize("mode", ["simplicial", "supernodal"])
@pytest.mark.parametrize("ordering", ["natural", "amd", "default", "metis", "nesdis"])
@pytest.mark.parametrize("kind", KINDS)
def test_every_ordering_factors_the_same_matrix(spd, to_upper_csc, kind, ordering, mode):
    M = spd(kind, 1, "large")
    indptr, indices, data = to_upper_csc(M)
    F = SymbolicFactor(indptr, indices, M.shape[0], mode, ordering)
    F.factorize(data)
    perm = F.perm()
    L = dense_L(F)
    assert_close(L @ L.T, M[np.ix_(perm, perm)])
    assert F.logdet() == pytest.approx(np.linalg.slogdet(M)[1], rel=TOL, abs=TOL)


def test_unknown_ordering_is_refused(spd, to_upper_csc):
    indptr, indices, _ = to_upper_csc(spd("block", 0, "small"))
    with pytest.raises(ValueError, match="ordering must be one of"):
        SymbolicFactor(indptr, indices, indptr.shape[0] - 1, "simplicial", "colamd")


def test_factorize_leaves_the_process_thread_settings_as_it_found_them(spd, to_upper_csc):
    """CHOLMOD runs serial inside factorize; OpenMP and OpenBLAS settings are restored."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    before = [(i["filepath"], i["num_threads"]) for i in threadpoolctl.threadpool_info()]
    indptr, indices, data = to_upper_csc(spd("crossed", 0, "large"))
    F = SymbolicFactor(indptr, indices, indptr.shape[0] - 1, "supernodal")
    F.factorize(data)
    after = [(i["filepath"], i["num_threads"]) for i in threadpoolctl.threadpool_info()]
    assert after == before
    gomp = [i["filepath"] for i in threadpoolctl.threadpool_info() if "libgomp" in i["filepath"]]
    if gomp:  # the OpenMP setting the factorization lowers to 0 around CHOLMOD's call
        import ctypes

        lib = ctypes.CDLL(gomp[0])
        lib.omp_set_max_active_levels(3)
        F.factorize(data)
        assert lib.omp_get_max_active_levels() == 3


def test_concurrent_factorizations_restore_the_thread_settings(spd, to_upper_csc):
    """Many threads factorizing at once: the first in makes CHOLMOD serial, the last out
    restores; no interleaving leaves the process's BLAS or OpenMP settings changed."""
    from concurrent.futures import ThreadPoolExecutor

    threadpoolctl = pytest.importorskip("threadpoolctl")
    indptr, indices, data = to_upper_csc(spd("crossed", 1, "large"))
    factors = [SymbolicFactor(indptr, indices, indptr.shape[0] - 1, "supernodal")
               for _ in range(8)]
    before = [(i["filepath"], i["num_threads"]) for i in threadpoolctl.threadpool_info()]
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(5):
            list(pool.map(lambda F: [F.factorize(data) for _ in range(20)], factors))
    after = [(i["filepath"], i["num_threads"]) for i in threadpoolctl.threadpool_info()]
    assert after == before
