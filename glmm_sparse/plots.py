"""Plots of fitted models: caterpillar, shrinkage, profile zeta and residual diagnostics.

The reporting layer's pictures (... -> results -> inference -> report). matplotlib is an
optional extra (``pip install glmm_sparse[plot]``), imported only when a plot is drawn.
Every function draws on the axes it is given, or on a new figure, and returns the Figure.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from .errors import DataError, ModelSpecError

QQ_POINTS = 50_000  # residual plots thin larger fits to this many points (see residual_plot)


def _pyplot():
    """matplotlib.pyplot, or an ImportError saying how to install it."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover - exercised only without matplotlib
        raise ImportError("glmm_sparse.plots needs matplotlib: pip install 'glmm_sparse[plot]' "
                          "(or pip install matplotlib)") from err
    return plt


def _axes(ax, n: int, *, width: float = 4.5, height: float = 4.0) -> list:
    """n axes: the ones given (one, or a sequence of n), or a new figure's row of n."""
    if ax is None:
        plt = _pyplot()
        _, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False)
        return list(axes[0])
    axes = list(np.ravel(ax)) if isinstance(ax, (list, tuple, np.ndarray)) else [ax]
    if len(axes) != n:
        raise ValueError(f"this plot has {n} panel(s) but ax= gave {len(axes)} axes: pass "
                         f"{n} axes, or ax=None for a new figure")
    return axes


def _z(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), not {level!r}")
    return float(stats.norm.ppf(0.5 + level / 2.0))


def _one_group(ranef: pd.DataFrame, group: str | None) -> str:
    groups = list(dict.fromkeys(ranef["grpvar"]))
    if group is None:
        if len(groups) > 1:
            raise ModelSpecError(f"the model has several grouping factors "
                                 f"({', '.join(map(repr, groups))}): pick one with group=")
        return groups[0]
    if group not in groups:
        raise ModelSpecError(f"no random effects for group {group!r}; the model's groups "
                             f"are {', '.join(map(repr, groups))}")
    return group


def caterpillar(result, group: str | None = None, term: str | None = None,
                level: float = 0.95, ax=None):
    """Conditional modes with intervals condval +- z * condsd, one panel per term.

    Parameters
    ----------
    result : LmerResult or GlmerResult
    group : str, optional
        The grouping factor (``ranef["grpvar"]``); needed when there are several.
    term : str, optional
        One term of that group (e.g. "Days"); all of them, one panel each, by default.
    level : float
        Coverage of the intervals under the normal approximation (lme4's dotplot).
    ax : matplotlib Axes or sequence of Axes, optional
        One per panel; a new figure when omitted.

    Returns
    -------
    matplotlib.figure.Figure
        Levels sorted by the conditional mode of the first panel's term, as lme4's
        ``dotplot(ranef(m, condVar = TRUE))``; the same order in every panel.
    """
    re = result.ranef
    group = _one_group(re, group)
    rows = re[re["grpvar"] == group]
    terms = list(dict.fromkeys(rows["term"]))
    if term is not None:
        if term not in terms:
            raise ModelSpecError(f"group {group!r} has no term {term!r}; its terms are "
                                 f"{', '.join(map(repr, terms))}")
        terms = [term]
    nlev = int((rows["term"] == terms[0]).sum())
    axes = _axes(ax, len(terms), height=max(3.0, 0.18 * nlev + 1.0))
    first = rows[rows["term"] == terms[0]]
    order = list(first["grp"].iloc[np.argsort(first["condval"].to_numpy(), kind="stable")])
    z = _z(level)
    for a, name in zip(axes, terms):
        _caterpillar_panel(a, rows[rows["term"] == name].set_index("grp").loc[order], z)
        a.set_title(f"{group}: {name}")
        a.set_xlabel(f"conditional mode ({level:.0%} interval)")
    axes[0].set_ylabel(group)
    return axes[0].figure


def _caterpillar_panel(ax, rows: pd.DataFrame, z: float) -> None:
    y = np.arange(len(rows))
    ax.errorbar(rows["condval"], y, xerr=z * rows["condsd"], fmt="o", markersize=3,
                capsize=0, linewidth=1)
    ax.axvline(0.0, color="grey", linewidth=0.8, linestyle="--")
    ax.set_yticks(y)
    ax.set_yticklabels([str(g) for g in rows.index], fontsize="small")


