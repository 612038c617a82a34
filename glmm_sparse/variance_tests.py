"""Tests and moment estimators of one variance component.

After the results stage (... -> results -> inference). Three views of "is sigma_1^2 = 0?":

- ``variance_component_test``: the likelihood-ratio test against the model without the
  term (refitted on the same rows; with no random effect left, the linear model or the
  GLM), with the naive chi-square and the chi-bar-square p-values (lrt.py);
- ``exact_f_test`` (LMM): the F test from the projections of y onto the column spaces of
  (X, Z) and (X, Z without the term), exact under the null in any design (Seely & El-
  Bassiouni 1983), computed from the fit's cross-products, never from the n rows;
- ``anova_estimators`` (balanced one-way and two-level nested LMMs): the mean squares and
  the solutions of their expected values, negative estimates reported as they are.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import linalg, stats

from .context import require_model
from .errors import ModelSpecError
from .formula import parse_formula
from .kenward_roger import dense_gram
from .lrt import (
    chibar_pvalue,
    fit_without_terms,
    no_random_loglik,
    reduced_formula,
    term_labels,
)

# the exact F test factors a dense (p + q) x (p + q) matrix: 4,000 columns take 128 MB
MAX_DENSE_COLUMNS = 4000
# rank of the design: a column is aliased when the squared norm of its residual on the
# columns before it falls below this fraction of its own squared norm
RANK_TOL = 1e-11


# --------------------------------------------------------------------- the term


def _lhs_key(lhs: str) -> frozenset[str]:
    """A term's left side as a set of its additive parts, blanks removed: "1 + I(x ** 2)"
    and "I(x**2) + 1" give the same key ("+" inside parentheses does not split)."""
    parts, depth, part = [], 0, []
    for ch in lhs:
        depth += (ch == "(") - (ch == ")")
        if ch == "+" and depth == 0:
            parts.append("".join(part))
            part = []
        else:
            part.append(ch)
    parts.append("".join(part))
    return frozenset("".join(p.split()) for p in parts if p.strip())


def _group_key(group) -> tuple[str, ...]:
    """An interaction of grouping factors regardless of order: cask:batch = batch:cask."""
    return tuple(sorted(g.strip() for g in group))


def _parse_term(term: str):
    """The random terms a string such as "(1 | g)", "(1 + x | g)" stands for, or (None,
    the factors) for a grouping factor's name such as "g" or "cask:batch"."""
    text = term.strip()
    if "|" not in text:
        return None, tuple(s.strip().strip("`") for s in text.split(":"))
    if not text.startswith("("):
        text = f"({text})"
    return parse_formula(f"y ~ 1 + {text}").random, None


def _written_lhs(model) -> list[str]:
    """Each frame term's left side as the formula wrote it (from its label)."""
    return [label[1:label.rindex("|")] for label in term_labels(model)]


def find_term(result, term) -> int:
    """Index in ``result.model.frame.terms`` of ``term``: an int, a term as written in
    the formula ("(1 | Batch)", "(1 + k | g)", "(1 | cask:batch)"), or a grouping factor's
    name when that factor has a single term.

    A written term is matched on the parsed formula's random terms: the same grouping
    factor(s) and the same parts of the left side, blanks and order aside (so "(k | g)"
    is "(1 + k | g)", and "I(x**2)" is "I(x ** 2)").
    """
    model = result.model
    terms = model.frame.terms
    labels = ", ".join(term_labels(model))
    if isinstance(term, (int, np.integer)) and not isinstance(term, bool):
        if not 0 <= term < len(terms):
            raise ModelSpecError(f"term index {term} out of range: the model's terms are {labels}")
        return int(term)
    if not isinstance(term, str):
        raise TypeError(f"term must be a string such as '(1 | g)' or an index, not {term!r}")
    specs, group = _parse_term(term)
    if specs is not None and len(specs) != 1:
        raise ModelSpecError(f"{term!r} expands to {len(specs)} terms; name one of {labels}")
    if specs is not None:
        group = specs[0].group
    hits = [i for i, t in enumerate(terms)
            if _group_key(t.group_name.split(":")) == _group_key(group)]
    if specs is not None:
        want, lhs = _lhs_key(specs[0].lhs), _written_lhs(model)
        hits = [i for i in hits if _lhs_key(lhs[i]) == want]
    if len(hits) != 1:
        problem = "matches no term" if not hits else "matches more than one term"
        raise ModelSpecError(f"{term!r} {problem} of the model; its random-effects terms "
                             f"are {labels}")
    return hits[0]


