"""What every benchmark class of the suite shares: the sizes, the data drawn in setup,
one fit per benchmark, and how asv measures it.

A class is one random-effects structure; its only parameter is the number of rows, and
it says how to draw a data set of that size (``draw``). asv runs each benchmark
(``time_fit``, ``peakmem_fit``, ``track_objective``, ``track_evaluations``) in a process
of its own, so each of them fits once, after ``setup`` has drawn the data again from the
same seed: the same rows every time, never timed.

``peakmem_*`` is the peak resident memory of that whole process (asv reads ru_maxrss),
not of the fit alone: interpreter, imports, the data frame and the fit. ``peakmem_setup``
is the same process without the fit, so ``peakmem_fit - peakmem_setup`` is what the fit
adds on top of its data.

The class is abstract, and asv's discovery skips abstract classes.
"""
from __future__ import annotations

import abc
import math
import warnings

import glmm_sparse as gs
from glmm_sparse.synthetic import Design, simulate

SIZES = (10_000, 100_000, 1_000_000)
SEED = 1


def synthetic(design: Design, rows: int) -> tuple[str, str, object]:
    """(formula, family, data) of ``rows`` seeded rows from ``design``."""
    data, _ = simulate(design, rows, seed=SEED)
    return design.formula(), design.family, data


def crossed_levels(rows: int, per_sqrt_row: float) -> tuple[int, int]:
    """Levels of two crossed factors, g1 ~ sqrt(rows) and g2 a tenth of it.

    Crossed factors fill the Cholesky factor (every g1 level meets most g2 levels), so
    the levels grow more slowly than the rows; linear growth would make the 10^6 fits
    measure a dense g2 block rather than the rows.
    """
    g1 = int(per_sqrt_row * math.sqrt(rows))
    return g1, max(g1 // 10, 2)


class FitBenchmark(abc.ABC):
    """One random-effects structure x rows: time, peak memory, criterion, evaluations."""

    params = (SIZES,)
    param_names = ("rows",)
    # A 10^6-row GLMM fit takes tens of seconds, several times that on a busy machine;
    # asv's default of 60 s would cut it off.
    timeout = 1200
    # A fit is long and has no JIT to warm up: one call per sample, no warm-up call,
    # at least one and at most three samples (fewer once 5 s are spent), one round.
    # More on the command line: -a repeat=5 -a rounds=2.
    number = 1
    warmup_time = 0
    repeat = (1, 3, 5.0)
    min_run_count = 1
    rounds = 1

    @abc.abstractmethod
    def draw(self, rows: int) -> tuple[str, str, object]:
        """(formula, family, data) with ``rows`` rows; the same for the same rows."""

    def setup(self, rows):
        self.formula, self.family, self.data = self.draw(rows)

    def fit(self):
        """The fit every benchmark measures; warnings (convergence notes) silenced."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if self.family == "gaussian":
                return gs.lmer(self.formula, self.data)
            return gs.glmer(self.formula, self.data, family=self.family)

    def criterion(self, result) -> float:
        """-2 log-likelihood at the optimum (REML criterion for lmer's REML fits):
        larger means a worse optimum on the same data."""
        if self.family == "gaussian":
            return float(result.objective)
        return -2.0 * float(result.loglik)

    def time_fit(self, rows):
        self.fit()

    def peakmem_setup(self, rows):
        """The baseline of peakmem_fit: the same process, data drawn, nothing fitted."""

    def peakmem_fit(self, rows):
        self.fit()

    def track_objective(self, rows):
        return self.criterion(self.fit())

    track_objective.unit = "-2 log-likelihood"

    def track_evaluations(self, rows):
        """Every evaluation of the criterion: the optimizer's and the convergence check's."""
        return int(self.fit().optimizer.n_total_evals)

    track_evaluations.unit = "evaluations"
