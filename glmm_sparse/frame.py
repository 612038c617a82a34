"""The model frame: the rows and columns a fit uses, as NumPy arrays.

Between the formula and the cross-products: selects the used columns, drops rows with a
missing value (lme4's na.omit) or refuses them, evaluates the response, the fixed-effects
model matrix (formulaic, treatment contrasts, R's column names), offsets and prior
weights, drops aliased fixed-effects columns, and materializes the random terms.
"""
from __future__ import annotations

import difflib
import warnings
from dataclasses import dataclass

import formulaic
import numpy as np
import pandas as pd

from .errors import DataError, DroppedRowsWarning, FormulaError, RankDeficiencyWarning
from .formula import ParsedFormula
from .responses import numeric_response, response_expressions
from .terms import ReTerm, check_identifiable, materialize, order_terms, r_column_name

RANK_TOL = 1e-7  # lme4's default tolerance for rank deficiency of X (qr)


@dataclass(frozen=True, eq=False)
class ModelFrame:
    """Everything a fit needs from the data, row-aligned (n rows after dropping NAs)."""

    y: np.ndarray
    X: np.ndarray
    xnames: tuple[str, ...]
    weights: np.ndarray | None
    offset: np.ndarray | None
    terms: tuple[ReTerm, ...]
    row_index: pd.Index
    n_dropped: int
    dropped_columns: tuple[str, ...] = ()

    @property
    def n(self) -> int:
        return self.y.shape[0]


def _variables(expr: str) -> set[str]:
    """Data columns an expression reads."""
    return {str(v) for v in formulaic.Formula(expr).required_variables}


def used_columns(parsed: ParsedFormula, extra: list[str]) -> list[str]:
    """All data columns the model reads (formula and named weights/offset), sorted."""
    names: set[str] = set()
    for expr in [parsed.fixed, *parsed.offsets, *(t.lhs for t in parsed.random)]:
        names |= _variables(expr)
    if parsed.response:
        for expr in response_expressions(parsed.response):
            names |= _variables(expr)
    for t in parsed.random:
        names |= set(t.group)
    return sorted(names | set(extra))


def check_columns(columns: list[str], data: pd.DataFrame, formula: str) -> None:
    """Every used column exists, or an error names it with close matches."""
    have = [str(c) for c in data.columns]
    for name in columns:
        if name not in data.columns:
            close = difflib.get_close_matches(name, have, n=3)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise FormulaError(f"column {name!r} used in the formula is not in the data{hint}",
                               formula=formula, position=formula.find(name) if name in formula else None)


def drop_missing(data: pd.DataFrame, columns: list[str], na_action: str) -> tuple[pd.DataFrame, np.ndarray]:
    """Rows complete in the used columns, and the mask of the rows kept."""
    if na_action not in ("omit", "raise"):
        raise ValueError(f"na_action must be 'omit' or 'raise', not {na_action!r}")
    sub = data[columns]
    missing = sub.isna().any(axis=1).to_numpy()
    n_missing = int(missing.sum())
    if not n_missing:
        return sub, ~missing
    if na_action == "raise":
        cols = [c for c in columns if sub[c].isna().any()]
        raise DataError(f"{n_missing} rows have missing values (in columns {cols}); "
                        f"drop them or use na_action='omit'")
    if n_missing == len(sub):
        raise DataError("every row has a missing value in a used column; nothing is left to fit")
    warnings.warn(f"{n_missing} rows with missing values dropped ({len(sub) - n_missing} used)",
                  DroppedRowsWarning, stacklevel=4)
    return sub.loc[~missing], ~missing


def numeric_column(expr: str, data: pd.DataFrame, what: str) -> np.ndarray:
    """A one-column numeric expression of the data (response, offset), as float64.

    A column name is read as it is; anything else is arithmetic, evaluated inside I() so
    that formula operators do not apply ("size - incidence" is a difference, not a model
    without incidence).
    """
    name = expr.strip()
    if name.startswith("`") and name.endswith("`"):
        name = name[1:-1]
    if name in data.columns:
        col = data[name]
        if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
            raise DataError(f"the {what} {expr!r} must be one numeric column, not "
                            f"{col.dtype} (is it a factor or text?)")
        return col.to_numpy(dtype=np.float64)
    try:
        mm = formulaic.model_matrix(f"0 + I({expr})", data, na_action="ignore")
    except Exception as err:  # formulaic raises many types for bad expressions
        raise DataError(f"cannot evaluate the {what} {expr!r}: {err}") from None
    if mm.shape[1] != 1:
        raise DataError(f"the {what} {expr!r} must be one numeric column, not "
                        f"{mm.shape[1]} columns (is it a factor or text?)")
    return np.asarray(mm.to_numpy(dtype=np.float64)[:, 0])