def shrinkage_plot(result, group: str | None = None, ax=None):
    """Group means of the residual vs the BLUPs, with the identity line.

    Parameters
    ----------
    result : LmerResult or GlmerResult
        With a random-intercept term (1 | g); the points are ``result.shrinkage(group)``:
        x = mean_resid (the group's mean residual from the fixed part, for one-term LMMs),
        y = condval. Points below the identity line (in absolute value) are shrunk.
    group : str, optional
        Needed when the model has several random-intercept terms.
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    table = result.shrinkage(group)
    (a,) = _axes(ax, 1, width=5.0, height=5.0)
    x, y = table["mean_resid"].to_numpy(), table["condval"].to_numpy()
    a.scatter(x, y, s=18, label="levels", zorder=3)
    lim = float(np.nanmax(np.abs(np.concatenate([x, y])))) * 1.05 or 1.0
    a.plot([-lim, lim], [-lim, lim], color="grey", linestyle="--", label="no shrinkage (y = x)")
    a.axhline(0.0, color="grey", linewidth=0.6)
    a.set_xlim(-lim, lim)
    a.set_ylim(-lim, lim)
    a.set_aspect("equal")
    a.set_xlabel("group mean residual")
    a.set_ylabel("BLUP (conditional mode)")
    a.set_title(f"shrinkage: {table.attrs['group']}")
    a.legend(loc="upper left", fontsize="small")
    return a.figure


def profile_plot(profile_df: pd.DataFrame, level: float | tuple[float, ...] = 0.95, ax=None):
    """Profile zeta plots (lme4's xyplot of a profile): zeta against each parameter.

    Parameters
    ----------
    profile_df : pandas.DataFrame
        Columns "parameter", "value", "zeta" (the format of ``result.profile()``).
    level : float or tuple of float
        Confidence levels drawn as horizontal lines at zeta = +-z and vertical lines where
        the profile crosses them (the profile interval's limits, by linear interpolation).
    ax : matplotlib Axes or sequence of Axes, optional
        One per parameter; a new figure when omitted.

    Returns
    -------
    matplotlib.figure.Figure
    """
    missing = {"parameter", "value", "zeta"} - set(profile_df.columns)
    if missing:
        raise ValueError(f"profile_df needs the columns 'parameter', 'value', 'zeta' "
                         f"(result.profile()); missing: {', '.join(sorted(missing))}")
    params = list(dict.fromkeys(profile_df["parameter"]))
    axes = _axes(ax, len(params), width=3.5, height=3.5)
    levels = (level,) if np.isscalar(level) else tuple(level)
    for a, name in zip(axes, params):
        rows = profile_df[profile_df["parameter"] == name].sort_values("value")
        _profile_panel(a, rows["value"].to_numpy(), rows["zeta"].to_numpy(), levels)
        a.set_title(str(name))
        a.set_xlabel("value")
    axes[0].set_ylabel("zeta")
    return axes[0].figure


def _profile_panel(ax, value: np.ndarray, zeta: np.ndarray, levels) -> None:
    ax.plot(value, zeta, color="C0", marker=".", markersize=3)
    for lev in levels:
        z = _z(lev)
        for target in (-z, z):
            ax.axhline(target, color="grey", linewidth=0.7, linestyle=":")
            limit = _crossing(value, zeta, target)
            if limit is not None:
                ax.axvline(limit, color="C1", linewidth=0.8, linestyle="--")


def _crossing(value: np.ndarray, zeta: np.ndarray, target: float) -> float | None:
    """Where the (increasing) profile first crosses zeta = target, linearly interpolated."""
    d = zeta - target
    at = np.flatnonzero(np.sign(d[:-1]) * np.sign(d[1:]) <= 0)
    if at.size == 0:
        return None
    i = at[0]
    if d[i + 1] == d[i]:
        return float(value[i])
    return float(value[i] - d[i] * (value[i + 1] - value[i]) / (d[i + 1] - d[i]))


def residual_plot(result, ax=None, max_points: int = QQ_POINTS):
    """Residuals against fitted values, and a normal QQ plot of the scaled residuals.

    Parameters
    ----------
    result : LmerResult or GlmerResult
        Residuals y - fitted (LMM; deviance residuals for a GLMM) against the fitted values
        (mu for a GLMM); the QQ plot shows ``result.scaled_residuals`` (Pearson, scaled by
        sigma) against normal quantiles at R's ppoints, with the line through the quartiles.
    ax : sequence of two matplotlib Axes, optional
    max_points : int
        Larger fits are thinned to this many points: evenly spaced rows in the left panel,
        evenly spaced order statistics in the QQ plot (which keeps its shape).

    Returns
    -------
    matplotlib.figure.Figure
    """
    if result.fitted is None:
        raise DataError("this fit keeps no per-row values (its rows were streamed from "
                        "Parquet): fit with lmer(..., streaming=False) to plot residuals")
    left, right = _axes(ax, 2)
    fitted, resid = result.fitted.to_numpy(), result.residuals.to_numpy()
    rows = _thin(fitted.shape[0], max_points)
    left.scatter(fitted[rows], resid[rows], s=6, alpha=0.6)
    left.axhline(0.0, color="grey", linestyle="--", linewidth=0.8)
    left.set_xlabel("fitted")
    left.set_ylabel("residual")
    left.set_title("residuals vs fitted")
    _qq_panel(right, np.asarray(result.scaled_residuals, dtype=float), max_points)
    return left.figure


def _thin(n: int, max_points: int) -> np.ndarray:
    return np.arange(n) if n <= max_points else np.linspace(0, n - 1, max_points).astype(np.int64)


def _qq_panel(ax, scaled: np.ndarray, max_points: int) -> None:
    n = scaled.shape[0]
    a = 3.0 / 8.0 if n <= 10 else 0.5  # R's ppoints
    theory = stats.norm.ppf((np.arange(1, n + 1) - a) / (n + 1 - 2 * a))
    sample = np.sort(scaled)
    keep = _thin(n, max_points)
    ax.scatter(theory[keep], sample[keep], s=6, alpha=0.6)
    q1, q3 = np.quantile(scaled, [0.25, 0.75])
    slope = (q3 - q1) / (stats.norm.ppf(0.75) - stats.norm.ppf(0.25))
    ends = np.array([theory[0], theory[-1]])
    ax.plot(ends, q1 + slope * (ends - stats.norm.ppf(0.25)), color="grey", linestyle="--")
    ax.set_xlabel("normal quantile")
    ax.set_ylabel("scaled residual")
    ax.set_title("normal QQ")
