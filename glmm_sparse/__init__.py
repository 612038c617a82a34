"""glmm_sparse: linear and generalized linear mixed-effects models on sparse Cholesky factors.

``lmer(formula, data)`` fits an LMM by REML or ML, ``glmer(formula, data, family=...)`` a GLMM
by Laplace or adaptive Gauss-Hermite, with lme4's formula language and results.
"""
from . import plots
from .bootstrap import BootstrapResult, bootstrap
from .errors import (
                     ConvergenceWarning,
                     DataError,
                     DroppedRowsWarning,
                     FactorMemoryError,
                     FormulaError,
                     GlmmSparseError,
                     GlmmSparseWarning,
                     ModelSpecError,
                     NumericalError,
                     RankDeficiencyWarning,
                     SingularFitWarning,
                     SpillSpaceError,
)
from .lrt import anova, chibar_pvalue
from .models import glmer, lmer
from .results import LmerResult
from .results_glmm import GlmerResult
from .variance_tests import anova_estimators, exact_f_test, variance_component_test

__version__ = "0.1.0"

__all__ = [
    "lmer", "glmer", "LmerResult", "GlmerResult", "anova", "chibar_pvalue",
    "variance_component_test", "exact_f_test", "anova_estimators", "plots",
    "bootstrap", "BootstrapResult", "GlmmSparseError", "FormulaError", "DataError", "ModelSpecError",
    "NumericalError", "FactorMemoryError", "GlmmSparseWarning", "SingularFitWarning", "ConvergenceWarning",
    "RankDeficiencyWarning", "DroppedRowsWarning", "SpillSpaceError", "__version__",
]
