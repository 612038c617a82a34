"""GLM families and link functions for PIRLS and the Laplace / AGQ deviance.

Sits beside the GLMM objective (formula -> terms -> cross-products -> factor -> PIRLS ->
optimize): PIRLS needs ``linkinv``, ``mu_eta`` and ``variance`` for its working weights
and response, the Laplace deviance needs ``dev_resids``, and the results layer needs
``aic`` and ``loglik_saturated``. Every quantity follows R's ``stats`` family objects
(R 4.2), which lme4 uses, including their numerical guards (the eps clipping of
``linkinv`` / ``mu.eta``) and their conventions for prior weights: for the binomial the
response is the proportion of successes and the prior weight the number of trials.

All functions are vectorised over rows; inputs are anything ``np.asarray`` accepts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, ClassVar

import numpy as np
from scipy.special import gammaln, ndtr, ndtri, xlog1py, xlogy

from .errors import DataError, ModelSpecError
from .validate import row_label

EPS = float(np.finfo(float).eps)  # R's .Machine$double.eps / DBL_EPSILON
_LOGIT_THRESH = 30.0  # THRESH / MTHRESH of R's src/library/stats/src/family.c
# -qnorm(eps) as R computes it; scipy's ndtri(eps) is 2 ulp away.
_PROBIT_THRESH = 8.125890664701906
_CAUCHIT_THRESH = float(1.0 / np.tan(np.pi * EPS))  # -qcauchy(eps)
_M_1_SQRT_2PI = 0.398942280401432677939946059934


def _f(x) -> np.ndarray:
    return np.asarray(x, dtype=float)


# ---------------------------------------------------------------------------- links


@dataclass(frozen=True)
class Link:
    """A link eta = g(mu) with R's ``make.link`` inverse, derivative and validity check."""

    name: str
    _fun: Callable = field(repr=False, compare=False)
    _inv: Callable = field(repr=False, compare=False)
    _deriv: Callable = field(repr=False, compare=False)
    _valid: Callable | None = field(default=None, repr=False, compare=False)

    # R evaluates these silently: overflow to inf and log(0) = -inf are part of the contract.
    def linkfun(self, mu) -> np.ndarray:
        """eta = g(mu)."""
        with np.errstate(divide="ignore", over="ignore"):
            return self._fun(_f(mu))

    def linkinv(self, eta) -> np.ndarray:
        """mu = g^-1(eta), clipped as R clips it."""
        with np.errstate(divide="ignore", over="ignore"):
            return self._inv(_f(eta))

    def mu_eta(self, eta) -> np.ndarray:
        """dmu/deta at eta (R's ``mu.eta``), floored at eps where R floors it."""
        with np.errstate(divide="ignore", over="ignore"):
            return self._deriv(_f(eta))

    def valideta(self, eta) -> bool:
        """Whether eta lies in the domain of ``linkinv`` (R's ``valideta``)."""
        return True if self._valid is None else bool(self._valid(_f(eta)))


def _logit_inv(eta):
    # R's C_logit_linkinv: exp(eta) is replaced by eps / 1/eps beyond |eta| > 30.
    t = np.exp(np.clip(eta, -_LOGIT_THRESH, _LOGIT_THRESH))
    t = np.where(eta < -_LOGIT_THRESH, EPS, np.where(eta > _LOGIT_THRESH, 1.0 / EPS, t))
    return t / (1.0 + t)


def _logit_mu_eta(eta):
    # R's C_logit_mu_eta: exp(eta) / (1 + exp(eta))^2, eps beyond |eta| > 30.
    e = np.exp(np.clip(eta, -_LOGIT_THRESH, _LOGIT_THRESH))
    opexp = 1.0 + e
    return np.where(np.abs(eta) > _LOGIT_THRESH, EPS, e / (opexp * opexp))


def _cloglog_inv(eta):
    return np.maximum(np.minimum(-np.expm1(-np.exp(eta)), 1.0 - EPS), EPS)


def _cloglog_mu_eta(eta):
    e = np.exp(np.minimum(eta, 700.0))
    return np.maximum(e * np.exp(-e), EPS)


def _qcauchy(p):
    # R's qcauchy: -1/tanpi(p) below 1/2, 1/tanpi(1 - p) above, for accuracy in both tails.
    with np.errstate(divide="ignore"):
        lower = -1.0 / np.tan(np.pi * p)
        upper = 1.0 / np.tan(np.pi * (1.0 - p))
    return np.where(p == 0.5, 0.0, np.where(p < 0.5, lower, upper))


