"""Random-effects terms materialized against the data: level codes, labels, covariates.

Second stage of the pipeline (formula -> terms -> cross-products -> ...). A term
``(1 + x | g)`` becomes, for each row, the index of its level of ``g`` and its k
covariate values; Z is never formed. Terms are ordered as lme4 orders them (decreasing
number of levels, ties in formula order), which also puts the largest diagonal block of
Z'Z first.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import formulaic
import numpy as np
import pandas as pd

from .errors import DataError, ModelSpecError
from .formula import RandomTerm


@dataclass(frozen=True, eq=False)
class ReTerm:
    """One random-effects term on the data: ``X[i]`` are row i's k columns of Z for level ``codes[i]``."""

    group_name: str
    cnames: tuple[str, ...]
    levels: tuple[str, ...]
    codes: np.ndarray  # int64, (n,)
    X: np.ndarray  # float64, (n, k), C order

    @property
    def k(self) -> int:
        return len(self.cnames)

    @property
    def nlev(self) -> int:
        return len(self.levels)

    @property
    def q(self) -> int:
        return self.k * self.nlev


def r_column_name(name: str) -> str:
    """formulaic's column name as R writes it: ``recipe[T.B]`` -> ``recipeB``, ``Intercept`` -> ``(Intercept)``."""
    if name == "Intercept":
        return "(Intercept)"
    name = re.sub(r"\[T\.([^\]]*)\]", r"\1", name)
    return re.sub(r"\[([^\]]*)\]", r"\1", name)


def _factor_codes(col: pd.Series, name: str) -> tuple[np.ndarray, list[str]]:
    """Level index per row and level labels, levels in the order lme4 would see them."""
    if col.isna().any():
        raise DataError(f"grouping column {name!r} has missing values")
    if isinstance(col.dtype, pd.CategoricalDtype):
        cat = col.cat.remove_unused_categories()
        codes = cat.cat.codes.to_numpy().astype(np.int64)
        return codes, [str(c) for c in cat.cat.categories]
    codes, uniques = pd.factorize(col, sort=True)
    return codes.astype(np.int64), [str(u) for u in uniques]


def grouping_codes(data: pd.DataFrame, group: tuple[str, ...]) -> tuple[np.ndarray, list[str]]:
    """Codes and labels of the interaction of the grouping factors, lme4's order and labels.

    For ``a:b`` the levels are the combinations that occur, ordered by the levels of ``a``
    and then those of ``b``, labelled ``"a_level:b_level"``.
    """
    codes, labels = _factor_codes(data[group[0]], group[0])
    for name in group[1:]:
        inner, inner_labels = _factor_codes(data[name], name)
        combined = codes * len(inner_labels) + inner
        used, codes = np.unique(combined, return_inverse=True)
        outer_idx, inner_idx = np.divmod(used, len(inner_labels))
        labels = [f"{labels[o]}:{inner_labels[i]}" for o, i in zip(outer_idx, inner_idx)]
        codes = codes.astype(np.int64)
    return codes, labels


def term_model_matrix(lhs: str, data: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """The k columns of a random term's left-hand side, with R's column names."""
    mm = formulaic.model_matrix(lhs, data, na_action="ignore")
    names = [r_column_name(c) for c in mm.columns]
    return np.ascontiguousarray(mm.to_numpy(dtype=np.float64)), names


def materialize(term: RandomTerm, data: pd.DataFrame) -> ReTerm:
    """The ReTerm of one parsed random term on these rows."""
    X, names = term_model_matrix(term.lhs, data)
    if X.shape[1] == 0:
        raise ModelSpecError(f"random term ({term.lhs} | {term.group_name}) has no columns")
    codes, labels = grouping_codes(data, term.group)
    return ReTerm(term.group_name, tuple(names), tuple(labels), codes, X)


def order_terms(terms: list[ReTerm]) -> list[ReTerm]:
    """lme4's order: decreasing number of levels, ties kept in formula order."""
    return sorted(terms, key=lambda t: -t.nlev)


def check_identifiable(terms: list[ReTerm], nobs: int) -> None:
    """lme4's checks: every grouping factor needs 2 <= levels < observations."""
    for t in terms:
        if t.nlev < 2:
            raise ModelSpecError(
                f"grouping factor {t.group_name!r} has only {t.nlev} level: a variance "
                f"needs at least 2 groups; drop the term ( ... | {t.group_name})"
            )
        if t.nlev >= nobs:
            raise ModelSpecError(
                f"grouping factor {t.group_name!r} has {t.nlev} levels for {nobs} "
                f"observations: the number of levels of each grouping factor must be < "
                f"number of observations, or its variance cannot be told from the residual"
            )
