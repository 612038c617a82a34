"""Denominator degrees of freedom (Satterthwaite, Kenward-Roger) and the t and F tests of fixed effects.

After the results stage (... -> results -> inference -> report). Satterthwaite follows
lmerTest (Kuznetsova, Brockhoff & Christensen 2017, JSS 82(13)): the variance parameters
are varpar = (theta, sigma); their covariance A = 2 H^-1 comes from the Hessian H of the
deviance over varpar with sigma *not* profiled out,

    d(theta, sigma) = f(theta) + pwrss(theta) / sigma^2 + c log(2 pi sigma^2)

(f = log|L|^2 [+ log|R_X|^2 for REML], c = n [- p for REML]), and the gradient of the
variance of a contrast L beta is taken through J_i = d vcov(beta) / d varpar_i, with
vcov(beta) = sigma^2 R_X^-1 R_X^-T. A t test of one contrast has

    nu = 2 (L' C L)^2 / (g' A g),    g_i = L' J_i L.

sigma enters analytically; f, pwrss and R_X^-1 R_X^-T are differentiated over theta by
central differences with one Richardson step (error O(h^4)) on a separate objective:
each evaluation is one sparse factorization, nothing here builds an n x n matrix.
Kenward-Roger lives in kenward_roger.py, lmerTest's type III contrasts in type3 below.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import scipy.stats

from .errors import ModelSpecError

DDF_CHOICES = ("satterthwaite", "kenward-roger", "normal", "none")
_ALIASES = {"satterthwaite": "satterthwaite", "kenward-roger": "kenward-roger",
            "kenward_roger": "kenward-roger", "kenwardroger": "kenward-roger",
            "kr": "kenward-roger", "normal": "normal", "wald": "normal", "z": "normal",
            "none": "none", "lme4": "none"}
FD_STEP = 1e-3  # relative central-difference step on theta (halved once for Richardson)
FD_FLOOR = 1e-2  # theta entries below this (in size) get the step FD_STEP * FD_FLOOR
HESSIAN_TOL = 1e-8  # lmerTest's tolerance on the eigenvalues of H (a pseudo-inverse below)
EIGEN_EPS = math.sqrt(np.finfo(float).eps)  # lmerTest's rank tolerance of L C L'
CACHE_ATTR = "_ddf_cache"  # a private attribute of the (frozen) result; see _cache


def normalize_ddf(ddf: str | None, *, glmm: bool) -> str:
    """The method a ``ddf`` argument names (R's spellings accepted, any case).

    None gives the default: "satterthwaite" for LMMs, "normal" for GLMMs.
    """
    if ddf is None:
        return "normal" if glmm else "satterthwaite"
    key = str(ddf).strip().lower().replace(" ", "-")
    method = _ALIASES.get(key)
    if method is None:
        raise ModelSpecError(f"ddf must be one of {', '.join(map(repr, DDF_CHOICES))} (or R's "
                             f"'Satterthwaite', 'Kenward-Roger', 'KR'), not {ddf!r}")
    if glmm and method in ("satterthwaite", "kenward-roger"):
        raise ModelSpecError(f"ddf={ddf!r} applies to linear mixed models only; a GLMM's "
                             "fixed effects are tested by Wald z tests: use ddf='normal' "
                             "(the default) or 'none'")
    return method


def _cache(result) -> dict:
    """Per-result cache of the derivatives (results are frozen: set once, by
    object.__setattr__, on the private attribute CACHE_ATTR; it holds arrays only, so
    results still pickle, and dataclasses.replace starts a new one)."""
    cache = result.__dict__.get(CACHE_ATTR)
    if cache is None:
        cache = {}
        object.__setattr__(result, CACHE_ATTR, cache)
    return cache


# ---- Satterthwaite ----------------------------------------------------------------------------

class VarparDerivatives:
    """A = cov(varpar) and J_i = d vcov(beta) / d varpar_i at the optimum (lmerTest's
    vcov_varpar and Jac_list), computed n-free from the fit's cross-products."""

    def __init__(self, A: np.ndarray, J: np.ndarray, vcov: np.ndarray, names: list[str]):
        self.A = A  # (m, m)
        self.J = J  # (m, p, p)
        self.vcov = vcov  # (p, p)
        self.names = names  # varpar names: theta names, then "sigma" (unless fixed)

    def df(self, L: np.ndarray) -> float:
        """Satterthwaite's df of the t test of one contrast L (p,)."""
        var = float(L @ self.vcov @ L)
        g = np.einsum("i,kij,j->k", L, self.J, L)
        return float(2.0 * var**2 / (g @ self.A @ g))


def _theta_point(obj, theta: np.ndarray, reml: bool) -> np.ndarray:
    """[f, pwrss, vec(R_X^-1 R_X^-T)] at theta (one factorization)."""
    obj.update(theta)
    f = obj.ldL2 + (obj.ldRX2 if reml else 0.0)
    p = obj.cp.p
    Rinv = np.linalg.inv(obj.Ry[:p, :p])  # p x p; scipy's triangular solve costs more here
    return np.concatenate([[f, obj.pwrss], (Rinv @ Rinv.T).ravel()])


def _central_differences(fun, x: np.ndarray, h: np.ndarray, v0: np.ndarray):
    """First derivatives (k, m) and second derivatives (k, k, m) of the vector fun at x."""
    k = x.shape[0]
    grad = np.empty((k,) + v0.shape)
    hess = np.empty((k, k) + v0.shape)
    for i in range(k):
        e = np.zeros(k)
        e[i] = h[i]
        vp, vm = fun(x + e), fun(x - e)
        grad[i] = (vp - vm) / (2.0 * h[i])
        hess[i, i] = (vp - 2.0 * v0 + vm) / h[i] ** 2
    for i in range(k):
        for j in range(i + 1, k):
            ei, ej = np.zeros(k), np.zeros(k)
            ei[i], ej[j] = h[i], h[j]
            mixed = (fun(x + ei + ej) - fun(x + ei - ej) - fun(x - ei + ej)
                     + fun(x - ei - ej)) / (4.0 * h[i] * h[j])
            hess[i, j] = hess[j, i] = mixed
    return grad, hess


def theta_derivatives(obj, theta: np.ndarray, reml: bool):
    """Value, gradient and Hessian over theta of [f, pwrss, vec(vcov_unscaled)], by central
    differences at steps h and h/2 combined by Richardson extrapolation (O(h^4))."""
    fun = lambda th: _theta_point(obj, th, reml)  # noqa: E731
    v0 = fun(theta)
    h = FD_STEP * np.maximum(np.abs(theta), FD_FLOOR)
    g1, H1 = _central_differences(fun, theta, h, v0)
    g2, H2 = _central_differences(fun, theta, h / 2.0, v0)
    return v0, (4.0 * g2 - g1) / 3.0, (4.0 * H2 - H1) / 3.0


def varpar_derivatives(result) -> VarparDerivatives:
    """lmerTest's vcov_varpar and Jac_list for an LMM result, cached on the result."""
    cache = _cache(result)
    if "varpar" in cache:
        return cache["varpar"]
    ctx = result.model
    if ctx is None:
        raise ModelSpecError("this result has no model context (it was not made by lmer)")
    reml = bool(ctx.options.get("reml", result.reml))
    fixed_sigma = ctx.options.get("sigma") is not None
    obj = ctx.new_objective()
    theta = np.asarray(ctx.theta, dtype=float)
    v0, grad, hess = theta_derivatives(obj, theta, reml)
    p = len(result.fixef)
    k = theta.shape[0]
    s = float(result.sigma)
    s2 = s * s
    c = obj.cp.n - p if reml else obj.cp.n
    Vu = v0[2:].reshape(p, p)
    pw, g_pw = v0[1], grad[:, 1]
    H = hess[:, :, 0] + hess[:, :, 1] / s2  # d2/dtheta2 of f + pwrss / s2
    J = [s2 * grad[i, 2:].reshape(p, p) for i in range(k)]
    names = list(result.theta_names)
    if not fixed_sigma:
        Hs = np.zeros((k + 1, k + 1))
        Hs[:k, :k] = H
        Hs[:k, k] = Hs[k, :k] = -2.0 * g_pw / s**3
        Hs[k, k] = 6.0 * pw / s**4 - 2.0 * c / s2
        H = Hs
        J.append(2.0 * s * Vu)
        names.append("sigma")
    out = VarparDerivatives(2.0 * _pseudo_inverse(H), np.array(J), s2 * Vu, names)
    cache["varpar"] = out
    return out


def _pseudo_inverse(H: np.ndarray) -> np.ndarray:
    """H^-1 over the eigenvalues above HESSIAN_TOL (lmerTest's Moore-Penrose inverse)."""
    if not np.all(np.isfinite(H)):  # e.g. a result whose sigma was replaced by NaN
        return np.full_like(H, np.nan)
    H = 0.5 * (H + H.T)
    values, vectors = np.linalg.eigh(H)
    pos = values > HESSIAN_TOL
    return (vectors[:, pos] / values[pos]) @ vectors[:, pos].T


def satterthwaite_fdf(der: VarparDerivatives, L: np.ndarray):
    """(eigenvalues d, rotated contrasts P'L, per-direction df nu_m, F's df) of lmerTest's
    multi-dimensional Satterthwaite test; rows of L beyond its rank are dropped."""
    VL = L @ der.vcov @ L.T
    d, P = np.linalg.eigh(VL)
    order = np.argsort(d)[::-1]
    d, P = d[order], P[:, order]
    q = int(np.sum(d > max(EIGEN_EPS * d[0], 0.0)))
    PtL = (P.T @ L)[:q]
    nu = np.array([der.df(row) for row in PtL])
    return d[:q], PtL, nu, fstat_ddf(nu)


def fstat_ddf(nu: np.ndarray, tol: float = 1e-8) -> float:
    """lmerTest's get_Fstat_ddf: the df of an F made of q t statistics with df nu."""
    if nu.shape[0] == 1:
        return float(nu[0])
    if np.all(np.abs(np.diff(nu)) < tol):
        return float(nu.mean())
    if np.any(nu <= 2):
        return 2.0
    E = float(np.sum(nu / (nu - 2.0)))
    return 2.0 * E / (E - nu.shape[0])


# ---- lmerTest's type III contrasts ------------------------------------------------------------
#
# lmerTest (get_contrasts_type3 / extract_contrasts_type3): with X in treatment coding and
# rdX the over-parameterized design (every level of every factor in every term), the basic
# contrasts are L = (X^+ rdX)'; then, higher-order terms first, the columns of a term
# contained in others (a subset of their variables, with the same numeric variables) are
# made orthogonal, over rdX's columns, to the columns of the terms containing it; the
# contrast of a term is its columns restricted to the rows of X's own columns. X^+ rdX is
# an identity of the coding (it does not depend on the data), so it is computed here on
# synthetic rows: every combination of factor levels, numeric parts drawn at random.

MAX_CELLS = 20_000  # factor-level combinations the synthetic rows may hold
_UNSEEN_REF = "\x00reference"  # a treatment-coded factor's reference level (no column)


class FixedTerm:
    """A fixed-effect term: its label, variables (expressions), columns of X and, per
    variable, whether it is a factor."""

    def __init__(self, label: str, variables: tuple[str, ...]):
        self.label = label
        self.variables = variables
        self.columns: list[int] = []


def fixed_terms(fixed: str, xnames: list[str]) -> list[FixedTerm]:
    """The terms of the fixed formula (formulaic's order, R's labels) and the columns of X
    each one owns, matched by R's column names ("recipeB:temp" is recipe x temp)."""
    import formulaic

    terms = []
    for term in formulaic.Formula(fixed):
        variables = tuple(f.expr for f in term.factors if f.expr != "1")
        if variables:
            terms.append(FixedTerm(":".join(variables), variables))
    for j, name in enumerate(xnames):
        if name == "(Intercept)":
            continue
        owner = next((t for t in terms if _column_parts(name, t.variables) is not None), None)
        if owner is None:
            raise ModelSpecError(f"cannot tell which term of the fixed formula the column "
                                 f"{name!r} belongs to; test it with contrast_test(L)")
        owner.columns.append(j)
    return [t for t in terms if t.columns]


def _column_parts(name: str, variables: tuple[str, ...]) -> list[str] | None:
    """The level (or "" for a numeric variable) of each variable in a column name, or None
    when the name is not a column of a term with these variables."""
    parts = name.split(":")
    if len(parts) != len(variables):
        return None
    if not all(part.startswith(var) for part, var in zip(parts, variables)):
        return None
    return [part[len(var):] for part, var in zip(parts, variables)]


def _variable_kinds(terms: list[FixedTerm], xnames: list[str], X: np.ndarray):
    """Per variable: ("factor", levels seen) or ("numeric", sub-column suffixes).

    A variable is numeric when its name is a column part as it stands, or when its columns
    (poly(x, 2)1, ...) hold values other than 0 and 1 in a term of its own."""
    seen: dict[str, set[str]] = {}
    for t in terms:
        for j in t.columns:
            for var, level in zip(t.variables, _column_parts(xnames[j], t.variables)):
                seen.setdefault(var, set()).add(level)
    kinds = {}
    for var, levels in seen.items():
        alone = [j for t in terms if t.variables == (var,) for j in t.columns]
        numeric = "" in levels or any(
            np.any((X[:, j] != 0.0) & (X[:, j] != 1.0)) for j in alone)
        kinds[var] = ("numeric" if numeric else "factor", sorted(levels))
    return kinds


def _factor_levels(terms, kinds, intercept: bool) -> dict[str, list[str]]:
    """Levels of each factor: those named by columns, plus the unnamed reference level of
    a treatment-coded main effect (all levels are named when there is no intercept and
    the factor is the first main effect, as R codes it)."""
    levels = {}
    first_main = next((t.variables[0] for t in terms if len(t.variables) == 1
                       and kinds[t.variables[0]][0] == "factor"), None)
    for var, (kind, seen) in kinds.items():
        if kind != "factor":
            continue
        has_main = any(t.variables == (var,) for t in terms)
        full = not intercept and var == first_main
        levels[var] = ([_UNSEEN_REF] if has_main and not full else []) + list(seen)
    return levels


def _synthetic_rows(levels: dict, numerics: dict, seed: int = 20240601) -> dict:
    """Columns of synthetic rows: every combination of factor levels, repeated with random
    values of the numeric parts (enough rows for any full-rank X)."""
    names = list(levels)
    cells = int(np.prod([len(levels[v]) for v in names])) if names else 1
    if cells > MAX_CELLS:
        raise ModelSpecError(f"the factors of the fixed part have {cells} level combinations "
                             f"(limit {MAX_CELLS}) for type III contrasts; test terms with "
                             "contrast_test(L)")
    reps = 2 + sum(len(parts) for parts in numerics.values())
    grid = np.indices([len(levels[v]) for v in names]).reshape(len(names), -1) if names \
        else np.zeros((0, 1), dtype=int)
    rows = {v: np.tile(grid[i], reps) for i, v in enumerate(names)}
    rng = np.random.default_rng(seed)
    n = cells * reps
    for var, parts in numerics.items():
        for part in parts:
            rows[(var, part)] = rng.normal(size=n)
    rows["_n"] = n
    return rows


def _column_values(rows, levels, variables, parts) -> np.ndarray:
    """One design column on the synthetic rows: the product of its parts."""
    col = np.ones(rows["_n"])
    for var, part in zip(variables, parts):
        if var in levels:
            col = col * (rows[var] == levels[var].index(part))
        else:
            col = col * rows[(var, part)]
    return col


def _full_columns(term: FixedTerm, levels, numerics):
    """The over-parameterized columns of a term: all levels x all numeric parts."""
    import itertools

    choices = [levels[v] if v in levels else numerics[v] for v in term.variables]
    return [list(combo) for combo in itertools.product(*choices)]


def _zapsmall(x: np.ndarray, digits: int = 7) -> np.ndarray:
    """R's zapsmall."""
    mx = np.max(np.abs(x)) if x.size else 0.0
    if not mx > 0:
        return x
    return np.round(x, max(0, digits - int(np.ceil(np.log10(mx)))))


def type3_contrasts(result) -> dict[str, np.ndarray]:
    """lmerTest's type III contrast matrix of each fixed-effect term (rows x p)."""
    ctx = result.model
    xnames = list(result.fixef.index)
    fixed = ctx.parsed.fixed if ctx is not None and ctx.parsed is not None else None
    if fixed is None:
        raise ModelSpecError("this result does not keep its formula; use contrast_test(L)")
    terms = fixed_terms(fixed, xnames)
    intercept = "(Intercept)" in xnames
    kinds = _variable_kinds(terms, xnames, ctx.frame.X)
    levels = _factor_levels(terms, kinds, intercept)
    numerics = {v: seen for v, (kind, seen) in kinds.items() if kind == "numeric"}
    rows = _synthetic_rows(levels, numerics)
    X = np.column_stack([np.ones(rows["_n"]) if name == "(Intercept)" else
                         _column_values(rows, levels, t.variables,
                                        _column_parts(name, t.variables))
                         for name in xnames
                         for t in [next((t for t in terms if xnames.index(name) in t.columns),
                                        None)]]) if xnames else np.zeros((rows["_n"], 0))
    rd_cols, rd_keys = [np.ones(rows["_n"])] if intercept else [], ["(Intercept)"] * intercept
    for t in terms:
        for parts in _full_columns(t, levels, numerics):
            rd_cols.append(_column_values(rows, levels, t.variables, parts))
            rd_keys.append(":".join(v + p for v, p in zip(t.variables, parts)))
    if np.linalg.matrix_rank(X) < X.shape[1]:
        raise ModelSpecError("type III contrasts could not be built for this fixed part; "
                             "test terms with contrast_test(L)")
    L = _zapsmall(np.linalg.lstsq(X, np.column_stack(rd_cols), rcond=None)[0].T)
    _orthogonalize_contained(L, terms, kinds)
    at = {key: i for i, key in reversed(list(enumerate(rd_keys)))}
    L = L[[at[name] for name in xnames]]
    out = {}
    for t in terms:
        Lt = L[:, t.columns].T
        out[t.label] = Lt[np.abs(Lt).sum(axis=1) > 1e-8]
    return out


def _orthogonalize_contained(L: np.ndarray, terms: list[FixedTerm], kinds: dict) -> None:
    """Columns of a term contained in others made orthogonal to those terms' columns,
    higher-order terms first (in place)."""
    def numeric_vars(t):
        return {v for v in t.variables if kinds[v][0] == "numeric"}

    order = sorted(range(len(terms)), key=lambda i: -len(terms[i].variables))  # stable
    for i in order:
        t = terms[i]
        containers = [s for s in terms if s is not t and set(t.variables) < set(s.variables)
                      and numeric_vars(t) == numeric_vars(s)]
        if not containers:
            continue
        B = L[:, [j for s in containers for j in s.columns]]
        Y = L[:, t.columns]
        coef = np.linalg.lstsq(B, Y, rcond=None)[0]
        L[:, t.columns] = _zapsmall(Y - B @ coef)


# ---- tables -----------------------------------------------------------------------------------

def _is_glmm(result) -> bool:
    from .results_glmm import GlmerResult

    return isinstance(result, GlmerResult)


def coefficient_table(result, ddf: str | None = None) -> pd.DataFrame:
    """lmerTest's summary coefficients (see DdfMethods.coef_table)."""
    glmm = _is_glmm(result)
    method = normalize_ddf(ddf, glmm=glmm)
    est = result.fixef.to_numpy(dtype=float)
    names = list(result.fixef.index)
    if method == "kenward-roger":
        from .kenward_roger import kenward_roger

        kr = kenward_roger(result)
        se = np.sqrt(np.diag(kr.vcov_adjusted))
        df = np.array([kr.df(row) for row in np.eye(len(est))])
    else:
        se = np.sqrt(np.diag(result.vcov.to_numpy()))
    stat = est / se
    if method == "none":
        col = "z value" if glmm and not result.n_scale else "t value"
        return pd.DataFrame({"Estimate": est, "Std. Error": se, col: stat}, index=names)
    if method == "normal":
        col = "t value" if glmm and result.n_scale else "z value"  # lme4 labels scale GLMMs "t"
        p = 2.0 * scipy.stats.norm.sf(np.abs(stat))
        return pd.DataFrame({"Estimate": est, "Std. Error": se, col: stat, "Pr(>|z|)": p},
                            index=names)
    if method == "satterthwaite":
        der = varpar_derivatives(result)
        df = np.array([der.df(row) for row in np.eye(len(est))])
    p = 2.0 * scipy.stats.t.sf(np.abs(stat), df)
    return pd.DataFrame({"Estimate": est, "Std. Error": se, "df": df, "t value": stat,
                         "Pr(>|t|)": p}, index=names)


def _as_contrast(result, L) -> np.ndarray:
    """A contrast matrix (r, p) from an array, a Series or a DataFrame with fixed-effect
    columns (missing columns are 0)."""
    names = list(result.fixef.index)
    if isinstance(L, pd.Series):
        L = L.to_frame().T
    if isinstance(L, pd.DataFrame):
        unknown = [c for c in L.columns if c not in names]
        if unknown:
            raise ModelSpecError(f"contrast columns {unknown} are not fixed effects; the "
                                 f"fixed effects are {names}")
        L = L.reindex(columns=names, fill_value=0.0).to_numpy(dtype=float)
    L = np.atleast_2d(np.asarray(L, dtype=float))
    if L.ndim != 2 or L.shape[1] != len(names):
        raise ModelSpecError(f"a contrast needs one column per fixed effect ({len(names)}: "
                             f"{names}), got shape {np.shape(L)}")
    if not np.all(np.isfinite(L)):
        raise ModelSpecError("the contrast matrix has missing or infinite entries")
    return L


def f_test(result, L: np.ndarray, method: str) -> dict:
    """One row of an F (or Wald chi-square) table for the hypothesis L beta = 0."""
    beta = result.fixef.to_numpy(dtype=float)
    V = result.vcov.to_numpy()
    if method == "normal":
        return _wald_chisq(L, beta, V)
    sigma2 = float(result.sigma) ** 2
    if method == "kenward-roger":
        from .kenward_roger import kenward_roger

        F_u, q, ddf, scale = kenward_roger(result).f_test(L, beta)
        return _f_row(F_u, q, ddf, sigma2, scale)
    VL = L @ V @ L.T
    d, P = np.linalg.eigh(VL)
    order = np.argsort(d)[::-1]
    d, P = d[order], P[:, order]
    q = int(np.sum(d > max(EIGEN_EPS * d[0], 0.0)))
    if q == 0:
        raise ModelSpecError("the contrast matrix has rank 0: it tests nothing")
    PtL = (P.T @ L)[:q]
    F = float(np.sum((PtL @ beta) ** 2 / d[:q]) / q)
    if method == "none":
        return {"Sum Sq": F * sigma2 * q, "Mean Sq": F * sigma2, "NumDF": q, "F value": F}
    der = varpar_derivatives(result)
    nu = np.array([der.df(row) for row in PtL])
    return _f_row(F, q, fstat_ddf(nu), sigma2, 1.0)


def _f_row(F_u: float, q: int, ddf: float, sigma2: float, scale: float) -> dict:
    """lmerTest's mk_Ftable: Mean Sq from the unscaled F, the p-value from the scaled one."""
    F = F_u * scale
    return {"Sum Sq": F_u * sigma2 * q, "Mean Sq": F_u * sigma2, "NumDF": q, "DenDF": ddf,
            "F value": F, "Pr(>F)": float(scipy.stats.f.sf(F, q, ddf))}


def _wald_chisq(L: np.ndarray, beta: np.ndarray, V: np.ndarray) -> dict:
    """Wald chi-square test of L beta = 0 (rank of L degrees of freedom)."""
    VL = L @ V @ L.T
    d, P = np.linalg.eigh(VL)
    keep = d > max(EIGEN_EPS * d.max(), 0.0)
    PtL = P[:, keep].T @ L
    chisq = float(np.sum((PtL @ beta) ** 2 / d[keep]))
    q = int(keep.sum())
    return {"Chisq": chisq, "Df": q, "Pr(>Chisq)": float(scipy.stats.chi2.sf(chisq, q))}


def anova_table(result, type: int = 3, ddf: str | None = None) -> pd.DataFrame:
    """lmerTest's anova(m, type = 3): one F test per fixed-effect term (see DdfMethods.anova)."""
    if type not in (3, "3", "III"):
        raise ModelSpecError(f"only type III tables are implemented (type=3), not {type!r}")
    method = normalize_ddf(ddf, glmm=_is_glmm(result))
    rows, index = [], []
    for term, L in type3_contrasts(result).items():
        rows.append(f_test(result, L, method))
        index.append(term)
    return pd.DataFrame(rows, index=index)


def contrast_table(result, L, ddf: str | None = None) -> pd.DataFrame:
    """The F test (t test for one row is F = t^2) of L beta = 0 for a user's contrast L."""
    method = normalize_ddf(ddf, glmm=_is_glmm(result))
    row = f_test(result, _as_contrast(result, L), method)
    return pd.DataFrame([row], index=["contrast"])


class DdfMethods:
    """Methods of fitted results (mixed into LmerResult and GlmerResult)."""

    def coef_table(self, ddf: str | None = None) -> pd.DataFrame:
        """The fixed effects with t tests, lmerTest's ``summary(m)$coefficients``.

        Parameters
        ----------
        ddf : {"satterthwaite", "kenward-roger", "normal", "none"}, optional
            Denominator degrees of freedom. Default: "satterthwaite" for LMMs (columns
            Estimate, Std. Error, df, t value, Pr(>|t|)), "normal" for GLMMs (Wald z:
            z value, Pr(>|z|); the only test for GLMMs). "kenward-roger" also adjusts the
            standard errors (pbkrtest's vcovAdj; REML fits only). "none": lme4's table
            without df and p-values. R's spellings ("Satterthwaite", "Kenward-Roger",
            "KR") are accepted in any case.

        Returns
        -------
        pandas.DataFrame indexed by the fixed-effect names.
        """
        return coefficient_table(self, ddf)

    def anova(self, type: int = 3, ddf: str | None = None) -> pd.DataFrame:
        """Type III F tests of the fixed-effect terms, lmerTest's ``anova(m, type = 3)``.

        The hypotheses are lmerTest's type III contrasts (glmm_sparse.type3), which do not
        depend on the contrast coding. Columns: Sum Sq, Mean Sq, NumDF, DenDF, F value,
        Pr(>F) (ddf "satterthwaite" or "kenward-roger"; Mean Sq = F sigma^2 as lmerTest);
        "none": no DenDF and p-value; "normal" (GLMMs, the default there): Wald chi-square
        tests, columns Chisq, Df, Pr(>Chisq).
        """
        return anova_table(self, type=type, ddf=ddf)

    def contrast_test(self, L, ddf: str | None = None) -> pd.DataFrame:
        """F test of L beta = 0 for a contrast matrix L (rows: hypotheses, one column per
        fixed effect; a DataFrame or Series may name the columns it uses). The numerator
        df is the rank of L; one row gives F = t^2 with the t test's df."""
        return contrast_table(self, L, ddf)
