"""Between/within decomposition: ICC, R2, design effect and shrinkage of fitted models.

After the results stage (... -> results -> inference). Everything here is read from a
fitted result and its model frame in one O(n) pass at most; nothing refits.

Variances on the linear-predictor (latent) scale, as Nakagawa, Johnson & Schielzeth (2017,
J. R. Soc. Interface 14: 20170213) and the R package performance (``icc``, ``r2_nakagawa``):

    var_fixed    = var(X beta) over the rows (denominator n - 1, as R's var)
    var_random   = sum over terms t of mean_i x_ti' Sigma_t x_ti   (Johnson 2014; for a
                   random intercept (1 | g) this is sigma_g^2)
    var_residual = sigma^2 for a linear mixed model; for a GLMM the distribution-specific
                   variance on the latent scale: pi^2/3 (binomial logit), 1 (probit),
                   pi^2/6 (cloglog), log(1 + 1/lambda) for Poisson with log link
                   (Nakagawa et al. 2017's log-normal approximation), with
                   lambda = exp(beta_0 + var_random_0 / 2) from the null model, as the R
                   package insight (behind performance) computes it: the same random
                   terms, prior weights and offset, an intercept-only fixed part, refitted;
                   beta_0 is its intercept and var_random_0 its var_random. So lambda does
                   not move when a covariate is centred or shifted (the fitted intercept
                   would); it is the mean count at offset 0 (one unit of exposure for
                   offset(log(exposure))), so it does change with the offset's units.

    ICC adjusted    = var_random / (var_random + var_residual)
    ICC conditional = var_random / (var_fixed + var_random + var_residual)
    R2 marginal     = var_fixed / (var_fixed + var_random + var_residual)
    R2 conditional  = (var_fixed + var_random) / (var_fixed + var_random + var_residual)

Shrinkage of a random intercept (1 | g): at the optimum the penalized least-squares normal
equations give, per level j (n_j = the sum of the prior weights, or of the PIRLS working
weights at the mode of a GLMM),

    b_j = n_j / (n_j + sigma^2 / sigma_g^2) * rbar_j,    sigma^2 / sigma_g^2 = 1 / theta_g^2

with rbar_j the (weighted) mean over the level's rows of the partial residual
y - X beta - offset - (the other terms' Z b); for a GLMM the partial working residual
(y - mu) / (dmu/deta) + b_j. With a single random-effects term, rbar_j is the group's
mean residual from the fixed part.
"""
from __future__ import annotations

import warnings
import weakref
from dataclasses import replace

import numpy as np
import pandas as pd

from .context import require_model
from .errors import GlmmSparseWarning, ModelSpecError
from .lrt import term_labels
from .terms import term_offsets

# latent-scale residual variance of binomial GLMMs, by link (Nakagawa et al. 2017, Table 1)
BINOMIAL_LATENT = {"logit": (np.pi**2 / 3.0, "logit: pi^2/3"),
                   "probit": (1.0, "probit: 1"),
                   "cloglog": (np.pi**2 / 6.0, "cloglog: pi^2/6")}


