"""The count-class route (classed.py) against the sparse-factor objective and lmer.

On small crossed designs (3,000 rows, 400 x 30 levels, a third term, a random slope on
the second term, prior weights constant per level of g1 so that the per-level sums take
few values), ClassedObjective must give LmmObjective's criterion, pwrss, log|M|,
log|R_X|^2, beta, u, vcov and conditional variances at any theta, and a full fit through
it must give lmer's estimates.
"""
from __future__ import annotations

import pickle
import warnings
from functools import cache

import numpy as np
import pandas as pd
import pytest

import glmm_sparse as gs
from glmm_sparse import classed, levelrows
from glmm_sparse.classed import ClassedObjective, b_from_pairs, class_sums, classes_apply
from glmm_sparse.condvar import condvar_blocks
from glmm_sparse.crossprod import accumulate
from glmm_sparse.errors import ModelSpecError, NumericalError
from glmm_sparse.formula import parse_formula
from glmm_sparse.frame import build_frame
from glmm_sparse.levelrows import b_from_rows
from glmm_sparse.models import lmm_start_and_units, optimize_lmm
from glmm_sparse.objective import LmmObjective
from glmm_sparse.results import build_lmer_result

RTOL = 1e-10  # evaluations: the same quantities by another exact elimination order
FIT_RTOL = 1e-8  # full fits: the optimizer sees the criterion to ~1e-15 relative
MODELS = [
    ("y ~ x1 + (1 | g1) + (1 | g2)", None),
    ("y ~ x1 + (1 | g1) + (1 | g2) + (1 | g3)", None),
    ("y ~ x1 + (1 | g1) + (1 + x | g2)", None),
    ("y ~ x1 + (1 | g1) + (1 | g2)", "w"),
    ("y ~ x1 + (1 | g1) + (1 + x | g2) + (1 | g3)", "w"),
]


@cache
def crossed_data(seed: int = 1, n: int = 3000) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g1, g2, g3 = rng.integers(0, 400, n), rng.integers(0, 30, n), rng.integers(0, 12, n)
    x, x1 = rng.standard_normal(n), rng.standard_normal(n)
    y = (1.0 + 0.5 * x1 + 0.8 * rng.standard_normal(400)[g1] + rng.standard_normal(30)[g2]
         + 0.4 * rng.standard_normal(30)[g2] * x + 0.5 * rng.standard_normal(12)[g3]
         + rng.standard_normal(n))
    w = rng.choice([1.0, 2.5], 400)[g1]  # constant per g1 level: few per-level sums
    return pd.DataFrame({"y": y, "x": x, "x1": x1, "w": w, "g1": g1, "g2": g2, "g3": g3})


def frame_of(formula: str, weights=None, data=None):
    data = crossed_data() if data is None else data
    return build_frame(parse_formula(formula), formula, data, weights=weights)


@cache
def crossproducts(formula: str, weights=None):
    return accumulate(frame_of(formula, weights))


def thetas(theta_map, seed: int):
    """The identity start, theta0 = 0 (first term on the boundary), random values."""
    rng = np.random.default_rng(seed)
    start = theta_map.start
    zero0 = start.copy()
    zero0[0] = 0.0
    lower = theta_map.lower
    out = [start, zero0]
    for scale in (0.3, 3.0):
        th = scale * rng.uniform(0.2, 1.5, start.shape)
        out.append(np.where(np.isfinite(lower), th, rng.uniform(-0.5, 0.5, start.shape)))
    return out


def assert_rel(actual, expected, rtol=RTOL):
    expected = np.asarray(expected, dtype=float)
    scale = max(float(np.abs(expected).max(initial=0.0)), 1e-300)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rtol * scale)


