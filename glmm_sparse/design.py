"""formulaic at one boundary: the columns an expression reads and its model matrix.

Used while building the model frame (formula -> frame -> terms -> ...) for the fixed
part, the random terms' left sides, the response and offsets. formulaic's exceptions
(and the SyntaxError of a malformed Python expression) become ``FormulaError`` here,
naming the expression and where it sits in the formula.
"""
from __future__ import annotations

import builtins
import re
import warnings
from dataclasses import dataclass, field

import formulaic
import numpy as np
import pandas as pd
from formulaic.errors import DataMismatchWarning, FormulaicError
from formulaic.transforms import TRANSFORMS
from formulaic.utils.variables import Variable, get_required_variables

from .errors import DataError, FormulaError

_ANSI = re.compile(r"\x1b\[[0-9;]*m|[⧛⧚]")
_FACTOR = re.compile(r"factor `(.+?)`")


def r_column_name(name: str) -> str:
    """formulaic's column name as R writes it: ``recipe[T.B]`` -> ``recipeB``,
    ``Intercept`` -> ``(Intercept)``."""
    if name == "Intercept":
        return "(Intercept)"
    name = re.sub(r"\[T\.([^\]]*)\]", r"\1", name)
    return re.sub(r"\[([^\]]*)\]", r"\1", name)


def formula_error(err: Exception, expr: str, formula: str | None, what: str) -> FormulaError:
    """A FormulaError for formulaic's (or Python's) complaint about ``expr``."""
    reason = " ".join(_ANSI.sub("", str(err)).split())
    culprit = _FACTOR.search(reason)
    target = culprit.group(1) if culprit else expr
    position = None
    if formula is not None:
        found = formula.find(target)
        position = found if found >= 0 else (formula.find(expr) if expr in formula else None)
    return FormulaError(f"cannot evaluate the {what} {target!r}: {reason}; check the "
                        f"column names and functions it uses", formula=formula, position=position)


def expression_variables(expr: str, formula: str | None = None) -> dict[str, bool]:
    """The names an expression reads, each mapped to whether it is only called (a function).

    formulaic's own ``required_variables`` drops the arguments of stateful transforms
    (``scale(x)``, ``poly(x, 2)``) and counts builtins (``abs``) as data; this reads the
    expression of every factor instead. Names of formulaic's transforms are not data.
    """
    try:
        factors = [f for term in formulaic.Formula(expr) for f in term.factors]
        found: dict[str, bool] = {}
        for factor in factors:
            method = factor.eval_method
            if method == factor.EvalMethod.LOOKUP:
                found[factor.expr] = False
            elif method == factor.EvalMethod.PYTHON:
                for var in get_required_variables(factor.expr):
                    _add_variable(found, var)
    except (FormulaicError, SyntaxError) as err:
        raise formula_error(err, expr, formula, "expression") from None
    return found


def _add_variable(found: dict[str, bool], var: Variable) -> None:
    root = var.root
    if root in TRANSFORMS:
        return
    called = var.roles == {Variable.Role.CALLABLE} and "." not in var
    if called and hasattr(builtins, root):
        return
    found[str(root)] = found.get(str(root), True) and called


def plain_columns(expr: str, data: pd.DataFrame) -> tuple[bool, list[str]] | None:
    """(intercept, column names) when ``expr`` is only an intercept and plain numeric columns
    ("1 + x1 + x2", "0 + x"), else None. Such a model matrix is the columns themselves, in
    the order written (as formulaic and R give them), so it is copied straight from the
    frame without building formulaic's intermediate table (0.5 GB at 10^7 rows x 6)."""
    intercept, names = True, []
    for part in (piece.strip() for piece in expr.split("+")):
        if part in ("0", "1"):
            intercept = part == "1"  # the last one written wins, as in R and formulaic
            continue
        col = data.get(part) if part.isidentifier() else None
        # numbers only (NumPy or pandas' nullable int/float): booleans, categories, Arrow
        # decimals and the rest keep formulaic's treatment
        if (not isinstance(col, pd.Series) or part in names
                or getattr(col.dtype, "kind", "O") not in "iuf"):
            return None
        names.append(part)
    return intercept, names


