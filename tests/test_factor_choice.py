"""Which ordering and factorization the objective uses, and that the choice never changes
the criterion (objective.best_ordering, objective.fastest_factor)."""
import numpy as np
import pandas as pd
import pytest
from glmm_sparse._core._cholmod import SymbolicFactor

from glmm_sparse import objective
from glmm_sparse.crossprod import accumulate
from glmm_sparse.errors import ModelSpecError
from glmm_sparse.formula import parse_formula
from glmm_sparse.frame import build_frame
from glmm_sparse.objective import LmmObjective, best_ordering
from glmm_sparse.schur import SchurFactor, applies
from glmm_sparse.synthetic import INSTEVAL_FORMULA, Design, insteval_like, simulate

DESIGNS = [Design((300, 40)), Design((60, 5), nested=True), Design((80,), slope=True),
           Design((200, 30), slope=True)]


def objective_for(design, mode):
    frame, _ = simulate(design, 6000, seed=2)
    formula = design.formula()
    model = build_frame(parse_formula(formula), formula, frame)
    return LmmObjective(accumulate(model), reml=True, factor_mode=mode)


def insteval_pattern():
    data, _ = insteval_like(20_000, seed=3)
    model = build_frame(parse_formula(INSTEVAL_FORMULA), INSTEVAL_FORMULA, data)
    return LmmObjective(accumulate(model), reml=True, factor_mode="simplicial").pattern


def test_small_patterns_keep_amd_where_it_fills_less():
    pattern = insteval_pattern()
    natural = SymbolicFactor(pattern.indptr, pattern.indices, pattern.q, "simplicial", "natural")
    amd = SymbolicFactor(pattern.indptr, pattern.indices, pattern.q, "simplicial", "default")
    assert amd.factor_nnz() < natural.factor_nnz()  # what makes this case informative
    ordering, factor = best_ordering(pattern)
    assert ordering == "default" and factor.factor_nnz() == amd.factor_nnz()


def test_large_patterns_use_the_natural_order_without_analysing_amd(monkeypatch):
    pattern = insteval_pattern()
    monkeypatch.setattr("glmm_sparse.objective.AMD_BELOW_NNZ", pattern.nnz - 1)
    ordering, factor = best_ordering(pattern)
    natural = SymbolicFactor(pattern.indptr, pattern.indices, pattern.q, "simplicial", "natural")
    assert ordering == "natural" and factor.factor_nnz() == natural.factor_nnz()


@pytest.mark.parametrize("design", DESIGNS)
def test_every_factor_mode_gives_the_same_criterion(design):
    theta = None
    values = []
    modes = ["measure", "simplicial", "supernodal", "auto"]
    if applies(objective_for(design, "simplicial").pattern):
        modes.append("schur")
    for mode in modes:
        obj = objective_for(design, mode)
        theta = obj.theta_map.start * 0.7 if theta is None else theta
        obj.set_theta(theta)
        obj.update_L()
        obj.update_RZX()
        obj.update_RX()
        values.append(obj.objective())
    np.testing.assert_allclose(values, values[0], rtol=1e-12)


def test_schur_mode_applies_to_two_or_more_terms():
    # the criterion test above covers the values; here, which designs take it
    for design in (DESIGNS[0], DESIGNS[1], DESIGNS[3]):  # crossed, nested, crossed + slopes
        assert isinstance(objective_for(design, "schur").factor, SchurFactor)
    with pytest.raises(ModelSpecError, match="factor_mode='schur' needs two or more"):
        objective_for(DESIGNS[2], "schur")  # one term


def never_timed(factor, Mx):
    raise AssertionError(f"{type(factor).__name__} was timed")


