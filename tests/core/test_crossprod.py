"""Cross-product kernels against the dense model matrix: Z'WZ blocks, Z'WB and B'WB.

Z is never formed by the package; here it is, for one term, as the n x (nlev k) matrix
whose column g k + r is (codes == g) * Xt[:, r]. The kernels add into their output, so
accumulating row chunks one after another must equal one pass over all rows.
"""
import numpy as np
import pytest
from glmm_sparse._core._crossprod import (
    add_column_sums,
    add_pair_blocks,
    add_shared_sums,
    add_term_cross,
    add_term_diag,
    add_term_sums,
    add_term_times,
    add_weighted_gram,
    level_sums_buffer,
    padded_width,
)
from glmm_sparse._core._crossprod import pair_index as compiled_pair_index

SHAPES = [(1, 1, 1), (40, 3, 1), (200, 7, 2), (500, 25, 3), (300, 10, 4)]   # (n, nlev, k)
TOL = 1e-12


def assert_close(actual, expected):
    """|actual - expected| <= TOL * max(1, max|expected|), elementwise."""
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=TOL * scale)


def dense_Z(codes, Xt, nlev):
    """n x (nlev k) model matrix of one term: column g k + r is (codes == g) Xt[:, r]."""
    n, k = Xt.shape
    Z = np.zeros((n, nlev * k))
    for r in range(k):
        Z[np.arange(n), codes * k + r] = Xt[:, r]
    return Z


def term(rng, n, nlev, k):
    """Random codes (some levels may be empty), covariates with an intercept column."""
    codes = rng.integers(0, nlev, n).astype(np.int64)
    Xt = np.column_stack([np.ones(n), rng.standard_normal((n, k - 1))])
    return codes, np.ascontiguousarray(Xt)


def weights(rng, n):
    """Positive prior weights with a few exact zeros."""
    w = rng.uniform(0.2, 3.0, n)
    w[rng.random(n) < 0.1] = 0.0
    return w


def diag_blocks(G, nlev, k):
    """The nlev diagonal k x k blocks of G, as (nlev, k, k)."""
    return np.stack([G[g * k:(g + 1) * k, g * k:(g + 1) * k] for g in range(nlev)])


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("n, nlev, k", SHAPES)
def test_add_term_diag(n, nlev, k, seed):
    rng = np.random.default_rng(seed)
    codes, Xt = term(rng, n, nlev, k)
    w = weights(rng, n)
    out = np.zeros((nlev, k, k))
    assert add_term_diag(codes, Xt, w, out) is None
    Z = dense_Z(codes, Xt, nlev)
    assert_close(out, diag_blocks(Z.T @ (w[:, None] * Z), nlev, k))


def pair_index(codes_t, codes_s, nlev_s):
    """Block number per row for the (level t, level s) pairs that occur, and the pairs."""
    pairs, block = np.unique(codes_t * nlev_s + codes_s, return_inverse=True)
    return block.astype(np.int64), np.column_stack(np.divmod(pairs, nlev_s))


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("ks", [1, 2, 3])
@pytest.mark.parametrize("n, nlev, kt", SHAPES)
def test_add_pair_blocks(n, nlev, kt, ks, seed):
    rng = np.random.default_rng(seed)
    codes_t, Xt = term(rng, n, nlev, kt)
    nlev_s = nlev + 3
    codes_s, Xs = term(rng, n, nlev_s, ks)
    w = weights(rng, n)
    block, pairs = pair_index(codes_t, codes_s, nlev_s)
    out = np.zeros((len(pairs), kt, ks))
    assert add_pair_blocks(block, Xt, Xs, w, out) is None
    C = dense_Z(codes_t, Xt, nlev).T @ (w[:, None] * dense_Z(codes_s, Xs, nlev_s))
    expected = np.stack([C[g * kt:(g + 1) * kt, h * ks:(h + 1) * ks] for g, h in pairs])
    assert_close(out, expected)
    # every nonzero of Z_t'WZ_s lies in one of the occurring pairs
    occurs = np.zeros((nlev, nlev_s), dtype=bool)
    occurs[pairs[:, 0], pairs[:, 1]] = True
    assert np.all(C[~np.kron(occurs, np.ones((kt, ks), dtype=bool))] == 0)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("m", [1, 4])
