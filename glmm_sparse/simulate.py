"""Simulated responses from a fitted model: new random effects (or the fitted ones) and new noise.

After the results stage (... -> results -> inference). The parametric bootstrap
(bootstrap.py) refits the model to such responses; ``simulate`` returns them as a table.
A ``Simulator`` is built once per fit (the fixed part of the linear predictor, the
relative covariance factors, the family's noise) and draws one response per call from a
``numpy.random.Generator``, so that any number of draws, in any order of threads, is
reproducible from one seed per draw.

lme4's ``simulate`` (1.1-31) for comparison: its default ``re.form = NA`` draws new
random effects (``re_form=None`` here), ``use.u = TRUE`` / ``re.form = NULL`` keeps the
fitted ones (``re_form="conditional"``); ``re_form="population"`` (no random effects at
all, X beta + noise) has no lme4 counterpart. lme4's ``simulate`` reads ``re.form = NA``
and ``re.form = ~0`` alike, as new random effects, where its ``predict`` reads both as
none: to avoid that trap neither spelling is accepted. lme4 refuses ``re.form = ~.``
("No random effects terms specified in formula"), and so does this module.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .context import require_model
from .errors import ModelSpecError
from .terms import term_offsets

RE_FORMS = {None: "new", "new": "new", "population": "population",
            "conditional": "conditional"}
CHOICES = ("re_form must be None or 'new' (new random effects), 'population' (none) or "
           "'conditional' (the fitted ones)")
# lme4 spellings whose meaning differs between lme4's simulate and predict, or that lme4 refuses
LME4_TRAPS = {
    "na": "lme4's simulate reads re.form = NA as new random effects, its predict as none",
    "~0": "lme4's simulate reads re.form = ~0 as new random effects, its predict as none",
    "0": "lme4's simulate reads re.form = ~0 as new random effects, its predict as none",
    "~-1": "lme4's simulate reads re.form = ~-1 as new random effects, its predict as none",
    "~.": "lme4 refuses re.form = ~. (no random-effects terms); its re.form = NULL keeps "
          "the fitted random effects, 'conditional' here",
}


def re_form_kind(re_form) -> str:
    """"new", "population" or "conditional" from the user's ``re_form``."""
    key = re_form.strip().lower().replace(" ", "") if isinstance(re_form, str) else re_form
    if key in LME4_TRAPS:
        raise ModelSpecError(f"re_form {re_form!r} is refused: {LME4_TRAPS[key]}. {CHOICES}.")
    if key not in RE_FORMS:
        raise ModelSpecError(f"{CHOICES}, not {re_form!r}")
    return RE_FORMS[key]


def seed_children(seed, n: int) -> list[np.random.SeedSequence]:
    """n independent child seeds, child i for replicate (or simulation) i.

    An int >= 0 or None: the children of ``SeedSequence(seed)`` (None: fresh entropy). A
    SeedSequence: its next n children (numpy's ``spawn``). A Generator: the next n
    children of its SeedSequence, as ``Generator.spawn`` (a fresh ``default_rng(s)``
    gives the children of ``s``; the same Generator passed again gives new ones).
    """
    if isinstance(seed, np.random.Generator):
        root = seed.bit_generator.seed_seq
        if not isinstance(root, np.random.SeedSequence):
            raise TypeError("seed: this Generator has no SeedSequence to spawn from; pass an "
                            "int, a SeedSequence or a Generator made by numpy.random.default_rng")
        return root.spawn(n)
    if isinstance(seed, np.random.SeedSequence):
        return seed.spawn(n)
    if seed is None:
        return np.random.SeedSequence().spawn(n)
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int >= 0, a numpy SeedSequence or Generator, or "
                        f"None, not {seed!r}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0 (numpy's SeedSequence takes no negative "
                         f"entropy), not {seed!r}")
    return np.random.SeedSequence(int(seed)).spawn(n)


@dataclass(frozen=True, eq=False)
class Simulator:
    """Draws responses y from the fitted model: eta = X beta + offset + Z b, y | eta ~ family.

    ``scale`` multiplies Lambda z for new random effects: sigma for an LMM (b ~ N(0,
    sigma^2 Lambda Lambda')), 1 for a GLMM (b ~ N(0, Lambda Lambda'), as in the Laplace
    deviance). ``family`` is None for an LMM.
    """

    eta_fixed: np.ndarray  # X beta + offset
    terms: tuple
    offsets: np.ndarray
    T: tuple  # relative covariance factors T_t
    scale: float
    b_fitted: np.ndarray
    kind: str
    family: object
    sigma: float
    weights: np.ndarray | None

    @classmethod
    def from_result(cls, result, re_form=None) -> Simulator:
        ctx = require_model(result, "simulate()")
        frame = ctx.frame
        from .objective import ThetaMap

        T = ThetaMap(tuple(t.k for t in frame.terms)).factors(np.asarray(result.theta))
        eta = frame.X @ result.fixef.to_numpy()
        if frame.offset is not None:
            eta = eta + frame.offset
        offsets = term_offsets(frame.terms)
        family = ctx.family_object if ctx.is_glmm else None
        return cls(eta, frame.terms, offsets, tuple(T), 1.0 if family else float(result.sigma),
                   np.asarray(result.b), re_form_kind(re_form), family, float(result.sigma),
                   frame.weights)

    @property
    def n(self) -> int:
        return self.eta_fixed.shape[0]

    def new_b(self, rng: np.random.Generator) -> np.ndarray:
        """b = scale * Lambda z, z ~ N(0, I_q), drawn level by level (z_l of k values)."""
        parts = []
        for t, T in zip(self.terms, self.T):
            z = rng.standard_normal((t.nlev, t.k))
            parts.append((z @ T.T).ravel())
        return self.scale * np.concatenate(parts) if parts else np.zeros(0)

    def linear_predictor(self, rng: np.random.Generator) -> np.ndarray:
        """X beta + offset + Z b for the kind of random effects asked for."""
        from .crossprod import add_z_times

        if self.kind == "population":
            return self.eta_fixed.copy()
        b = self.b_fitted if self.kind == "conditional" else self.new_b(rng)
        return add_z_times(self.terms, b, self.offsets, self.eta_fixed.copy())

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        """One simulated response (n values), on the scale of the fit's y."""
        eta = self.linear_predictor(rng)
        if self.family is None:
            sd = self.sigma if self.weights is None else self.sigma / np.sqrt(self.weights)
            return eta + sd * rng.standard_normal(self.n)
        return family_noise(self.family, self.family.link.linkinv(eta), self.weights,
                            self.sigma, rng)


