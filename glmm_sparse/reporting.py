"""Reporting: lme4's printed summary and a JSON-ready dict of a fitted model.

Last stage (... -> optimize -> results -> report). ``summary_tables`` reads an immutable
``LmerResult`` or ``GlmerResult`` once into small tables (fit statistics, residual quantiles,
random and fixed effects, correlations, notes); ``summary_text`` and ``result_dict`` only
render them. GLMMs differ in the tables, not in the renderers: a family and link, a title
naming the approximation, z (or t) values with normal p-values, no Residual row for
binomial and Poisson (their varcorr has none).

The text follows ``print(summary(m))`` of lme4 1.1-31 on R 4.2 line by line: R's
``format()`` (common width, ``digits`` significant digits, fixed unless scientific is
narrower), ``printCoefmat`` for the fixed effects (``format.pval`` and significance stars),
``abbreviate()`` for the correlation headers, ``strwrap()`` for long titles and R's matrix
printing (one space between columns, wrapped at 80 characters).
Golden outputs: tests/reference/summaries/ (lmer), tests/reference/glmm/summaries/ (glmer).
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, localcontext

import numpy as np
import pandas as pd

from .ddf import coefficient_table, normalize_ddf
from .results_glmm import GlmerResult

DIGITS = 4  # lme4's print digits: max(3, getOption("digits") - 3)
WIDTH = 80  # getOption("width")
COR_MAX = 12  # getOption("lme4.summary.cor.max")
EPS = 2.220446049250313e-16  # .Machine$double.eps: printCoefmat's eps.Pvalue
OK_CODES = {"SUCCESS", "FTOL_REACHED", "XTOL_REACHED", "STOPVAL_REACHED", "ROUNDOFF_LIMITED"}
SINGULAR_NOTE = "boundary (singular) fit: a variance is estimated as 0 or a correlation as +-1"
SIGNIF_LEGEND = ["---", "Signif. codes:  0 ‘***’ 0.001 ‘**’ 0.01 ‘*’ 0.05 "
                 "‘.’ 0.1 ‘ ’ 1"]  # printCoefmat in a UTF-8 locale
STAR_CUTS = ((0.001, "***"), (0.01, "**"), (0.05, "*"), (0.1, "."), (1.0, " "))  # symnum
LMERTEST_METHODS = {"satterthwaite": "Satterthwaite's", "kenward-roger": "Kenward-Roger's"}
R_FAMILY = {"gamma": "Gamma", "inverse_gaussian": "inverse.gaussian"}  # else the same name


# ---- R's number formatting -----------------------------------------------------------------

def _scientific(x: float, digits: int) -> tuple[int, int, int, bool]:
    """(negative, exponent, significant digits, rounding widens) of x to `digits` digits."""
    if x == 0:
        return 0, 0, 1, False
    r = abs(x)
    kp = math.floor(math.log10(r)) - digits + 1
    with localcontext() as ctx:
        ctx.prec = 60
        scaled = Decimal(r).scaleb(-kp)
        if scaled < 10 ** (digits - 1):
            scaled, kp = scaled * 10, kp - 1
        alpha = int(scaled.to_integral_value(rounding=ROUND_HALF_EVEN))
    nsig = digits
    while nsig > 0 and alpha % 10 == 0:
        alpha //= 10
        nsig -= 1
    if nsig == 0:
        nsig, kp = 1, kp + 1
    kpower = kp + digits - 1
    rgt = min(max(digits - kpower, 0), 22)
    widens = 0 < kpower <= 22 and r < 10.0**kpower - 0.5 / 10.0**rgt
    return int(x < 0), kpower, nsig, widens


def _format_spec(values, digits: int, nsmall: int = 0) -> tuple[int, int, bool]:
    """R's formatReal: common (width, decimals, scientific) for the finite values."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return 0, 0, False
    neg = rgt = mxsl = mxns = 0
    mxl, mnl = -10**6, 10**6
    for v in finite:
        neg_i, kpower, nsig, widens = _scientific(v, digits)
        left = kpower + 1 - int(widens)
        neg = max(neg, neg_i)
        rgt, mxns = max(rgt, nsig - left), max(mxns, nsig)
        mxl, mnl = max(mxl, left), min(mnl, left)
        mxsl = max(mxsl, neg_i + max(left, 1))
    if mxl < 0:
        mxsl = 1 + neg
    width_f = mxsl + rgt + (rgt > 0)
    exp_digits = 2 if (mxl > 100 or mnl <= -99) else 1
    d_e = mxns - 1
    width_e = neg + (d_e > 0) + d_e + 4 + exp_digits
    if width_f <= width_e:
        rgt = max(rgt, nsmall)
        return mxsl + rgt + (rgt > 0), rgt, False
    return width_e, d_e, True


