"""Streamed LMM fits through the count classes (rowcodes.py, classed.py): the pass keeps
each row's level codes instead of the first term's level pairs, B = Z0'Z2 is built from
them after the pass, and the fit equals the in-memory fit through the sparse factor.
"""
from __future__ import annotations

import pickle
import warnings
from functools import cache

import numpy as np
import pandas as pd
import pytest

import glmm_sparse as gs
from glmm_sparse import classed
from glmm_sparse.classed import ClassedObjective
from glmm_sparse.errors import ModelSpecError
from glmm_sparse.objective import LmmObjective

RTOL = 1e-8  # two exact routes to one optimum, each optimized to TIGHT
# BOBYQA's defaults (ftol_abs 1e-8) leave theta free to about 1e-7 where the criterion is
# flat: on SLOPE (ML) the two routes' defaults stopped 7e-8 apart in theta_5, with
# deviances 36300.571964534861 (sparse) and ...4836 (classes), the difference (2.4e-11)
# the criterion's own rounding. Tighter, both stop within 2e-9 of each other.
TIGHT = {"ftol_abs": 1e-12, "xtol_abs": 1e-10}
FORMULA = "y ~ x1 + (1 | g1) + (1 | g2)"
SLOPE = "y ~ x1 + (1 | g1) + (1 + x | g2) + (1 | g3)"
# a later term with one column that is not all ones: its values are kept with the codes
SLOPE_ONLY = "y ~ x1 + (1 | g1) + (x || g2)"


@cache
def crossed(seed: int = 5, n: int = 12000) -> pd.DataFrame:
    """1,200 x 40 (x 9) crossed levels, ~10 rows per g1 level; g2 as strings."""
    rng = np.random.default_rng(seed)
    g1, g2, g3 = rng.integers(0, 1200, n), rng.integers(0, 40, n), rng.integers(0, 9, n)
    x, x1 = rng.standard_normal(n), rng.standard_normal(n)
    y = (2.0 + 0.5 * x1 + 0.7 * rng.standard_normal(1200)[g1] + rng.standard_normal(40)[g2]
         + 0.5 * rng.standard_normal(40)[g2] * x + 0.6 * rng.standard_normal(9)[g3]
         + rng.standard_normal(n))
    return pd.DataFrame({"y": y, "x": x, "x1": x1, "g1": g1.astype(np.int32),
                         "g2": [f"s{i:02d}" for i in g2], "g3": g3})


@pytest.fixture(scope="module")
def parquet(tmp_path_factory):
    folder = tmp_path_factory.mktemp("classes")
    df = crossed()
    for i, part in enumerate(np.array_split(np.arange(len(df)), 3)):
        df.iloc[part].to_parquet(folder / f"part{i}.parquet", row_group_size=1500)
    return str(folder)


def fit(formula, data, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gs.GlmmSparseWarning)
        return gs.lmer(formula, data, optimizer_options=TIGHT, **kwargs)


def assert_same(got, ref, rtol=RTOL):
    for a, b in [(got.theta, ref.theta), (got.fixef, ref.fixef), (got.vcov, ref.vcov),
                 (got.ranef["condval"], ref.ranef["condval"]),
                 (got.ranef["condsd"], ref.ranef["condsd"])]:
        b = np.asarray(b, dtype=float)
        np.testing.assert_allclose(np.asarray(a, dtype=float), b, rtol=rtol,
                                   atol=rtol * np.max(np.abs(b)))
    assert got.loglik == pytest.approx(ref.loglik, rel=1e-12)
    assert got.sigma == pytest.approx(ref.sigma, rel=rtol)
    assert got.nobs == ref.nobs


@pytest.mark.parametrize("formula", [FORMULA, SLOPE, SLOPE_ONLY])
@pytest.mark.parametrize("reml", [True, False])
def test_streamed_classes_equal_the_in_memory_sparse_fit(parquet, formula, reml):
    ref = fit(formula, crossed(), reml=reml, factor_mode="simplicial")
    got = fit(formula, parquet, reml=reml, streaming=True, batch_rows=1000)
    assert isinstance(got.model.objective, ClassedObjective)
    assert_same(got, ref)


def test_kept_codes_that_do_not_pay_give_the_sparse_fit(parquet, monkeypatch):
    # the pass kept the codes (and skipped the first term's pairs); the sparse route then
    # needs those pairs, made from the codes (classed.with_first_pairs), slope term included
    monkeypatch.setattr(classed, "classes_pay", lambda cp, B=None: False)
    ref = fit(SLOPE, crossed(), factor_mode="simplicial")
    got = fit(SLOPE, parquet, streaming=True, batch_rows=1000)
    assert isinstance(got.model.objective, LmmObjective)
    assert_same(got, ref)


