"""Parametric bootstrap of a fitted model (lme4's ``bootMer``) and its percentile intervals.

After the results stage (... -> results -> inference). Replicate i simulates a response
from the fit (simulate.py) with the i-th child of the seed (``simulate.seed_children``),
refits it (refit.py: the fit's cross-products of Z and X, its analysis of M, its theta
as the start) and keeps ``func(refit)``. One seed per replicate makes the statistics the
same for any number of workers and any order in which they finish.

Workers: refits of small models spend most of their time in Python (the optimizer's loop
around one small factorization), which holds the GIL, so threads do not add a core;
``n_jobs > 1`` uses forked processes where fork is the start method (Linux's default),
threads elsewhere (macOS and Windows start processes by spawn; fork is unsafe on macOS)
and inside a daemonic process (a multiprocessing.Pool worker may not have children).
Each worker has its own Replicator: a forked worker receives it through the pool's
initializer (inherited in memory, never pickled), so bootstraps running at once in
threads of one process cannot swap models. A replicate that fails (any error from the
refit or from ``func``, not a warning) is counted and its row left NaN, as bootMer does.
"""
from __future__ import annotations

import multiprocessing
import os
import sys
import warnings
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.stats import norm
from threadpoolctl import threadpool_limits

from .errors import ModelSpecError
from .simulate import seed_children

MAX_ERRORS_KEPT = 5
CHUNK = 8  # replicates per task: progress updates without a hand-off per refit


def default_statistics(result) -> pd.Series:
    """SDs and correlations (lme4's names), sigma (when estimated) and the fixed effects."""
    from .profile import sdcor_from_theta, variance_names

    terms = result.model.frame.terms
    values = list(sdcor_from_theta(np.asarray(result.theta), [t.k for t in terms],
                                   float(result.sigma)))
    names = variance_names(terms)
    if result.n_scale:
        names.append("sigma")
        values.append(float(result.sigma))
    names += list(result.fixef.index)
    values += list(result.fixef.to_numpy())
    return pd.Series(values, index=names, dtype=np.float64)


def as_statistics(value) -> pd.Series:
    """A statistic returned by ``func`` as a float Series (array-likes get positions 0..k-1)."""
    if isinstance(value, pd.Series):
        return value.astype(np.float64)
    arr = np.atleast_1d(np.asarray(value, dtype=np.float64))
    if arr.ndim != 1:
        raise ValueError("func must return a scalar, a 1-d array or a pandas Series")
    return pd.Series(arr)


def norm_inter(t_sorted: np.ndarray, alpha: float) -> float:
    """The alpha quantile of bootstrap values as boot's ``norm.inter``: order statistic
    (R + 1) alpha, interpolated between neighbours on the normal quantile scale."""
    R = t_sorted.shape[0]
    rk = (R + 1) * alpha
    k = int(np.floor(rk + 1e-10))
    if abs(rk - k) < 1e-10 and 1 <= k <= R:
        return float(t_sorted[k - 1])
    if k < 1:
        return float(t_sorted[0])
    if k >= R:
        return float(t_sorted[-1])
    z = norm.ppf([alpha, k / (R + 1), (k + 1) / (R + 1)])
    lo, hi = t_sorted[k - 1], t_sorted[k]
    return float(lo + (z[0] - z[1]) / (z[2] - z[1]) * (hi - lo))


@dataclass(frozen=True, eq=False)
class BootstrapResult:
    """Replicates of a parametric bootstrap: ``t0`` (the fit's statistics), ``t`` (one row
    per replicate, NaN for failed refits), ``n_failed`` and the first errors."""

    t0: pd.Series
    t: pd.DataFrame
    n_failed: int
    errors: tuple = field(default=(), repr=False)
    seed: object = None

    @property
    def n(self) -> int:
        return self.t.shape[0]

    def confint(self, level: float = 0.95, type: str = "perc") -> pd.DataFrame:
        """Percentile intervals (boot.ci's type "perc") per statistic, failed refits left out.

        ``type="norm"`` gives t0 - bias -+ z sd (boot.ci's normal intervals).
        """
        from .profile import check_level

        check_level(level)
        kind = str(type).lower()
        if kind not in ("perc", "norm"):
            raise ModelSpecError(f"type must be 'perc' or 'norm', not {type!r}")
        alpha = (1.0 - level) / 2.0
        rows = {}
        for name in self.t.columns:
            vals = self.t[name].to_numpy()
            vals = np.sort(vals[np.isfinite(vals)])
            if vals.shape[0] < 2:
                rows[name] = (np.nan, np.nan)
            elif kind == "perc":
                rows[name] = (norm_inter(vals, alpha), norm_inter(vals, 1.0 - alpha))
            else:
                z = norm.ppf(1.0 - alpha)
                centre = 2.0 * self.t0[name] - vals.mean()
                sd = vals.std(ddof=1)
                rows[name] = (centre - z * sd, centre + z * sd)
        return pd.DataFrame.from_dict(rows, orient="index", columns=["lower", "upper"])


