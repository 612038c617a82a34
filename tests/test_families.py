"""Tests of glmm_sparse.families: GLM families and links against R's stats family objects.

The reference tables R_LINKS and R_FAMILIES below come from R 4.2.2 (stats), printed with
``sprintf("%.17g")`` by this snippet (abridged; every table entry was produced this way)::

    L <- make.link("logit")            # each link name
    L$linkfun(mu); L$linkinv(eta); L$mu.eta(eta)
    f <- binomial()                    # binomial(), poisson(), Gamma(), inverse.gaussian(),
    dr <- f$dev.resids(y, mu, wt)      # gaussian()
    f$variance(mu); dr
    f$aic(y, wt, mu, wt, sum(dr))      # n = wt: binomial weights are trial counts
    f$aic(y, 1, mu, 1, sum(f$dev.resids(y, mu, 1)))   # "aic_unit" (binomial: wt again)
    sum(dbinom(round(wt * y), round(wt), y, log = TRUE))   # binomial loglik_saturated
    sum(dpois(y, y, log = TRUE) * wt)                      # poisson loglik_saturated
    eval(f$initialize)                 # with nobs, y, weights set: mustart

Tolerances: link functions and deviance residuals are the same floating-point formulas as
R's, so they agree to a few ulp (probit's pnorm and scipy's ndtr differ by ~15 ulp at the
clip). The aic and saturated log-likelihood use log-gamma sums where R's dbinom / dpois /
dgamma use Loader's saddle-point algorithm: ~1e-14 relative at small counts, but the
cancelling gammaln terms cost digits at counts ~1e4 or Gamma shapes ~1e4 (measured 5e-12,
hence LARGE_RTOL for those cases).
"""
import numpy as np
import pytest

from glmm_sparse.errors import DataError, ModelSpecError
from glmm_sparse.families import LINKS, Family, Link, get_family

INF = np.inf
LINK_RTOL = 1e-14
DENSITY_RTOL = 1e-13
LARGE_RTOL = 1e-11