def _pcauchy(x):
    # R's pcauchy: atan(1/x) in the tails avoids cancellation in 0.5 + atan(x)/pi.
    with np.errstate(divide="ignore"):
        tail = np.arctan(1.0 / x) / np.pi
    return np.where(np.abs(x) > 1, np.where(x > 0, 0.5 - tail + 0.5, -tail),
                    0.5 + np.arctan(x) / np.pi)


def _positive(eta):
    return np.all(np.isfinite(eta)) and np.all(eta > 0)


def _make_links() -> dict[str, Link]:
    links = [
        Link("logit", lambda mu: np.log(mu / (1.0 - mu)), _logit_inv, _logit_mu_eta),
        Link("probit", ndtri,
             lambda eta: ndtr(np.clip(eta, -_PROBIT_THRESH, _PROBIT_THRESH)),
             lambda eta: np.maximum(_M_1_SQRT_2PI * np.exp(-0.5 * eta * eta), EPS)),
        Link("cauchit", _qcauchy,
             lambda eta: _pcauchy(np.clip(eta, -_CAUCHIT_THRESH, _CAUCHIT_THRESH)),
             lambda eta: np.maximum(1.0 / (np.pi * (1.0 + eta * eta)), EPS)),
        Link("cloglog", lambda mu: np.log(-np.log(1.0 - mu)), _cloglog_inv, _cloglog_mu_eta),
        Link("log", np.log, lambda eta: np.maximum(np.exp(eta), EPS),
             lambda eta: np.maximum(np.exp(eta), EPS)),
        Link("identity", lambda mu: mu, lambda eta: eta, np.ones_like),
        Link("inverse", lambda mu: 1.0 / mu, lambda eta: 1.0 / eta,
             lambda eta: -1.0 / (eta * eta),
             lambda eta: np.all(np.isfinite(eta)) and np.all(eta != 0)),
        Link("sqrt", np.sqrt, lambda eta: eta * eta, lambda eta: 2.0 * eta, _positive),
        Link("1/mu^2", lambda mu: 1.0 / (mu * mu), lambda eta: 1.0 / np.sqrt(eta),
             lambda eta: -1.0 / (2.0 * eta ** 1.5), _positive),
    ]
    return {link.name: link for link in links}


LINKS: dict[str, Link] = _make_links()


# ------------------------------------------------------------- log densities (R's d*)


def _ylogy(y, mu):
    """y * log(y / mu) with 0 where y == 0 (R's ``y_log_y`` in family.c), also when mu == 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(y != 0, y * np.log(y / mu), 0.0)


def _dbinom_log(k, n, p):
    """log dbinom(k, n, p) for integer-valued k <= n."""
    return (gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1)
            + xlogy(k, p) + xlog1py(n - k, -p))


def _dpois_log(y, mu):
    """log dpois(y, mu) for integer-valued y >= 0."""
    return xlogy(y, mu) - mu - gammaln(y + 1)


def _dgamma_log(y, shape, scale):
    """log dgamma(y, shape, scale = scale)."""
    return xlogy(shape - 1, y) - y / scale - gammaln(shape) - shape * np.log(scale)


# ------------------------------------------------------------------------- families


def _weights(wt, y: np.ndarray) -> np.ndarray:
    w = np.ones_like(y) if wt is None else _f(wt)
    try:
        return np.broadcast_to(w, y.shape)
    except ValueError:
        raise DataError(f"weights of shape {w.shape} do not match the response of "
                        f"shape {y.shape}") from None


def _refuse(bad: np.ndarray, values: np.ndarray, name: str, problem: str, rows=None) -> None:
    """Raise DataError for the first row where ``bad`` holds, naming its label in ``rows``
    (default: its 0-based index)."""
    if np.any(bad):
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{name}: {problem}; first at row {row_label(rows, i)} (value "
                        f"{values[i]:.10g}), "
                        f"{int(np.count_nonzero(bad))} row(s) in all")


@dataclass(frozen=True)
class Family:
    """An exponential family with its link; subclasses hold R's formulas."""

    link: Link
    name: ClassVar[str]
    canonical: ClassVar[str]
    has_dispersion: ClassVar[bool]
    links: ClassVar[tuple[str, ...]]  # allowed link names, as R's okLinks

    def variance(self, mu) -> np.ndarray:
        raise NotImplementedError

    def validmu(self, mu) -> bool:
        mu = _f(mu)
        return bool(np.all(np.isfinite(mu)) and np.all(mu > 0))

    def dev_resids(self, y, mu, wt) -> np.ndarray:
        """Weighted unit deviances; their sum is the deviance."""
        raise NotImplementedError

    def aic(self, y, mu, wt, dev) -> float:
        """R's ``family$aic`` (-2 log-likelihood, + 2 for a dispersion parameter)."""
        raise NotImplementedError

    def loglik_saturated(self, y, wt) -> float:
        """log p(y | mu = y); 0.0 for families with a dispersion (not defined there)."""
        return 0.0

    def mustart(self, y, wt) -> np.ndarray:
        """Starting mu from R's ``family$initialize``."""
        return _f(y).copy()

    def check_response(self, y, wt, name: str = "response", rows=None) -> None:
        """Raise DataError if y (and the prior weights) are impossible for this family.

        ``rows``: the row labels to name in the message (default: 0-based positions).
        """
        y = _f(y)
        w = _weights(wt, y)
        _refuse(~np.isfinite(y), y, name, "non-finite value", rows)
        _refuse(~np.isfinite(w) | (w < 0), w, f"{name} weights",
                "weights must be finite and non-negative", rows)
        self._check_values(y.ravel(), w.ravel(), name, rows)

    def _check_values(self, y, wt, name, rows) -> None:
        pass


