"""Parametric bootstrap: reproducibility, workers, progress, failures, percentile intervals,
and agreement with the profile intervals within Monte-Carlo error."""
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

import glmm_sparse as gs
from glmm_sparse.bootstrap import BootstrapResult, bootstrap, norm_inter
from glmm_sparse.errors import DataError
from refdata import load_data


@pytest.fixture(scope="module")
def dyestuff_ml():
    return gs.lmer("Yield ~ 1 + (1 | Batch)", load_data("dyestuff"), reml=False)


@pytest.fixture(scope="module")
def boot48(dyestuff_ml):
    return bootstrap(dyestuff_ml, n=48, seed=11, n_jobs=2, progress=False)


def test_result_layout(dyestuff_ml, boot48):
    assert isinstance(boot48, BootstrapResult)
    assert list(boot48.t0.index) == ["sd_(Intercept)|Batch", "sigma", "(Intercept)"]
    assert boot48.t0["sigma"] == pytest.approx(dyestuff_ml.sigma)
    assert boot48.t.shape == (48, 3) and boot48.n_failed == 0
    assert list(boot48.t.columns) == list(boot48.t0.index)


def test_same_seed_same_replicates_for_any_n_jobs(dyestuff_ml, boot48):
    serial = bootstrap(dyestuff_ml, n=24, seed=11, n_jobs=1, progress=False)
    pd.testing.assert_frame_equal(serial.t, boot48.t.iloc[:24])  # replicate i: child i
    other = bootstrap(dyestuff_ml, n=24, seed=12, n_jobs=1, progress=False)
    assert not np.allclose(other.t.to_numpy(), serial.t.to_numpy())


@pytest.fixture(scope="module")
def one_way_ml():
    """A seeded balanced one-way design, 12 groups of 60: large enough within-group df
    (708) that the percentile interval of sigma is not pulled away from the likelihood
    interval by skewness (with Dyestuff's 24 df the two differ by 0.4 SE, for a
    chi-square reason, not Monte-Carlo error)."""
    rng = np.random.default_rng(2024)
    g = np.repeat(np.arange(12), 60)
    y = 5.0 + rng.normal(size=12)[g] + rng.normal(size=g.shape[0])
    return gs.lmer("y ~ 1 + (1 | g)", pd.DataFrame({"y": y, "g": g}), reml=False)


def test_percentile_intervals_agree_with_profile_within_monte_carlo_error(one_way_ml):
    """Both from the ML fit. The a-quantile of R replicates has Monte-Carlo SE
    sqrt(a (1 - a) / R) / f(q); with f the normal density of the replicates' SD s that is
    0.19 s for a = 0.025 at R = 400: the limits must agree within 3 of those. Checked for
    sigma and the intercept; the between-group SD rests on 12 groups, whose ML estimate
    is biased (by sqrt(11/12)) and skewed (chi-square on 11 df), which moves its
    percentile limits away from the likelihood limits by more than Monte-Carlo error
    (lower limit 0.52 against 0.68 here): a property of the percentile method."""
    boot = bootstrap(one_way_ml, n=400, seed=11, n_jobs=2, progress=False)
    ci = boot.confint()
    prof = one_way_ml.confint(method="profile")
    a = 0.025
    for name in ("sigma", "(Intercept)"):
        s = boot.t[name].std()
        mc_se = np.sqrt(a * (1 - a) / boot.n) / norm.pdf(norm.ppf(a)) * s
        for col in ("lower", "upper"):
            assert abs(ci.loc[name, col] - prof.loc[name, col]) < 3.0 * mc_se, (name, col)


def test_confint_method_boot(dyestuff_ml, boot48):
    ci = dyestuff_ml.confint(method="boot", n=48, seed=11, progress=False)
    pd.testing.assert_frame_equal(ci, boot48.confint())


def test_norm_inter_is_boots_rule():
    t = np.arange(1.0, 1000.0)  # R = 999: (R + 1) 0.025 = 25 is an order statistic
    assert norm_inter(t, 0.025) == 25.0 and norm_inter(t, 0.975) == 975.0
    t = np.arange(1.0, 101.0)  # R = 100: 2.525 lies between the 2nd and 3rd
    z = norm.ppf([0.025, 2 / 101, 3 / 101])
    assert norm_inter(t, 0.025) == pytest.approx(2.0 + (z[0] - z[1]) / (z[2] - z[1]))


def test_custom_func_and_normal_intervals(dyestuff_ml):
    b = bootstrap(dyestuff_ml, n=16, seed=3, n_jobs=1, progress=False,
                  func=lambda r: r.fixef)
    assert list(b.t.columns) == ["(Intercept)"]
    ci = b.confint(type="norm")
    sd = b.t["(Intercept)"].std()
    assert ci.loc["(Intercept)", "upper"] - ci.loc["(Intercept)", "lower"] == \
        pytest.approx(2 * 1.959963984540054 * sd)
    scalar = bootstrap(dyestuff_ml, n=4, seed=3, n_jobs=1, progress=False,
                       func=lambda r: r.sigma)
    assert list(scalar.t.columns) == [0]


def test_failed_refits_are_counted_not_fatal(dyestuff_ml):
    def func(result):
        if result.fixef.iloc[0] > dyestuff_ml.fixef.iloc[0]:
            raise DataError("refused on purpose")
        return result.fixef

    with pytest.warns(RuntimeWarning, match="bootstrap refits failed"):
        b = bootstrap(dyestuff_ml, n=20, seed=5, n_jobs=1, progress=False, func=func)
    failed = b.t["(Intercept)"].isna()
    assert b.n_failed == failed.sum() and 0 < b.n_failed < 20
    assert "refused on purpose" in b.errors[0]


def test_progress_bar_on_and_off(dyestuff_ml, capsys):
    bootstrap(dyestuff_ml, n=3, seed=1, n_jobs=1, progress=False)
    assert capsys.readouterr().err == ""
    bootstrap(dyestuff_ml, n=3, seed=1, n_jobs=1, progress=True)
    assert "bootstrap" in capsys.readouterr().err


def test_glmm_bootstrap():
    g = gs.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)",
                 load_data("cbpp"), family="binomial")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b = g.bootstrap(n=6, seed=2, n_jobs=2, progress=False)
    assert list(b.t.columns) == ["sd_(Intercept)|herd", "(Intercept)", "period2", "period3",
                                 "period4"]
    assert b.n_failed == 0 and np.all(np.isfinite(b.t.to_numpy()))
    # the replicates scatter around the fit: each within 6 Wald SEs
    se = np.sqrt(np.diag(g.vcov.to_numpy()))
    assert np.all(np.abs(b.t.iloc[:, 1:].to_numpy() - g.fixef.to_numpy()) < 6 * se)


def test_bad_arguments(dyestuff_ml):
    with pytest.raises(TypeError, match="n must"):
        bootstrap(dyestuff_ml, n=0)
    with pytest.raises(TypeError, match="n_jobs"):
        bootstrap(dyestuff_ml, n=2, n_jobs=0)
