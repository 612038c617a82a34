"""Fitted-model results: immutable, built once from the objective at the optimum.

Sixth stage (... -> optimize -> results -> report). Tables follow lme4's
``as.data.frame(VarCorr(m))`` and ``as.data.frame(ranef(m, condVar = TRUE))`` so that
people moving from R find the same rows in the same order.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import partial

import numpy as np
import pandas as pd

from .condvar import condvar_blocks
from .confint import IntervalMethods
from .context import FitContext
from .ddf import DdfMethods
from .decomposition import DecompositionMethods
from .predict import PredictMethods
from .simulate import SimulateMethods
from .tidy import TidyMethods
from .crossprod import add_z_times
from .frame import ModelFrame
from .objective import LmmObjective
from .optimize import OptSummary, is_singular
from .terms import ReTerm


@dataclass(frozen=True, eq=False)
class LmerResult(DdfMethods, TidyMethods, IntervalMethods, SimulateMethods, PredictMethods,
                 DecompositionMethods):
    """A fitted linear mixed model (see ``glmm_sparse.lmer``).

    The inference methods come from one module each: ``coef_table``/``anova`` (ddf.py),
    ``tidy``/``to_json`` (tidy.py), ``confint``/``profile``/``bootstrap`` (confint.py),
    ``simulate`` (simulate.py), ``predict`` (predict.py), ``icc``/``r2``/``shrinkage``
    (decomposition.py).
    """

    formula: str
    reml: bool
    nobs: int
    n_dropped: int
    theta: np.ndarray
    theta_names: tuple[str, ...]
    objective: float
    sigma: float
    fixef: pd.Series
    vcov: pd.DataFrame
    varcorr: pd.DataFrame
    # the ranef table, or a callable that makes it: the conditional variances need a
    # selected inverse of the factor (1-2 s on large crossed designs), so an LMM computes
    # them on first use, as lme4's ranef(m) does, not in every fit. Until then the result
    # keeps the fit's factor and cross-products alive (n-free, but the size of L); read
    # .ranef, or pickle the result, to compute the table and let them go.
    ranef_source: object = field(repr=False)
    coef: dict[str, pd.DataFrame]
    # (fitted, residuals, scaled residuals), None for fits that keep no rows (streamed,
    # out of core, Dask, Spark), or a callable that makes them: an LMM computes them on
    # first use (three n-vectors: 229 MiB at 10^7 rows that a fit need not hold)
    rows_source: object = field(repr=False)
    ngrps: dict[str, int] = field(default_factory=dict)
    is_singular: bool = False
    optimizer: OptSummary | None = field(default=None, repr=False)
    dropped_columns: tuple[str, ...] = ()
    data_name: str | None = None
    weights_name: str | None = None
    offset_name: str | None = None
    n_scale: int = 1  # scale parameters estimated: sigma for an LMM
    u: np.ndarray = field(default=None, repr=False)
    b: np.ndarray = field(default=None, repr=False)
    # the rows, structure, options and objective behind the fit (context.py): what
    # tests, intervals, predictions and refits reuse
    model: FitContext | None = field(default=None, repr=False)

    @property
    def ranef(self) -> pd.DataFrame:
        """Conditional modes and conditional SDs per level, as.data.frame(ranef(m,
        condVar=TRUE)) of lme4: grpvar, term, grp, condval, condsd."""
        if callable(self.ranef_source):
            object.__setattr__(self, "ranef_source", self.ranef_source())
        return self.ranef_source

    def __getstate__(self) -> dict:
        """Pickles carry the table and the per-row values, never the factor and the
        callables they are computed from."""
        state = dict(self.__dict__)
        state["ranef_source"] = self.ranef
        state["rows_source"] = self._rows()
        return state

    def _rows(self):
        if callable(self.rows_source):
            object.__setattr__(self, "rows_source", self.rows_source())
        return self.rows_source

    @property
    def fitted(self) -> pd.Series | None:
        """Fitted values per row of the fit, X beta + Z b (+ offset; for a GLMM the mean,
        as lme4's fitted(m)); None for fits that keep no rows. An LMM computes them (and
        the residuals) on first use."""
        rows = self._rows()
        return None if rows is None else rows[0]

    @property
    def residuals(self) -> pd.Series | None:
        """Response minus fitted values per row (lme4's residuals(m, type="response") for
        an LMM; see GlmerResult for a GLMM's); None for fits that keep no rows."""
        rows = self._rows()
        return None if rows is None else rows[1]

    @property
    def scaled_residuals(self) -> np.ndarray | None:
        """Residuals over sigma (times sqrt(weights)), as summary()'s quantiles (Pearson
        residuals scaled by the dispersion for a GLMM); None for fits that keep no rows."""
        rows = self._rows()
        return None if rows is None else rows[2]

    @property
    def npar(self) -> int:
        """Estimated parameters: fixed effects, theta and the scale (lme4's df of logLik)."""
        return len(self.fixef) + len(self.theta) + self.n_scale

    @property
    def loglik(self) -> float:
        """Log-likelihood; for REML fits the REML log-likelihood, as lme4's logLik."""
        return -0.5 * self.objective

    @property
    def aic(self) -> float:
        return self.objective + 2.0 * self.npar

    @property
    def bic(self) -> float:
        return self.objective + np.log(self.nobs) * self.npar

    @property
    def df_resid(self) -> int:
        return self.nobs - self.npar

    @property
    def converged(self) -> bool:
        return self.optimizer is None or self.optimizer.converged

    def summary(self, ddf: str | None = None) -> str:
        """lme4's ``print(summary(m))`` layout; ``ddf`` as in ``coef_table``."""
        from .reporting import summary_text

        return summary_text(self, ddf=ddf)

    def refit(self, new_response, **kwargs):
        """The same model fitted to a new response (one value per row used in the fit),
        reusing the analysis and the cross-products of Z and X (refit.py)."""
        from .refit import refit

        return refit(self, new_response, **kwargs)

    def to_dict(self, ddf: str | None = None) -> dict:
        """All results as plain JSON-ready values; the fixed effects' df and p-values
        follow ``ddf`` (as ``coef_table``)."""
        from .reporting import result_dict

        return result_dict(self, ddf=ddf)

    def __str__(self) -> str:
        """print(m): the summary in lme4's layout; an LMM's df and p-values
        (Satterthwaite, a few evaluations of the criterion per variance parameter) are
        computed when asked for, by ``summary()``, not on every print."""
        return self.summary(ddf="none" if self.model is None or not self.model.is_glmm
                            else None)


def theta_names(terms: tuple[ReTerm, ...]) -> list[str]:
    """lme4's names: "g.name" on the diagonal, "g.row_name.col_name" below it."""
    names = []
    for t in terms:
        for c in range(t.k):
            for r in range(c, t.k):
                cell = t.cnames[r] if r == c else f"{t.cnames[r]}.{t.cnames[c]}"
                names.append(f"{t.group_name}.{cell}")
    return names


def unique_group_labels(terms: tuple[ReTerm, ...]) -> list[str]:
    """R's make.unique of the group names: "g", "g.1", "g.2" for repeated factors."""
    seen: dict[str, int] = {}
    out = []
    for t in terms:
        n = seen.get(t.group_name, 0)
        out.append(t.group_name if n == 0 else f"{t.group_name}.{n}")
        seen[t.group_name] = n + 1
    return out


def varcorr_table(terms, T: list[np.ndarray], sigma: float, residual: bool = True) -> pd.DataFrame:
    """Rows of as.data.frame(VarCorr(m)): variances, then covariances (sdcor = correlation).

    GLMMs without a scale parameter (binomial, Poisson) have no Residual row.
    """
    rows = []
    for label, t, Tt in zip(unique_group_labels(terms), terms, T):
        S = sigma**2 * Tt @ Tt.T
        sd = np.sqrt(np.diag(S))
        for i in range(t.k):
            rows.append((label, t.cnames[i], None, S[i, i], sd[i]))
        for i in range(t.k):
            for j in range(i + 1, t.k):
                corr = S[i, j] / (sd[i] * sd[j]) if sd[i] > 0 and sd[j] > 0 else np.nan
                rows.append((label, t.cnames[i], t.cnames[j], S[i, j], corr))
    if residual:
        rows.append(("Residual", None, None, sigma**2, sigma))
    return pd.DataFrame(rows, columns=["grp", "var1", "var2", "vcov", "sdcor"])


def ranef_table(terms, b: np.ndarray, offsets, condvar: list[np.ndarray]) -> pd.DataFrame:
    """Rows of as.data.frame(ranef(m, condVar=TRUE)): by grouping factor, term, then level."""
    parts = []
    for group in dict.fromkeys(t.group_name for t in terms):
        for i, t in enumerate(terms):
            if t.group_name != group:
                continue
            vals = b[offsets[i]:offsets[i + 1]].reshape(t.nlev, t.k)
            sds = np.sqrt(np.maximum(np.diagonal(condvar[i], axis1=1, axis2=2), 0.0))
            for r, name in enumerate(t.cnames):
                parts.append(pd.DataFrame({"grpvar": group, "term": name, "grp": list(t.levels),
                                           "condval": vals[:, r], "condsd": sds[:, r]}))
    return pd.concat(parts, ignore_index=True)


def coef_tables(terms, fixef: pd.Series, b: np.ndarray, offsets) -> dict[str, pd.DataFrame]:
    """lme4's coef(m): per grouping factor, fixed effects plus that factor's random effects."""
    out: dict[str, pd.DataFrame] = {}
    for i, t in enumerate(terms):
        vals = b[offsets[i]:offsets[i + 1]].reshape(t.nlev, t.k)
        if t.group_name not in out:
            out[t.group_name] = pd.DataFrame(np.tile(fixef.to_numpy(), (t.nlev, 1)),
                                             index=pd.Index(t.levels, name=t.group_name),
                                             columns=fixef.index)
        table = out[t.group_name]
        for r, name in enumerate(t.cnames):
            table[name] = (table[name] if name in table else 0.0) + vals[:, r]
    return out


def linear_predictor(frame: ModelFrame, beta: np.ndarray, b: np.ndarray, offsets) -> np.ndarray:
    """X beta + Z b (+ offset), Z applied through the terms' codes."""
    eta = add_z_times(frame.terms, b, offsets, frame.X @ beta)
    if frame.offset is not None:
        eta += frame.offset
    return eta


def per_row_values(frame: ModelFrame, beta: np.ndarray, b: np.ndarray, offsets,
                   sigma: float) -> tuple[pd.Series, pd.Series, np.ndarray]:
    """An LMM's (fitted, residuals, scaled residuals) from its frame and estimates."""
    fitted = linear_predictor(frame, beta, b, offsets)
    resid = frame.y - fitted
    scaled = resid / sigma
    if frame.weights is not None:
        scaled *= np.sqrt(frame.weights)
    # fitted and resid are these Series' own: pandas (>= 3) would copy them by default
    return (pd.Series(fitted, index=frame.row_index, name="fitted", copy=False),
            pd.Series(resid, index=frame.row_index, name="residuals", copy=False), scaled)


def _deferred_ranef(terms, b, offsets, context: FitContext, sigma: float):
    """ranef_table with the conditional variances, made when first asked for from the
    context's objective at the optimum, keeping the terms' labels, not their rows."""
    labels = tuple(replace(t, codes=np.empty(0, dtype=np.int64), X=np.empty((0, t.k)))
                   for t in terms)
    return lambda: ranef_table(labels, b, offsets, condvar_blocks(context.at_optimum(), sigma))


def build_lmer_result(formula: str, frame: ModelFrame, obj: LmmObjective, opt: OptSummary,
                      data_name: str | None = None, weights_name: str | None = None,
                      offset_name: str | None = None, *, parsed=None,
                      options: dict | None = None) -> LmerResult:
    """The immutable result at the optimum held by ``obj``, which its context keeps;
    ``parsed`` and ``options`` are the formula and the fit's options (context.py).

    With sigma fixed (``obj.fixed_sigma``, recorded as ``options["sigma"]`` so that
    refits keep it) sigma is not a parameter: ``n_scale`` is 0, so npar, AIC and BIC
    count theta and beta only (as metafor's rma counts tau^2 and beta)."""
    context = FitContext(formula, parsed, frame,
                         dict(options or {}, reml=obj.reml, sigma=obj.fixed_sigma),
                         obj.theta.copy(), obj)
    cp = obj.cp
    offsets = cp.offsets
    sigma = obj.sigma()
    beta = obj.beta()
    u = obj.u()
    b = obj.lambda_times(u)
    names = list(frame.xnames)
    terms = frame.terms
    return LmerResult(
        formula=formula, reml=obj.reml, nobs=frame.n, n_dropped=frame.n_dropped,
        theta=obj.theta.copy(), theta_names=tuple(theta_names(terms)),
        objective=obj.objective(), sigma=sigma,
        fixef=pd.Series(beta, index=names, name="Estimate"),
        vcov=pd.DataFrame(sigma**2 * obj.vcov_unscaled(), index=names, columns=names),
        varcorr=varcorr_table(terms, obj.T, sigma),
        ranef_source=_deferred_ranef(terms, b, offsets, context, sigma),
        coef=coef_tables(terms, pd.Series(beta, index=names), b, offsets),
        rows_source=partial(per_row_values, frame, beta, b, offsets, sigma),
        ngrps={t.group_name: t.nlev for t in terms},
        is_singular=is_singular(obj.theta, obj.theta_map.lower, units=opt.units),
        optimizer=opt,
        dropped_columns=frame.dropped_columns, data_name=data_name, weights_name=weights_name,
        offset_name=offset_name, u=u, b=b, model=context,
        n_scale=0 if obj.fixed_sigma is not None else 1,
    )