def test_named_cholmod_mode_streams_the_pairs_as_before(parquet):
    ref = fit(FORMULA, crossed(), factor_mode="simplicial")
    got = fit(FORMULA, parquet, streaming=True, batch_rows=1000, factor_mode="simplicial")
    assert isinstance(got.model.objective, LmmObjective)
    assert_same(got, ref)


def test_forced_classes_are_refused_with_the_reason(parquet, tmp_path):
    with pytest.raises(ModelSpecError, match="does not apply.*g1.*scalar term"):
        fit("y ~ x1 + (1 + x1 | g1) + (1 | g2)", parquet, streaming=True,
            factor_mode="classes")
    with pytest.raises(ModelSpecError, match="does not apply.*single random-effects term"):
        fit("y ~ x1 + (1 | g1)", parquet, streaming=True, factor_mode="classes")
    df = crossed().assign(w=1.0 + (crossed().g3 % 2))
    df.to_parquet(tmp_path / "w.parquet")
    with pytest.raises(ModelSpecError, match="does not apply.*prior weights"):
        fit(FORMULA, str(tmp_path / "w.parquet"), streaming=True, weights="w",
            factor_mode="classes")


def test_weighted_streams_keep_the_pairs_by_default(tmp_path):
    df = crossed().assign(w=1.0 + (crossed().g3 % 2))
    df.to_parquet(tmp_path / "w.parquet")
    ref = fit(FORMULA, df, weights="w", factor_mode="simplicial")
    got = fit(FORMULA, str(tmp_path / "w.parquet"), streaming=True, weights="w",
              batch_rows=1000)
    assert isinstance(got.model.objective, LmmObjective)
    assert_same(got, ref)


def test_a_streamed_classed_fit_as_a_result(parquet):
    got = fit(FORMULA, parquet, streaming=True, batch_rows=1000)
    ref = fit(FORMULA, crossed(), factor_mode="simplicial")
    # criterion-only methods rebuild the classed objective from the kept sums
    sg = got.coef_table(ddf="Satterthwaite")
    sr = ref.coef_table(ddf="Satterthwaite")
    np.testing.assert_allclose(sg["df"], sr["df"], rtol=1e-5)
    again = pickle.loads(pickle.dumps(got))
    np.testing.assert_allclose(again.ranef["condsd"], got.ranef["condsd"], rtol=1e-13)
    np.testing.assert_allclose(again.confint(method="Wald").dropna(),
                               ref.confint(method="Wald").dropna(), rtol=1e-7)
    # methods that need the first term's level pairs say so and what to do
    with pytest.raises(ModelSpecError, match="count classes.*factor_mode='supernodal'"):
        got.coef_table(ddf="Kenward-Roger")


def test_row_codes_reserve_in_order_and_write_on_any_thread():
    """reserve hands out each batch's rows in order on the pass's thread (refusing more
    rows than the first pass counted); write fills them later, in any order, from any
    thread: the arrays hold every batch's codes and values in row order."""
    import threading

    from glmm_sparse.rowcodes import RowCodes
    from glmm_sparse.terms import ReTerm

    def term(name, nlev, cnames):
        return ReTerm(name, cnames, [str(i) for i in range(nlev)], np.empty(0, np.int64),
                      np.empty((0, len(cnames))))

    kept = RowCodes(7, [term("g1", 5, ("(Intercept)",)), term("g2", 3, ("x",))])
    batches = [(np.array([4, 0, 1], np.int32), np.array([2, 2, 0], np.int32)),
               (np.array([3, 3], np.int32), np.array([1, 0], np.int32)),
               (np.array([2], np.int32), np.array([2], np.int32))]
    rows = [kept.reserve(len(c1)) for c1, _ in batches]
    assert rows == [slice(0, 3), slice(3, 5), slice(5, 6)] and kept.filled == 6
    with pytest.raises(RuntimeError, match=r"more complete rows \(8\) than the first pass "
                                           r"counted \(7\)"):
        kept.reserve(2)
    assert kept.filled == 6  # a refused batch takes no rows
    values = [np.arange(len(c2), dtype=float)[:, None] + 10 * i
              for i, (_, c2) in enumerate(batches)]
    writers = [threading.Thread(target=kept.write, args=(rows[i], list(batches[i]),
                                                         [None, values[i]]))
               for i in (2, 0, 1)]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    np.testing.assert_array_equal(kept.codes[0][:6], np.concatenate([b[0] for b in batches]))
    np.testing.assert_array_equal(kept.codes[1][:6], np.concatenate([b[1] for b in batches]))
    np.testing.assert_array_equal(kept.values[1][:6], np.concatenate(values))