# ------------------------------------------------------------ exact F test (LMM)


@dataclass(frozen=True)
class ExactFTest:
    """F = [(RSS0 - RSS1) / (r1 - r0)] / [RSS1 / (n - r1)] with its F(df1, df2) p-value.

    RSS1, r1: residual sum of squares and rank of (X, Z); RSS0, r0: of (X, Z without the
    term). Exact under sigma_term^2 = 0 whatever the other variances (weighted by the prior
    weights, if any).
    """

    term: str
    F: float
    df1: int
    df2: int
    p: float
    rss_full: float
    rss_reduced: float

    def __str__(self) -> str:
        return (f"Exact F test of the variance of {self.term} = 0: F = {self.F:.6g} on "
                f"{self.df1} and {self.df2} df, p = {self.p:.4g}")


def projection_rss(G: np.ndarray, cols: np.ndarray) -> tuple[float, int]:
    """Residual sum of squares of y (G's last column) on the design columns ``cols``,
    and their rank, by a pivoted Cholesky factorization of their scaled Gram matrix."""
    A = G[np.ix_(cols, cols)]
    c, yy = G[cols, -1], G[-1, -1]
    d = np.sqrt(np.diag(A))
    d[d == 0.0] = 1.0
    A = A / np.outer(d, d)
    L, piv, rank, info = linalg.lapack.dpstrf(A, lower=1, tol=RANK_TOL)
    if info < 0:
        raise ValueError(f"LAPACK dpstrf: argument {-info} invalid")
    piv = piv[:rank] - 1
    a = linalg.solve_triangular(L[:rank, :rank], c[piv] / d[piv], lower=True)
    return float(yy - a @ a), int(rank)


def exact_f_test(result, term) -> ExactFTest:
    """Exact F test of a variance component of a linear mixed model.

    Parameters
    ----------
    result : LmerResult
    term : str or int
        The term whose variance is tested, as written in the formula ("(1 | Batch)"), a
        grouping factor's name with one term, or an index into the model's terms.

    Returns
    -------
    ExactFTest
        F, df1 = r1 - r0, df2 = n - r1 and p, with r the ranks of (X, Z) and of (X, Z
        without the term). Computed from the fit's cross-products (no pass over the rows),
        as a dense matrix with p + q rows and columns: refused above 4,000.
    """
    ctx = result.model
    if ctx is None or ctx.is_glmm:
        raise ModelSpecError("the exact F test is for linear mixed models (lmer fits)")
    i = find_term(result, term)
    cp = ctx.crossproducts()
    ncol = cp.p + cp.q
    if ncol > MAX_DENSE_COLUMNS:
        raise ModelSpecError(
            f"the exact F test needs the dense {ncol} x {ncol} cross-product matrix of (X, Z) "
            f"({ncol * ncol * 8 / 2**20:.0f} MB) and its factorization; this model has "
            f"p + q = {ncol} columns, more than {MAX_DENSE_COLUMNS}: use the likelihood-"
            "ratio test (variance_component_test) instead")
    G = dense_gram(cp)
    lo, hi = cp.p + cp.offsets[i], cp.p + cp.offsets[i + 1]
    full = np.arange(ncol)
    reduced = np.r_[np.arange(lo), np.arange(hi, ncol)]
    rss1, r1 = projection_rss(G, full)
    rss0, r0 = projection_rss(G, reduced)
    label = term_labels(ctx)[i]
    df1, df2 = r1 - r0, cp.n - r1
    if df1 == 0:
        raise ModelSpecError(f"{label} adds no column to the span of X and the other terms "
                             "(its factor is nested in another term's): the exact F test "
                             "has 0 numerator df; test the inner term instead")
    if df2 == 0:
        raise ModelSpecError(f"(X, Z) has rank {r1} = n: no residual degrees of freedom left "
                             "for the exact F test")
    F = ((rss0 - rss1) / df1) / (rss1 / df2)
    return ExactFTest(label, float(F), int(df1), int(df2), float(stats.f.sf(F, df1, df2)),
                      rss1, rss0)


