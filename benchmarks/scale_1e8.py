"""10^8 rows from Parquet: peak memory and time per pass of streamed LMM fits.

    .venv/bin/python benchmarks/scale_1e8.py [--rows 100000000] [--data-dir /tmp/glmm_scale]
        [--cases slope crossed] [--seed 1] [--encoding int32|dictionary]
        [--json benchmarks/scale_results.json] [--read-repeats 3] [--memory-cap 12]
        [--fit-time-limit S] [--tracemalloc]

The scale targets of issue 7 (docs/benchmarks.md, "10^8 rows from Parquet"): on a 2-core,
24 GiB machine, fit from Parquet with ``lmer(..., streaming=True)``

- ``slope``:   y ~ x1 + (1 + x1 | g1),           g1 with 10^6 levels;
- ``crossed``: y ~ x1 + (1 | g1) + (1 | g2),     g1 x g2 crossed, 10^6 x 10^3 levels;

each with peak memory under 4 GiB and a time per pass over the rows close to pyarrow's own
time to read the same columns (here: within CLOSE_RATIO of it).

What it does, per case:

1. writes the seeded synthetic rows (``glmm_sparse.synthetic.chunks``: one row group per
   chunk, one chunk in memory) to ``<data-dir>/<case>_<rows>_s<seed>_<encoding>.parquet``,
   unless a file of that name with that many rows is there already. ``int32`` writes the
   grouping factors as their codes; ``dictionary`` uses ``synthetic.write_parquet``
   (dictionary-encoded labels; very slow to stream at 10^6 levels, see the docs);
2. in fresh child processes, reads the used columns with
   ``pyarrow.parquet.ParquetFile.iter_batches`` (the batch size and threading the streamed
   fit uses, and nothing else), with pyarrow's default pre-buffering and without it
   (``--read-repeats`` times, the fastest kept: one read of a file took 0.8 s and 1.9 s
   in two runs here): pyarrow's read time and peak resident memory;
3. in a fresh child process, the streamed fit. The child times each stage from the
   ``glmm_sparse`` logger's records (levels pass, cross-products pass, fit from the sums)
   and reads its resident set (VmRSS) and peak (VmHWM, /proc/self/status) at each; it
   records the sizes the memory guard is shown (nnz of M's pattern, nnz of the factor L),
   the time of every evaluation of the criterion and, with ``--tracemalloc``, the Python
   allocations held and their peak at each stage (slow: for diagnosis, not timing). It
   runs under an address-space cap (``--memory-cap`` GiB), so that on a shared machine a
   fit that outgrows it stops with a MemoryError rather than waking the OOM killer; it
   streams its records to a progress file and the parent polls its peak, so a child
   stopped at ``--fit-time-limit`` (or by hand) still reports how far it got.

It prints a table and writes every measurement, the machine's load average before each
child and the versions to ``--json`` (cases of an earlier run at the same rows, seed and
encoding that this run does not repeat are kept). Nothing here is a test: the numbers are
the machine's on the day, which is shared with other jobs (see the recorded load).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
GIB = 1 << 30
MEMORY_TARGET = 4 * GIB
CLOSE_RATIO = 1.5  # "close to pyarrow's read time": a pass within 1.5x of it

CASES = {
    "slope": {"levels": (1_000_000,), "slope": True, "n_fixed": 1},
    "crossed": {"levels": (1_000_000, 1_000), "slope": False, "n_fixed": 1},
}


def design_of(case: str):
    from glmm_sparse.synthetic import Design

    return Design(**CASES[case])


def used_columns(case: str) -> list[str]:
    """The columns the case's formula reads (y, x1 and the grouping factors)."""
    design = design_of(case)
    return ["y", "x1", *(f"g{i + 1}" for i in range(len(design.levels)))]


