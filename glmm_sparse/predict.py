"""Predictions: the linear predictor and the mean, for the fit's rows or for new rows.

After the results (... -> results -> inference). New rows go through the fit's own
encodings: the fixed part and each random term's left side are made again from the
DesignSpec kept when the frame was built (design.py: factor levels, contrasts, the state
of scale() and other stateful transforms), grouping levels are matched to the fitted
ones by label (terms.new_level_codes), and offset(...) terms are evaluated on the new
rows. Nothing here is n x n: standard errors are row-wise quadratic forms, and the
conditional ones solve with the fit's sparse factor a block of rows at a time.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.linalg

from ._core import _crossprod
from .context import require_model
from .errors import DataError, ModelSpecError
from .frame import total_offset
from .terms import ReTerm, is_ones_column, new_level_codes, term_offsets

# R's re.form = NA (population level, X beta only), however it is spelled here
POPULATION = frozenset({"population", "NA", "~0", "~ 0", "~-1", "~ -1"})
SE_BLOCK = 1 << 22  # entries of the q x m right-hand side solved at a time (32 MB)


class PredictMethods:
    """Methods of fitted results (mixed into LmerResult and GlmerResult)."""

    def predict(self, newdata=None, *, re_form=None, allow_new_levels: bool = False,
                type: str = "link", se_fit: bool = False, offset=None,
                na_action: str = "pass"):
        """Predictions for the fit's rows or for new rows (lme4's ``predict.merMod``).

        Parameters
        ----------
        newdata : DataFrame-like, optional
            Rows to predict (pandas, polars, pyarrow, dict of arrays). Default: the rows
            of the fit (lme4's ``predict(m)``). Fixed-effects columns are encoded as in
            the fit (its factor levels; ``scale(x)`` with the fit's centre and scale); a
            fixed-effect factor level the fit did not see is a ``DataError``.
        re_form : None, str
            None: conditional on the fitted random effects (the conditional modes).
            ``"population"`` (also ``"NA"`` or ``"~0"``, R's ``re.form = NA``): the
            population level, X beta (+ offset); the grouping columns are not needed. A
            formula of some of the fit's random terms, e.g. ``"~(1 | plate)"``: only
            those terms' random effects, matched as lme4 matches them (see
            ``chosen_terms``): grouping factors as written, and a left side may keep some
            of a term's columns (``"~(1 | Subject)"`` of ``(1 + Days | Subject)``). A
            formula with no random term (``"~."``) is an error, as in lme4.
        allow_new_levels : bool
            A grouping level the fit did not see is a ``DataError`` naming the term and
            the level; with True its random effect is 0 (its population prediction for
            that term), as lme4's ``allow.new.levels``.
        type : {"link", "response"}
            GLMMs: the linear predictor (the default, as lme4's) or the mean (the
            inverse link of the linear predictor, what ``fitted`` holds). Both are the
            same for a linear mixed model.
        se_fit : bool
            Add standard errors (see Notes).
        offset : str or array, optional
            The ``offset=`` argument's values for the new rows, as a column name or one
            value per row of newdata; needed only when the fit's ``offset=`` was an
            array (a column name is read from newdata). ``offset(...)`` terms of the
            formula are always evaluated on newdata.
        na_action : {"pass", "raise"}
            A new row with a missing value in a column the prediction reads: NaN for
            that row (lme4's ``na.pass``), or a ``DataError``.

        Returns
        -------
        pandas.Series ``fit`` indexed like newdata (like the fit's rows without it), or
        with ``se_fit`` a DataFrame with columns ``fit`` and ``se_fit``.

        Notes
        -----
        Population level: ``se_fit = sqrt(diag(X_new vcov X_new'))``; for a GLMM on the
        response scale the delta method multiplies it by |dmu/deta|. Conditional (linear
        mixed models only): the root of the prediction-error variance of
        ``x'beta + z'b`` given theta and sigma, ``sigma^2 a' A^-1 a`` with
        ``a = [Lambda'z; x]`` and ``A`` the penalized least-squares system (Henderson's
        C matrix): it includes the uncertainty of beta and of b and their covariance, and
        for a new level the prior variance of its random effect, but not the
        uncertainty of theta and sigma.
        """
        model = _model(self)
        _check_choice("type", type, ("response", "link"))
        _check_choice("na_action", na_action, ("pass", "raise"))
        chosen = chosen_terms(re_form, model.frame.terms)
        rows = (fit_rows(model, chosen, offset) if newdata is None
                else new_rows(model, newdata, chosen, allow_new_levels=allow_new_levels,
                              offset=offset, na_action=na_action))
        eta = _linear_predictor(self, rows)
        se = _se_link(self, model, rows, eta) if se_fit else None
        if model.is_glmm and type == "response":
            link = model.family_object.link
            if se is not None:
                se = se * np.abs(link.mu_eta(eta))
            eta = link.linkinv(eta)
        return _output(rows, eta, se)


# -- which random terms ---------------------------------------------------------------

def chosen_terms(re_form, terms: tuple[ReTerm, ...]) -> dict[int, tuple[int, ...]]:
    """The fit's random terms that ``re_form`` keeps (lme4's re.form), each mapped to the
    positions of its kept columns (all of them unless re_form names fewer).

    lme4's rules: a term of re_form is matched to the fit's terms on the same grouping
    factor as written (``cask:batch`` is not ``batch:cask``); its left side may name all
    of the fitted columns or some of them (``(1 | Subject)`` keeps the intercepts of a
    fitted ``(1 + Days | Subject)``). A formula with no random term (``"~."``, ``"~1"``)
    is refused, as lme4's predict refuses it.
    """
    if re_form is None:
        return {i: tuple(range(t.k)) for i, t in enumerate(terms)}
    if isinstance(re_form, float) and np.isnan(re_form):
        return {}
    if not isinstance(re_form, str):
        raise TypeError(f"re_form must be None, 'population' or a formula such as "
                        f"'~(1 | g)', not {re_form!r}")
    text = re_form.strip()
    if text in POPULATION:
        return {}
    if not text.startswith("~"):
        raise ModelSpecError(f"re_form {re_form!r} must be None, 'population' or a "
                             f"one-sided formula of random terms such as '~(1 | g)'")
    from .formula import parse_formula

    wanted = parse_formula(text).random
    if not wanted:
        raise ModelSpecError(f"re_form {re_form!r} names no random-effects term (lme4's "
                             "predict refuses it too): use None for all the fit's random "
                             "effects, 'population' (or '~0') for none, or name some, e.g. "
                             f"'~({terms[0].spec.expr} | {terms[0].group_name})'")
    chosen: dict[int, set[int]] = {}
    for term in wanted:
        for i, cols in _term_columns(term, terms, re_form).items():
            chosen.setdefault(i, set()).update(cols)
    return {i: tuple(sorted(chosen[i])) for i in sorted(chosen)}


def _fitted_text(terms: tuple[ReTerm, ...]) -> str:
    return ", ".join(f"({t.spec.expr} | {t.group_name})" for t in terms if t.spec is not None)


def _term_columns(term, terms: tuple[ReTerm, ...], re_form: str) -> dict[int, tuple[int, ...]]:
    """The fitted terms and columns one term of re_form stands for."""
    same = [i for i, t in enumerate(terms) if t.group == term.group and t.spec is not None]
    if not same:
        raise ModelSpecError(_unmatched_group(term, terms, re_form))
    for i in same:
        if terms[i].spec.expr == term.lhs:
            return {i: tuple(range(terms[i].k))}
    # fewer columns than a fitted term: matched by column name, as lme4 matches them
    import formulaic

    names = ["(Intercept)" if str(f) == "1" else str(f) for f in formulaic.Formula(term.lhs)]
    found: dict[int, list[int]] = {}
    for name in names:
        at = [(i, terms[i].cnames.index(name)) for i in same if name in terms[i].cnames]
        if len(at) != 1:
            have = [c for i in same for c in terms[i].cnames]
            why = ("is not a column of" if not at else "is a column of more than one of")
            raise ModelSpecError(
                f"re_form {re_form!r}: the random effect {name!r} of ({term.lhs} | "
                f"{term.group_name}) {why} the fit's terms on {term.group_name!r} (columns "
                f"{have}); write the term as the fit has it: {_fitted_text(terms)}")
        found.setdefault(at[0][0], []).append(at[0][1])
    return {i: tuple(cols) for i, cols in found.items()}


def _unmatched_group(term, terms: tuple[ReTerm, ...], re_form: str) -> str:
    text = (f"re_form {re_form!r}: the term ({term.lhs} | {term.group_name}) is not one of "
            f"the fit's random terms: {_fitted_text(terms)}")
    reordered = [t.group_name for t in terms if sorted(t.group) == sorted(term.group)]
    if reordered:
        text += (f"; grouping factors are matched as written, as lme4 matches them: write "
                 f"'{reordered[0]}' for '{term.group_name}'")
    return text


# -- the rows to predict ----------------------------------------------------------------

@dataclass(frozen=True)
class Rows:
    """The rows to predict: X, the offset and each kept term's levels and Z columns for
    the complete rows, and where those sit among all rows (``index``, ``complete``)."""

    index: pd.Index
    complete: np.ndarray | None  # bool mask, None when every row is complete
    X: np.ndarray
    offset: np.ndarray | None
    parts: tuple[TermRows, ...]


@dataclass(frozen=True)
class TermRows:
    """One kept random term on the rows: its index, each row's level (-1: a level the
    fit did not see) and the row's k columns of Z_t."""

    term: int
    codes: np.ndarray
    Z: np.ndarray

    def known(self) -> tuple[np.ndarray, np.ndarray]:
        """Codes and Z_t with a new level's row set to (level 0, zeros): adds nothing."""
        new = self.codes < 0
        if not new.any():
            return self.codes, self.Z
        Z = self.Z.copy()
        Z[new] = 0.0
        return np.where(new, 0, self.codes), Z


def fit_rows(model, chosen: dict[int, tuple[int, ...]], offset) -> Rows:
    """The fit's own rows (newdata=None)."""
    if offset is not None:
        raise ModelSpecError("offset= is for new rows: without newdata the fit's own "
                             "offset is used")
    frame = model.frame
    parts = tuple(TermRows(i, frame.terms[i].codes, _kept_columns(frame.terms[i].X, cols))
                  for i, cols in chosen.items())
    return Rows(frame.row_index, None, frame.X, frame.offset, parts)


def new_rows(model, newdata, chosen: dict[int, tuple[int, ...]], *, allow_new_levels: bool, offset,
             na_action: str) -> Rows:
    """New rows with the fit's encodings, complete in every column the prediction reads."""
    from .io import as_pandas

    data = as_pandas(newdata)
    frame, parsed = model.frame, model.parsed
    if offset is None and frame.offset_array:
        raise DataError("the fit's offset= was an array: pass predict(..., offset=...) "
                        "with the offset of the new rows (a column name or one value per "
                        "row)")
    offset_arg = frame.offset_column if offset is None else offset
    if offset_arg is not None and not isinstance(offset_arg, str):
        offset_arg = _per_row(offset_arg, len(data))
    needed = _needed_columns(model, chosen, offset_arg)
    _check_present(needed, data)
    complete = _complete_rows(data, needed, na_action)
    sub = data if complete is None else data.loc[complete]
    if complete is not None and not isinstance(offset_arg, (str, type(None))):
        offset_arg = offset_arg[complete]
    X = _fixed_matrix(frame, sub)
    off = total_offset(parsed, sub, offset_arg, len(sub), model.formula)
    parts = tuple(_term_part(i, frame.terms[i], cols, sub, allow_new_levels)
                  for i, cols in chosen.items())
    return Rows(data.index, complete, X, off, parts)


def _per_row(values, n: int) -> np.ndarray:
    out = np.asarray(values, dtype=np.float64)
    if out.shape != (n,):
        raise DataError(f"offset= must have one value per row of newdata ({n}), got shape "
                        f"{out.shape}")
    return out


def _needed_columns(model, chosen, offset_arg) -> dict[str, str]:
    """Each column the prediction reads, mapped to what reads it."""
    from .design import expression_variables

    frame, parsed = model.frame, model.parsed
    needed = {name: "the fixed effects" for name in frame.fixed_spec.variables}
    for expr in parsed.offsets:
        for name, called in expression_variables(f"I({expr})").items():
            if not called:
                needed.setdefault(name, f"offset({expr})")
    if isinstance(offset_arg, str):
        needed.setdefault(offset_arg, "the offset= argument")
    for i in chosen:
        t = frame.terms[i]
        what = f"the random-effects term ({t.spec.expr} | {t.group_name})"
        for name in [*t.spec.variables, *t.group]:
            needed.setdefault(name, what)
    return needed


def _check_present(needed: dict[str, str], data: pd.DataFrame) -> None:
    missing = [f"{name!r} (for {what})" for name, what in needed.items()
               if name not in data.columns]
    if missing:
        raise DataError(f"newdata has no column {', '.join(missing)}; population-level "
                        "predictions (re_form='population') need no grouping columns")


def _complete_rows(data: pd.DataFrame, needed: dict[str, str], na_action: str):
    """The mask of rows with no missing value in the needed columns (None: all rows)."""
    if not needed or data.empty:
        return None
    isna = data[list(needed)].isna()
    missing = isna.any(axis=1).to_numpy()
    if not missing.any():
        return None
    if na_action == "raise":
        cols = [c for c in needed if isna[c].any()]
        raise DataError(f"{int(missing.sum())} new rows have missing values (in columns "
                        f"{cols}); drop them or use na_action='pass' (NaN predictions)")
    return ~missing


def _fixed_matrix(frame, sub: pd.DataFrame) -> np.ndarray:
    """X of the new rows: the fit's encodings, the fit's (non-aliased) columns."""
    spec = frame.fixed_spec
    X = spec.matrix(sub, "fixed-effects term")
    if len(frame.xnames) == len(spec.names):
        return X
    keep = [spec.names.index(name) for name in frame.xnames]
    return np.ascontiguousarray(X[:, keep])


def _term_part(i: int, term: ReTerm, cols: tuple[int, ...], sub: pd.DataFrame,
               allow_new_levels: bool):
    """The TermRows of the new rows (the kept columns ``cols`` of Z_t): a new level is -1,
    or an error without ``allow_new_levels``."""
    Zt = _kept_columns(term.spec.matrix(
        sub, f"random-effects term ({term.spec.expr} | {term.group_name})"), cols)
    codes, labels = new_level_codes(term, sub)
    new = codes < 0
    if new.any() and not allow_new_levels:
        unseen = sorted(set(labels[new]))
        shown = ", ".join(map(repr, unseen[:10])) + (" ..." if len(unseen) > 10 else "")
        raise DataError(f"newdata has {len(unseen)} level(s) of the grouping factor "
                        f"{term.group_name!r} (random-effects term ({term.spec.expr} | "
                        f"{term.group_name})) that the fit did not see: {shown}; pass "
                        "allow_new_levels=True to predict them with a random effect of 0")
    return TermRows(i, codes.astype(np.int64), Zt)


def _kept_columns(Z: np.ndarray, cols: tuple[int, ...]) -> np.ndarray:
    """Z_t with the columns re_form leaves out set to 0 (Z_t itself when it keeps all):
    their random effects then add nothing to the prediction or to its variance."""
    if len(cols) == Z.shape[1]:
        return Z
    out = np.zeros_like(Z)
    out[:, cols] = Z[:, cols]
    return out


# -- linear predictor and standard errors -----------------------------------------------

def _linear_predictor(result, rows: Rows) -> np.ndarray:
    """X beta + offset + Z b over the kept terms (new levels contribute 0)."""
    terms = result.model.frame.terms
    offs = term_offsets(terms)
    eta = rows.X @ result.fixef.to_numpy()
    if rows.offset is not None:
        eta += rows.offset
    for part in rows.parts:
        i = part.term
        t = terms[i]
        vals = np.ascontiguousarray(result.b[offs[i]:offs[i + 1]].reshape(t.nlev, t.k))
        codes, Zt = part.known()
        # eta += sum_j Z_t[:, j] * b_t[codes, j]; the kernel takes (1 | g)'s ones as None and
        # strided columns as they are, so neither is copied into n floats
        z = None if is_ones_column(Zt) else np.asarray(Zt, dtype=np.float64)
        _crossprod.add_term_times(codes, z, vals, eta)
    return eta


def _se_link(result, model, rows: Rows, eta: np.ndarray) -> np.ndarray:
    """Standard errors on the linear-predictor scale (see PredictMethods.predict)."""
    if not rows.parts:
        V = result.vcov.to_numpy()
        # diag(X V X') row by row, no m x m matrix
        return np.sqrt(np.maximum(np.einsum("ij,ij->i", rows.X @ V, rows.X), 0.0))
    if model.is_glmm:
        raise ModelSpecError("se_fit for predictions conditional on the random effects is "
                             "available for linear mixed models; for a GLMM use "
                             "re_form='population'")
    return np.sqrt(conditional_pev(result, model, rows))


def conditional_pev(result, model, rows: Rows) -> np.ndarray:
    """Prediction-error variance of x'beta + z'b given theta: sigma^2 |Lfull^-1 a|^2.

    With P M P' = L L', R_ZX = L^-1 P Lambda'Z'WX and R_X as in the fit, the blocked
    factor of the PLS system is [[L, 0], [R_ZX', R_X']]; for a = [Lambda'z; x],
    v1 = L^-1 P Lambda'z and v2 = R_X'^-1 (x - R_ZX' v1) give a'A^-1 a = |v1|^2 + |v2|^2.
    A new level adds the prior variance of its random effect, sigma^2 |T'z|^2.
    """
    obj = model.sparse_at_optimum()
    terms = model.frame.terms
    offs = term_offsets(terms)
    p = rows.X.shape[1]
    RZX, RX = obj.RZXy[:, :p], obj.Ry[:p, :p]
    m = rows.X.shape[0]
    out = np.empty(m)
    block = max(1, min(m, SE_BLOCK // max(obj.cp.q, 1)))
    for start in range(0, m, block):
        sl = slice(start, min(start + block, m))
        a_u, prior = _lambda_t_z(obj, terms, offs, rows.parts, sl)
        v1 = obj.factor.solve("L", a_u if obj.perm is None else a_u[obj.perm])
        v2 = scipy.linalg.solve_triangular(RX, rows.X[sl].T - RZX.T @ v1, trans="T")
        out[sl] = (v1 * v1).sum(axis=0) + (v2 * v2).sum(axis=0) + prior
    return result.sigma**2 * out


def _lambda_t_z(obj, terms, offs, parts, sl: slice) -> tuple[np.ndarray, np.ndarray]:
    """Lambda'z of the rows in ``sl`` as a dense q x m block, and |T'z|^2 summed over
    their new levels (which are not in Lambda'z: b of a new level is independent of y)."""
    m = sl.stop - sl.start
    a_u = np.zeros((obj.cp.q, m))
    prior = np.zeros(m)
    for part in parts:
        k = terms[part.term].k
        w = part.Z[sl] @ obj.T[part.term]  # row r: (T'z_r)'
        codes = part.codes[sl]
        new = codes < 0
        prior += np.where(new, (w * w).sum(axis=1), 0.0)
        rows = np.flatnonzero(~new)
        for j in range(k):
            a_u[offs[part.term] + codes[rows] * k + j, rows] += w[rows, j]
    return a_u, prior


def _output(rows: Rows, fit: np.ndarray, se: np.ndarray | None):
    """The predictions in the rows' index, NaN for incomplete rows."""
    def spread(values):
        if rows.complete is None:
            return values
        full = np.full(rows.complete.shape[0], np.nan)
        full[rows.complete] = values
        return full

    out = pd.Series(spread(fit), index=rows.index, name="fit")
    if se is None:
        return out
    return pd.DataFrame({"fit": out, "se_fit": spread(se)}, index=rows.index)


def _model(result):
    model = require_model(result, "predict()")
    if model.frame.fixed_spec is None:
        raise ModelSpecError("this fit keeps no encodings of its model matrices (a fit "
                             "streamed from Parquet does not, yet): fit with "
                             "lmer(..., streaming=False) to predict")
    return model


def _check_choice(name: str, value, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ModelSpecError(f"{name} must be one of {', '.join(map(repr, choices))}, "
                             f"not {value!r}")
