"""Random-effects terms materialized against the data: level codes, labels, covariates.

Second stage of the pipeline (formula -> terms -> cross-products -> ...). A term
``(1 + x | g)`` becomes, for each row, the index of its level of ``g`` and its k
covariate values; Z is never formed. Terms are ordered as lme4 orders them (decreasing
number of levels, ties in formula order), which also puts the largest diagonal block of
Z'Z first.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .design import DesignSpec, design_matrix, level_labels, plain_columns
from .errors import DataError, ModelSpecError
from .formula import RandomTerm
from .validate import check_values


@dataclass(frozen=True, eq=False)
class ReTerm:
    """One random-effects term on the data: ``X[i]`` are row i's k columns of Z for level ``codes[i]``.

    An intercept-only term ``(1 | g)`` holds no column: its X is a read-only view of a
    single 1.0 repeated over the rows (``ones_column``), and the compiled kernels are
    given None for it (``z_values``).
    """

    group_name: str
    cnames: tuple[str, ...]
    levels: tuple[str, ...]
    codes: np.ndarray  # (n,), int32 when the levels fit (code_dtype), else int64
    X: np.ndarray  # float64, (n, k), C order, or ones_column(n)
    # the grouping columns, and how X was made: to find the levels and Z of new rows
    group: tuple[str, ...] = ()
    spec: DesignSpec | None = field(default=None, repr=False)

    @property
    def k(self) -> int:
        return len(self.cnames)

    @property
    def nlev(self) -> int:
        return len(self.levels)

    @property
    def q(self) -> int:
        return self.k * self.nlev

    @property
    def z_values(self) -> np.ndarray | None:
        """X as the compiled kernels take it: None for a column of ones (ones_column)."""
        return None if is_ones_column(self.X) else self.X


def ones_column(n: int) -> np.ndarray:
    """An (n, 1) read-only array of ones that holds one value, not n."""
    return np.broadcast_to(np.ones((1, 1)), (n, 1))


def is_ones_column(X: np.ndarray) -> bool:
    """Whether X is a ones_column (one column, every row the same stored 1.0)."""
    return X.shape[1] == 1 and X.strides[0] == 0 and (X.shape[0] == 0 or X[0, 0] == 1.0)


def code_dtype(nlev: int) -> np.dtype:
    """int32 for level codes when the levels fit (half the memory), else int64."""
    return np.dtype(np.int32) if nlev <= np.iinfo(np.int32).max else np.dtype(np.int64)


def _factor_codes(col: pd.Series, name: str) -> tuple[np.ndarray, list[str]]:
    """Level index per row and level labels, levels in the order lme4 would see them.

    Labels are made from the distinct values (design.level_labels), never per row: the
    same function labels new rows' levels (new_level_codes)."""
    if col.isna().any():
        raise DataError(f"grouping column {name!r} has missing values")
    if isinstance(col.dtype, pd.CategoricalDtype):
        # unused categories dropped by counting codes (O(n)), not by pandas' np.unique over
        # the rows (1.8 s at 10^7 rows); the categories keep their order, as in lme4
        codes = col.cat.codes.to_numpy()
        categories = col.cat.categories
        used = np.bincount(codes, minlength=len(categories)) > 0
        dtype = code_dtype(len(categories))
        if not used.all():
            categories = categories[used]
            return (np.cumsum(used) - 1).astype(dtype)[codes], _labels(categories, name)
        return codes.astype(dtype), _labels(categories, name)
    codes, uniques = pd.factorize(col, sort=True)
    return codes.astype(code_dtype(len(uniques))), _labels(uniques, name)


def _labels(levels, name: str) -> list[str]:
    """The level labels of distinct values; two values with one label are refused (they
    could not be told apart in new rows or in ranef's output)."""
    labels = level_labels(levels)
    # distinct values of one type have distinct labels; an object column may mix types
    # ("1" and 1.0)
    mixed = levels.dtype == object and any(type(v) is not str for v in levels.tolist())
    if mixed and len(set(labels)) < len(labels):
        seen: dict[str, object] = {}
        for value, label in zip(levels, labels):
            if label in seen:
                raise DataError(f"grouping column {name!r} has distinct values {seen[label]!r} "
                                f"and {value!r} that both read as the level {label!r}: make "
                                "the column one type (all text or all numbers)")
            seen[label] = value
    return labels


def grouping_codes(data: pd.DataFrame, group: tuple[str, ...]) -> tuple[np.ndarray, list[str]]:
    """Codes and labels of the interaction of the grouping factors, lme4's order and labels.

    For ``a:b`` the levels are the combinations that occur, ordered by the levels of ``a``
    and then those of ``b``, labelled ``"a_level:b_level"``.
    """
    codes, labels = _factor_codes(data[group[0]], group[0])
    for name in group[1:]:
        inner, inner_labels = _factor_codes(data[name], name)
        combined = codes.astype(np.int64) * len(inner_labels) + inner
        used, codes = np.unique(combined, return_inverse=True)
        outer_idx, inner_idx = np.divmod(used, len(inner_labels))
        labels = [f"{labels[o]}:{inner_labels[i]}" for o, i in zip(outer_idx, inner_idx)]
        codes = codes.astype(code_dtype(len(labels)))
    return codes, labels