def test_measure_takes_the_schur_factor_untimed_where_the_later_block_fills_in(monkeypatch):
    obj = objective_for(DESIGNS[0], "simplicial")  # 300 x 40 crossed: S is dense
    natural = objective.natural_probe(obj.pattern)
    q2 = 40
    assert SchurFactor(obj.pattern).factor_nnz() == objective.schur.factor_entries(obj.pattern)
    # the sparse factor fills S's whole triangle (what makes this case the one to test)
    assert objective.schur.factor_entries(obj.pattern) - natural.factor_nnz() < 0.01 * q2 * q2
    monkeypatch.setattr(objective, "MEASURE_ABOVE_NNZ", 0)  # large enough to choose
    monkeypatch.setattr(objective, "_time_factorization", never_timed)
    monkeypatch.setattr(objective, "best_ordering", lambda *a: pytest.fail("AMD analysed"))
    factor = objective.fastest_factor(obj.pattern, obj.Mx, "measure")
    assert isinstance(factor, SchurFactor)
    # a pattern below MEASURE_ABOVE_NNZ keeps its untimed simplicial factor, as before
    monkeypatch.undo()
    assert not objective.schur_by_fill(obj.pattern, natural)
    assert not isinstance(objective.fastest_factor(obj.pattern, obj.Mx, "measure"), SchurFactor)