@pytest.mark.parametrize("sigma", [None, 1.7])
@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize("formula, weights", MODELS)
def test_evaluations_equal_the_sparse_factor(formula, weights, reml, sigma):
    cp = crossproducts(formula, weights)
    ref = LmmObjective(cp, reml=reml, sigma=sigma)
    obj = ClassedObjective.from_crossproducts(cp, reml=reml, sigma=sigma)
    for theta in thetas(ref.theta_map, len(formula)):
        expected, got = ref(theta), obj(theta)
        assert_rel(got, expected)
        assert_rel(obj.pwrss, ref.pwrss)
        assert_rel(obj.ldL2, ref.ldL2)
        assert_rel(obj.ldRX2, ref.ldRX2)
        assert_rel(obj.beta(), ref.beta())
        assert_rel(obj.u(), ref.u())
        assert_rel(obj.lambda_times(obj.u()), ref.lambda_times(ref.u()))
        assert_rel(obj.vcov_unscaled(), ref.vcov_unscaled())
        assert obj.sigma() == pytest.approx(ref.sigma(), rel=RTOL)


@pytest.mark.parametrize("formula, weights", MODELS)
def test_conditional_variances_equal_the_selected_inverse(formula, weights):
    cp = crossproducts(formula, weights)
    ref = LmmObjective(cp, reml=True)
    obj = ClassedObjective.from_crossproducts(cp, reml=True)
    theta = thetas(ref.theta_map, 3)[2]
    ref.update(theta)
    obj.update(theta)
    expected = condvar_blocks(ref, 1.3)
    got = condvar_blocks(obj, 1.3)  # condvar.py dispatches to the objective's own
    assert [g.shape for g in got] == [e.shape for e in expected]
    for g, e in zip(got, expected):
        assert_rel(g, e)


def test_a_c_with_non_finite_values_is_a_numerical_error():
    """C's Cholesky (tilechol) reports a NaN pivot; update_U says so rather than take the
    exact-fit fallback, which could otherwise pass a NaN in C's last entry as pwrss 0."""
    formula, weights = MODELS[0]
    obj = ClassedObjective.from_crossproducts(crossproducts(formula, weights), reml=True)
    obj.update(thetas(obj.theta_map, 3)[1])
    obj.C[-1, -1] = np.nan
    with pytest.raises(NumericalError, match="not finite"):
        obj.update_U()


def test_classes_are_the_distinct_row_counts_of_the_first_term():
    formula = MODELS[0][0]
    frame = frame_of(formula)
    sums = class_sums(crossproducts(formula), b_from_pairs(crossproducts(formula)))
    counts = np.bincount(frame.terms[0].codes)
    np.testing.assert_array_equal(sums.delta, np.unique(counts))
    np.testing.assert_array_equal(sums.count, np.unique(counts, return_counts=True)[1])
    np.testing.assert_array_equal(sums.d(), counts)
    assert sums.n_classes < frame.terms[0].nlev / 10


def dense_Z(frame) -> list[np.ndarray]:
    """Each term's n x q_t block of Z, formed densely (the package never does)."""
    Z = []
    for term in frame.terms:
        Zt = np.zeros((frame.n, term.q))
        for r in range(term.k):
            Zt[np.arange(frame.n), term.codes * term.k + r] = np.asarray(term.X)[:, r]
        Z.append(Zt)
    return Z


def test_class_sums_equal_dense_sums_over_the_rows():
    """G_c = sum over class c of a_i a_i' and K = [Z2 X r]'W[Z2 X r], from dense Z."""
    formula, weights = MODELS[4]
    frame = frame_of(formula, weights)
    cp = accumulate(frame)
    sums = class_sums(cp, b_from_pairs(cp))
    Z = dense_Z(frame)
    W = frame.weights[:, None]
    Xr = np.column_stack([frame.X, frame.y - frame.X @ cp.beta_shift])
    rest = np.hstack(Z[1:] + [Xr])
    a = Z[0].T @ (W * rest)  # row i: a_i = [B_i, F_i]
    for c in range(sums.n_classes):
        in_c = sums.level_class == c
        assert_rel(classed.unpacked(sums.G[c], sums.m), a[in_c].T @ a[in_c], 1e-12)
    assert_rel(classed.unpacked(sums.K, sums.m), rest.T @ (W * rest), 1e-12)
    assert sums.count.sum() == cp.nlev[0] and np.all(np.diff(sums.delta) > 0)


