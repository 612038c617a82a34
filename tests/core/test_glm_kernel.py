"""Per-row GLM kernels against the NumPy oracle glmm_sparse.families, for every family x link.

The kernels use the oracle's formulas with libm's exp / log / erfc / atan where NumPy uses
its own SIMD exp / log / atan and scipy's ndtr; the two differ by an ulp now and then (exp in
about 5% of arguments here). mu is well conditioned in eta and is compared at 1e-13 relative.
The weights (through V(mu) = mu (1 - mu), near mu = 1) and the working residual (through
y - mu, near y = mu) amplify a one-ulp difference in mu, so they are compared twice: at the
kernel's own mu, where the remaining formulas match at 1e-13 relative, and end to end with the
tolerance scaled by the quantity's condition number in mu.
"""
import numpy as np
import pytest

from glmm_sparse._core._glm import (FAMILY_CODES, LINK_CODES, deviance, deviance_by_group,
                                    working, working_response)
from glmm_sparse.families import FAMILIES, get_family

TOL = 1e-13
N_RANDOM = 300
CASES = [(fam, link) for fam, cls in FAMILIES.items() for link in cls.links]
BOUNDED = ("logit", "probit", "cloglog", "cauchit")
PROBIT_THRESH = 8.125890664701906
CAUCHIT_THRESH = 1.0 / np.tan(np.pi * np.finfo(float).eps)


# ----------------------------------------------------------------------- data


def edges(x):
    """x and its neighbouring doubles on both sides, for both signs."""
    x = np.asarray(x, dtype=float)
    pts = np.concatenate([x, np.nextafter(x, np.inf), np.nextafter(x, -np.inf)])
    return np.concatenate([pts, -pts])


def eta_for(rng, family, link):
    """Linear predictors in the link's domain, with the clipping thresholds and extremes."""
    if link in BOUNDED:
        special = [0.0, 8.0, 30.0, 36.0, 40.0, PROBIT_THRESH]
        if link == "cauchit":
            special += [1e3, CAUCHIT_THRESH, 1e16]
        return np.concatenate([rng.uniform(-40, 40, N_RANDOM), rng.normal(0, 3, 100),
                               edges(special)])
    if link == "log":  # binomial: mu = exp(eta) <= 1; mu = 1 itself is a separate test
        hi = -1e-3 if family == "binomial" else 4.0
        return np.concatenate([rng.uniform(-40, hi, N_RANDOM), [-40.0, np.log(2.0**-52), hi]])
    if link == "identity":
        lo = -10.0 if family == "gaussian" else 0.05
        return rng.uniform(lo, 10, N_RANDOM)
    if link == "inverse":
        eta = rng.uniform(0.05, 5, N_RANDOM)
        return eta * rng.choice([-1.0, 1.0], N_RANDOM) if family == "gaussian" else eta
    return rng.uniform(0.05, 5, N_RANDOM)  # sqrt, 1/mu^2: eta > 0


def response_for(rng, family, n):
    """(y, prior_w) valid for the family; a few zero prior weights outside the binomial."""
    if family == "binomial":  # proportions of integer successes over random trials, then 0/1
        half = n // 2
        trials = rng.integers(1, 21, half).astype(float)
        y = np.concatenate([rng.integers(0, 21, half) % (trials + 1) / trials,
                            rng.integers(0, 2, n - half).astype(float)])
        return y, np.concatenate([trials, np.ones(n - half)])
    w = rng.uniform(0.2, 3.0, n)
    w[rng.choice(n, 3, replace=False)] = 0.0
    if family == "poisson":
        return rng.poisson(3.0, n).astype(float), w
    if family in ("gamma", "inverse_gaussian"):
        return rng.gamma(2.0, 1.5, n), w
    return rng.normal(0.0, 3.0, n), w


def problem(family, link, seed=0):
    """(family object, codes, y, prior_w, eta) for one family x link."""
    rng = np.random.default_rng([seed, CASES.index((family, link))])
    eta = eta_for(rng, family, link)
    y, prior_w = response_for(rng, family, eta.size)
    return get_family(family, link), (FAMILY_CODES[family], LINK_CODES[link]), y, prior_w, eta


def run_working(codes, y, prior_w, eta):
    mu, w, resid = (np.full(eta.size, np.nan) for _ in range(3))
    dev = working(*codes, y, prior_w, eta, mu, w, resid)
    return dev, mu, w, resid


# ----------------------------------------------------------------------- tolerances