R_LINKS = {
    "logit": dict(
        mu=[9.9999999999999998e-13, 0.20000000000000001, 0.5, 0.90000000000000002],
        linkfun=[-27.631021115927549, -1.3862943611198906, 0, 2.1972245773362196],
        eta=[-40, -30, -1, 0, 2.5, 30, 40],
        linkinv=[
            2.2204460492503126e-16, 9.3576229688393001e-14, 0.2689414213699951, 0.5,
            0.92414181997875644, 0.99999999999990641, 0.99999999999999978
        ],
        mu_eta=[
            2.2204460492503131e-16, 9.3576229688384254e-14, 0.19661193324148188, 0.25,
            0.070103716545108163, 9.3576229688384229e-14, 2.2204460492503131e-16
        ]),
    "probit": dict(
        mu=[9.9999999999999998e-13, 0.20000000000000001, 0.5, 0.90000000000000002],
        linkfun=[-7.0344838253011321, -0.84162123357291418, 0, 1.2815515655446008],
        eta=[-10, -8.1999999999999993, -1, 0, 1.3, 8.1999999999999993, 10],
        linkinv=[
            2.2204460492503284e-16, 2.2204460492503284e-16, 0.15865525393145705, 0.5,
            0.9031995154143897, 0.99999999999999978, 0.99999999999999978
        ],
        mu_eta=[
            2.2204460492503131e-16, 9.9983787484972129e-16, 0.24197072451914337, 0.3989422804014327,
            0.17136859204780736, 9.9983787484972129e-16, 2.2204460492503131e-16
        ]),
    "cauchit": dict(
        mu=[9.9999999999999998e-13, 0.20000000000000001, 0.5, 0.90000000000000002],
        linkfun=[-318309886183.79071, -1.3763819204711736, 0, 3.0776835371752544],
        eta=[-10000000000000000, -3, 0, 0.5, 3, 10000000000000000],
        linkinv=[
            2.2204460492503131e-16, 0.10241638234956672, 0.5, 0.64758361765043326,
            0.89758361765043326, 0.99999999999999978
        ],
        mu_eta=[
            2.2204460492503131e-16, 0.031830988618379068, 0.31830988618379069, 0.25464790894703254,
            0.031830988618379068, 2.2204460492503131e-16
        ]),
    "cloglog": dict(
        mu=[9.9999999999999998e-13, 0.20000000000000001, 0.5, 0.90000000000000002],
        linkfun=[
            -27.631043237892857, -1.4999399867595158, -0.36651292058166435, 0.83403244524795594
        ],
        eta=[-40, -5, 0, 1, 3.7000000000000002, 800],
        linkinv=[
            2.2204460492503131e-16, 0.0067152979321585104, 0.63212055882855767, 0.93401196415468746,
            0.99999999999999978, 0.99999999999999978
        ],
        mu_eta=[
            2.2204460492503131e-16, 0.0066926996775355145, 0.36787944117144233, 0.1793740787340172,
            2.2204460492503131e-16, 2.2204460492503131e-16
        ]),
    "log": dict(
        mu=[9.9999999999999998e-13, 0.20000000000000001, 1, 50],
        linkfun=[-27.631021115928547, -1.6094379124341003, 0, 3.912023005428146],
        eta=[-800, -40, 0, 2, 50],
        linkinv=[
            2.2204460492503131e-16, 2.2204460492503131e-16, 1, 7.3890560989306504,
            5.184705528587072e+21
        ],
        mu_eta=[
            2.2204460492503131e-16, 2.2204460492503131e-16, 1, 7.3890560989306504,
            5.184705528587072e+21
        ]),
    "identity": dict(
        mu=[-2, 0, 3.5],
        linkfun=[-2, 0, 3.5],
        eta=[-2, 0, 3.5],
        linkinv=[-2, 0, 3.5],
        mu_eta=[1, 1, 1]),
    "inverse": dict(
        mu=[-2, 0.5, 3],
        linkfun=[-0.5, 2, 0.33333333333333331],
        eta=[-2, 0.5, 3],
        linkinv=[-0.5, 2, 0.33333333333333331],
        mu_eta=[-0.25, -4, -0.1111111111111111]),
    "sqrt": dict(
        mu=[0.25, 1, 9],
        linkfun=[0.5, 1, 3],
        eta=[0.5, 1, 3],
        linkinv=[0.25, 1, 9],
        mu_eta=[1, 2, 6]),
    "1/mu^2": dict(
        mu=[0.25, 1, 4],
        linkfun=[16, 1, 0.0625],
        eta=[0.25, 1, 4],
        linkinv=[2, 1, 0.5],
        mu_eta=[-4, -0.5, -0.0625]),
}