# -- the replicates ---------------------------------------------------------------------

class _Replicator:
    """Simulates and refits replicates by index; one per worker (thread or process)."""

    def __init__(self, result, func, children):
        from .refit import Refitter
        from .simulate import Simulator

        self.simulator = Simulator.from_result(result)
        self.refitter = Refitter(result)
        self.func = default_statistics if func is None else func
        self.children = children

    def run(self, indices) -> list:
        """(index, statistics or None, error message or None) per replicate.

        Any error from the refit or from ``func`` fails that replicate only (bootMer
        catches every error too); a failing simulation is the model's, not the
        replicate's, and stops the bootstrap.
        """
        out = []
        for i in indices:
            y = self.simulator.draw(np.random.default_rng(self.children[i]))
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # singular / convergence, as bootMer
                    stats = as_statistics(self.func(self.refitter.fit(y)))
                out.append((i, stats, None))
            except Exception as err:  # noqa: BLE001 -- counted and reported, as bootMer
                out.append((i, None, f"replicate {i}: {type(err).__name__}: {err}"))
        return out


_WORKER: _Replicator | None = None  # this worker process's replicator (set by _init_process)


def _init_process(replicator: _Replicator) -> None:
    """A forked worker: its replicator (passed by the pool, so one per pool); one thread
    for its row passes and its BLAS (the workers share the cores); no thread pool
    inherited from the parent (its threads do not exist after fork)."""
    global _WORKER
    from . import parallel

    os.environ["GLMM_SPARSE_THREADS"] = "1"
    parallel._pool = None
    threadpool_limits(limits=1)  # kept for the worker's life: no context to restore
    _WORKER = replicator


def _run_in_process(indices) -> list:
    return _WORKER.run(indices)


def _chunks(n: int) -> list[list[int]]:
    return [list(range(i, min(i + CHUNK, n))) for i in range(0, n, CHUNK)]


def _progress_bar(progress, total: int):
    if progress is None:
        progress = sys.stderr.isatty()
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="bootstrap", unit="refit")


def _collect(futures_or_results, bar, sink: list) -> None:
    for chunk in futures_or_results:
        sink.extend(chunk)
        if bar is not None:
            bar.update(len(chunk))


def _run_serial(result, func, children, chunks, bar) -> list:
    rep = _Replicator(result, func, children)
    out: list = []
    _collect((rep.run(c) for c in chunks), bar, out)
    return out


def _run_threads(result, func, children, chunks, bar, n_jobs) -> list:
    import threading

    local = threading.local()

    def task(indices):
        if not hasattr(local, "rep"):
            local.rep = _Replicator(result, func, children)
        return local.rep.run(indices)

    out: list = []
    with ThreadPoolExecutor(max_workers=n_jobs) as pool:
        _collect(pool.map(task, chunks), bar, out)
    return out


def _run_processes(result, func, children, chunks, bar, n_jobs) -> list:
    # under fork the initializer's arguments are inherited, not pickled: func may be a lambda
    replicator = _Replicator(result, func, children)
    out: list = []
    with ProcessPoolExecutor(max_workers=n_jobs, mp_context=multiprocessing.get_context("fork"),
                             initializer=_init_process, initargs=(replicator,)) as pool:
        _collect(pool.map(_run_in_process, chunks), bar, out)
    return out


def worker_kind(n_jobs: int) -> str:
    """"serial", "processes" (forked) or "threads" for n_jobs workers in this process.

    Fork only where it is the start method in force (the platform default unless the
    program chose another): Linux's default; macOS and Windows spawn, and fork is unsafe
    on macOS. A daemonic process may not start children.
    """
    if n_jobs == 1:
        return "serial"
    if multiprocessing.current_process().daemon:
        return "threads"
    method = multiprocessing.get_start_method(allow_none=True) \
        or multiprocessing.get_all_start_methods()[0]  # the first is the platform default
    return "processes" if method == "fork" else "threads"


def check_n_jobs(n_jobs) -> int:
    if not isinstance(n_jobs, (int, np.integer)) or isinstance(n_jobs, bool) or n_jobs == 0:
        raise TypeError(f"n_jobs must be a positive integer (or -1 for all cores), not {n_jobs!r}")
    return (os.cpu_count() or 1) if n_jobs < 0 else int(n_jobs)


