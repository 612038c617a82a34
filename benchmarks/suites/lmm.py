"""asv benchmarks of lmer fits, grouped by random-effects structure x size.

Each structure is a seeded synthetic data set (glmm_sparse.synthetic); sizes are rows.
Besides time and peak memory, the criterion at the optimum and the number of objective
evaluations are tracked, so that a speed-up bought with a worse optimum shows.
"""
import warnings

import glmm_sparse as gs
from glmm_sparse.synthetic import crossed_formula, crossed_lmm

STRUCTURES = {
    # name: (levels of each crossed factor, correlated slope on g1)
    "scalar": ((500,), False),
    "slopes": ((500,), True),
    "crossed": ((2000, 200), False),
    "crossed_slopes": ((1000, 100), True),
}
SIZES = [10_000, 100_000, 1_000_000]


class LmerFit:
    params = (list(STRUCTURES), SIZES)
    param_names = ["structure", "rows"]
    timeout = 600

    def setup(self, structure, rows):
        levels, slope = STRUCTURES[structure]
        self.data, _ = crossed_lmm(rows, levels, seed=1, slope=slope)
        self.formula = crossed_formula(levels, slope=slope)

    def _fit(self):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return gs.lmer(self.formula, self.data, factor_mode="simplicial")

    def time_fit(self, structure, rows):
        self._fit()

    def peakmem_fit(self, structure, rows):
        self._fit()

    def track_objective(self, structure, rows):
        return self._fit().objective

    def track_evaluations(self, structure, rows):
        return self._fit().optimizer.n_evals


class LmerNested:
    """Pupils in classes in schools: (1 | school/class)."""

    params = [SIZES]
    param_names = ["rows"]
    timeout = 600

    def setup(self, rows):
        import numpy as np
        import pandas as pd

        rng = np.random.default_rng(2)
        school = rng.integers(0, max(rows // 200, 2), rows)
        klass = rng.integers(0, 8, rows)
        y = rng.normal(size=max(rows // 200, 2))[school] + 0.5 * rng.normal(size=(max(rows // 200, 2), 8))[school, klass]
        self.data = pd.DataFrame({"y": y + rng.normal(size=rows), "x": rng.normal(size=rows),
                                  "school": school, "klass": klass})

    def time_fit(self, rows):
        gs.lmer("y ~ x + (1 | school/klass)", self.data)

    def track_evaluations(self, rows):
        return gs.lmer("y ~ x + (1 | school/klass)", self.data).optimizer.n_evals
