"""Fitted GLMM results: the LMM result's tables plus family, link, nAGQ and deviance.

Built once from the GLMM objective at the optimum, like ``results.build_lmer_result``.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .condvar import condvar_blocks
from .context import FitContext
from .errors import ConvergenceWarning
from .frame import ModelFrame
from .glmm import GlmmObjective
from .optimize import OptSummary, is_singular
from .pirls import factor_at_mode
from .results import LmerResult, coef_tables, ranef_table, theta_names, varcorr_table


@dataclass(frozen=True, eq=False)
class GlmerResult(LmerResult):
    """A fitted generalized linear mixed model (see ``glmm_sparse.glmer``).

    ``objective`` is -2 log-likelihood by Laplace (nagq <= 1) or AGQ (nagq > 1), with the
    saturated part included; ``deviance`` is the conditional deviance (lme4's deviance()).
    """

    family: str = "binomial"
    link: str = "logit"
    nagq: int = 1
    deviance: float = float("nan")
    stage1: OptSummary | None = field(default=None, repr=False)

    def summary(self, ddf: str | None = None) -> str:
        from .reporting import summary_text

        return summary_text(self, ddf=ddf)


def dispersion(obj: GlmmObjective) -> float:
    """sigma of a scale family as lme4 reports it, 1 for binomial and Poisson.

    lme4 (sigma.merMod for Gamma and inverse Gaussian): sigma^2 = (Pearson X^2 + |u|^2) / n
    at the mode; it scales VarCorr (sd = sigma * theta) and the conditional SDs, not the
    conditional modes (tests/reference/glmm/README.md, b and g).
    """
    d = obj.data
    if not d.family.has_dispersion:
        return 1.0
    mu = obj.mu()
    pearson2 = float((d.prior_w * (d.y - mu) ** 2 / d.family.variance(mu)).sum())
    u = obj.state.u
    return float(np.sqrt((pearson2 + u @ u) / d.n))


def glmm_vcov(obj: GlmmObjective, stage2: OptSummary | None, sigma: float) -> np.ndarray:
    """vcov(beta): from the Hessian of the deviance over (theta, beta) when it is positive
    definite (lme4's use.hessian), else sigma^2 R_X^-1 R_X^-T at the joint mode."""
    p = obj.data.X.shape[1]
    if stage2 is not None and stage2.hessian is not None:
        # in the optimizer's units (scaling.py), where H is not ill-conditioned by them
        scale = np.ones(stage2.hessian.shape[0]) if stage2.units is None else stage2.units
        H = stage2.hessian * np.outer(scale, scale)
        if np.all(np.isfinite(H)) and np.all(np.linalg.eigvalsh(H) > 0):
            fixed = slice(H.shape[0] - p, None)  # not [-p:]: p may be 0
            try:
                return (np.linalg.inv(H / 2.0) * np.outer(scale, scale))[fixed, fixed]
            except np.linalg.LinAlgError:
                pass  # singular, its eigenvalues positive by rounding only (e.g. a zero row
                # for a random slope on a column of zeros): the fallback below
        warnings.warn("the Hessian of the deviance is singular or not positive definite; "
                      "vcov(beta) from the PIRLS information instead", ConvergenceWarning,
                      stacklevel=4)
    factor_at_mode(obj.pls, obj.data, obj.state, obj.pls.theta, joint=True)
    V = sigma**2 * obj.pls.vcov_unscaled()
    return V


def theta_part(units: np.ndarray | None, theta: np.ndarray) -> np.ndarray | None:
    """The units of theta among the optimizer's (stage 2 appends beta's)."""
    return None if units is None else units[:theta.shape[0]]


def per_row_results(obj: GlmmObjective, frame: ModelFrame, sigma: float) -> tuple:
    """Fitted values, deviance residuals and scaled (Pearson) residuals at the mode."""
    d, fam = obj.data, obj.data.family
    mu = obj.mu()
    devres = fam.dev_resids(d.y, mu, d.prior_w)
    resid = np.sign(d.y - mu) * np.sqrt(np.maximum(devres, 0.0))
    return (pd.Series(mu, index=frame.row_index, name="fitted"),
            pd.Series(resid, index=frame.row_index, name="residuals"),
            (d.y - mu) * np.sqrt(d.prior_w / fam.variance(mu)) / sigma)


def build_glmer_result(formula: str, frame: ModelFrame, obj: GlmmObjective,
                       stage1: OptSummary, stage2: OptSummary | None, *,
                       weights_name: str | None = None, data_name: str | None = None,
                       offset_name: str | None = None, parsed=None,
                       options: dict | None = None, per_row: bool = True) -> GlmerResult:
    """The immutable result at the optimum held by ``obj``, which its context keeps;
    ``parsed`` and ``options`` are the formula and the fit's options (context.py).
    ``per_row=False`` leaves fitted values and residuals out (None): a fit out of core
    keeps no n-long results, and need not make them."""
    d, pls = obj.data, obj.pls
    fam = d.family
    offsets = pls.cp.offsets
    sigma = dispersion(obj)
    objective = obj.deviance()
    cond_dev = obj.conditional_deviance()
    u = obj.state.u.copy()
    b = pls.lambda_times(u)
    condvar = condvar_blocks(pls, sigma)
    beta = obj.state.beta.copy()
    names = list(frame.xnames)
    fitted, resid, scaled = per_row_results(obj, frame, sigma) if per_row else (None,) * 3
    theta = pls.theta.copy()
    V = glmm_vcov(obj, stage2, sigma)
    terms = frame.terms
    opt = stage2 if stage2 is not None else stage1
    context = FitContext(formula, parsed, frame,
                         dict(options or {}, family=fam.name, link=fam.link.name,
                              nagq=obj.nagq), opt.theta.copy(), obj)
    return GlmerResult(
        formula=formula, reml=False, nobs=frame.n, n_dropped=frame.n_dropped, theta=theta,
        theta_names=tuple(theta_names(terms)), objective=objective, sigma=sigma,
        fixef=pd.Series(beta, index=names, name="Estimate"),
        vcov=pd.DataFrame(V, index=names, columns=names),
        varcorr=varcorr_table(terms, pls.T, sigma,
                              residual=fam.has_dispersion),
        ranef_source=ranef_table(terms, b, offsets, condvar),
        coef=coef_tables(terms, pd.Series(beta, index=names), b, offsets),
        rows_source=None if fitted is None else (fitted, resid, scaled),
        ngrps={t.group_name: t.nlev for t in terms},
        is_singular=is_singular(theta, pls.theta_map.lower, units=theta_part(opt.units, theta)),
        optimizer=opt,
        dropped_columns=frame.dropped_columns, data_name=data_name, weights_name=weights_name,
        offset_name=offset_name, n_scale=int(fam.has_dispersion), u=u, b=b, family=fam.name, link=fam.link.name,
        nagq=obj.nagq, deviance=cond_dev, stage1=stage1, model=context,
    )