def bootstrap(m, n: int = 1000, seed=None, func=None, n_jobs: int = 2,
              progress: bool | None = None) -> BootstrapResult:
    """Parametric bootstrap of a fitted lmer or glmer model (lme4's ``bootMer``).

    Parameters
    ----------
    m : LmerResult or GlmerResult
    n : int
        Number of replicates.
    seed : int, numpy SeedSequence, numpy Generator or None
        Replicate i uses child i of ``numpy.random.SeedSequence(seed)`` (an int >= 0 or
        None: fresh entropy); of the SeedSequence itself (its next n children, numpy's
        ``spawn``); of a Generator's SeedSequence (as ``Generator.spawn``: a fresh
        ``default_rng(s)`` gives the replicates of ``seed=s``, and passing the same
        Generator again gives new ones). The same seed gives the same replicates for any
        ``n_jobs``.
    func : callable, optional
        ``func(result) -> scalar, array-like or pandas Series``, applied to the fit
        (``t0``) and to each refit. A replicate's Series is matched to ``t0`` by its
        labels (in any order); a replicate whose labels differ from ``t0``'s, or whose
        refit or ``func`` raises, is counted as failed (``n_failed``, ``errors``) with a
        RuntimeWarning. Default: SDs and correlations ("sd_x|g", "cor_y.x|g"), sigma
        (when estimated), the fixed effects.
    n_jobs : int
        Workers (-1: all cores), each with its own Refitter. Forked processes where fork
        is the start method (Linux; refits of small models hold the GIL, so only
        processes add cores), each on one thread for its row passes and its BLAS;
        threads on macOS and Windows and inside a daemonic process (a
        ``multiprocessing.Pool`` worker), where they are correct but add little for small
        models (``n_jobs=1`` is as fast there).
    progress : bool or None
        A tqdm progress bar; None: shown when stderr is a terminal, False: silent.

    Returns
    -------
    BootstrapResult
        ``t0``, ``t`` (n rows, one column per statistic), ``n_failed``, ``errors``,
        ``confint(level, type="perc")``.
    """
    if getattr(m, "model", None) is None:
        raise ValueError("bootstrap needs a result made by lmer or glmer")
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise TypeError(f"n must be a positive integer, not {n!r}")
    n_jobs = min(check_n_jobs(n_jobs), int(n))
    t0 = as_statistics((default_statistics if func is None else func)(m))
    children = seed_children(seed, int(n))
    chunks = _chunks(int(n))
    bar = _progress_bar(progress, int(n))
    kind = worker_kind(n_jobs)
    try:
        if kind == "serial":
            rows = _run_serial(m, func, children, chunks, bar)
        elif kind == "processes":
            rows = _run_processes(m, func, children, chunks, bar, n_jobs)
        else:
            rows = _run_threads(m, func, children, chunks, bar, n_jobs)
    finally:
        if bar is not None:
            bar.close()
    return _assemble(t0, rows, int(n), seed)


def aligned_to(stats: pd.Series, t0: pd.Series) -> np.ndarray | str:
    """The replicate's values in ``t0``'s order (matched by label), or why they cannot be."""
    if stats.index.equals(t0.index):
        return stats.to_numpy()
    same_labels = (t0.index.is_unique and stats.index.is_unique and len(stats) == len(t0)
                   and set(stats.index) == set(t0.index))
    if same_labels:
        return stats.reindex(t0.index).to_numpy()
    shown = list(stats.index[:6]) + (["..."] if len(stats) > 6 else [])
    expected = list(t0.index[:6]) + (["..."] if len(t0) > 6 else [])
    return (f"func returned {len(stats)} values labelled {shown}, but {len(t0)} labelled "
            f"{expected} for the fit: return the same labels (in any order) every time")


def _assemble(t0: pd.Series, rows: list, n: int, seed) -> BootstrapResult:
    values = np.full((n, len(t0)), np.nan)
    errors = []
    for i, stats, err in sorted(rows, key=lambda r: r[0]):
        row = err if stats is None else aligned_to(stats, t0)
        if isinstance(row, str):
            errors.append(row if stats is None else f"replicate {i}: {row}")
            continue
        values[i] = row
    t = pd.DataFrame(values, index=pd.RangeIndex(n, name="replicate"), columns=t0.index)
    n_failed = len(errors)
    if n_failed:
        warnings.warn(f"{n_failed} of {n} bootstrap refits failed (their rows are NaN); "
                      f"first: {errors[0]}", RuntimeWarning, stacklevel=3)
    return BootstrapResult(t0, t, n_failed, tuple(errors[:MAX_ERRORS_KEPT]), seed)