@pytest.mark.parametrize("n, nlev, k", SHAPES)
def test_add_term_cross(n, nlev, k, m, seed):
    rng = np.random.default_rng(seed)
    codes, Xt = term(rng, n, nlev, k)
    B = rng.standard_normal((n, m))
    w = weights(rng, n)
    out = np.zeros((nlev * k, m))
    assert add_term_cross(codes, Xt, B, w, out) is None
    assert_close(out, dense_Z(codes, Xt, nlev).T @ (w[:, None] * B))


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("n, m", [(1, 1), (30, 1), (200, 4), (500, 7)])
def test_add_weighted_gram(n, m, seed):
    rng = np.random.default_rng(seed)
    B = rng.standard_normal((n, m))
    w = weights(rng, n)
    out = np.zeros((m, m))
    assert add_weighted_gram(B, w, out) is None
    assert np.array_equal(out, out.T)
    assert_close(out, B.T @ (w[:, None] * B))


def all_kernels(rows, codes, Xt, Xs, block, B, w, outs):
    """Run every kernel on the given rows, adding into the buffers in outs."""
    def c(a):
        return np.ascontiguousarray(a[rows])
    add_term_diag(c(codes), c(Xt), c(w), outs["diag"])
    add_pair_blocks(c(block), c(Xt), c(Xs), c(w), outs["pair"])
    add_term_cross(c(codes), c(Xt), c(B), c(w), outs["cross"])
    add_weighted_gram(c(B), c(w), outs["gram"])


def problem(seed, n=400, nlev=12, k=3):
    """One random two-term problem and zeroed output buffers for all kernels."""
    rng = np.random.default_rng(seed)
    codes, Xt = term(rng, n, nlev, k)
    codes_s, Xs = term(rng, n, 5, 2)
    block, pairs = pair_index(codes, codes_s, 5)
    B, w = rng.standard_normal((n, 4)), weights(rng, n)
    outs = {"diag": np.zeros((nlev, k, k)), "pair": np.zeros((len(pairs), k, 2)),
            "cross": np.zeros((nlev * k, 4)), "gram": np.zeros((4, 4))}
    return (codes, Xt, Xs, block, B, w), outs


@pytest.mark.parametrize("split", [0, 1, 137, 399, 400])
@pytest.mark.parametrize("seed", [0, 1])
def test_row_chunks_accumulate(seed, split):
    args, whole = problem(seed)
    _, chunked = problem(seed)
    n = len(args[0])
    all_kernels(np.arange(n), *args, whole)
    all_kernels(np.arange(split), *args, chunked)
    all_kernels(np.arange(split, n), *args, chunked)
    for name in whole:
        assert_close(chunked[name], whole[name])


@pytest.mark.parametrize("seed", [0, 1])
def test_row_order_does_not_matter(seed):
    args, ordered = problem(seed)
    _, shuffled = problem(seed)
    n = len(args[0])
    all_kernels(np.arange(n), *args, ordered)
    all_kernels(np.random.default_rng(seed + 10).permutation(n), *args, shuffled)
    for name in ordered:
        assert_close(shuffled[name], ordered[name])


@pytest.mark.parametrize("seed", [0, 1])
def test_zero_weight_rows_equal_dropped_rows(seed):
    args, weighted = problem(seed)
    _, dropped = problem(seed)
    w = args[-1]
    all_kernels(np.arange(len(w)), *args, weighted)
    all_kernels(np.flatnonzero(w != 0), *args, dropped)
    for name in weighted:
        assert_close(weighted[name], dropped[name])


def test_codes_outside_the_output_are_rejected():
    """Kernels run without bounds checks, so a code past the output is refused up front."""
    codes = np.array([0, 3], dtype=np.int64)
    X = np.ones((2, 1))
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 2\)"):
        add_term_diag(codes, X, np.ones(2), np.zeros((2, 1, 1)))


def ones_kernels(codes, codes_s, block, nlev, nlev_s, nb, X, Xs, B, w):
    """Every kernel's output for one problem (X or Xs None: a column of ones)."""
    kt, ks = (1 if a is None else a.shape[1] for a in (X, Xs))
    outs = {"diag": np.zeros((nlev, kt, kt)), "pair": np.zeros((nb, kt, ks)),
            "cross": np.zeros((nlev * kt, B.shape[1])), "times": np.zeros(len(codes))}
    add_term_diag(codes, X, w, outs["diag"])
    add_pair_blocks(block, X, Xs, w, outs["pair"])
    add_term_cross(codes, X, B, w, outs["cross"])
    add_term_times(codes, X, B[:nlev, :kt].copy(), outs["times"])
    return outs