def rows_of(frame, codes_dtype=None):
    t = frame.terms
    cast = (lambda c: c) if codes_dtype is None else (lambda c: c.astype(codes_dtype))
    return (cast(t[0].codes), [cast(s.codes) for s in t[1:]], [s.z_values for s in t[1:]],
            [s.nlev for s in t], [s.k for s in t])


@pytest.mark.parametrize("codes_dtype", [None, np.int64])
@pytest.mark.parametrize("formula, weights", MODELS)
def test_b_from_rows_equals_b_from_pairs_exactly(formula, weights, codes_dtype):
    frame = frame_of(formula, weights)
    cp = accumulate(frame)
    from_pairs = b_from_pairs(cp)
    from_rows = b_from_rows(*rows_of(frame, codes_dtype), weights=frame.weights)
    assert from_rows.ncols == from_pairs.ncols == cp.q - cp.nlev[0]
    np.testing.assert_array_equal(from_rows.indptr, from_pairs.indptr)
    np.testing.assert_array_equal(from_rows.indices, from_pairs.indices)
    np.testing.assert_array_equal(from_rows.data, from_pairs.data)


def test_b_equals_dense_Z0tWZ2():
    formula, weights = MODELS[4]
    frame = frame_of(formula, weights)
    Z = dense_Z(frame)
    expected = Z[0].T @ (frame.weights[:, None] * np.hstack(Z[1:]))
    np.testing.assert_allclose(b_from_pairs(accumulate(frame)).toarray(), expected,
                               rtol=0, atol=1e-12 * np.abs(expected).max())


def test_b_given_as_scipy_or_triple_gives_the_same_objective():
    formula, weights = MODELS[2]
    cp = crossproducts(formula, weights)
    B = b_from_pairs(cp)
    theta = thetas(LmmObjective(cp, reml=True).theta_map, 5)[3]
    expected = ClassedObjective(class_sums(cp, B), reml=True, B=B)
    expected(theta)
    for given in (B.to_scipy().tocoo(), (B.indptr, B.indices, B.data)):
        obj = ClassedObjective(class_sums(cp, given), reml=True, B=given)
        assert obj(theta) == expected.objective()
        np.testing.assert_array_equal(obj.u(), expected.u())


@pytest.mark.parametrize("model, dtype", [(0, np.uint8), (1, np.uint16), (2, np.float64),
                                          (3, np.float64)])
def test_class_sums_hold_counts_of_rows_in_small_integers(model, dtype):
    """Unweighted intercept terms: B holds counts of rows, the Z2 block of each class sum
    whole numbers (about 7 rows per g1 level: uint8 for g2's 30 levels; the bound passes
    255 with g3's 12, whose entries of B are larger); a slope or weights of 2.5 make them
    real numbers (float64)."""
    formula, weights = MODELS[model]
    cp = crossproducts(formula, weights)
    sums = class_sums(cp, b_from_pairs(cp))
    assert sums.Gz.dtype == dtype and sums.Gr.dtype == np.float64


def level_rows(values_per_row, ncols=3):
    """LevelRows with one entry per row, in column 0."""
    data = np.asarray(values_per_row, dtype=np.float64)
    return levelrows.LevelRows(np.arange(len(data) + 1, dtype=np.int64),
                             np.zeros(len(data), dtype=np.int32), data, ncols)


@pytest.mark.parametrize("values, dtype", [
    ([15.0, 3.0], np.uint8),  # 15^2 + 3^2 = 234
    ([15.0, 6.0], np.uint16),  # 261
    ([255.0, 15.0], np.uint16),  # 65,250
    ([256.0, 15.0], np.uint32),  # 65,761
    ([65536.0, 1.0], np.float64),  # 2^32: beyond uint32
    ([1.5, 1.0], np.float64),
    ([-1.0, 1.0], np.float64),
])
def test_gram_dtype_bounds_every_class_sum(values, dtype):
    """Entry (j, k) of a class's Z2 block is at most the sum over its levels of the
    largest value of the level's row, squared: the smallest type holding that."""
    B = level_rows(values + [1.0])
    level_class = np.array([0, 0, 1], dtype=np.int32)
    assert classed.gram_dtype(B, level_class, 2) == dtype


