# cython: language_level=3
"""Per-row GLM kernels for PIRLS and the Laplace / AGQ deviance: eta -> mu, weights, deviance.

Sits inside the GLMM objective (cross-products -> factor -> PIRLS -> optimize): every PIRLS
iteration and every step-halving trial point makes one pass over the n rows. The formulas
are those of ``glmm_sparse.families`` (R's ``stats`` families, including R's clipping of
``linkinv`` / ``mu.eta``), which is the NumPy oracle these kernels are tested against;
families and links are passed as the small integer codes of FAMILY_CODES and LINK_CODES
(any family x link pair is computed; which pairs are allowed is the Python layer's business).
Outputs are buffers allocated by the caller; inputs are never written. Deviance sums are
compensated (Neumaier), so their rounding error does not grow with n.
"""
from libc.float cimport DBL_EPSILON
from libc.math cimport M_PI, M_SQRT1_2, atan, erfc, exp, expm1, fabs, isfinite, log, pow, sqrt, tan
cimport numpy as cnp

cnp.import_array()

ctypedef fused index_t:  # group codes: int32 (terms.code_dtype) or int64
    cnp.int32_t
    cnp.int64_t


cdef struct _Sum:
    double s  # running sum
    double c  # Neumaier compensation


cdef enum FamilyCode:
    BINOMIAL = 0
    POISSON = 1
    GAMMA = 2
    INVERSE_GAUSSIAN = 3
    GAUSSIAN = 4
    N_FAMILIES = 5

cdef enum LinkCode:
    LOGIT = 0
    PROBIT = 1
    CLOGLOG = 2
    LOG = 3
    IDENTITY = 4
    INVERSE = 5
    SQRT = 6
    INV_MU2 = 7
    CAUCHIT = 8
    N_LINKS = 9

FAMILY_CODES = {"binomial": BINOMIAL, "poisson": POISSON, "gamma": GAMMA,
                "inverse_gaussian": INVERSE_GAUSSIAN, "gaussian": GAUSSIAN}
LINK_CODES = {"logit": LOGIT, "probit": PROBIT, "cloglog": CLOGLOG, "log": LOG,
              "identity": IDENTITY, "inverse": INVERSE, "sqrt": SQRT, "1/mu^2": INV_MU2,
              "cauchit": CAUCHIT}

# R's clipping constants, as in glmm_sparse.families (R's src/library/stats/src/family.c).
cdef double EPS = DBL_EPSILON
cdef double LOGIT_THRESH = 30.0
cdef double PROBIT_THRESH = 8.125890664701906        # -qnorm(eps) as R computes it
cdef double CAUCHIT_THRESH = 1.0 / tan(M_PI * DBL_EPSILON)  # -qcauchy(eps)
cdef double M_1_SQRT_2PI = 0.398942280401432677939946059934
cdef double CLOGLOG_EXP_MAX = 700.0


# ------------------------------------------------------------------ Python kernels


def working(int family, int link, const double[::1] y, const double[::1] prior_w,
            const double[::1] eta, double[::1] mu_out, double[::1] w_out,
            double[::1] resid_out):
    """PIRLS working quantities at eta in one pass; returns the deviance sum_i d_i(y_i, mu_i).

    mu_out = g^-1(eta), w_out = prior_w (dmu/deta)^2 / V(mu),
    resid_out = (y - mu) / (dmu/deta).
    """
    cdef Py_ssize_t n = eta.shape[0], i
    cdef double mu, me
    cdef _Sum dev = _Sum(0.0, 0.0)
    _check_codes(family, link)
    _check_rows(n, y, prior_w)
    _require(mu_out.shape[0] == n and w_out.shape[0] == n and resid_out.shape[0] == n,
             f"mu_out, w_out and resid_out must have one entry per row ({n})")
    with nogil:
        for i in range(n):
            _link_eval(link, eta[i], &mu, &me)
            mu_out[i] = mu
            w_out[i] = prior_w[i] * (me * me) / _variance(family, mu)
            resid_out[i] = (y[i] - mu) / me
            _sum_add(&dev, _dev_resid(family, y[i], mu, prior_w[i]))
    return _sum_value(dev)


