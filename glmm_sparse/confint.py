"""Confidence intervals: Wald, profile likelihood and parametric bootstrap.

After the results stage (... -> results -> inference). Rows are lme4's
``confint(..., oldNames = FALSE)`` names: "sd_(Intercept)|Subject",
"cor_Days.(Intercept)|Subject", "sigma" (when the model estimates a scale), then the
fixed effects. The profile lives in profile.py, the bootstrap in bootstrap.py.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

METHODS = {"wald": "wald", "profile": "profile", "boot": "boot", "bootstrap": "boot"}


def interval_names(result) -> list[str]:
    """Variance parameters (sd/cor), sigma when estimated, fixed effects."""
    from .profile import variance_names

    names = variance_names(result.model.frame.terms)
    if result.n_scale:
        names.append("sigma")
    return names + list(result.fixef.index)


def select(names: list[str], n_fixed: int, parm) -> list[str]:
    """parm: None (all), "theta_" / "beta_", a name, or a list of names / positions."""
    from .errors import ModelSpecError

    if parm is None:
        return names
    if isinstance(parm, str):
        if parm == "theta_":
            return names[:len(names) - n_fixed]
        if parm == "beta_":
            return names[len(names) - n_fixed:]
        parm = [parm]
    out = []
    for item in parm:
        if isinstance(item, (int, np.integer)) and not isinstance(item, bool) \
                and 0 <= item < len(names):
            out.append(names[item])
        elif isinstance(item, str) and item in names:
            out.append(item)
        else:
            raise ModelSpecError(f"unknown parameter {item!r}; the parameters are "
                                 f"{', '.join(names)} (or 'theta_', 'beta_', or positions)")
    return out


def wald_intervals(result, level: float) -> pd.DataFrame:
    """beta_hat -+ qnorm((1 + level) / 2) * SE for the fixed effects; NaN for the others
    (lme4's method = "Wald")."""
    from scipy.stats import norm

    names = interval_names(result)
    z = float(norm.ppf((1.0 + level) / 2.0))
    beta = result.fixef.to_numpy()
    se = np.sqrt(np.diag(result.vcov.to_numpy()))
    out = pd.DataFrame(np.nan, index=names, columns=["lower", "upper"])
    fixed = list(result.fixef.index)
    out.loc[fixed, "lower"] = beta - z * se
    out.loc[fixed, "upper"] = beta + z * se
    return out


def method_name(method) -> str:
    from .errors import ModelSpecError

    key = str(method).strip().lower()
    if key not in METHODS:
        raise ModelSpecError(f"method must be 'wald', 'profile' or 'boot', not {method!r}")
    return METHODS[key]


class IntervalMethods:
    """Methods of fitted results (mixed into LmerResult and GlmerResult)."""

    def confint(self, parm=None, level: float = 0.95, method: str = "profile",
                **kwargs) -> pd.DataFrame:
        """Confidence intervals for the variance parameters, sigma and the fixed effects.

        Parameters
        ----------
        parm : None, str, or list of names / positions
            None: all; "theta_": the SDs, correlations and sigma; "beta_": the fixed
            effects; or names as in the index of the result.
        level : float
            Confidence level.
        method : {"profile", "wald", "boot"} (case-insensitive; "Wald" as in R)
            "profile": profile likelihood (the ML profile, also for REML fits, as
            lme4; LMMs with sigma estimated or fixed, binomial and Poisson GLMMs with
            nagq >= 1); "wald": fixed effects only, the others NaN (lme4's "Wald");
            "boot": percentile intervals of a parametric bootstrap, keyword arguments
            ``n``, ``seed``, ``n_jobs``, ``progress`` go to ``bootstrap``.

        Returns
        -------
        pandas.DataFrame
            Index: lme4's ``oldNames = FALSE`` parameter names; columns "lower", "upper".
        """
        from .errors import ModelSpecError
        from .profile import check_level, profile_model

        check_level(level)
        kind = method_name(method)
        names = interval_names(self)
        chosen = select(names, len(self.fixef), parm)
        if kind == "wald":
            if kwargs:
                raise TypeError(f"method='wald' takes no options, got {sorted(kwargs)}")
            return wald_intervals(self, level).loc[chosen]
        if kind == "profile":
            unknown = set(kwargs)
            if unknown:
                raise TypeError(f"method='profile' takes no options, got {sorted(unknown)}")
            return profile_model(self, which=chosen, level=level).confint(level).loc[chosen]
        boot_kwargs = {k: kwargs.pop(k) for k in ("n", "seed", "n_jobs", "progress")
                       if k in kwargs}
        if kwargs:
            raise TypeError(f"method='boot' takes n, seed, n_jobs, progress; got "
                            f"{sorted(kwargs)}")
        boot = self.bootstrap(**boot_kwargs)
        missing = [c for c in chosen if c not in boot.t.columns]
        if missing:
            raise ModelSpecError(f"the bootstrap has no statistic {missing[0]!r}")
        return boot.confint(level=level).loc[chosen]

    def profile(self, which=None, level: float = 0.99) -> pd.DataFrame:
        """Profile zeta of the parameters (lme4's ``profile``), as a long table.

        Parameters
        ----------
        which : None, str or list
            As ``confint``'s ``parm``: None (all), "theta_", "beta_", names or positions.
        level : float
            Each profile is stepped out until |zeta| exceeds qnorm((1 + level) / 2).

        Returns
        -------
        pandas.DataFrame
            Columns "parameter", "value", "zeta": one row per profile point (the
            estimate at zeta 0 included), by parameter in lme4's order, then by value.
            zeta = sign(value - estimate) sqrt(deviance - deviance at the ML optimum).
        """
        from .profile import profile_model

        return profile_model(self, which=which, level=level).table()

    def bootstrap(self, n: int = 1000, seed=None, func=None, n_jobs: int = 2,
                  progress: bool | None = None):
        """Parametric bootstrap (lme4's ``bootMer``): see ``glmm_sparse.bootstrap``."""
        from .bootstrap import bootstrap

        return bootstrap(self, n=n, seed=seed, func=func, n_jobs=n_jobs, progress=progress)