# -- /proc -------------------------------------------------------------------------------------
def status_kib(key: str) -> int:
    """VmRSS, VmHWM, ... of this process in KiB (0 where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name == key:
                return int(value.split()[0])
    except OSError:
        pass
    return 0


def memory_now() -> dict:
    return {"rss_mib": status_kib("VmRSS") / 1024, "peak_mib": status_kib("VmHWM") / 1024}


# -- the data ------------------------------------------------------------------------------------
ENCODINGS = ("int32", "dictionary")


def data_path(data_dir: Path, case: str, rows: int, seed: int, encoding: str) -> Path:
    return data_dir / f"{case}_{rows}_s{seed}_{encoding}.parquet"


def parquet_rows(path: Path) -> int | None:
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path).metadata.num_rows
    except (OSError, ValueError):  # a partial or foreign file (ArrowInvalid): rewritten
        return None


def write_int32(path: Path, case: str, rows: int, seed: int) -> None:
    """The rows of ``synthetic.chunks`` (the same seeded rows as ``write_parquet``), grouping
    factors as their int32 codes instead of dictionary-encoded labels: one row group per
    chunk, one chunk in memory."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from glmm_sparse.synthetic import chunks

    writer = None
    try:
        for _, arrays in chunks(design_of(case), rows, seed=seed):
            table = pa.table({name: pa.array(values) for name, values in arrays.items()})
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema, compression="snappy")
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()


def ensure_data(case: str, rows: int, seed: int, data_dir: Path, encoding: str) -> dict:
    """Write the case's rows once; a file with the right row count is kept."""
    from glmm_sparse.synthetic import write_parquet

    path = data_path(data_dir, case, rows, seed, encoding)
    if path.exists() and parquet_rows(path) == rows:
        return {"path": str(path), "written": False, "bytes": path.stat().st_size}
    data_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".parquet.partial")
    t0 = time.perf_counter()
    if encoding == "int32":
        write_int32(tmp, case, rows, seed)
    else:
        write_parquet(tmp, design_of(case), rows, seed=seed)
    seconds = time.perf_counter() - t0
    tmp.replace(path)
    return {"path": str(path), "written": True, "write_seconds": seconds,
            "bytes": path.stat().st_size}


# -- child: pyarrow's own read ---------------------------------------------------------------------
def child_read(path: str, columns: list[str], pre_buffer: bool) -> dict:
    """Read the used columns as the streamed fit reads them, and do nothing with them.

    ``pre_buffer=True`` is pyarrow's default, which the streamed fit uses; with it,
    pyarrow 26 keeps the column chunks it has read until the file is closed, so the
    resident set grows to about the compressed size of the columns read. ``False`` reads
    as fast and stays flat."""
    import pyarrow.parquet as pq

    from glmm_sparse.batches import BATCH_ROWS

    t0 = time.perf_counter()
    rows = 0
    pf = pq.ParquetFile(path, pre_buffer=pre_buffer)
    for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=columns, use_threads=False):
        rows += batch.num_rows
    return {"seconds": time.perf_counter() - t0, "rows": rows, "columns": columns,
            "batch_rows": BATCH_ROWS, "pre_buffer": pre_buffer, **memory_now()}


# -- child: the streamed fit ------------------------------------------------------------------------
class StageLog:
    """Every glmm_sparse log record with its time and this process's memory at that moment."""

    def __init__(self, trace: bool, progress: Path | None = None):
        import logging

        self.t0 = time.perf_counter()
        self.records: list[dict] = []
        self.trace = trace
        self.progress = progress
        outer = self

        class Handler(logging.Handler):
            def emit(self, record):
                outer.add(record.getMessage())

        self.handler = Handler(level=logging.INFO)

    def add(self, message: str) -> None:
        entry = {"t": time.perf_counter() - self.t0, "message": message[:300], **memory_now()}
        if self.trace:
            import tracemalloc

            current, peak = tracemalloc.get_traced_memory()
            entry["traced_mib"] = current / 2**20
            entry["traced_peak_mib_since_last"] = peak / 2**20
            entry["top_allocations"] = top_allocations()
            tracemalloc.reset_peak()
        self.records.append(entry)
        self.write({"record": entry})

    def write(self, item: dict) -> None:
        """One JSON line to the progress file: what survives if the child is stopped."""
        if self.progress is not None:
            with open(self.progress, "a") as fh:
                fh.write(json.dumps(item) + "\n")