def fixed_matrix(fixed: str, data: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """The fixed-effects model matrix (treatment contrasts) and R's column names."""
    mm = formulaic.model_matrix(fixed, data, na_action="ignore")
    names = [r_column_name(c) for c in mm.columns]
    return np.ascontiguousarray(mm.to_numpy(dtype=np.float64)), names


def aliased_columns(X: np.ndarray, tol: float = RANK_TOL, chunk: int = 1 << 16) -> list[int]:
    """Columns that are linear combinations of the columns before them (as R's qr).

    |R[j, j]| of an unpivoted QR is the norm of column j's part orthogonal to the columns
    before it; R comes from a row-chunked (TSQR) reduction so X is never copied whole.
    """
    p = X.shape[1]
    if p == 0:
        return []
    R = np.zeros((0, p))
    for start in range(0, X.shape[0], chunk):
        R = np.linalg.qr(np.vstack([R, X[start:start + chunk]]), mode="r")
    norms = np.sqrt(np.einsum("ij,ij->j", X, X))
    diag = np.abs(np.diag(R)) if R.shape[0] >= p else np.concatenate(
        [np.abs(np.diag(R)), np.zeros(p - R.shape[0])])
    return [j for j in range(p) if norms[j] == 0 or diag[j] < tol * norms[j]]


def prior_weights(weights, data: pd.DataFrame, n: int) -> np.ndarray | None:
    """Prior weights from a column name or an array, checked finite and non-negative."""
    if weights is None:
        return None
    w = data[weights].to_numpy(dtype=np.float64) if isinstance(weights, str) else \
        np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise DataError(f"weights must have one value per row ({n}), got shape {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        bad = np.flatnonzero(~np.isfinite(w) | (w < 0))[0]
        raise DataError(f"weights must be finite and >= 0; row {bad} has {w[bad]}")
    return w


def build_frame(parsed: ParsedFormula, formula: str, data: pd.DataFrame, *, weights=None,
                offset=None, na_action: str = "omit", response=numeric_response) -> ModelFrame:
    """The ModelFrame of a parsed formula on a pandas DataFrame.

    ``response(expr, data, evaluate)`` returns (y, trials or None); trials multiply the
    prior weights (binomial counts).
    """
    if parsed.response is None:
        raise FormulaError("the formula has no response: write it as 'y ~ ...'", formula, 0)
    cols = used_columns(parsed, [a for a in (weights, offset) if isinstance(a, str)])
    check_columns(cols, data, formula)
    sub, kept = drop_missing(data, cols, na_action)
    weights, offset = (_rows(a, kept) for a in (weights, offset))
    n = len(sub)
    y, trials = response(parsed.response, sub, numeric_column)
    X, xnames = fixed_matrix(parsed.fixed, sub)
    dropped = aliased_columns(X)
    if dropped:
        names = [xnames[j] for j in dropped]
        warnings.warn(f"fixed-effect model matrix is rank deficient so dropping "
                      f"{len(dropped)} column(s): {', '.join(names)}", RankDeficiencyWarning,
                      stacklevel=3)
        keep = [j for j in range(X.shape[1]) if j not in dropped]
        X, xnames = np.ascontiguousarray(X[:, keep]), [xnames[j] for j in keep]
    off = _total_offset(parsed, sub, offset, n)
    terms = order_terms([materialize(t, sub) for t in parsed.random])
    check_identifiable(terms, n)
    w = prior_weights(weights, sub, n)
    if trials is not None:
        w = trials if w is None else w * trials
    return ModelFrame(y, X, tuple(xnames), w, off, tuple(terms),
                      sub.index, int((~kept).sum()), tuple(names) if dropped else ())


def _rows(values, kept: np.ndarray):
    """A per-row array argument restricted to the kept rows (column names pass through)."""
    if values is None or isinstance(values, str):
        return values
    values = np.asarray(values)
    return values[kept] if values.shape == kept.shape else values


def _total_offset(parsed: ParsedFormula, data: pd.DataFrame, offset, n: int) -> np.ndarray | None:
    """Sum of the formula's offset(...) terms and the offset= argument, or None."""
    parts = [numeric_column(expr, data, "offset") for expr in parsed.offsets]
    if offset is not None:
        extra = data[offset].to_numpy(np.float64) if isinstance(offset, str) else \
            np.asarray(offset, dtype=np.float64)
        if extra.shape != (n,):
            raise DataError(f"offset must have one value per row ({n}), got shape {extra.shape}")
        parts.append(extra)
    return np.sum(parts, axis=0) if parts else None