class DecompositionMethods:
    """Methods of fitted results (mixed into LmerResult and GlmerResult)."""

    def variance_decomposition(self) -> pd.Series:
        """The variance parts behind ``icc`` and ``r2``, on the latent (link) scale.

        Returns
        -------
        pandas.Series
            ``var_fixed``, ``var_random`` (the sum over terms), ``var_residual``, then one
            ``var_random[<group>]`` entry per random-effects term. ``attrs["residual"]`` says
            how var_residual was found (e.g. "logit: pi^2/3"); for Poisson fits
            ``attrs["lambda"]`` is the lambda of the log-normal approximation and
            ``attrs["null_intercept"]``, ``attrs["null_var_random"]`` the null model's
            intercept and var_random it comes from (the null model is fitted on the first
            call and kept for the result's lifetime).
        """
        per_term = _random_variance_by_term(self)
        var_random = float(per_term.sum())
        var_residual, method, null = _residual_variance(self)
        parts = pd.Series({"var_fixed": _fixed_variance(self), "var_random": var_random,
                           "var_residual": var_residual})
        parts = pd.concat([parts, per_term.rename(lambda g: f"var_random[{g}]")]).rename("variance")
        parts.attrs["residual"] = method
        if null is not None:
            parts.attrs.update(null)
        return parts

    def icc(self, by_group: bool = False) -> pd.Series | pd.DataFrame:
        """Intraclass correlation (Nakagawa et al. 2017, as performance::icc).

        Parameters
        ----------
        by_group : bool
            False: the adjusted ICC var_random / (var_random + var_residual) and the
            conditional ICC var_random / (var_fixed + var_random + var_residual).
            True: one ICC per random-intercept term, sigma_g^2 / (var_random +
            var_residual) (models whose terms are all random intercepts only).

        Returns
        -------
        pandas.Series (``adjusted``, ``conditional``) or pandas.DataFrame (``group``,
        ``variance``, ``icc``). For GLMMs on the latent scale; see
        ``variance_decomposition`` for the parts.
        """
        parts = self.variance_decomposition()
        fixed, rand, resid = parts["var_fixed"], parts["var_random"], parts["var_residual"]
        if by_group:
            return _icc_by_group(self, parts)
        out = pd.Series({"adjusted": rand / (rand + resid),
                         "conditional": rand / (fixed + rand + resid)}, name="icc")
        out.attrs = dict(parts.attrs)
        return out

    def r2(self) -> pd.Series:
        """Marginal and conditional R2 of Nakagawa (as performance::r2_nakagawa).

        Returns
        -------
        pandas.Series
            ``marginal`` = var_fixed / total, ``conditional`` = (var_fixed + var_random) /
            total, total = var_fixed + var_random + var_residual.
        """
        parts = self.variance_decomposition()
        fixed, rand, resid = parts["var_fixed"], parts["var_random"], parts["var_residual"]
        total = fixed + rand + resid
        out = pd.Series({"marginal": fixed / total, "conditional": (fixed + rand) / total},
                        name="r2")
        out.attrs = dict(parts.attrs)
        return out

    def design_effect(self, group: str | None = None) -> pd.Series:
        """Kish's design effect of a random-intercept grouping factor: 1 + (m - 1) ICC_g.

        Parameters
        ----------
        group : str, optional
            The grouping factor (a label of ``varcorr["grp"]``); may be left out when the
            model has one random-intercept term.

        Returns
        -------
        pandas.Series named by the group
            ``n_groups``, ``mean_size`` m = nobs / levels (rows, not weights), ``icc`` =
            sigma_g^2 / (var_random + var_residual) (the adjusted ICC when g is the only
            term), ``design_effect`` and ``n_effective`` = nobs / design_effect.
        """
        index, label = _intercept_term(self, group, what="design_effect")
        parts = self.variance_decomposition()
        icc_g = parts[f"var_random[{label}]"] / (parts["var_random"] + parts["var_residual"])
        nlev = self.model.frame.terms[index].nlev
        mean_size = self.nobs / nlev
        deff = 1.0 + (mean_size - 1.0) * icc_g
        return pd.Series({"n_groups": float(nlev), "mean_size": mean_size, "icc": icc_g,
                          "design_effect": deff, "n_effective": self.nobs / deff}, name=label)

    def shrinkage(self, group: str | None = None) -> pd.DataFrame:
        """Per level of a random-intercept term: how far its BLUP is shrunk towards zero.

        Parameters
        ----------
        group : str, optional
            The grouping factor of a random-intercept term (1 | g); may be left out when the
            model has one such term.

        Returns
        -------
        pandas.DataFrame
            One row per level: ``grp``; ``n`` (rows); ``n_eff`` (the sum of the prior
            weights for an LMM, of the PIRLS working weights at the mode for a GLMM; n for
            an unweighted LMM); ``mean_resid`` (the weighted mean of the partial residual:
            y - X beta - offset for a one-term LMM, less the other terms' Z b otherwise;
            for a GLMM the working residual (y - mu) / (dmu/deta) + b_j, on the link
            scale); ``condval`` (the BLUP / conditional mode); ``factor`` =
            n_eff / (n_eff + sigma^2 / sigma_g^2); ``ratio`` = condval / mean_resid, which
            equals ``factor`` at the optimum. ``attrs["residual"]`` names the residual used.
        """
        index, label = _intercept_term(self, group, what="shrinkage")
        term = self.model.frame.terms[index]
        b_g = self.b[term_offsets(self.model.frame.terms)[index]:][:term.nlev]
        partial, weights, residual = _partial_residual(self, index, b_g)
        n_eff = np.bincount(term.codes, weights=weights, minlength=term.nlev)
        mean = np.bincount(term.codes, weights=weights * partial, minlength=term.nlev) / n_eff
        theta2 = _theta_of_term(self, index) ** 2
        factor = n_eff * theta2 / (n_eff * theta2 + 1.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(mean != 0.0, b_g / mean, np.nan)
        out = pd.DataFrame({"grp": list(term.levels),
                            "n": np.bincount(term.codes, minlength=term.nlev),
                            "n_eff": n_eff, "mean_resid": mean, "condval": b_g,
                            "factor": factor, "ratio": ratio})
        out.attrs.update(group=label, residual=residual)
        return out


def _require_model(result):
    return require_model(result, "the variance decomposition")


def _term_covariances(result) -> list[np.ndarray]:
    """Sigma_t = sigma^2 T_t T_t' per term (sigma = 1 for binomial and Poisson)."""
    from .objective import ThetaMap

    terms = _require_model(result).frame.terms
    factors = ThetaMap(tuple(t.k for t in terms)).factors(np.asarray(result.theta))
    return [result.sigma**2 * T @ T.T for T in factors]


def _random_variance_by_term(result) -> pd.Series:
    """mean_i x_ti' Sigma_t x_ti per term (Johnson 2014), labelled as varcorr's groups."""
    from .results import unique_group_labels

    terms = _require_model(result).frame.terms
    values = [float(np.mean(np.einsum("ij,jk,ik->i", t.X, S, t.X)))
              for t, S in zip(terms, _term_covariances(result))]
    return pd.Series(values, index=unique_group_labels(terms), dtype=float)


def _fixed_variance(result) -> float:
    """var(X beta) over the rows, R's var (n - 1); 0 with a single row."""
    eta = _require_model(result).frame.X @ result.fixef.to_numpy()
    return float(np.var(eta, ddof=1)) if eta.shape[0] > 1 else 0.0


def _residual_variance(result) -> tuple[float, str, dict | None]:
    """var_residual, how it was found, and (Poisson only) lambda and its null model."""
    options = _require_model(result).options
    if "family" not in options:
        return float(result.sigma**2), "sigma^2", None
    family, link = options["family"], options["link"]
    if family == "gaussian" and link == "identity":
        return float(result.sigma**2), "sigma^2", None
    if family == "binomial" and link in BINOMIAL_LATENT:
        value, method = BINOMIAL_LATENT[link]
        return value, method, None
    if family == "poisson" and link == "log":
        return _poisson_lognormal(result)
    raise ModelSpecError(
        f"no latent-scale residual variance for family {family!r} with link {link!r}: ICC "
        f"and R2 are defined here for LMMs, binomial (logit, probit, cloglog) and Poisson "
        f"(log) GLMMs; use variance components (result.varcorr) instead")


def _poisson_lognormal(result) -> tuple[float, str, dict]:
    """log(1 + 1/lambda), lambda = exp(beta_0 + var_random_0 / 2) of the null model."""
    beta0, var0 = _null_model(result)
    lam = float(np.exp(beta0 + var0 / 2.0))
    null = {"lambda": lam, "null_intercept": beta0, "null_var_random": var0}
    return float(np.log1p(1.0 / lam)), "poisson log: log(1 + 1/lambda), null model", null


# null-model fits by fitted model (weak keys: a result's context, which results never
# change): icc, r2 and design_effect each ask for the decomposition
_NULL_FITS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _null_model(result) -> tuple[float, float]:
    """Intercept and var_random (Johnson 2014) of the null model: the fit's random terms,
    prior weights and offset with an intercept-only fixed part, fitted on the fit's rows
    as glmer (no data needed: the frame holds Z, the weights and the offset)."""
    model = _require_model(result)
    if model not in _NULL_FITS:
        _NULL_FITS[model] = _fit_null_model(model)
    return _NULL_FITS[model]


def _fit_null_model(model) -> tuple[float, float]:
    from .glmm import GlmmObjective, fit_glmm
    from .objective import ThetaMap
    from .scaling import theta_units

    opts = model.options
    data = replace(model.glmm_data(), X=np.ones((model.frame.n, 1)))
    obj = GlmmObjective(data, nagq=int(opts["nagq"]),
                        factor_mode=opts.get("factor_mode", "measure"))
    theta_map = obj.pls.theta_map
    units = theta_units(model.frame.terms, theta_map)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", GlmmSparseWarning)
        fit_glmm(obj, theta0=theta_map.start * units,
                 check=opts.get("check_convergence", True),
                 optimizer_options=opts.get("optimizer_options") or {}, units=units)
    for w in caught:  # say which model they are about: not the user's fit
        warnings.warn(f"the null model behind the Poisson ICC/R2 (intercept-only fixed part, "
                      f"the fit's random terms): {w.message}", w.category, stacklevel=6)
    terms = model.frame.terms
    factors = ThetaMap(tuple(t.k for t in terms)).factors(np.asarray(obj.pls.theta))
    var0 = sum(float(np.mean(np.einsum("ij,jk,ik->i", t.X, T @ T.T, t.X)))
               for t, T in zip(terms, factors))
    return float(obj.state.beta[0]), var0


def _is_intercept_term(term) -> bool:
    return term.cnames == ("(Intercept)",)


def _icc_by_group(result, parts: pd.Series) -> pd.DataFrame:
    """sigma_g^2 / (var_random + var_residual) per random-intercept term."""
    from .results import unique_group_labels

    terms = result.model.frame.terms
    if not all(_is_intercept_term(t) for t in terms):
        written = term_labels(result.model)
        slopes = [written[i] for i, t in enumerate(terms) if not _is_intercept_term(t)]
        raise ModelSpecError(f"icc(by_group=True) needs random intercepts only; the term(s) "
                             f"{', '.join(slopes)} have slopes: use icc() for the whole "
                             f"random part")
    labels = unique_group_labels(terms)
    var_g = np.array([parts[f"var_random[{g}]"] for g in labels])
    out = pd.DataFrame({"group": labels, "variance": var_g,
                        "icc": var_g / (parts["var_random"] + parts["var_residual"])})
    out.attrs = dict(parts.attrs)
    return out


def _intercept_term(result, group: str | None, what: str) -> tuple[int, str]:
    """The index and label of the random-intercept term asked for (or the only one)."""
    from .results import unique_group_labels

    terms = _require_model(result).frame.terms
    labels = unique_group_labels(terms)
    candidates = [i for i, t in enumerate(terms) if _is_intercept_term(t)]
    if group is None:
        if len(candidates) == 1:
            return candidates[0], labels[candidates[0]]
        if not candidates:
            raise ModelSpecError(f"{what}() needs a random-intercept term (1 | g); this model "
                                 f"has none")
        raise ModelSpecError(f"{what}() needs group=: the model has random-intercept terms "
                             f"for {', '.join(repr(labels[i]) for i in candidates)}")
    if group not in labels:
        raise ModelSpecError(f"no random-effects term for group {group!r}; the model's "
                             f"groups are {', '.join(map(repr, labels))}")
    index = labels.index(group)
    if index not in candidates:
        raise ModelSpecError(f"{what}() is defined for random intercepts (1 | {group}); the "
                             f"term {term_labels(result.model)[index]} is not one: the "
                             f"shrinkage of a term with slopes is not one factor per level")
    return index, group


def _theta_of_term(result, index: int) -> float:
    """theta of a scalar term: sigma_g / sigma (the relative SD)."""
    terms = result.model.frame.terms
    start = sum(t.k * (t.k + 1) // 2 for t in terms[:index])
    return float(result.theta[start])


def _partial_residual(result, index: int, b_g: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """Per row: the residual of everything but term ``index``, its weight, and a label."""
    model = result.model
    frame = model.frame
    b_rows = b_g[frame.terms[index].codes]
    several = len(frame.terms) > 1
    if not model.is_glmm:
        weights = np.ones(frame.n) if frame.weights is None else frame.weights
        label = ("y - X beta - offset - the other terms' Z b" if several
                 else "y - X beta - offset (the residual from the fixed part)")
        return result.residuals.to_numpy() + b_rows, weights, label
    return _working_partial(result, b_rows, several)


def _working_partial(result, b_rows: np.ndarray, several: bool) -> tuple[np.ndarray, np.ndarray, str]:
    """GLMM: partial working residual (y - mu) / mu_eta + b_j and working weights at the mode."""
    from .results import linear_predictor

    model = result.model
    frame = model.frame
    family = model.family_object
    eta = linear_predictor(frame, result.fixef.to_numpy(), result.b, term_offsets(frame.terms))
    mu = family.link.linkinv(eta)
    mu_eta = family.link.mu_eta(eta)
    prior = np.ones(frame.n) if frame.weights is None else frame.weights
    weights = prior * mu_eta**2 / family.variance(mu)
    label = ("working residual (y - mu) / (dmu/deta) + b_j, weighted by the PIRLS working "
             "weights at the mode (link scale)")
    if several:
        label += "; the other terms' b stay in eta"
    return (frame.y - mu) / mu_eta + b_rows, weights, label
