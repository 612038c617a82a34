"""The peers section of docs/benchmarks.md, rebuilt from every stored result.

Last stage of the harness (cases -> fits -> results/<case>.json -> report). The stored
records become one intermediate table of strings (``Row``), judged by each case's target;
the markdown renders from it and replaces only what lies between the markers, so partial
runs add up to a complete table and the rest of the document is left as it is.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from .cases import Case
from .targets import MET, NONE, NOT_MET, OURS, agreement, speed_ratio

BEGIN, END = "<!-- peers:begin -->", "<!-- peers:end -->"
COLUMNS = ("case", "model", "rows", "groups", "glmm_sparse", "lme4", "lme4 / ours",
           "statsmodels · OLS", "peak memory: ours / lme4", "logLik: ours - lme4",
           "estimates: ours vs lme4", "target", "met?", "run", "reproduce")
OTHERS = (("statsmodels", "sm"), ("ols", "OLS"))

INTRO = """\
## Side by side: lme4, statsmodels, OLS

Written by `make bench-peers` (`benchmarks/peers/harness.py`) from the records in
`benchmarks/peers/results/`; do not edit by hand. Every peer fits the same seeded rows
(`glmm_sparse.synthetic`, seed 1; CSV for R, Parquet for Python), each fit alone in a
fresh process after the data are loaded. Times are the fit only (glmm_sparse: the whole
`lmer`/`glmer` call; lme4: `lmer(REML = TRUE)`/`glmer` at its defaults; statsmodels:
`MixedLM(...).fit(reml=True)`), one run each. Peak memory is the process's peak resident
set during the fit (VmHWM reset just before it), "+" what the fit added to the resident set
before it. logLik: ours - lme4 (in brackets: ours - statsmodels), positive when our
optimum is higher; REML fits compare REML log-likelihoods, which all three define alike.
Estimates: largest absolute difference of the fixed effects (β) and largest relative
difference of the standard deviations, random effects and residual (sd). A target of
speed also needs our logLik no lower than lme4's by more than 0.01. A stopped peer shows
"> limit"; its ratio is then a lower bound.
"""


@dataclass(frozen=True)
class Row:
    """One case as strings, in COLUMNS order, and its lines for the details list."""

    cells: tuple[str, ...]
    details: tuple[str, ...]


# -- numbers as text -----------------------------------------------------------------------
def fmt_seconds(s: float) -> str:
    if s < 1:
        return f"{s:.2f} s"
    return f"{s:.1f} s" if s < 100 else f"{s:,.0f} s"


def fmt_limit(s: float) -> str:
    return f"> {s / 60:g} min" if s >= 60 and s % 60 == 0 else f"> {s:,.0f} s"


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "?"
    return f"{n / 2**20:,.0f} MiB" if abs(n) < 2**30 else f"{n / 2**30:,.2f} GiB"


def fmt_small(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "?"
    return f"{x:.1e}" if x != 0 else "0"


def fmt_signed(x: float | None) -> str:
    if x is None:
        return "?"
    return f"{x:+.1e}" if abs(x) < 0.1 else f"{x:+.2f}"


def fmt_groups(groups) -> str:
    return " × ".join(f"{g:,}" for g in groups)


def fmt_time(record: dict | None) -> str:
    """A peer's time, or why there is none."""
    if not record:
        return "—"
    status = record.get("status")
    if status == "ok":
        return fmt_seconds(record["seconds"])
    if status == "timeout":
        return fmt_limit(record["limit"])
    return status or "—"


def fmt_memory(record: dict | None) -> str:
    if not record or record.get("status") != "ok" or record.get("peak_rss") is None:
        return "—"
    return f"{fmt_bytes(record['peak_rss'])} (+{fmt_bytes(record['peak_increment'])})"


def fmt_stamp(iso: str | None) -> str:
    if not iso:
        return "?"
    return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M UTC")


# -- environments ------------------------------------------------------------------------------
class Environments:
    """Distinct environments of the records, labelled E1, E2, ... in order of use."""

    def __init__(self):
        self.labels: dict[str, str] = {}
        self.envs: list[dict] = []

    def label(self, env: dict | None) -> str:
        key = json.dumps(env or {}, sort_keys=True)
        if key not in self.labels:
            self.labels[key] = f"E{len(self.envs) + 1}"
            self.envs.append(env or {})
        return self.labels[key]

    def lines(self) -> list[str]:
        return [f"- **{self.labels[json.dumps(e, sort_keys=True)]}**: {describe_env(e)}"
                for e in self.envs]