@pytest.mark.parametrize("code_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("seed", [0, 1])
def test_none_is_a_column_of_ones_and_int32_codes_equal_int64(seed, code_dtype):
    """Xt None (an intercept-only term) gives what an explicit column of ones gives, bit
    for bit, and int32 codes what int64 codes give."""
    rng = np.random.default_rng(seed)
    n, nlev, nlev_s = 300, 40, 7
    codes, codes_s = rng.integers(0, nlev, n), rng.integers(0, nlev_s, n)
    block, pairs = pair_index(codes, codes_s, nlev_s)
    B, w = rng.standard_normal((n, 3)), weights(rng, n)
    ones = np.ones((n, 1))
    Xs = np.ascontiguousarray(rng.standard_normal((n, 2)))
    for X, Y in ((None, None), (None, Xs), (ones, None)):
        explicit = ones_kernels(codes, codes_s, block, nlev, nlev_s, len(pairs),
                                ones if X is None else X, ones if Y is None else Y, B, w)
        implicit = ones_kernels(codes.astype(code_dtype), codes_s.astype(code_dtype),
                                block.astype(code_dtype), nlev, nlev_s, len(pairs), X, Y, B, w)
        for name in explicit:
            assert np.array_equal(implicit[name], explicit[name]), name


@pytest.mark.parametrize("code_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("n, nlev_t, nlev_s", [(1, 1, 1), (50, 3, 200), (400, 60, 9),
                                               (2000, 500, 40), (300, 1000, 1000)])
@pytest.mark.parametrize("seed", [0, 1])
def test_pair_index_equals_sorting_the_keys(n, nlev_t, nlev_s, seed, code_dtype):
    """The compiled pair index (no sort of n keys) against np.unique of the pair keys,
    with levels that have no rows on either side."""
    rng = np.random.default_rng(seed)
    codes_t = rng.integers(0, nlev_t, n).astype(code_dtype)
    codes_s = rng.integers(0, nlev_s, n).astype(code_dtype)
    block, lev_t, lev_s = compiled_pair_index(codes_t, codes_s, nlev_t, nlev_s)
    expected_block, pairs = pair_index(codes_t.astype(np.int64), codes_s.astype(np.int64), nlev_s)
    assert block.dtype == lev_t.dtype == lev_s.dtype == np.int32
    assert np.array_equal(block, expected_block)
    assert np.array_equal(np.column_stack([lev_t, lev_s]), pairs)


def test_pair_index_rejects_codes_outside_the_levels():
    codes = np.array([0, 2], dtype=np.int32)
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 2\)"):
        compiled_pair_index(codes, np.zeros(2, dtype=np.int32), 2, 1)


@pytest.mark.parametrize("seed", [0, 1])
def test_strided_columns_equal_contiguous_ones(seed):
    """A term's columns as a strided view of a wider buffer (the fixed-effects [X y] it
    shares, terms.shared_columns) give what a contiguous copy gives, bit for bit."""
    rng = np.random.default_rng(seed)
    n, nlev, nlev_s = 300, 20, 6
    buffer = rng.standard_normal((n, 6))
    view, Xs = buffer[:, 1:3], buffer[:, 4:5]
    codes, codes_s = rng.integers(0, nlev, n), rng.integers(0, nlev_s, n)
    block, pairs = pair_index(codes, codes_s, nlev_s)
    B, w = rng.standard_normal((n, 3)), weights(rng, n)
    strided = ones_kernels(codes, codes_s, block, nlev, nlev_s, len(pairs), view, Xs, B, w)
    copied = ones_kernels(codes, codes_s, block, nlev, nlev_s, len(pairs),
                          np.ascontiguousarray(view), np.ascontiguousarray(Xs), B, w)
    for name in copied:
        assert np.array_equal(strided[name], copied[name]), name


