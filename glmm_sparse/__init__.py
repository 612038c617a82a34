"""glmm_sparse: linear and generalized linear mixed-effects models on sparse Cholesky factors.

``lmer(formula, data)`` fits an LMM by REML or ML, ``glmer(formula, data, family=...)`` a GLMM
by Laplace or adaptive Gauss-Hermite, with lme4's formula language and results.
"""
from .errors import (ConvergenceWarning, DataError, DroppedRowsWarning, FactorMemoryError,
                     FormulaError, GlmmSparseError, GlmmSparseWarning, ModelSpecError, NumericalError,
                     RankDeficiencyWarning, SingularFitWarning)
from .models import glmer, lmer
from .results import LmerResult
from .results_glmm import GlmerResult

__version__ = "0.1.0"

__all__ = [
    "lmer", "glmer", "LmerResult", "GlmerResult", "GlmmSparseError", "FormulaError", "DataError", "ModelSpecError",
    "NumericalError", "FactorMemoryError", "GlmmSparseWarning", "SingularFitWarning", "ConvergenceWarning",
    "RankDeficiencyWarning", "DroppedRowsWarning", "__version__",
]
