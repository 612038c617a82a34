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

import itertools
import math
import re
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.stats

from .context import require_model
from .errors import GlmmSparseWarning, ModelSpecError

DDF_CHOICES = ("satterthwaite", "kenward-roger", "normal", "none")
_ALIASES = {"satterthwaite": "satterthwaite", "kenward-roger": "kenward-roger",
            "kenward_roger": "kenward-roger", "kenwardroger": "kenward-roger",
            "kr": "kenward-roger", "normal": "normal", "wald": "normal", "z": "normal",
            "none": "none", "lme4": "none"}
FD_STEP = 1e-3  # relative central-difference step on theta (halved once for Richardson)
FD_FLOOR = 1e-2  # theta entries below this (in size) get the step FD_STEP * FD_FLOOR
HESSIAN_TOL = 1e-8  # lmerTest's tolerance on the eigenvalues of H (a pseudo-inverse below),
# applied to H over (theta, sigma / sigma_hat), which does not depend on the response's units
EIGEN_EPS = math.sqrt(np.finfo(float).eps)  # lmerTest's rank tolerance of L C L'
ANOVA_COLUMNS = {  # the columns of anova() per method (also those of an empty table)
    "satterthwaite": ["Sum Sq", "Mean Sq", "NumDF", "DenDF", "F value", "Pr(>F)"],
    "kenward-roger": ["Sum Sq", "Mean Sq", "NumDF", "DenDF", "F value", "Pr(>F)"],
    "none": ["Sum Sq", "Mean Sq", "NumDF", "F value"],
    "normal": ["Chisq", "Df", "Pr(>Chisq)"]}
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
    ctx = require_model(result, "Satterthwaite's df")
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
        # the sigma coordinate is sigma / sigma_hat (derivatives over it are s times those
        # over sigma): H's eigenvalues, and so which of them HESSIAN_TOL drops, do not
        # depend on the units of the response; nu does not depend on the parametrization
        Hs = np.zeros((k + 1, k + 1))
        Hs[:k, :k] = H
        Hs[:k, k] = Hs[k, :k] = -2.0 * g_pw / s2
        Hs[k, k] = 6.0 * pw / s2 - 2.0 * c
        H = Hs
        J.append(2.0 * s2 * Vu)
        names.append("sigma")
    out = VarparDerivatives(2.0 * _pseudo_inverse(H), np.array(J), s2 * Vu, names)
    cache["varpar"] = out
    return out


def _pseudo_inverse(H: np.ndarray) -> np.ndarray:
    """H^-1 over the eigenvalues above HESSIAN_TOL (lmerTest's Moore-Penrose inverse); as
    lmerTest, a warning names the negative eigenvalues and those close to zero."""
    if not np.all(np.isfinite(H)):  # e.g. a result whose sigma was replaced by NaN
        return np.full_like(H, np.nan)
    H = 0.5 * (H + H.T)
    values, vectors = np.linalg.eigh(H)
    pos = values > HESSIAN_TOL
    for kind, bad in (("negative", values < -HESSIAN_TOL),
                      ("close to zero", np.abs(values) <= HESSIAN_TOL)):
        if bad.any():
            listed = " ".join(f"{v:.1e}" for v in values[bad])
            warnings.warn(f"the Hessian of the deviance over the variance parameters (theta, "
                          f"sigma / sigma_hat) has {int(bad.sum())} {kind} eigenvalue(s): "
                          f"{listed}; the fit may not have converged, and the Satterthwaite "
                          "df leave those directions out (as lmerTest)", GlmmSparseWarning,
                          stacklevel=4)
    return (vectors[:, pos] / values[pos]) @ vectors[:, pos].T


