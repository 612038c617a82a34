"""Which ordering and factorization the objective uses, and that the choice never changes
the criterion (objective.best_ordering, objective.fastest_factor)."""
import numpy as np
import pytest

from glmm_sparse._core._cholmod import SymbolicFactor
from glmm_sparse.crossprod import accumulate
from glmm_sparse.formula import parse_formula
from glmm_sparse.frame import build_frame
from glmm_sparse.objective import LmmObjective, best_ordering
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
    for mode in ("measure", "simplicial", "supernodal", "auto"):
        obj = objective_for(design, mode)
        theta = obj.theta_map.start * 0.7 if theta is None else theta
        obj.set_theta(theta)
        obj.update_L()
        obj.update_RZX()
        obj.update_RX()
        values.append(obj.objective())
    np.testing.assert_allclose(values, values[0], rtol=1e-12)