# ------------------------------------------------ likelihood-ratio test of a term


@dataclass(frozen=True)
class VarianceComponentTest:
    """The likelihood-ratio test of one random-effects term, and the exact F test (LMM).

    ``applies`` names the p-value to use ("chi-bar-square" when the term is one variance,
    whose null value 0 is on the boundary; "chi-square" otherwise, which is then
    conservative) and ``reason`` says why.
    """

    term: str
    reduced: str
    method: str
    loglik_full: float
    loglik_reduced: float
    statistic: float
    df: int
    p_chisq: float
    p_chibar: float
    applies: str
    reason: str
    exact_f: ExactFTest | None
    exact_f_note: str = ""

    def to_frame(self) -> pd.DataFrame:
        """One row per test: the LRT (chi-square, chi-bar-square) and the exact F test."""
        rows = {"LRT chi-square": (self.statistic, self.df, np.nan, self.p_chisq),
                "LRT chi-bar-square": (self.statistic, self.df, np.nan, self.p_chibar)}
        if self.exact_f is not None:
            f = self.exact_f
            rows["exact F"] = (f.F, f.df1, f.df2, f.p)
        return pd.DataFrame.from_dict(rows, orient="index",
                                      columns=["statistic", "df", "df2", "p"])

    def __str__(self) -> str:
        head = (f"Test of the variance of {self.term} = 0 ({self.method}; reduced model: "
                f"{self.reduced})")
        lines = [head, self.to_frame().to_string(),
                 f"Use the {self.applies} p-value: {self.reason}"]
        if self.exact_f_note:
            lines.append(f"No exact F test: {self.exact_f_note}")
        return "\n".join(lines)


def _full_fit(result, reml: bool):
    from .refit import Refitter

    if bool(result.reml) == reml:
        return result
    return Refitter(result, reml=reml).fit(result.model.frame.y)


def _reduced_loglik(full, i: int, reml: bool) -> tuple[float, int, str]:
    terms = full.model.frame.terms
    if len(terms) == 1:
        fit = no_random_loglik(full, reml=reml)
        return fit.loglik, fit.npar, reduced_formula(full, ()) + " (no random effects)"
    fit = fit_without_terms(full, [i], reml=reml)
    return fit.loglik, fit.npar, fit.formula


def variance_component_test(result, term, *, reml: bool = False) -> VarianceComponentTest:
    """Likelihood-ratio test of one random-effects term against the model without it.

    Parameters
    ----------
    result : LmerResult or GlmerResult
    term : str or int
        The term, as written in the formula ("(1 | Batch)"), a grouping factor with one
        term, or an index into the model's terms. If it is the only term, the null model
        is the linear model (least squares) or the GLM (binomial, Poisson).
    reml : bool, keyword-only
        Compare REML criteria (LMMs; the fixed effects are the same in both models)
        instead of ML log-likelihoods (default; a REML fit is refitted by ML).

    Returns
    -------
    VarianceComponentTest
        The statistic 2 (logLik1 - logLik0) (floored at 0), its df, the naive chi-square
        p-value, the chi-bar-square p-value (0.5 chi2_0 + 0.5 chi2_1 for a term with one
        variance; NaN for a k x k term, where no 50:50 mixture is the limit), which one
        applies and why, and for LMMs the exact F test (None, with ``exact_f_note``
        saying why, when the term adds no column to the others' span or the design is
        too large for it).
    """
    ctx = require_model(result, "the test of a variance component")
    if ctx.options.get("sigma") is not None:
        raise ModelSpecError("the test of a variance component is not available for fits "
                             "with a fixed residual SD (sigma=)")
    if reml and ctx.is_glmm:
        raise ModelSpecError("reml=True is for linear mixed models; GLMMs are tested by ML")
    i = find_term(result, term)
    full = _full_fit(result, reml) if not ctx.is_glmm else result
    ll0, npar0, reduced = _reduced_loglik(full, i, reml)
    stat = max(2.0 * (full.loglik - ll0), 0.0)
    df = full.npar - npar0
    t = full.model.frame.terms[i]
    label = term_labels(full.model)[i]
    if t.k == 1:
        p_chibar, applies = chibar_pvalue(stat, 1), "chi-bar-square"
        reason = ("the null value of the variance, 0, is on the boundary of the parameter "
                  "space, so 2 log LR is asymptotically 0.5 chi2_0 + 0.5 chi2_1 (Self & Liang "
                  "1987), and the chi-square(1) p-value is twice too large")
    else:
        p_chibar, applies = np.nan, "chi-square"
        reason = (f"the term's null value is a {t.k} x {t.k} covariance matrix of 0, a "
                  "corner of the parameter space, whose limiting mixture is not 50:50; the "
                  f"chi-square({df}) p-value is conservative")
    exact, why_not = _exact_or_reason(result, i)
    return VarianceComponentTest(label, reduced, "REML" if reml else "ML", full.loglik, ll0,
                                 stat, int(df), float(stats.chi2.sf(stat, df)), p_chibar,
                                 applies, reason, exact, why_not)