R_FAMILIES = {
    "binomial": dict(
        y=[0, 1, 0.25, 0.59999999999999998, 0.5, 1, 0],
        mu=[
            0.20000000000000001, 0.69999999999999996, 0.29999999999999999, 0.55000000000000004,
            1e-10, 0.99999999989999999, 0.40000000000000002
        ],
        wt=[1, 1, 4, 5, 2, 3, 7],
        variance=[
            0.16000000000000003, 0.21000000000000002, 0.20999999999999999, 0.2475,
            9.9999999989999997e-11, 1.0000000826403709e-10, 0.23999999999999999
        ],
        dev_resids=[
            0.44628710262841953, 0.71334988787746478, 0.049314115333799313, 0.050936119312245121,
            43.279113137841129, 6.0000004961422262e-10, 7.1515587327238705
        ],
        aic=[56.927892376251982],
        aic_unit=[56.927892376251982],
        loglik_saturated=[-2.6186666399675245],
        mustart=[0.25, 0.75, 0.29999999999999999, 0.58333333333333337, 0.5, 0.875, 0.0625]),
    "poisson": dict(
        y=[0, 1, 3, 7, 0, 12],
        mu=[0.5, 1.2, 2.5, 9, 1e-08, 11.300000000000001],
        wt=[1, 2, 1, 0.5, 1, 1],
        variance=[0.5, 1.2, 2.5, 9, 1e-08, 11.300000000000001],
        dev_resids=[
            1, 0.070713772824181453, 0.093929340763727609, 0.24079900203365767, 2e-08,
            0.042494177672928846
        ],
        aic=[14.680241233831934],
        aic_unit=[14.789473667131722],
        loglik_saturated=[-6.6161524602687187],
        mustart=[
            0.10000000000000001, 1.1000000000000001, 3.1000000000000001, 7.0999999999999996,
            0.10000000000000001, 12.1
        ]),
    "gamma": dict(
        y=[0.5, 1.2, 3, 7.5, 0.01],
        mu=[0.80000000000000004, 1, 2.5, 9, 0.02],
        wt=[1, 2, 1, 0.5, 1],
        variance=[0.64000000000000012, 1, 6.25, 81, 0.00040000000000000002],
        dev_resids=[
            0.19000725849147104, 0.070713772824181453, 0.035356886412090838, 0.015654890127287935,
            0.38629436111989057
        ],
        aic=[0.716029241797008],
        aic_unit=[2.309577463910605],
        loglik_saturated=[0],
        mustart=[0.5, 1.2, 3, 7.5, 0.01]),
    "inverse_gaussian": dict(
        y=[0.5, 1.2, 3, 7.5, 0.01],
        mu=[0.80000000000000004, 1, 2.5, 9, 0.02],
        wt=[1, 2, 1, 0.5, 1],
        variance=[0.51200000000000012, 1, 15.625, 729, 8.0000000000000013e-06],
        dev_resids=[
            0.28125, 0.066666666666666638, 0.013333333333333334, 0.0018518518518518519,
            24.999999999999996
        ],
        aic=[17.532502887605276],
        aic_unit=[18.295021430110239],
        loglik_saturated=[0],
        mustart=[0.5, 1.2, 3, 7.5, 0.01]),
    "gaussian": dict(
        y=[-1.5, 0.20000000000000001, 3, 7.5, 0],
        mu=[-1, 0.5, 2.5, 9, 0.10000000000000001],
        wt=[1, 2, 1, 0.5, 1],
        variance=[1, 1, 1, 1, 1],
        dev_resids=[0.25, 0.17999999999999999, 0.25, 1.125, 0.010000000000000002],
        aic=[11.122623108460296],
        aic_unit=[13.378790741279021],
        loglik_saturated=[0],
        mustart=[-1.5, 0.20000000000000001, 3, 7.5, 0]),
}


# R's okLinks of each family function (cauchit is in binomial's list too).
ALLOWED = {
    "binomial": ("logit", "probit", "cloglog", "cauchit", "log"),
    "poisson": ("log", "identity", "sqrt"),
    "gamma": ("inverse", "identity", "log"),
    "inverse_gaussian": ("1/mu^2", "inverse", "identity", "log"),
    "gaussian": ("identity", "log", "inverse"),
}
CANONICAL = {"binomial": "logit", "poisson": "log", "gamma": "inverse",
             "inverse_gaussian": "1/mu^2", "gaussian": "identity"}
DISPERSION = {"binomial": False, "poisson": False, "gamma": True,
              "inverse_gaussian": True, "gaussian": True}
PAIRS = [(fam, link) for fam, links in ALLOWED.items() for link in links]


def _close(actual, expected, rtol, atol=0.0):
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


# ------------------------------------------------------------------- links vs R


@pytest.mark.parametrize("name", list(R_LINKS))
def test_link_matches_r(name):
    ref, link = R_LINKS[name], LINKS[name]
    assert link.name == name
    _close(link.linkfun(ref["mu"]), ref["linkfun"], LINK_RTOL)
    _close(link.linkinv(ref["eta"]), ref["linkinv"], LINK_RTOL)
    _close(link.mu_eta(ref["eta"]), ref["mu_eta"], LINK_RTOL)