def describe_env(env: dict) -> str:
    if not env:
        return "not recorded"
    v = env.get("versions", {})
    python = ", ".join(f"{k} {v[k]}" for k in ("python", "numpy", "scipy", "pandas",
                                                "formulaic", "statsmodels") if v.get(k))
    r = env.get("r") or {}
    r_text = f"{r['R']}, lme4 {r['lme4']}, Matrix {r['Matrix']}" if r else "R not available"
    blas = "; ".join(f"{k}: `{b}`" for k, b in env.get("blas", {}).items() if b)
    threads = ", ".join(f"{k}={x}" for k, x in env.get("threads", {}).items()) or "defaults"
    return (f"host `{env.get('host')}`, {env.get('cpu')}, {env.get('cores')} cores, "
            f"{env.get('memory_gib')} GiB, {env.get('os')}; glmm_sparse "
            f"{v.get('glmm_sparse')} at `{env.get('git')}`; {python}; {r_text}; "
            f"BLAS {blas}; thread settings: {threads}")


# -- one case ----------------------------------------------------------------------------------
def run_cell(peers: dict, envs: Environments) -> str:
    """When and where the records were measured; the peers of each run named when the
    records come from more than one run."""
    runs: dict[tuple, list[str]] = {}
    for name, record in peers.items():
        if record.get("status") == "skipped" or "run_id" not in record:
            continue
        env = record.get("environment") or {}
        where = f"{fmt_stamp(record['run_id'])}, {env.get('host', '?')} ({envs.label(env)})"
        runs.setdefault((record["run_id"], where), []).append(name)
    if len(runs) <= 1:
        return next((where for _, where in runs), "—")
    return "; ".join(f"{'+'.join(names)}: {where}" for (_, where), names in runs.items())


def agreement_cells(peers: dict) -> tuple[str, str]:
    """logLik and estimates of ours against lme4, then statsmodels (sm) in brackets."""
    loglik, estimates = [], []
    for peer, short in (("lme4", ""), ("statsmodels", "sm ")):
        a = agreement(peers.get(OURS), peers.get(peer))
        if a is None:
            continue
        loglik.append(f"{short}{fmt_signed(a.loglik_diff)}")
        estimates.append(f"{short}β {fmt_small(a.fixef_max_abs)}, sd {fmt_small(a.sd_max_rel)}")
    return _first_and_bracketed(loglik), _first_and_bracketed(estimates)


def _first_and_bracketed(items: list[str]) -> str:
    return items[0] + "".join(f" ({e})" for e in items[1:]) if items else "—"


def other_cell(peers: dict) -> str:
    shown = [f"{short} {fmt_time(peers.get(peer))}" for peer, short in OTHERS
             if peers.get(peer)]
    return ", ".join(shown) or "—"


def ratio_cell(peers: dict) -> str:
    ratio, bound = speed_ratio(peers, "lme4")
    if ratio is None:
        return "—"
    return f"> {ratio:.1f}x" if bound else f"{ratio:.1f}x"


def met_cell(case: Case, peers: dict) -> str:
    verdict = case.target.judge(peers)
    if verdict.status == NONE:
        return "—"
    status = f"**{verdict.status}**" if verdict.status in (MET, NOT_MET) else verdict.status
    return f"{status}: {verdict.detail}" if verdict.detail else status


def command(case: Case) -> str:
    return f"`make bench-peers PEERS={case.name}`"


def peer_detail(name: str, record: dict) -> str:
    status = record.get("status")
    if status == "skipped":
        return f"{name} skipped ({record.get('reason', 'not available')})"
    if status == "timeout":
        return f"{name} stopped at its limit of {record['limit']:,.0f} s"
    if status != "ok":
        return f"{name} failed: {' '.join(str(record.get('error', '?')).split())}"
    parts = [fmt_seconds(record["seconds"])]
    if record.get("model") or record.get("call"):
        parts.append(f"`{record.get('model') or record.get('call')}`")
    if record.get("n_evals") is not None:
        total = record.get("n_total_evals")
        parts.append(f"{record['n_evals']} evaluations"
                     + (f" ({total} with the convergence check)" if total else ""))
    if record.get("threads") is not None:
        parts.append(f"{record['threads']} threads")
    if record.get("factor_nnz"):
        parts.append(f"nnz(L) {record['factor_nnz']:,}")
    if record.get("sparse_factor_nnz"):
        parts.append(f"count classes (no L; the sparse route's symbolic nnz(L) "
                     f"{record['sparse_factor_nnz']:,})")
    if record.get("loglik") is not None:
        parts.append(f"logLik {record['loglik']:.6f}")
    if record.get("peak_rss") is not None:
        parts.append(f"peak {fmt_memory(record)}")
    if record.get("load") is not None:
        parts.append(f"load {record['load']:.1f}")
    if record.get("converged") is False:
        parts.append("NOT converged")
    if record.get("warnings"):
        parts.append("said: " + " | ".join(w.replace("\n", " ") for w in record["warnings"]))
    return f"{name} " + ", ".join(parts)


