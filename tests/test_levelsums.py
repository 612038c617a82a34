"""levelsums: a term's per-level sums in one buffer row, each distinct product once when
the term's columns are columns of X, moved into the Sums' arrays in their usual layout.

The reference is add_term_sums (the full k k + k m + 2 layout, itself tested against
the dense Z in tests/core/test_crossprod.py) on the same rows.
"""
import numpy as np
import pytest
from glmm_sparse._core._crossprod import add_column_sums, add_term_sums, padded_width

from glmm_sparse.levelsums import LevelSums, shared_products
from glmm_sparse.terms import ReTerm


def test_shared_products_of_a_random_slope():
    """(1 + x | g) with X = [1 x]: [X y] = [1 x y], 5 distinct products of the 4 + 6."""
    plan = shared_products(("(Intercept)", "x"), ("(Intercept)", "x"))
    pairs = list(zip(plan.left.tolist(), plan.right.tolist()))
    assert pairs == [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2)]
    assert plan.width == 7 and padded_width(plan.width) == 8  # one cache line a level
    assert plan.diag.tolist() == [0, 1, 1, 3]  # (1,1) (1,x) (x,1) (x,x)
    assert plan.cross.tolist() == [0, 1, 2, 1, 3, 4]  # rows 1 and x against 1, x, y


@pytest.mark.parametrize("cnames, xnames", [
    (("(Intercept)",), ("(Intercept)", "x")),  # one column: add_term_sums
    (("(Intercept)", "z"), ("(Intercept)", "x")),  # z is not in X
    (("x", "x"), ("(Intercept)", "x")),  # a column twice
])
def test_shared_products_not_taken(cnames, xnames):
    assert shared_products(cnames, xnames) is None


def term(name, nlev, cnames):
    return ReTerm(name, tuple(cnames), [f"{name}{i}" for i in range(nlev)],
                  np.empty(0, dtype=np.int64), np.empty((0, len(cnames))))


def rows(rng, n, xnames):
    """[X y - c] as a batch's XB, with the intercept's ones, and a column per name."""
    XB = rng.standard_normal((n, len(xnames) + 1))
    for j, name in enumerate(xnames):
        if name == "(Intercept)":
            XB[:, j] = 1.0
    return XB


def columns_of(XB, cnames, xnames):
    """A term's columns as a batch frame holds them (the intercept's too: ones)."""
    return np.ascontiguousarray(XB[:, [xnames.index(c) for c in cnames]])


@pytest.mark.parametrize("unit_weights", [True, False])
@pytest.mark.parametrize("cnames_list, xnames", [
    ([("(Intercept)", "x")], ("(Intercept)", "x")),
    ([("x", "(Intercept)"), ("(Intercept)",)], ("(Intercept)", "x", "z")),
    ([("(Intercept)", "z", "x")], ("(Intercept)", "x", "z")),
    ([("z", "x")], ("(Intercept)", "x", "z")),
])
def test_level_sums_equal_add_term_sums(cnames_list, xnames, unit_weights):
    """Every Sums array after move_into equals add_term_sums' on the same batches: to
    the last bit with unit weights (each product is the same product of the same two
    floats), to rounding with weights ((w a) b for (w b) a in the k x k block); the
    column sizes equal add_column_sums' to the bit."""
    rng = np.random.default_rng(len(xnames) + 10 * unit_weights)
    nlevs = [400, 30]
    terms = [term(f"g{t}", nlevs[t], c) for t, c in enumerate(cnames_list)]
    sums = LevelSums(terms, xnames)
    m = len(xnames) + 1
    expected = [np.zeros((t.nlev, t.k * t.k + t.k * m + 2)) for t in terms]
    sumsq, nonzero = [np.zeros(t.k) for t in terms], [np.zeros(t.k, np.int64) for t in terms]
    sumsq_ref = [np.zeros(t.k) for t in terms]
    nonzero_ref = [np.zeros(t.k, np.int64) for t in terms]
    for n in (700, 500):  # two batches
        XB = rows(rng, n, xnames)
        XB[rng.random(n) < 0.3, :-1] = 0.0  # zeros, but for the intercept's ones
        XB[:, [j for j, c in enumerate(xnames) if c == "(Intercept)"]] = 1.0
        w = np.ones(n) if unit_weights else rng.uniform(0.2, 3.0, n)
        yc = rng.standard_normal(n)
        codes = [rng.integers(0, t.nlev, n).astype(np.int32) for t in terms]
        xs = [columns_of(XB, t.cnames, xnames) for t in terms]
        for task in sums.tasks(codes, xs, XB, w, yc, sumsq, nonzero):
            task()
        for t, (c, X, F) in enumerate(zip(codes, xs, expected)):
            add_term_sums(c, X, XB, w, yc, F)
            add_column_sums(X, sumsq_ref[t], nonzero_ref[t])
    diag = [np.zeros((t.nlev, t.k, t.k)) for t in terms]
    cross = [np.zeros((t.nlev * t.k, m)) for t in terms]
    level_n = [np.zeros(t.nlev) for t in terms]
    level_y = [np.zeros(t.nlev) for t in terms]
    sums.move_into(diag, cross, level_n, level_y)
    assert sums.buffers == [None] * len(terms)  # let go once moved
    for t, F in enumerate(expected):
        k = terms[t].k
        kk, km = k * k, k * m
        want = (F[:, :kk].reshape(-1, k, k), F[:, kk:kk + km].reshape(-1, m))
        for got, ref in zip((diag[t], cross[t]), want):
            if unit_weights:
                np.testing.assert_array_equal(got, ref)
            else:
                np.testing.assert_allclose(got, ref, rtol=1e-13, atol=1e-13)
        np.testing.assert_array_equal(level_n[t], F[:, kk + km])
        np.testing.assert_array_equal(level_y[t], F[:, kk + km + 1])
    for t in range(len(terms)):  # the column sizes to the bit, as add_column_sums gives them
        np.testing.assert_array_equal(sumsq[t], sumsq_ref[t])
        np.testing.assert_array_equal(nonzero[t], nonzero_ref[t])
    shared = [p is not None for p in sums.plans]
    assert shared == [len(c) >= 2 for c in cnames_list]
