"""Per-row level codes kept by a streamed pass, for the count-class route (classed.py).

A crossed LMM such as ``(1 | g1) + (1 | g2)`` with 10^6 x 10^3 levels meets about one new
(g1, g2) pair per row: the level-pair blocks of Z1'Z2 grow with the rows (95 million at
10^8 rows), and the running blocks of a streamed pass with them. The count classes need
Z1'Z2 only as B (levelrows.b_from_rows), built once after the pass from each row's level
codes: 4 bytes per row and term, 2 for the second of two intercept terms of at most
65,536 levels (plus a later term's Z values unless it is ``(1 | g)``). So a streamed
pass that may take the classes keeps those codes here, in arrays
allocated once for the rows the first pass counted, and skips the first term's pair
blocks; B is built from them, and they are dropped, before the fit.
"""
from __future__ import annotations

import numpy as np

from .classed import intercept_only, size_refusal, terms_refusal
from .levelrows import LevelRows, b_from_rows
from .memory import memory_budget

BUDGET_SHARE = 0.25  # the codes may take this share of the memory budget


def code_dtypes(terms) -> list[np.dtype]:
    """The type of each term's kept codes: int32; uint16 for the second of two
    intercept-only terms when its levels fit (levelrows' two-intercept case reads it so:
    at 10^8 rows, 0.19 GiB less to hold and to fault in)."""
    out = [np.dtype(np.int32)] * len(terms)
    if (len(terms) == 2 and all(intercept_only(t) for t in terms)
            and terms[1].nlev <= np.iinfo(np.uint16).max + 1):
        out[1] = np.dtype(np.uint16)
    return out


def row_bytes(terms) -> int:
    """Bytes kept per row: a code per term (code_dtypes), and the float64 Z values of each
    later term other than an intercept-only one (``(0 + x | g)`` has k = 1 and values x)."""
    return (sum(d.itemsize for d in code_dtypes(terms))
            + 8 * sum(t.k for t in terms[1:] if not intercept_only(t)))


def structure_refusal(terms, p: int, weighted: bool) -> str | None:
    """Why a streamed fit of these terms (lme4's order) cannot take the classes, or None:
    the in-memory route's reasons (classed.py), and prior weights."""
    reason = terms_refusal([t.k for t in terms], terms[0].nlev if terms else 0,
                           terms[0].group_name if terms else None)
    if reason is None and not intercept_only(terms[0]):
        first, g = terms[0], terms[0].group_name
        lhs = " + ".join(c for c in first.cnames if c != "(Intercept)")
        lhs = lhs if "(Intercept)" in first.cnames else f"0 + {lhs}"
        reason = (f"the first term (lme4's order: most levels) is ({lhs} | {g}), not "
                  f"(1 | {g}): B = Z1'Z2 from the kept row codes would take its values for "
                  "ones; factor_mode='measure' sums its level pairs with its values (in "
                  "memory, the classes take them from those pairs)")
    if reason is None and weighted:
        reason = ("prior weights: a streamed fit keeps no per-row weights for the classes "
                  "(weights that differ per row make every level's sum its own class)")
    return reason or size_refusal(sum(t.q for t in terms[1:]) + p + 1)


class RowCodes:
    """Every complete row's level code per term (code_dtypes), and the Z values of the
    later terms that are not intercept-only, filled batch by batch in row order."""

    def __init__(self, n_rows: int, terms):
        self.terms = tuple(terms)
        self.codes = [np.empty(n_rows, dtype=d) for d in code_dtypes(self.terms)]
        self.values = [None] + [None if intercept_only(t) else np.empty((n_rows, t.k))
                                for t in self.terms[1:]]
        self.filled = 0

    @staticmethod
    def fits(n_rows: int, terms) -> bool:
        """Whether the codes of n_rows rows fit their share of the memory budget."""
        return n_rows * row_bytes(terms) <= BUDGET_SHARE * memory_budget()

    def add(self, codes, xs) -> None:
        """One batch: each term's codes and Z columns, in lme4's order."""
        self.write(self.reserve(len(codes[0])), codes, xs)

    def reserve(self, nb: int) -> slice:
        """The rows of the next batch of nb rows (in order), taken now; ``write`` fills
        them, on any thread, before ``level_rows``."""
        rows = slice(self.filled, self.filled + nb)
        if rows.stop > self.codes[0].shape[0]:
            raise RuntimeError(f"more complete rows ({rows.stop}) than the first pass counted "
                               f"({self.codes[0].shape[0]}): did the files change between "
                               "the passes?")
        self.filled = rows.stop
        return rows

    def write(self, rows: slice, codes, xs) -> None:
        """A batch's codes and Z columns (lme4's order) into its reserved rows."""
        for t, c in enumerate(codes):
            self.codes[t][rows] = c
            if self.values[t] is not None:
                self.values[t][rows] = xs[t]

    def level_rows(self) -> LevelRows:
        """B = Z0'Z2 from the rows (levelrows.b_from_rows); the codes are dropped after."""
        n = self.filled
        B = b_from_rows(self.codes[0][:n], [c[:n] for c in self.codes[1:]],
                        [None if v is None else v[:n] for v in self.values[1:]],
                        [t.nlev for t in self.terms], [t.k for t in self.terms],
                        overwrite=True)
        self.codes, self.values = None, None
        return B
