"""Random small data and formulas: a fit, or one of the package's documented exceptions.

Issue 4: whatever the input, lmer and glmer either return a result with finite numbers or
raise a ``GlmmSparseError`` subclass (or ``TypeError``); never another exception, a crash
or a hang. Data frames have a few numeric columns (with optional NaN / inf and extreme
scales), two grouping columns with 1-6 levels (text, integers or categoricals, sometimes
with a missing value) and optional weights; formulas are drawn from the supported
grammar. Each failure found is kept below as an ``@example``.
"""
import warnings

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import glmm_sparse as gs

# the first entry of each list is what hypothesis shrinks towards: a model that fits
FIXED = ["x1", "1", "0 + x1", "x1 - 1", "x1 + x2", "x1 * x2", "x1:x2", "g1", "0 + g1",
         "x1 + g2", "C(g2)", "g1:x1", "log(x1)", "I(x1 ** 2)", "scale(x2)"]
RANDOM = ["(1 | g1)", "(x1 | g1)", "(x1 || g2)", "(1 | g1/g2)", "(1 | g1:g2)",
          "(0 + x1 | g2)", "(1 + x2 | g2)", "(g2 | g1)", "(0 + g2 | g1)", "(x2 || g1:g2)"]
KINDS = ["lmer", "binomial", "poisson"]
LEVELS = [4, 3, 5, 6, 2, 1]


def _numeric(draw, rng, n):
    x = rng.normal(size=n) * draw(st.sampled_from([1.0, 1e-9, 1e9]))
    shape = draw(st.sampled_from(["normal", "constant", "integer"]))
    if shape == "constant":
        x[:] = 2.0
    elif shape == "integer":
        x = np.round(x)
    if draw(st.integers(0, 3)) == 3:
        x[rng.integers(n)] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    return x


def _grouping(draw, rng, n):
    codes = rng.integers(0, LEVELS[draw(st.integers(0, len(LEVELS) - 1))], n)
    style = draw(st.sampled_from(["str", "int", "cat"]))
    col = pd.Series(codes.astype(str) if style == "str" else codes if style == "int"
                    else pd.Categorical(codes.astype(str)))
    if draw(st.integers(0, 5)) == 5:
        col[rng.integers(n)] = None
    return col


def _response(draw, rng, kind, x1):
    finite = np.where(np.isfinite(x1), x1, 0.0)
    eta = np.clip(0.5 * finite / max(float(np.std(finite)), 1e-300), -3.0, 3.0)
    if kind == "lmer":
        y = eta + rng.normal(size=eta.shape[0])
        if draw(st.integers(0, 4)) == 4:
            y[rng.integers(y.shape[0])] = draw(st.sampled_from([np.nan, np.inf]))
        return y
    if kind == "binomial":
        return (rng.random(eta.shape[0]) < 1 / (1 + np.exp(-eta))).astype(float)
    return rng.poisson(np.exp(eta)).astype(float)


@st.composite
def cases(draw):
    """(kind, data, formula, weights column or None, nagq)."""
    kind = draw(st.sampled_from(KINDS))
    n = draw(st.integers(6, 40))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    data = {"x1": _numeric(draw, rng, n), "x2": _numeric(draw, rng, n),
            "g1": _grouping(draw, rng, n), "g2": _grouping(draw, rng, n),
            "s": rng.integers(0, 5, n), "f": rng.integers(1, 5, n)}
    data["y"] = _response(draw, rng, kind, data["x1"])
    weights = None
    if draw(st.booleans()):
        w = rng.uniform(0.5, 2.0, n)
        if draw(st.integers(0, 3)) == 3:
            w[rng.integers(n)] = draw(st.sampled_from([0.0, -1.0, np.nan, np.inf]))
        data["w"], weights = w, "w"
    response = "cbind(s, f)" if kind == "binomial" and draw(st.booleans()) else "y"
    parts = [draw(st.sampled_from(FIXED))]
    parts += draw(st.lists(st.sampled_from(RANDOM), min_size=int(draw(st.integers(0, 9)) < 9),
                           max_size=2, unique=True))
    if draw(st.booleans()):
        parts.append("offset(x2)")
    nagq = draw(st.sampled_from([1, 0, 3]))
    return kind, pd.DataFrame(data), f"{response} ~ " + " + ".join(parts), weights, nagq


def _fit(kind, data, formula, weights, nagq):
    if kind == "lmer":
        return gs.lmer(formula, data, weights=weights)
    return gs.glmer(formula, data, family=kind, weights=weights, nagq=nagq)


# p = 0 after dropping the aliased column 0 + g1: vcov took the whole Hessian ([-0:])
P0 = pd.DataFrame({"x1": [0.12573, -0.132105, 0.640423, 0.1049, -0.535669, 0.361595],
                   "g1": [0] * 6, "g2": ["0", "1", "1", "0", "1", "1"],
                   "y": [0.0, 2.0, 1.0, 0.0, 1.0, 1.0]})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases())
@example(case=("poisson", P0, "y ~ 0 + g1 + (x1 || g2)", None, 1))
def test_random_input_fits_or_raises_a_documented_error(case):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            m = _fit(*case)
        except (gs.GlmmSparseError, TypeError):
            return
    assert np.isfinite(m.loglik) and np.all(np.isfinite(m.theta))
    assert np.all(np.isfinite(m.fixef.to_numpy())) and np.all(np.isfinite(m.vcov.to_numpy()))
    assert m.vcov.shape == (len(m.fixef), len(m.fixef))