def family_noise(family, mu: np.ndarray, weights: np.ndarray | None, sigma: float,
                 rng: np.random.Generator) -> np.ndarray:
    """y ~ family(mu) with prior weights w (binomial: trials; y is the proportion).

    Gamma: shape w / sigma^2 (the fitted dispersion sigma^2 / w); inverse Gaussian: shape
    (lambda) w / sigma^2. lme4 1.1-31 uses shape sigma * w and w / sigma there, which
    are not the fitted model's; Poisson ignores prior weights, as lme4 does.
    """
    w = np.ones(mu.shape[0]) if weights is None else weights
    name = family.name
    if name == "binomial":
        trials = np.rint(w)
        if np.any(np.abs(trials - w) > 1e-8):
            raise ModelSpecError("cannot simulate a binomial response with non-integer prior "
                                 "weights (they are the numbers of trials)")
        return rng.binomial(trials.astype(np.int64), mu) / trials
    if name == "poisson":
        return rng.poisson(mu).astype(np.float64)
    if name == "gamma":
        shape = w / sigma**2
        return rng.gamma(shape, mu / shape)
    if name == "inverse_gaussian":
        return rng.wald(mu, w / sigma**2)
    if name == "gaussian":
        return mu + sigma / np.sqrt(w) * rng.standard_normal(mu.shape[0])
    raise ModelSpecError(f"no simulation for the {name} family")


def simulate_responses(result, *, nsim: int = 1, seed=None, re_form=None) -> np.ndarray:
    """(n, nsim) simulated responses; column j drawn with child j of ``seed`` (seed_children)."""
    if not isinstance(nsim, (int, np.integer)) or isinstance(nsim, bool) or nsim < 1:
        raise TypeError(f"nsim must be a positive integer, not {nsim!r}")
    sim = Simulator.from_result(result, re_form)
    children = seed_children(seed, int(nsim))
    out = np.empty((sim.n, int(nsim)))
    for j, child in enumerate(children):
        out[:, j] = sim.draw(np.random.default_rng(child))
    return out


class SimulateMethods:
    """Methods of fitted results (mixed into LmerResult and GlmerResult)."""

    def simulate(self, nsim: int = 1, seed=None, re_form=None) -> pd.DataFrame:
        """Responses simulated from the fitted model, as lme4's ``simulate``.

        Parameters
        ----------
        nsim : int
            Number of simulated responses (columns ``sim_1`` ... ``sim_<nsim>``).
        seed : int, numpy SeedSequence, numpy Generator or None
            Column j uses child j of ``numpy.random.SeedSequence(seed)`` (an int >= 0;
            None: fresh entropy), of the SeedSequence itself (its next nsim children), or
            of a Generator's SeedSequence (as ``Generator.spawn``: a fresh
            ``default_rng(s)`` gives the columns of ``seed=s``). With an int the first k
            columns do not depend on nsim.
        re_form : {None, "new", "population", "conditional"}
            None or "new" (lme4's default ``re.form = NA``): new random effects
            b ~ N(0, sigma^2 Lambda Lambda') (GLMM: N(0, Lambda Lambda')) and new noise;
            "population": no random effects, X beta + offset + noise (no lme4
            counterpart); "conditional" (lme4's ``re.form = NULL`` or ``use.u = TRUE``):
            the fitted conditional modes. lme4's "NA" and "~0" are refused (lme4's
            simulate reads them as new random effects, its predict as none), and so is
            "~." (lme4 refuses it).

        Returns
        -------
        pandas.DataFrame
            One row per row used in the fit (the fit's row index), one column per
            simulation; binomial responses are proportions (as the fit's y), with the
            fit's prior weights as trials.
        """
        y = simulate_responses(self, nsim=nsim, seed=seed, re_form=re_form)
        return pd.DataFrame(y, index=self.model.frame.row_index,
                            columns=[f"sim_{j + 1}" for j in range(y.shape[1])])
