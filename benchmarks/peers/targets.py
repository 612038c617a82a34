"""What each case must show, and how closely the peers' fits agree.

A record is one peer's fit as stored in results/<case>.json: ``status`` ("ok", "failed",
"timeout", "skipped"), ``seconds`` (the fit alone), ``peak_increment`` (bytes the fit added
to the process's resident set at its peak), ``input_bytes`` (the data's columns), ``loglik``,
``fixef`` ({name: value}) and ``varcorr`` (lme4's ``as.data.frame(VarCorr(m))`` rows).
A target judges the records of one case and returns a ``Verdict``; nothing is decided by
hand.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

OURS = "glmm_sparse"
LOGLIK_TOL = 1e-2  # an optimum lower than the peer's by more than this is not the same fit
FACTOR_ENTRY_BYTES = 12  # one entry of CHOLMOD's L: a double and an int32 row index

MET, NOT_MET, UNKNOWN, NONE = "met", "NOT met", "unknown", "none"


@dataclass(frozen=True)
class Verdict:
    status: str  # MET, NOT_MET, UNKNOWN (a record is missing) or NONE (no target)
    detail: str = ""


def _ok(record) -> bool:
    return bool(record) and record.get("status") == "ok"


def _ours_missing(ours) -> Verdict | None:
    """NOT met when our fit failed or ran out of time; unknown when it did not run."""
    if not ours or ours.get("status") == "skipped":
        return Verdict(UNKNOWN, "glmm_sparse not run")
    if ours["status"] == "timeout":
        return Verdict(NOT_MET, f"glmm_sparse stopped at the {ours['limit']:.0f} s limit")
    if ours["status"] != "ok":
        return Verdict(NOT_MET, "glmm_sparse failed")
    return None


def speed_ratio(records: dict, peer: str) -> tuple[float | None, bool]:
    """The peer's time over ours, and whether it is only a lower bound (peer timed out)."""
    ours, theirs = records.get(OURS), records.get(peer)
    if not _ok(ours) or not theirs or ours["seconds"] <= 0:
        return None, False
    if theirs.get("status") == "ok":
        return theirs["seconds"] / ours["seconds"], False
    if theirs.get("status") == "timeout":
        return theirs["limit"] / ours["seconds"], True
    return None, False


@dataclass(frozen=True)
class FasterThanPeer:
    """glmm_sparse at least ``factor`` times faster than ``peer``, at an optimum as good."""

    factor: float
    peer: str = "lme4"

    def describe(self) -> str:
        return f">= {self.factor:g}x faster than {self.peer}"

    def judge(self, records: dict) -> Verdict:
        ours, theirs = records.get(OURS), records.get(self.peer)
        missing = _ours_missing(ours)
        if missing:
            return missing
        ratio, bound = speed_ratio(records, self.peer)
        if ratio is None:
            state = theirs.get("status", "not run") if theirs else "not run"
            return Verdict(UNKNOWN, f"no {self.peer} time ({state})")
        if bound:
            shown = f"{self.peer} stopped at its limit: ratio > {ratio:.1f}x"
            return Verdict(MET, shown) if ratio >= self.factor else Verdict(UNKNOWN, shown)
        lower = theirs["loglik"] - ours["loglik"]
        if lower > LOGLIK_TOL:
            return Verdict(NOT_MET, f"{ratio:.1f}x, but our logLik is {lower:.3g} lower")
        sign = ">=" if ratio >= self.factor else "<"
        return Verdict(MET if ratio >= self.factor else NOT_MET,
                       f"{ratio:.1f}x {sign} {self.factor:g}x")


@dataclass(frozen=True)
class NearOls:
    """The whole lmer fit within ``time_ratio`` of OLS on the same fixed effects, adding
    less than ``memory_ratio`` times the input columns at its peak."""

    time_ratio: float
    memory_ratio: float

    def describe(self) -> str:
        return (f"lmer <= {self.time_ratio:g}x OLS time; fit adds < "
                f"{self.memory_ratio:g}x input")

    def judge(self, records: dict) -> Verdict:
        ours, ols = records.get(OURS), records.get("ols")
        missing = _ours_missing(ours)
        if missing:
            return missing
        if not _ok(ols):
            state = ols.get("status", "not run") if ols else "not run"
            return Verdict(UNKNOWN, f"no OLS time ({state})")
        time_ratio = ours["seconds"] / ols["seconds"]
        memory_ratio = ours["peak_increment"] / ours["input_bytes"]
        met = time_ratio <= self.time_ratio and memory_ratio < self.memory_ratio
        return Verdict(MET if met else NOT_MET,
                       f"lmer/OLS {time_ratio:.2f}x (<= {self.time_ratio:g}); fit adds "
                       f"{memory_ratio:.2f}x input (< {self.memory_ratio:g})")


