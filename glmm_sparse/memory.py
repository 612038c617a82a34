"""The memory guard: refuse a model whose factor cannot fit, before allocating it.

Sits between the pattern and the factor (... -> cross-products -> pattern -> factor -> ...).
``check_pattern_fits`` runs when M's pattern is about to be built, ``check_factor_fits``
after CHOLMOD's symbolic analysis and before the first numeric factorization: each
predicts the bytes the next stages will allocate and raises ``FactorMemoryError`` (a
``MemoryError``) with the size and what to change, instead of letting the operating
system kill the process part-way through a fit. The budget is 80% of the memory
available now (MemAvailable, or a cgroup limit if that is tighter), or the byte count in
GLMM_SPARSE_MEMORY_BUDGET.

The byte counts follow the int32 CHOLMOD API that ``_core._cholmod`` uses and were
checked against CHOLMOD's own accounting (``cholmod_common.memory_usage``) and
tracemalloc in tests/test_memory_guard.py.
"""
from __future__ import annotations

import os
import re
import sys
from numbers import Integral
from pathlib import Path

from .errors import FactorMemoryError, ModelSpecError

ENV_VAR = "GLMM_SPARSE_MEMORY_BUDGET"
DEFAULT_FRACTION = 0.8  # of available memory: room for Python, NumPy temporaries, the OS
INT = 4  # CHOLMOD int (the int32 cholmod_* API)
REAL = 8  # double
INDEX = 8  # NumPy int64
# condvar_blocks, after the fit: L copied out of CHOLMOD as int64 indices and values, then
# sorted (column keys, lexsort order, sorted indices and values) and the selected inverse
# keyed by int64 entry keys: six 8-byte arrays of length nnz(L) alive at once, and a few
# of length q (column pointers, inverse permutation, the kernel's accumulators).
CONDVAR_BYTES_PER_ENTRY = 6 * 8
CONDVAR_BYTES_PER_COLUMN = 4 * 8
# build_pattern holds M's int64 indices and, one group of blocks at a time, that group's
# int64 rows, columns and slots, plus an int64 position and a mask byte per block entry;
# measured at most 20.1 bytes per (entry + block entry) (37 when it sorted all entries).
PATTERN_BYTES_PER_ENTRY = 21
# cholmod_analyze on M: its copy of M (int + double per entry) and AMD/METIS's graph of
# M + M' (measured 24-28 bytes per entry of M, plus ~150 bytes per column at small sizes)
ANALYSIS_BYTES_PER_ENTRY = 28
ANALYSIS_BYTES_PER_COLUMN = 160
UNLIMITED = 1 << 60  # cgroup v1 reports "no limit" as a number near 2^63
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
_SIZE = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)\s*([KMGTP]?)(?:I?B)?$", re.IGNORECASE)


# -- how much memory there is --------------------------------------------------------------
def available_memory(*, proc: str | Path = "/proc", cgroup: str | Path = "/sys/fs/cgroup") -> int:
    """Bytes this process can still allocate: the smaller of MemAvailable and cgroup headroom.

    Without /proc (macOS), os.sysconf's free pages, or the physical memory where free pages
    are not reported. When nothing can be read, a huge number (the guard then never fires).
    ``proc`` and ``cgroup`` are the file-system roots, to be replaced in tests.
    """
    return _available(Path(proc), Path(cgroup))[0]


def _available(proc: Path, cgroup: Path) -> tuple[int, str]:
    """(bytes, where the number came from)."""
    found = [f for f in (_meminfo_available(proc), *_cgroup_headroom(proc, cgroup)) if f]
    if not found:
        found = [_sysconf_available() or (sys.maxsize, "unknown: no /proc, cgroup or sysconf")]
    return min(found, key=lambda f: f[0])


