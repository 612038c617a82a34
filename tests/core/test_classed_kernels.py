"""Count-class kernels (_classed) against dense NumPy.

B = Z0'WZ_s is formed densely here from one-hot level matrices; the kernels never form
it. The thread-split kernels (add_class_grams, combine_classes, row_quadratic_forms) must
give the same bits whatever split of classes or rows they are called with.
"""
import numpy as np
import pytest

from glmm_sparse._core._classed import (
    add_class_grams,
    bucket_rows,
    combine_classes,
    count_level_partners,
    csr_times,
    fill_level_rows,
    row_quadratic_forms,
    unpack_symmetric,
)

TOL = 1e-12
SHAPES = [(1, 1, 1, 1), (60, 5, 4, 1), (400, 30, 12, 2), (900, 50, 7, 3)]  # n, nlev0, nlev_s, k


def assert_close(actual, expected):
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=TOL * scale)


def one_hot(codes, nlev):
    Z = np.zeros((codes.shape[0], nlev))
    Z[np.arange(codes.shape[0]), codes] = 1.0
    return Z


def dense_term(codes, X, nlev):
    """n x (nlev k): column g k + r is (codes == g) X[:, r]."""
    n, k = X.shape
    Z = np.zeros((n, nlev * k))
    for r in range(k):
        Z[np.arange(n), codes * k + r] = X[:, r]
    return Z


def random_csr(rng, nrow, ncol, density):
    """(indptr, indices, data, dense) of a random CSR matrix with sorted columns."""
    dense = np.where(rng.random((nrow, ncol)) < density, rng.standard_normal((nrow, ncol)), 0.0)
    rows, cols = np.nonzero(dense)
    indptr = np.zeros(nrow + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=nrow), out=indptr[1:])
    return indptr, cols.astype(np.int32), dense[rows, cols], dense


@pytest.mark.parametrize("n, nlev0, nlev_s, k", SHAPES)
def test_bucket_rows_is_a_stable_sort_by_code(n, nlev0, nlev_s, k):
    rng = np.random.default_rng(n)
    codes = rng.integers(0, nlev0, n).astype(np.int32)
    start, rows = bucket_rows(codes, nlev0)
    assert start.dtype == np.int64 and rows.dtype == np.int32
    np.testing.assert_array_equal(rows, np.argsort(codes, kind="stable"))
    np.testing.assert_array_equal(np.diff(start), np.bincount(codes, minlength=nlev0))


@pytest.mark.parametrize("n, nlev0, nlev_s, k", SHAPES)
def test_count_level_partners_counts_co_occurring_levels(n, nlev0, nlev_s, k):
    rng = np.random.default_rng(n + 1)
    c0 = rng.integers(0, nlev0, n).astype(np.int32)
    cs = rng.integers(0, nlev_s, n).astype(np.int32)
    start, rows = bucket_rows(c0, nlev0)
    counts = np.full(nlev0, 5, dtype=np.int64)  # adds into the output
    count_level_partners(start, rows, cs, nlev_s, counts)
    expected = ((one_hot(c0, nlev0).T @ one_hot(cs, nlev_s)) > 0).sum(axis=1)
    np.testing.assert_array_equal(counts, expected + 5)