@dataclass(frozen=True)
class MemoryBound:
    """The fit completes, adding less than ``memory_ratio`` x input plus the factor L."""

    memory_ratio: float

    def describe(self) -> str:
        return f"completes; fit adds < {self.memory_ratio:g}x input + factor"

    def judge(self, records: dict) -> Verdict:
        ours = records.get(OURS)
        missing = _ours_missing(ours)
        if missing:
            return missing
        nnz = ours.get("factor_nnz")
        factor = "factor"
        if not nnz and ours.get("sparse_factor_nnz"):
            # the count classes hold no L: the factor a sparse Cholesky fit needs
            nnz = ours["sparse_factor_nnz"]
            factor = f"the sparse route's factor, {_mib(FACTOR_ENTRY_BYTES * nnz)}"
        elif not nnz:
            factor = "factor size unknown, bound without it"
        factor_bytes = FACTOR_ENTRY_BYTES * nnz if nnz else 0
        bound = self.memory_ratio * ours["input_bytes"] + factor_bytes
        used = ours["peak_increment"]
        sign = "<" if used < bound else ">="
        return Verdict(MET if used < bound else NOT_MET,
                       f"adds {_mib(used)} {sign} {_mib(bound)} "
                       f"({self.memory_ratio:g}x input + {factor})")


@dataclass(frozen=True)
class NoTarget:
    """A case for agreement only (small enough for every peer)."""

    def describe(self) -> str:
        return "agreement only"

    def judge(self, records: dict) -> Verdict:
        return Verdict(NONE)


Target = FasterThanPeer | NearOls | MemoryBound | NoTarget


def _mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


# -- agreement -------------------------------------------------------------------------
@dataclass(frozen=True)
class Agreement:
    """Ours against a peer: logLik (ours - theirs; positive: our optimum is higher), the
    largest absolute difference of fixed effects, the largest relative difference of the
    standard deviations (random effects and residual) and of correlations (absolute)."""

    loglik_diff: float | None
    fixef_max_abs: float | None
    sd_max_rel: float | None
    corr_max_abs: float | None
    unmatched: tuple[str, ...] = ()


def fixef_name(name: str) -> str:
    """lme4's coefficient name for statsmodels'/formulaic's (``Intercept``, ``a[T.b]``)."""
    if name == "Intercept":
        return "(Intercept)"
    treatment = re.fullmatch(r"(.+)\[T\.(.+)\]", name)
    return treatment[1] + treatment[2] if treatment else name


def _key(row: dict) -> tuple:
    def clean(value):
        return None if value is None or (isinstance(value, float) and math.isnan(value)) \
            else str(value)
    return clean(row.get("grp")), clean(row.get("var1")), clean(row.get("var2"))


def _max(values) -> float | None:
    values = list(values)
    return max(values) if values else None


def agreement(ours: dict, theirs: dict) -> Agreement | None:
    """How ours agrees with another peer's fit; None unless both fits are there."""
    if not (_ok(ours) and _ok(theirs)):
        return None
    mine = {fixef_name(k): v for k, v in ours.get("fixef", {}).items()}
    other = {fixef_name(k): v for k, v in theirs.get("fixef", {}).items()}
    unmatched = sorted(set(mine) ^ set(other))
    beta = _max(abs(mine[k] - other[k]) for k in mine.keys() & other.keys())
    vc_mine = {_key(r): r["sdcor"] for r in ours.get("varcorr", [])}
    vc_other = {_key(r): r["sdcor"] for r in theirs.get("varcorr", [])}
    shared = vc_mine.keys() & vc_other.keys()
    unmatched += sorted("/".join(filter(None, k)) for k in vc_mine.keys() ^ vc_other.keys())
    sd = _max(abs(vc_mine[k] - vc_other[k]) / max(abs(vc_other[k]), 1e-12)
              for k in shared if k[2] is None)
    corr = _max(abs(vc_mine[k] - vc_other[k]) for k in shared if k[2] is not None)
    loglik = None
    if ours.get("loglik") is not None and theirs.get("loglik") is not None:
        loglik = ours["loglik"] - theirs["loglik"]
    return Agreement(loglik, beta, sd, corr, tuple(unmatched))