def _exact_or_reason(result, i: int) -> tuple[ExactFTest | None, str]:
    """The exact F test, or why there is none (GLMM, nested term, design too large)."""
    if result.model.is_glmm:
        return None, "no exact F test for a GLMM"
    try:
        return exact_f_test(result, i), ""
    except ModelSpecError as err:
        return None, str(err)




# ------------------------------------------------------------- ANOVA estimators


@dataclass(frozen=True)
class AnovaEstimates:
    """ANOVA (method-of-moments) estimates of the variance components, next to REML.

    ``table``: the ANOVA table (Df, Sum Sq, Mean Sq, and the expected mean square);
    ``estimates``: per component the ANOVA estimate (negative ones as they are: outside
    the parameter space), the REML estimate, and whether the ANOVA one is negative.
    """

    design: str
    table: pd.DataFrame
    estimates: pd.DataFrame

    def __str__(self) -> str:
        neg = self.estimates.index[self.estimates["outside_parameter_space"]].tolist()
        note = ("" if not neg else f"\nNegative ANOVA estimate(s) for {', '.join(neg)}: "
                "outside the parameter space (a variance is >= 0); REML keeps them at the "
                "boundary.")
        return (f"ANOVA estimators, {self.design} design\n{self.table.to_string()}\n\n"
                f"{self.estimates.to_string()}{note}")


def _check_anova_design(result) -> None:
    ctx = result.model
    if ctx is None or ctx.is_glmm:
        raise ModelSpecError("ANOVA estimators are for linear mixed models (lmer fits)")
    f = ctx.frame
    if f.xnames != ("(Intercept)",):
        raise ModelSpecError(f"ANOVA estimators need an intercept-only fixed part (y ~ 1 + "
                             f"...); this model has fixed effects {list(f.xnames)}")
    if f.weights is not None or f.offset is not None:
        raise ModelSpecError("ANOVA estimators are for unweighted models without an offset")
    if any(t.cnames != ("(Intercept)",) for t in f.terms) or len(f.terms) > 2:
        raise ModelSpecError("ANOVA estimators are for a one-way (1 | g) or two-level nested "
                             "(1 | a/b) design; this model has the terms "
                             + ", ".join(term_labels(ctx)))


def _equal_counts(codes: np.ndarray, nlev: int, what: str) -> int:
    counts = np.bincount(codes, minlength=nlev)
    if counts.min() != counts.max():
        raise ModelSpecError(f"the design is unbalanced: {what} has between {counts.min()} "
                             f"and {counts.max()} (the ANOVA estimators' expected mean "
                             "squares hold for balanced designs only; use REML)")
    return int(counts[0])


def _means(y, codes, nlev):
    return np.bincount(codes, weights=y, minlength=nlev) / np.bincount(codes, minlength=nlev)


def _one_way(y, t):
    n = _equal_counts(t.codes, t.nlev, f"each level of {t.group_name} has rows, but")
    a = t.nlev
    if n < 2:
        raise ModelSpecError("one row per group leaves no within-group degrees of freedom")
    m = _means(y, t.codes, a)
    ssa = n * float(np.sum((m - y.mean()) ** 2))
    sse = float(np.sum((y - m[t.codes]) ** 2))
    rows = [(t.group_name, a - 1, ssa, f"sigma2_e + {n} sigma2_{t.group_name}"),
            ("Residual", a * (n - 1), sse, "sigma2_e")]
    ms = [ssa / (a - 1), sse / (a * (n - 1))]
    return rows, {t.group_name: (ms[0] - ms[1]) / n, "Residual": ms[1]}