def fill(c0, terms, nlev0, w):
    """CSR of [Z0'W Z_1, Z0'W Z_2, ...] from fill_level_rows, as b_from_rows makes it."""
    start, rows = bucket_rows(c0, nlev0)
    counts = []
    for cs, X, nlev_s in terms:
        c = np.zeros(nlev0, dtype=np.int64)
        count_level_partners(start, rows, cs, nlev_s, c)
        counts.append(c * (1 if X is None else X.shape[1]))
    indptr = np.concatenate([[0], np.cumsum(np.sum(counts, axis=0))]).astype(np.int64)
    indices = np.full(indptr[-1], -1, dtype=np.int32)
    data = np.full(indptr[-1], np.nan)
    pos, col = indptr[:-1].copy(), 0
    for cs, X, nlev_s in terms:
        fill_level_rows(start, rows, cs, X, w, nlev_s, col, pos, indices, data)
        col += nlev_s * (1 if X is None else X.shape[1])
    np.testing.assert_array_equal(pos, indptr[1:])  # each row filled exactly
    return indptr, indices, data, col


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("n, nlev0, nlev_s, k", SHAPES)
def test_fill_level_rows_equals_dense_Z0tWZ(n, nlev0, nlev_s, k, weighted):
    rng = np.random.default_rng(n + 2)
    c0 = rng.integers(0, nlev0, n).astype(np.int32)
    c1 = rng.integers(0, nlev_s, n).astype(np.int32)
    c2 = rng.integers(0, 3, n).astype(np.int32)
    X1 = rng.standard_normal((n, k))
    w = rng.uniform(0.5, 2.0, n) if weighted else None
    indptr, indices, data, ncols = fill(c0, [(c1, X1, nlev_s), (c2, None, 3)], nlev0, w)
    W = np.ones(n) if w is None else w
    Z0 = one_hot(c0, nlev0)
    Z2 = np.hstack([dense_term(c1, X1, nlev_s), one_hot(c2, 3)])
    expected = Z0.T @ (W[:, None] * Z2)
    meets = Z0.T @ np.hstack([np.repeat(one_hot(c1, nlev_s), k, axis=1), one_hot(c2, 3)]) > 0
    dense = np.zeros((nlev0, ncols))
    rows = np.repeat(np.arange(nlev0), np.diff(indptr))
    dense[rows, indices] = data
    assert ncols == nlev_s * k + 3
    for g in range(nlev0):  # each row: sorted, distinct, exactly the co-occurring columns
        cols = indices[indptr[g]:indptr[g + 1]]
        assert np.all(np.diff(cols) > 0)
        np.testing.assert_array_equal(cols, np.flatnonzero(meets[g]))
    assert_close(dense, expected)


def test_fill_level_rows_keeps_exact_zeros_in_the_pattern():
    c0 = np.zeros(2, dtype=np.int32)
    cs = np.zeros(2, dtype=np.int32)
    X = np.array([[1.0, 1.0], [1.0, -1.0]])  # second column sums to 0 for level 0
    indptr, indices, data, _ = fill(c0, [(cs, X, 1)], 1, None)
    np.testing.assert_array_equal(indices, [0, 1])
    np.testing.assert_array_equal(data, [2.0, 0.0])


def test_codes_out_of_range_are_refused():
    with pytest.raises(ValueError, match=r"codes0 must lie in \[0, 3\)"):
        bucket_rows(np.array([0, 3], dtype=np.int32), 3)
    start, rows = bucket_rows(np.array([0, 1], dtype=np.int32), 2)
    with pytest.raises(ValueError, match="codes_s"):
        count_level_partners(start, rows, np.array([0, -1], dtype=np.int32), 4,
                             np.zeros(2, dtype=np.int64))


def dense_grams(dense_B, F, level_class, n_classes):
    a = np.hstack([dense_B, F])
    G = np.zeros((n_classes, a.shape[1], a.shape[1]))
    for g in range(a.shape[0]):
        G[level_class[g]] += np.outer(a[g], a[g])
    return G


def two_parts(G, q2):
    """The (Gz, Gr) of add_class_grams from full m x m class Grams G (n_classes, m, m)."""
    m = G.shape[1]
    zi = np.triu_indices(q2)
    ti = np.triu_indices(m - q2)
    Gz = G[:, zi[0], zi[1]]
    Gr = np.concatenate([G[:, :q2, q2:].reshape(G.shape[0], -1),
                         G[:, q2 + ti[0], q2 + ti[1]]], axis=1)
    return Gz, Gr


def class_problem(nrow, ncol, p1, n_classes, counts=False):
    """A CSR B (counts of rows: small whole numbers, or real values), F and classes."""
    rng = np.random.default_rng(nrow + 7 * counts)
    indptr, indices, data, dense = random_csr(rng, nrow, ncol, 0.2)
    if counts:
        data = rng.integers(1, 4, data.shape[0]).astype(np.float64)
        dense[dense != 0] = 0.0
        rows = np.repeat(np.arange(nrow), np.diff(indptr))
        dense[rows, indices] = data
    F = rng.standard_normal((nrow, p1))
    level_class = rng.integers(0, n_classes, nrow)
    order = np.argsort(level_class, kind="stable").astype(np.int64)
    class_start = np.concatenate([[0], np.cumsum(np.bincount(level_class, minlength=n_classes))])
    return indptr, indices, data, dense, F, level_class, order, class_start.astype(np.int64)