def working_response(int family, int link, const double[::1] y, const double[::1] prior_w,
                     const double[::1] eta, const double[::1] base, double[::1] w_out,
                     double[::1] z_out):
    """PIRLS's weights and working response at eta in one pass over a chunk of rows.

    w_out = prior_w (dmu/deta)^2 / V(mu), z_out = (eta - base) + (y - mu) / (dmu/deta),
    mu = g^-1(eta). Returns (sum_i d_i(y_i, mu_i), max_i |eta_i|, #{i: w_i > 0},
    #{i: w_i not finite}): the deviance, and what PIRLS's checks and messages need.
    """
    cdef Py_ssize_t n = eta.shape[0], i, positive = 0, nonfinite = 0
    cdef double mu, me, wi, largest = 0.0
    cdef _Sum dev = _Sum(0.0, 0.0)
    _check_codes(family, link)
    _check_rows(n, y, prior_w)
    _require(base.shape[0] == n and w_out.shape[0] == n and z_out.shape[0] == n,
             f"base, w_out and z_out must have one entry per row ({n})")
    with nogil:
        for i in range(n):
            _link_eval(link, eta[i], &mu, &me)
            wi = prior_w[i] * (me * me) / _variance(family, mu)
            w_out[i] = wi
            # the same two roundings as (eta - base) then + (y - mu) / mu_eta
            z_out[i] = (eta[i] - base[i]) + (y[i] - mu) / me
            _sum_add(&dev, _dev_resid(family, y[i], mu, prior_w[i]))
            largest = _max(largest, fabs(eta[i]))
            positive += wi > 0.0
            nonfinite += not isfinite(wi)
    return _sum_value(dev), largest, positive, nonfinite


def deviance(int family, int link, const double[::1] y, const double[::1] prior_w,
             const double[::1] eta):
    """sum_i d_i(y_i, g^-1(eta_i)) with prior weights, one pass (step-halving trial points)."""
    cdef Py_ssize_t n = eta.shape[0], i
    cdef _Sum dev = _Sum(0.0, 0.0)
    _check_codes(family, link)
    _check_rows(n, y, prior_w)
    with nogil:
        for i in range(n):
            _sum_add(&dev, _dev_resid(family, y[i], _linkinv(link, eta[i]), prior_w[i]))
    return _sum_value(dev)


def deviance_by_group(int family, int link, const double[::1] y, const double[::1] prior_w,
                      const double[::1] eta, const index_t[::1] codes, double[::1] out):
    """out[codes[i]] += d_i(y_i, g^-1(eta_i)) (per-group deviance for adaptive Gauss-Hermite).

    Adds into out, so the caller zeroes it (or accumulates row chunks into it).
    """
    cdef Py_ssize_t n = eta.shape[0], i
    _check_codes(family, link)
    _check_rows(n, y, prior_w)
    _require(codes.shape[0] == n, f"codes must have one entry per row ({n})")
    _check_groups(codes, out.shape[0])
    with nogil:
        for i in range(n):
            out[codes[i]] += _dev_resid(family, y[i], _linkinv(link, eta[i]), prior_w[i])
    return None


# ------------------------------------------------------------------ links


cdef inline double _max(double a, double b) noexcept nogil:
    """max(a, b), NaN in a passing through (as np.maximum)."""
    return b if a < b else a


cdef inline double _min(double a, double b) noexcept nogil:
    """min(a, b), NaN in a passing through (as np.minimum)."""
    return b if a > b else a


cdef inline double _clip(double x, double lo, double hi) noexcept nogil:
    """min(max(x, lo), hi), NaN passing through (as np.clip)."""
    return _min(_max(x, lo), hi)