@pytest.mark.parametrize("data_dtype", [np.uint8, np.uint16])
def test_gram_dtype_of_counts_as_unsigned_values(data_dtype):
    """B's counts held as uint8 or uint16 (count_dtype): the same bound, without the
    whole-number check's float64 copy."""
    B = level_rows([15.0, 6.0, 1.0])
    B = levelrows.LevelRows(B.indptr, B.indices, B.data.astype(data_dtype), B.ncols)
    assert classed.gram_dtype(B, np.array([0, 0, 1], dtype=np.int32), 2) == np.uint16
    B = levelrows.LevelRows(B.indptr, B.indices, np.array([15, 3, 1], dtype=data_dtype), B.ncols)
    assert classed.gram_dtype(B, np.array([0, 0, 1], dtype=np.int32), 2) == np.uint8


def test_uint16_class_sums_give_the_sparse_criterion():
    """60 g1 levels of 6 rows, 3 of them in g2 level 0: one class, whose (0, 0) entry is
    60 x 3^2 = 540, held in uint16; the criterion equals the sparse factor's."""
    rng = np.random.default_rng(5)
    g1 = np.repeat(np.arange(60), 6)
    g2 = np.where(np.arange(g1.shape[0]) % 6 < 3, 0, 1 + rng.integers(0, 8, g1.shape[0]))
    data = pd.DataFrame({"g1": g1, "g2": g2, "x1": rng.standard_normal(g1.shape[0])})
    data["y"] = data.x1 + rng.standard_normal(60)[g1] + rng.standard_normal(9)[g2]
    cp = accumulate(frame_of("y ~ x1 + (1 | g1) + (1 | g2)", data=data))
    sums = class_sums(cp, b_from_pairs(cp))
    assert sums.Gz.dtype == np.uint16 and sums.Gz.max() == 540
    for reml in (True, False):
        got, ref = ClassedObjective(sums, reml=reml), LmmObjective(cp, reml=reml)
        for theta in ([1.0, 1.0], [0.3, 2.0], [0.0, 0.7]):
            assert got(np.array(theta)) == pytest.approx(ref(np.array(theta)), rel=RTOL)


def test_class_sums_do_not_depend_on_the_thread_count(monkeypatch):
    formula, weights = MODELS[4]
    cp = crossproducts(formula, weights)
    B = b_from_pairs(cp)
    stacks = []
    for threads in ("1", "2", "3"):
        monkeypatch.setenv("GLMM_SPARSE_THREADS", threads)
        stacks.append(class_sums(cp, B).G)
    assert len(classed._balanced_ranges(np.ones(5))) == 3  # the split did change
    for G in stacks[1:]:
        np.testing.assert_array_equal(G, stacks[0])


def test_sums_pickle_and_objective_without_B():
    formula, weights = MODELS[1]
    cp = crossproducts(formula, weights)
    sums = pickle.loads(pickle.dumps(class_sums(cp, b_from_pairs(cp))))
    obj = ClassedObjective(sums, reml=False)
    ref = LmmObjective(cp, reml=False)
    theta = thetas(ref.theta_map, 9)[2]
    assert_rel(obj(theta), ref(theta))
    assert_rel(obj.beta(), ref.beta())
    with pytest.raises(ModelSpecError, match="u\\(\\) needs B"):
        obj.u()
    with pytest.raises(ModelSpecError,
                       match=r"condvar_blocks\(\) \(the conditional variances\) needs B"):
        obj.condvar_blocks(1.0)


