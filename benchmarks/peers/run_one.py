"""One Python peer's fit of one case in this fresh process; prints one JSON record.

    python benchmarks/peers/run_one.py PEER CASE DATA.parquet

PEER is glmm_sparse, statsmodels or ols. The data are read first (not timed); then the
peak resident set is reset, the fit alone is timed, and the record gives its seconds, the
process's peak resident set during the fit (``peak_rss``), what the fit added over the
resident set before it (``peak_increment``), and the estimates. harness.py starts one such
process per fit, so one fit's memory never counts against the next.
"""
from __future__ import annotations

import gc
import json
import math
import sys
import time
import traceback
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from peers.cases import CASES, Case
from peers.procmem import reset_peak, status_bytes

MAX_WARNINGS = 10


def measure(fit) -> tuple[object, dict]:
    """Run ``fit()`` with warnings silenced (and kept), timing it and its peak memory."""
    gc.collect()
    before = status_bytes("VmRSS")
    reset = reset_peak()
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fit()
    seconds = time.perf_counter() - start
    peak = status_bytes("VmHWM")
    messages = list(dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught))
    return result, {
        "seconds": seconds,
        "rss_before": before,
        "peak_rss": peak if reset else None,
        "peak_increment": peak - before if reset and peak is not None else None,
        "warnings": messages[:MAX_WARNINGS],
    }


def varcorr_records(table: pd.DataFrame) -> list[dict]:
    """lme4's as.data.frame(VarCorr(m)) rows, missing names as None."""
    def clean(value):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None
        return value.item() if isinstance(value, np.generic) else value
    return [{k: clean(v) for k, v in row.items()} for row in table.to_dict("records")]


# -- glmm_sparse ------------------------------------------------------------------------
def watch_factor_nnz() -> list[int]:
    """nnz(L) of every objective the fit builds. The factor is internal to the fit; this
    wraps the objective's constructor to read it, without changing what it does."""
    seen: list[int] = []
    try:
        from glmm_sparse import objective
        init = objective.LmmObjective.__init__
    except (ImportError, AttributeError):
        return seen

    def init_and_record(self, *args, **kwargs):
        init(self, *args, **kwargs)
        try:
            seen.append(int(self.factor.factor_nnz()))
        except AttributeError:
            pass
    objective.LmmObjective.__init__ = init_and_record
    return seen


def sparse_route_factor_nnz(model) -> int | None:
    """nnz(L) of M from CHOLMOD's symbolic analysis (natural order, simplicial: the
    smaller count), for an LMM fitted through the count classes, which hold B = Z1'Z2 and
    the class sums instead of a factor L: the factor a fit by the sparse Cholesky needs,
    what the memory bound's "plus the factor" allows for. Made after the measured fit."""
    try:
        from glmm_sparse.objective import best_ordering
        from glmm_sparse.pattern import build_pattern
        _, probe = best_ordering(build_pattern(model.model.crossproducts()))
    except (ImportError, AttributeError):
        return None
    return int(probe.factor_nnz())


def run_glmm_sparse(case: Case, frame: pd.DataFrame) -> dict:
    import glmm_sparse as gs
    from glmm_sparse.parallel import n_threads

    nnz = watch_factor_nnz()
    if case.family == "gaussian":
        m, record = measure(lambda: gs.lmer(case.formula, frame))
    else:
        m, record = measure(lambda: gs.glmer(case.formula, frame, family=case.family))
    record.update({
        "loglik": float(m.loglik),
        "fixef": {k: float(v) for k, v in m.fixef.items()},
        "varcorr": varcorr_records(m.varcorr),
        "sigma": float(m.sigma) if getattr(m, "sigma", None) is not None else None,
        "deviance": float(m.deviance) if hasattr(m, "deviance") else None,
        "n_evals": int(m.optimizer.n_evals),
        "n_total_evals": int(m.optimizer.n_total_evals),
        "converged": bool(getattr(m, "converged", True)),
        "threads": n_threads(),
        "factor_nnz": max(nnz) if nnz else None,
    })
    if not nnz and case.family == "gaussian":
        record["sparse_factor_nnz"] = sparse_route_factor_nnz(m)
    return record


# -- statsmodels MixedLM ----------------------------------------------------------------
def statsmodels_varcorr(fit, group: str) -> list[dict]:
    """MixedLM's cov_re and scale as lme4's VarCorr rows ("Group" is the intercept)."""
    cov = fit.cov_re
    names = ["(Intercept)" if n in ("Group", "Group Var") else str(n) for n in cov.index]
    values = cov.to_numpy()
    sd = np.sqrt(np.diag(values))
    rows = [{"grp": group, "var1": n, "var2": None, "vcov": float(values[i, i]),
             "sdcor": float(sd[i])} for i, n in enumerate(names)]
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            rows.append({"grp": group, "var1": names[i], "var2": names[j],
                         "vcov": float(values[i, j]),
                         "sdcor": float(values[i, j] / (sd[i] * sd[j]))})
    rows.append({"grp": "Residual", "var1": None, "var2": None, "vcov": float(fit.scale),
                 "sdcor": float(np.sqrt(fit.scale))})
    return rows


def run_statsmodels(case: Case, frame: pd.DataFrame) -> dict:
    import statsmodels.formula.api as smf

    group = case.factor_columns[0]
    extra = {"re_formula": case.sm_re_formula} if case.sm_re_formula else {}

    def fit():
        model = smf.mixedlm(case.sm_formula, frame, groups=frame[group], **extra)
        return model.fit(reml=True)
    result, record = measure(fit)
    record.update({
        "model": f"smf.mixedlm({case.sm_formula!r}, groups={group!r}"
                 + (f", re_formula={case.sm_re_formula!r}" if extra else "") + ").fit(reml=True)",
        "loglik": float(result.llf),
        "fixef": {k: float(v) for k, v in result.fe_params.items()},
        "varcorr": statsmodels_varcorr(result, group),
        "sigma": float(np.sqrt(result.scale)),
        "converged": bool(result.converged),
        "method": str(result.method),
    })
    return record


# -- OLS of the fixed effects ------------------------------------------------------------
def run_ols(case: Case, frame: pd.DataFrame) -> dict:
    from formulaic import model_matrix

    def fit():
        mm = model_matrix(case.ols_formula, frame)
        coef, *_ = np.linalg.lstsq(np.asarray(mm.rhs), np.asarray(mm.lhs).ravel(), rcond=None)
        return dict(zip(mm.rhs.columns, coef))
    coef, record = measure(fit)
    record.update({"model": f"formulaic.model_matrix({case.ols_formula!r}) + numpy.linalg.lstsq",
                   "fixef": {k: float(v) for k, v in coef.items()}})
    return record


RUNNERS = {"glmm_sparse": run_glmm_sparse, "statsmodels": run_statsmodels, "ols": run_ols}


def main(argv: list[str]) -> int:
    peer, name, path = argv
    case = CASES[name]
    frame = pd.read_parquet(path)
    input_bytes = int(frame.memory_usage(index=False, deep=True).sum())
    try:
        record = {"status": "ok", **RUNNERS[peer](case, frame)}
    except Exception as exc:  # noqa: BLE001 -- reported in the table, never hidden
        traceback.print_exc()
        record = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
    record["input_bytes"] = input_bytes
    print(json.dumps(record))
    return 0 if record["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