def r_format(values, digits: int = 7, nsmall: int = 0) -> list[str]:
    """R's format() of a numeric vector: common width, right-justified."""
    values = [float(v) + 0.0 for v in values]  # + 0.0 drops the sign of -0, as R does
    w, d, sci = _format_spec(values, digits, nsmall)
    out = []
    for v in values:
        if math.isnan(v):
            s = "NaN"
        elif math.isinf(v):
            s = "Inf" if v > 0 else "-Inf"
        else:
            s = f"{v:.{d}e}" if sci else f"{v:.{d}f}"
        out.append(s)
    width = max([w] + [len(s) for s in out])
    return [s.rjust(width) for s in out]


def r_round(x, digits: float):
    """R 4.2's round(): a fractional `digits` is rounded to the nearest integer first."""
    return np.round(np.asarray(x, dtype=float), int(math.floor(digits + 0.5)))


def zapsmall(x: np.ndarray, digits: int) -> np.ndarray:
    """R 4.2's zapsmall (round to digits - log10(max |x|) places)."""
    mx = float(np.max(np.abs(x))) if len(x) else 0.0
    return r_round(x, max(0.0, digits - math.log10(mx)) if mx > 0 else digits)


def format_pval(pv, digits: int) -> list[str]:
    """R's format.pval(pv, digits, eps = .Machine$double.eps) for finite p-values."""
    pv = [float(p) for p in pv]
    out = [""] * len(pv)
    large = [i for i, p in enumerate(pv) if not p < EPS]
    expo = {i: math.floor(math.log10(pv[i])) if pv[i] > 0 else -50 for i in large}
    fixp = [i for i in large if expo[i] >= -3 or (expo[i] == -4 and digits > 1)]
    for group in (fixp, [i for i in large if i not in fixp]):  # each formatted on its own
        for i, s in zip(group, r_format([pv[i] for i in group], digits) if group else []):
            out[i] = s
    small = [i for i, p in enumerate(pv) if p < EPS]
    if small:
        d = max(1, digits - 2)
        if large:
            nc = max(len(out[i]) for i in large)
            if d > 1 and d + 6 > nc:
                d = max(1, nc - 7)
            sep = "" if d == 1 and nc <= 6 else " "
        else:
            sep = "" if d == 1 else " "
        for i in small:
            out[i] = "<" + sep + r_format([EPS], d)[0]
    return out


def signif_stars(pv) -> list[str]:
    """symnum's stars for p-values (intervals closed on the right), format()-padded."""
    stars = [next((s for cut, s in STAR_CUTS if p <= cut), "") if math.isfinite(p) else ""
             for p in map(float, pv)]
    width = max((len(s) for s in stars), default=0)
    return [s.ljust(width) for s in stars]


# ---- R's abbreviate() and printing layouts --------------------------------------------------

_DROP_RULES = (  # which character to drop, in R's order: vowels, lower case, then anything
    lambda b, i: b[i] in "aeiou" and _last_char(b, i),
    lambda b, i: b[i] in "aeiou" and not b[i - 1].isspace(),
    lambda b, i: b[i].islower() and _last_char(b, i),
    lambda b, i: b[i].islower() and not b[i - 1].isspace(),
    lambda b, i: not b[i - 1].isspace() and not b[i].isspace(),
)


def _last_char(b: list[str], i: int) -> bool:
    return not b[i - 1].isspace() and (i + 1 == len(b) or b[i + 1].isspace())