@dataclass(frozen=True, eq=False)
class DesignSpec:
    """How a model matrix was made from the fit's rows, to make it again on new rows.

    ``plain`` holds the plain-columns fast path's column names (plain_columns); otherwise
    ``model_spec`` is formulaic's ModelSpec, which keeps the factor levels, the contrasts
    and the state of stateful transforms (``scale(x)`` centred and scaled as fitted).
    Neither holds data: a few kilobytes, and it pickles.
    """

    expr: str
    names: tuple[str, ...]  # R's column names, in order
    plain: tuple[str, ...] | None = None
    model_spec: object = field(default=None, repr=False)

    @property
    def variables(self) -> list[str]:
        """The data columns the expression reads."""
        if self.plain is not None:
            return list(self.plain)
        return [name for name, called in expression_variables(self.expr).items() if not called]

    def matrix(self, data: pd.DataFrame, what: str) -> np.ndarray:
        """The model matrix of these rows with the fit's encodings (C order, float64).

        A level of a factor that the fit did not see is a DataError naming the column.
        """
        if self.plain is not None:
            return _plain_matrix(self, data, what)
        data = conform_categories(self.model_spec, data, what)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DataMismatchWarning)
            try:
                mm = self.model_spec.get_model_matrix(data, na_action="ignore")
            except (FormulaicError, SyntaxError) as err:
                raise formula_error(err, self.expr, None, what) from None
        for warning in caught:
            if issubclass(warning.category, DataMismatchWarning):
                raise DataError(f"the {what} {self.expr!r} meets values the fit did not see: "
                                f"{_ANSI.sub('', str(warning.message)).split('.')[0]}")
            warnings.warn_explicit(warning.message, warning.category, warning.filename,
                                   warning.lineno)
        columns = [mm[col].to_numpy(dtype=np.float64) for col in mm.columns]
        return _row_major(columns, mm.shape[0], 0)


def _plain_matrix(spec: DesignSpec, data: pd.DataFrame, what: str) -> np.ndarray:
    """The plain-columns model matrix of new rows; each column must still be numeric."""
    for name in spec.plain:
        kind = getattr(data[name].dtype, "kind", "O")
        if kind not in "iufb":
            raise DataError(f"column {name!r} of the {what} was numeric in the fit but is "
                            f"{data[name].dtype} in the new data")
    intercept = bool(spec.names) and spec.names[0] == "(Intercept)"
    columns = [data[name].to_numpy(dtype=np.float64) for name in spec.plain]
    return _row_major([None] * intercept + columns, len(data), 0)


_C_CALL = re.compile(r"^C\(\s*([A-Za-z_][\w.]*)\s*[,)]")


def conform_categories(model_spec, data: pd.DataFrame, what: str) -> pd.DataFrame:
    """New rows whose factor columns carry the fit's categories (a shallow copy if any
    changes), so that formulaic encodes them as in the fit; a level the fit did not see
    is a DataError naming the column and the level. Covers factors written as a column
    name or ``C(column, ...)``; formulaic checks the others."""
    out = data
    for expr, (kind, state) in model_spec.encoder_state.items():
        if getattr(kind, "value", kind) != "categorical" or "categories" not in state:
            continue
        match = _C_CALL.match(expr)
        name = expr if expr in data.columns else (match.group(1) if match else None)
        if name is None or name not in data.columns:
            continue
        column = _as_categories(data[name], list(state["categories"]), name, what)
        if out is data:
            out = data.copy(deep=False)
        out[name] = column
    return out


def _as_categories(col: pd.Series, categories: list, name: str, what: str) -> pd.Series:
    """``col`` as a Categorical with the fit's categories, matched by value, then by text
    (a factor read as text in the fit and as numbers in the new data, or the reverse)."""
    values = col.to_numpy(dtype=object)
    present = col.notna().to_numpy()
    codes = pd.Index(categories, dtype=object).get_indexer(values)
    retry = np.flatnonzero((codes < 0) & present)
    if retry.size:
        labels = pd.Index([str(c) for c in categories], dtype=object)
        codes[retry] = labels.get_indexer([level_label(v) for v in values[retry]])
    unseen = sorted({str(v) for v in values[(codes < 0) & present]})
    if unseen:
        raise DataError(f"column {name!r} of the {what} has level(s) {unseen} that the fit "
                        f"did not see (its levels: {[str(c) for c in categories]}); a "
                        "fixed effect cannot be predicted for a new level")
    return pd.Series(pd.Categorical.from_codes(np.where(present, codes, -1),
                                               categories=categories), index=col.index)