def unpack_sums(F, nlev, k, m):
    """add_term_sums' (nlev, k k + k m + 2) columns as (diag, cross, rows, y sums)."""
    kk, km = k * k, k * m
    return (F[:, :kk].reshape(nlev, k, k), F[:, kk:kk + km].reshape(nlev * k, m),
            F[:, kk + km], F[:, kk + km + 1])


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("m", [1, 3])
@pytest.mark.parametrize("n, nlev, k", SHAPES)
def test_add_term_sums(n, nlev, k, m, seed):
    """Every per-level sum against the dense Z: Z'WZ's diagonal blocks, Z'WB, rows and
    sums of yc per level (the first column of Xt is the intercept: Z's columns g k)."""
    rng = np.random.default_rng(seed)
    codes, Xt = term(rng, n, nlev, k)
    B = rng.standard_normal((n, m))
    w = weights(rng, n)
    yc = rng.standard_normal(n)
    F = np.zeros((nlev, k * k + k * m + 2))
    assert add_term_sums(codes, Xt, B, w, yc, F) is None
    diag, cross, rows, ysum = unpack_sums(F, nlev, k, m)
    Z = dense_Z(codes, Xt, nlev)
    assert_close(diag, diag_blocks(Z.T @ (w[:, None] * Z), nlev, k))
    assert_close(cross, Z.T @ (w[:, None] * B))
    Z1 = Z[:, ::k] != 0  # indicator of each row's level (column 0 of Xt is ones)
    np.testing.assert_array_equal(rows, Z1.sum(axis=0))
    assert_close(ysum, Z1.T.astype(float) @ yc)


