"""Run the asv suite (benchmarks/suites) on this checkout, in this Python, and print a table.

    python benchmarks/run_asv.py [asv run options]      # what `make bench` runs
    python benchmarks/run_asv.py -b Crossed              # a subset (regex on names)
    python benchmarks/run_asv.py -a repeat=5 -a rounds=2  # more samples than the suite's

asv.conf.json's environment is "existing": asv neither builds nor installs anything, it
imports glmm_sparse as this interpreter finds it (the editable install, so the working
tree as it is). asv keeps results of an existing environment only under an explicit
commit hash, so the run is recorded under HEAD; uncommitted changes are reported, not
refused. The asv machine entry (~/.asv-machine.json) is created without questions when
missing. The results stay in .asv/results/ (git-ignored) for ``asv publish`` and
``asv compare``; the table printed at the end is read from the results file this run
wrote, and shows only the benchmarks this run measured.
"""
from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONFIG = HERE / "asv.conf.json"
RESULTS = ROOT / ".asv" / "results"
MACHINE_FILE = Path.home() / ".asv-machine.json"
METHODS = ("time_fit", "peakmem_setup", "peakmem_fit", "track_objective",
           "track_evaluations")


def asv(*args: str) -> int:
    """Run one asv command on our config; its exit status."""
    return subprocess.call([sys.executable, "-m", "asv", *args, "--config", str(CONFIG)],
                           cwd=ROOT)


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True,
                          text=True).stdout.strip()


def machine_name(args: list[str]) -> str:
    """The machine given with -m/--machine, else asv's default (the host name)."""
    for i, arg in enumerate(args):
        if arg in ("-m", "--machine") and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--machine="):
            return arg.split("=", 1)[1]
    return platform.uname().node


def ensure_machine(name: str) -> None:
    """``asv run`` asks about an unknown machine interactively; answer with the defaults
    first, but leave an entry someone already filled in alone."""
    known = json.loads(MACHINE_FILE.read_text()) if MACHINE_FILE.exists() else {}
    if name not in known:
        asv("machine", "--yes", "--machine", name)


def results_file(commit: str, since: float) -> Path | None:
    """The newest results file of ``commit`` written since ``since`` (any machine)."""
    files = [p for p in RESULTS.glob(f"*/{commit[:8]}-*.json") if p.stat().st_mtime >= since]
    return max(files, key=lambda p: p.stat().st_mtime, default=None)


def measured(path: Path, since: float) -> dict[tuple[str, str], dict[str, object]]:
    """{(structure, rows): {method: value}} for the benchmarks started since ``since``;
    None where a benchmark failed or timed out."""
    doc = json.loads(path.read_text())
    columns = doc["result_columns"]
    table: dict[tuple[str, str], dict[str, object]] = {}
    for name, row in doc["results"].items():
        entry = dict(zip(columns, row))
        if (entry.get("started_at") or 0) < since * 1000:
            continue
        structure, method = name.rsplit(".", 1)
        rows = entry["params"][0] if entry["params"] else [""]
        values = entry["result"]
        if not isinstance(values, list):  # null when every size failed
            values = [values] * len(rows)
        for size, value in zip(rows, values):
            table.setdefault((structure, size), {})[method] = value
    return table


def fmt(method: str, value) -> str:
    if value is None:
        return "failed"
    if method.startswith("time_"):
        return f"{value:.3g} s" if value >= 0.1 else f"{value * 1e3:.3g} ms"
    if method.startswith("peakmem_"):
        return f"{value / 1e6:,.0f} MB"  # asv's own M: 10^6 bytes
    if method == "track_evaluations":
        return f"{value:.0f}"
    return f"{value:,.2f}"


def _size(rows: str) -> tuple[int, str]:
    """Sort key and label of a rows parameter (asv stores parameters as their repr)."""
    return (int(rows), f"{int(rows):,}") if str(rows).isdigit() else (0, str(rows))


def print_table(table) -> None:
    """One line per structure and size, one column per benchmark method."""
    methods = [m for m in METHODS if any(m in v for v in table.values())]
    methods += sorted({m for v in table.values() for m in v} - set(methods))
    lines = [["benchmark", "rows", *methods]]
    for (structure, rows), values in sorted(table.items(),
                                            key=lambda kv: (kv[0][0], _size(kv[0][1]))):
        lines.append([structure, _size(rows)[1],
                      *(fmt(m, values[m]) if m in values else "" for m in methods)])
    widths = [max(len(x) for x in column) for column in zip(*lines)]
    for i, line in enumerate(lines):
        print("  ".join(x.ljust(w) if j == 0 else x.rjust(w)
                        for j, (x, w) in enumerate(zip(line, widths))))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def main(extra: list[str]) -> int:
    commit = git("rev-parse", "HEAD")
    if git("status", "--porcelain", "--untracked-files=no"):
        print(f"note: uncommitted changes; they are measured, recorded under HEAD {commit[:8]}")
    ensure_machine(machine_name(extra))
    since = time.time()
    status = asv("run", "--environment", f"existing:{sys.executable}",
                 "--set-commit-hash", commit, *extra)
    path = results_file(commit, since)
    if path is None:
        print("asv wrote no results (a --dry-run, or nothing matched -b?)")
        return status
    config = CONFIG.relative_to(ROOT)
    print(f"\nresults: {path.relative_to(ROOT)}\n"
          f"html:    python -m asv publish --config {config} && "
          f"python -m asv preview --config {config}\n")
    print_table(measured(path, since))
    print(f"\n{(time.time() - since) / 60:.1f} min")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