@dataclass(frozen=True)
class Binomial(Family):
    name: ClassVar[str] = "binomial"
    canonical: ClassVar[str] = "logit"
    has_dispersion: ClassVar[bool] = False
    links: ClassVar[tuple[str, ...]] = ("logit", "probit", "cloglog", "cauchit", "log")

    def variance(self, mu):
        mu = _f(mu)
        return mu * (1.0 - mu)

    def validmu(self, mu):
        mu = _f(mu)
        return bool(np.all(np.isfinite(mu)) and np.all((mu > 0) & (mu < 1)))

    def dev_resids(self, y, mu, wt):
        y, mu, wt = _f(y), _f(mu), _f(wt)
        return 2.0 * wt * (_ylogy(y, mu) + _ylogy(1.0 - y, 1.0 - mu))

    def aic(self, y, mu, wt, dev):
        # R: m = trials (= wt here); rows with m == 0 contribute nothing.
        y, mu, m = np.broadcast_arrays(_f(y), _f(mu), _f(wt))
        use = m > 0
        ll = _dbinom_log(np.round(m[use] * y[use]), np.round(m[use]), mu[use])
        return float(-2.0 * np.sum(ll))

    def loglik_saturated(self, y, wt):
        y = _f(y)
        m = _weights(wt, y)
        return float(np.sum(_dbinom_log(np.round(m * y), np.round(m), y)))

    def mustart(self, y, wt):
        y = _f(y)
        w = _weights(wt, y)
        return (w * y + 0.5) / (w + 1.0)

    def _check_values(self, y, wt, name, rows):
        _refuse((y < 0) | (y > 1), y, name, "binomial proportions must lie in [0, 1]", rows)
        successes = wt * y
        _refuse(np.abs(successes - np.round(successes)) > 1e-7, successes, name,
                "non-integer counts of successes (weight * proportion)", rows)


@dataclass(frozen=True)
class Poisson(Family):
    name: ClassVar[str] = "poisson"
    canonical: ClassVar[str] = "log"
    has_dispersion: ClassVar[bool] = False
    links: ClassVar[tuple[str, ...]] = ("log", "identity", "sqrt")

    def variance(self, mu):
        return _f(mu).copy()

    def dev_resids(self, y, mu, wt):
        y, mu, wt = _f(y), _f(mu), _f(wt)
        return 2.0 * np.where(y > 0, wt * (_ylogy(y, mu) - (y - mu)), mu * wt)

    def aic(self, y, mu, wt, dev):
        return float(-2.0 * np.sum(_dpois_log(_f(y), _f(mu)) * _f(wt)))

    def loglik_saturated(self, y, wt):
        y = _f(y)
        return float(np.sum(_dpois_log(y, y) * _weights(wt, y)))

    def mustart(self, y, wt):
        return _f(y) + 0.1

    def _check_values(self, y, wt, name, rows):
        _refuse(y < 0, y, name, "negative counts are not allowed for the poisson family", rows)
        _refuse(np.abs(y - np.round(y)) > 1e-7, y, name,
                "non-integer counts are not allowed for the poisson family", rows)


@dataclass(frozen=True)
class Gamma(Family):
    name: ClassVar[str] = "gamma"
    canonical: ClassVar[str] = "inverse"
    has_dispersion: ClassVar[bool] = True
    links: ClassVar[tuple[str, ...]] = ("inverse", "identity", "log")

    def variance(self, mu):
        mu = _f(mu)
        return mu * mu

    def dev_resids(self, y, mu, wt):
        y, mu, wt = _f(y), _f(mu), _f(wt)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(y == 0, 1.0, y / mu)
        return -2.0 * wt * (np.log(ratio) - (y - mu) / mu)

    def aic(self, y, mu, wt, dev):
        # R: dispersion dev / sum(wt), shape 1/disp, scale mu * disp; + 2 for the dispersion.
        wt = _f(wt)
        disp = dev / np.sum(wt)
        ll = _dgamma_log(_f(y), 1.0 / disp, _f(mu) * disp)
        return float(-2.0 * np.sum(ll * wt) + 2.0)

    def _check_values(self, y, wt, name, rows):
        _refuse(y <= 0, y, name, "non-positive values are not allowed for the gamma family", rows)