def rank_reduced(L: np.ndarray, V: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(d, P'L): the eigenvalues of L V L' above sqrt(eps) times the largest, in decreasing
    order, and the rotated rows of L for them -- a full-rank basis of L's hypothesis with
    uncorrelated rows (lmerTest's reduction). A contrast of rank 0 is a ModelSpecError."""
    d, P = np.linalg.eigh(L @ V @ L.T)
    order = np.argsort(d)[::-1]
    d, P = d[order], P[:, order]
    q = int(np.sum(d > max(EIGEN_EPS * d[0], 0.0))) if d.size else 0
    if q == 0:
        raise ModelSpecError("the contrast matrix has rank 0: it tests nothing")
    return d[:q], (P.T @ L)[:q]


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
# lmerTest (get_contrasts_type3 / extract_contrasts_type3): with X_t the design in treatment
# coding and rdX the over-parameterized design (every level of every factor in every term),
# the basic contrasts are L = (X_t^+ rdX)'; then, higher-order terms first, the columns of a
# term contained in others are made orthogonal, over rdX's columns, to the columns of the
# terms containing it; the contrast of a term is its columns restricted to the rows of X_t's
# own columns. The fit's own coding (sum, Helmert, polynomial, another reference level) is
# reached through the map X_t^+ X. These maps are identities of the codings, not of the
# data, so they are computed on synthetic rows: every combination of factor levels, numeric
# values drawn at random. The terms, levels and codings come from formulaic's model spec
# (frame.fixed_spec); a fit that keeps only X's names (streamed) is read from R's column
# names with treatment coding.

MAX_CELLS = 20_000  # factor-level combinations the synthetic rows may hold
_UNSEEN_REF = "\x00reference"  # a treatment-coded factor's reference level (no column)
_C_CALL = re.compile(r"^C\(\s*([A-Za-z_][\w.]*)\s*[,)]")
_SUPPORTED = ("type III tables cover factors (a column or C(column, ...), any contrasts), "
              "numeric columns and transforms of them, and their interactions")


class FixedTerm:
    """A fixed-effect term: its label, variables (factor expressions) and, once the
    treatment-coded design is made, its columns there."""

    def __init__(self, label: str, variables: tuple[str, ...]):
        self.label = label
        self.variables = variables
        self.columns: list[int] = []


@dataclass
class FixedLayout:
    """The fixed part as type III needs it: the terms, each factor's levels (the treatment
    reference first), each numeric variable's number of columns, and how the synthetic rows
    give the numeric values and the fit's own X (``numeric`` and ``original``)."""

    terms: list[FixedTerm]
    levels: dict[str, list]
    numerics: dict[str, int]
    intercept: bool
    grid_of: dict[str, str]  # factor -> the key of its level codes in the synthetic rows
    numeric: object  # rows -> {numeric variable: (n, parts) values}
    original: object  # rows, numeric values -> the fit's X (its kept columns)

    def synthetic_rows(self, seed: int = 20240601) -> dict:
        """Every combination of the factors' levels, repeated ``reps`` times."""
        keys = list(dict.fromkeys(self.grid_of.values()))
        sizes = [len(self.levels[next(v for v, k in self.grid_of.items() if k == key)])
                 for key in keys]
        cells = int(np.prod(sizes)) if sizes else 1
        if cells > MAX_CELLS:
            raise ModelSpecError(f"the factors of the fixed part have {cells} level "
                                 f"combinations (limit {MAX_CELLS}) for type III contrasts; "
                                 "test terms with contrast_test(L)")
        reps = 2 + sum(self.numerics.values())
        grid = np.indices(sizes).reshape(len(sizes), -1) if sizes else np.zeros((0, 1), int)
        return {"n": cells * reps, "rng": np.random.default_rng(seed),
                "codes": {key: np.tile(grid[i], reps) for i, key in enumerate(keys)}}


def fixed_layout(result) -> FixedLayout:
    """The FixedLayout of a fit: from formulaic's model spec when the frame keeps one, else
    from the fixed formula and R's column names (a streamed fit, the plain-columns path)."""
    ctx = result.model
    xnames = list(result.fixef.index)
    spec = getattr(ctx.frame, "fixed_spec", None) if ctx is not None else None
    if spec is not None and spec.model_spec is not None:
        return _spec_layout(spec, xnames)
    fixed = ctx.parsed.fixed if ctx is not None and ctx.parsed is not None else None
    if fixed is None:
        raise ModelSpecError("this result does not keep its formula; use contrast_test(L)")
    return _name_layout(fixed, xnames)


# -- from formulaic's model spec

def _spec_layout(spec, xnames: list[str]) -> FixedLayout:
    """Terms and factors from the spec's structure, levels and kinds from its encoder state;
    the fit's X is the spec's own model matrix of synthetic data columns."""
    from .design import expression_variables, r_column_name

    ms = spec.model_spec
    terms, levels, data_column, numerics = [], {}, {}, []
    intercept = False
    for st in ms.structure:
        variables = tuple(f.expr for f in st.term.factors if f.expr != "1")
        if not variables:
            intercept = True
            continue
        terms.append(FixedTerm(":".join(variables), variables))
        for var in variables:
            kind, state = ms.encoder_state.get(var, (None, {}))
            if getattr(kind, "value", kind) != "categorical":
                numerics.append(var)
                continue
            match = _C_CALL.match(var)
            column = var if var.isidentifier() else (match.group(1) if match else None)
            if column is None:
                raise ModelSpecError(f"cannot tell which data column the factor {var!r} "
                                     f"reads; {_SUPPORTED}: test it with contrast_test(L)")
            levels[var], data_column[var] = list(state["categories"]), column
    numerics = list(dict.fromkeys(numerics))
    factor_columns = set(data_column.values())
    raw = [c for c in spec.variables if c not in factor_columns]
    for var in numerics:
        mixed = sorted(set(expression_variables(var)) & factor_columns)
        if mixed:
            raise ModelSpecError(f"column(s) {mixed} enter the fixed part both as factors and "
                                 f"as numbers ({var!r}): type III contrasts cannot be built; "
                                 "test terms with contrast_test(L)")
    names = [r_column_name(c) for c in ms.column_names]
    kept = [names.index(x) for x in xnames]

    def data(rows):
        if "data" not in rows:
            cols = {c: pd.Categorical.from_codes(rows["codes"][c], levels[var])
                    for var, c in data_column.items()}
            cols.update({c: rows["rng"].uniform(0.5, 2.0, rows["n"]) for c in raw})
            rows["data"] = pd.DataFrame(cols, index=pd.RangeIndex(rows["n"]))
        return rows["data"]

    def numeric(rows):
        import formulaic

        out = {}
        for var in numerics:
            sub = formulaic.ModelSpec(formula=f"0 + {var}", transform_state=ms.transform_state)
            out[var] = sub.get_model_matrix(data(rows), na_action="ignore").to_numpy(float)
        return out

    def original(rows, values):
        return spec.matrix(data(rows), "fixed-effects term")[:, kept]

    probe = {"n": 4, "rng": np.random.default_rng(1),
             "codes": {c: np.zeros(4, int) for c in factor_columns}}
    parts = {var: v.shape[1] for var, v in numeric(probe).items()}
    return FixedLayout(terms, levels, parts, intercept, dict(data_column), numeric, original)


# -- from R's column names

def _name_layout(fixed: str, xnames: list[str]) -> FixedLayout:
    """Terms from the fixed formula; each column of X matched exactly to one term (a
    numeric variable's part is its name, a factor's is its name and a level)."""
    import formulaic

    terms = []
    for term in formulaic.Formula(fixed):
        variables = tuple(f.expr for f in term.factors if f.expr != "1")
        if variables:
            terms.append(FixedTerm(":".join(variables), variables))
    cands = {name: [(i, parts) for i, t in enumerate(terms)
                    for parts in _name_parts(name, t.variables)]
             for name in xnames if name != "(Intercept)"}
    numeric = {v for c in cands.values() for i, parts in c
               for v, part in zip(terms[i].variables, parts) if part == ""}
    numeric |= {v for t in terms for v in t.variables if "(" in v and not _C_CALL.match(v)}
    keys = []
    for name in xnames:
        if name == "(Intercept)":
            keys.append(None)
            continue
        ok = [(i, parts) for i, parts in cands[name]
              if all((v in numeric) == (part == "" or "(" in v and not _C_CALL.match(v))
                     for v, part in zip(terms[i].variables, parts))]
        longest = max((sum(map(len, terms[i].variables)) for i, _ in ok), default=None)
        ok = [c for c in ok if sum(map(len, terms[c[0]].variables)) == longest]
        if len(ok) != 1:
            raise ModelSpecError(f"cannot tell which term of the fixed formula the column "
                                 f"{name!r} belongs to from its name (this fit keeps no "
                                 "model spec); test it with contrast_test(L)")
        keys.append(ok[0])
    seen: dict[str, list] = {}
    for key in keys:
        if key is not None:
            for v, part in zip(terms[key[0]].variables, key[1]):
                seen.setdefault(v, [])
                if part not in seen[v]:
                    seen[v].append(part)
    intercept = "(Intercept)" in xnames
    full = _fully_coded(terms, set(seen) - numeric, intercept)
    levels = {v: ([] if v in full else [_UNSEEN_REF]) + parts
              for v, parts in seen.items() if v not in numeric}
    parts = {v: seen[v] for v in seen if v in numeric}

    def values(rows):
        return {v: rows["rng"].normal(size=(rows["n"], len(p))) for v, p in parts.items()}

    def original(rows, numeric_values):
        cols = [np.ones(rows["n"]) if key is None else
                _product(rows, levels, numeric_values, {v: v for v in levels},
                         terms[key[0]].variables,
                         [p if v in levels else parts[v].index(p)
                          for v, p in zip(terms[key[0]].variables, key[1])])
                for key in keys]
        return np.column_stack(cols) if cols else np.zeros((rows["n"], 0))

    used = [t for t in terms if any(k is not None and terms[k[0]] is t for k in keys)]
    return FixedLayout(used, levels, {v: len(p) for v, p in parts.items()}, intercept,
                       {v: v for v in levels}, values, original)


def _name_parts(name: str, variables: tuple[str, ...]) -> list[list[str]]:
    """Every reading of a column name as the term ``variables``: per variable, "" (the
    name alone, a numeric variable) or the rest (a level; it may hold ":")."""
    var, rest = variables[0], variables[1:]
    if not name.startswith(var):
        return []
    tail = name[len(var):]
    if not rest:
        return [[tail]]
    out = []
    at = tail.find(":")
    while at >= 0:
        out += [[tail[:at]] + more for more in _name_parts(tail[at + 1:], rest)]
        at = tail.find(":", at + 1)
    return out


def _fully_coded(terms: list[FixedTerm], factors: set, intercept: bool) -> set:
    """Factors that some term codes by all their levels (R's factor code 2, or the first
    factor main effect of a model without intercept): their levels are all named."""
    out = set()
    first = next((t.variables[0] for t in terms if len(t.variables) == 1
                  and t.variables[0] in factors), None)
    if not intercept and first is not None:
        out.add(first)
    for t in terms:
        out |= {v for v in t.variables if v in factors and _r_code(t, v, terms) == 2}
    return out


# -- the contrasts

def _r_code(term: FixedTerm, var: str, terms: list[FixedTerm]) -> int:
    """R's terms "factors" code of ``var`` in ``term``: 2 when the term without it is not
    a term of the model (the variable is then coded by all its levels), else 1."""
    rest = set(term.variables) - {var}
    return 2 if rest and not any(set(t.variables) == rest for t in terms) else 1


def _product(rows, levels, numeric, grid_of, variables, parts) -> np.ndarray:
    """One design column on the synthetic rows: the product of its parts (a level of each
    factor, a column index of each numeric variable)."""
    col = np.ones(rows["n"])
    for var, part in zip(variables, parts):
        if var in levels:
            col = col * (rows["codes"][grid_of[var]] == levels[var].index(part))
        else:
            col = col * numeric[var][:, part]
    return col


def _treatment_parts(layout: FixedLayout, term: FixedTerm) -> list[tuple]:
    """The columns of a term in R's treatment coding: per factor, all levels where R codes
    it fully, else all but the first; per numeric variable, each of its columns."""
    terms = layout.terms
    first = next((t for t in terms if len(t.variables) == 1
                  and t.variables[0] in layout.levels), None)
    choices = []
    for var in term.variables:
        if var not in layout.levels:
            choices.append(list(range(layout.numerics[var])))
        elif _r_code(term, var, terms) == 2 or (not layout.intercept and term is first):
            choices.append(layout.levels[var])
        else:
            choices.append(layout.levels[var][1:])
    return list(itertools.product(*choices))


def _zapsmall(x: np.ndarray, digits: int = 7) -> np.ndarray:
    """R's zapsmall."""
    mx = np.max(np.abs(x)) if x.size else 0.0
    if not mx > 0:
        return x
    return np.round(x, max(0, digits - int(np.ceil(np.log10(mx)))))


def type3_contrasts(result) -> dict[str, np.ndarray]:
    """lmerTest's type III contrast matrix of each fixed-effect term (rows x p), in the
    fit's own coding."""
    if len(result.fixef) == 0:
        return {}
    layout = fixed_layout(result)
    rows = layout.synthetic_rows()
    numeric = layout.numeric(rows)

    def column(t, parts):
        return _product(rows, layout.levels, numeric, layout.grid_of, t.variables, parts)

    xt_cols, xt_keys = ([np.ones(rows["n"])], [()]) if layout.intercept else ([], [])
    rd_cols, rd_keys = list(xt_cols), list(xt_keys)
    for i, t in enumerate(layout.terms):
        t.columns = []
        for parts in _treatment_parts(layout, t):
            t.columns.append(len(xt_cols))
            xt_cols.append(column(t, parts))
            xt_keys.append((i, parts))
        full = [layout.levels[v] if v in layout.levels else range(layout.numerics[v])
                for v in t.variables]
        for parts in itertools.product(*full):
            rd_cols.append(column(t, parts))
            rd_keys.append((i, parts))
    Xt, X = np.column_stack(xt_cols), layout.original(rows, numeric)
    to_fit = np.linalg.lstsq(Xt, X, rcond=None)[0]  # X = Xt to_fit: beta_t = to_fit beta
    if (np.linalg.matrix_rank(Xt) < Xt.shape[1] or np.linalg.matrix_rank(X) < X.shape[1]
            or not np.allclose(Xt @ to_fit, X, atol=1e-8 * max(1.0, np.abs(X).max()))):
        raise ModelSpecError(f"type III contrasts could not be built for this fixed part "
                             f"({_SUPPORTED}, in formulas whose columns R's treatment coding "
                             "spans, and no aliased column outside treatment coding); test "
                             "terms with contrast_test(L)")
    L = _zapsmall(np.linalg.lstsq(Xt, np.column_stack(rd_cols), rcond=None)[0].T)
    _orthogonalize_contained(L, layout)
    at = {key: i for i, key in enumerate(rd_keys)}
    L = L[[at[key] for key in xt_keys]]
    to_fit = _zapsmall(to_fit)
    out = {}
    for t in layout.terms:
        Lt = L[:, t.columns].T
        out[t.label] = Lt[np.abs(Lt).sum(axis=1) > 1e-8] @ to_fit
    return out


def _orthogonalize_contained(L: np.ndarray, layout: FixedLayout) -> None:
    """lmerTest's step: the columns of a term contained in others (a proper subset of their
    variables coded 1 in R's factor table, with the same numeric ones) made orthogonal to
    those terms' columns, higher-order terms first (in place)."""
    terms = layout.terms
    coded = {id(t): {v for v in t.variables if _r_code(t, v, terms) == 1} for t in terms}
    numeric = {id(t): {v for v in coded[id(t)] if v not in layout.levels} for t in terms}
    order = sorted(range(len(terms)), key=lambda i: -len(terms[i].variables))  # stable
    for i in order:
        t = terms[i]
        containers = [s for s in terms if s is not t and coded[id(t)] < coded[id(s)]
                      and numeric[id(t)] == numeric[id(s)]]
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
    d, PtL = rank_reduced(L, V)
    q = d.shape[0]
    F = float(np.sum((PtL @ beta) ** 2 / d) / q)
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
    d, PtL = rank_reduced(L, V)
    chisq = float(np.sum((PtL @ beta) ** 2 / d))
    q = d.shape[0]
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
    return pd.DataFrame(rows, index=index, columns=ANOVA_COLUMNS[method])


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