def _meminfo_available(proc: Path) -> tuple[int, str] | None:
    """MemAvailable from /proc/meminfo (kernels before 3.14: MemFree + Buffers + Cached)."""
    try:
        fields = dict(line.split(":", 1) for line in (proc / "meminfo").read_text().splitlines()
                      if ":" in line)
        kib = {k: int(v.split()[0]) for k, v in fields.items()}
    except (OSError, ValueError, IndexError):
        return None
    if "MemAvailable" in kib:
        return kib["MemAvailable"] * 1024, "MemAvailable in /proc/meminfo"
    if "MemFree" in kib:
        free = kib["MemFree"] + kib.get("Buffers", 0) + kib.get("Cached", 0)
        return free * 1024, "MemFree + Buffers + Cached in /proc/meminfo"
    return None


def _cgroup_headroom(proc: Path, cgroup: Path) -> list[tuple[int, str]]:
    """limit - usage (reclaimable page cache not counted) of each limited cgroup we are in."""
    out = []
    v2 = (cgroup / "cgroup.controllers").exists()
    own = _own_cgroup(proc, "" if v2 else "memory")
    root = cgroup if v2 else cgroup / "memory"
    names = (("memory.max", "memory.current", "inactive_file") if v2 else
             ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"))
    for d in _ancestors(root, own):
        limit, usage = _read_bytes(d / names[0]), _read_bytes(d / names[1])
        if limit is None or usage is None:
            continue
        usage -= min(usage, _stat_field(d / "memory.stat", names[2]))
        out.append((max(limit - usage, 0), f"cgroup limit {d / names[0]} minus usage"))
    return out


def _own_cgroup(proc: Path, controller: str) -> str:
    """This process's cgroup path for a v1 controller, or the v2 path ('' controller)."""
    try:
        lines = (proc / "self" / "cgroup").read_text().splitlines()
    except OSError:
        return "/"
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if (controller in parts[1].split(",")) if controller else parts[0] == "0":
            return parts[2]
    return "/"


def _ancestors(root: Path, own: str) -> list[Path]:
    """root/own and each parent up to root, those that exist (a cgroup namespace hides some)."""
    parts = [p for p in own.split("/") if p]
    dirs = [root.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]
    return [d for d in dirs if d.is_dir()]


def _read_bytes(path: Path) -> int | None:
    """An integer file of the cgroup tree; None when absent or "max" (no limit)."""
    try:
        value = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return value if value < UNLIMITED else None


def _stat_field(path: Path, name: str) -> int:
    try:
        for line in path.read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == name:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _sysconf_available() -> tuple[int, str] | None:
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        for name in ("SC_AVPHYS_PAGES", "SC_PHYS_PAGES"):
            if name in os.sysconf_names and os.sysconf(name) > 0:
                return os.sysconf(name) * page, f"os.sysconf {name}"
    except (AttributeError, OSError, ValueError):
        pass  # no sysconf (Windows) or an unsupported name
    return None


# -- the budget ------------------------------------------------------------------------------
def memory_budget() -> int:
    """Bytes a fit may allocate: GLMM_SPARSE_MEMORY_BUDGET, else 80% of ``available_memory()``."""
    return _budget(None)[0]


def _budget(budget: int | None) -> tuple[int, str]:
    """(bytes, where the number came from): the argument, the variable, or the default."""
    if budget is not None:
        if isinstance(budget, bool) or not isinstance(budget, Integral) or budget <= 0:
            raise ValueError(f"budget must be a positive number of bytes, not {budget!r}")
        return int(budget), f"passed as budget={budget}"
    text = os.environ.get(ENV_VAR, "").strip()
    if text:
        return parse_size(text, ENV_VAR), f"set by {ENV_VAR}={text}"
    available, source = _available(Path("/proc"), Path("/sys/fs/cgroup"))
    return int(DEFAULT_FRACTION * available), (
        f"{DEFAULT_FRACTION:.0%} of the {format_bytes(available)} available ({source})")


def parse_size(text: str, name: str = ENV_VAR) -> int:
    """Bytes of "4G", "500M", "1.5GiB", "4096" (K, M, G, T, P are powers of 1024).

    A bad value is a ModelSpecError (a ValueError) naming the variable and the value, so
    the command line reports it like any other bad option.
    """
    match = _SIZE.match(text.strip())
    value = float(match.group(1)) * _UNITS[match.group(2).upper()] if match else 0.0
    if not match or value < 1:
        raise ModelSpecError(f"{name}={text!r} is not a memory size: give a positive number "
                             "of bytes, or a number with K, M, G or T (powers of 1024), e.g. "
                             "4G or 500M")
    return int(value)


def format_bytes(n: float) -> str:
    """1.5 GiB, 20.0 MiB, 812 bytes."""
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} bytes"


