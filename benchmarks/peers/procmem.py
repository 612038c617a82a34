"""This process's resident memory from /proc (Linux), and resetting its peak.

Writing "5" to /proc/self/clear_refs resets VmHWM (the peak resident set) to the current
VmRSS, so the peak read after a fit is the fit's own peak, not the data loading's.
lme4_fit.R does the same from R.
"""
from __future__ import annotations

from pathlib import Path

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def status_bytes(key: str) -> int | None:
    """VmRSS, VmHWM, ... in bytes; None where /proc is not there."""
    try:
        lines = STATUS.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        name, _, value = line.partition(":")
        if name == key:
            return int(value.split()[0]) * 1024  # reported in kB
    return None


def reset_peak() -> bool:
    """Reset VmHWM to the current resident set; False where that is not possible."""
    try:
        CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True