def _abbreviate_one(name: str, minlength: int) -> str:
    """One name shortened from the end of its words, the first character always kept."""
    b = list(name.lstrip())
    nspace = 0
    if len(b) >= minlength:
        trailing = True
        for i in range(len(b) - 1, 0, -1):
            if b[i].isspace():
                if trailing:
                    del b[i:]
                else:
                    nspace += 1
            else:
                trailing = False
            if len(b) - nspace <= minlength:
                break
        for rule in _DROP_RULES:
            if len(b) - nspace <= minlength:
                break
            for i in range(len(b) - 1, 0, -1):
                if i < len(b) and rule(b, i):
                    del b[i]
                if len(b) - nspace <= minlength:
                    break
    if len(b) > minlength:
        b = b[:1] + [c for c in b[1:] if not c.isspace()]
    return "".join(b)


def abbreviate(names, minlength: int) -> list[str]:
    """R's abbreviate(): lengthen the clashing abbreviations until all are unique."""
    unique = list(dict.fromkeys(n.strip() for n in names))
    short = [_abbreviate_one(n, minlength) for n in unique]
    while True:
        seen: set[str] = set()
        clash = {s for s in short if s in seen or seen.add(s)}
        if not clash:
            lookup = dict(zip(unique, short))
            return [lookup[n.strip()] for n in names]
        minlength += 1
        short = [_abbreviate_one(n, minlength) if s in clash else s
                 for n, s in zip(unique, short)]


def matrix_lines(rownames, colnames, cells, *, right: bool) -> list[str]:
    """R's print of a character matrix (quote = FALSE): blocks of columns within 80 chars."""
    rw = max((len(r) for r in rownames), default=0)
    w = [max([len(c)] + [len(row[j]) for row in cells]) for j, c in enumerate(colnames)]
    pad = (lambda s, n: s.rjust(n)) if right else (lambda s, n: s.ljust(n))
    lines, j0 = [], 0
    while j0 < len(colnames):
        j1, total = j0 + 1, rw + w[j0] + 1
        while j1 < len(colnames) and total + w[j1] + 1 < WIDTH:
            total, j1 = total + w[j1] + 1, j1 + 1
        cols = range(j0, j1)
        lines.append(" " * rw + "".join(" " + pad(colnames[j], w[j]) for j in cols))
        lines += [r.ljust(rw) + "".join(" " + pad(row[j], w[j]) for j in cols)
                  for r, row in zip(rownames, cells)]
        j0 = j1
    return lines


