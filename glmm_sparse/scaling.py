"""Units of the optimizer's parameters: powers of ten that bring badly scaled theta and beta
to order one.

Between the model frame and the optimizer (... -> factor -> optimize). theta is relative
to the residual scale and in the units of the random-effects covariates: ``(x | g)`` with
x of order 1e9 puts the slope's theta near 1e-9, far below BOBYQA's steps and tolerances
and the finite-difference steps of the convergence check (lme4 fails there too, with
"Rescale variables?"). The same holds for the fixed effects that the GLMM's second stage
optimizes. The optimizer therefore works on ``parameter / unit``. A parameter of moderate
size keeps unit 1, so ordinary fits are unchanged bit for bit.
"""
from __future__ import annotations

import numpy as np

# |log10| of a covariate's size that needs no rescaling: sleepstudy's Days (size 5.6)
# fits to lme4's optimum at x 100 and fails at x 1000 without rescaling.
MODERATE = 1.5
# Standard errors of fixed effects that need no rescaling: the convergence check's
# finite-difference step (1e-4) is then 1e-4 to 0.1 standard errors; all GLMM reference
# fits lie inside. Outside, the unit makes the step 0.01 standard errors.
SE_BAND = (1e-3, 1.0)
SE_PER_STEP = 100.0


def nearest_power_of_ten(value: float) -> float:
    """10 ** round(log10(value)); 1 for a value that is not positive and finite."""
    if not (np.isfinite(value) and value > 0):
        return 1.0
    return float(10.0 ** np.round(np.log10(value)))


def power_of_ten(typical: float) -> float:
    """1 for a typical size within 10^(+-MODERATE), otherwise its nearest power of ten."""
    if np.isfinite(typical) and typical > 0 and abs(np.log10(typical)) <= MODERATE:
        return 1.0
    return nearest_power_of_ten(typical)


def theta_units(terms, theta_map, weights: np.ndarray | None = None) -> np.ndarray:
    """Unit of each theta (lme4's order): T[r, c] scales as 1 / (size of column r of Z_t).

    The size of a covariate is its root mean square over its non-zero rows (indicator
    columns of rare factor levels count as size 1). For an LMM theta is relative to sigma,
    and sigma^2 / w is the residual variance, so prior weights scale theta by 1 / sqrt(w):
    pass them to have the size multiplied by the root of their mean (positive) value.
    """
    w_size = 1.0
    if weights is not None and np.any(weights > 0):
        w_size = float(np.sqrt(np.mean(weights[weights > 0])))
    sumsq = [np.einsum("ij,ij->j", t.X, t.X) for t in terms]
    nonzero = [np.count_nonzero(t.X, axis=0) for t in terms]
    return theta_units_from_sums(sumsq, nonzero, theta_map, w_size)


def theta_units_from_sums(sumsq, nonzero, theta_map, w_size: float = 1.0) -> np.ndarray:
    """theta_units from n-free sums: per term, each column's sum of squares and count of
    non-zero rows; ``w_size`` the root of the mean positive prior weight (1 without)."""
    units = []
    for ss, nz, rows in zip(sumsq, nonzero, theta_map.rows):
        rms = np.sqrt(ss / np.maximum(nz, 1))
        per_column = np.array([1.0 / power_of_ten(v * w_size) for v in rms])
        units.append(per_column[rows])
    return np.concatenate(units) if units else np.zeros(0)


def beta_units(se: np.ndarray) -> np.ndarray:
    """Unit of each fixed effect when it is optimized, from its standard error."""
    lo, hi = SE_BAND
    return np.array([1.0 if lo <= v <= hi else nearest_power_of_ten(SE_PER_STEP * v)
                     for v in np.asarray(se, dtype=np.float64)])