@pytest.mark.parametrize("fam, link", PAIRS)
def test_family_link_pair_matches_r(fam, link):
    f = get_family(fam, link)
    ref, fref = R_LINKS[link], R_FAMILIES[fam]
    assert (f.name, f.link.name) == (fam, link)
    _close(f.link.linkfun(ref["mu"]), ref["linkfun"], LINK_RTOL)
    _close(f.link.linkinv(ref["eta"]), ref["linkinv"], LINK_RTOL)
    _close(f.link.mu_eta(ref["eta"]), ref["mu_eta"], LINK_RTOL)
    _close(f.variance(fref["mu"]), fref["variance"], LINK_RTOL)
    _close(f.dev_resids(fref["y"], fref["mu"], fref["wt"]), fref["dev_resids"], LINK_RTOL)


def test_logit_clipping_is_rs_exactly():
    logit = LINKS["logit"]
    eps = np.finfo(float).eps
    assert logit.linkinv(-31.0) == eps / (1 + eps)
    assert logit.linkinv(31.0) == (1 / eps) / (1 + 1 / eps)
    assert logit.mu_eta(np.array([-31.0, 31.0])).tolist() == [eps, eps]


@pytest.mark.parametrize("name", ["logit", "probit", "cauchit", "cloglog", "log"])
def test_extreme_eta_stays_inside_the_mu_domain(name):
    eta = np.array([-1e300, -1e4, 1e4 if name != "log" else 700.0])
    mu = LINKS[name].linkinv(eta)
    assert np.all(mu > 0) and np.all(np.isfinite(mu))
    assert np.all(LINKS[name].mu_eta(eta) > 0)
    if name != "log":
        assert np.all(mu < 1)


ROUNDTRIP_MU = {
    "logit": [1e-8, 0.2, 0.5, 0.97], "probit": [1e-8, 0.2, 0.5, 0.97],
    "cauchit": [1e-3, 0.2, 0.5, 0.97], "cloglog": [0.01, 0.2, 0.5, 0.97],
    "log": [1e-12, 0.3, 7.0, 1e5], "identity": [-3.0, 0.0, 2.5],
    "inverse": [-2.0, 0.5, 3.0], "sqrt": [0.0, 0.25, 9.0], "1/mu^2": [0.25, 1.0, 40.0],
}


# cloglog keeps R's log(-log(1 - mu)), which loses digits of mu below ~1e-4 (1 - mu rounds).
@pytest.mark.parametrize("name", list(ROUNDTRIP_MU))
def test_linkinv_inverts_linkfun(name):
    link, mu = LINKS[name], np.array(ROUNDTRIP_MU[name])
    _close(link.linkinv(link.linkfun(mu)), mu, 1e-12)


FD_ETA = {
    # tails on the mu -> 0 side: near mu = 1 the difference quotient cancels.
    "logit": [-12.0, 0.0, 0.7, 5.0], "probit": [-6.0, 0.0, 1.1, 3.0],
    "cauchit": [-30.0, 0.0, 0.4, 4.0], "cloglog": [-6.0, -1.0, 0.0, 1.5],
    "log": [-6.0, 0.0, 2.0], "identity": [-1.0, 0.0, 3.0], "inverse": [-2.0, 0.5, 3.0],
    "sqrt": [0.5, 1.0, 3.0], "1/mu^2": [0.25, 1.0, 4.0],
}


@pytest.mark.parametrize("name", list(FD_ETA))
def test_mu_eta_is_the_derivative_of_linkinv(name):
    link, eta = LINKS[name], np.array(FD_ETA[name])
    h = 1e-6 * np.maximum(1.0, np.abs(eta))
    fd = (link.linkinv(eta + h) - link.linkinv(eta - h)) / (2 * h)
    _close(link.mu_eta(eta), fd, 1e-7, atol=1e-12)