def named_vector_lines(names, strings) -> list[str]:
    """R's print of a named vector: names over values, one common right-justified width."""
    w = max(len(s) for s in list(names) + list(strings))
    per_line = max(1, WIDTH // (w + 1))
    lines = []
    for k in range(0, len(names), per_line):
        lines.append("".join(n.rjust(w) + " " for n in names[k:k + per_line]))
        lines.append("".join(s.rjust(w) + " " for s in strings[k:k + per_line]))
    return lines


def fill_lines(items, sep: str = " ") -> list[str]:
    """R's cat(..., sep = sep, fill = TRUE): items and separators, a new line before an item
    that would pass the width (the separator stays at the end of the broken line)."""
    lines, cur, width = [], "", 0
    for k, item in enumerate(items):
        if k > 0:
            cur += sep
            if width + len(item) + len(sep) > WIDTH:
                lines.append(cur)
                cur, width = "", 0
        cur += item
        width += len(item) + len(sep)
    return lines + [cur]


def strwrap(text: str, width: int, exdent: int = 0) -> list[str]:
    """R's strwrap() of one paragraph: greedy words, each line shorter than `width`
    (runs of spaces become one space, which R keeps only after a sentence end)."""
    lines: list[list[str]] = [[]]
    length, limit = 0, width - 1
    for word in text.split():
        if lines[-1] and length + len(word) > limit:
            lines.append([])
            length, limit = 0, width - exdent - 1
        lines[-1].append(word)
        length += len(word) + 1
    return [" " * (exdent if k else 0) + " ".join(ws) for k, ws in enumerate(lines)]


def title_lines(title: str, model_class: str) -> list[str]:
    """lme4's .prt.methTit: one line, or the title wrapped with the class after it."""
    if len(title) + 5 + len(model_class) > WIDTH:
        return fill_lines(strwrap(title, WIDTH - 2, exdent=2) + [" [", model_class, "]"], "")
    return [f"{title} ['{model_class}']"]


# ---- the intermediate tables ----------------------------------------------------------------

@dataclass(frozen=True)
class SummaryTables:
    """Everything a report shows, as plain tables; renderers only format these."""

    title: str  # lme4's methTitle, e.g. "Linear mixed model fit by REML"
    model_class: str  # "lmerMod" or "glmerMod"
    family: tuple[str, str] | None  # (family, link) of a GLMM, our names
    reml: bool
    call: tuple[tuple[str, str], ...]  # ("Formula:", ...), ("   Data:", ...), ...
    fit: pd.Series
    residual_quantiles: pd.Series | None  # None: the fit kept no rows (streamed)
    random_effects: pd.DataFrame
    ngrps: dict
    nobs: int
    n_dropped: int
    fixed_effects: pd.DataFrame
    fixed_correlation: pd.DataFrame
    notes: tuple[str, ...]
    ddf: str = "none"  # the fixed-effects tests: ddf.DDF_CHOICES


def method_title(result, ddf: str = "none") -> tuple[str, str]:
    """lme4's methTitle and class: the criterion, for GLMMs the integral's approximation;
    with Satterthwaite or Kenward-Roger t tests, lmerTest's title and class."""
    if not isinstance(result, GlmerResult):
        method = "REML" if result.reml else "maximum likelihood "  # lme4 prints 2 spaces
        title = f"Linear mixed model fit by {method}"
        if ddf in LMERTEST_METHODS:
            return f"{title}. t-tests use {LMERTEST_METHODS[ddf]} method", "lmerModLmerTest"
        return title, "lmerMod"
    approx = ("(Laplace Approximation)" if result.nagq == 1 else
              f"(Adaptive Gauss-Hermite Quadrature, nAGQ = {result.nagq})")  # also nAGQ = 0
    return f"Generalized linear mixed model fit by maximum likelihood {approx}", "glmerMod"


def fit_statistics(result) -> pd.Series:
    """Criterion and information criteria (lme4's AICtab, plus what result_dict needs).

    "deviance" is -2 logLik as in lme4's AICtab (GLMMs: the full Laplace / AGQ
    log-likelihood); a GLMM's conditional deviance, lme4's deviance(m), is
    "conditional_deviance"."""
    stats = {
        "objective": float(result.objective), "loglik": float(result.loglik),
        "aic": float(result.aic), "bic": float(result.bic),
        "deviance": float(result.objective) if not result.reml else np.nan,
        "df_resid": int(result.df_resid), "npar": int(result.npar), "sigma": float(result.sigma),
    }
    if isinstance(result, GlmerResult):
        stats["conditional_deviance"] = float(result.deviance)
    return pd.Series(stats, dtype=object)


def residual_quantiles(result) -> pd.Series | None:
    """Quantiles (R type 7) of the scaled residuals; None when the fit kept no per-row
    values (a fit streamed from Parquet, streaming.py)."""
    if result.scaled_residuals is None:
        return None
    r = np.asarray(result.scaled_residuals, dtype=float)
    q = np.quantile(r[~np.isnan(r)], [0.0, 0.25, 0.5, 0.75, 1.0])
    return pd.Series(q, index=["Min", "1Q", "Median", "3Q", "Max"])


def random_effects_rows(result) -> pd.DataFrame:
    """One row per variance: group, name, variance, std. dev., block, correlations with the
    block's earlier columns (R's lower triangle)."""
    vc = result.varcorr
    rows = []
    for block, (grp, part) in enumerate(vc.groupby("grp", sort=False)):
        var = part[part["var2"].isna()]
        names = [("" if pd.isna(v) else v) for v in var["var1"]]
        cov = part[part["var2"].notna()]
        corr = {(a, b): c for a, b, c in zip(cov["var1"], cov["var2"], cov["sdcor"])}
        for i, (name, v, sd) in enumerate(zip(names, var["vcov"], var["sdcor"])):
            row_corr = tuple(corr.get((names[j], name), corr.get((name, names[j]), np.nan))
                             for j in range(i))
            rows.append({"group": grp if i == 0 else "", "name": name, "variance": float(v),
                         "std_dev": float(sd), "block": block, "corr": row_corr})
    return pd.DataFrame(rows, columns=["group", "name", "variance", "std_dev", "block", "corr"])


def fixed_effects_table(result, ddf: str | None = None) -> pd.DataFrame:
    """The coefficient table the summary prints (ddf.coefficient_table).

    LMMs: lmerTest's Estimate, Std. Error, df, t value, Pr(>|t|) (Satterthwaite by default,
    Kenward-Roger with adjusted SEs), or lme4's Estimate, Std. Error, t value (ddf="none").
    GLMMs (lme4's summary.merMod): "z value", or "t value" when a scale is estimated
    (Gamma, inverse Gaussian), and the normal p-value Pr(>|z|) = 2 pnorm(-|z|) in both cases
    (ddf "normal", the default); ddf="none" leaves the p-value out, for GLMMs as for LMMs.
    """
    return coefficient_table(result, ddf)


def fixed_correlation(result) -> pd.DataFrame:
    """Correlation matrix of the fixed-effect estimates."""
    v = result.vcov.to_numpy()
    sd = np.sqrt(np.diag(v))
    return pd.DataFrame(v / np.outer(sd, sd), index=result.vcov.index, columns=result.vcov.columns)


def fit_notes(result) -> tuple[str, ...]:
    """lme4's closing lines: dropped columns, the optimizer's messages, a singular fit; and
    ours: a residual SD that was fixed (lmer's sigma=), not estimated."""
    notes = []
    fixed_sigma = None if result.model is None else result.model.options.get("sigma")
    if fixed_sigma is not None:
        notes.append(f"Residual standard deviation fixed at {fixed_sigma:g} (not estimated)")
    if result.dropped_columns:
        k = len(result.dropped_columns)
        notes += ["fit warnings:", "fixed-effect model matrix is rank deficient so dropping "
                  f"{k} column{'s' if k > 1 else ''} / coefficient{'s' if k > 1 else ''}"]
    opt = result.optimizer
    messages = list(opt.messages) if opt is not None else []
    if messages or result.is_singular or (opt is not None and not opt.converged):
        ok = " (OK)" if opt is None or opt.return_code in OK_CODES else ""
        code = "" if opt is None else f"({opt.method}) convergence code: {opt.return_code}{ok}"
        notes.append(f"optimizer {code}".rstrip())
        notes += messages + ([SINGULAR_NOTE] if result.is_singular else []) + [""]
    return tuple(notes)


def call_lines(result) -> tuple[tuple[str, str], ...]:
    """lme4's .prt.call: formula, then the data, weights and offset names when known."""
    named = (("   Data:", result.data_name), ("Weights:", result.weights_name),
             (" Offset:", result.offset_name))
    return (("Formula:", result.formula),) + tuple((k, str(v)) for k, v in named if v is not None)


def summary_tables(result, ddf: str | None = None) -> SummaryTables:
    """The intermediate tables behind summary_text and result_dict; ``ddf`` chooses the
    fixed-effects tests (ddf.normalize_ddf: Satterthwaite for LMMs by default)."""
    glmm = isinstance(result, GlmerResult)
    method = normalize_ddf(ddf, glmm=glmm)
    title, model_class = method_title(result, method)
    return SummaryTables(
        title=title, model_class=model_class,
        family=(result.family, result.link) if glmm else None, reml=bool(result.reml),
        call=call_lines(result),
        fit=fit_statistics(result), residual_quantiles=residual_quantiles(result),
        random_effects=random_effects_rows(result), ngrps=dict(result.ngrps),
        nobs=int(result.nobs), n_dropped=int(result.n_dropped),
        fixed_effects=fixed_effects_table(result, method),
        fixed_correlation=fixed_correlation(result), notes=fit_notes(result), ddf=method)


# ---- text renderer --------------------------------------------------------------------------

def _criterion_lines(t: SummaryTables) -> list[str]:
    """REML criterion, or lme4's AICtab printed as a named vector (1 decimal)."""
    if t.reml:
        return [f"REML criterion at convergence: {r_format([round(t.fit['objective'], 1)])[0]}"]
    keys = ("aic", "bic", "loglik", "deviance", "df_resid")
    vals = [round(float(t.fit[k]), 1) for k in keys]
    strings = r_format(vals)
    strings[-1] = r_format(vals[-1:])[0]  # df.resid is formatted on its own
    return named_vector_lines(["AIC", "BIC", "logLik", "deviance", "df.resid"], strings)


def _residual_lines(t: SummaryTables) -> list[str]:
    if t.residual_quantiles is None:
        return ["Scaled residuals: not kept (the rows were streamed; fit with streaming=False "
                "to keep them)"]
    q = zapsmall(t.residual_quantiles.to_numpy(), DIGITS + 1)
    return ["Scaled residuals: "] + named_vector_lines(list(t.residual_quantiles.index),
                                                       r_format(q, DIGITS))


def _corr_cells(re: pd.DataFrame) -> list[list[str]]:
    """Per block: lower-triangle correlations to 2 decimals, in columns "Corr", "", ..."""
    maxlen = int(re.groupby("block").size().max())
    cells = []
    for _, part in re.groupby("block", sort=False):
        k = len(part)
        full = np.eye(k)
        for i, c in enumerate(part["corr"]):
            full[i, :i] = full[:i, i] = c
        strings = np.array(r_format(r_round(full.ravel(), 2), 7, nsmall=2)).reshape(k, k)
        for i in range(k):
            row = [strings[i, j] if j < i else "" for j in range(maxlen)]
            cells.append(row[:maxlen - 1])
    return cells


def _random_effects_lines(t: SummaryTables) -> list[str]:
    re = t.random_effects
    cols = ["Groups", "Name", "Variance", "Std.Dev."]
    cells = [list(r) for r in zip(re["group"], re["name"], r_format(re["variance"], DIGITS),
                                  r_format(re["std_dev"], DIGITS))]
    if re.groupby("block").size().max() > 1:
        corr = _corr_cells(re)
        cols += ["Corr"] + [""] * (len(corr[0]) - 1)
        cells = [a + b for a, b in zip(cells, corr)]
    return ["Random effects:"] + matrix_lines([""] * len(cells), cols, cells, right=False)


def _groups_lines(t: SummaryTables) -> list[str]:
    groups = "; ".join(f"{g}, {n}" for g, n in t.ngrps.items())
    lines = fill_lines([f"Number of obs: {t.nobs}, groups: ", groups])
    if t.n_dropped:  # lme4's summary does not say; R's naprint() wording
        lines.append(f"({t.n_dropped} observation{'s' if t.n_dropped > 1 else ''} deleted "
                     "due to missingness)")
    return lines


def _coef_strings(fe: pd.DataFrame) -> tuple[list[str], list[list[str]], bool]:
    """printCoefmat: the columns before the test statistic (estimates, SEs and lmerTest's
    df) rounded and formatted together; t / z values to 3 places; format.pval'd p-values
    and a star column when a p-value is below 0.1. Returns the column names, the cells and
    whether the stars (and so their legend) are shown."""
    columns = list(fe.columns)
    has_p = columns[-1].startswith("Pr(")
    k = len(columns) - has_p - 1  # printCoefmat's cs.ind = 1:k, tst.ind = k + 1
    cs = fe.iloc[:, :k].to_numpy(dtype=float)
    acs = np.abs(cs[np.isfinite(cs) & (cs != 0)])
    digmin = 1 + (np.floor(np.log10(acs.min())) if acs.size else 0)
    cs_str = np.array(r_format(r_round(cs.ravel(), max(1, DIGITS - digmin)), DIGITS))
    cs_str = cs_str.reshape(cs.shape)
    zero_shown = [(x != 0) and float(s) == 0 for x, s in zip(cs.ravel(), cs_str.ravel())]
    if any(zero_shown):  # a nonzero shown as 0: R reformats those alone with digits - 1
        flat = cs_str.ravel()
        idx = [i for i, z in enumerate(zero_shown) if z]
        flat[idx] = r_format(cs.ravel()[idx], max(1, DIGITS - 1))
        cs_str = flat.reshape(cs.shape)
    dig_tst = max(1, min(5, DIGITS - 1))
    t_str = r_format(r_round(fe.iloc[:, k].to_numpy(dtype=float), dig_tst), DIGITS)
    cells = [list(a) + [c] for a, c in zip(cs_str, t_str)]
    stars = False
    if has_p:
        pv = fe.iloc[:, -1].to_numpy(dtype=float)
        ok = np.isfinite(pv)
        p_str = np.full(len(pv), "NaN", dtype=object)
        p_str[ok] = format_pval(pv[ok], dig_tst)
        stars = bool(np.any(pv[ok] < 0.1))
        for row, ps, st in zip(cells, p_str, signif_stars(pv)):
            row += [ps, st] if stars else [ps]
        columns += [""] if stars else []
    return columns, cells, stars


def _fixed_effects_lines(t: SummaryTables) -> list[str]:
    fe = t.fixed_effects
    lines = ["", "Fixed effects:"]
    columns, cells, stars = _coef_strings(fe)
    lines += matrix_lines(list(fe.index), columns, cells, right=True)
    lines += SIGNIF_LEGEND if stars else []
    p = len(fe)
    if p > COR_MAX:
        return lines + ["", f"Correlation matrix not shown by default, as p = {p} > {COR_MAX}."]
    if p > 1:
        names = list(fe.index)
        strings = np.array(r_format(r_round(t.fixed_correlation.to_numpy().ravel(), 3),
                                    7, nsmall=3)).reshape(p, p)
        cells = [[strings[i, j] if j < i else "" for j in range(p - 1)] for i in range(1, p)]
        lines += ["", "Correlation of Fixed Effects:"]
        lines += matrix_lines(abbreviate(names, 11)[1:], abbreviate(names, 6)[:-1], cells,
                              right=False)
    return lines


def render_text(t: SummaryTables) -> str:
    """The summary tables laid out as lme4's print(summary(m))."""
    lines = title_lines(t.title, t.model_class)
    if t.family is not None:
        family, link = t.family
        lines += fill_lines([" Family:", R_FAMILY.get(family, family), f" ( {link} )"])
    for label, value in t.call:
        lines += fill_lines([label, value])
    lines.append("")
    lines += _criterion_lines(t) + [""]
    lines += _residual_lines(t) + [""]
    lines += _random_effects_lines(t) + _groups_lines(t)
    if len(t.fixed_effects):
        lines += _fixed_effects_lines(t)
    lines += list(t.notes)
    return "\n".join(lines) + "\n"


def summary_text(result, ddf: str | None = None) -> str:
    """print(summary(m)) for a fitted LmerResult or GlmerResult: lmerTest's layout with
    df and p-values (ddf "satterthwaite", the LMM default, or "kenward-roger"), lme4's
    exact layout with ddf="none", glmer's for GLMMs (ddf "normal" or "none")."""
    return render_text(summary_tables(result, ddf))


# ---- JSON renderer --------------------------------------------------------------------------

def _plain(x):
    """Python scalars and containers only; NaN and infinities become None."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (np.ndarray, pd.Series)):
        x = x.tolist()
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if x is None or isinstance(x, str):
        return x
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    return None if pd.isna(x) else str(x)


def _rows_or_none(series: pd.Series | None):
    """A per-row Series as an array; None for a fit that kept no rows (streamed)."""
    return None if series is None else series.to_numpy()


def _records(df: pd.DataFrame) -> list[dict]:
    return [_plain(dict(zip(df.columns, row))) for row in df.itertuples(index=False)]


def _optimizer_dict(opt) -> dict | None:
    if opt is None:
        return None
    return _plain({"method": opt.method, "n_evals": opt.n_evals,
                   "n_total_evals": opt.n_total_evals, "seconds": opt.seconds,
                   "grad_norm": opt.grad_norm, "scaled_gradient": opt.scaled_gradient,
                   "return_code": opt.return_code, "converged": opt.converged,
                   "messages": list(opt.messages)})


def _glmm_fields(result, t: SummaryTables) -> dict:
    """A GLMM's family, link, nAGQ, conditional deviance (lme4's deviance(m); "objective"
    is -2 logLik), coef(summary(m)) with z or t values and p-values, and stage 1's run."""
    family, link = t.family
    fe = t.fixed_effects
    return {"family": family, "link": link, "nagq": int(result.nagq),
            "deviance": t.fit["conditional_deviance"],
            "fixed_effects": [{"term": name, **row} for name, row in zip(fe.index, _records(fe))],
            "stage1": _optimizer_dict(result.stage1)}


