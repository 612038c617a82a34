"""lmer fits, one class per random-effects structure, each at 10^4, 10^5, 10^6 rows.

Levels grow with the rows so that a group keeps roughly 10-100 rows (crossed factors
more slowly, see ``crossed_levels``); the InstEval-shaped case has its own fixed size.
"""
from glmm_sparse.synthetic import INSTEVAL_FORMULA, Design, insteval_like

from ._base import SEED, FitBenchmark, crossed_levels, synthetic


class Scalar(FitBenchmark):
    """(1 | g1): a level per 50 rows."""

    def draw(self, rows):
        return synthetic(Design((rows // 50,)), rows)


class Slopes(FitBenchmark):
    """(1 + x1 | g1), intercept and slope correlated: a level per 100 rows."""

    def draw(self, rows):
        return synthetic(Design((rows // 100,), slope=True), rows)


class Nested(FitBenchmark):
    """(1 | g1) + (1 | g2), g2 nested in g1: 20 inner levels of 50 rows in each outer."""

    def draw(self, rows):
        return synthetic(Design((max(rows // 1000, 2), 20), nested=True), rows)


class Crossed(FitBenchmark):
    """(1 | g1) + (1 | g2) crossed: 200 x 20, 632 x 63, 2000 x 200 levels."""

    def draw(self, rows):
        return synthetic(Design(crossed_levels(rows, 2.0)), rows)


class CrossedSlopes(FitBenchmark):
    """(1 + x1 | g1) + (1 | g2) crossed: 100 x 10, 316 x 31, 1000 x 100 levels."""

    def draw(self, rows):
        return synthetic(Design(crossed_levels(rows, 1.0), slope=True), rows)


class InstEval(FitBenchmark):
    """lme4's InstEval in shape: 2972 students x 1128 lecturers crossed, plus the
    28-level dept:service term, at InstEval's own 73,421 rows."""

    params = ((73_421,),)

    def draw(self, rows):
        data, _ = insteval_like(rows, seed=SEED)
        return INSTEVAL_FORMULA, "gaussian", data
