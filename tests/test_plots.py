"""Plots (plots.py), rendered headless (Agg): what is drawn, not only that a file exists."""
import numpy as np
import pandas as pd
import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.container import ErrorbarContainer
from refdata import load_data
from scipy import stats

import glmm_sparse as gs
from glmm_sparse import plots


@pytest.fixture(scope="module")
def slope():
    return gs.lmer("Reaction ~ Days + (Days | Subject)", load_data("sleepstudy"))


@pytest.fixture(scope="module")
def intercept():
    return gs.lmer("Reaction ~ Days + (1 | Subject)", load_data("sleepstudy"))


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def errorbars(ax) -> list:
    return [c for c in ax.containers if isinstance(c, ErrorbarContainer)]


def test_caterpillar_draws_one_sorted_panel_per_term_with_intervals(slope, tmp_path):
    fig = plots.caterpillar(slope, level=0.9)
    axes = fig.get_axes()
    assert [a.get_title() for a in axes] == ["Subject: (Intercept)", "Subject: Days"]
    re = slope.ranef
    first = re[re["term"] == "(Intercept)"].sort_values("condval", kind="stable")
    z = stats.norm.ppf(0.95)
    for a, term in zip(axes, ["(Intercept)", "Days"]):
        (eb,) = errorbars(a)
        x, y = eb.lines[0].get_data()
        assert len(x) == 18 and list(y) == list(range(18))
        want = re[re["term"] == term].set_index("grp").loc[list(first["grp"])]
        assert np.allclose(x, want["condval"])
        segments = eb.lines[2][0].get_segments()
        assert len(segments) == 18
        widths = np.array([s[1][0] - s[0][0] for s in segments])
        assert np.allclose(widths, 2 * z * want["condsd"].to_numpy())
        assert [t.get_text() for t in a.get_yticklabels()] == list(first["grp"])
    assert np.all(np.diff(errorbars(axes[0])[0].lines[0].get_data()[0]) >= 0)
    assert axes[0].get_ylabel() == "Subject" and "90%" in axes[0].get_xlabel()
    fig.savefig(tmp_path / "cat.png")
    assert (tmp_path / "cat.png").stat().st_size > 0


def test_caterpillar_on_given_axes_and_errors(slope):
    fig, ax = plt.subplots()
    assert plots.caterpillar(slope, term="Days", ax=ax) is fig
    assert ax.get_title() == "Subject: Days"
    with pytest.raises(ValueError, match="2 panel"):
        plots.caterpillar(slope, ax=ax)
    with pytest.raises(gs.ModelSpecError, match="no term 'x'"):
        plots.caterpillar(slope, term="x")
    with pytest.raises(ValueError, match="level must be in"):
        plots.caterpillar(slope, level=95)
    pastes = gs.lmer("strength ~ 1 + (1 | batch/cask)", load_data("pastes"))
    with pytest.raises(gs.ModelSpecError, match="pick one with group="):
        plots.caterpillar(pastes)
    fig = plots.caterpillar(pastes, group="batch")
    assert len(errorbars(fig.get_axes()[0])[0].lines[0].get_data()[0]) == 10


def test_shrinkage_plot_points_are_group_means_and_blups(intercept):
    fig = plots.shrinkage_plot(intercept)
    (ax,) = fig.get_axes()
    (points,) = ax.collections
    xy = points.get_offsets()
    table = intercept.shrinkage()
    assert xy.shape == (18, 2)
    assert np.allclose(xy[:, 0], table["mean_resid"]) and np.allclose(xy[:, 1], table["condval"])
    identity = [ln for ln in ax.get_lines() if ln.get_label().startswith("no shrinkage")]
    (line,) = identity
    lx, ly = line.get_data()
    assert np.allclose(lx, ly)
    assert lx[0] <= xy.min() and lx[-1] >= xy.max()
    # every point lies between the identity line and zero: |BLUP| < |mean|, same sign
    assert np.all(np.abs(xy[:, 1]) < np.abs(xy[:, 0])) and np.all(xy[:, 1] * xy[:, 0] >= 0)
    assert ax.get_title() == "shrinkage: Subject"
    assert ax.get_xlabel() == "group mean residual"
    assert ax.get_ylabel() == "BLUP (conditional mode)"