def result_dict(result, ddf: str | None = None) -> dict:
    """All results as str, float, int, bool, None, list and dict (json.dumps-ready); the
    fixed effects' tests ("fixed_effects": df and p-values) follow ``ddf``, named in
    "ddf"."""
    t = summary_tables(result, ddf)
    fe = t.fixed_effects
    fit = {k: t.fit[k] for k in ("objective", "loglik", "aic", "bic", "npar", "df_resid",
                                 "sigma")}
    out = {"formula": result.formula, "reml": result.reml, "data_name": result.data_name,
           "nobs": t.nobs, "n_dropped": t.n_dropped, **fit,
           "theta": result.theta, "theta_names": list(result.theta_names),
           "fixef": dict(zip(fe.index, fe["Estimate"])),
           "fixef_se": dict(zip(fe.index, fe["Std. Error"])),
           "vcov": {"names": list(result.vcov.index), "values": result.vcov.to_numpy()},
           "varcorr": _records(result.varcorr), "ranef": _records(result.ranef),
           "ngrps": t.ngrps, "is_singular": result.is_singular, "converged": result.converged,
           "optimizer": _optimizer_dict(result.optimizer),
           "dropped_columns": list(result.dropped_columns),
           "fitted": _rows_or_none(result.fitted), "residuals": _rows_or_none(result.residuals),
           "ddf": t.ddf,
           "fixed_effects": [{"term": name, **row} for name, row in zip(fe.index, _records(fe))]}
    if t.family is not None:
        out.update(_glmm_fields(result, t))
    return _plain(out)


