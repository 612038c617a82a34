"""Seeded synthetic data with known truth, for demos and benchmarks.

``crossed_lmm`` draws a linear mixed model with random intercepts for any number of
crossed grouping factors (and optionally a correlated random slope for the first one);
the truth comes back with the data so that a fit can be checked against it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Truth:
    """The parameters the data were drawn from."""

    beta: np.ndarray
    sd: tuple[float, ...]
    sigma: float
    slope_sd: float | None = None
    slope_corr: float | None = None


def _factor(codes: np.ndarray, prefix: str, nlev: int) -> pd.Categorical:
    """A categorical column with labels prefix1..prefixN, built from codes without strings per row."""
    return pd.Categorical.from_codes(codes, categories=[f"{prefix}{i + 1}" for i in range(nlev)])


def crossed_lmm(n_rows: int, levels=(1000, 100), *, seed: int = 0, n_fixed: int = 2,
                sd=None, sigma: float = 1.0, slope: bool = False, slope_sd: float = 0.3,
                slope_corr: float = 0.3) -> tuple[pd.DataFrame, Truth]:
    """Data for ``y ~ x1 + ... + (1 [+ x1] | g1) + (1 | g2) + ...`` and its truth.

    Rows draw their level of each grouping factor uniformly at random (unbalanced,
    crossed). Columns: y, x1..x{n_fixed}, g1, g2, ... (categoricals labelled "g1_7" etc.).
    """
    if n_rows < 2 or any(nl < 2 for nl in levels):
        raise ValueError("need at least 2 rows and 2 levels per grouping factor")
    rng = np.random.default_rng(seed)
    sd = tuple(sd) if sd is not None else tuple(0.8 / (1 + i) for i in range(len(levels)))
    X = rng.standard_normal((n_rows, n_fixed))
    beta = np.concatenate([[1.0], np.linspace(0.5, -0.5, n_fixed)])
    y = beta[0] + X @ beta[1:] + sigma * rng.standard_normal(n_rows)
    data = {f"x{j + 1}": X[:, j] for j in range(n_fixed)}
    for i, (nlev, s) in enumerate(zip(levels, sd)):
        codes = rng.integers(0, nlev, n_rows)
        b0 = s * rng.standard_normal(nlev)
        y += b0[codes]
        if slope and i == 0:
            z = rng.standard_normal(nlev)
            b1 = slope_sd * (slope_corr * b0 / s + np.sqrt(1 - slope_corr**2) * z)
            y += b1[codes] * X[:, 0]
        data[f"g{i + 1}"] = _factor(codes, f"g{i + 1}_", nlev)
    frame = pd.DataFrame({"y": y, **data})
    return frame, Truth(beta, sd, sigma, slope_sd if slope else None, slope_corr if slope else None)


def crossed_formula(levels, *, n_fixed: int = 2, slope: bool = False) -> str:
    """The formula that matches ``crossed_lmm`` with the same arguments."""
    fixed = " + ".join(f"x{j + 1}" for j in range(n_fixed)) or "1"
    terms = [f"({'1 + x1' if slope and i == 0 else '1'} | g{i + 1})" for i in range(len(levels))]
    return f"y ~ {fixed} + " + " + ".join(terms)
