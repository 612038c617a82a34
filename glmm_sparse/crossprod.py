"""The weighted cross-products of DESIGN.md section 2, accumulated in one pass per term.

Third stage of the pipeline (... -> terms -> cross-products -> factor -> ...). After
this, an LMM fit never touches the n rows again: every objective evaluation uses these
sums only. Z'WZ is kept as dense k_t x k_s blocks, one per pair of levels that share a
row, so that Lambda' Z'WZ Lambda has the same blocks (and the same sparsity pattern).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from ._core import _crossprod
from .frame import ModelFrame, tsqr_r
from .parallel import run_all
from .terms import ReTerm
from .validate import check_residual_variation


@dataclass(frozen=True, eq=False)
class PairBlocks:
    """Off-diagonal blocks of Z'WZ between terms t < s: one per co-occurring level pair."""

    t: int
    s: int
    lev_t: np.ndarray  # int32 or int64 (nb,), level of term t of each block
    lev_s: np.ndarray  # int32 or int64 (nb,)
    A: np.ndarray  # (nb, k_t, k_s)


@dataclass(frozen=True, eq=False)
class CrossProducts:
    """Z'WZ (as blocks), Z'W[X y], [X y]'W[X y], n and sum(log w)."""

    k: tuple[int, ...]
    nlev: tuple[int, ...]
    diag: tuple[np.ndarray, ...]  # per term, (nlev, k, k)
    pairs: tuple[PairBlocks, ...]
    ZtWXy: np.ndarray  # (q, p + 1), the last column is Z'Wy
    XtWXy: np.ndarray  # (p + 1, p + 1), the last row/column is X'Wy, y'Wy
    n: int
    sum_log_w: float
    beta_shift: np.ndarray | None = None  # least-squares coefficients taken out of y

    @property
    def p(self) -> int:
        return self.XtWXy.shape[0] - 1

    @property
    def q(self) -> int:
        return int(sum(k * nl for k, nl in zip(self.k, self.nlev)))

    @property
    def offsets(self) -> np.ndarray:
        """First column of each term in Z (and in u, b)."""
        sizes = [k * nl for k, nl in zip(self.k, self.nlev)]
        return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


def response_matrix(frame: ModelFrame) -> tuple[np.ndarray, np.ndarray | None]:
    """[X, y - offset - X beta0] as one C-ordered (n, p + 1) array, and beta0.

    beta0 are the least-squares coefficients of y - offset on X. The criterion and theta
    do not change when X beta0 is taken out of y (beta moves by beta0, added back by
    ``LmmObjective.beta``), but pwrss, found by downdating y'Wy, loses the digits that a
    large mean of y holds: relative precision eps |y|^2 / pwrss, which for sleepstudy's
    Reaction + 1e6 had moved sigma by 1e-3.

    The frame's buffer [X, slot] is used in place (its last column is rewritten from y on
    every call), with the QR the frame made of [X, y - offset].
    """
    y = frame.y if frame.offset is None else frame.y - frame.offset
    p = frame.X.shape[1]
    if frame.XB is not None and np.shares_memory(frame.X, frame.XB):
        B, R = frame.XB, frame.R_XB  # X is the buffer's view (a replaced X is not)
    else:
        B = np.ascontiguousarray(np.column_stack([frame.X, y]))
        R = tsqr_r(B) if p else None
    B[:, p] = y
    if p == 0:
        return B, None
    beta0 = np.linalg.lstsq(R[:p, :p], R[:p, p], rcond=None)[0]
    B[:, p] -= B[:, :p] @ beta0
    check_residual_variation(B[:, p], y)
    return B, beta0


def add_z_times(terms, b: np.ndarray, offsets, out: np.ndarray) -> np.ndarray:
    """out += Z b, term by term through the level codes (compiled; Z is never formed)."""
    for i, t in enumerate(terms):
        vals = np.ascontiguousarray(b[offsets[i]:offsets[i + 1]].reshape(t.nlev, t.k))
        _crossprod.add_term_times(t.codes, t.z_values, vals, out)
    return out