cdef inline double _logit_exp(double eta) noexcept nogil:
    """exp(eta), with eps below -30 and 1/eps above 30 (R's C_logit_linkinv)."""
    if eta < -LOGIT_THRESH:
        return EPS
    if eta > LOGIT_THRESH:
        return 1.0 / EPS
    return exp(eta)


cdef inline double _pnorm(double x) noexcept nogil:
    """Phi(x) = erfc(-x / sqrt(2)) / 2."""
    # x * (1/sqrt 2), not x / sqrt 2: scipy's ndtr rounds the argument this way, and the
    # lower tail multiplies an argument's rounding error by about x^2 (up to 66 here).
    return 0.5 * erfc(-x * M_SQRT1_2)


cdef inline double _pcauchy(double x) noexcept nogil:
    """F(x) = 1/2 + atan(x) / pi, through atan(1/x) / pi in the tails (R's pcauchy)."""
    cdef double tail
    if fabs(x) > 1.0:
        tail = atan(1.0 / x) / M_PI
        return (0.5 - tail) + 0.5 if x > 0 else -tail
    return 0.5 + atan(x) / M_PI


cdef inline double _linkinv(int link, double eta) noexcept nogil:
    """mu = g^-1(eta), clipped as R clips it."""
    cdef double t
    if link == LOGIT:
        t = _logit_exp(eta)
        return t / (1.0 + t)
    elif link == PROBIT:
        return _pnorm(_clip(eta, -PROBIT_THRESH, PROBIT_THRESH))
    elif link == CLOGLOG:
        return _max(_min(-expm1(-exp(eta)), 1.0 - EPS), EPS)
    elif link == LOG:
        return _max(exp(eta), EPS)
    elif link == IDENTITY:
        return eta
    elif link == INVERSE:
        return 1.0 / eta
    elif link == SQRT:
        return eta * eta
    elif link == INV_MU2:
        return 1.0 / sqrt(eta)
    else:  # CAUCHIT
        return _pcauchy(_clip(eta, -CAUCHIT_THRESH, CAUCHIT_THRESH))


cdef inline double _mu_eta(int link, double eta) noexcept nogil:
    """dmu/deta at eta, floored at eps where R floors it."""
    cdef double e
    if link == LOGIT:
        if fabs(eta) > LOGIT_THRESH:
            return EPS
        e = exp(eta)
        return e / ((1.0 + e) * (1.0 + e))
    elif link == PROBIT:
        return _max(M_1_SQRT_2PI * exp(-0.5 * eta * eta), EPS)
    elif link == CLOGLOG:
        e = exp(_min(eta, CLOGLOG_EXP_MAX))
        return _max(e * exp(-e), EPS)
    elif link == LOG:
        return _max(exp(eta), EPS)
    elif link == IDENTITY:
        return 1.0
    elif link == INVERSE:
        return -1.0 / (eta * eta)
    elif link == SQRT:
        return 2.0 * eta
    elif link == INV_MU2:
        return -1.0 / (2.0 * pow(eta, 1.5))
    else:  # CAUCHIT
        return _max(1.0 / (M_PI * (1.0 + eta * eta)), EPS)


cdef inline void _link_eval(int link, double eta, double* mu, double* mu_eta) noexcept nogil:
    """mu = g^-1(eta) and dmu/deta, with one exp(eta) where both need it (logit, log)."""
    # Same formulas as _linkinv / _mu_eta, so mu is bitwise the mu of deviance(); libm's
    # exp is a call the compiler cannot merge, and it is a fifth of a logit row's cost.
    cdef double e
    if link == LOGIT and fabs(eta) <= LOGIT_THRESH:
        e = exp(eta)
        mu[0] = e / (1.0 + e)
        mu_eta[0] = e / ((1.0 + e) * (1.0 + e))
    elif link == LOG:
        mu[0] = mu_eta[0] = _max(exp(eta), EPS)
    else:
        mu[0] = _linkinv(link, eta)
        mu_eta[0] = _mu_eta(link, eta)