# ---- HTML renderer --------------------------------------------------------------------------

def _html_table(df: pd.DataFrame, *, index: bool = True) -> str:
    """A small HTML table (names escaped; numbers to 6 significant digits)."""
    def cell(v) -> str:
        if isinstance(v, (float, np.floating)):
            return "" if not math.isfinite(v) else f"{v:.6g}"
        return html.escape("" if v is None or (not isinstance(v, str) and pd.isna(v)) else str(v))

    head = ([""] if index else []) + [html.escape(str(c)) for c in df.columns]
    rows = ["<tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for name, row in zip(df.index, df.itertuples(index=False)):
        cells = ([f"<th>{html.escape(str(name))}</th>"] if index else []) + \
            [f"<td>{cell(v)}</td>" for v in row]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return "<table>" + "".join(rows) + "</table>"


def render_html(t: SummaryTables) -> str:
    """The summary tables as HTML (a notebook's rich display of a result)."""
    parts = [f"<p><b>{html.escape(t.title)}</b> [{html.escape(t.model_class)}]</p>"]
    if t.family is not None:
        parts.append(f"<p>Family: {html.escape(t.family[0])} ({html.escape(t.family[1])})</p>")
    parts += [f"<p>{html.escape(label.strip())} {html.escape(value)}</p>" for label, value in t.call]
    keys = ["objective", "loglik", "aic", "bic", "df_resid"]
    fit = pd.DataFrame([[float(t.fit[k]) for k in keys]],
                       columns=["REML criterion" if t.reml else "deviance", "logLik", "AIC",
                                "BIC", "df.resid"])
    parts.append(_html_table(fit, index=False))
    re = t.random_effects[["group", "name", "variance", "std_dev"]].rename(
        columns={"group": "Groups", "name": "Name", "variance": "Variance",
                 "std_dev": "Std.Dev."})
    parts += ["<p>Random effects:</p>", _html_table(re, index=False)]
    groups = "; ".join(f"{html.escape(str(g))}, {n}" for g, n in t.ngrps.items())
    parts.append(f"<p>Number of obs: {t.nobs}, groups: {groups}</p>")
    if len(t.fixed_effects):
        parts += ["<p>Fixed effects:</p>", _html_table(t.fixed_effects)]
    notes = [n for n in t.notes if n]
    if notes:
        parts.append("<p>" + "<br>".join(html.escape(n) for n in notes) + "</p>")
    return "<div class=\"glmm-sparse-summary\">" + "".join(parts) + "</div>"
