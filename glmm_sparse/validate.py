"""Checks of the model frame's values: every refusal names the column, the row and the fix.

Part of building the model frame (data -> frame -> terms -> ...), after the used columns
are evaluated and before anything numerical runs: a NaN or infinity that reached the
cross-products would surface as a LAPACK or CHOLMOD failure far from its cause. Rows are
named by the data's row labels (its index), which survive the dropping of missing rows.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .errors import DataError


def row_label(rows, i: int) -> str:
    """Row i as the data name it: its index label (quoted if text), or i without labels."""
    if rows is None:
        return str(i)
    label = rows[i]
    label = label.item() if isinstance(label, np.generic) else label
    return repr(label) if isinstance(label, str) else str(label)


def check_has_rows(n: int) -> None:
    """A fit needs data."""
    if n == 0:
        raise DataError("the data have 0 rows: there is nothing to fit (check the filter or "
                        "file that produced them)")


def check_values(values: np.ndarray, names, rows: pd.Index, what: str) -> None:
    """Refuse NaN, infinite or unrepresentably sized values in an (n,) or (n, k) array,
    naming the column and the row.

    ``what`` describes a column, with ``{}`` where its quoted name goes.

    Missing values in the data are dropped (or refused) before this; a value caught here
    is an infinity in the data or one made by a transformation (log(0), 1/0, ...).
    """
    values = values.reshape(values.shape[0], -1)
    if not values.size:
        return
    # a column's min and max are NaN or infinite exactly when a value is; no n x k
    # temporaries (np.isfinite and np.abs of X were 0.6 GB and 2 s at 10^7 rows)
    lo = np.array([values[:, j].min() for j in range(values.shape[1])])
    hi = np.array([values[:, j].max() for j in range(values.shape[1])])
    if np.isfinite(lo).all() and np.isfinite(hi).all():
        _check_sizes(np.maximum(np.abs(lo), np.abs(hi)), names, what)
        return
    bad = ~np.isfinite(values)
    i, j = np.argwhere(bad)[0]
    n_bad = int(bad.any(axis=1).sum())
    raise DataError(
        f"{what.format(repr(names[j]))} is {values[i, j]} at row {row_label(rows, i)} "
        f"({n_bad} row(s) in all): replace infinite values in the data, or change the "
        "transformation that makes them (e.g. log of 0 or of a negative number)")


def check_column_types(data: pd.DataFrame, columns) -> None:
    """Columns that enter a model matrix are numbers, booleans, text or categories.

    Dates and durations (and complex numbers) have no arithmetic formulaic can use; it
    would fail deep inside with a NumPy type error.
    """
    for name in columns:
        col = data[name]
        for dtype in col.dtypes if isinstance(col, pd.DataFrame) else [col.dtype]:
            if dtype.kind in "mMc" or isinstance(dtype, pd.PeriodDtype):
                raise DataError(f"column {name!r} has type {dtype}, which a model matrix "
                                "cannot use: convert it to a number (e.g. days since a date) "
                                "or to text / a category")


# Columns whose largest |value| lies outside [MIN_SIZE, MAX_SIZE] (and is not 0): their
# squares, summed over the rows in the cross-products, overflow or underflow doubles.
MAX_SIZE = 1e100
MIN_SIZE = 1e-100


def check_size(values: np.ndarray, names, what: str) -> None:
    """Refuse a column of finite values too large or too small for sums of squares."""
    if not values.size:
        return
    _check_sizes(np.max(np.abs(values.reshape(values.shape[0], -1)), axis=0), names, what)


def _check_sizes(sizes: np.ndarray, names, what: str) -> None:
    """check_size on the largest |value| of each column."""
    for name, size in zip(names, sizes):
        if size > MAX_SIZE or 0 < size < MIN_SIZE:
            raise DataError(f"{what.format(repr(name))} has values of size {size:.3g}, beyond "
                            "what sums of squares in double precision hold: rescale it (e.g. "
                            f"divide by {10.0 ** np.round(np.log10(size)):.0e})")


def numeric_argument(values, data: pd.DataFrame, n: int, what: str) -> np.ndarray:
    """A per-row argument (weights, offset): a numeric column's name or n numbers."""
    if isinstance(values, str):
        col = data[values]
        if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
            raise DataError(f"the {what} column {values!r} must be numeric, not {col.dtype}")
        return col.to_numpy(dtype=np.float64)
    try:
        out = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{what} must be a column name or numbers, one per row; the "
                        "values given are not numbers") from None
    if out.shape != (n,):
        raise DataError(f"{what} must have one value per row ({n}), got shape {out.shape}")
    return out


def check_weights(w: np.ndarray, rows: pd.Index) -> None:
    """Prior weights are finite, non-negative and not all zero."""
    bad = ~np.isfinite(w) | (w < 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"weights must be finite and >= 0; row {row_label(rows, i)} has {w[i]} "
                        f"({int(bad.sum())} row(s) in all)")
    if not np.any(w > 0):
        raise DataError("every prior weight is 0: no row carries information; check the "
                        "weights column")
    check_size(w, ["weights"], "the prior {}")


def check_response_varies(y: np.ndarray, name: str) -> None:
    """An LMM of a constant response has no residual variation to estimate."""
    if y.shape[0] and np.all(y == y[0]):
        raise DataError(f"the response {name!r} is constant (every value is {y[0]:g}): a "
                        "linear mixed model needs variation in the response; check that "
                        "the right column is used")


def check_residual_variation(resid: np.ndarray, y: np.ndarray) -> None:
    """Refuse a response that least squares on the fixed effects reproduces to rounding."""
    scale = float(np.max(np.abs(y))) if y.shape[0] else 0.0
    if y.shape[0] and float(np.max(np.abs(resid))) <= 1e-12 * scale:
        raise DataError("the response is (to rounding) an exact linear function of the "
                        "fixed effects: nothing is left for the random effects and the "
                        "residual variance; check that the response is not computed from "
                        "the predictors")


def check_glmm_response_varies(y: np.ndarray, w: np.ndarray, family, name: str) -> None:
    """Refuse a response whose likelihood has no finite maximum: all failures or all
    successes (binomial), all zero counts (Poisson), a constant (families with a dispersion)."""
    used = y[w > 0]
    if not used.shape[0]:
        return
    if family.name == "binomial" and (np.all(used == 0) or np.all(used == 1)):
        outcome = "0 (failure)" if used[0] == 0 else "1 (success)"
        problem = f"is {outcome} in every row"
    elif family.name == "poisson" and np.all(used == 0):
        problem = "is 0 in every row"
    elif family.has_dispersion and np.all(used == used[0]):
        problem = f"is constant (every value is {used[0]:g})"
    else:
        return
    raise DataError(f"the response {name!r} {problem}: its {family.name} likelihood has no "
                    "finite maximum (the intercept would run to infinity or the dispersion "
                    "to 0); check the response column and the rows selected")