def top_allocations(n: int = 8) -> list[str]:
    import tracemalloc

    if not tracemalloc.is_tracing():
        return []
    snapshot = tracemalloc.take_snapshot()
    return [f"{stat.size / 2**20:.1f} MiB in {stat.count} blocks: {stat.traceback[0]}"
            for stat in snapshot.statistics("lineno")[:n]]


def instrument(sizes: dict, stages: StageLog) -> None:
    """Record what the memory guard is shown (nnz of M, nnz of L) before it checks, and the
    time and memory of every evaluation of the criterion (nothing else changes)."""
    from glmm_sparse import memory, objective, pattern

    check_factor, check_pattern = objective.check_factor_fits, pattern.check_pattern_fits

    def factor_fits(factor, **kw):
        nnz, q = factor.factor_nnz(), factor.n
        entry = {"q": q, "nnz_L": nnz, "supernodal": bool(factor.is_supernodal),
                 "L_mib": memory._factor_arrays(nnz, q, factor.is_supernodal) / 2**20,
                 "rss_mib_at_check": status_kib("VmRSS") / 1024}
        sizes.setdefault("factors", []).append(entry)
        stages.write({"factor": entry})
        return check_factor(factor, **kw)

    def pattern_fits(nnz_M, q, **kw):
        sizes["pattern"] = {"nnz_M": int(nnz_M), "q": int(q),
                            "block_entries": kw.get("block_entries"),
                            "predicted_mib": memory.pattern_bytes(
                                nnz_M, q, block_entries=kw.get("block_entries")) / 2**20,
                            "rss_mib_at_check": status_kib("VmRSS") / 1024}
        stages.write({"pattern": sizes["pattern"]})
        return check_pattern(nnz_M, q, **kw)

    objective.check_factor_fits = factor_fits
    pattern.check_pattern_fits = pattern_fits
    call = objective.LmmObjective.__call__
    count = [0]

    def timed_call(self, *args, **kw):
        t0 = time.perf_counter()
        out = call(self, *args, **kw)
        count[0] += 1
        stages.write({"evaluation": count[0], "seconds": time.perf_counter() - t0,
                      "t": time.perf_counter() - stages.t0, **memory_now()})
        return out

    objective.LmmObjective.__call__ = timed_call


def stage_times(records: list[dict]) -> dict:
    """Seconds and peak memory of each stage, from the log records that end them.

    ``seconds`` runs from the previous stage's record to this one's (all the stage's
    work); ``logged_seconds`` is the time the library reports for the loop over the
    batches alone (without, e.g., sorting the levels found, which happens after it)."""
    marks = {"levels pass:": "levels_pass", "cross-products pass:": "crossprod_pass",
             "fit:": "fit_from_sums"}
    out, last_t = {}, 0.0
    for rec in records:
        for prefix, name in marks.items():
            if rec["message"].startswith(prefix):
                own = re.search(r" in ([0-9.]+) s", rec["message"])
                out[name] = {"seconds": rec["t"] - last_t,
                             "logged_seconds": float(own.group(1)) if own else None,
                             "peak_mib_so_far": rec["peak_mib"], "rss_mib_after": rec["rss_mib"]}
                last_t = rec["t"]
    return out