@pytest.mark.parametrize("code_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("seed", [0, 1])
def test_add_term_sums_equals_the_separate_kernels_bit_for_bit(seed, code_dtype):
    """The fused kernel adds each row in order into the buffer, as add_term_diag,
    add_term_cross and np.bincount of all the rows do (prefetching changes no sum): equal
    to the last bit, with Xt None too; at more levels than rows ahead of the prefetch and
    fewer; two calls equal one call on the rows of both."""
    rng = np.random.default_rng(seed)
    for n, nlev, k in [(5000, 3000, 2), (700, 5, 3), (10, 4, 1)]:
        codes, Xt = term(rng, n, nlev, k)
        codes = codes.astype(code_dtype)
        B = rng.standard_normal((n, 3))
        w, yc = weights(rng, n), rng.standard_normal(n)
        for X in (Xt, None):
            kx = k if X is not None else 1
            F = np.zeros((nlev, kx * kx + kx * 3 + 2))
            half = n // 2
            for part in (slice(0, half), slice(half, n)):  # sums add into the buffer
                Xp = None if X is None else np.ascontiguousarray(X[part])
                add_term_sums(codes[part], Xp, np.ascontiguousarray(B[part]), w[part],
                              yc[part], F)
            D, C = np.zeros((nlev, kx, kx)), np.zeros((nlev * kx, 3))
            add_term_diag(codes, X, w, D)
            add_term_cross(codes, X, B, w, C)
            diag, cross, rows, ysum = unpack_sums(F, nlev, kx, 3)
            np.testing.assert_array_equal(diag, D)
            np.testing.assert_array_equal(cross, C)
            np.testing.assert_array_equal(rows, np.bincount(codes, minlength=nlev))
            np.testing.assert_array_equal(ysum, np.bincount(codes, weights=yc, minlength=nlev))


def test_add_term_sums_rejects_bad_shapes_and_codes():
    codes = np.array([0, 2], dtype=np.int64)
    B, w, yc = np.ones((2, 2)), np.ones(2), np.ones(2)
    with pytest.raises(ValueError, match="k \\* k"):
        add_term_sums(codes, None, B, w, yc, np.zeros((3, 4)))
    with pytest.raises(ValueError, match="codes must lie"):
        add_term_sums(codes, None, B, w, yc, np.zeros((2, 5)))
    with pytest.raises(ValueError, match="n rows"):
        add_term_sums(codes, None, B, w, np.ones(3), np.zeros((3, 5)))


@pytest.mark.parametrize("width, padded", [(1, 1), (2, 2), (3, 4), (4, 4), (5, 8), (7, 8),
                                           (8, 8), (9, 9), (10, 10), (11, 12), (12, 12),
                                           (15, 16), (16, 16), (17, 17), (23, 24)])
def test_padded_width(width, padded):
    """The fewest floats at least ``width`` for which, the first row starting on a cache
    line, no row spans more lines than ``width`` floats need (counted here row by row),
    where fewer floats would let some row span one more."""
    def worst_lines(w):
        return max((8 * w * r % 64 + 8 * w + 63) // 64 for r in range(64))

    assert padded_width(width) == padded
    assert worst_lines(padded) == (8 * width + 63) // 64
    assert all(worst_lines(w) > (8 * width + 63) // 64 for w in range(width, padded))
    with pytest.raises(ValueError, match="width"):
        padded_width(0)


@pytest.mark.parametrize("nlev, width", [(0, 5), (1, 1), (7, 12), (1000, 6), (1000, 7)])
def test_level_sums_buffer_is_zeros_on_a_cache_line(nlev, width):
    F = level_sums_buffer(nlev, width)
    assert F.shape == (nlev, padded_width(width)) and F.shape[1] >= width
    assert F.dtype == np.float64 and F.flags.c_contiguous
    assert F.flags.writeable and (F.size == 0 or F.ctypes.data % 64 == 0)
    np.testing.assert_array_equal(F, 0.0)
    with pytest.raises(ValueError, match="width"):
        level_sums_buffer(3, 0)


def test_add_term_sums_leaves_the_padding_alone():
    """Columns past k k + k m + 2 (level_sums_buffer's padding) are not written."""
    rng = np.random.default_rng(3)
    codes, _ = term(rng, 300, 20, 1)
    B, w, yc = rng.standard_normal((300, 3)), weights(rng, 300), rng.standard_normal(300)
    F = level_sums_buffer(20, 6)
    assert F.shape[1] == 8
    F[:, 6:] = 7.0
    add_term_sums(codes, None, B, w, yc, F)
    expected = np.zeros((20, 6))
    add_term_sums(codes, None, B, w, yc, expected)
    np.testing.assert_array_equal(F[:, :6], expected)
    np.testing.assert_array_equal(F[:, 6:], 7.0)


@pytest.mark.parametrize("unit_weights", [True, False])
@pytest.mark.parametrize("seed", [0, 1])
def test_add_shared_sums_against_dense_products(seed, unit_weights):
    """Each product (w B[:, left]) B[:, right] summed per level against NumPy, then the
    rows and the sums of yc per level (bincount's, to the bit); two calls on the halves
    equal one on all rows; the padding is left alone; the column sums of B[:, cols]
    equal add_column_sums' to the bit, added to what the outputs held."""
    rng = np.random.default_rng(seed)
    n, nlev, m = 3000, 2500, 4
    codes = rng.integers(0, nlev, n).astype(np.int32)
    B = rng.standard_normal((n, m))
    w = np.ones(n) if unit_weights else weights(rng, n)
    yc = rng.standard_normal(n)
    B[rng.random(n) < 0.2, 2] = 0.0
    left = np.array([0, 0, 2, 1, 3], dtype=np.intp)
    right = np.array([0, 3, 1, 1, 3], dtype=np.intp)
    cols = np.array([2, 0], dtype=np.intp)
    F = level_sums_buffer(nlev, left.shape[0] + 2)
    F[:, left.shape[0] + 2:] = -1.0
    sumsq, nonzero = np.full(2, 0.5), np.array([1, 2], dtype=np.int64)
    half = n // 2
    for part in (slice(0, half), slice(half, n)):
        assert add_shared_sums(codes[part], left, right, np.ascontiguousarray(B[part]),
                               w[part], yc[part], F, cols, sumsq, nonzero) is None
    sumsq_ref, nonzero_ref = np.full(2, 0.5), np.array([1, 2], dtype=np.int64)
    for part in (slice(0, half), slice(half, n)):  # the same rows in the same order
        add_column_sums(np.ascontiguousarray(B[part][:, cols]), sumsq_ref, nonzero_ref)
    np.testing.assert_array_equal(sumsq, sumsq_ref)
    np.testing.assert_array_equal(nonzero, nonzero_ref)
    assert nonzero[0] < n + 1  # the zeros of column 2 are not counted
    for j, (a, b) in enumerate(zip(left, right)):
        expected = np.bincount(codes, weights=(w * B[:, a]) * B[:, b], minlength=nlev)
        assert_close(F[:, j], expected)
    np.testing.assert_array_equal(F[:, 5], np.bincount(codes, minlength=nlev))
    np.testing.assert_array_equal(F[:, 6], np.bincount(codes, weights=yc, minlength=nlev))
    np.testing.assert_array_equal(F[:, 7], -1.0)


def test_add_shared_sums_rejects_bad_arguments():
    codes = np.array([0, 2], dtype=np.int64)
    B, w, yc = np.ones((2, 2)), np.ones(2), np.ones(2)
    one = np.zeros(1, dtype=np.intp)
    sq, nz = np.zeros(1), np.zeros(1, dtype=np.int64)

    def call(left=one, right=one, yc=yc, out=None, cols=one, sq=sq):
        out = np.zeros((3, 3)) if out is None else out
        add_shared_sums(codes, left, right, B, w, yc, out, cols, sq, nz)

    with pytest.raises(ValueError, match="same length"):
        call(right=np.zeros(2, dtype=np.intp))
    with pytest.raises(ValueError, match="at least len"):
        call(out=np.zeros((3, 2)))
    for bad in ({"right": one + 2}, {"left": one - 1}, {"cols": one + 2}):
        with pytest.raises(ValueError, match="2 columns"):
            call(**bad)
    with pytest.raises(ValueError, match="one entry per column"):
        call(sq=np.zeros(2))
    with pytest.raises(ValueError, match="same rows"):
        call(yc=np.ones(3))
    with pytest.raises(ValueError, match="codes must lie"):
        call(out=np.zeros((2, 3)))


@pytest.mark.parametrize("offset", [0, 1, 3, 5])
def test_add_term_sums_equal_wherever_the_rows_lie_on_cache_lines(offset):
    """Rows of 12 floats (k = 2, m = 3) starting ``offset`` floats past a cache line: from
    offset 5 on, some straddle three lines, all of which are prefetched; the sums equal
    those in level_sums_buffer's (padded) buffer to the last bit (prefetching changes no
    value), at more levels than rows ahead of the prefetch."""
    rng = np.random.default_rng(offset)
    n, nlev, k, m = 4000, 3000, 2, 3
    codes, Xt = term(rng, n, nlev, k)
    B, w, yc = rng.standard_normal((n, m)), weights(rng, n), rng.standard_normal(n)
    width = k * k + k * m + 2
    aligned = level_sums_buffer(nlev, width)
    raw = level_sums_buffer(nlev * width + 8, 1).ravel()
    shifted = raw[offset:offset + nlev * width].reshape(nlev, width)
    assert shifted.ctypes.data % 64 == 8 * offset
    add_term_sums(codes, Xt, B, w, yc, aligned)
    add_term_sums(codes, Xt, B, w, yc, shifted)
    np.testing.assert_array_equal(shifted, aligned[:, :width])
    np.testing.assert_array_equal(raw[:offset], 0.0)  # nothing written outside the rows
    np.testing.assert_array_equal(raw[offset + nlev * width:], 0.0)


@pytest.mark.parametrize("strided", [False, True])
@pytest.mark.parametrize("n, k", [(0, 1), (1, 1), (500, 3)])
def test_add_column_sums(n, k, strided):
    """Sums of squares and non-zero counts of each column against NumPy, added to what
    the outputs held; a strided Xt (columns of a wider matrix) too."""
    rng = np.random.default_rng(n + k)
    wide = rng.standard_normal((n, 2 * k))
    wide[rng.random((n, 2 * k)) < 0.3] = 0.0
    Xt = wide[:, ::2] if strided else np.ascontiguousarray(wide[:, :k])
    sumsq, nonzero = np.full(k, 2.0), np.full(k, 5, dtype=np.int64)
    assert add_column_sums(Xt, sumsq, nonzero) is None
    assert_close(sumsq, 2.0 + (Xt ** 2).sum(axis=0))
    np.testing.assert_array_equal(nonzero, 5 + np.count_nonzero(Xt, axis=0))
    # to the bit: each column's squares added row after row onto what sumsq held (the
    # order the streamed passes rely on for the same sums whatever the threads)
    for r in range(k):
        running = 2.0
        for x in Xt[:, r]:
            running = running + x * x
        assert sumsq[r] == running
    with pytest.raises(ValueError, match="one entry per column"):
        add_column_sums(Xt, np.zeros(k + 1), np.zeros(k, dtype=np.int64))
