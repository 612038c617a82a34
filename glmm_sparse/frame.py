"""The model frame: the rows and columns a fit uses, as NumPy arrays.

Between the formula and the cross-products: selects the used columns, drops rows with a
missing value (lme4's na.omit) or refuses them, evaluates the response, the fixed-effects
model matrix (formulaic, treatment contrasts, R's column names), offsets and prior
weights, drops aliased fixed-effects columns, and materializes the random terms.
"""
from __future__ import annotations

import difflib
import warnings
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import pandas as pd

from .blas import one_blas_thread
from .design import DesignSpec, design_matrix, expression_variables, model_matrix
from .errors import (
    DataError,
    DroppedRowsWarning,
    FormulaError,
    ModelSpecError,
    RankDeficiencyWarning,
)
from .formula import ParsedFormula
from .parallel import run_all
from .responses import column_name, numeric_response, response_expressions
from .terms import ReTerm, check_identifiable, materialize, order_terms
from .validate import (
    check_column_types,
    check_has_rows,
    check_values,
    check_weights,
    numeric_argument,
)

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
    # [X, y - offset] in one C-ordered buffer (X is a view of its first p columns; the last
    # column is the response's slot, see crossprod.response_matrix) and the R of its QR
    XB: np.ndarray | None = field(default=None, repr=False)
    R_XB: np.ndarray | None = field(default=None, repr=False)
    # how X was made (all columns, before aliased ones were dropped) and where the
    # offset= argument came from, to make the same predictors on new rows (predict.py)
    fixed_spec: DesignSpec | None = field(default=None, repr=False)
    offset_column: str | None = None
    offset_array: bool = False

    @property
    def n(self) -> int:
        return self.y.shape[0]


def used_columns(parsed: ParsedFormula, extra: list[str],
                 formula: str | None = None) -> dict[str, bool]:
    """All names the model reads (formula and named weights/offset), each mapped to whether
    it is only called as a function; the response and offsets are read as I(...)."""
    names: dict[str, bool] = {}
    exprs = [parsed.fixed, *(f"I({e})" for e in parsed.offsets), *(t.lhs for t in parsed.random)]
    if parsed.response:
        exprs += [f"I({e})" for e in response_expressions(parsed.response)]
    for expr in exprs:
        for name, called in expression_variables(expr, formula).items():
            names[name] = names.get(name, True) and called
    for name in [g for t in parsed.random for g in t.group] + extra:
        names[name] = False
    return dict(sorted(names.items()))


def check_columns(columns: dict[str, bool], data: pd.DataFrame, formula: str) -> None:
    """Every used column exists and every called name is a function, or an error names it."""
    for name, called in columns.items():
        if called:
            raise FormulaError(f"unknown function {name!r} in the formula: use numpy's "
                               f"(np.{name}) or formulaic's transforms (log, exp, scale, "
                               f"poly, C, ...)", formula=formula, position=_find(formula, name))
        if name not in data.columns:
            raise FormulaError(f"column {name!r} used in the formula is not in the data"
                               f"{_close(name, data)}", formula=formula,
                               position=_find(formula, name))
        copies = int((data.columns == name).sum())
        if copies > 1:
            raise DataError(f"column {name!r} appears {copies} times in the data, so the "
                            f"formula's {name!r} is ambiguous: rename or drop the duplicates")


def _close(name: str, data: pd.DataFrame) -> str:
    """A hint naming the data's columns closest to a missing name (empty if none is)."""
    close = difflib.get_close_matches(name, [str(c) for c in data.columns], n=3)
    return f"; did you mean {', '.join(map(repr, close))}?" if close else ""


def _find(formula: str, name: str) -> int | None:
    at = formula.find(name)
    return at if at >= 0 else None


NOTHING_LEFT = "every row has a missing value in a used column; nothing is left to fit"


def warn_rank_deficient(names: list[str], *, stacklevel: int) -> None:
    """lme4's warning for aliased fixed-effects columns, dropped (every path issues this
    one; ``stacklevel`` as seen from here)."""
    warnings.warn(f"fixed-effect model matrix is rank deficient so dropping "
                  f"{len(names)} column(s): {', '.join(names)}", RankDeficiencyWarning,
                  stacklevel=stacklevel)