def child_fit(path: str, case: str, trace: bool, progress: Path | None) -> dict:
    import logging
    import warnings

    if trace:
        import tracemalloc

        tracemalloc.start()
    import numpy as np

    import glmm_sparse as gs

    sizes: dict = {}
    stages = StageLog(trace, progress)
    instrument(sizes, stages)
    logger = logging.getLogger("glmm_sparse")
    logger.setLevel(logging.INFO)
    logger.addHandler(stages.handler)
    start_mem = memory_now()
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            m = gs.lmer(design_of(case).formula(), path, streaming=True, progress=False)
        except (MemoryError, gs.GlmmSparseError) as err:  # where and why it stopped
            return {"failed": True, "error": f"{type(err).__name__}: {str(err)[:1500]}",
                    "seconds": time.perf_counter() - t0, "start": start_mem,
                    "after_fit": memory_now(), "stages": stage_times(stages.records),
                    "log": stages.records, "guard": sizes,
                    "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    seconds = time.perf_counter() - t0
    after_fit = memory_now()
    opt = m.optimizer
    out = {"seconds": seconds, "start": start_mem, "after_fit": after_fit,
           "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "stages": stage_times(stages.records), "log": stages.records, "guard": sizes,
           "nobs": int(m.nobs), "fixef": {k: float(v) for k, v in m.fixef.items()},
           "theta": [float(t) for t in np.atleast_1d(m.theta)], "sigma": float(m.sigma),
           "loglik": float(m.loglik), "converged": bool(m.converged),
           "evaluations": int(getattr(opt, "n_total_evals", 0) or 0),
           "warnings": [str(w.message)[:300] for w in caught]}
    if progress is not None and progress.exists():
        out["evaluation_log"] = [item for item in map(json.loads, progress.read_text().splitlines())
                                 if "evaluation" in item]
    return out


# -- parent ------------------------------------------------------------------------------------------
def limit_memory(gib: float) -> None:
    """Cap this (child) process's address space: on a shared machine a fit that outgrows
    the cap stops with a MemoryError instead of calling the kernel's OOM killer on others."""
    cap = int(gib * GIB)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


def run_child(args: list[str], *, time_limit: float | None = None,
              progress: Path | None = None) -> dict:
    """Run this file in a fresh process; its last stdout line is its JSON result. A child
    stopped at ``time_limit`` seconds (or killed) leaves what it wrote to ``progress``."""
    load = os.getloadavg()
    t0 = time.perf_counter()
    watch = PeakWatch()
    with subprocess.Popen([sys.executable, str(Path(__file__).resolve()), *args],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        watch.start(proc.pid)
        try:
            out, err = proc.communicate(timeout=time_limit)
        except subprocess.TimeoutExpired:
            proc.kill()  # our own child, by its handle
            proc.communicate()
            watch.stop()
            return stopped_child(progress, f"stopped at the time limit of {time_limit:.0f} s",
                                 time.perf_counter() - t0, load, watch.peak_mib)
    watch.stop()
    wall = time.perf_counter() - t0
    lines = out.strip().splitlines()
    if proc.returncode != 0 or not lines:
        if progress is not None and progress.exists():
            return stopped_child(progress, f"exit code {proc.returncode}: {err[-1500:]}",
                                 wall, load, watch.peak_mib)
        return {"failed": True, "error": f"exit code {proc.returncode}",
                "stderr": err[-4000:], "wall_seconds": wall, "load_before": load}
    result = json.loads(lines[-1])
    result.update(wall_seconds=wall, load_before=load, load_after=os.getloadavg())
    return result


class PeakWatch:
    """The child's peak resident set (VmHWM) as the parent last read it, once a second:
    what is known of a child that is stopped before it can report."""

    def __init__(self):
        import threading

        self.peak_mib = 0.0
        self._done = threading.Event()
        self._thread = None

    def start(self, pid: int) -> None:
        import threading

        def poll():
            status = Path(f"/proc/{pid}/status")
            while not self._done.wait(1.0):
                try:
                    for line in status.read_text().splitlines():
                        if line.startswith("VmHWM:"):
                            self.peak_mib = max(self.peak_mib, int(line.split()[1]) / 1024)
                except (OSError, ValueError):
                    return

        self._thread = threading.Thread(target=poll, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._done.set()


def stopped_child(progress: Path | None, why: str, wall: float, load,
                  peak_seen_mib: float = 0.0) -> dict:
    """The measurements a stopped fit child left in its progress file, and its peak as
    the parent saw it."""
    records, guard, evals = [], {}, []
    if progress is not None and progress.exists():
        for line in progress.read_text().splitlines():
            item = json.loads(line)
            if "record" in item:
                records.append(item["record"])
            elif "pattern" in item:
                guard["pattern"] = item["pattern"]
            elif "factor" in item:
                guard.setdefault("factors", []).append(item["factor"])
            elif "evaluation" in item:
                evals.append(item)
    last = evals[-1] if evals else (records[-1] if records else {})
    peak = max([r.get("peak_mib", 0.0) for r in records] + [e["peak_mib"] for e in evals]
               + [peak_seen_mib])
    return {"failed": True, "error": why, "seconds": wall, "wall_seconds": wall,
            "load_before": load, "load_after": os.getloadavg(),
            "after_fit": {"rss_mib": last.get("rss_mib"), "peak_mib": peak},
            "peak_mib_seen_by_parent": peak_seen_mib,
            "stages": stage_times(records), "log": records, "guard": guard,
            "evaluation_log": evals}


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def fastest_read(reads: list[dict]) -> dict:
    """The fastest of repeated reads, with every read's time (``all_seconds``)."""
    ok = [r for r in reads if not r.get("failed")]
    if not ok:
        return reads[0]
    best = dict(min(ok, key=lambda r: r["seconds"]))
    best["all_seconds"] = [r["seconds"] for r in ok]
    return best


def verdict(fit: dict, read: dict, read_flat: dict | None = None) -> dict:
    """The two targets: peak memory under 4 GiB; each pass within CLOSE_RATIO of the read
    (the faster of pyarrow's reads with and without pre-buffering)."""
    reads = [r["seconds"] for r in (read, read_flat) if r and not r.get("failed")]
    read = {"seconds": min(reads)} if reads else read
    if fit.get("failed"):
        peak = fit.get("after_fit", {}).get("peak_mib", float("nan"))
        return {"peak_mib": peak, "memory_met": False, "time_met": False,
                "memory": f"NOT met: the fit stopped ({fit['error'][:120]}) at peak "
                          f"{peak / 1024:.2f} GiB",
                "time": "NOT met: the fit stopped"}
    peak = fit["after_fit"]["peak_mib"]
    mem_ok = peak * 2**20 < MEMORY_TARGET
    passes = {k: v["seconds"] for k, v in fit["stages"].items() if k.endswith("_pass")}
    ratios = {k: s / read["seconds"] for k, s in passes.items()}
    time_ok = bool(ratios) and all(r <= CLOSE_RATIO for r in ratios.values())
    worst = max(ratios.values()) if ratios else float("nan")
    return {"peak_mib": peak, "memory_met": mem_ok, "pass_over_read": ratios,
            "time_met": time_ok,
            "memory": f"{'met' if mem_ok else 'NOT met'}: peak {peak / 1024:.2f} GiB "
                      f"({'<' if mem_ok else '>='} 4 GiB)",
            "time": f"{'met' if time_ok else 'NOT met'}: slowest pass {worst:.1f}x "
                    f"pyarrow's read ({'<=' if time_ok else '>'} {CLOSE_RATIO}x)"}


def environment() -> dict:
    import numpy
    import pandas
    import pyarrow

    import glmm_sparse

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, text=True,
                            capture_output=True, check=False).stdout.strip()
    changed = subprocess.run(["git", "status", "--short", "--", "glmm_sparse"], cwd=HERE,
                             text=True, capture_output=True, check=False).stdout.split("\n")
    mem_total = 0
    try:
        mem_total = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return {"host": platform.node(), "cpus": os.cpu_count(), "mem_total_mib": mem_total,
            "python": platform.python_version(), "numpy": numpy.__version__,
            "pandas": pandas.__version__, "pyarrow": pyarrow.__version__,
            "glmm_sparse": glmm_sparse.__version__, "commit": commit,
            "uncommitted_library_files": [c.strip() for c in changed if c.strip()],
            "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def row(case: str, rec: dict) -> str:
    fit, read, v = rec["fit"], rec["read"], rec["verdict"]
    if fit.get("failed") and "stages" not in fit:
        return f"{case:8s} FAILED ({fit['error']}): {fit.get('stderr', '')[-300:]}"
    st = fit["stages"]
    get = lambda k: st.get(k, {}).get("seconds", float("nan"))
    rows = f"{fit['nobs']:>12,d}" if "nobs" in fit else "     STOPPED"
    read_s = min(r["seconds"] for r in (read, rec.get("read_no_prebuffer") or read)
                 if "seconds" in r)
    return (f"{case:8s} {rows} read {read_s:7.1f} s | levels pass "
            f"{get('levels_pass'):7.1f} s | cross-products pass {get('crossprod_pass'):7.1f} s "
            f"| fit from sums {get('fit_from_sums'):7.1f} s | peak {v['peak_mib'] / 1024:5.2f} GiB "
            f"(read {read['peak_mib'] / 1024:4.2f}) | load {fit['load_before'][0]:.1f} | "
            f"{v['memory']}; {v['time']}")


def kept_cases(path: Path, results: dict, rerun: list[str]) -> dict:
    """The cases of an earlier run at the same rows, seed and encoding that this run does
    not repeat (each case records its own date, command and load)."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if any(old.get(k) != results[k] for k in ("rows", "seed", "encoding")):
        return {}
    return {case: rec for case, rec in old.get("cases", {}).items() if case not in rerun}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000_000)
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/glmm_scale"))
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=list(CASES))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--encoding", choices=ENCODINGS, default="int32",
                        help="grouping columns as int32 codes (default) or as dictionary-"
                             "encoded labels, as synthetic.write_parquet writes them")
    parser.add_argument("--json", type=Path, default=HERE / "scale_results.json")
    parser.add_argument("--tracemalloc", action="store_true",
                        help="Python allocation snapshots at each stage (slow; diagnosis only)")
    parser.add_argument("--read-repeats", type=_at_least_one, default=3,
                        help="pyarrow's read without pre-buffering, each in a fresh process, "
                             "this many times; the fastest is the reference (3): one read "
                             "took 0.8 s and 1.9 s of the same file in two runs here")
    parser.add_argument("--memory-cap", type=float, default=12.0,
                        help="address-space cap of each child in GiB (12): a fit that needs "
                             "more stops with a MemoryError (the machine is shared)")
    parser.add_argument("--fit-time-limit", type=float, default=None,
                        help="stop a fit child after this many seconds and report how far "
                             "it got (stages, guard sizes, evaluations so far)")
    parser.add_argument("--progress", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child", choices=("read", "read-flat", "fit"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        limit_memory(args.memory_cap)
    if args.child in ("read", "read-flat"):
        print(json.dumps(child_read(args.path, used_columns(args.case),
                                    pre_buffer=args.child == "read")))
        return 0
    if args.child == "fit":
        print(json.dumps(child_fit(args.path, args.case, args.tracemalloc, args.progress)))
        return 0

    command = " ".join([".venv/bin/python", "benchmarks/scale_1e8.py",
                        *(argv if argv is not None else sys.argv[1:])])
    results = {"environment": environment(), "rows": args.rows, "seed": args.seed,
               "encoding": args.encoding,
               "memory_target_gib": MEMORY_TARGET / GIB, "close_ratio": CLOSE_RATIO,
               "memory_cap_gib": args.memory_cap, "fit_time_limit": args.fit_time_limit,
               "command": command, "cases": {}}
    results["cases"] = kept_cases(args.json, results, args.cases)
    for case in args.cases:
        data = ensure_data(case, args.rows, args.seed, args.data_dir, args.encoding)
        print(f"{case}: data {data['path']} ({data['bytes'] / 2**30:.2f} GiB"
              + (f", written in {data['write_seconds']:.1f} s)" if data["written"] else ", kept)"),
              flush=True)
        base = ["--case", case, "--path", data["path"], "--memory-cap", str(args.memory_cap)]
        read = run_child(["--child", "read", *base])
        read_flat = fastest_read([run_child(["--child", "read-flat", *base])
                                  for _ in range(args.read_repeats)])
        progress = args.json.with_name(f"{args.json.stem}.{case}.progress.jsonl")
        progress.unlink(missing_ok=True)
        fit = run_child(["--child", "fit", *base, "--progress", str(progress),
                         *(["--tracemalloc"] if args.tracemalloc else [])],
                        time_limit=args.fit_time_limit, progress=progress)
        progress.unlink(missing_ok=True)
        rec = {"formula": design_of(case).formula(), "levels": CASES[case]["levels"],
               "data": data, "read": read, "read_no_prebuffer": read_flat, "fit": fit,
               "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "command": command,
               "verdict": verdict(fit, read, read_flat) if not read.get("failed") else {}}
        results["cases"][case] = rec
        print(row(case, rec), flush=True)
        args.json.write_text(json.dumps(results, indent=1))  # partial results survive a crash
    print(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