def level_label(value) -> str:
    """One value of a factor as its level label, the same wherever levels are matched (the
    fit's grouping levels, new rows' levels, fixed-effect factors read as text): an
    integral float below 2^53 is written as an integer (308.0 -> "308", as R's
    as.character writes it), so IDs read as floats (a column of integers with a missing
    value) match the same IDs read as integers or text; anything else is ``str(value)``.
    It depends on the value alone, never on the other values of its column."""
    if (isinstance(value, (float, np.floating)) and abs(value) < INTEGRAL_FLOATS
            and float(value).is_integer()):
        return str(int(value))
    return str(value)


INTEGRAL_FLOATS = 2.0**53  # below it every integer is a float; above, str() keeps "1e+20"


def level_labels(values) -> list[str]:
    """level_label of each of many distinct values (an array, Index or ExtensionArray),
    NumPy integers and float64 in bulk and text as it is: the cost of ``str`` per level."""
    dtype = getattr(values, "dtype", None)
    kind = dtype.kind if isinstance(dtype, np.dtype) else "O"
    if kind in "biu":
        return [str(v) for v in np.asarray(values).tolist()]
    if kind == "f" and dtype.itemsize == 8:
        arr = np.asarray(values)
        integral = (np.abs(arr) < INTEGRAL_FLOATS) & (arr == np.trunc(arr))
        return [str(int(v)) if whole else str(v)
                for v, whole in zip(arr.tolist(), integral.tolist())]
    values = values.tolist() if hasattr(values, "tolist") else list(values)
    return [v if type(v) is str else level_label(v) for v in values]


def design_matrix(expr: str, data: pd.DataFrame, formula: str | None, what: str, *,
                  extra_columns: int = 0) -> tuple[np.ndarray, DesignSpec]:
    """The float64 model matrix of ``expr`` on ``data`` (C order) and its DesignSpec.

    With ``extra_columns``, the array has that many more columns after the model
    matrix's, left for the caller to fill (the response, next to X, in one buffer).
    """
    plain = plain_columns(expr, data)
    if plain is not None:
        intercept, cols = plain
        names = ["(Intercept)"] * intercept + cols
        columns = [data[name].to_numpy(dtype=np.float64) for name in cols]
        X = _row_major(([None] if intercept else []) + columns, len(data), extra_columns)
        return X, DesignSpec(expr, tuple(names), plain=tuple(cols))
    try:
        mm = formulaic.model_matrix(expr, data, na_action="ignore")
    except (FormulaicError, SyntaxError) as err:
        raise formula_error(err, expr, formula, what) from None
    names = [r_column_name(c) for c in mm.columns]
    for name, col in zip(names, mm.columns):
        if not pd.api.types.is_numeric_dtype(mm[col]):
            raise DataError(f"the {what} column {name!r} is not numeric ({mm[col].dtype}); "
                            "make it a number or a factor (C(...))")
    # column by column into one C-ordered array: pandas' to_numpy would interleave into a
    # temporary first, a second copy of X (1 s and 0.5 GB at 10^7 rows x 6 columns)
    columns = [mm[col].to_numpy(dtype=np.float64) for col in mm.columns]
    X = _row_major(columns, mm.shape[0], extra_columns)
    return X, DesignSpec(expr, tuple(names), model_spec=mm.model_spec)


def model_matrix(expr: str, data: pd.DataFrame, formula: str | None, what: str, *,
                 extra_columns: int = 0) -> tuple[np.ndarray, list[str]]:
    """The float64 model matrix of ``expr`` on ``data`` (C order) and R's column names
    (design_matrix without its spec)."""
    X, spec = design_matrix(expr, data, formula, what, extra_columns=extra_columns)
    return X, list(spec.names)


ROW_BLOCK = 1 << 14  # rows copied at a time: the block of X being written stays in cache


def _row_major(columns: list, n: int, extra_columns: int) -> np.ndarray:
    """The columns (None: all ones) as one C-ordered float64 (n, k + extra) array, copied
    in blocks of rows (column-at-a-time writes to a row-major array miss the cache: 1.2 s
    against 0.2 s for 10^7 x 7)."""
    X = np.empty((n, len(columns) + extra_columns), dtype=np.float64)
    for start in range(0, n, ROW_BLOCK):
        rows = slice(start, start + ROW_BLOCK)
        for j, col in enumerate(columns):
            X[rows, j] = 1.0 if col is None else col[rows]
    return X