VALIDETA = [("inverse", [1.0, -2.0], True), ("inverse", [1.0, 0.0], False),
            ("sqrt", [0.5, 2.0], True), ("sqrt", [0.5, 0.0], False),
            ("1/mu^2", [0.1, 3.0], True), ("1/mu^2", [0.1, -1.0], False),
            ("1/mu^2", [0.1, np.inf], False), ("logit", [-1e9, np.nan], True),
            ("log", [-1e9, 1e9], True), ("identity", [-1.0], True)]


@pytest.mark.parametrize("name, eta, ok", VALIDETA)
def test_valideta(name, eta, ok):
    assert LINKS[name].valideta(eta) is ok


# ---------------------------------------------------------------- families vs R


@pytest.mark.parametrize("fam", list(R_FAMILIES))
def test_family_matches_r(fam):
    ref, f = R_FAMILIES[fam], get_family(fam)
    y, mu, wt = (np.array(ref[k]) for k in ("y", "mu", "wt"))
    _close(f.variance(mu), ref["variance"], LINK_RTOL)
    dr = f.dev_resids(y, mu, wt)
    _close(dr, ref["dev_resids"], LINK_RTOL)
    _close(f.aic(y, mu, wt, dr.sum()), ref["aic"][0], DENSITY_RTOL)
    ones = wt if fam == "binomial" else np.ones_like(y)
    _close(f.aic(y, mu, ones, f.dev_resids(y, mu, ones).sum()), ref["aic_unit"][0],
           DENSITY_RTOL)
    _close(f.loglik_saturated(y, wt), ref["loglik_saturated"][0], DENSITY_RTOL)
    _close(f.mustart(y, wt), ref["mustart"], LINK_RTOL)


@pytest.mark.parametrize("fam", ["binomial", "poisson"])
def test_saturated_loglik_links_deviance_and_aic(fam):
    # log-likelihood = loglik_saturated - deviance / 2 = -aic / 2 (no dispersion term).
    ref, f = R_FAMILIES[fam], get_family(fam)
    y, mu, wt = (np.array(ref[k]) for k in ("y", "mu", "wt"))
    dev = f.dev_resids(y, mu, wt).sum()
    _close(f.loglik_saturated(y, wt) - dev / 2, -f.aic(y, mu, wt, dev) / 2, 1e-12)


# R 4.2.2: w <- c(1000, 10000, 3); y <- c(437, 5123, 2) / w; mu <- c(.45, .5, .6)
#   binomial()$aic(y, w, mu, w, sum(binomial()$dev.resids(y, mu, w)))
#   y <- c(1e5, 12345, 3); mu <- c(99000, 12000, 2.5)   (poisson, unit weights, vector wt)
#   y <- c(1.01, .99, 1.001, 1.02); mu <- c(1, 1, 1, 1.01) (Gamma, dispersion 7.5e-5)
LARGE = [("binomial", [0.437, 0.5123, 2 / 3], [0.45, 0.5, 0.6], [1000.0, 10000.0, 3.0],
          25.420188213134679),
         ("poisson", [1e5, 12345.0, 3.0], [99000.0, 12000.0, 2.5], [1.0, 1.0, 1.0],
          47.587685010205533),
         ("gamma", [1.01, 0.99, 1.001, 1.02], [1.0, 1.0, 1.0, 1.01], [1.0] * 4,
          -24.620562912726726)]


@pytest.mark.parametrize("fam, y, mu, wt, aic", LARGE)
def test_aic_at_large_counts_and_small_dispersion_matches_r(fam, y, mu, wt, aic):
    f = get_family(fam)
    y, mu, wt = np.array(y), np.array(mu), np.array(wt)
    _close(f.aic(y, mu, wt, f.dev_resids(y, mu, wt).sum()), aic, LARGE_RTOL)


