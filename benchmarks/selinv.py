"""Selected inverse of M against one supernodal factorization, as a markdown table.

    python benchmarks/selinv.py

M at the start theta for the crossed shapes of benchmarks/factorization.py (seed 1),
factored supernodally with the ordering lmer would choose. Columns (minimum of 3 runs):
one numeric factorization; the old selected inverse (the factor converted to simplicial
CSC by ``sparse_L`` plus Takahashi's recurrences, ``_core/_selinv.pyx``); the new one on
the supernodal storage (``_core/_supinv.pyx``, BLAS on one thread); and the lookup of
M^-1 at every stored entry of M (``SelectedInverse.on_pattern``, what the gradient asks
for). The last column is the largest difference between the two selected inverses on
M's pattern, relative to the largest entry. The load average is printed first.

A second table gives the memory each path allocates beyond the factor (peak, traced by
tracemalloc, which sees NumPy's arrays, not CHOLMOD's own allocations): the old path
also holds CHOLMOD's simplicial copy of L (not traced: 12 bytes per entry of L).
"""
from __future__ import annotations

import time
import tracemalloc

import numpy as np
from factorization import SHAPES, objective_at_start
from glmm_sparse._core._cholmod import SymbolicFactor
from glmm_sparse._core._selinv import selected_inverse

from glmm_sparse.condvar import SelectedInverse
from glmm_sparse.objective import best_ordering

REPEATS = 3


def best_of(fn):
    """(minimum seconds over REPEATS calls, the last call's result)."""
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def old_selected_inverse(factor):
    """The previous path: simplicial CSC copy of L, then Takahashi's recurrences."""
    return selected_inverse(*factor.sparse_L())


def traced_peak(fn):
    """Peak bytes NumPy allocated while fn ran (tracemalloc)."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    out = fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    del out
    return peak


def measure(shape):
    obj = objective_at_start(*SHAPES[shape])
    pat = obj.pattern
    ordering, _ = best_ordering(pat)
    factor = SymbolicFactor(pat.indptr, pat.indices, pat.q, "supernodal", ordering)
    obj.factor = factor  # SelectedInverse reads obj.factor and obj.cp only
    t_factor, _ = best_of(lambda: factor.factorize(obj.Mx, beta=1.0))
    t_old, _ = best_of(lambda: old_selected_inverse(factor))
    t_new, minv = best_of(lambda: SelectedInverse(obj))
    t_lookup, new = best_of(lambda: minv.on_pattern(pat.indptr, pat.indices))
    indptr, indices, _ = factor.sparse_L()
    old_values = old_selected_inverse(factor)
    keys = np.repeat(np.arange(pat.q, dtype=np.int64), np.diff(indptr)) * pat.q + indices
    cols = np.repeat(np.arange(pat.q, dtype=np.int64), np.diff(pat.indptr))
    pinv = minv.pinv
    i, j = pinv[pat.indices], pinv[cols]
    old = old_values[np.searchsorted(keys, np.minimum(i, j) * pat.q + np.maximum(i, j))]
    diff = float(np.abs(new - old).max() / np.abs(old).max())
    memory = (traced_peak(lambda: old_selected_inverse(factor)),
              traced_peak(lambda: SelectedInverse(obj)))
    return (shape, pat.q, pat.nnz, factor.factor_nnz(), t_factor, t_old, t_new, t_lookup, diff,
            memory)


def main() -> None:
    with open("/proc/loadavg") as f:
        print(f"load average before: {f.read().strip()}\n")
    print("| shape | q | nnz(M) | entries of L | factorization (s) | old selected inverse (s) "
          "| new selected inverse (s) | lookup on M's pattern (s) | old / new | max rel. diff |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    memory = {}
    for shape in SHAPES:
        s, q, nnz, nnz_l, tf, to, tn, tl, diff, memory[shape] = measure(shape)
        print(f"| {s} | {q:,} | {nnz:,} | {nnz_l:,.0f} | {tf:.3f} | {to:.3f} | {tn:.3f} "
              f"| {tl:.3f} | {to / tn:.1f} | {diff:.1e} |", flush=True)
    print("\n| shape | old: NumPy peak (MiB) | new: NumPy peak (MiB) |")
    print("|---|---:|---:|")
    for shape, (old, new) in memory.items():
        print(f"| {shape} | {old / 2**20:.1f} | {new / 2**20:.1f} |")
    with open("/proc/loadavg") as f:
        print(f"\nload average after: {f.read().strip()}")


if __name__ == "__main__":
    main()