def drop_missing(data: pd.DataFrame, columns: list[str], na_action: str) -> tuple[pd.DataFrame, np.ndarray]:
    """Rows complete in the used columns, and the mask of the rows kept."""
    if na_action not in ("omit", "raise"):
        raise ModelSpecError(f"na_action must be 'omit' or 'raise', not {na_action!r}")
    # the used columns without copying them: data[columns] copies a consolidated block
    # (a frame read from Parquet: 458 MB at 10^7 rows x 6, kept alive by y, a view of it)
    sub = pd.DataFrame({c: data[c] for c in columns}, index=data.index, copy=False)
    missing = np.zeros(len(sub), dtype=bool)
    for c in columns:  # column by column: no n x columns table of flags
        missing |= sub[c].isna().to_numpy()
    n_missing = int(missing.sum())
    if not n_missing:
        return sub, ~missing
    if na_action == "raise":
        cols = [c for c in columns if sub[c].isna().any()]
        raise DataError(f"{n_missing} rows have missing values (in columns {cols}); "
                        f"drop them or use na_action='omit'")
    if n_missing == len(sub):
        raise DataError(NOTHING_LEFT)
    warnings.warn(f"{n_missing} rows with missing values dropped ({len(sub) - n_missing} used)",
                  DroppedRowsWarning, stacklevel=4)
    return sub.loc[~missing], ~missing


def numeric_column(expr: str, data: pd.DataFrame, what: str,
                   formula: str | None = None) -> np.ndarray:
    """A one-column numeric expression of the data (response, offset), as float64.

    A column name is read as it is; anything else is arithmetic, evaluated inside I() so
    that formula operators do not apply ("size - incidence" is a difference, not a model
    without incidence).
    """
    name = column_name(expr)
    if name in data.columns:
        col = data[name]
        if not pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
            raise DataError(f"the {what} {expr!r} must be one numeric column, not "
                            f"{col.dtype} (is it a factor or text?)")
        return col.to_numpy(dtype=np.float64)
    values, _ = model_matrix(f"0 + I({expr})", data, formula, what)
    if values.shape[1] != 1:
        raise DataError(f"the {what} {expr!r} must be one numeric column, not "
                        f"{values.shape[1]} columns (is it a factor or text?)")
    return values[:, 0].copy()