def pair_index(t: ReTerm, s: ReTerm) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Block index per row, and the (level of t, level of s) of each block, sorted.

    Compiled (_crossprod.pair_index: rows bucketed by t's level, no n-long sort), all
    int32; beyond int32 sizes, by sorting the n pair keys (pair_index_by_sort).
    """
    n = t.codes.shape[0]
    if max(n, t.nlev, s.nlev) > np.iinfo(np.int32).max:
        return pair_index_by_sort(t, s)
    codes_t, codes_s = t.codes, s.codes
    if codes_t.dtype != codes_s.dtype:
        codes_t, codes_s = codes_t.astype(np.int64), codes_s.astype(np.int64)
    return _crossprod.pair_index(codes_t, codes_s, t.nlev, s.nlev)


def pair_index_by_sort(t: ReTerm, s: ReTerm) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """pair_index by factorizing the n keys ``code_t * nlev_s + code_s`` (int64; several
    n-long temporaries)."""
    key = t.codes.astype(np.int64) * np.int64(s.nlev) + s.codes
    block, uniques = pd.factorize(key, sort=True)
    lev_t, lev_s = np.divmod(np.asarray(uniques, dtype=np.int64), s.nlev)
    return block.astype(np.int64), lev_t, lev_s


@dataclass(frozen=True, eq=False)
class CrossprodPlan:
    """The structure of the cross-products, found once: terms and level-pair blocks per row.

    ``accumulate`` can then be called with new weights and right-hand sides (a PIRLS
    iteration) and always yields the same block structure, hence the same pattern of M.
    """

    terms: tuple[ReTerm, ...]
    pair_terms: tuple[tuple[int, int], ...]
    pair_rows: tuple[np.ndarray, ...]  # per pair, block index of each row
    pair_levels: tuple[tuple[np.ndarray, np.ndarray], ...]

    @classmethod
    def from_terms(cls, terms: tuple[ReTerm, ...], *,
                   skip_first_pairs: bool = False) -> "CrossprodPlan":
        """The plan of ``terms``; ``skip_first_pairs``: without the first term's level-pair
        blocks (the count classes build them as B from the codes, classed.py)."""
        pairs, rows, levels = [], [], []
        for i, t in enumerate(terms):
            if i == 0 and skip_first_pairs:
                continue
            for j in range(i + 1, len(terms)):
                block, lev_t, lev_s = pair_index(t, terms[j])
                pairs.append((i, j))
                rows.append(block)
                levels.append((lev_t, lev_s))
        return cls(tuple(terms), tuple(pairs), tuple(rows), tuple(levels))

    def accumulate(self, w: np.ndarray, B: np.ndarray, *, sum_log_w: float = 0.0) -> CrossProducts:
        """Z'WZ (blocks), Z'WB and B'WB for weights w and right-hand sides B (n, m).

        Each kernel writes its own output, so they run side by side on large inputs and the
        result does not depend on the thread count.
        """
        w = np.ascontiguousarray(w, dtype=np.float64)
        B = np.ascontiguousarray(B, dtype=np.float64)
        terms = self.terms
        diag = [np.zeros((t.nlev, t.k, t.k)) for t in terms]
        cross = [np.zeros((t.q, B.shape[1])) for t in terms]
        pair_out = [np.zeros((lev_t.shape[0], terms[i].k, terms[j].k))
                    for (i, j), (lev_t, _) in zip(self.pair_terms, self.pair_levels)]
        gram = np.zeros((B.shape[1], B.shape[1]))
        tasks = [lambda t=t, D=D: _crossprod.add_term_diag(t.codes, t.z_values, w, D)
                 for t, D in zip(terms, diag)]
        tasks += [lambda t=t, C=C: _crossprod.add_term_cross(t.codes, t.z_values, B, w, C)
                  for t, C in zip(terms, cross)]
        tasks += [lambda ij=ij, rows=rows, A=A: _crossprod.add_pair_blocks(
                      rows, terms[ij[0]].z_values, terms[ij[1]].z_values, w, A)
                  for ij, rows, A in zip(self.pair_terms, self.pair_rows, pair_out)]
        tasks.append(lambda: _crossprod.add_weighted_gram(B, w, gram))
        run_all(tasks, w.shape[0])
        pairs = [PairBlocks(i, j, lev_t, lev_s, A) for (i, j), (lev_t, lev_s), A
                 in zip(self.pair_terms, self.pair_levels, pair_out)]
        return CrossProducts(
            k=tuple(t.k for t in terms), nlev=tuple(t.nlev for t in terms),
            diag=tuple(diag), pairs=tuple(pairs),
            ZtWXy=np.vstack(cross) if cross else np.zeros((0, B.shape[1])), XtWXy=gram,
            n=int(np.count_nonzero(w > 0)), sum_log_w=sum_log_w)


def accumulate(frame: ModelFrame, *, skip_first_pairs: bool = False) -> CrossProducts:
    """All cross-products of an LMM's frame: prior weights, [X, y - offset - X beta0]
    (without the first term's level pairs if ``skip_first_pairs``)."""
    if frame.weights is None:
        w, sum_log_w = np.ones(frame.n), 0.0
    else:
        w = frame.weights
        sum_log_w = float(np.log(w[w > 0]).sum())
    B, beta0 = response_matrix(frame)
    plan = CrossprodPlan.from_terms(frame.terms, skip_first_pairs=skip_first_pairs)
    cp = plan.accumulate(w, B, sum_log_w=sum_log_w)
    return replace(cp, beta_shift=beta0)
