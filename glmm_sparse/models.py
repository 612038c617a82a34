"""Entry points: ``lmer`` and ``glmer`` fit mixed models the way lme4 does.

The whole pipeline in order: formula -> model frame (terms) -> cross-products ->
objective (fixed pattern, CHOLMOD) -> optimize theta -> results.
"""
from __future__ import annotations

import warnings

import numpy as np

from .agq import check_agq_model
from .blas import one_blas_thread
from .classed import frame_objective, same_route
from .families import get_family
from .glmm import GlmmObjective, fit_glmm
from .pirls import GlmmData
from .responses import binomial_response, numeric_response
from .scaling import theta_units
from .start import moment_theta
from .results_glmm import GlmerResult, build_glmer_result
from .errors import ModelSpecError, SingularFitWarning
from .formula import parse_formula
from .frame import build_frame
from .io import as_pandas
from .objective import LmmObjective, check_fixed_sigma, fixed_sigma_unit
from .optimize import check_optimizer, is_singular, minimize_theta
from .results import LmerResult, build_lmer_result
from .validate import check_glmm_response_varies, check_response_varies


def parse_mixed_formula(formula: str, without_random: str):
    """The parsed formula, which must have a random-effects term (else: use without_random)."""
    parsed = parse_formula(formula)
    if not parsed.random:
        raise ModelSpecError(
            f"the formula {formula!r} has no random-effects term such as (1 | group); for a "
            f"model without random effects use {without_random}")
    return parsed


def warn_if_singular(result) -> None:
    """lme4's boundary message, saying what it means (issued from the user's call site)."""
    if result.is_singular:
        warnings.warn("boundary (singular) fit: a random-effect variance is estimated as 0 "
                      "or a correlation as +-1; the model is more complex than the data "
                      f"support (see {type(result).__name__}.varcorr)", SingularFitWarning,
                      stacklevel=3)


OPTIMIZER_OPTIONS = ("ftol_abs", "xtol_abs", "ftol_rel", "xtol_rel", "maxeval")


def check_optimizer_options(options) -> dict:
    """The optimizer options as a dict, each a known name with a number."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise TypeError(f"optimizer_options must be a dict, not {type(options).__name__}")
    for key, value in options.items():
        if key not in OPTIMIZER_OPTIONS:
            raise TypeError(f"unknown optimizer option {key!r}; the options are "
                            f"{', '.join(OPTIMIZER_OPTIONS)}")
        integer = key == "maxeval"
        kinds = (int, np.integer) if integer else (int, float, np.integer, np.floating)
        if not isinstance(value, kinds) or isinstance(value, bool):
            kind = "an integer" if integer else "a number"
            raise TypeError(f"optimizer option {key} must be {kind}, not {value!r}")
    return dict(options)


def start_theta(start, theta_map, units: np.ndarray) -> np.ndarray:
    """The starting theta: the user's, checked finite and of the right length, or lme4's
    default (identity factors) in the optimizer's units (scaling.py)."""
    if start is None:
        return theta_map.start * units
    try:
        theta0 = np.asarray(start, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"start must be a sequence of numbers, not {start!r}") from None
    if theta0.shape != (theta_map.n_theta,):
        raise ModelSpecError(f"start must have {theta_map.n_theta} values (one per theta), "
                             f"got {theta0.shape}")
    if not np.all(np.isfinite(theta0)):
        raise ModelSpecError(f"start must be finite, got {theta0.tolist()}")
    return theta0