def tsqr_r(A: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
    """R of an unpivoted QR of A, by a row-chunked (TSQR) reduction: the R of each fixed
    chunk of rows (on all threads: LAPACK releases the GIL), then the R of those stacked.
    A is never copied whole, and the chunks, hence the result, do not depend on the
    thread count. NumPy's BLAS stays on one thread per chunk meanwhile (blas.py): its own
    threads on these thin panels cost 8x the work (2.8 s against 0.34 s for 10^7 x 7)."""
    n = A.shape[0]
    if n <= chunk:
        return np.linalg.qr(A, mode="r")
    tasks = [lambda start=start: np.linalg.qr(A[start:start + chunk], mode="r")
             for start in range(0, n, chunk)]
    with one_blas_thread():
        return np.linalg.qr(np.vstack(run_all(tasks, n)), mode="r")


def aliased_columns(X: np.ndarray, R: np.ndarray, tol: float = RANK_TOL) -> list[int]:
    """Columns that are linear combinations of the columns before them (as R's qr).

    |R[j, j]| of an unpivoted QR is the norm of column j's part orthogonal to the columns
    before it. R is the row-chunked QR (tsqr_r) of X, or of X with more columns after it
    (the QR of [X y]): its leading block is X's.
    """
    p = X.shape[1]
    if p == 0:
        return []
    R = R[:p, :p]
    norms = np.sqrt(np.einsum("ij,ij->j", X, X))
    diag = np.abs(np.diag(R)) if R.shape[0] >= p else np.concatenate(
        [np.abs(np.diag(R)), np.zeros(p - R.shape[0])])
    return [j for j in range(p) if norms[j] == 0 or diag[j] < tol * norms[j]]


def prior_weights(weights, data: pd.DataFrame, n: int) -> np.ndarray | None:
    """Prior weights from a column name or an array, checked finite, >= 0 and not all 0."""
    if weights is None:
        return None
    w = numeric_argument(weights, data, n, "weights")
    check_weights(w, data.index)
    return w


def build_frame(parsed: ParsedFormula, formula: str, data: pd.DataFrame, *, weights=None,
                offset=None, na_action: str = "omit", response=numeric_response,
                glmm: bool = False) -> ModelFrame:
    """The ModelFrame of a parsed formula on a pandas DataFrame.

    ``response(expr, data, evaluate)`` returns (y, trials or None); trials multiply the
    prior weights (binomial counts). ``glmm`` selects glmer's identifiability checks.
    """
    if parsed.response is None:
        raise FormulaError("the formula has no response: write it as 'y ~ ...'", formula, 0)
    for value, what in ((weights, "weights"), (offset, "offset")):
        if isinstance(value, str) and value not in data.columns:
            raise DataError(f"the {what} column {value!r} is not in the data{_close(value, data)}")
    cols = used_columns(parsed, [a for a in (weights, offset) if isinstance(a, str)], formula)
    check_columns(cols, data, formula)
    check_has_rows(len(data))
    sub, kept = drop_missing(data, list(cols), na_action)
    groups = {g for t in parsed.random for g in t.group}
    check_column_types(sub, [c for c in cols if c not in groups])
    weights, offset = (_rows(a, kept) for a in (weights, offset))
    n = len(sub)
    y, trials = response(parsed.response, sub, partial(numeric_column, formula=formula))
    check_values(y, [parsed.response], sub.index, "the response {}")
    XB, fixed_spec = design_matrix(parsed.fixed, sub, formula, "fixed-effects term",
                                   extra_columns=1)
    xnames = list(fixed_spec.names)
    check_values(XB[:, :-1], xnames, sub.index, "the fixed-effects column {}")
    off = total_offset(parsed, sub, offset, n, formula)
    XB, R, xnames, dropped = _drop_aliased(XB, y if off is None else y - off, xnames)
    X = XB[:, :-1]
    terms = order_terms([materialize(t, sub, formula, fixed=(XB, tuple(xnames)))
                         for t in parsed.random])
    check_identifiable(terms, n, allow_n=glmm)
    w = prior_weights(weights, sub, n)
    if trials is not None:
        w = trials if w is None else w * trials
    y, w, off = (_owned(a) for a in (y, w, off))
    return ModelFrame(y, X, tuple(xnames), w, off, tuple(terms),
                      sub.index, int((~kept).sum()), tuple(dropped), XB, R, fixed_spec,
                      offset if isinstance(offset, str) else None,
                      offset is not None and not isinstance(offset, str))


def _drop_aliased(XB: np.ndarray, r: np.ndarray, xnames: list[str]):
    """[X r] without X's aliased columns (with a warning naming them), the R of its QR, the
    kept names and the dropped ones. One row-chunked QR of [X r] serves both the rank
    check (its leading block is X's R) and the least-squares fit of r on X
    (crossprod.response_matrix)."""
    XB[:, -1] = r
    R = tsqr_r(XB)
    dropped = aliased_columns(XB[:, :-1], R)
    if not dropped:
        return XB, R, xnames, []
    names = [xnames[j] for j in dropped]
    warn_rank_deficient(names, stacklevel=5)
    keep = [j for j in range(XB.shape[1] - 1) if j not in dropped] + [XB.shape[1] - 1]
    XB = np.ascontiguousarray(XB[:, keep])
    return XB, tsqr_r(XB), [xnames[j] for j in keep[:-1]], names


def _owned(values: np.ndarray | None) -> np.ndarray | None:
    """A per-row vector the frame owns: a view of the caller's data (a column read without
    copying) is copied, so that changing the DataFrame after the fit cannot change what
    refits, tests and simulations read from the result's frame."""
    return values if values is None or values.base is None else values.copy()


def _rows(values, kept: np.ndarray):
    """A per-row array argument restricted to the kept rows (column names pass through)."""
    if values is None or isinstance(values, str):
        return values
    values = np.asarray(values)
    return values[kept] if values.shape == kept.shape else values


def total_offset(parsed: ParsedFormula, data: pd.DataFrame, offset, n: int,
                 formula: str) -> np.ndarray | None:
    """Sum of the formula's offset(...) terms and the offset= argument, or None."""
    parts = [numeric_column(expr, data, "offset", formula) for expr in parsed.offsets]
    labels = [f"offset({expr})" for expr in parsed.offsets]
    if offset is not None:
        parts.append(numeric_argument(offset, data, n, "offset"))
        labels.append(offset if isinstance(offset, str) else "offset=")
    for part, label in zip(parts, labels):
        check_values(part, [label], data.index, "the offset {}" if label != "offset=" else
                     "the {} argument")
    return np.sum(parts, axis=0) if parts else None
