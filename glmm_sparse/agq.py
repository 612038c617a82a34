"""Adaptive Gauss-Hermite quadrature for a GLMM with one scalar random-effects term.

Groups are conditionally independent, so -2 log L is a sum over groups of one-dimensional
integrals. Each is centred at the conditional mode u_j from PIRLS and scaled by the
curvature M_jj (the diagonal of Lambda'Z'WZ Lambda + I): with probabilists' Hermite nodes
t_k and weights w_k (summing to 1),

    -2 log I_j = log M_jj + g_j(u_j) - 2 log sum_k w_k exp(-(g_j(u_j + t_k / sqrt(M_jj))
                                                              - g_j(u_j) - t_k^2) / 2)

where g_j(u) = sum_{i in j} devres_i + u^2. One node gives the Laplace approximation.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from numpy.polynomial.hermite_e import hermegauss

from ._core import _glm
from .errors import ModelSpecError
from .pirls import kernel_codes


@lru_cache(maxsize=64)
def nodes(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights (summing to 1) for integrals against the standard normal density."""
    t, w = hermegauss(n)
    return t, w / w.sum()


def check_agq_model(k: tuple[int, ...], nagq: int, family) -> None:
    """AGQ needs a single random-effects term with a single column, and no scale parameter."""
    if nagq > 1 and family.has_dispersion:
        raise ModelSpecError(
            f"nAGQ = {nagq} is available for the binomial and Poisson families; for the "
            f"{family.name} family (a dispersion parameter) use nagq=1 (Laplace)")
    if nagq > 1 and (len(k) != 1 or k[0] != 1):
        raise ModelSpecError(
            f"nAGQ = {nagq} needs exactly one random-effects term with one column, such as "
            f"(1 | g); this model has {len(k)} term(s) with {list(k)} column(s): use nagq=1 "
            "(Laplace) or nagq=0")


def group_deviance(obj, u: np.ndarray) -> np.ndarray:
    """g_j(u) = sum of deviance residuals in group j at random effects u, + u_j^2."""
    d = obj.data
    term = d.plan.terms[0]
    theta = obj.pls.theta[0]
    eta = d.offset + d.X @ obj.state.beta + theta * term.X[:, 0] * u[term.codes]
    out = np.zeros(term.nlev)
    _glm.deviance_by_group(*kernel_codes(d.family), d.y, d.prior_w, eta, term.codes, out)
    return out + u**2


def agq_deviance(obj, n_nodes: int | None = None) -> float:
    """-2 log L by AGQ at the current PIRLS mode (full log-likelihood scale)."""
    t, w = nodes(obj.nagq if n_nodes is None else n_nodes)
    u_hat = obj.state.u
    M_jj = 1.0 + obj.pls.theta[0] ** 2 * obj.pls.cp.diag[0][:, 0, 0]
    scale = 1.0 / np.sqrt(M_jj)
    g0 = group_deviance(obj, u_hat)
    terms = np.empty((t.shape[0], u_hat.shape[0]))
    for k, tk in enumerate(t):
        terms[k] = -0.5 * (group_deviance(obj, u_hat + tk * scale) - g0 - tk**2)
    peak = terms.max(axis=0)
    log_sum = peak + np.log(np.einsum("k,kj->j", w, np.exp(terms - peak)))
    total = np.sum(np.log(M_jj) + g0 - 2.0 * log_sum)
    return float(total - 2.0 * obj.saturated)
