"""R and lme4 for the lme4 peer: found, or installed from Debian's packages when allowed.

Installing needs root, apt-get and no CI (the variable CI unset); otherwise the command is
printed and the lme4 columns are skipped. Nothing here ever fails the harness.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess

R_PACKAGES = ("lme4", "jsonlite")
APT_PACKAGES = ("r-base-core", "r-cran-lme4", "r-cran-jsonlite")
INSTALL = ("apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "
           + " ".join(APT_PACKAGES))

# Versions and the BLAS R uses, as JSON; fails (non-zero status) if a package is missing.
R_INFO = """
ok <- all(sapply(c({packages}), requireNamespace, quietly = TRUE))
if (!ok) quit(status = 3)
info <- sessionInfo()
cat(jsonlite::toJSON(list(
    R = R.version.string,
    lme4 = as.character(packageVersion("lme4")),
    Matrix = as.character(packageVersion("Matrix")),
    BLAS = info$BLAS, LAPACK = info$LAPACK), auto_unbox = TRUE))
"""


def r_info() -> dict | None:
    """R's and lme4's versions and R's BLAS; None when R, lme4 or jsonlite is missing."""
    if not shutil.which("Rscript"):
        return None
    script = R_INFO.format(packages=", ".join(f'"{p}"' for p in R_PACKAGES))
    try:
        done = subprocess.run(["Rscript", "-e", script], capture_output=True, text=True,
                              timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None


def may_install() -> bool:
    return (hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get") is not None
            and not os.environ.get("CI"))


def ensure_r(*, install: bool = True) -> dict | None:
    """R's info, installing R and lme4 first when they are missing and that is allowed."""
    info = r_info()
    if info is not None:
        return info
    if not (install and may_install()):
        why = "CI is set" if os.environ.get("CI") else "needs root and apt-get"
        print(f"lme4 columns skipped: R with {', '.join(R_PACKAGES)} not found. "
              f"Install it with (as root; {why} here):\n    {INSTALL}", flush=True)
        return None
    print(f"Installing R and lme4: {INSTALL}", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    done = subprocess.run(INSTALL, shell=True, env=env, check=False)
    info = r_info() if done.returncode == 0 else None
    if info is None:
        print("lme4 columns skipped: installing R and lme4 failed.", flush=True)
    return info