def case_details(case: Case, peers: dict) -> list[str]:
    ours = peers.get(OURS) or {}
    data = f"{case.n_rows:,} rows, seed {case.seed}"
    if ours.get("input_bytes"):
        data += f", input columns {fmt_bytes(ours['input_bytes'])}"
    lines = [peer_detail(name, record) for name, record in peers.items()]
    sm = agreement(peers.get(OURS), peers.get("statsmodels"))
    if sm is not None:
        corr = "" if sm.corr_max_abs is None else f", corr {fmt_small(sm.corr_max_abs)}"
        lines.append(f"vs statsmodels: logLik {fmt_signed(sm.loglik_diff)}, β "
                     f"{fmt_small(sm.fixef_max_abs)}, sd {fmt_small(sm.sd_max_rel)}{corr}")
    lme4 = agreement(peers.get(OURS), peers.get("lme4"))
    if lme4 is not None and (lme4.corr_max_abs is not None or lme4.unmatched):
        extra = f"corr {fmt_small(lme4.corr_max_abs)}"
        if lme4.unmatched:
            extra += f"; not matched: {', '.join(lme4.unmatched)}"
        lines.append(f"vs lme4: {extra}")
    return [f"- **{case.name}** ({data}): " + "; ".join(lines) + "."] if lines else []


def build_row(case: Case, stored: dict | None, envs: Environments) -> Row:
    peers = (stored or {}).get("peers", {})
    ours, lme4 = peers.get(OURS), peers.get("lme4")
    loglik, estimates = agreement_cells(peers)
    memory = f"{fmt_memory(ours)} / {fmt_memory(lme4)}" if lme4 else fmt_memory(ours)
    cells = (f"`{case.name}`", f"`{case.formula}`" + ("" if case.family == "gaussian" else
                                                       f", {case.family}"),
             f"{case.n_rows:,}", fmt_groups(case.groups),
             fmt_time(ours) if stored else "not run yet", fmt_time(lme4), ratio_cell(peers),
             other_cell(peers), memory, loglik, estimates, case.target.describe(),
             met_cell(case, peers), run_cell(peers, envs), command(case))
    return Row(cells, tuple(case_details(case, peers)))


# -- the section and the document ------------------------------------------------------------
def render(rows: list[Row], envs: Environments) -> str:
    lines = [INTRO, "| " + " | ".join(COLUMNS) + " |",
             "|" + "|".join("---" for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row.cells) + " |"
              for row in rows]
    details = [d for row in rows for d in row.details]
    if details:
        heading = ("Per case (each peer: fit time, call, evaluations, peak memory, the "
                   "machine's load average when the fit started, what the peer said):")
        lines += ["", heading, "", *details]
    if envs.envs:
        lines += ["", "Environments (machine, versions, BLAS):", "", *envs.lines()]
    return "\n".join(lines) + "\n"


def load_results(directory: Path) -> dict[str, dict]:
    """Every results/<case>.json, by case name."""
    out = {}
    for path in sorted(directory.glob("*.json")):
        stored = json.loads(path.read_text())
        out[stored["case"]] = stored
    return out


def current(case: Case, stored: dict | None) -> dict | None:
    """The stored results if they are of this case's data and model, else None."""
    return stored if stored and stored.get("spec") == case.spec() else None


def section(cases: dict[str, Case], results: dict[str, dict]) -> str:
    envs = Environments()
    rows = [build_row(case, current(case, results.get(name)), envs)
            for name, case in cases.items()]
    return render(rows, envs)


def splice(document: str, text: str) -> str:
    """The document with ``text`` between the markers, inserting the markers after the
    intro paragraph (the first paragraph under the title) when they are missing."""
    if BEGIN in document and END in document:
        head, rest = document.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        return f"{head}{BEGIN}\n{text}{END}{tail}"
    lines = document.splitlines(keepends=True)
    at = 0
    while at < len(lines) and (lines[at].startswith("# ") or not lines[at].strip()):
        at += 1
    while at < len(lines) and lines[at].strip():
        at += 1
    block = f"\n{BEGIN}\n{text}{END}\n"
    return "".join(lines[:at]) + block + "".join(lines[at:])
