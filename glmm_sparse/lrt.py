"""Likelihood-ratio tests of nested mixed models: lme4's ``anova(m0, m1, ...)``.

After the results stage (... -> results -> inference). REML fits are refitted by
maximum likelihood first (lme4 1.1's ``anova.merMod`` refits every REML model when
``refit=TRUE``, whether or not the fixed effects differ). When two neighbouring models
differ only in random-effect variance parameters, the null value lies on the boundary of
the parameter space and the chi-square reference distribution is wrong; the table then
also carries the chi-bar-square p-value (Self & Liang 1987, Stram & Lee 1994).

Also here: refits of a model without some of its random-effects terms, on the fit's own
rows (``fit_without_terms``), and the log-likelihood of the model with no random effect
left (the linear model by least squares, or the GLM by IRLS: ``no_random_loglik``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from scipy import stats

from .context import require_model
from .errors import ModelSpecError, NumericalError

PVALUE = "Pr(>Chisq)"
PVALUE_CHIBAR = "Pr(>Chisq) chi-bar"


# ------------------------------------------------------------------ chi-bar-square


def chibar_pvalue(statistic: float, df: int) -> float:
    """P-value of a 50:50 mixture of chi2_(df - 1) and chi2_df at ``statistic``.

    chi2_0 is a point mass at 0: P(chi2_0 >= x) is 1 for x <= 0 and 0 otherwise. For one
    variance (df = 1) this is Self & Liang's (1987) 0.5 chi2_0 + 0.5 chi2_1; for a random
    effect added to a term with k (df = k + 1 new parameters: its variance and k
    covariances), Stram & Lee's (1994) 0.5 chi2_k + 0.5 chi2_(k+1).
    """
    if df < 1:
        raise ValueError(f"a chi-bar-square mixture needs df >= 1, got {df}")
    x = max(float(statistic), 0.0)
    upper = stats.chi2.sf(x, df)
    lower = stats.chi2.sf(x, df - 1) if df > 1 else float(x <= 0.0)
    return 0.5 * lower + 0.5 * upper


# ------------------------------------------------------------- how models differ


def _same_array(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and bool(np.array_equal(a, b))


def _same_term(t, s) -> bool:
    """The same random-effects term on the same rows: factor, levels, columns and values."""
    return (t.group_name == s.group_name and t.cnames == s.cnames and t.levels == s.levels
            and _same_array(t.codes, s.codes) and _same_array(t.X, s.X))


def _extends(small, big) -> bool:
    """big is small with one more column (same factor, small's columns first or not)."""
    if big.group_name != small.group_name or big.k != small.k + 1:
        return False
    if big.levels != small.levels or not _same_array(big.codes, small.codes):
        return False
    if not set(small.cnames) <= set(big.cnames):
        return False
    cols = [big.cnames.index(c) for c in small.cnames]
    return _same_array(big.X[:, cols], small.X)


def same_fixed_part(f0, f1) -> bool:
    """Same response, fixed-effects columns, weights and offset (frames of two fits)."""
    return (f0.xnames == f1.xnames and _same_array(f0.X, f1.X) and _same_array(f0.y, f1.y)
            and _same_array(f0.weights, f1.weights) and _same_array(f0.offset, f1.offset))


def boundary_df(m0, m1) -> tuple[int | None, str]:
    """The df of the chi-bar-square mixture when m1 adds variance parameters to m0, and why.

    None when the models are not related that way (then the plain chi-square applies, or
    no simple 50:50 mixture does: the reason says which).
    """
    f0, f1 = m0.model.frame, m1.model.frame
    if not same_fixed_part(f0, f1):
        return None, "the models differ in their fixed effects (or response, weights, offset)"
    rest = list(range(len(f1.terms)))
    unmatched = []
    for i, t in enumerate(f0.terms):
        hit = next((j for j in rest if _same_term(t, f1.terms[j])), None)
        if hit is None:
            unmatched.append(i)
        else:
            rest.remove(hit)
    labels0, labels1 = term_labels(m0.model), term_labels(m1.model)
    added = f1.terms[rest[0]] if len(rest) == 1 else None
    if not unmatched and added is not None and added.k == 1:
        return 1, (f"the larger model adds one variance ({labels1[rest[0]]}); under the "
                   "null it is 0, on the boundary: 0.5 chi2_0 + 0.5 chi2_1 (Self & Liang 1987)")
    if len(unmatched) == 1 and added is not None and _extends(f0.terms[unmatched[0]], added):
        k = f0.terms[unmatched[0]].k
        return k + 1, (f"the larger model adds one random effect to {labels0[unmatched[0]]} "
                       f"(its variance, on the boundary under the null, and {k} "
                       f"covariance(s)): 0.5 chi2_{k} + 0.5 chi2_{k + 1} (Stram & Lee 1994)")
    if not unmatched and added is not None:
        return None, (f"the larger model adds a {added.k} x {added.k} covariance matrix "
                      f"({labels1[rest[0]]}) whose null value 0 is a corner of the "
                      "parameter space: its limiting law is a chi-bar-square with weights "
                      "that are not 50:50; the chi-square p-value is conservative")
    return None, ("the random-effects structures do not differ by one variance or one "
                  "random effect added to a term, so no 50:50 boundary mixture is identified")


# ------------------------------------------------------------ random-term labels

_NAME = re.compile(r"[A-Za-z.][\w.]*")


def _quoted(name: str) -> str:
    """A variable name as a formula needs it: backquoted unless it is a plain name."""
    return name if _NAME.fullmatch(name) else f"`{name}`"


def parsed_term_index(parsed, frame_terms) -> list[int]:
    """For each frame term, the index of its parsed RandomTerm (``parsed.random``).

    The frame sorts the parsed terms stably by number of levels, so the terms of one
    grouping factor keep their written order: match them in order per factor.
    """
    unused = list(range(len(parsed.random)))
    match = []
    for t in frame_terms:
        j = next((j for j in unused if parsed.random[j].group_name == t.group_name), None)
        if j is None:
            raise ModelSpecError(f"the model's term for {t.group_name!r} has no random term in "
                                 "its parsed formula (internal inconsistency: please report)")
        unused.remove(j)
        match.append(j)
    return match


def term_text(spec) -> str:
    """A parsed RandomTerm as a formula writes it: "(1 + k | g)", "(0 + x | g)"."""
    return f"({spec.lhs} | {':'.join(_quoted(g) for g in spec.group)})"


def _label_from_columns(t) -> str:
    """A term's label from its columns (fits without a parsed formula only)."""
    cols = [c for c in t.cnames if c != "(Intercept)"]
    lhs = " + ".join((["1"] if "(Intercept)" in t.cnames else ["0"]) + cols)
    return f"({lhs} | {t.group_name})"


def term_labels(model) -> tuple[str, ...]:
    """The formula's writing of each random-effects term of a fit's model context, in the
    order of ``model.frame.terms``: "(1 + Days | Subject)", and for ``(x || g)`` the two
    terms "(1 | g)" and "(0 + x | g)". Read from the parsed formula, so that factors and
    transformed covariates stay as written ("(1 + k | g)", not the column "(1 + klo | g)")
    and the labels are valid formula terms."""
    terms = model.frame.terms
    parsed = model.parsed
    if parsed is None or len(parsed.random) != len(terms):
        return tuple(_label_from_columns(t) for t in terms)
    return tuple(term_text(parsed.random[j]) for j in parsed_term_index(parsed, terms))


# ------------------------------------------------------------------------ checks


def _check_models(models) -> None:
    from .results import LmerResult
    from .results_glmm import GlmerResult

    for i, m in enumerate(models):
        if not isinstance(m, LmerResult):
            raise TypeError(f"anova() compares fits from lmer / glmer; argument {i} is a "
                            f"{type(m).__name__}")
        require_model(m, f"anova() (model {i})")
    kinds = {isinstance(m, GlmerResult) for m in models}
    if len(kinds) > 1:
        raise ModelSpecError("anova() cannot compare lmer fits with glmer fits: their "
                             "likelihoods are of different models of the response")
    families = {(m.family, m.link) for m in models} if kinds == {True} else set()
    if len(families) > 1:
        raise ModelSpecError(f"anova() compares fits of one family and link; got "
                             f"{sorted(families)}")
    nobs = [m.nobs for m in models]
    if len(set(nobs)) > 1:
        raise ModelSpecError(f"models were not all fitted to the same number of rows "
                             f"({nobs}): refit them on the same rows (drop rows with missing "
                             "values in any model's columns first)")
    y0 = models[0].model.frame
    for i, m in enumerate(models[1:], start=1):
        f = m.model.frame
        if not (_same_array(f.y, y0.y) and _same_array(f.weights, y0.weights)):
            raise ModelSpecError(f"model {i} was fitted to a different response (or prior "
                                 "weights) than model 0: likelihood-ratio tests compare "
                                 "models of the same data")


def _ml_fits(models, refit: bool):
    """The fits on the likelihood scale the table compares: REML fits refitted by ML."""
    from .refit import refit_ml

    reml = [bool(m.reml) for m in models]
    if refit:
        return [refit_ml(m) if r else m for m, r in zip(models, reml)], any(reml)
    if any(reml) and not all(reml):
        raise ModelSpecError("some models were fitted by REML and some by ML: their "
                             "criteria are not comparable; use refit=True")
    if all(reml) and len({m.model.frame.xnames for m in models}) > 1:
        raise ModelSpecError("REML criteria of models with different fixed effects are "
                             "not comparable (each integrates over its own fixed effects); "
                             "use refit=True to compare ML fits")
    return list(models), False


# --------------------------------------------------------------------- the table


class AnovaTable(pd.DataFrame):
    """lme4's anova table; printing adds the heading (models) and the note in ``attrs``."""

    @property
    def _constructor(self):
        return pd.DataFrame  # slices are plain DataFrames (they keep attrs)

    def __repr__(self) -> str:
        text = pd.DataFrame(self).to_string()
        head = "\n".join(self.attrs.get("heading", ()))
        note = self.attrs.get("note", "")
        return "\n".join(s for s in (head, text, note) if s)

    __str__ = __repr__


def _names(models, names) -> list[str]:
    if names is not None:
        names = [str(n) for n in names]
        if len(names) != len(models) or len(set(names)) != len(names):
            raise ValueError(f"names must be {len(models)} distinct labels, got {names}")
        return names
    forms = [m.formula for m in models]
    return forms if len(set(forms)) == len(forms) else [f"m{i}" for i in range(len(models))]


def _lrt_columns(fits) -> dict:
    ll = np.array([m.loglik for m in fits])
    npar = np.array([m.npar for m in fits])
    chisq = np.r_[np.nan, 2.0 * np.maximum(0.0, np.diff(ll))]
    df = np.r_[np.nan, np.diff(npar)].astype(float)
    p = np.full(len(fits), np.nan)
    use = np.isfinite(df) & (df != 0)
    p[use] = stats.chi2.sf(chisq[use], df[use])
    return {"npar": npar, "AIC": [m.aic for m in fits], "BIC": [m.bic for m in fits],
            "logLik": ll, "deviance": -2.0 * ll, "Chisq": chisq, "Df": df, PVALUE: p}


def _chibar_column(fits, cols) -> tuple[np.ndarray, list[str]]:
    """Chi-bar-square p-values for neighbours that differ in variance parameters only."""
    out = np.full(len(fits), np.nan)
    notes = []
    for i in range(1, len(fits)):
        dfm, why = boundary_df(fits[i - 1], fits[i])
        if dfm is not None and dfm == cols["Df"][i]:
            out[i] = chibar_pvalue(cols["Chisq"][i], dfm)
        notes.append(why)
    return out, notes


def _note(names, out, notes, refitted: bool) -> str:
    lines = []
    if refitted:
        lines.append("REML fits were refitted by maximum likelihood (as lme4's anova).")
    for i, why in enumerate(notes, start=1):
        pair = f"{names[i - 1]} vs {names[i]}"
        if np.isfinite(out[i]):
            lines.append(f"{pair}: use {PVALUE_CHIBAR!r}: {why}; the null value is on the "
                         f"boundary of the parameter space, where {PVALUE!r} is too large.")
        else:
            lines.append(f"{pair}: {PVALUE!r} applies as usual ({why}).")
    return "\n".join(lines)


def anova(*models, refit: bool = True, names=None) -> pd.DataFrame:
    """Likelihood-ratio tests of nested models fitted to the same rows (lme4's anova).

    Parameters
    ----------
    *models : LmerResult or GlmerResult
        Two or more fits of one response (lmer fits, or glmer fits of one family, not
        mixed). With a single model, its type III table ``m.anova()``.
    refit : bool, keyword-only
        Refit REML fits by maximum likelihood first (as lme4, which does so whenever a
        model is a REML fit). With ``refit=False`` REML fits are compared by their REML
        criteria, which is only allowed when their fixed effects are the same.
    names : sequence of str, optional
        Row labels; default the formulas (or "m0", "m1", ... if two formulas are equal).

    Returns
    -------
    AnovaTable (a pandas DataFrame)
        Rows in increasing ``npar``; columns npar, AIC, BIC, logLik, deviance, Chisq, Df,
        Pr(>Chisq), and "Pr(>Chisq) chi-bar" where the larger of two neighbouring models
        adds variance parameters only (NaN elsewhere). ``attrs["note"]`` (printed with the
        table) says which p-value applies to each comparison and why;
        ``attrs["p_value"]`` names it per row.
    """
    if len(models) == 1:
        return _single_model_anova(models[0])
    if not models:
        raise TypeError("anova() needs at least one fitted model")
    _check_models(models)
    labels = _names(models, names)
    fits, refitted = _ml_fits(models, refit)
    order = sorted(range(len(fits)), key=lambda i: fits[i].npar)  # stable, as R's order
    fits, labels = [fits[i] for i in order], [labels[i] for i in order]
    cols = _lrt_columns(fits)
    chibar, notes = _chibar_column(fits, cols)
    cols[PVALUE_CHIBAR] = chibar
    table = AnovaTable(cols, index=pd.Index(labels, name=None))
    table.attrs["heading"] = ([] if labels == [m.formula for m in fits] else
                              ["Models:"] + [f"{n}: {m.formula}" for n, m in zip(labels, fits)])
    table.attrs["note"] = _note(labels, chibar, notes, refitted)
    table.attrs["p_value"] = [None] + [PVALUE_CHIBAR if np.isfinite(c) else PVALUE
                                       for c in chibar[1:]]
    table.attrs["refitted_ml"] = refitted
    return table


def _single_model_anova(m):
    method = getattr(m, "anova", None)
    if method is None:
        raise NotImplementedError("this result has no type III table (anova method)")
    return method()


# ------------------------------------------------------- refits without terms


def reduced_formula(result, keep) -> str:
    """The formula of ``result`` with only the random terms ``keep`` (indices into
    ``result.model.frame.terms``), each as the formula wrote it."""
    parsed = result.model.parsed
    lhs = parsed.response if parsed is not None else "y"
    fixed = parsed.fixed if parsed is not None else "1"
    offsets = [f"offset({o})" for o in (parsed.offsets if parsed is not None else ())]
    labels = term_labels(result.model)
    return " + ".join([f"{lhs} ~ {fixed}", *offsets, *(labels[i] for i in keep)])


def _reduced_parsed(parsed, frame_terms, keep_index):
    """The parsed formula with the random terms of ``keep_index`` (frame indices) kept."""
    if parsed is None:
        return None
    match = parsed_term_index(parsed, frame_terms)
    kept = sorted(match[i] for i in keep_index)
    return replace(parsed, random=tuple(parsed.random[j] for j in kept))


def fit_without_terms(result, drop, *, reml: bool | None = None):
    """``result``'s model refitted on its own rows without the random terms ``drop``
    (indices into ``result.model.frame.terms``); at least one term must remain."""
    ctx = result.model
    terms = ctx.frame.terms
    keep = [i for i in range(len(terms)) if i not in set(drop)]
    if not keep:
        raise ModelSpecError("no random-effects term would remain: use no_random_loglik")
    frame = replace(ctx.frame, terms=tuple(terms[i] for i in keep))
    parsed = _reduced_parsed(ctx.parsed, terms, keep)
    formula = reduced_formula(result, keep)
    if ctx.is_glmm:
        return _fit_glmm_frame(result, frame, formula, parsed)
    return _fit_lmm_frame(result, frame, formula, parsed,
                          reml=result.reml if reml is None else reml)


def _common_options(ctx) -> dict:
    o = ctx.options
    return {"factor_mode": o.get("factor_mode", "measure"),
            "check_convergence": o.get("check_convergence", True),
            "optimizer_options": dict(o.get("optimizer_options") or {}),
            "optimizer": o.get("optimizer", "bobyqa")}


def _fit_lmm_frame(result, frame, formula, parsed, *, reml: bool):
    from .crossprod import accumulate
    from .objective import LmmObjective
    from .optimize import minimize_theta
    from .results import build_lmer_result
    from .scaling import theta_units
    from .start import moment_theta

    opts = _common_options(result.model)
    obj = LmmObjective(accumulate(frame), reml=bool(reml), factor_mode=opts["factor_mode"])
    units = theta_units(frame.terms, obj.theta_map, frame.weights)
    theta0 = moment_theta(frame.terms, frame.y)
    if theta0 is None:
        theta0 = obj.theta_map.start * units
    opt = minimize_theta(obj, theta0, obj.theta_map.lower, check=opts["check_convergence"],
                         units=units, optimizer=opts["optimizer"], **opts["optimizer_options"])
    obj.update(opt.theta)
    obj.check_residual_left()
    return build_lmer_result(formula, frame, obj, opt, data_name=result.data_name,
                             weights_name=result.weights_name, offset_name=result.offset_name,
                             parsed=parsed, options=opts)


def _fit_glmm_frame(result, frame, formula, parsed):
    from .glmm import GlmmObjective, fit_glmm
    from .pirls import GlmmData
    from .results_glmm import build_glmer_result
    from .scaling import theta_units

    ctx = result.model
    opts = _common_options(ctx)
    data = GlmmData.from_frame(frame, ctx.family_object)
    obj = GlmmObjective(data, nagq=int(ctx.options["nagq"]), factor_mode=opts["factor_mode"])
    theta_map = obj.pls.theta_map
    units = theta_units(frame.terms, theta_map)
    stage1, stage2 = fit_glmm(obj, theta0=theta_map.start * units,
                              check=opts["check_convergence"],
                              optimizer_options=opts["optimizer_options"], units=units)
    return build_glmer_result(formula, frame, obj, stage1, stage2,
                              weights_name=result.weights_name, data_name=result.data_name,
                              offset_name=result.offset_name, parsed=parsed, options=opts)


# ------------------------------------------------------ no random effect left


@dataclass(frozen=True)
class NoRandomFit:
    """The model without random effects: log-likelihood, its parameter count, coefficients."""

    loglik: float
    npar: int
    coef: np.ndarray
    reml: bool


def no_random_loglik(result, *, reml: bool = False) -> NoRandomFit:
    """Log-likelihood of ``result``'s fixed part alone: the linear model (weighted least
    squares; ML, or REML as lme4's criterion at theta = 0) or, for a GLMM, the GLM by IRLS
    (binomial and Poisson only: families with a dispersion have glmer likelihoods that are
    not on the scale of glm's)."""
    frame = result.model.frame
    if result.model.is_glmm:
        if reml:
            raise ModelSpecError("REML is for linear mixed models; GLMMs are compared by ML")
        return _glm_fit(frame, result.model.family_object)
    return _lm_fit(frame, reml=reml)


def _lm_fit(frame, *, reml: bool) -> NoRandomFit:
    """-2 log L = n (1 + log(2 pi RSS / n)) - sum(log w); REML: log|X'WX| added and n - p.

    n counts the rows with positive weight: a row of weight 0 carries no information (R's
    logLik.lm drops it; so does the LMM's criterion, whose sum(log w) skips it too).
    """
    p = frame.X.shape[1]
    w = np.ones(frame.n) if frame.weights is None else frame.weights
    n = int(np.count_nonzero(w > 0))
    y = frame.y if frame.offset is None else frame.y - frame.offset
    sw = np.sqrt(w)
    Q, R = np.linalg.qr(frame.X * sw[:, None])
    coef = np.linalg.solve(R, Q.T @ (y * sw)) if p else np.zeros(0)
    r = (y - frame.X @ coef) * sw
    rss = float(r @ r)
    sum_log_w = float(np.sum(np.log(w[w > 0])))
    if reml:
        m = n - p
        ld = 2.0 * float(np.sum(np.log(np.abs(np.diag(R)))))
        dev = ld + m * (1.0 + np.log(2.0 * np.pi * rss / m)) - sum_log_w
    else:
        dev = n * (1.0 + np.log(2.0 * np.pi * rss / n)) - sum_log_w
    return NoRandomFit(-0.5 * dev, p + 1, coef, reml)


def _glm_fit(frame, family, *, tol: float = 1e-12, max_iter: int = 100) -> NoRandomFit:
    """IRLS with step-halving; -2 log L = sum of -2 log p(y_i | mu_i) (R's family aic)."""
    if family.has_dispersion:
        raise ModelSpecError(f"the model without random effects is computed for the binomial "
                             f"and Poisson families only, not {family.name}: glmer's "
                             "log-likelihood with a dispersion is not on the scale of glm's")
    n = frame.n
    w = np.ones(n) if frame.weights is None else frame.weights
    off = np.zeros(n) if frame.offset is None else frame.offset
    link, X, y = family.link, frame.X, frame.y
    eta = link.linkfun(family.mustart(y, w))
    dev = np.inf
    coef = np.zeros(X.shape[1])
    for _ in range(max_iter):
        mu, d = link.linkinv(eta), link.mu_eta(eta)
        wk = w * d * d / family.variance(mu)
        z = eta - off + (y - mu) / d
        sw = np.sqrt(wk)
        new = np.linalg.lstsq(X * sw[:, None], z * sw, rcond=None)[0]
        new_dev, new_eta = _glm_step(family, X, y, w, off, coef, new, dev)
        converged = abs(dev - new_dev) <= tol * (abs(new_dev) + 0.1)
        coef, eta, dev = new, new_eta, new_dev
        if converged:
            mu = link.linkinv(eta)
            return NoRandomFit(-0.5 * family.aic(y, mu, w, dev), X.shape[1], coef, False)
    raise NumericalError(f"the GLM without random effects did not converge in {max_iter} "
                         "IRLS iterations")


def _glm_step(family, X, y, w, off, old, new, dev_old):
    """Deviance and eta at ``new``, halving the step towards ``old`` while it increases."""
    for _ in range(30):
        eta = X @ new + off
        mu = family.link.linkinv(eta)
        dev = float(np.sum(family.dev_resids(y, mu, w))) if family.validmu(mu) else np.inf
        decreased = dev <= dev_old * (1 + 1e-12) or not np.isfinite(dev_old)
        if decreased and np.isfinite(dev):
            return dev, eta
        new = 0.5 * (old + new)
    raise NumericalError("the GLM without random effects: step-halving failed")