def _outer_of(inner, outer) -> np.ndarray:
    """For each level of the inner term, its level of the outer one (must be unique)."""
    pairs = np.unique(np.column_stack([inner.codes, outer.codes]), axis=0)
    if pairs.shape[0] != inner.nlev:
        raise ModelSpecError(f"{inner.group_name} is not nested in {outer.group_name} (a "
                             f"level of it occurs with several levels of {outer.group_name}): "
                             "ANOVA estimators here are for nested (1 | a/b) designs")
    return pairs[np.argsort(pairs[:, 0]), 1]


def _nested(y, inner, outer):
    parent = _outer_of(inner, outer)
    b = _equal_counts(parent, outer.nlev, f"each level of {outer.group_name} has levels of "
                      f"{inner.group_name}, but")
    n = _equal_counts(inner.codes, inner.nlev, f"each level of {inner.group_name} has rows, but")
    a = outer.nlev
    if n < 2:
        raise ModelSpecError(f"one row per level of {inner.group_name} leaves no residual "
                             "degrees of freedom")
    mi, mo = _means(y, inner.codes, inner.nlev), _means(y, outer.codes, a)
    ssa = b * n * float(np.sum((mo - y.mean()) ** 2))
    ssb = n * float(np.sum((mi - mo[parent]) ** 2))
    sse = float(np.sum((y - mi[inner.codes]) ** 2))
    A, B = outer.group_name, inner.group_name
    dfs = [a - 1, a * (b - 1), a * b * (n - 1)]
    ms = [s / d for s, d in zip((ssa, ssb, sse), dfs)]
    rows = [(A, dfs[0], ssa, f"sigma2_e + {n} sigma2_{B} + {b * n} sigma2_{A}"),
            (B, dfs[1], ssb, f"sigma2_e + {n} sigma2_{B}"), ("Residual", dfs[2], sse, "sigma2_e")]
    est = {B: (ms[1] - ms[2]) / n, A: (ms[0] - ms[1]) / (b * n), "Residual": ms[2]}
    return rows, est


def anova_estimators(result) -> AnovaEstimates:
    """ANOVA (method-of-moments) estimators of the variance components of a balanced
    one-way ``y ~ 1 + (1 | g)`` or two-level nested ``y ~ 1 + (1 | a/b)`` LMM fit.

    The mean squares' expected values are linear in the variances (E MSE = sigma2_e,
    E MSA = sigma2_e + n sigma2_g, ...); solving them gives unbiased estimates that are
    negative when a mean square falls below the one beneath it: reported as they are,
    flagged as outside the parameter space, next to the REML estimates (the fit's, or a
    REML refit of an ML fit), which stop at 0.

    Returns
    -------
    AnovaEstimates
        ``table`` (Df, Sum Sq, Mean Sq, Expected mean square) and ``estimates`` (anova,
        reml, outside_parameter_space) indexed by the grouping factors and "Residual".
    """
    _check_anova_design(result)
    f = result.model.frame
    if len(f.terms) == 1:
        rows, est = _one_way(f.y, f.terms[0])
        design = "balanced one-way"
    else:
        inner, outer = sorted(f.terms, key=lambda t: -t.nlev)
        rows, est = _nested(f.y, inner, outer)
        design = "balanced two-level nested"
    table = pd.DataFrame(rows, columns=["source", "Df", "Sum Sq", "Expected mean square"])
    table.insert(3, "Mean Sq", table["Sum Sq"] / table["Df"])
    table = table.set_index("source")
    reml = _reml_variances(result)
    estimates = pd.DataFrame({"anova": pd.Series(est), "reml": pd.Series(reml)})
    estimates = estimates.loc[list(est)]
    estimates["outside_parameter_space"] = estimates["anova"] < 0
    return AnovaEstimates(design, table, estimates)


def _reml_variances(result) -> dict[str, float]:
    fit = _full_fit(result, True)
    vc = fit.varcorr
    return dict(zip(vc["grp"], vc["vcov"]))
