"""Refits of a fitted model: a new response, or maximum likelihood for a REML fit.

After the results stage. A new response changes only the response's cross-products
(Z'Wy, X'Wy, y'Wy: one pass over the rows); Z'WZ, X'WX, the pattern of M and its
analysis are the fit's. ``Refitter`` keeps one objective for many responses (the
parametric bootstrap), ``refit`` and ``refit_ml`` are single refits. A fit with a fixed
residual SD (``options["sigma"]``) is refitted with the same sigma.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from ._core import _crossprod
from .context import require_model
from .crossprod import CrossProducts
from .errors import DataError
from .optimize import minimize_theta
from .scaling import theta_units
from .validate import check_glmm_response_varies, check_residual_variation, check_response_varies


def response_crossproducts(context, y: np.ndarray, cp: CrossProducts | None = None) -> CrossProducts:
    """The fit's cross-products with the response replaced by y (one pass over the rows).

    As in the fit (crossprod.response_matrix), y - offset is carried less its
    least-squares fit on X (here from X'WX, which the fit holds), so that pwrss keeps
    its digits when y has a large mean; beta adds the shift back.
    """
    frame = context.frame
    cp = context.crossproducts() if cp is None else cp
    p = cp.p
    w = np.ones(frame.n) if frame.weights is None else frame.weights
    r = y - frame.offset if frame.offset is not None else y.copy()
    beta0 = None
    if p:
        beta0 = np.linalg.solve(cp.XtWXy[:p, :p], frame.X.T @ (w * r))
        r -= frame.X @ beta0
        check_residual_variation(r, y)
    r = np.ascontiguousarray(r.reshape(-1, 1))
    parts = []
    for t in frame.terms:
        C = np.zeros((t.q, 1))
        _crossprod.add_term_cross(t.codes, t.z_values, r, w, C)
        parts.append(C)
    ZtWXy = cp.ZtWXy.copy()
    ZtWXy[:, p] = np.vstack(parts)[:, 0] if parts else 0.0
    XtWXy = cp.XtWXy.copy()
    wr = w * r[:, 0]
    XtWXy[:p, p] = XtWXy[p, :p] = frame.X.T @ wr
    XtWXy[p, p] = float(r[:, 0] @ wr)
    return replace(cp, ZtWXy=ZtWXy, XtWXy=XtWXy, beta_shift=beta0)


def checked_response(result, y) -> np.ndarray:
    """A new response: one finite number per row the fit used."""
    try:
        y = np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError("the new response must be numbers, one per row of the fit") from None
    if y.shape != (result.nobs,):
        raise DataError(f"the new response must have one value per row used in the fit "
                        f"({result.nobs}), got shape {y.shape}")
    if not np.all(np.isfinite(y)):
        bad = int(np.flatnonzero(~np.isfinite(y))[0])
        raise DataError(f"the new response has a missing or infinite value (position {bad})")
    return y


class Refitter:
    """Fits the model of ``result`` to new responses, on one objective of its own.

    Results it returns do not keep that objective (their context rebuilds one when
    asked), so one Refitter serves any number of responses; it is not thread-safe:
    use one per thread.
    """

    def __init__(self, result, *, reml: bool | None = None, check_convergence: bool | None = None):
        self.result = result
        self.context = require_model(result, "a refit")
        opts = self.context.options
        self.check = opts.get("check_convergence", True) if check_convergence is None \
            else check_convergence
        self.reml = opts.get("reml") if reml is None else bool(reml)
        self.objective = None
        # the fit's cross-products, once: each response changes only their y parts
        self.cp = None if self.context.is_glmm else self.context.crossproducts()

    def fit(self, y, *, start=None):
        """The result of the same model fitted to response y (a new result)."""
        y = checked_response(self.result, y)
        if self.context.is_glmm:
            return self._fit_glmm(y, start)
        return self._fit_lmm(y, start)

    def _fit_lmm(self, y: np.ndarray, start):
        from .objective import LmmObjective, fixed_sigma_unit
        from .results import build_lmer_result

        ctx = self.context
        check_response_varies(y, ctx.parsed.response if ctx.parsed else "response")
        cp = response_crossproducts(ctx, y, self.cp)
        if self.objective is None:
            self.objective = LmmObjective(cp, reml=self.reml,
                                          factor_mode=ctx.options.get("factor_mode", "measure"),
                                          sigma=ctx.options.get("sigma"))
        else:
            self.objective.set_crossproducts(cp)
        obj = self.objective
        units = theta_units(ctx.frame.terms, obj.theta_map, ctx.frame.weights)
        if obj.fixed_sigma is not None:  # theta relative to the fixed sigma (models.py)
            units = units * fixed_sigma_unit(cp, obj.fixed_sigma)
        theta0 = ctx.theta.copy() if start is None else np.asarray(start, dtype=np.float64)
        opt = minimize_theta(obj, theta0, obj.theta_map.lower, check=self.check, units=units,
                             optimizer=ctx.options.get("optimizer", "bobyqa"),
                             **(ctx.options.get("optimizer_options") or {}))
        obj.update(opt.theta)
        obj.check_residual_left()
        frame = replace(ctx.frame, y=y, XB=None, R_XB=None)
        options = {k: v for k, v in ctx.options.items() if k != "reml"}
        res = build_lmer_result(ctx.formula, frame, obj, opt, data_name=self.result.data_name,
                                weights_name=self.result.weights_name,
                                offset_name=self.result.offset_name, parsed=ctx.parsed,
                                options=options)
        res.model.objective = None  # the Refitter's objective moves on with the next fit
        return res

    def _fit_glmm(self, y: np.ndarray, start):
        from .glmm import GlmmObjective, fit_glmm
        from .results_glmm import build_glmer_result

        ctx = self.context
        opts = ctx.options
        data = ctx.glmm_data(y)
        name = ctx.parsed.response if ctx.parsed else "response"
        data.family.check_response(y, data.prior_w, name=name, rows=ctx.frame.row_index)
        check_glmm_response_varies(y, data.prior_w, data.family, name)
        obj = GlmmObjective(data, nagq=int(opts["nagq"]),
                            factor_mode=opts.get("factor_mode", "measure"))
        units = theta_units(ctx.frame.terms, obj.pls.theta_map)
        theta0 = ctx.theta.copy() if start is None else np.asarray(start, dtype=np.float64)
        stage1, stage2 = fit_glmm(obj, theta0=theta0, check=self.check,
                                  optimizer_options=opts.get("optimizer_options") or {},
                                  units=units)
        options = {k: v for k, v in opts.items() if k not in ("family", "link", "nagq")}
        return build_glmer_result(ctx.formula, replace(ctx.frame, y=y, XB=None, R_XB=None),
                                  obj, stage1, stage2, weights_name=self.result.weights_name,
                                  data_name=self.result.data_name,
                                  offset_name=self.result.offset_name, parsed=ctx.parsed,
                                  options=options)


def refit(result, new_response, *, check_convergence: bool | None = None):
    """The model of ``result`` fitted to ``new_response`` (one value per row of the fit;
    for a binomial fit with trials as weights, proportions), from the fit's theta."""
    return Refitter(result, check_convergence=check_convergence).fit(new_response)


def refit_ml(result):
    """A REML fit refitted by maximum likelihood (lme4's refitML); other fits as they are."""
    if result.model is None or result.model.is_glmm or not result.reml:
        return result
    return Refitter(result, reml=False).fit(result.model.frame.y)