# -- what a model needs ----------------------------------------------------------------------
def factor_bytes(factor_nnz: int, q: int, supernodal: bool, *, update_entries: int | None = None,
                 pattern_nnz: int = 0) -> int:
    """Bytes the first numeric factorization allocates: L's numeric arrays and CHOLMOD's scratch.

    factor_nnz is ``SymbolicFactor.factor_nnz()``: supernodal, L->x has that many doubles
    (the row indices, one list per supernode, were allocated by the analysis); simplicial,
    L->i and L->x hold one int and one double per entry, with p, nz, prev and next of
    length q. cholmod_factorize also permutes M (``pattern_nnz`` entries) into a temporary
    copy and, supernodal, allocates an update matrix of ``update_entries`` doubles
    (``SymbolicFactor.update_size()``; None bounds it by factor_nnz). Flag, Head, Iwork and
    W (at most 9 ints and a double per column) are counted though the analysis has
    usually allocated them already: the slight overestimate is the safe side.
    """
    return _factor_arrays(factor_nnz, q, supernodal) + _factorize_scratch(
        factor_nnz, q, supernodal, update_entries, pattern_nnz)


def _factor_arrays(factor_nnz: int, q: int, supernodal: bool) -> int:
    """Bytes of L's numeric arrays, held from the first factorization to the end of the fit."""
    if supernodal:
        return REAL * factor_nnz
    return (INT + REAL) * factor_nnz + INT * (4 * q + 5)


def _factorize_scratch(factor_nnz, q, supernodal, update_entries, pattern_nnz) -> int:
    """Bytes freed again after each factorization: the permuted M, update matrix, workspace."""
    update = 0
    if supernodal:
        update = REAL * (factor_nnz if update_entries is None else update_entries)
    permuted_M = (INT + REAL) * pattern_nnz + INT * (q + 1)
    workspace = (9 * INT + REAL) * q
    return update + permuted_M + workspace


def condvar_bytes(factor_nnz: int, q: int) -> int:
    """Peak bytes of the conditional variances (ranef's condVar) computed after the fit."""
    return CONDVAR_BYTES_PER_ENTRY * factor_nnz + CONDVAR_BYTES_PER_COLUMN * q


def pattern_bytes(nnz_M: int, q: int, *, block_entries: int | None = None) -> int:
    """Peak bytes to build M's pattern, hold its values and analyse it with CHOLMOD.

    nnz_M entries in M's upper triangle; block_entries counts every entry of the k x k
    diagonal blocks and of the off-diagonal blocks (None: 2 nnz_M, its upper bound). The
    pattern is built at ``PATTERN_BYTES_PER_ENTRY`` per entry and block entry; afterwards
    the objective keeps the indices, values and block positions (8 + 8 bytes per entry, 8
    per block entry) while CHOLMOD's analysis takes an int32 copy and its own.
    """
    blocks = 2 * nnz_M if block_entries is None else block_entries
    build = PATTERN_BYTES_PER_ENTRY * (nnz_M + blocks)
    held = (INDEX + REAL) * nnz_M + INDEX * blocks + INDEX * (q + 1)
    analysis = (INT + ANALYSIS_BYTES_PER_ENTRY) * nnz_M + ANALYSIS_BYTES_PER_COLUMN * q
    return max(build, held + analysis)


