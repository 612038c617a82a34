"""The fixed and random parts as broom-style DataFrames, JSON and HTML.

Report stage (... -> results -> inference -> report). ``tidy`` follows broom.mixed's
``tidy(m)`` for lmer / glmer fits: one row per fixed effect (with the ddf's t or z tests)
and one per random-effects standard deviation or correlation, the residual SD last as
"sd__Observation". JSON and HTML render reporting.py's summary tables.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

TIDY_COLUMNS = ["effect", "group", "term", "estimate", "std.error", "statistic", "df",
                "p.value"]
EFFECTS = ("fixed", "ran_pars")


def fixed_rows(result, ddf: str | None, conf_int: bool, conf_level: float) -> pd.DataFrame:
    """Fixed effects: estimate, std.error, statistic, df, p.value (and a Wald interval
    with the ddf's t quantiles, normal ones for "normal" and "none")."""
    from scipy import stats

    from .ddf import coefficient_table

    tab = coefficient_table(result, ddf)
    est = tab["Estimate"].to_numpy(dtype=float)
    se = tab["Std. Error"].to_numpy(dtype=float)
    df = tab["df"].to_numpy(dtype=float) if "df" in tab else np.full(len(tab), np.nan)
    p = tab.iloc[:, -1].to_numpy(dtype=float) if tab.columns[-1].startswith("Pr(") \
        else np.full(len(tab), np.nan)
    out = pd.DataFrame({"effect": "fixed", "group": None, "term": list(tab.index),
                        "estimate": est, "std.error": se, "statistic": est / se, "df": df,
                        "p.value": p})
    if conf_int:
        alpha = 1.0 - conf_level
        q = stats.t.ppf(1 - alpha / 2, df) if "df" in tab else stats.norm.ppf(1 - alpha / 2)
        out["conf.low"], out["conf.high"] = est - q * se, est + q * se
    return out


def ran_pars_rows(result) -> pd.DataFrame:
    """Random-effects SDs and correlations (broom.mixed's names), the residual SD last."""
    rows = []
    for r in result.varcorr.itertuples(index=False):
        if r.grp == "Residual":
            rows.append(("Residual", "sd__Observation", r.sdcor))
        elif r.var2 is None or (not isinstance(r.var2, str) and pd.isna(r.var2)):
            rows.append((r.grp, f"sd__{r.var1}", r.sdcor))
        else:
            rows.append((r.grp, f"cor__{r.var1}.{r.var2}", r.sdcor))
    out = pd.DataFrame(rows, columns=["group", "term", "estimate"])
    out.insert(0, "effect", "ran_pars")
    for col in ("std.error", "statistic", "df", "p.value"):
        out[col] = np.nan
    return out


def tidy_table(result, effects=EFFECTS, conf_int: bool = False, conf_level: float = 0.95,
               ddf: str | None = None) -> pd.DataFrame:
    """broom.mixed's tidy(m) (see TidyMethods.tidy)."""
    from .errors import ModelSpecError

    effects = (effects,) if isinstance(effects, str) else tuple(effects)
    unknown = [e for e in effects if e not in EFFECTS]
    if unknown or not effects:
        raise ModelSpecError(f"effects must be among {EFFECTS}, not {unknown or effects}")
    if not 0.0 < conf_level < 1.0:
        raise ModelSpecError(f"conf_level must lie between 0 and 1, not {conf_level!r}")
    parts = []
    for effect in effects:
        part = fixed_rows(result, ddf, conf_int, conf_level) if effect == "fixed" \
            else ran_pars_rows(result)
        if conf_int and "conf.low" not in part:
            part["conf.low"] = part["conf.high"] = np.nan
        parts.append(part)
    columns = TIDY_COLUMNS + (["conf.low", "conf.high"] if conf_int else [])
    return pd.concat(parts, ignore_index=True)[columns]


class TidyMethods:
    """Methods of fitted results (mixed into LmerResult and GlmerResult)."""

    def tidy(self, effects=EFFECTS, conf_int: bool = False, conf_level: float = 0.95,
             ddf: str | None = None) -> pd.DataFrame:
        """The model as a DataFrame with broom.mixed's columns.

        Parameters
        ----------
        effects : "fixed", "ran_pars" or both (the default)
        conf_int : bool
            Add conf.low and conf.high: Wald intervals for the fixed effects with the
            ddf's t quantiles (normal quantiles for ddf "normal" / "none"); NaN for the
            random-effects parameters (see ``confint`` for profile intervals).
        conf_level : float
        ddf : as in ``coef_table`` (default: Satterthwaite for LMMs, normal for GLMMs)

        Returns
        -------
        pandas.DataFrame with columns effect, group, term, estimate, std.error,
        statistic, df, p.value (, conf.low, conf.high). Random-effects terms are named
        "sd__(Intercept)", "cor__(Intercept).Days", and the residual SD "sd__Observation"
        in group "Residual".
        """
        return tidy_table(self, effects, conf_int, conf_level, ddf)

    def to_json(self, path=None, indent: int | None = 2) -> str:
        """The JSON text of ``to_dict()``; also written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=indent, allow_nan=False)
        if path is not None:
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text)
        return text

    def _repr_html_(self) -> str:
        """An HTML rendering of the summary tables (notebooks), without tests for an LMM,
        as ``print(m)``: displaying a result does not compute Satterthwaite's df."""
        from .reporting import render_html, summary_tables

        lmm = self.model is None or not self.model.is_glmm
        return render_html(summary_tables(self, "none" if lmm else None))
