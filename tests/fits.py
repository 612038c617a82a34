"""Fits shared by the inference tests (test_lrt.py, test_variance_tests.py), made once per
test run, as MixedModels.jl's test/modelcache.jl: a fit is keyed by its formula, data set
and (hashable) options. Results are immutable; data frames from ``dataset`` are shared, so
tests copy them (``.assign``, ``.drop``) before changing anything.
"""
import warnings
from functools import cache

from refdata import load_data

import glmm_sparse as gs

CBPP = "cbind(incidence, size - incidence) ~ {} + (1 | herd)"


def quiet(fit, *args, **kwargs):
    """``fit(*args, **kwargs)`` with glmm_sparse's warnings (singular fits, convergence
    notes) silenced: the tests check numbers, not warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gs.GlmmSparseWarning)
        return fit(*args, **kwargs)


@cache
def dataset(name: str, base: str = "shared"):
    """A reference data set (tests/reference/.../data), read once."""
    return load_data(name, base)


@cache
def lmer(formula: str, data: str, base: str = "shared", **options):
    """``gs.lmer(formula, dataset(data, base), **options)``, fitted once per run."""
    return quiet(gs.lmer, formula, dataset(data, base), **options)


@cache
def glmer(formula: str, data: str, base: str = "shared", **options):
    """``gs.glmer(formula, dataset(data, base), **options)``, fitted once per run."""
    return quiet(gs.glmer, formula, dataset(data, base), **options)