def materialize(term: RandomTerm, data: pd.DataFrame, formula: str | None = None, *,
                fixed: tuple[np.ndarray, tuple[str, ...]] | None = None) -> ReTerm:
    """The ReTerm of one parsed random term on these rows.

    ``fixed`` is the fixed-effects buffer [X y] and X's column names: a term whose
    columns are plain columns found side by side in X takes them as a view of the buffer
    (shared_columns) instead of a copy.
    """
    what = f"random-effects term ({term.lhs} | {term.group_name})"
    plain = plain_columns(term.lhs, data)
    shared = shared_columns(plain, fixed)
    if plain == (True, []):  # (1 | g): no column to hold
        X, spec = ones_column(len(data)), DesignSpec(term.lhs, ("(Intercept)",), plain=())
    elif shared is not None:
        X, spec = shared, DesignSpec(term.lhs, _plain_names(plain), plain=tuple(plain[1]))
    else:
        X, spec = design_matrix(term.lhs, data, formula, what)
    if X.shape[1] == 0:
        raise ModelSpecError(f"{what} has no columns")
    check_values(X, spec.names, data.index, f"the column {{}} of the {what}")
    codes, labels = grouping_codes(data, term.group)
    return ReTerm(term.group_name, spec.names, tuple(labels), codes, X, term.group, spec)


def _plain_names(plain: tuple[bool, list[str]]) -> tuple[str, ...]:
    """The column names of a plain-columns design (design.plain_columns), as R's."""
    intercept, names = plain
    return ("(Intercept)",) * intercept + tuple(names)


def shared_columns(plain, fixed) -> np.ndarray | None:
    """The plain-columns design ``plain`` as a read-only view of the fixed-effects buffer
    [X y] when its columns are X's columns in the same order, side by side (the
    ``(1 + x | g)`` of ``y ~ x + ...``); else None. The buffer's last column (the
    response's slot, rewritten by crossprod.response_matrix) is never shared."""
    if plain is None or fixed is None:
        return None
    XB, xnames = fixed
    names = _plain_names(plain)
    first = column_run(names, xnames)
    if first is None:
        return None
    view = XB[:, first:first + len(names)]
    view.flags.writeable = False
    return view


def column_run(names, xnames) -> int | None:
    """Where the columns ``names`` stand side by side, in that order, among X's columns
    ``xnames`` (each named once), or None: the rule by which a term shares X's columns
    (shared_columns; the streamed lean frame, batchframe.LeanPlan)."""
    names, xnames = tuple(names), tuple(xnames)
    if not names or names[0] not in xnames:
        return None
    first = xnames.index(names[0])
    return first if xnames[first:first + len(names)] == names else None


def new_level_codes(term: ReTerm, data: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Each new row's index among the term's fitted levels (-1 for a level the fit did not
    see) and its level label. Levels are matched by their labels ("a_level:b_level" for
    ``a:b``), made by the fit's own rule (design.level_label): a numeric column read as
    floats on one side and as integers or text on the other matches."""
    labels = None
    for name in term.group:
        part = row_labels(data[name])
        labels = part if labels is None else labels + ":" + part
    return pd.Index(term.levels, dtype=object).get_indexer(labels), labels


def row_labels(col: pd.Series) -> np.ndarray:
    """Each row's level label (object array; None for a missing value), labelling each
    distinct value once."""
    codes, uniques = pd.factorize(col)
    labels = np.array(level_labels(uniques) + [None], dtype=object)
    return labels[codes]  # code -1 (missing) takes the trailing None


def term_offsets(terms) -> np.ndarray:
    """First position of each term's block in b (and u, and Z's columns), and q at the end:
    term i's random effects are ``b[offsets[i]:offsets[i + 1]]``, level-major (k per
    level)."""
    return np.concatenate([[0], np.cumsum([t.q for t in terms])]).astype(np.int64)


def order_terms(terms: list[ReTerm]) -> list[ReTerm]:
    """lme4's order: decreasing number of levels, ties kept in formula order."""
    return sorted(terms, key=lambda t: -t.nlev)


def check_identifiable(terms: list[ReTerm], nobs: int, *, allow_n: bool = False) -> None:
    """lme4's checkNlevels and checkZdims (their default "stop" levels).

    lmer (allow_n False): every grouping factor needs 2 <= levels < observations and every
    term fewer random effects than observations; glmer (allow_n True) allows as many
    (observation-level random effects), as lme4 does.
    """
    for t in terms:
        if t.nlev < 2:
            raise ModelSpecError(
                f"grouping factor {t.group_name!r} has only {t.nlev} level: a variance "
                f"needs at least 2 groups; drop the term ( ... | {t.group_name})"
            )
        if t.nlev > nobs or (t.nlev == nobs and not allow_n):
            raise ModelSpecError(
                f"grouping factor {t.group_name!r} has {t.nlev} levels for {nobs} "
                f"observations: the number of levels of each grouping factor must be < "
                f"number of observations, or its variance cannot be told from the residual"
            )
    _check_random_effects(terms, nobs, allow_n)


def _lhs_text(term: ReTerm) -> str:
    """A term's columns as lme4 prints its left side: "1 + Days"."""
    return " + ".join("1" if c == "(Intercept)" else c for c in term.cnames)


def _check_random_effects(terms: list[ReTerm], nobs: int, allow_n: bool) -> None:
    """Refuse terms with more random effects (levels x columns) than observations."""
    over = [t for t in terms if t.q > nobs or (t.q == nobs and not allow_n)]
    if not over:
        return
    relation = "<" if allow_n else "<="
    listed = "; ".join(f"(={t.q}) for term ({_lhs_text(t)} | {t.group_name})" for t in over)
    raise ModelSpecError(
        f"number of observations (={nobs}) {relation} number of random effects {listed}; "
        "the random-effects parameters and the residual variance are probably "
        "unidentifiable: simplify the term (fewer columns left of the bar, e.g. (1 | g) "
        "instead of (x | g), or (x || g), which splits it into smaller terms) or use more "
        "data")