def test_binomial_rows_with_zero_trials_add_nothing():
    f = get_family("binomial")
    y, mu, wt = np.array([0.5, 0.3]), np.array([0.4, 0.9]), np.array([2.0, 0.0])
    assert f.aic(y, mu, wt, 0.0) == f.aic(y[:1], mu[:1], wt[:1], 0.0)
    assert f.dev_resids(y, mu, wt)[1] == 0.0


def test_gaussian_aic_uses_nobs_and_log_weights_like_r():
    f = get_family("gaussian")
    y, mu = np.array([1.0, 2.0, 4.0]), np.array([1.5, 2.0, 3.0])
    dev = f.dev_resids(y, mu, 1.0).sum()
    assert f.aic(y, mu, np.ones(3), dev) == pytest.approx(3 * (np.log(2 * np.pi * dev / 3) + 1) + 2)
    assert f.aic(y, mu, np.array([1.0, 0.0, 1.0]), dev) == np.inf  # as R: -sum(log(0))


@pytest.mark.parametrize("fam, mu, ok", [
    ("binomial", [0.1, 0.9], True), ("binomial", [0.0, 0.5], False),
    ("binomial", [0.5, 1.0], False), ("poisson", [1e-300, 4.0], True),
    ("poisson", [0.0, 4.0], False), ("gamma", [2.0, np.inf], False),
    ("inverse_gaussian", [-1.0], True), ("gaussian", [-1.0, np.nan], True)])
def test_validmu(fam, mu, ok):
    assert get_family(fam).validmu(mu) is ok


@pytest.mark.parametrize("fam", list(ALLOWED))
def test_family_constants(fam):
    f = get_family(fam)
    assert isinstance(f, Family) and isinstance(f.link, Link)
    assert (f.name, f.canonical, f.link.name) == (fam, CANONICAL[fam], CANONICAL[fam])
    assert f.has_dispersion is DISPERSION[fam]
    assert f.links == ALLOWED[fam]


def test_gaussian_mustart_refuses_what_r_refuses():
    with pytest.raises(DataError, match="row 1"):
        get_family("gaussian", "log").mustart([1.0, 0.0], None)
    with pytest.raises(DataError, match="row 0"):
        get_family("gaussian", "inverse").mustart([0.0, 2.0], None)
    assert get_family("gaussian", "inverse").mustart([-1.0, 2.0], None).tolist() == [-1.0, 2.0]


def test_unit_weights_equal_no_weights():
    f = get_family("binomial")
    y = np.array([0.0, 1.0, 1.0])
    assert f.mustart(y, None).tolist() == f.mustart(y, np.ones(3)).tolist()
    assert f.loglik_saturated(y, None) == f.loglik_saturated(y, np.ones(3))


# ------------------------------------------------------------------ get_family


ALIASES = {"binomial": "binomial", "Binomial": "binomial", "poisson": "poisson",
           "Gamma": "gamma", "gamma": "gamma", "GAMMA": "gamma",
           "inverse.gaussian": "inverse_gaussian", "inverse_gaussian": "inverse_gaussian",
           "Inverse.Gaussian": "inverse_gaussian", "gaussian": "gaussian"}


@pytest.mark.parametrize("alias, name", list(ALIASES.items()))
def test_family_aliases(alias, name):
    assert get_family(alias).name == name


def test_family_instances_pass_through():
    f = get_family("poisson", "sqrt")
    assert get_family(f) is f
    g = get_family(f, "identity")
    assert (g.name, g.link.name) == ("poisson", "identity")
    assert get_family("poisson", "sqrt") == f


IMPOSSIBLE = [("poisson", "logit"), ("binomial", "identity"), ("binomial", "inverse"),
              ("gamma", "sqrt"), ("gamma", "1/mu^2"), ("inverse_gaussian", "logit"),
              ("gaussian", "probit"), ("gaussian", "sqrt"), ("poisson", "no_such_link")]


