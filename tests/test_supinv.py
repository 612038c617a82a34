"""The supernodal selected inverse (_core/_supinv.pyx, condvar.SelectedInverse) against
np.linalg.inv of M.

Kernel level: random SPD matrices whose supernodal factors have different shapes (block
diagonal: narrow supernodes without rows below; crossed: a dense trailing block fed by
many singleton supernodes; banded: a chain; arrow: dense trailing rows; nested: a tree;
dense: one supernode), factored by CHOLMOD with mode="supernodal" in natural and AMD
order. Every stored entry of Z, enumerated from the layout here in Python, must equal
inv(M). Package level: M of lmer's objective on small seeded nested and crossed designs,
looked up in M's original order, against the dense M; the supernodal and simplicial
factors give the same entries and the same conditional variances.
"""
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from glmm_sparse._core._cholmod import CholmodError, SymbolicFactor
from glmm_sparse._core._supinv import (
    column_supernodes,
    supernodal_positions,
    supernodal_selected_inverse,
)

import glmm_sparse as gs
from glmm_sparse.condvar import SelectedInverse, condvar_blocks
from glmm_sparse.crossprod import accumulate
from glmm_sparse.formula import parse_formula
from glmm_sparse.frame import build_frame
from glmm_sparse.objective import LmmObjective

from csc import upper_csc

TOL = 1e-10  # relative to the largest entry of M^-1


# -- random SPD matrices with different supernode shapes ------------------------------------
def block(rng, nlev, k):
    """I_nlev (x) random k x k SPD blocks."""
    M = np.zeros((nlev * k, nlev * k))
    for g in range(nlev):
        G = rng.standard_normal((k + 2, k))
        M[g * k:(g + 1) * k, g * k:(g + 1) * k] = G.T @ G + np.eye(k)
    return M


def crossed(rng, n1, n2, nobs):
    """Z'WZ + I of two crossed scalar factors: the second's block fills in densely."""
    Z = np.zeros((nobs, n1 + n2))
    Z[np.arange(nobs), rng.integers(0, n1, nobs)] = rng.uniform(0.3, 2.0)
    Z[np.arange(nobs), n1 + rng.integers(0, n2, nobs)] = rng.uniform(0.3, 2.0)
    return Z.T @ (rng.uniform(0.5, 2.0, nobs)[:, None] * Z) + np.eye(n1 + n2)


