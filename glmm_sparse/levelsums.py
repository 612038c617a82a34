"""The per-level sums of a streamed pass, one buffer row per level and term.

Between a batch's frame and the running sums (``streaming.Accumulator``): for each term,
every row adds into its level's row of one buffer its block of Z'WZ, its rows of
Z'W[X y], its count and its sum of y - c, so that each row visits its level once
(``_core._crossprod.add_term_sums``). At 10^6 levels nearly every visit misses the
cache, and the time goes by the cache lines a level's row spans. A term whose columns
are columns of X (``(1 + x | g)`` with ``y ~ x + ...``) repeats products: its k x k
block is part of its k x (p + 1) cross-products, and (x, 1) is (1, x). Such a term keeps
each distinct product once (``add_shared_sums``): 7 floats a level instead of 12 for
``(1 + x | g)``, one line instead of two. After the pass, ``move_into`` adds the
buffers into the Sums' arrays in their usual layout.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._core import _crossprod
from .classed import intercept_only


@dataclass(frozen=True)
class SharedProducts:
    """Where a term whose columns are the columns ``cols`` of [X y] keeps its sums:
    products (w B[:, left[j]]) B[:, right[j]] in buffer columns j < J, then the count and
    the sum of y - c; ``diag`` and ``cross``: the buffer column of each entry of the
    term's k x k block and of its k x m cross-products (row-major)."""

    cols: np.ndarray
    left: np.ndarray
    right: np.ndarray
    diag: np.ndarray
    cross: np.ndarray

    @property
    def width(self) -> int:
        return self.left.shape[0] + 2


def shared_products(cnames, xnames) -> SharedProducts | None:
    """The products of a term with columns ``cnames`` against [X y] (X's columns
    ``xnames``), each kept once, or None unless the term has two or more columns, all of
    them columns of X by name (the values are then the same: terms.shared_columns)."""
    cnames, xnames = tuple(cnames), tuple(xnames)
    if len(cnames) < 2 or len(set(cnames)) < len(cnames) or not set(cnames) <= set(xnames):
        return None
    idx = [xnames.index(c) for c in cnames]
    m = len(xnames) + 1
    slots: dict[tuple[int, int], int] = {}

    def slot(a: int, c: int) -> int:  # a is a term's column; (a, c) = (c, a) if c is one
        key = (min(a, c), max(a, c)) if c in idx else (a, c)
        return slots.setdefault(key, len(slots))

    cross = np.array([slot(a, c) for a in idx for c in range(m)], dtype=np.intp)
    diag = np.array([slot(a, b) for a in idx for b in idx], dtype=np.intp)
    keys = np.array(list(slots), dtype=np.intp).reshape(-1, 2)
    return SharedProducts(np.array(idx, dtype=np.intp), np.ascontiguousarray(keys[:, 0]),
                          np.ascontiguousarray(keys[:, 1]), diag, cross)


class LevelSums:
    """One pass's per-level sums of each term (``terms`` in lme4's order), with X's
    column names ``xnames``: the buffers, each batch's kernels, the move into the Sums."""

    def __init__(self, terms, xnames):
        self.m = len(xnames) + 1
        self.k = [t.k for t in terms]
        self.plans = [shared_products(t.cnames, xnames) for t in terms]
        # (1 | g): the kernel's own ones (Xt None), not the frame's column of them
        self.ones = [intercept_only(t) for t in terms]
        self.buffers = [
            _crossprod.level_sums_buffer(t.nlev, plan.width if plan is not None
                                         else t.k * t.k + t.k * self.m + 2)
            for t, plan in zip(terms, self.plans)]

    def tasks(self, codes, xs, XB: np.ndarray, w: np.ndarray, yc: np.ndarray,
              col_sumsq, col_nonzero) -> list:
        """One callable per term that adds a batch's rows (codes, term columns xs, [X y]
        in XB, weights w, y - c in yc) into its buffer, and the sums of squares and
        non-zero counts of the term's columns into col_sumsq[t] and col_nonzero[t]."""
        out = []
        for t, (c, X, F, plan) in enumerate(zip(codes, xs, self.buffers, self.plans)):
            sq, nz = col_sumsq[t], col_nonzero[t]
            if self.ones[t]:  # ones: each row adds 1 to both column sizes, exactly
                def task(c=c, F=F, sq=sq, nz=nz):
                    _crossprod.add_term_sums(c, None, XB, w, yc, F)
                    sq += c.shape[0]
                    nz += c.shape[0]
            elif plan is None:
                def task(c=c, X=X, F=F, sq=sq, nz=nz):
                    _crossprod.add_term_sums(c, X, XB, w, yc, F)
                    _crossprod.add_column_sums(X, sq, nz)
            else:
                def task(c=c, F=F, plan=plan, sq=sq, nz=nz):
                    _crossprod.add_shared_sums(c, plan.left, plan.right, XB, w, yc, F,
                                               plan.cols, sq, nz)
            out.append(task)
        return out

    def move_into(self, diag, cross, level_n, level_y) -> None:
        """Add the buffers into the Sums' per-term arrays (diag (nlev, k, k), cross
        (nlev k, m), level_n and level_y (nlev)), a column at a time, and let each buffer
        go once moved."""
        m = self.m
        for t, (F, plan) in enumerate(zip(self.buffers, self.plans)):
            k = self.k[t]
            nlev = diag[t].shape[0]
            kk, km = k * k, k * m
            D = diag[t].reshape(nlev, kk, copy=False)
            C = cross[t].reshape(nlev, km, copy=False)
            if plan is None:
                D += F[:, :kk]  # in place, no temporaries
                C += F[:, kk:kk + km]
                at = kk + km
            else:
                for j, col in enumerate(plan.diag):
                    D[:, j] += F[:, col]
                for j, col in enumerate(plan.cross):
                    C[:, j] += F[:, col]
                at = plan.width - 2
            level_n[t] += F[:, at]
            level_y[t] += F[:, at + 1]
            self.buffers[t] = None  # free each term's buffer before the next copy