# ------------------------------------------------------------------ families


cdef inline double _variance(int family, double mu) noexcept nogil:
    """V(mu): mu(1 - mu), mu, mu^2, mu^3 or 1."""
    if family == BINOMIAL:
        return mu * (1.0 - mu)
    elif family == POISSON:
        return mu
    elif family == GAMMA:
        return mu * mu
    elif family == INVERSE_GAUSSIAN:
        return pow(mu, 3.0)
    else:  # GAUSSIAN
        return 1.0


cdef inline double _ylogy(double y, double mu) noexcept nogil:
    """y log(y / mu), 0 where y == 0 (R's y_log_y)."""
    return y * log(y / mu) if y != 0.0 else 0.0


cdef inline double _dev_resid(int family, double y, double mu, double wt) noexcept nogil:
    """wt * unit deviance d(y, mu), as R's family$dev.resids."""
    cdef double r
    if family == BINOMIAL:
        return (2.0 * wt) * (_ylogy(y, mu) + _ylogy(1.0 - y, 1.0 - mu))
    elif family == POISSON:
        return 2.0 * (wt * (_ylogy(y, mu) - (y - mu)) if y > 0.0 else mu * wt)
    elif family == GAMMA:
        r = y / mu if y != 0.0 else 1.0
        return (-2.0 * wt) * (log(r) - (y - mu) / mu)
    elif family == INVERSE_GAUSSIAN:
        return (wt * ((y - mu) * (y - mu))) / (y * (mu * mu))
    else:  # GAUSSIAN
        return wt * ((y - mu) * (y - mu))


# ------------------------------------------------------------------ summation


cdef inline void _sum_add(_Sum* acc, double x) noexcept nogil:
    """s + c += x (Neumaier: c carries what rounding s dropped)."""
    cdef double t = acc.s + x
    if fabs(acc.s) >= fabs(x):
        acc.c += (acc.s - t) + x
    else:
        acc.c += (x - t) + acc.s
    acc.s = t


cdef inline double _sum_value(_Sum acc) noexcept nogil:
    """s + c; the plain running sum s when it is not finite (c is NaN then)."""
    return acc.s + acc.c if isfinite(acc.s) else acc.s


# ------------------------------------------------------------------ checks


cdef _require(bint ok, str message):
    if not ok:
        raise ValueError(message)


cdef _check_codes(int family, int link):
    """family and link are codes of FAMILY_CODES and LINK_CODES (kernels dispatch on them)."""
    _require(0 <= family < N_FAMILIES,
             f"unknown family code {family}; FAMILY_CODES holds {FAMILY_CODES}")
    _require(0 <= link < N_LINKS, f"unknown link code {link}; LINK_CODES holds {LINK_CODES}")


cdef _check_rows(Py_ssize_t n, const double[::1] y, const double[::1] prior_w):
    """y and prior_w have one entry per row of eta (kernels skip bounds checks)."""
    _require(y.shape[0] == n and prior_w.shape[0] == n,
             f"y ({y.shape[0]}), prior_w ({prior_w.shape[0]}) and eta ({n}) must have "
             "the same length")


cdef _check_groups(const index_t[::1] codes, Py_ssize_t ngroups):
    """Group codes index out: every one must lie in [0, ngroups)."""
    cdef Py_ssize_t i, n = codes.shape[0]
    cdef cnp.int64_t lo = 0, hi = -1
    if n:
        lo = hi = codes[0]
        with nogil:
            for i in range(n):
                lo = codes[i] if codes[i] < lo else lo
                hi = codes[i] if codes[i] > hi else hi
        _require(lo >= 0 and hi < ngroups, f"codes must lie in [0, {ngroups}), "
                 f"found values from {lo} to {hi}")