def empty_parts(n_classes, q2, p1, dtype=np.float64):
    return (np.zeros((n_classes, q2 * (q2 + 1) // 2), dtype=dtype),
            np.zeros((n_classes, q2 * p1 + p1 * (p1 + 1) // 2)))


GRAM_CASES = [(1, 1, 1, 1), (40, 9, 2, 3), (200, 60, 3, 7)]


@pytest.mark.parametrize("nrow, ncol, p1, n_classes", GRAM_CASES)
def test_add_class_grams_equals_dense_outer_products(nrow, ncol, p1, n_classes):
    indptr, indices, data, dense, F, level_class, order, class_start = class_problem(
        nrow, ncol, p1, n_classes)
    Gz, Gr = empty_parts(n_classes, ncol, p1)
    add_class_grams(indptr, indices, data, F, order, class_start, 0, n_classes, Gz, Gr)
    want_z, want_r = two_parts(dense_grams(dense, F, level_class, n_classes), ncol)
    assert_close(Gz, want_z)
    assert_close(Gr, want_r)
    for cut in range(n_classes + 1):  # any split between two calls: the same bits
        Gz2, Gr2 = empty_parts(n_classes, ncol, p1)
        add_class_grams(indptr, indices, data, F, order, class_start, 0, cut, Gz2, Gr2)
        add_class_grams(indptr, indices, data, F, order, class_start, cut, n_classes, Gz2, Gr2)
        np.testing.assert_array_equal(Gz2, Gz)
        np.testing.assert_array_equal(Gr2, Gr)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32])
@pytest.mark.parametrize("nrow, ncol, p1, n_classes", GRAM_CASES)
def test_integer_grams_of_counts_are_exact(nrow, ncol, p1, n_classes, dtype):
    """B of counts of rows: the integer Z2 block holds the float64 one's values exactly."""
    indptr, indices, data, dense, F, level_class, order, class_start = class_problem(
        nrow, ncol, p1, n_classes, counts=True)
    Gz, Gr = empty_parts(n_classes, ncol, p1, dtype)
    add_class_grams(indptr, indices, data, F, order, class_start, 0, n_classes, Gz, Gr)
    Gz64, Gr64 = empty_parts(n_classes, ncol, p1)
    add_class_grams(indptr, indices, data, F, order, class_start, 0, n_classes, Gz64, Gr64)
    assert Gz.dtype == dtype
    np.testing.assert_array_equal(Gz.astype(np.float64), Gz64)
    np.testing.assert_array_equal(Gr, Gr64)
    want_z, _ = two_parts(dense_grams(dense, F, level_class, n_classes), ncol)
    np.testing.assert_array_equal(Gz64, want_z)  # whole numbers: exact in float64 too


@pytest.mark.parametrize("dtype", [np.uint16, np.float64])
@pytest.mark.parametrize("nrow, ncol, p1, n_classes", GRAM_CASES)
def test_combine_classes_equals_the_weighted_dense_sum(nrow, ncol, p1, n_classes, dtype):
    indptr, indices, data, dense, F, level_class, order, class_start = class_problem(
        nrow, ncol, p1, n_classes, counts=dtype != np.float64)
    Gz, Gr = empty_parts(n_classes, ncol, p1, dtype)
    add_class_grams(indptr, indices, data, F, order, class_start, 0, n_classes, Gz, Gr)
    m = ncol + p1
    rng = np.random.default_rng(m)
    v = rng.standard_normal(n_classes)
    K = rng.standard_normal((m, m))
    K = K + K.T
    upper = np.triu_indices(m)
    Kp = np.ascontiguousarray(K[upper])
    want = (K + np.einsum("c,cij->ij", v, dense_grams(dense, F, level_class, n_classes)))[upper]
    H = np.full(Kp.shape, np.nan)
    combine_classes(v, Gz, Gr, Kp, 0, m, H)
    assert_close(H, want)
    for cut in range(m + 1):  # any split of the rows between two calls: the same bits
        H2 = np.full(Kp.shape, np.nan)
        combine_classes(v, Gz, Gr, Kp, 0, cut, H2)
        combine_classes(v, Gz, Gr, Kp, cut, m, H2)
        np.testing.assert_array_equal(H2, H)


def test_combine_classes_refuses_mismatched_shapes():
    Gz, Gr = empty_parts(2, 3, 1)
    K = np.zeros(10)  # m = 4 = q2 + p1
    with pytest.raises(ValueError, match="one entry"):
        combine_classes(np.ones(3), Gz, Gr, K, 0, 4, np.zeros(10))
    with pytest.raises(ValueError, match="packed m x m"):
        combine_classes(np.ones(2), Gz, Gr, np.zeros(15), 0, 5, np.zeros(15))
    with pytest.raises(ValueError, match="row range"):
        combine_classes(np.ones(2), Gz, Gr, K, 0, 5, np.zeros(10))


@pytest.mark.parametrize("m", [1, 2, 7])
def test_unpack_symmetric_inverts_the_packed_upper_triangle(m):
    A = np.random.default_rng(m).standard_normal((m, m))
    A = A + A.T
    out = np.full((m, m), np.nan)
    unpack_symmetric(np.ascontiguousarray(A[np.triu_indices(m)]), out)
    np.testing.assert_array_equal(out, A)


def test_add_class_grams_refuses_a_class_range_past_the_stack():
    indptr, indices, data = np.zeros(2, np.int64), np.zeros(0, np.int32), np.zeros(0)
    Gz, Gr = empty_parts(1, 0, 2)
    with pytest.raises(ValueError, match="class range"):
        add_class_grams(indptr, indices, data, np.zeros((1, 2)), np.zeros(1, np.int64),
                        np.array([0, 1], np.int64), 0, 2, Gz, Gr)


@pytest.mark.parametrize("indices, where", [([1, 0], "row 0"), ([0, 0], "row 0"),
                                            ([0, 3], "row 0")])
def test_rows_with_unsorted_repeated_or_outside_columns_are_refused(indices, where):
    indptr, indices = np.array([0, 2], np.int64), np.array(indices, np.int32)
    Gz, Gr = empty_parts(1, 3, 1)
    with pytest.raises(ValueError, match=f"strictly increasing .*failed at {where}"):
        add_class_grams(indptr, indices, np.ones(2), np.zeros((1, 1)), np.zeros(1, np.int64),
                        np.array([0, 1], np.int64), 0, 1, Gz, Gr)
    with pytest.raises(ValueError, match="strictly increasing"):
        csr_times(indptr, indices, np.ones(2), np.ones(3), np.zeros(1))


@pytest.mark.parametrize("nrow, ncol", [(1, 1), (30, 12), (150, 80)])
def test_csr_times_equals_dense(nrow, ncol):
    rng = np.random.default_rng(ncol)
    indptr, indices, data, dense = random_csr(rng, nrow, ncol, 0.3)
    x = rng.standard_normal(ncol)
    out = np.full(nrow, np.nan)
    csr_times(indptr, indices, data, x, out)
    assert_close(out, dense @ x)


@pytest.mark.parametrize("nrow, ncol", [(1, 1), (30, 12), (150, 80)])
def test_row_quadratic_forms_equal_dense(nrow, ncol):
    rng = np.random.default_rng(ncol + 7)
    indptr, indices, data, dense = random_csr(rng, nrow, ncol, 0.3)
    A = rng.standard_normal((ncol, ncol))
    Q = A @ A.T
    out = np.full(nrow, np.nan)
    row_quadratic_forms(indptr, indices, data, Q, 0, nrow, out)
    assert_close(out, np.einsum("ij,jk,ik->i", dense, Q, dense))
    split = np.full(nrow, np.nan)
    row_quadratic_forms(indptr, indices, data, Q, 0, nrow // 3, split)
    row_quadratic_forms(indptr, indices, data, Q, nrow // 3, nrow, split)
    np.testing.assert_array_equal(split, out)


@pytest.mark.parametrize("n, nlev0, nlev_s", [(1, 1, 1), (0, 3, 2), (60, 5, 4), (5000, 300, 40),
                                              (20_000, 50, 700)])
def test_pair_counts_by_runs_equal_dense_and_the_general_path(n, nlev0, nlev_s):
    """Two intercept terms, no weights: B from the double counting sort and run-length
    codes (b_from_rows' fast path) equals Z0'Z_s densely, and the general path's CSR
    (weights of one take it: float64 sums of ones) entry for entry."""
    from glmm_sparse.levelrows import b_from_rows

    rng = np.random.default_rng(n + nlev_s)
    c0 = rng.integers(0, nlev0, n).astype(np.int32)
    cs = rng.integers(0, nlev_s, n).astype(np.int32)
    fast = b_from_rows(c0, [cs], [None], [nlev0, nlev_s], [1, 1])
    general = b_from_rows(c0, [cs], [None], [nlev0, nlev_s], [1, 1], weights=np.ones(n))
    most = np.bincount(c0, minlength=nlev0).max(initial=0)  # a level's rows: the largest count
    assert fast.data.dtype == (np.uint8 if most <= 255 else np.uint16)
    np.testing.assert_array_equal(fast.indptr, general.indptr)
    np.testing.assert_array_equal(fast.indices, general.indices)
    np.testing.assert_array_equal(fast.data.astype(np.float64), general.data)
    dense = np.zeros((nlev0, nlev_s))
    dense[np.repeat(np.arange(nlev0), np.diff(fast.indptr)), fast.indices] = fast.data
    np.testing.assert_array_equal(dense, one_hot(c0, nlev0).T @ one_hot(cs, nlev_s))
    kept = c0.copy()
    again = b_from_rows(kept, [cs], [None], [nlev0, nlev_s], [1, 1], overwrite=True)
    np.testing.assert_array_equal(again.indptr, fast.indptr)
    np.testing.assert_array_equal(again.data, fast.data)
    np.testing.assert_array_equal(again.indices, fast.indices)
    # overwrite=True used c0's buffer for the partners sorted by both codes
    np.testing.assert_array_equal(kept, cs[np.lexsort((cs, c0))])
    # the partner codes in two bytes (as rowcodes keeps them): the same CSR
    short = b_from_rows(c0, [cs.astype(np.uint16)], [None], [nlev0, nlev_s], [1, 1])
    for a, b in ((short.indptr, fast.indptr), (short.indices, fast.indices),
                 (short.data, fast.data)):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype


def test_sorted_partners_orders_each_levels_partners():
    from glmm_sparse._core._classed import count_runs, level_starts, sorted_partners

    rng = np.random.default_rng(8)
    c0 = rng.integers(0, 30, 2000).astype(np.int32)
    cs = rng.integers(0, 12, 2000).astype(np.int32)
    start = level_starts(c0, 30)
    np.testing.assert_array_equal(start, np.concatenate([[0], np.cumsum(np.bincount(c0, minlength=30))]))
    out = np.empty_like(c0)
    sorted_partners(c0, cs, start, 12, out)
    order = np.lexsort((cs, c0))  # by c0, then cs
    np.testing.assert_array_equal(out, cs[order])
    counts = np.zeros(30, dtype=np.int64)
    count_runs(start, out, counts)
    np.testing.assert_array_equal(counts, [len(np.unique(cs[c0 == g])) for g in range(30)])
    short = np.empty_like(c0)  # uint16 partner codes: the same order
    sorted_partners(c0, cs.astype(np.uint16), start, 12, short)
    np.testing.assert_array_equal(short, out)
    for dtype in (np.int32, np.uint16):
        with pytest.raises(ValueError, match=r"codes_s must lie in \[0, 12\)"):
            sorted_partners(c0, np.where(cs == 3, 12, cs).astype(dtype), start, 12, out)
    with pytest.raises(ValueError, match="the same n rows"):
        sorted_partners(c0, cs[:-1], start, 12, out)
    with pytest.raises(ValueError, match=r"codes0 must lie in \[0, 30\)"):
        level_starts(np.array([0, 30], dtype=np.int32), 30)


def test_run_kernels_refuse_starts_and_positions_that_would_write_past_their_outputs():
    from glmm_sparse._core._classed import count_runs, fill_runs, level_starts, sorted_partners

    c0 = np.ones(8, dtype=np.int32)
    cs = np.arange(8, dtype=np.int32)
    out = np.empty(8, dtype=np.int32)
    with pytest.raises(ValueError, match=r"start0 must be level_starts\(codes0\)"):
        sorted_partners(c0, cs, np.array([0, 8, 8]), 8, out)  # level 1's rows put in level 0
    with pytest.raises(ValueError, match="begin at 0 and never decrease"):
        sorted_partners(c0, cs, np.array([0, 9, 8]), 8, out)
    with pytest.raises(ValueError, match="begin at 0 and never decrease"):
        count_runs(np.zeros(0, dtype=np.int64), cs, np.zeros(0, dtype=np.int64))
    start = level_starts(np.zeros(8, dtype=np.int32), 1)
    indices, data = np.zeros(8, dtype=np.int32), np.zeros(8, dtype=np.uint8)
    with pytest.raises(ValueError, match="pos must leave room"):
        fill_runs(start, cs, 0, np.array([0]), indices[:4], data[:4])
    with pytest.raises(ValueError, match="pos must leave room"):
        fill_runs(start, cs, 0, np.array([-1]), indices, data)
    fill_runs(start, cs, 0, np.array([0]), indices, data)  # with room: every run written
    np.testing.assert_array_equal(indices, cs)
    np.testing.assert_array_equal(data, np.ones(8))
