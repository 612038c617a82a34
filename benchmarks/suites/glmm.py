"""glmer fits by Laplace on the crossed design of ``lmm.Crossed`` (same levels at each
size), with a binomial (logit) and a Poisson (log) response."""
from glmm_sparse.synthetic import Design

from ._base import FitBenchmark, crossed_levels, synthetic


class Binomial(FitBenchmark):
    """0/1 response, (1 | g1) + (1 | g2) crossed."""

    def draw(self, rows):
        return synthetic(Design(crossed_levels(rows, 2.0), family="binomial"), rows)


class Poisson(FitBenchmark):
    """Counts, (1 | g1) + (1 | g2) crossed."""

    def draw(self, rows):
        return synthetic(Design(crossed_levels(rows, 2.0), family="poisson"), rows)
