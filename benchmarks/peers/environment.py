"""The machine and software a run measured on, stored with every record it writes."""
from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SYSTEM_BLAS = Path("/etc/alternatives/libblas.so.3-x86_64-linux-gnu")
PYTHON_PACKAGES = ("numpy", "scipy", "pandas", "formulaic", "statsmodels", "pyarrow")
THREAD_VARIABLES = ("GLMM_SPARSE_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")


def git_revision() -> str | None:
    """The checkout's commit, with "-dirty" when the package or its C sources differ."""
    def git(*args):
        return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                              timeout=30, check=False)
    try:
        head = git("rev-parse", "--short", "HEAD")
        if head.returncode != 0:
            return None
        dirty = git("status", "--porcelain", "--", "glmm_sparse", "src", "setup.py").stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    return head.stdout.strip() + ("-dirty" if dirty.strip() else "")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for name in ("glmm_sparse", *PYTHON_PACKAGES):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _numpy_blas() -> str | None:
    try:
        import numpy as np
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{blas.get('name')} {blas.get('version')}"
    except Exception:  # noqa: BLE001 -- show_config's layout is no API; None is fine
        return None


def capture(r_info: dict | None) -> dict:
    """Machine, versions, BLAS libraries and thread settings of this run."""
    blas = str(SYSTEM_BLAS.resolve()) if SYSTEM_BLAS.exists() else None
    return {
        "host": platform.node(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "git": git_revision(),
        "versions": _versions(),
        "blas": {"system (CHOLMOD)": blas, "numpy": _numpy_blas(),
                 "R": (r_info or {}).get("BLAS")},
        "threads": {v: os.environ.get(v) for v in THREAD_VARIABLES if os.environ.get(v)},
        "r": r_info,
    }