def lmm_start_and_units(obj: LmmObjective, frame, start,
                        moment: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The starting theta and the optimizer's units of theta (scaling.py).

    A profiled fit starts as lme4 does (moment_theta for scalar intercepts, else
    identity factors). With sigma fixed, theta is relative to that sigma: the moment
    start (relative to an estimated residual variance) does not apply, and the units
    also carry the ratio of the data's residual scale to sigma (fixed_sigma_unit).
    ``moment`` is moment_theta(frame.terms, frame.y) if the caller has it already.
    """
    units = theta_units(frame.terms, obj.theta_map, frame.weights)
    if obj.fixed_sigma is not None:
        units = units * fixed_sigma_unit(obj.cp, obj.fixed_sigma)
        return start_theta(start, obj.theta_map, units), units
    theta0 = None
    if start is None:
        theta0 = moment_theta(frame.terms, frame.y) if moment is None else moment
    if theta0 is None:
        theta0 = start_theta(start, obj.theta_map, units)
    return theta0, units


def escape_fixed_sigma_boundary(obj: LmmObjective, opt, units, check: bool, options: dict,
                                optimizer: str = "bobyqa"):
    """With sigma fixed, a fit from the identity start that ends on the boundary is tried
    again from the REML optimum (for an ML fit) or from the start scaled by 1/2 and 2
    (REML), keeping the lowest criterion.

    Unlike the profiled criterion, the fixed-sigma criterion can have a local minimum at
    theta = 0 away from its global one: metafor's BCG meta-regression by ML ends at
    tau^2 = 0 from tau = sigma, while its maximum is at tau^2 = 0.029 (test_known_sigma.py).
    """
    lower = obj.theta_map.lower
    if not is_singular(opt.theta, lower, units=units):
        return opt
    starts = []
    if not obj.reml:
        reml = same_route(obj, reml=True)
        starts.append(minimize_theta(reml, opt.theta0, lower, check=False, units=units,
                                     optimizer=optimizer, **options).theta)
    starts += [0.5 * opt.theta0, 2.0 * opt.theta0]
    best = opt
    for theta0 in starts:
        if is_singular(theta0, lower, units=units):
            continue
        again = minimize_theta(obj, theta0, lower, check=check, units=units,
                               optimizer=optimizer, **options)
        if again.fmin < best.fmin:
            best = again
    return best


def optimize_lmm(obj: LmmObjective, theta0, units, *, start, check: bool, options: dict,
                 optimizer: str = "bobyqa"):
    """The optimum of an LMM's criterion from ``theta0``: one run of the optimizer and, with
    sigma fixed and no user start, ``escape_fixed_sigma_boundary``. The one place in-memory,
    streamed, Dask and Spark fits optimize theta, so they cannot drift apart."""
    opt = minimize_theta(obj, theta0, obj.theta_map.lower, check=check, units=units,
                         optimizer=optimizer, **options)
    if obj.fixed_sigma is not None and start is None:
        opt = escape_fixed_sigma_boundary(obj, opt, units, check, options, optimizer)
    return opt


def check_optimizer_route(optimizer: str, factor_mode: str) -> None:
    """Refuse ``optimizer="lbfgsb"`` with ``factor_mode="classes"`` (before any pass)."""
    if check_optimizer(optimizer) == "lbfgsb" and factor_mode == "classes":
        raise ModelSpecError("optimizer='lbfgsb' needs the analytic gradient of the criterion, "
                             "which the count-class route (factor_mode='classes') does not have; "
                             "use factor_mode='measure' (the sparse route then) or "
                             "optimizer='bobyqa'")


def classes_allowed(optimizer: str) -> bool:
    """Whether the count classes (classed.py, no analytic gradient) may be the route: not
    for an optimizer that needs the gradient ("lbfgsb": the sparse route then, and their
    sums are never built; with factor_mode "classes" it is refused up front)."""
    return check_optimizer(optimizer) != "lbfgsb"


def check_lmer_arguments(formula: str, *, reml, sigma, optimizer_options,
                         optimizer: str = "bobyqa", factor_mode: str = "measure"):
    """lmer's argument checks, shared by every lmer (in memory, streamed, Dask, Spark),
    before any pass over the rows: the checked sigma, the parsed formula and the
    optimizer options; the optimizer's route (check_optimizer_route)."""
    if not isinstance(reml, (bool, np.bool_)):
        raise TypeError(f"reml must be True or False, not {reml!r}")
    check_optimizer_route(optimizer, factor_mode)
    sigma = check_fixed_sigma(sigma)
    parsed = parse_mixed_formula(formula, "ordinary least squares (e.g. statsmodels OLS)")
    return sigma, parsed, check_optimizer_options(optimizer_options)


def streams(data, streaming: bool | None) -> bool:
    """Whether lmer / glmer read ``data`` in batches: Parquet only; by default above a size."""
    if streaming is not None and not isinstance(streaming, (bool, np.bool_)):
        raise TypeError(f"streaming must be True, False or None, not {streaming!r}")
    from .batches import is_parquet_source, open_source

    if not is_parquet_source(data):
        if streaming:
            raise ModelSpecError("streaming=True reads Parquet: pass a .parquet file, a "
                                 "directory or glob of them, or a pyarrow Dataset")
        return False
    if streaming is None:
        from .streaming import STREAM_ABOVE_ROWS

        return open_source(data).num_rows > STREAM_ABOVE_ROWS
    return bool(streaming)


def lmer(formula: str, data, *, reml: bool = True, weights=None, offset=None,
         sigma: float | None = None, na_action: str = "omit", start=None,
         check_convergence: bool = True, optimizer_options: dict | None = None,
         factor_mode: str = "measure", streaming: bool | None = None,
         batch_rows: int | None = None, progress: bool | None = None,
         optimizer: str = "bobyqa") -> LmerResult:
    """Fit a linear mixed-effects model by REML (default) or maximum likelihood.

    Parameters
    ----------
    formula : str
        An lme4 formula, e.g. ``"Reaction ~ Days + (Days | Subject)"``: correlated
        ``(1 + x | g)``, uncorrelated ``(x || g)``, nested ``(1 | a/b)``, interaction
        grouping ``(1 | a:b)``, crossed terms, ``offset(...)``.
    data : pandas / polars DataFrame, pyarrow Table, dict of arrays, a CSV path, or Parquet:
        a file, a directory or a glob of files, or a ``pyarrow.dataset.Dataset``
    reml : bool, keyword-only
        REML (lme4's default) or, if False, maximum likelihood.
    weights : str or array, optional
        Prior weights (a column name or one value per row): residual variance sigma^2 / w.
    offset : str or array, optional
        A known term added to the linear predictor (with any ``offset()`` in the formula).
    sigma : float, optional
        Fix the residual standard deviation instead of estimating it: row i then has the
        known residual variance sigma^2 / w_i. ``sigma=1`` with ``weights=1 / v`` is the
        random-effects meta-analysis (Fay-Herriot) model with known sampling variances v.
        sigma is then not a parameter (``npar`` leaves it out), ``vcov`` is
        sigma^2 R_X^-1 R_X^-T and ``ranef`` holds the EBLUPs (docs/known-variances.md).
    na_action : {"omit", "raise"}
        Drop rows with a missing value in a used column (with a warning), or raise.
    start : array, optional
        Starting theta (lme4 order). Default, as lme4: when every random term is a scalar
        intercept on its own factor, a method-of-moments guess from the variances of y's
        group means (start.py); otherwise identity relative covariance factors.
    check_convergence : bool
        Compute the finite-difference gradient at the optimum and warn when it is not small.
    optimizer_options : dict, optional
        ``ftol_abs``, ``xtol_abs``, ``ftol_rel``, ``xtol_rel``, ``maxeval`` for NLopt's
        BOBYQA; for L-BFGS-B ``ftol_abs``, ``ftol_rel`` (its stopping rule on the
        criterion's decrease) and ``maxeval``.
    factor_mode : {"measure", "simplicial", "supernodal", "auto", "schur", "classes"}
        The factorization of M: "measure" factors a single term's block-diagonal M
        block by block, and otherwise uses CHOLMOD, simplicial for small factors or
        factors without fill, timing both kinds once for large ones, and, with two or
        more terms, the first of at most 8 columns, the Schur complement of its
        block-diagonal block (schur.py: the later terms' block dense, at most 4,096
        wide) where the sparse factor fills that block in, or else where it is timed
        faster; name a mode to
        make large fits bitwise reproducible. "classes" eliminates a scalar first term
        ``(1 | g1)`` through the distinct row counts of its levels (classed.py: one dense
        Cholesky of the other terms' size per evaluation, no level pairs); "measure" takes
        that route by itself where it applies and does less work (crossed designs whose
        first factor's levels each meet many levels of the others).
    streaming : bool, optional
        For Parquet data: read the rows in batches, in memory bounded by the levels,
        nnz(Z'Z) and one batch (two passes; streaming.py, docs/pipelines.md), or, if False,
        read them whole. Default: stream when the files hold more than
        ``streaming.STREAM_ABOVE_ROWS`` rows. A streamed fit has the same estimates;
        its ``fitted``, ``residuals`` and ``scaled_residuals`` are None.
    batch_rows : int, optional
        Rows per batch when streaming (default ``batches.BATCH_ROWS``, 65,536).
    progress : bool, optional
        When streaming: a progress bar over each pass (tqdm, on stderr). Default: shown
        when stderr is a terminal, so pipeline jobs' logs stay clean.
    optimizer : {"bobyqa", "lbfgsb"}
        "bobyqa": NLopt's derivative-free BOBYQA (lme4's default). "lbfgsb": scipy's
        L-BFGS-B with the analytic gradient of the criterion (gradient.py), which needs
        fewer evaluations, each with a selected inverse of M; the convergence check then
        differentiates the gradient. The count-class route has no gradient: with
        "lbfgsb", factor_mode "measure" keeps to the sparse factor, and "classes" is
        refused. Refits, the bootstrap and profiles use the fit's optimizer.

    Returns
    -------
    LmerResult
        ``fixef``, ``vcov``, ``varcorr``, ``ranef``, ``coef``, ``loglik``, ``aic``, ``bic``,
        ``sigma``, ``theta``, ``fitted``, ``residuals``, ``summary()``, ...
    """
    with one_blas_thread():
        sigma, parsed, options = check_lmer_arguments(
            formula, reml=reml, sigma=sigma, optimizer_options=optimizer_options,
            optimizer=optimizer, factor_mode=factor_mode)
        if streams(data, streaming):
            from .streaming import lmer_parquet

            result = lmer_parquet(formula, data, parsed, reml=reml, weights=weights, offset=offset,
                                  sigma=sigma, na_action=na_action, start=start,
                                  check_convergence=check_convergence, options=options,
                                  factor_mode=factor_mode, progress=progress, optimizer=optimizer,
                                  **({} if batch_rows is None else {"batch_rows": batch_rows}))
            warn_if_singular(result)
            return result
        # a known residual variance tells one random effect per row from the residual (the
        # meta-analysis model), so sigma relaxes lmer's identifiability check as glmer's does
        frame = build_frame(parsed, formula, as_pandas(data), weights=weights, offset=offset,
                            na_action=na_action, glmm=sigma is not None)
        check_response_varies(frame.y, parsed.response)
        # the moment start before the objective exists: its n-long temporaries (y centred,
        # the codes widened by np.bincount) then do not stack on the objective's memory
        moment = moment_theta(frame.terms, frame.y) if start is None and sigma is None else None
        obj = frame_objective(frame, reml=bool(reml), factor_mode=factor_mode, sigma=sigma,
                              classes=classes_allowed(optimizer))
        theta0, units = lmm_start_and_units(obj, frame, start, moment)
        opt = optimize_lmm(obj, theta0, units, start=start, check=check_convergence,
                           options=options, optimizer=optimizer)
        obj.update(opt.theta)
        obj.check_residual_left()
        result = build_lmer_result(formula, frame, obj, opt,
                                   data_name=data if isinstance(data, str) else None,
                                   weights_name=weights if isinstance(weights, str) else None,
                                   offset_name=offset if isinstance(offset, str) else None,
                                   parsed=parsed, options=dict(
                                       factor_mode=factor_mode, check_convergence=check_convergence,
                                       optimizer_options=options, optimizer=optimizer))
        warn_if_singular(result)
        return result


def glmer(formula: str, data, *, family="binomial", link: str | None = None, nagq: int = 1,
          weights=None, offset=None, na_action: str = "omit", start=None,
          check_convergence: bool = True, optimizer_options: dict | None = None,
          factor_mode: str = "measure", sigma=None, streaming: bool | None = None,
          batch_rows: int | None = None, progress: bool | None = None,
          spill_dir=None, optimizer: str = "bobyqa") -> GlmerResult | LmerResult:
    """Fit a generalized linear mixed-effects model by Laplace or adaptive Gauss-Hermite.

    Parameters
    ----------
    formula : str
        An lme4 formula. Binomial responses: 0/1, booleans, a two-level factor (first level
        failure), ``cbind(successes, failures)`` (expressions allowed, e.g.
        ``cbind(incidence, size - incidence)``), or proportions with ``weights=`` trials.
    data : pandas / polars DataFrame, pyarrow Table, dict of arrays, or a CSV/Parquet path
    family : {"binomial", "poisson", "gamma", "inverse_gaussian", "gaussian"} or a Family
    link : str, optional
        Default: the canonical link. logit, probit, cloglog, log, identity, inverse, sqrt,
        1/mu^2 where the family allows it.
    nagq : int
        0: theta optimized with beta inside PIRLS (fast, approximate); 1: Laplace;
        > 1: adaptive Gauss-Hermite with that many nodes (one scalar random term only).
    weights, offset : str or array, optional
        Prior weights (binomial: number of trials for proportions) and a known offset
        (added to any ``offset()`` in the formula).
    na_action, start, check_convergence, optimizer_options, factor_mode
        As for ``lmer``; ``start`` is a starting theta; factor_mode "classes" is
        ``lmer``'s alone (refused).
    sigma : None
        Not accepted: a GLMM's dispersion is fixed by its family (binomial, Poisson) or
        estimated (Gamma, inverse Gaussian). A known residual variance is an ``lmer``
        model (``lmer(..., sigma=...)``).
    streaming : bool, optional
        For Parquet data: fit out of core (outofcore.py, docs/pipelines.md). A first pass
        finds the levels, a second encodes every batch of rows into memory-mapped arrays
        in a temporary directory (``spill_dir``), which each PIRLS iteration then reads
        instead of re-reading Parquet; the directory is removed after the fit. False reads
        the files whole. Default: out of core when the files hold more than
        ``streaming.STREAM_ABOVE_ROWS`` rows. Same estimates; ``fitted``, ``residuals``
        and ``scaled_residuals`` are None.
    batch_rows, progress
        As for ``lmer``: rows per batch, and a progress bar over each pass.
    spill_dir : str or path, optional
        Where the out-of-core fit writes its temporary directory (default: the system's,
        ``tempfile.gettempdir()``); use a local disk with room for about
        8 x (p + 3 + the columns of all terms + the terms + the pairs of terms) bytes
        per row (56 for ``y ~ x + (1 | g)``).
    optimizer : {"bobyqa"}
        BOBYQA: the Laplace and AGQ criteria have no analytic gradient here, so "lbfgsb"
        is refused, except for the gaussian family with the identity link (an ``lmer``).

    Returns
    -------
    GlmerResult
        As ``lmer``'s result, plus ``family``, ``link``, ``nagq`` and ``deviance`` (the
        conditional deviance); ``loglik`` is the Laplace / AGQ log-likelihood. The gaussian
        family with the identity link is the linear mixed model: its fit by maximum
        likelihood (an ``LmerResult``), exactly as ``lmer(..., reml=False)``.
    """
    with one_blas_thread():
        if sigma is not None:
            raise ModelSpecError(
                f"glmer does not take sigma (got {sigma!r}): a GLMM's dispersion is fixed by its "
                "family (binomial, Poisson) or estimated (Gamma, inverse Gaussian); for a "
                "linear mixed model with a known residual SD use lmer(..., sigma=...)")
        fam = get_family(family, link)
        if not isinstance(nagq, (int, np.integer)) or isinstance(nagq, bool) or nagq < 0:
            raise TypeError(f"nagq must be a non-negative integer, not {nagq!r}")
        if fam.name == "gaussian" and fam.link.name == "identity":
            # the linear mixed model itself, by maximum likelihood (lme4's glmer does the same)
            return lmer(formula, data, reml=False, weights=weights, offset=offset,
                        na_action=na_action, start=start, check_convergence=check_convergence,
                        optimizer_options=optimizer_options, factor_mode=factor_mode,
                        streaming=streaming, batch_rows=batch_rows, progress=progress,
                        optimizer=optimizer)
        if factor_mode == "classes":
            raise ModelSpecError(
                "factor_mode='classes' applies to lmer only: the count classes eliminate a "
                "term of a linear mixed model, whose per-level sums do not change between "
                "evaluations; a GLMM's do (its working weights); use factor_mode='measure'")
        if check_optimizer(optimizer) != "bobyqa":
            raise ModelSpecError(f"optimizer={optimizer!r} needs the analytic gradient of the "
                                 f"criterion, which a GLMM ({fam.name} family, Laplace or AGQ) "
                                 "does not have; use optimizer='bobyqa'")
        parsed = parse_mixed_formula(formula, "a GLM (e.g. statsmodels GLM)")
        options = check_optimizer_options(optimizer_options)
        if streams(data, streaming):
            from .outofcore import glmer_parquet

            result = glmer_parquet(formula, data, parsed, family=fam, nagq=int(nagq),
                                   weights=weights, offset=offset, na_action=na_action,
                                   start=start, check_convergence=check_convergence,
                                   options=options, factor_mode=factor_mode, progress=progress,
                                   spill_dir=spill_dir,
                                   **({} if batch_rows is None else {"batch_rows": batch_rows}))
            warn_if_singular(result)
            return result
        response = binomial_response if fam.name == "binomial" else numeric_response
        frame = build_frame(parsed, formula, as_pandas(data), weights=weights, offset=offset,
                            na_action=na_action, response=response, glmm=True)
        prior_w = np.ones(frame.n) if frame.weights is None else frame.weights
        fam.check_response(frame.y, prior_w, name=parsed.response, rows=frame.row_index)
        check_glmm_response_varies(frame.y, prior_w, fam, parsed.response)
        check_agq_model(tuple(t.k for t in frame.terms), int(nagq), fam)
        gdata = GlmmData.from_frame(frame, fam, prior_w=prior_w)
        obj = GlmmObjective(gdata, nagq=int(nagq), factor_mode=factor_mode)
        theta_map = obj.pls.theta_map
        units = theta_units(frame.terms, theta_map)  # sigma = 1: prior weights do not scale theta
        stage1, stage2 = fit_glmm(obj, theta0=start_theta(start, theta_map, units),
                                  check=check_convergence, optimizer_options=options, units=units)
        result = build_glmer_result(formula, frame, obj, stage1, stage2,
                                    weights_name=weights if isinstance(weights, str) else None,
                                    data_name=data if isinstance(data, str) else None,
                                    offset_name=offset if isinstance(offset, str) else None,
                                    parsed=parsed, options=dict(
                                        factor_mode=factor_mode,
                                        check_convergence=check_convergence,
                                        optimizer_options=options))
        warn_if_singular(result)
        return result
