"""`make bench-peers`: glmm_sparse side by side with lme4, statsmodels and OLS.

    python benchmarks/peers/harness.py [CASE ...] [--peers glmm_sparse,lme4,statsmodels,ols]
                                       [--limit lme4=600] [--keep-data DIR] [--no-install]
    python benchmarks/peers/harness.py --render-only   # rebuild the doc from stored results

No CASE runs them all (see cases.py). Each case's data are written once to a scratch
directory; every peer that can fit the case (and is in --peers) fits them in its own
process, stopped at its time limit. The records go to results/<case>.json (merged with the
peers not run this time) and the peers section of docs/benchmarks.md is rebuilt from all
stored results. A peer that is missing, fails or runs out of time is reported, never fatal.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from peers import environment, report, rsetup
from peers.cases import CASES, PEERS, Case, DataFiles, write_data

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
RESULTS = HERE / "results"
LIMITS = {"glmm_sparse": 3600.0, "lme4": 1800.0, "statsmodels": 600.0, "ols": 1800.0}
STDERR_TAIL = 600  # characters of a failed process's stderr kept in its record


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", metavar="CASE",
                        help=f"cases to run (default: all): {', '.join(CASES)}")
    parser.add_argument("--peers", default=",".join(PEERS),
                        help="comma-separated peers to run (default: all): " + ",".join(PEERS))
    parser.add_argument("--limit", action="append", default=[], metavar="PEER=SECONDS",
                        help="time limit of a peer's fit process (defaults: "
                             + ", ".join(f"{k} {v:g} s" for k, v in LIMITS.items()) + ")")
    parser.add_argument("--keep-data", metavar="DIR",
                        help="write the data here and keep them (default: a temporary dir)")
    parser.add_argument("--no-install", action="store_true",
                        help="never install R and lme4, skip the lme4 columns if missing")
    parser.add_argument("--render-only", action="store_true",
                        help="run nothing; rebuild the doc section from stored results")
    parser.add_argument("--results", type=Path, default=RESULTS, help=argparse.SUPPRESS)
    parser.add_argument("--doc", type=Path, default=DOC, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = [c for c in args.cases if c not in CASES]
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    if unknown or not set(peers) <= set(PEERS):
        parser.error(f"cases are {', '.join(CASES)}; peers are {', '.join(PEERS)}")
    args.peers = peers
    args.limits = dict(LIMITS)
    for item in args.limit:
        limit = parse_limit(item)
        if limit is None:
            parser.error(f"--limit takes PEER=SECONDS, PEER one of {', '.join(PEERS)}, "
                         f"SECONDS > 0; not {item!r}")
        args.limits[limit[0]] = limit[1]
    return args


def parse_limit(item: str) -> tuple[str, float] | None:
    """("lme4", 600.0) from "lme4=600"; None if it is not that."""
    peer, _, seconds = item.partition("=")
    try:
        value = float(seconds)
    except ValueError:
        return None
    return (peer, value) if peer in PEERS and value > 0 else None


# -- one fit in its own process ---------------------------------------------------------------
def fit_command(peer: str, case: Case, files: DataFiles) -> list[str]:
    if peer == "lme4":
        return ["Rscript", str(HERE / "lme4_fit.R"), str(files.csv), case.formula,
                case.family, ",".join(files.factors)]
    return [sys.executable, str(HERE / "run_one.py"), peer, case.name, str(files.parquet)]


def last_json(text: str) -> dict | None:
    for line in reversed(text.strip().splitlines()):
        if line.lstrip().startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                return None
    return None


def run_fit(cmd: list[str], limit: float) -> dict:
    """The record a fit process prints, or one saying it timed out or failed."""
    load = os.getloadavg()[0]  # a shared machine: how busy it was when the fit started
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own group: stopped with its children
    try:
        out, err = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return {"status": "timeout", "limit": limit, "load": load}
    except KeyboardInterrupt:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    record = last_json(out)
    if record is None:
        why = f"exit status {proc.returncode}" + (" (killed: out of memory?)"
                                                  if proc.returncode == -9 else "")
        record = {"status": "failed", "error": f"{why}; {err.strip()[-STDERR_TAIL:]}"}
    elif record.get("status") != "ok" and err.strip():
        record["stderr"] = err.strip()[-STDERR_TAIL:]
    record["process_seconds"] = time.perf_counter() - start
    record.update(limit=limit, load=load)
    return record


def summary(peer: str, record: dict) -> str:
    status = record["status"]
    if status == "ok":
        text = f"{report.fmt_seconds(record['seconds'])}, peak {report.fmt_memory(record)}"
        if record.get("loglik") is not None:
            text += f", logLik {record['loglik']:.6f}"
        return f"  {peer}: {text}"
    if status == "timeout":
        return f"  {peer}: stopped at the {record['limit']:g} s limit"
    return f"  {peer}: {status} {record.get('error') or record.get('reason') or ''}"


# -- one case ------------------------------------------------------------------------------------
def run_case(case: Case, peers: list[str], args, r_info, stamp: dict, scratch: Path) -> dict:
    records = {}
    use_r = "lme4" in peers and r_info is not None
    if "lme4" in peers and r_info is None:
        records["lme4"] = {"status": "skipped", "reason": "R with lme4 and jsonlite not found"}
        peers = [p for p in peers if p != "lme4"]
    print(f"{case.name}: writing {case.n_rows:,} rows" + (" (Parquet and CSV)" if use_r else ""),
          flush=True)
    try:
        files = write_data(case, scratch, csv=use_r)
    except Exception as exc:  # noqa: BLE001 -- no data: every peer fails, and is reported
        error = f"writing the data: {type(exc).__name__}: {exc}"
        return {**records, **{p: {"status": "failed", "error": error, **stamp} for p in peers}}
    try:
        for peer in peers:
            print(f"  {peer} ...", flush=True)
            record = {**run_fit(fit_command(peer, case, files), args.limits[peer]), **stamp}
            records[peer] = record
            print(summary(peer, record), flush=True)
    finally:
        if not args.keep_data:
            for path in (files.parquet, files.csv):
                if path is not None:
                    path.unlink(missing_ok=True)
    return records


def merge(case: Case, stored: dict | None, records: dict) -> dict:
    """This run's records over the stored ones of the same case spec; a skip never
    replaces an earlier real result."""
    kept = report.current(case, stored)
    peers = dict(kept["peers"]) if kept else {}
    for name, record in records.items():
        earlier = peers.get(name, {}).get("status", "skipped")
        if record["status"] == "skipped" and earlier != "skipped":
            continue
        peers[name] = record
    return {"case": case.name, "spec": case.spec(),
            "peers": {p: peers[p] for p in case.peers if p in peers}}


def save(case: Case, records: dict, results: Path) -> None:
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"{case.name}.json"
    stored = json.loads(path.read_text()) if path.exists() else None
    path.write_text(json.dumps(merge(case, stored, records), indent=1, sort_keys=False) + "\n")


def write_doc(doc: Path, results: Path) -> None:
    """Replace the peers section of the doc (read just before, to keep others' edits)."""
    text = report.section(CASES, report.load_results(results))
    doc.write_text(report.splice(doc.read_text(), text))


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.render_only:
        write_doc(args.doc, args.results)
        print(f"rebuilt the peers section of {args.doc}")
        return 0
    selected = [CASES[c] for c in (args.cases or CASES)]
    plan = [(case, [p for p in case.peers if p in args.peers]) for case in selected]
    needs_r = any("lme4" in peers for _, peers in plan)
    r_info = rsetup.ensure_r(install=not args.no_install) if needs_r else rsetup.r_info()
    run_id = datetime.now(timezone.utc).isoformat(timespec="seconds")
    stamp = {"run_id": run_id, "environment": environment.capture(r_info)}
    scratch = Path(args.keep_data) if args.keep_data else Path(tempfile.mkdtemp(
        prefix="glmm_sparse_peers_"))
    try:
        for case, peers in plan:
            if not peers:
                print(f"{case.name}: none of {', '.join(args.peers)} fits this case")
                continue
            records = run_case(case, peers, args, r_info if "lme4" in peers else None,
                               stamp, scratch)
            save(case, records, args.results)
            write_doc(args.doc, args.results)
            stored = json.loads((args.results / f"{case.name}.json").read_text())
            verdict = case.target.judge(stored["peers"])
            print(f"{case.name}: target {case.target.describe()}: {verdict.status}"
                  + (f" ({verdict.detail})" if verdict.detail else ""), flush=True)
    except KeyboardInterrupt:
        print("interrupted; the cases finished so far are saved", file=sys.stderr)
        return 130
    finally:
        if not args.keep_data:
            shutil.rmtree(scratch, ignore_errors=True)
    print(f"wrote {args.doc.relative_to(ROOT) if args.doc.is_relative_to(ROOT) else args.doc} "
          f"and {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