def fit_classed(formula: str, weights, *, reml: bool, sigma=None):
    """lmer's in-memory steps with a ClassedObjective in place of LmmObjective."""
    parsed = parse_formula(formula)
    frame = build_frame(parsed, formula, crossed_data(), weights=weights)
    obj = ClassedObjective.from_crossproducts(accumulate(frame), reml=reml, sigma=sigma)
    theta0, units = lmm_start_and_units(obj, frame, None)
    opt = optimize_lmm(obj, theta0, units, start=None, check=True, options={})
    obj.update(opt.theta)
    obj.check_residual_left()
    return build_lmer_result(formula, frame, obj, opt, parsed=parsed, options=dict(
        factor_mode="measure", check_convergence=True, optimizer_options={}))


FITS = [(MODELS[1], True, None), (MODELS[3], False, None), (MODELS[4], True, None),
        (MODELS[0], True, 1.1)]


@pytest.mark.parametrize("model, reml, sigma", FITS)
def test_full_fit_equals_lmer(model, reml, sigma):
    formula, weights = model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gs.GlmmSparseWarning)
        got = fit_classed(formula, weights, reml=reml, sigma=sigma)
        # the sparse factor named: by default lmer takes the classes on these designs
        expected = gs.lmer(formula, crossed_data(), weights=weights, reml=reml, sigma=sigma,
                           factor_mode="simplicial")
        assert type(expected.model.objective).__name__ == "LmmObjective"
    assert_rel(got.theta, expected.theta, FIT_RTOL)
    assert_rel(got.fixef.to_numpy(), expected.fixef.to_numpy(), FIT_RTOL)
    assert got.sigma == pytest.approx(expected.sigma, rel=FIT_RTOL)
    assert got.loglik == pytest.approx(expected.loglik, rel=FIT_RTOL)
    assert_rel(got.vcov.to_numpy(), expected.vcov.to_numpy(), FIT_RTOL)
    rg, re = got.ranef, expected.ranef
    assert rg[["grpvar", "term", "grp"]].equals(re[["grpvar", "term", "grp"]])
    assert_rel(rg["condval"].to_numpy(), re["condval"].to_numpy(), FIT_RTOL)
    assert_rel(rg["condsd"].to_numpy(), re["condsd"].to_numpy(), FIT_RTOL)
    assert_rel(got.fitted.to_numpy(), expected.fitted.to_numpy(), FIT_RTOL)


# -- refusals, each named -------------------------------------------------------------------
def test_classes_apply_accepts_the_crossed_designs():
    for formula, weights in MODELS:
        assert classes_apply(crossproducts(formula, weights)) is None


@pytest.mark.parametrize("formula, reason", [
    ("y ~ x1 + (1 | g1)", "single random-effects term"),
    ("y ~ x1 + (1 + x | g1) + (1 | g2)", "has 2 columns per level"),
])
def test_structures_are_refused(formula, reason):
    cp = crossproducts(formula)
    assert reason in classes_apply(cp)
    with pytest.raises(ModelSpecError, match=reason):
        class_sums(cp, None)
    with pytest.raises(ModelSpecError, match=reason):
        b_from_pairs(cp)


def test_too_many_columns_for_a_dense_matrix_are_refused(monkeypatch):
    cp = crossproducts(MODELS[1][0])
    monkeypatch.setattr(classed, "MAX_DENSE_COLUMNS", 40)  # m = 30 + 12 + (p + 1 = 3)
    assert "m = 45 columns: above 40" in classes_apply(cp)


def test_distinct_weights_per_level_are_refused_as_no_saving():
    data = crossed_data().assign(w=np.random.default_rng(2).uniform(0.5, 2.0, 3000))
    cp = accumulate(frame_of(MODELS[0][0], "w", data))
    assert "no saving: the first term's 400 levels take 400 distinct" in classes_apply(cp)


def test_a_g_stack_above_the_memory_budget_is_refused(monkeypatch):
    cp = crossproducts(MODELS[0][0])
    monkeypatch.setenv("GLMM_SPARSE_MEMORY_BUDGET", "100K")
    reason = classes_apply(cp)
    n_classes = np.unique(cp.diag[0]).shape[0]
    assert "above the memory budget of 100.0 KiB" in reason
    assert f"({n_classes} classes of 33 x 33 dense symmetric matrices)" in reason