def nested(rng, n1, per2, per3):
    """Z'Z + I of g3 in g2 in g1, ordered g3, g2, g1: a tree of small supernodes."""
    n2 = n1 * per2
    n3 = n2 * per3
    nobs = 3 * n3
    inner = rng.integers(0, n3, nobs)
    Z = np.zeros((nobs, n3 + n2 + n1))
    Z[np.arange(nobs), inner] = 1.3
    Z[np.arange(nobs), n3 + inner // per3] = 0.7
    Z[np.arange(nobs), n3 + n2 + inner // (per3 * per2)] = 0.4
    return Z.T @ Z + np.eye(n3 + n2 + n1)


def banded(rng, n, width):
    """Diagonally dominant band matrix: a chain of supernodes."""
    S = np.zeros((n, n))
    for d in range(1, width + 1):
        S += np.diag(rng.standard_normal(n - d), -d)
    S = S + S.T
    return S + np.diag(np.abs(S).sum(axis=1) + rng.uniform(0.5, 2.0, n))


def arrow(rng, n, m):
    """Sparse diagonal part with m dense trailing rows and columns."""
    B = rng.standard_normal((n - m, m)) * (rng.random((n - m, m)) < 0.3)
    A = np.diag(np.concatenate([np.abs(B).sum(axis=1) + rng.uniform(1.0, 3.0, n - m),
                                np.zeros(m)]))
    A[:n - m, n - m:] = B
    A[n - m:, :n - m] = B.T
    G = rng.standard_normal((m, m))
    A[n - m:, n - m:] = G @ G.T + (np.abs(B).sum(axis=0).max() + 1) * np.eye(m)
    return A


def dense(rng, n):
    """G G' / n + I: one supernode."""
    G = rng.standard_normal((n, n))
    return G @ G.T / n + np.eye(n)


SHAPES = {
    "block1": lambda rng: block(rng, 40, 1),
    "block3": lambda rng: block(rng, 30, 3),
    "crossed_small": lambda rng: crossed(rng, 12, 5, 40),
    "crossed": lambda rng: crossed(rng, 240, 60, 2000),
    "nested": lambda rng: nested(rng, 4, 5, 6),
    "banded": lambda rng: banded(rng, 150, 3),
    "arrow": lambda rng: arrow(rng, 200, 25),
    "dense": lambda rng: dense(rng, 10),
    "dense_large": lambda rng: dense(rng, 120),
}


def factored(M, ordering="natural"):
    """CHOLMOD's supernodal factor of M (forced), numeric."""
    ip, ix, data = upper_csc(M)
    F = SymbolicFactor(ip, ix, M.shape[0], "supernodal", ordering)
    F.factorize(data)
    assert F.is_supernodal
    return F


def layout(super_, pi, px, s):
    """(rows, cols, slots) of every entry of the supernodal layout, the upper part of each
    diagonal block included: rows and columns in permuted order, slots into L->x."""
    rows, cols, slots = [], [], []
    for J in range(len(super_) - 1):
        c0, nscol, nsrow = super_[J], super_[J + 1] - super_[J], pi[J + 1] - pi[J]
        r = s[pi[J]:pi[J + 1]]
        for c in range(nscol):
            rows.append(r)
            cols.append(np.full(nsrow, c0 + c))
            slots.append(px[J] + c * nsrow + np.arange(nsrow))
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(slots)


def inverse_in_layout(F):
    """(Z in L->x's layout from the kernel, the layout's (rows, cols, slots))."""
    super_, pi, px, s, Lx = F.supernodal_L()
    Zx = np.full_like(Lx, np.nan)
    supernodal_selected_inverse(super_, pi, px, s, Lx, Zx)
    return Zx, layout(super_, pi, px, s)


def assert_close(got, expected):
    assert got.shape == expected.shape
    if expected.size == 0:
        return
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOL * np.abs(expected).max())


def sym_pattern(indptr, indices):
    """The same pattern with both triangles: (indptr, indices) of the full symmetric CSC."""
    n = len(indptr) - 1
    cols = np.repeat(np.arange(n), np.diff(indptr))
    r = np.concatenate([indices, cols])
    c = np.concatenate([cols, indices])
    keep = np.unique(c * n + r)
    c, r = keep // n, keep % n
    return np.concatenate([[0], np.cumsum(np.bincount(c, minlength=n))]), r


# -- the kernel ----------------------------------------------------------------------------
@pytest.mark.parametrize("ordering", ["natural", "default"])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_every_stored_entry_equals_the_dense_inverse(shape, seed, ordering):
    M = SHAPES[shape](np.random.default_rng(seed))
    F = factored(M, ordering)
    perm = F.perm()
    Minv = np.linalg.inv(M)[np.ix_(perm, perm)]
    Zx, (rows, cols, slots) = inverse_in_layout(F)
    lower = rows >= cols
    assert_close(Zx[slots[lower]], Minv[rows[lower], cols[lower]])
    # the diagonal blocks' upper parts hold the mirror: every slot is Z at (row, col)
    assert_close(Zx[slots[~lower]], Minv[rows[~lower], cols[~lower]])
    assert not np.isnan(Zx).any()


def test_supernode_shapes_are_varied():
    """The shapes above do produce what they are meant to: wide supernodes with rows below
    them, singleton ones, and one supernode holding everything."""
    def widths(shape):
        super_, pi, _, _, _ = factored(SHAPES[shape](np.random.default_rng(0))).supernodal_L()
        return np.diff(super_), np.diff(pi) - np.diff(super_)

    nscol, nr = widths("crossed")
    assert nscol.max() >= 20 and (nscol == 1).sum() > 100 and nr.max() > 5
    nscol, nr = widths("block3")
    assert set(nscol) == {3} and nr.max() == 0
    nscol, nr = widths("dense_large")
    assert nscol.tolist() == [120] and nr.tolist() == [0]
    nscol, nr = widths("nested")
    assert len(nscol) > 1 and nr.max() > 0


@pytest.mark.parametrize("shape", ["crossed", "nested", "arrow", "banded"])
def test_positions_find_the_layout_and_nothing_else(shape):
    """supernodal_positions(i, j) is the slot of (i, j) for every lower entry of the layout
    and -1 for every other pair with i >= j."""
    F = factored(SHAPES[shape](np.random.default_rng(3)))
    super_, pi, px, s, _ = F.supernodal_L()
    rows, cols, slots = layout(super_, pi, px, s)
    lower = rows >= cols
    colsup = column_supernodes(super_)
    i, j = np.tril_indices(F.n)
    i, j = i.astype(np.int64), j.astype(np.int64)
    out = np.empty(i.shape[0], dtype=np.int64)
    supernodal_positions(super_, pi, px, s, colsup, i, j, out)
    expected = np.full((F.n, F.n), -1, dtype=np.int64)
    expected[rows[lower], cols[lower]] = slots[lower]
    np.testing.assert_array_equal(out, expected[i, j])
    assert (out < 0).any()  # the test covers pairs off the pattern


def test_positions_refuse_pairs_above_the_diagonal_and_out_of_range():
    F = factored(SHAPES["dense"](np.random.default_rng(0)))
    super_, pi, px, s, _ = F.supernodal_L()
    i = np.array([0, 5, 9, 10, -1], dtype=np.int64)
    j = np.array([1, 5, 0, 0, 0], dtype=np.int64)
    out = np.empty(5, dtype=np.int64)
    supernodal_positions(super_, pi, px, s, column_supernodes(super_), i, j, out)
    assert out.tolist() == [-1, 5 * 10 + 5, 9, -1, -1]  # one 10 x 10 supernode


def test_kernel_checks_its_buffers():
    F = factored(SHAPES["dense"](np.random.default_rng(0)))
    super_, pi, px, s, Lx = F.supernodal_L()
    with pytest.raises(ValueError, match="Lx and Zx"):
        supernodal_selected_inverse(super_, pi, px, s, Lx, np.empty(Lx.shape[0] - 1))
    with pytest.raises(ValueError, match="singular"):
        supernodal_selected_inverse(super_, pi, px, s, np.zeros_like(Lx), np.empty_like(Lx))


def test_supernodal_L_needs_a_numeric_supernodal_factor():
    M = SHAPES["crossed_small"](np.random.default_rng(0))
    ip, ix, data = upper_csc(M)
    F = SymbolicFactor(ip, ix, M.shape[0], "supernodal")
    with pytest.raises(CholmodError, match="factorize"):
        F.supernodal_L()
    S = SymbolicFactor(ip, ix, M.shape[0], "simplicial")
    S.factorize(data)
    with pytest.raises(CholmodError, match="simplicial"):
        S.supernodal_L()


# -- SelectedInverse: lookups in M's original order ----------------------------------------
def selected_inverse_of(M, mode, ordering="default"):
    ip, ix, data = upper_csc(M)
    F = SymbolicFactor(ip, ix, M.shape[0], mode, ordering)
    F.factorize(data)
    return SelectedInverse(SimpleNamespace(factor=F, cp=SimpleNamespace(q=M.shape[0])))


@pytest.mark.parametrize("shape", ["crossed", "nested", "arrow", "block3"])
def test_both_paths_give_M_inverse_on_M_pattern(shape):
    M = SHAPES[shape](np.random.default_rng(5))
    indptr, indices = sym_pattern(*upper_csc(M)[:2])
    cols = np.repeat(np.arange(M.shape[0]), np.diff(indptr))
    expected = np.linalg.inv(M)[indices, cols]
    sup = selected_inverse_of(M, "supernodal")
    simp = selected_inverse_of(M, "simplicial")
    assert sup._Z.__class__.__name__ == "_SupernodalZ"
    assert simp._Z.__class__.__name__ == "_SimplicialZ"
    got = sup.on_pattern(indptr, indices)
    assert_close(got, expected)
    assert_close(simp.on_pattern(indptr, indices), expected)
    assert_close(got, simp.on_pattern(indptr, indices))
    assert_close(sup.entries(cols, indices), expected)  # symmetric: either order


@pytest.mark.parametrize("mode", ["supernodal", "simplicial"])
def test_entries_outside_the_pattern_are_refused(mode):
    M = SHAPES["block3"](np.random.default_rng(0))
    minv = selected_inverse_of(M, mode, "natural")
    assert minv.entries(np.array([0, 2]), np.array([1, 0])).shape == (2,)
    with pytest.raises(AssertionError, match=r"entry \(0, 89\)"):
        minv.entries(np.array([1, 0]), np.array([2, 89]))  # levels 0 and 29 share no row


# -- through the package ----------------------------------------------------------------
def seeded_data(seed, n=400):
    """g1 (30 levels) crossed with h (8), and b nested in a (6 x 5), with a slope x."""
    rng = np.random.default_rng(seed)
    a, g, h = rng.integers(0, 6, n), rng.integers(0, 30, n), rng.integers(0, 8, n)
    x = rng.normal(size=n)
    y = x + rng.normal(size=30)[g] * (1 + 0.5 * x) + rng.normal(size=8)[h] + rng.normal(size=n)
    return pd.DataFrame({
        "y": y, "x": x,
        "g": [f"g{v}" for v in g], "h": [f"h{v}" for v in h],
        "a": [f"a{v}" for v in a], "b": [f"b{v}" for v in a * 5 + rng.integers(0, 5, n)],
    })


FORMULAS = {
    "crossed": ("y ~ x + (1 + x | g) + (1 | h)", [0.9, -0.4, 0.7, 1.3]),
    "nested": ("y ~ x + (1 | b) + (1 | a)", [1.1, 0.6]),
    "crossed_three": ("y ~ x + (1 | g) + (1 | h) + (1 | a)", [0.8, 1.5, 0.4]),
}


def objective(formula, data, mode, theta):
    frame = build_frame(parse_formula(formula), formula, data)
    obj = LmmObjective(accumulate(frame), reml=True, factor_mode=mode)
    obj.update(np.asarray(theta))
    return obj


def dense_M(obj):
    """M = Lambda' A Lambda + I in M's original order, from the stored upper triangle."""
    pat = obj.pattern
    U = np.zeros((pat.q, pat.q))
    U[pat.indices, np.repeat(np.arange(pat.q), np.diff(pat.indptr))] = obj.Mx
    return U + np.triu(U, 1).T + np.eye(pat.q)


@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_objective_M_inverse_on_its_pattern(name):
    formula, theta = FORMULAS[name]
    data = seeded_data(11)
    sup = objective(formula, data, "supernodal", theta)
    simp = objective(formula, data, "simplicial", theta)
    assert sup.factor.is_supernodal and not simp.factor.is_supernodal
    pat = sup.pattern
    cols = np.repeat(np.arange(pat.q), np.diff(pat.indptr))
    expected = np.linalg.inv(dense_M(sup))[pat.indices, cols]
    got = SelectedInverse(sup).on_pattern(pat.indptr, pat.indices)
    assert_close(got, expected)
    assert_close(got, SelectedInverse(simp).on_pattern(pat.indptr, pat.indices))
    for a, b in zip(condvar_blocks(sup, 1.7), condvar_blocks(simp, 1.7)):
        assert_close(a, b)


def test_lmer_supernodal_condsd_equals_dense_formula():
    """ranef's condsd of a supernodal fit: sqrt(diag(sigma^2 Lambda M^-1 Lambda'))."""
    formula, _ = FORMULAS["crossed"]
    data = seeded_data(2)
    m = gs.lmer(formula, data, factor_mode="supernodal")
    obj = objective(formula, data, "simplicial", m.theta)
    M = dense_M(obj)
    T = obj.T
    Lam = np.zeros_like(M)
    for t, (k, nlev) in enumerate(zip(obj.cp.k, obj.cp.nlev)):
        o = obj.cp.offsets[t]
        Lam[o:o + k * nlev, o:o + k * nlev] = np.kron(np.eye(nlev), T[t])
    var = m.sigma**2 * np.diag(Lam @ np.linalg.inv(M) @ Lam.T)
    expected = []  # ranef's order: term g (each column over the levels), then h
    for t, (k, nlev) in enumerate(zip(obj.cp.k, obj.cp.nlev)):
        block = var[obj.cp.offsets[t]:obj.cp.offsets[t + 1]].reshape(nlev, k)
        expected.extend(np.sqrt(block[:, r]) for r in range(k))
    expected = np.concatenate(expected)
    got = m.ranef["condsd"].to_numpy()
    np.testing.assert_allclose(got, expected, rtol=TOL)