@pytest.mark.parametrize("fam, link", IMPOSSIBLE)
def test_impossible_pairs_name_the_allowed_links(fam, link):
    with pytest.raises(ModelSpecError) as info:
        get_family(fam, link)
    msg = str(info.value)
    assert fam in msg and repr(link) in msg
    assert all(repr(ok) in msg for ok in ALLOWED[fam])


def test_unknown_family_is_a_model_spec_error():
    with pytest.raises(ModelSpecError, match="available families"):
        get_family("negbinomial")


@pytest.mark.parametrize("family, link", [(None, None), (1, None), (LINKS["log"], None),
                                          ("poisson", 1), ("poisson", LINKS["log"]),
                                          ("poisson", ["log"])])
def test_wrong_argument_types_are_type_errors(family, link):
    with pytest.raises(TypeError):
        get_family(family, link)


# -------------------------------------------------------------- check_response


BAD_RESPONSES = [
    # family, y, wt, row, value shown, words of the problem
    ("binomial", [0.0, 1.0, 1.5, -1.0], None, 2, "1.5", "[0, 1]"),
    ("binomial", [0.0, -0.25], None, 1, "-0.25", "[0, 1]"),
    ("binomial", [0.5, 0.25, 0.3], [2, 4, 4], 2, "1.2", "non-integer counts of successes"),
    ("binomial", [1.0, 0.5], None, 1, "0.5", "non-integer counts of successes"),
    ("binomial", [1.0, np.nan], None, 1, "nan", "non-finite"),
    ("binomial", [1.0, 0.0], [1.0, -1.0], 1, "-1", "non-negative"),
    ("poisson", [0.0, 3.0, -2.0], None, 2, "-2", "negative"),
    ("poisson", [0.0, 3.0, 2.5, 1.5], None, 2, "2.5", "non-integer"),
    ("poisson", [np.inf], None, 0, "inf", "non-finite"),
    ("gamma", [1.0, 0.0, -3.0], None, 1, "0", "non-positive"),
    ("gamma", [-0.5], None, 0, "-0.5", "non-positive"),
    ("inverse_gaussian", [2.0, 3.0, -1.0], None, 2, "-1", "non-positive"),
    ("inverse_gaussian", [0.0], None, 0, "0", "non-positive"),
    ("gaussian", [1.0, np.nan], None, 1, "nan", "non-finite"),
]


@pytest.mark.parametrize("fam, y, wt, row, value, problem", BAD_RESPONSES)
def test_check_response_names_row_and_value(fam, y, wt, row, value, problem):
    with pytest.raises(DataError) as info:
        get_family(fam).check_response(np.array(y), wt, name="yvar")
    msg = str(info.value)
    assert f"row {row} " in msg and f"value {value})" in msg
    assert problem in msg and "yvar" in msg


GOOD_RESPONSES = [("binomial", [0.0, 1.0, 1.0], None), ("binomial", [0.25, 0.5, 0.0], [4, 2, 0]),
                  ("binomial", [1 / 3], [3.0]), ("poisson", [0.0, 1.0, 12.0], None),
                  ("gamma", [1e-300, 4.0], None), ("inverse_gaussian", [0.5], [2.0]),
                  ("gaussian", [-3.0, 0.0, 2.0], None)]


@pytest.mark.parametrize("fam, y, wt", GOOD_RESPONSES)
def test_check_response_accepts_valid_data(fam, y, wt):
    assert get_family(fam).check_response(y, wt) is None


def test_check_response_rejects_mismatched_weights():
    with pytest.raises(DataError, match="shape"):
        get_family("poisson").check_response([1.0, 2.0, 3.0], [1.0, 2.0])


def test_binomial_deviance_at_y_equal_mu_equal_one_is_zero():
    """R: binomial("log")$dev.resids(1, 1, 1) == 0 (0 log 0 = 0 on the failure side too)."""
    fam = get_family("binomial", "log")
    assert fam.dev_resids(np.array([1.0, 0.0]), np.array([1.0, 0.0]), np.ones(2)).tolist() == [0.0, 0.0]