def test_b_from_rows_refuses_mismatched_terms():
    frame = frame_of(MODELS[2][0])
    codes0, codes, values, nlev, k = rows_of(frame)
    with pytest.raises(ModelSpecError, match="term 1: codes and values must have 3000 rows "
                                             "and 2 columns"):
        b_from_rows(codes0, codes, [None], nlev, k)
    with pytest.raises(ModelSpecError, match="scalar first term"):
        b_from_rows(codes0, codes, values, nlev, (2, 2))
    with pytest.raises(ModelSpecError, match="codes0: level codes must be non-negative"):
        b_from_rows(np.full(3000, -1), codes, values, nlev, k)


@pytest.mark.parametrize("model, rows_per_level, dtype", [
    (0, 7, np.uint8),  # unweighted intercepts: counts of rows, at most a level's rows
    (0, 300, np.uint16),  # a level's 300 rows could all meet one g2 level: beyond uint8
    (2, 7, np.float64),  # a slope: B holds sums of x
    (3, 7, np.float64),  # prior weights: sums of weights
])
def test_b_from_rows_holds_counts_in_the_smallest_type(model, rows_per_level, dtype):
    formula, weights = MODELS[model]
    frame = frame_of(formula, weights)
    B = b_from_rows(*rows_of(frame), weights=frame.weights)
    per_level = np.full(frame.terms[0].nlev, rows_per_level)
    counts_only = weights is None and all(t.z_values is None for t in frame.terms[1:])
    assert levelrows.count_dtype(per_level, counts_only) == dtype
    assert B.data.dtype == levelrows.count_dtype(np.bincount(frame.terms[0].codes), counts_only)
    np.testing.assert_array_equal(B.data, b_from_pairs(accumulate(frame)).data)


def test_kernels_read_integer_counts_as_float64():
    """B's values as uint8, uint16 or float64 give the kernels' results bit for bit (whole
    numbers are exact in float64), and those equal dense NumPy's."""
    from glmm_sparse._core import _classed

    rng = np.random.default_rng(3)
    nrows, ncols, p1 = 40, 12, 2
    dense = rng.integers(0, 4, (nrows, ncols)) * (rng.random((nrows, ncols)) < 0.4)
    indptr = np.concatenate([[0], np.cumsum((dense != 0).sum(1))]).astype(np.int64)
    indices = np.nonzero(dense)[1].astype(np.int32)
    values = dense[dense != 0]
    F, x = rng.standard_normal((nrows, p1)), rng.standard_normal(ncols)
    Q = rng.standard_normal((ncols, ncols))
    Q = Q + Q.T
    order = np.arange(nrows, dtype=np.int64)
    class_start = np.array([0, 15, nrows], dtype=np.int64)
    results = {}
    for dtype in (np.uint8, np.uint16, np.float64):
        data = values.astype(dtype)
        Gz = np.zeros((2, ncols * (ncols + 1) // 2))
        Gr = np.zeros((2, ncols * p1 + p1 * (p1 + 1) // 2))
        _classed.add_class_grams(indptr, indices, data, F, order, class_start, 0, 2, Gz, Gr)
        Bx, quad = np.empty(nrows), np.empty(nrows)
        _classed.csr_times(indptr, indices, data, x, Bx)
        _classed.row_quadratic_forms(indptr, indices, data, Q, 0, nrows, quad)
        results[dtype] = (Gz, Gr, Bx, quad)
    for dtype in (np.uint8, np.uint16):
        for got, expected in zip(results[dtype], results[np.float64]):
            np.testing.assert_array_equal(got, expected)
    Gz, Gr, Bx, quad = results[np.float64]
    A = np.hstack([dense, F])
    for c, rows in enumerate((slice(0, 15), slice(15, nrows))):
        G = A[rows].T @ A[rows]
        np.testing.assert_allclose(Gz[c], classed.packed(G[:ncols, :ncols]), rtol=1e-12)
    np.testing.assert_allclose(Bx, dense @ x, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(quad, np.einsum("ij,jk,ik->i", dense, Q, dense), rtol=1e-12,
                               atol=1e-12)