# -- the checks ------------------------------------------------------------------------------
ADVICE = ("To fit it: use fewer levels in the largest crossed grouping factors (merge rare "
          "levels, or fit a subset), drop a crossed term or a random slope, or run on a "
          f"machine with more memory. If the memory is there, raise the budget with {ENV_VAR} "
          "(bytes, or e.g. 64G).")


def check_factor_fits(factor, *, budget: int | None = None) -> None:
    """Raise FactorMemoryError if factorizing this analysed SymbolicFactor would exceed the budget.

    Call right after ``SymbolicFactor(...)`` and before ``factorize``. The need counts L's
    arrays plus the larger of CHOLMOD's scratch during a factorization and the conditional
    variances computed after the fit, which are the peak of a fit that gets that far.
    """
    nnz, q, supernodal = factor.factor_nnz(), factor.n, factor.is_supernodal
    arrays = _factor_arrays(nnz, q, supernodal)
    scratch = _factorize_scratch(nnz, q, supernodal, factor.update_size(), factor.nnz)
    need = arrays + max(scratch, condvar_bytes(nnz, q))
    limit, source = _budget(budget)
    if need > limit:
        kind = "supernodal" if supernodal else "simplicial"
        raise FactorMemoryError(
            f"the model is too large for the memory budget: its Cholesky factor L ({kind}, "
            f"{q:,} random effects) would have {nnz:,} entries, {format_bytes(arrays)} as stored, "
            f"and the fit would need {format_bytes(need)} with CHOLMOD's scratch and the "
            f"conditional variances of the random effects; the budget is {format_bytes(limit)} "
            f"({source}). {ADVICE}", needed=need, budget=limit)


def check_schur_fits(need: int, q1: int, q2: int, pairs: int, *,
                     budget: int | None = None) -> None:
    """Raise FactorMemoryError if the Schur-complement factor (schur.py) needs more than
    the budget: ``need`` bytes (``schur.schur_bytes``) for q2 later random effects held
    dense and ``pairs`` entries of M that join them to the first term's q1."""
    limit, source = _budget(budget)
    if need > limit:
        raise FactorMemoryError(
            f"the model is too large for the memory budget: the Schur-complement factor "
            f"(factor_mode='schur') would need {format_bytes(need)} for the dense block of "
            f"the later terms' {q2:,} random effects and the {pairs:,} entries of M that "
            f"join them to the first term's {q1:,}; the budget is "
            f"{format_bytes(limit)} ({source}). Use factor_mode='measure', which factors "
            f"sparsely where this does not fit. {ADVICE}", needed=need, budget=limit)


def check_pattern_fits(nnz_M: int, q: int, *, block_entries: int | None = None,
                       budget: int | None = None, levels: tuple[int, ...] | None = None) -> None:
    """Raise FactorMemoryError if building and analysing M's pattern would exceed the budget.

    Call where nnz(M) is known and before the pattern is allocated; ``levels`` (per
    random-effects term) only makes the message more specific.
    """
    need = pattern_bytes(nnz_M, q, block_entries=block_entries)
    limit, source = _budget(budget)
    if need > limit:
        where = f" (levels per term: {', '.join(f'{n:,}' for n in levels)})" if levels else ""
        raise FactorMemoryError(
            f"the model is too large for the memory budget: the matrix to factor, "
            f"Lambda'Z'WZ Lambda + I, has {nnz_M:,} entries in its upper triangle for {q:,} "
            f"random effects{where}, and building and analysing it would need "
            f"{format_bytes(need)} before its Cholesky factor is even allocated; the "
            f"budget is {format_bytes(limit)} ({source}). {ADVICE}", needed=need, budget=limit)
