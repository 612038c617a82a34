"""The response of a model: numeric for an LMM; counts, proportions or factors for a GLMM.

Part of building the model frame. ``cbind(successes, failures)`` becomes the proportion
successes / trials with the trials as prior weights, as in R; a two-level factor's first
level is failure, as in R.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

from .errors import DataError
from .validate import row_label

CBIND = re.compile(r"^\s*cbind\s*\((.*)\)\s*$", re.S)


def split_top_level(text: str, sep: str = ",") -> list[str]:
    """Split at separators outside parentheses."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += ch == "("
        depth -= ch == ")"
        if ch == sep and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return parts


def cbind_parts(expr: str) -> tuple[str, str] | None:
    """The two expressions of ``cbind(a, b)``, or None if expr is not a cbind."""
    match = CBIND.match(expr)
    if not match:
        return None
    parts = split_top_level(match.group(1))
    if len(parts) != 2 or not all(parts):
        raise DataError(f"cbind() in the response needs two columns (successes, failures), "
                        f"got {expr!r}")
    return parts[0], parts[1]


def column_name(expr: str) -> str:
    """A response or offset expression as a column name: backticks removed."""
    name = expr.strip()
    if len(name) > 1 and name.startswith("`") and name.endswith("`"):
        return name[1:-1]
    return name


def response_expressions(expr: str) -> list[str]:
    """The expressions whose data columns the response reads."""
    parts = cbind_parts(expr)
    return list(parts) if parts else [expr]


def numeric_response(expr: str, data: pd.DataFrame, evaluate) -> tuple[np.ndarray, None]:
    """An LMM's response: one numeric column."""
    if cbind_parts(expr):
        raise DataError("cbind() responses are for binomial models: use glmer(..., "
                        "family='binomial')")
    return evaluate(expr, data, "response"), None


def binomial_response(expr: str, data: pd.DataFrame, evaluate) -> tuple[np.ndarray, np.ndarray | None]:
    """(proportion, trials or None): cbind counts, 0/1, booleans or a two-level factor."""
    parts = cbind_parts(expr)
    if parts:
        succ, fail = (evaluate(p, data, "response") for p in parts)
        for part, counts in zip(parts, (succ, fail)):
            _check_counts(counts, part, expr, data.index)
        trials = succ + fail
        if np.any(trials <= 0):
            row = int(np.flatnonzero(trials <= 0)[0])
            raise DataError(f"cbind({parts[0]}, {parts[1]}): row {row_label(data.index, row)} has "
                            f"{trials[row]:g} trials; successes + failures must be positive "
                            "(drop rows without trials)")
        return succ / trials, trials
    name = column_name(expr)
    col = data[name] if name in data.columns else None
    if col is not None and (pd.api.types.is_bool_dtype(col) or not pd.api.types.is_numeric_dtype(col)):
        return _factor_response(col, expr), None
    return evaluate(expr, data, "response"), None


def _check_counts(counts: np.ndarray, part: str, expr: str, rows: pd.Index) -> None:
    """The counts of a cbind() response are whole numbers >= 0."""
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(counts) | (counts < 0) | (np.abs(counts - np.round(counts)) > 1e-7)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{expr}: the counts {part!r} must be whole numbers >= 0; row "
                        f"{row_label(rows, i)} has {counts[i]:g} ({int(bad.sum())} row(s) in all)")


def _factor_response(col: pd.Series, name: str) -> np.ndarray:
    """A two-level factor (or booleans) as 0/1: the first level is failure, as in R."""
    if pd.api.types.is_bool_dtype(col):
        return col.to_numpy(dtype=np.float64)
    levels = list(col.cat.categories) if isinstance(col.dtype, pd.CategoricalDtype) else \
        sorted(pd.unique(col.dropna()))
    used = [lv for lv in levels if (col == lv).any()]
    if len(used) != 2:
        raise DataError(f"binomial response {name!r} must have two levels (failure first), "
                        f"found {len(used)}: {used[:5]}")
    return (col == used[1]).to_numpy(dtype=np.float64)