def test_row_codes_keep_a_second_intercept_term_in_two_bytes():
    """(1 | g1) + (1 | g2) with g2's levels within 65,536: g2's codes in uint16 (the
    budget counts 6 bytes a row); more levels, a third term or a slope: int32."""
    from glmm_sparse.rowcodes import RowCodes, code_dtypes, row_bytes
    from glmm_sparse.terms import ReTerm

    def term(nlev, cnames=("(Intercept)",)):
        return ReTerm("g", cnames, [str(i) for i in range(nlev)], np.empty(0, np.int64),
                      np.empty((0, len(cnames))))

    assert code_dtypes([term(10**6), term(65536)]) == [np.int32, np.uint16]
    assert row_bytes([term(10**6), term(65536)]) == 6
    assert code_dtypes([term(10**6), term(65537)]) == [np.int32, np.int32]
    assert code_dtypes([term(10**6), term(40), term(9)]) == [np.int32] * 3
    assert code_dtypes([term(10**6), term(40, ("(Intercept)", "x"))]) == [np.int32] * 2
    kept = RowCodes(3, [term(10), term(65536)])
    kept.add([np.array([1, 2, 3], np.int32), np.array([0, 65535, 7], np.int32)], [None, None])
    assert kept.codes[1].dtype == np.uint16
    np.testing.assert_array_equal(kept.codes[1], [0, 65535, 7])


@cache
def first_slope(seed: int = 5) -> pd.DataFrame:
    """(0 + x | g1) + (1 | g2): 1,500 x 25 levels, 20 rows per g1 level, x one of two
    values per g1 level (so the first term's levels fall into two count classes)."""
    rng = np.random.default_rng(seed)
    n1, n2, per = 1500, 25, 20
    g1 = np.repeat(np.arange(n1), per)
    n = g1.size
    g2 = rng.integers(0, n2, n)
    x = rng.choice([1.0, 2.0], n1)[g1]
    z = rng.standard_normal(n)
    y = (1 + 0.5 * z + 0.7 * x * rng.standard_normal(n1)[g1]
         + 0.5 * rng.standard_normal(n2)[g2] + rng.standard_normal(n))
    return pd.DataFrame({"y": y, "z": z, "x": x, "g1": g1.astype(np.int32), "g2": g2})


def test_a_first_term_with_values_is_not_taken_for_ones(tmp_path):
    """Regression: with a first term (0 + x | g1), lmer's default built B = Z1'Z2 from
    the row codes alone, as if x were ones, and the sparse factor fitted those pairs: a
    wrong likelihood in memory and streamed (-58980.889 against -58981.239 on a review's
    data). Now its pairs carry x: the default and, in memory, the classes (from the
    pairs) equal the sparse fit; a streamed fit refuses the classes, naming the term.

    Compared by the criterion: at the sparse fit's theta, each route's criterion to 1e-12
    relative, and the log-likelihoods at their optima to 1e-12 (the wrong B was off by
    6e-6 relative). Their thetas agree to 1e-7 only: g2's 25 levels leave the criterion
    flat to rounding along theta_2 (the fits stop 6-8e-9 apart in it, and vcov moves 3e-8
    with it), so assert_same's 1e-8 does not apply here."""
    df = first_slope()
    path = tmp_path / "first_slope.parquet"
    df.to_parquet(path, row_group_size=5000)
    formula = "y ~ z + (0 + x | g1) + (1 | g2)"
    ref = fit(formula, df, factor_mode="simplicial")
    at_ref = ref.model.at_optimum().objective()
    fits = [fit(formula, df), fit(formula, str(path), streaming=True, batch_rows=5000),
            fit(formula, df, factor_mode="classes")]
    assert isinstance(fits[2].model.at_optimum(), ClassedObjective)
    for got in fits:
        obj = got.model.new_objective()
        obj.update(ref.theta)
        assert obj.objective() == pytest.approx(at_ref, rel=1e-12)
        assert got.loglik == pytest.approx(ref.loglik, rel=1e-12)
        np.testing.assert_allclose(got.theta, ref.theta, rtol=1e-7)
        np.testing.assert_allclose(got.fixef, ref.fixef, rtol=1e-7, atol=1e-9)
    with pytest.raises(ModelSpecError, match=r"\(0 \+ x \| g1\), not \(1 \| g1\)"):
        fit(formula, str(path), streaming=True, batch_rows=5000, factor_mode="classes")