def test_a_later_block_that_stays_sparse_is_timed(monkeypatch):
    # g2 mostly follows g1 (each level of g1 meets two neighbouring levels of g2): S is
    # banded, and the sparse factor keeps most of the dense block empty
    rng = np.random.default_rng(5)
    g1 = rng.integers(0, 3000, 30_000)
    g2 = (g1 // 3 + rng.integers(0, 2, g1.size)) % 1000
    data = pd.DataFrame({"y": rng.normal(size=g1.size), "g1": g1, "g2": g2})
    formula = "y ~ 1 + (1 | g1) + (1 | g2)"
    model = build_frame(parse_formula(formula), formula, data)
    obj = LmmObjective(accumulate(model), reml=True, factor_mode="simplicial")
    natural = objective.natural_probe(obj.pattern)
    spare = objective.schur.factor_entries(obj.pattern) - natural.factor_nnz()
    assert spare > 0.5 * 1000 * 1001 / 2
    monkeypatch.setattr(objective, "MEASURE_ABOVE_NNZ", 0)
    assert applies(obj.pattern) and not objective.schur_by_fill(obj.pattern, natural)
    timed = []
    monkeypatch.setattr(objective, "_time_factorization",
                        lambda f, Mx: timed.append(type(f).__name__) or 1.0)
    objective.fastest_factor(obj.pattern, obj.Mx, "measure")
    assert "SchurFactor" in timed and "SymbolicFactor" in timed


def test_measure_takes_the_schur_factor_only_when_it_beats_the_supernodal_one(monkeypatch):
    obj = objective_for(DESIGNS[0], "simplicial")
    timed = []
    monkeypatch.setattr(objective, "schur_by_fill", lambda *a: False)  # the race

    def clock(schur_seconds):
        def time_factorization(factor, Mx):
            timed.append(type(factor).__name__)
            return schur_seconds if isinstance(factor, SchurFactor) else 1.0
        return time_factorization

    monkeypatch.setattr(objective, "MEASURE_ABOVE_NNZ", 0)  # time even this small pattern
    monkeypatch.setattr(objective, "_time_factorization", clock(0.5))
    assert isinstance(objective.fastest_factor(obj.pattern, obj.Mx, "measure"), SchurFactor)
    # each a warm-up, then the timed one: supernodal, Schur; the simplicial one not timed
    assert timed == ["SymbolicFactor"] * 2 + ["SchurFactor"] * 2
    timed.clear()
    monkeypatch.setattr(objective, "_time_factorization", clock(2.0))
    factor = objective.fastest_factor(obj.pattern, obj.Mx, "measure")
    assert not isinstance(factor, SchurFactor)
    # then CHOLMOD's race: simplicial, supernodal
    assert timed == ["SymbolicFactor"] * 2 + ["SchurFactor"] * 2 + ["SymbolicFactor"] * 2


def test_measure_keeps_the_schur_factor_when_the_supernodal_one_does_not_fit(monkeypatch):
    from glmm_sparse.errors import FactorMemoryError

    obj = objective_for(DESIGNS[0], "simplicial")

    def refuse_supernodal(factor, **kw):
        if getattr(factor, "is_supernodal", False):
            raise FactorMemoryError("too large", needed=2, budget=1)

    monkeypatch.setattr(objective, "MEASURE_ABOVE_NNZ", 0)
    monkeypatch.setattr(objective, "schur_by_fill", lambda *a: False)  # the race
    monkeypatch.setattr(objective, "check_factor_fits", refuse_supernodal)
    monkeypatch.setattr(objective, "_time_factorization",
                        lambda f, Mx: 9.0 if isinstance(f, SchurFactor) else 1.0)
    assert isinstance(objective.fastest_factor(obj.pattern, obj.Mx, "measure"), SchurFactor)


@pytest.mark.parametrize("design", [DESIGNS[0], DESIGNS[3], INSTEVAL_FORMULA])
def test_b_straight_into_the_schur_factor_is_the_same_factor(design):
    """objective.DirectB: B's values scattered in B's order give the factor that M's values
    give, bit for bit (scalar and slope first terms, and a third term that pairs with the
    second); obj.Mx still reads complete."""
    if design == INSTEVAL_FORMULA:
        data, _ = insteval_like(20_000, seed=3)
        model = build_frame(parse_formula(design), design, data)
        obj = LmmObjective(accumulate(model), reml=True, factor_mode="schur")
    else:
        obj = objective_for(design, "schur")
    assert obj.direct is not None and set(obj.direct.pos) == {
        i for i, pb in enumerate(obj.cp.pairs) if pb.t == 0}
    obj.set_theta(obj.theta_map.start * 0.7 + 0.1)
    obj.update_L()
    reference = SchurFactor(obj.pattern)
    reference.factorize(obj.Mx, beta=1.0)  # through M's values, B's copied in
    assert np.array_equal(obj.factor.S, reference.S)
    assert np.array_equal(obj.factor.B.data, reference.B.data)
    assert obj.factor.logdet() == reference.logdet()
    plain = LmmObjective(obj.cp, reml=True, factor_mode="supernodal")  # no DirectB
    plain.set_theta(obj.theta)
    plain.update_M()
    assert plain.direct is None and np.array_equal(plain.Mx, obj.Mx)


def test_b_values_of_the_wrong_length_are_refused():
    obj = objective_for(DESIGNS[0], "schur")
    with pytest.raises(ValueError, match="b_values must hold B's"):
        obj.factor.factorize(obj.Mx, beta=1.0, b_values=np.zeros(3))


def fit_both(fit, **kw):
    """The same fit with the Schur factor and with CHOLMOD's supernodal one."""
    return [fit(**kw, factor_mode=mode) for mode in ("schur", "supernodal")]


def test_lmer_with_the_schur_factor_reaches_the_same_fit():
    from glmm_sparse import lmer

    data, _ = insteval_like(8_000, seed=5)
    a, b = fit_both(lmer, formula=INSTEVAL_FORMULA, data=data)
    np.testing.assert_allclose(a.loglik, b.loglik, rtol=1e-12)
    np.testing.assert_allclose(a.theta, b.theta, rtol=1e-7)
    np.testing.assert_allclose(a.fixef, b.fixef, rtol=1e-9)
    ra, rb = a.ranef, b.ranef  # conditional SDs from L's CSC copy (sparse_L)
    np.testing.assert_allclose(ra["condval"], rb["condval"], rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(ra["condsd"], rb["condsd"], rtol=1e-7)


@pytest.mark.parametrize("design, rows, seed", [
    (Design((400, 30), family="binomial"), 12_000, 6),
    # a first term (1 + x1 | g1): M's first block is 2 x 2 block diagonal
    (Design((300, 25), slope=True, family="poisson"), 9_000, 7),
])
def test_glmer_with_the_schur_factor_reaches_the_same_fit(design, rows, seed):
    from glmm_sparse import glmer

    frame, _ = simulate(design, rows, seed=seed)
    a, b = fit_both(glmer, formula=design.formula(), data=frame, family=design.family)
    np.testing.assert_allclose(a.loglik, b.loglik, rtol=1e-12)
    np.testing.assert_allclose(a.theta, b.theta, rtol=1e-6)
    np.testing.assert_allclose(a.fixef, b.fixef, rtol=1e-7)
    np.testing.assert_allclose(a.ranef["condsd"], b.ranef["condsd"], rtol=1e-6)


@pytest.mark.parametrize("design", [Design((20_000,), slope=True), Design((30_000,))])
def test_one_pass_over_the_levels_is_the_separate_updates(design, monkeypatch):
    """A single term's update_levels: the factor and R_ZX bit for bit as update_L and
    update_RZX make them, M's values made when read, the criterion to rounding, and the
    same bits on one thread as on two (the levels split in fixed parts)."""
    frame, _ = simulate(design, 120_000, seed=4)
    formula = design.formula()
    cp = accumulate(build_frame(parse_formula(formula), formula, frame))
    fused, separate = LmmObjective(cp, reml=True), LmmObjective(cp, reml=True)
    assert fused.by_levels
    separate.by_levels = False
    theta = fused.theta_map.start * 0.6 + 0.1
    fused.update(theta)
    separate.update(theta)
    assert np.array_equal(fused.factor.L, separate.factor.L)
    assert np.array_equal(fused.RZXy, separate.RZXy)
    assert np.array_equal(fused.Mx, separate.Mx)
    fused.set_theta(theta * 2.0)  # Mx stays the M of the factor, as on the separate path
    separate.set_theta(theta * 2.0)
    assert np.array_equal(fused.Mx, separate.Mx) and fused.Mx is not fused.Mx
    assert fused.objective() == pytest.approx(separate.objective(), rel=1e-14)
    np.testing.assert_allclose(fused.Ry, separate.Ry, rtol=1e-12)
    assert fused.factor.logdet() == pytest.approx(separate.factor.logdet(), rel=1e-14)
    monkeypatch.setenv("GLMM_SPARSE_THREADS", "1")
    one = LmmObjective(cp, reml=True)
    one.update(theta)
    assert np.array_equal(one.Ry, fused.Ry) and one.objective() == fused.objective()


def test_many_fixed_effects_keep_the_separate_updates():
    """Beyond LEVEL_MAX_COLUMNS columns of [X y] the level loop's R'R loses to BLAS's."""
    from glmm_sparse.blockdiag import LEVEL_MAX_COLUMNS

    rng = np.random.default_rng(2)
    n, p = 400, LEVEL_MAX_COLUMNS  # with the response: p + 1 columns
    data = pd.DataFrame(rng.normal(size=(n, p)), columns=[f"x{j}" for j in range(p)])
    data["y"], data["g"] = rng.normal(size=n), rng.integers(0, 40, n)
    for terms, by_levels in ((data.columns[:p - 1], True), (data.columns[:p], False)):
        formula = f"y ~ {' + '.join(terms[1:])} + (1 | g)"  # the intercept and len(terms) - 1
        obj = LmmObjective(accumulate(build_frame(parse_formula(formula), formula, data)),
                           reml=True)
        assert obj.cp.p + 1 == len(terms) + 1 and obj.by_levels is by_levels


def test_one_pass_over_the_levels_names_theta_when_m_is_not_positive_definite():
    from glmm_sparse.errors import NumericalError

    fused = objective_for(DESIGNS[2], "measure")  # (1 + x | g): one term, k = 2
    separate = LmmObjective(fused.cp, reml=True)
    separate.by_levels = False
    assert fused.by_levels
    good = fused.cp.diag[0][3].copy()
    fused.cp.diag[0][3] = -1e6 * np.eye(2)  # no data makes this; it reaches the error path
    theta = fused.theta_map.start
    messages = []
    for obj in (fused, separate):
        with pytest.raises(NumericalError, match=r"not positive definite \(column 6\)") as err:
            obj.update(theta)
        messages.append(str(err.value))
    assert messages[0] == messages[1]
    assert np.array_equal(fused.Mx, separate.Mx)  # the M that failed, on both paths
    fused.cp.diag[0][3] = good
    fused.update(theta)  # and it recovers
    assert np.isfinite(fused.objective())