def test_shrinkage_plot_refuses_slopes(slope):
    with pytest.raises(gs.ModelSpecError, match=r"needs a random-intercept term \(1 \| g\)"):
        plots.shrinkage_plot(slope)
    with pytest.raises(gs.ModelSpecError, match="defined for random intercepts"):
        plots.shrinkage_plot(slope, group="Subject")


def test_profile_plot_draws_zeta_and_the_interval_limits():
    value = np.linspace(-4.0, 6.0, 21)
    profile = pd.concat([
        pd.DataFrame({"parameter": "(Intercept)", "value": value, "zeta": (value - 1.0) / 1.5}),
        pd.DataFrame({"parameter": "sd_(Intercept)|g", "value": np.exp(value / 4),
                      "zeta": value - 1.0}),
    ], ignore_index=True)
    fig = plots.profile_plot(profile, level=(0.95, 0.99))
    axes = fig.get_axes()
    assert [a.get_title() for a in axes] == ["(Intercept)", "sd_(Intercept)|g"]
    a = axes[0]
    curve = a.get_lines()[0]
    assert len(curve.get_xdata()) == 21
    z95, z99 = stats.norm.ppf(0.975), stats.norm.ppf(0.995)
    horizontal = sorted({ln.get_ydata()[0] for ln in a.get_lines()[1:]
                         if ln.get_ydata()[0] == ln.get_ydata()[1]
                         and ln.get_xdata()[0] != ln.get_xdata()[1]})
    assert np.allclose(horizontal, sorted([-z99, -z95, z95, z99]))
    vertical = sorted(ln.get_xdata()[0] for ln in a.get_lines()[1:]
                      if ln.get_xdata()[0] == ln.get_xdata()[1])
    # a linear profile crosses +-z exactly at 1 +- 1.5 z
    assert np.allclose(vertical, sorted([1 - 1.5 * z99, 1 - 1.5 * z95, 1 + 1.5 * z95, 1 + 1.5 * z99]))
    assert a.get_ylabel() == "zeta"
    with pytest.raises(ValueError, match="missing: zeta"):
        plots.profile_plot(profile.drop(columns="zeta"))


def test_residual_plot_has_all_points_and_a_quartile_qq_line(intercept):
    fig = plots.residual_plot(intercept)
    left, right = fig.get_axes()
    assert left.get_title() == "residuals vs fitted" and right.get_title() == "normal QQ"
    xy = left.collections[0].get_offsets()
    assert xy.shape == (180, 2)
    assert np.allclose(xy[:, 0], intercept.fitted) and np.allclose(xy[:, 1], intercept.residuals)
    qq = right.collections[0].get_offsets()
    want = stats.probplot(intercept.scaled_residuals, dist="norm", fit=False)
    assert np.allclose(qq[:, 1], want[1])
    assert np.allclose(qq[:, 0], stats.norm.ppf((np.arange(1, 181) - 0.5) / 180))
    (line,) = right.get_lines()
    q1, q3 = np.quantile(intercept.scaled_residuals, [0.25, 0.75])
    lx, ly = line.get_data()
    slope = np.diff(ly)[0] / np.diff(lx)[0]
    assert slope == pytest.approx((q3 - q1) / (stats.norm.ppf(0.75) - stats.norm.ppf(0.25)))


def test_residual_plot_thins_large_fits_and_works_for_glmms():
    d = load_data("cbpp", "glmm")
    g = gs.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)", d, family="binomial")
    fig = plots.residual_plot(g, max_points=20)
    left, right = fig.get_axes()
    assert left.collections[0].get_offsets().shape == (20, 2)
    qq = right.collections[0].get_offsets()
    assert qq.shape == (20, 2)
    assert qq[0, 1] == pytest.approx(np.min(g.scaled_residuals))
    assert qq[-1, 1] == pytest.approx(np.max(g.scaled_residuals))
    fig = plots.shrinkage_plot(g)
    assert fig.get_axes()[0].collections[0].get_offsets().shape == (15, 2)