def assert_rel(actual, expected, scale=None):
    """|actual - expected| <= TOL * scale elementwise (scale = |expected| by default)."""
    scale = np.abs(expected) if scale is None else scale
    err = np.abs(actual - expected)
    bad = ~(err <= TOL * scale)
    worst = np.argmax(err - TOL * scale)
    assert not bad.any(), (f"{bad.sum()} rows off, worst at row {worst}: "
                           f"{actual[bad][:3]} vs {expected[bad][:3]}")


def variance_condition(fam, mu):
    """|mu V'(mu) / V(mu)|: relative change of V per relative change of mu."""
    return {"binomial": np.abs(1 - 2 * mu) / (1 - mu), "poisson": 1.0, "gamma": 2.0,
            "inverse_gaussian": 3.0, "gaussian": 0.0}[fam.name] * np.ones_like(mu)


def deviance_terms(fam, y, mu, wt):
    """Sum of the absolute terms of each row's deviance: where the formula cancels, the
    rounding error is relative to this, not to the (small) difference."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ylogy = lambda a, b: np.where(a != 0, a * np.log(a / b), 0.0)  # noqa: E731
        if fam.name == "binomial":
            return 2 * wt * (np.abs(ylogy(y, mu)) + np.abs(ylogy(1 - y, 1 - mu)))
        if fam.name == "poisson":
            return 2 * wt * (np.abs(ylogy(y, mu)) + np.abs(y - mu) + mu)
        if fam.name == "gamma":
            return 2 * wt * (np.abs(np.log(y / mu)) + np.abs((y - mu) / mu))
    return np.abs(fam.dev_resids(y, mu, wt))


# ----------------------------------------------------------------------- against the oracle


@pytest.mark.parametrize(("family", "link"), CASES)
def test_working_mu_and_deviance_match_oracle(family, link):
    fam, codes, y, prior_w, eta = problem(family, link)
    dev, mu, _, _ = run_working(codes, y, prior_w, eta)
    mu_ref = fam.link.linkinv(eta)
    # probit: 0.5 erfc(-x / sqrt 2) (glibc) against scipy's ndtr differs by <= 4.2e-15
    # relative on [-8.13, 8.13] (measured on 1.2e6 points, 42% not bitwise equal): inside TOL.
    assert_rel(mu, mu_ref)
    dev_ref = fam.dev_resids(y, mu_ref, prior_w).sum()
    assert abs(dev - dev_ref) <= TOL * dev_ref


@pytest.mark.parametrize(("family", "link"), CASES)
def test_working_weights_and_residuals_at_kernel_mu(family, link):
    fam, codes, y, prior_w, eta = problem(family, link)
    _, mu, w, resid = run_working(codes, y, prior_w, eta)
    mu_eta = fam.link.mu_eta(eta)
    assert_rel(w, prior_w * mu_eta**2 / fam.variance(mu))
    assert_rel(resid, (y - mu) / mu_eta)


@pytest.mark.parametrize(("family", "link"), CASES)
def test_working_weights_and_residuals_end_to_end(family, link):
    fam, codes, y, prior_w, eta = problem(family, link)
    _, _, w, resid = run_working(codes, y, prior_w, eta)
    mu, mu_eta = fam.link.linkinv(eta), fam.link.mu_eta(eta)
    w_ref, resid_ref = prior_w * mu_eta**2 / fam.variance(mu), (y - mu) / mu_eta
    # A relative error e in mu moves V(mu) by e |mu V'/V| and y - mu by e |mu|.
    assert_rel(w, w_ref, np.abs(w_ref) * (1 + variance_condition(fam, mu)))
    assert_rel(resid, resid_ref, np.abs(resid_ref) + np.abs(mu / mu_eta))


@pytest.mark.parametrize(("family", "link"), CASES)
def test_row_deviances_at_kernel_mu(family, link):
    fam, codes, y, prior_w, eta = problem(family, link)
    _, mu, _, _ = run_working(codes, y, prior_w, eta)
    out = np.zeros(eta.size)
    assert deviance_by_group(*codes, y, prior_w, eta, np.arange(eta.size), out) is None
    assert_rel(out, fam.dev_resids(y, mu, prior_w), deviance_terms(fam, y, mu, prior_w))


@pytest.mark.parametrize(("family", "link"), CASES)
def test_deviance_is_working_return_value(family, link):
    _, codes, y, prior_w, eta = problem(family, link, seed=1)
    assert deviance(*codes, y, prior_w, eta) == run_working(codes, y, prior_w, eta)[0]


@pytest.mark.parametrize(("family", "link"), CASES)
def test_deviance_by_group_sums_oracle_residuals(family, link):
    fam, codes, y, prior_w, eta = problem(family, link, seed=2)
    rng = np.random.default_rng(3)
    ngroups = 12
    groups = rng.integers(0, ngroups - 1, eta.size)  # the last group gets no rows
    start = rng.uniform(1, 2, ngroups)
    out = start.copy()
    deviance_by_group(*codes, y, prior_w, eta, groups, out)
    dev_ref = fam.dev_resids(y, fam.link.linkinv(eta), prior_w)
    expected = start + np.bincount(groups, weights=dev_ref, minlength=ngroups)
    assert_rel(out, expected)
    assert out[-1] == start[-1]


@pytest.mark.parametrize(("family", "link"), CASES)
def test_non_finite_eta_propagates_like_oracle(family, link):
    fam, codes, _, _, _ = problem(family, link)
    eta = np.array([np.nan, np.inf, -np.inf])
    y, prior_w = np.full(3, 0.5 if family == "binomial" else 2.0), np.ones(3)
    with np.errstate(all="ignore"):
        _, mu, w, resid = run_working(codes, y, prior_w, eta)
        mu_ref, mu_eta = fam.link.linkinv(eta), fam.link.mu_eta(eta)
        w_ref, resid_ref = prior_w * mu_eta**2 / fam.variance(mu_ref), (y - mu_ref) / mu_eta
    for got, ref in ((mu, mu_ref), (w, w_ref), (resid, resid_ref)):
        np.testing.assert_allclose(got, ref, rtol=TOL, atol=0)  # inf == inf, NaN == NaN


# ----------------------------------------------------------------------- conventions


@pytest.mark.parametrize(("family", "link"), CASES)
def test_working_response_is_working_with_z(family, link):
    """The streamed pass's kernel: the weights and deviance of ``working`` (tested against
    the oracle above) bit for bit, z = (eta - base) + resid with NumPy's two roundings,
    and the largest |eta| and the counts of positive and of non-finite weights."""
    _, codes, y, prior_w, eta = problem(family, link)
    base = np.random.default_rng(5).normal(size=eta.size)
    dev_ref, _, w_ref, resid = run_working(codes, y, prior_w, eta)
    w, z = np.full(eta.size, np.nan), np.full(eta.size, np.nan)
    dev, largest, positive, nonfinite = working_response(*codes, y, prior_w, eta, base, w, z)
    assert dev == dev_ref
    assert np.array_equal(w, w_ref, equal_nan=True)
    assert np.array_equal(z, (eta - base) + resid, equal_nan=True)
    assert largest == np.max(np.abs(eta))
    assert positive == np.count_nonzero(w_ref > 0)
    assert nonfinite == np.count_nonzero(~np.isfinite(w_ref))


def test_working_response_counts_non_finite_weights_and_checks_lengths():
    codes = FAMILY_CODES["poisson"], LINK_CODES["log"]
    eta = np.array([0.0, np.nan, 1.0])
    y, pw, w, z = np.ones(3), np.array([1.0, 1.0, 0.0]), np.empty(3), np.empty(3)
    _, largest, positive, nonfinite = working_response(*codes, y, pw, eta, np.zeros(3), w, z)
    assert (largest, positive, nonfinite) == (1.0, 1, 1)
    with pytest.raises(ValueError, match="one entry per row"):
        working_response(*codes, y, pw, eta, np.zeros(2), w, z)


def test_binomial_zero_log_zero_is_zero():
    # R: binomial("log")$dev.resids(1, 1, 1) == 0 (family.c's y_log_y is 0 at y == 0, even
    # where y / mu is 0 / 0); mu = 1 is reached by the log link at eta = 0.
    codes = (FAMILY_CODES["binomial"], LINK_CODES["log"])
    y, prior_w, eta = np.array([1.0, 0.0]), np.array([1.0, 3.0]), np.array([0.0, -np.log(4.0)])
    expected = 3.0 * 2.0 * np.log(1.0 / 0.75)
    assert deviance(*codes, y, prior_w, eta) == pytest.approx(expected, rel=TOL)


def test_gamma_zero_response_convention():
    # R's Gamma()$dev.resids takes log(y / mu) as 0 at y == 0 (families.py does the same);
    # such y is refused by check_response, but the kernel must not turn it into -inf.
    fam = get_family("gamma", "log")
    codes = (FAMILY_CODES["gamma"], LINK_CODES["log"])
    y, prior_w, eta = np.array([0.0, 1.5]), np.array([2.0, 1.0]), np.array([0.3, -0.2])
    expected = fam.dev_resids(y, fam.link.linkinv(eta), prior_w).sum()
    assert np.isfinite(expected)
    assert deviance(*codes, y, prior_w, eta) == pytest.approx(expected, rel=TOL)


def test_empty_input():
    e = np.empty(0)
    assert working(0, 0, e, e, e, e, e, e) == 0.0
    assert deviance(0, 0, e, e, e) == 0.0
    deviance_by_group(0, 0, e, e, e, np.empty(0, dtype=np.int64), np.empty(0))


def test_read_only_inputs_accepted():
    _, codes, y, prior_w, eta = problem("poisson", "log")
    for a in (y, prior_w, eta):
        a.setflags(write=False)
    assert np.isfinite(run_working(codes, y, prior_w, eta)[0])


def test_codes_tables():
    assert FAMILY_CODES == {"binomial": 0, "poisson": 1, "gamma": 2, "inverse_gaussian": 3,
                            "gaussian": 4}
    assert LINK_CODES == {"logit": 0, "probit": 1, "cloglog": 2, "log": 3, "identity": 4,
                          "inverse": 5, "sqrt": 6, "1/mu^2": 7, "cauchit": 8}
    assert set(FAMILY_CODES) == set(FAMILIES)
    assert {link for cls in FAMILIES.values() for link in cls.links} <= set(LINK_CODES)


# ----------------------------------------------------------------------- validation

N = 5


def buffers(n_y=N, n_w=N, n_eta=N, n_mu=N, n_wo=N, n_res=N):
    ones = np.ones
    return (ones(n_y) * 0.5, ones(n_w), np.zeros(n_eta),
            np.full(n_mu, -7.0), np.full(n_wo, -7.0), np.full(n_res, -7.0))


@pytest.mark.parametrize(("family", "link"), [(-1, 0), (5, 0), (0, -1), (0, 9)])
def test_unknown_codes_raise(family, link):
    y, w, eta, mu, wo, res = buffers()
    with pytest.raises(ValueError, match="unknown (family|link) code"):
        working(family, link, y, w, eta, mu, wo, res)
    with pytest.raises(ValueError, match="unknown (family|link) code"):
        deviance(family, link, y, w, eta)
    with pytest.raises(ValueError, match="unknown (family|link) code"):
        deviance_by_group(family, link, y, w, eta, np.zeros(N, dtype=np.int64), np.zeros(1))
    assert np.all(mu == -7.0) and np.all(wo == -7.0) and np.all(res == -7.0)


@pytest.mark.parametrize("bad", ["n_y", "n_w", "n_eta", "n_mu", "n_wo", "n_res"])
def test_length_mismatch_raises_before_writing(bad):
    y, w, eta, mu, wo, res = buffers(**{bad: N + 1})
    with pytest.raises(ValueError, match="length|one entry per row"):
        working(0, 0, y, w, eta, mu, wo, res)
    assert np.all(mu == -7.0) and np.all(wo == -7.0) and np.all(res == -7.0)
    if bad in ("n_y", "n_w", "n_eta"):
        with pytest.raises(ValueError, match="length"):
            deviance(0, 0, y, w, eta)


@pytest.mark.parametrize(("groups", "message"), [
    (np.array([0, 1, 2, 3, 4]), r"codes must lie in \[0, 4\)"),
    (np.array([0, -1, 2, 3, 1]), r"codes must lie in \[0, 4\)"),
    (np.array([0, 1, 2, 3]), "one entry per row"),
])
def test_bad_group_codes_raise_before_writing(groups, message):
    y, w, eta, *_ = buffers()
    out = np.full(4, -7.0)
    with pytest.raises(ValueError, match=message):
        deviance_by_group(0, 0, y, w, eta, groups.astype(np.int64), out)
    assert np.all(out == -7.0)


def test_wrong_dtype_raises():
    y, w, eta, mu, wo, res = buffers()
    with pytest.raises(ValueError):
        working(0, 0, y.astype(np.float32), w, eta, mu, wo, res)
    with pytest.raises(TypeError, match="No matching signature"):  # codes: int32 or int64
        deviance_by_group(0, 0, y, w, eta, np.zeros(N, dtype=np.int16), np.zeros(1))


def test_int32_codes_equal_int64_codes():
    y, w, eta, mu, wo, res = buffers()
    groups = np.arange(N) % 4
    out32, out64 = np.zeros(4), np.zeros(4)
    deviance_by_group(0, 0, y, w, eta, groups.astype(np.int32), out32)
    deviance_by_group(0, 0, y, w, eta, groups.astype(np.int64), out64)
    assert np.array_equal(out32, out64)