@dataclass(frozen=True)
class InverseGaussian(Family):
    name: ClassVar[str] = "inverse_gaussian"
    canonical: ClassVar[str] = "1/mu^2"
    has_dispersion: ClassVar[bool] = True
    links: ClassVar[tuple[str, ...]] = ("1/mu^2", "inverse", "identity", "log")

    def variance(self, mu):
        mu = _f(mu)
        return mu ** 3

    def validmu(self, mu):
        return True  # as R's inverse.gaussian()$validmu

    def dev_resids(self, y, mu, wt):
        y, mu, wt = _f(y), _f(mu), _f(wt)
        return wt * ((y - mu) ** 2) / (y * mu ** 2)

    def aic(self, y, mu, wt, dev):
        # R: sum(wt) * (1 + log(2 pi dev / sum(wt))) + 3 sum(wt log y) + 2.
        y, wt = _f(y), _f(wt)
        sw = np.sum(wt)
        return float(sw * (1.0 + np.log(dev / sw * 2.0 * np.pi))
                     + 3.0 * np.sum(np.log(y) * wt) + 2.0)

    def _check_values(self, y, wt, name, rows):
        _refuse(y <= 0, y, name,
                "non-positive values are not allowed for the inverse_gaussian family", rows)


@dataclass(frozen=True)
class Gaussian(Family):
    name: ClassVar[str] = "gaussian"
    canonical: ClassVar[str] = "identity"
    has_dispersion: ClassVar[bool] = True
    links: ClassVar[tuple[str, ...]] = ("identity", "log", "inverse")

    def variance(self, mu):
        return np.ones_like(_f(mu))

    def validmu(self, mu):
        return True  # as R's gaussian()$validmu

    def dev_resids(self, y, mu, wt):
        y, mu, wt = _f(y), _f(mu), _f(wt)
        return wt * ((y - mu) ** 2)

    def aic(self, y, mu, wt, dev):
        # R: nobs = length(y) (not sum(wt)); zero weights give +Inf through -sum(log(wt)).
        y, wt = _f(y), _f(wt)
        nobs = y.size
        with np.errstate(divide="ignore"):
            log_wt = np.sum(np.broadcast_to(np.log(wt), y.shape))
        return float(nobs * (np.log(dev / nobs * 2.0 * np.pi) + 1.0) + 2.0 - log_wt)

    def mustart(self, y, wt):
        # R's initialize refuses mu = y where the link cannot take it.
        y = _f(y)
        if self.link.name == "log":
            _refuse(y <= 0, y, "response", "cannot find valid starting values for the log link")
        if self.link.name == "inverse":
            _refuse(y == 0, y, "response",
                    "cannot find valid starting values for the inverse link")
        return y.copy()


# -------------------------------------------------------------------------- lookup

FAMILIES: dict[str, type[Family]] = {
    cls.name: cls for cls in (Binomial, Poisson, Gamma, InverseGaussian, Gaussian)
}


def _family_class(family: str) -> type[Family]:
    key = family.strip().lower().replace(".", "_").replace("-", "_")
    if key not in FAMILIES:
        raise ModelSpecError(f"unknown family {family!r}; available families are "
                             + ", ".join(repr(k) for k in FAMILIES))
    return FAMILIES[key]


def _link_for(cls: type[Family], link) -> Link:
    if link is None:
        return LINKS[cls.canonical]
    if not isinstance(link, str):
        raise TypeError(f"link must be None or a string, not {type(link).__name__}")
    name = link.strip().lower()
    if name not in cls.links:
        raise ModelSpecError(f"link {link!r} is not available for the {cls.name} family; "
                             "allowed links are " + ", ".join(repr(k) for k in cls.links))
    return LINKS[name]


def get_family(family, link=None) -> Family:
    """The family object for a name (case-insensitive, R spellings accepted) or instance.

    ``link=None`` keeps an instance's link or takes the canonical link for a name.
    """
    if isinstance(family, Family):
        return family if link is None else get_family(family.name, link)
    if not isinstance(family, str):
        raise TypeError(f"family must be a string or a Family, not {type(family).__name__}")
    cls = _family_class(family)
    return cls(_link_for(cls, link))
