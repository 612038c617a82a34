"""One PIRLS pass over the rows, streamed in fixed chunks: eta, working weights and
response, the deviance and the weighted cross-products, with nothing n-long allocated.

Where it sits: the GLMM objective's inner loop (pirls.py) calls ``row_pass`` once per
PIRLS iteration and step-halving trial point; the LMM's one-off pass stays
``CrossprodPlan.accumulate``. Per chunk of ``parallel.CHUNK`` rows (a few MB, in cache):

    eta = offset + X beta + Z b            (or the family's start eta, given)
    w   = prior_w (dmu/deta)^2 / V(mu),  z = (eta - base) + (y - mu) / (dmu/deta)
    Z'WZ (blocks), Z'W[X z], [X z]'W[X z] added into the chunk's slot's partial sums

``base`` is the offset (joint PIRLS over (u, beta): z holds X beta + Z b) or
offset + X beta (PIRLS over u: z holds Z b), as lme4's working response.

Determinism: chunk boundaries are fixed, chunks are grouped into ``SLOTS`` contiguous
runs (a slot adds its chunks in row order), the slots' partial sums are added in slot
order and the chunks' deviances in chunk order. None of this depends on the thread
count, so 1 and 8 threads give the same bits. Data of one chunk (below 65,536 rows: all
rows) go to one slot, whose sums are the in-order sums of ``accumulate``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._core import _crossprod, _glm
from .crossprod import CrossProducts, CrossprodPlan, PairBlocks
from .parallel import row_chunks, run_all

# Partial sums per pass: fixed, so results depend on it and never on the threads. Each
# slot holds a copy of Z'WZ's blocks (at 10^6 rows of 10,000 x 1,000 crossed levels,
# 7.6 MB); two keep both cores of this machine kind busy.
SLOTS = 2


@dataclass(frozen=True, eq=False)
class Point:
    """Where a pass evaluates: eta = offset + X beta + Z b, or a given eta (the family's
    start, which is not of that form). ``b`` holds Lambda u per term as (nlev, k);
    ``joint``: for PIRLS over (u, beta) (right-hand side [X z]) or over u ([z])."""

    beta: np.ndarray
    b: tuple[np.ndarray, ...]
    joint: bool = True
    eta: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class PassResult:
    """What one pass found: the deviance, the cross-products at the working weights and
    response (None for a deviance-only pass), and what PIRLS's checks need."""

    dev: float
    cp: CrossProducts | None
    joint: bool  # the right-hand side of cp: [X z] (True) or [z]
    max_abs_eta: float
    nonfinite_w: int


class _Sums:
    """One slot's partial sums."""

    def __init__(self, plan: CrossprodPlan, m: int):
        terms = plan.terms
        self.diag = [np.zeros((t.nlev, t.k, t.k)) for t in terms]
        self.cross = [np.zeros((t.q, m)) for t in terms]
        self.pairs = [np.zeros((lev_t.shape[0], terms[i].k, terms[j].k))
                      for (i, j), (lev_t, _) in zip(plan.pair_terms, plan.pair_levels)]
        self.gram = np.zeros((m, m))
        self.positive = 0

    def add(self, other: "_Sums") -> None:
        """self += other, array by array."""
        for mine, theirs in ((self.diag, other.diag), (self.cross, other.cross),
                             (self.pairs, other.pairs)):
            for a, b in zip(mine, theirs):
                a += b
        self.gram += other.gram
        self.positive += other.positive


def term_effects(terms, T: list[np.ndarray], u: np.ndarray, offsets) -> tuple[np.ndarray, ...]:
    """b = Lambda u per term, as (nlev, k) arrays: b_t[g] = T_t u_t[g]."""
    return tuple(np.ascontiguousarray(u[offsets[i]:offsets[i + 1]].reshape(t.nlev, t.k) @ Tt.T)
                 for i, (t, Tt) in enumerate(zip(terms, T)))


def chunk_eta(data, point: Point, sl: slice, out: np.ndarray, base: np.ndarray | None) -> None:
    """out = eta on the rows sl; base (if given) = offset + X beta there.

    The same roundings as the whole-vector (offset + X beta) + Z_1 b_1 + Z_2 b_2 + ...
    """
    if point.eta is not None:
        out[:] = point.eta[sl]
        if base is not None:
            np.add(data.offset[sl], data.X[sl] @ point.beta, out=base)
        return
    np.add(data.offset[sl], data.X[sl] @ point.beta, out=out)
    if base is not None:
        base[:] = out
    for t, bt in zip(data.plan.terms, point.b):
        _crossprod.add_term_times(t.codes[sl], _z(t, sl), bt, out)


class _Buffers:
    """A worker's chunk-sized scratch: eta, w, z, offset + X beta, [X z]. Made per slot
    and dropped when it ends, so only as many live as threads run."""

    def __init__(self, rows: int, m: int):
        self.eta, self.w, self.z, self.base = (np.empty(rows) for _ in range(4))
        self.B = np.empty((rows, m))


def _chunk(data, point: Point, sl: slice, sums: _Sums | None, bufs: _Buffers) -> tuple:
    """One chunk: eta, w, z and the deviance; its cross-products added into ``sums``."""
    rows, joint = sl.stop - sl.start, point.joint
    eta, w, z, base = (a[:rows] for a in (bufs.eta, bufs.w, bufs.z, bufs.base))
    chunk_eta(data, point, sl, eta, None if joint else base)
    if joint:
        base = data.offset[sl]
    dev, largest, positive, nonfinite = _glm.working_response(
        *kernel_codes(data.family), data.y[sl], data.prior_w[sl], eta, base, w, z)
    if sums is not None:
        _accumulate_chunk(data.plan, sl, w, z, data.X[sl] if joint else None, bufs.B[:rows], sums)
        sums.positive += positive
    return dev, largest, nonfinite


def _accumulate_chunk(plan: CrossprodPlan, sl: slice, w, z, X, B, sums: _Sums) -> None:
    """The chunk's Z'WZ blocks, Z'W[X z] and [X z]'W[X z] added into the slot's sums
    (B: the chunk's buffer for [X z])."""
    p = 0 if X is None else X.shape[1]
    if p:
        B[:, :p] = X
    B[:, p] = z
    terms = plan.terms
    for t, D, C in zip(terms, sums.diag, sums.cross):
        _crossprod.add_term_diag(t.codes[sl], _z(t, sl), w, D)
        _crossprod.add_term_cross(t.codes[sl], _z(t, sl), B, w, C)
    for (i, j), blocks, A in zip(plan.pair_terms, plan.pair_rows, sums.pairs):
        _crossprod.add_pair_blocks(blocks[sl], _z(terms[i], sl), _z(terms[j], sl), w, A)
    _crossprod.add_weighted_gram(B, w, sums.gram)


def _z(term, sl: slice):
    """A chunk of a term's columns as the kernels take them: None for (1 | g)'s ones."""
    z = term.z_values
    return None if z is None else z[sl]


def kernel_codes(family) -> tuple[int, int]:
    """The compiled kernel's codes of a family and its link."""
    return _glm.FAMILY_CODES[family.name], _glm.LINK_CODES[family.link.name]


def slot_chunks(n: int) -> list[list[slice]]:
    """The fixed chunks of rows in at most SLOTS contiguous runs, as even as they go."""
    chunks = row_chunks(n)
    runs = np.array_split(np.arange(len(chunks)), min(SLOTS, len(chunks)))
    return [[chunks[c] for c in run] for run in runs]


def row_pass(data, point: Point, *, accumulate: bool = True) -> PassResult:
    """The deviance at ``point`` and (``accumulate``) the cross-products at its working
    weights and response: one streamed pass over the rows (module docstring)."""
    p = data.X.shape[1] if point.joint else 0
    runs = slot_chunks(data.n)
    rows = max(sl.stop - sl.start for run in runs for sl in run)

    def slot(run):
        sums = _Sums(data.plan, p + 1) if accumulate else None
        bufs = _Buffers(rows, p + 1 if accumulate else 0)
        return sums, [_chunk(data, point, sl, sums, bufs) for sl in run]

    done = run_all([lambda run=run: slot(run) for run in runs], data.n)
    parts = [part for _, chunks in done for part in chunks]  # in chunk order
    dev = float(sum(d for d, _, _ in parts))
    largest = max((m for _, m, _ in parts), default=0.0)
    nonfinite = sum(k for _, _, k in parts)
    cp = None
    if accumulate:
        total = done[0][0]
        for sums, _ in done[1:]:
            total.add(sums)
        cp = _crossproducts(data.plan, total)
    return PassResult(dev, cp, point.joint, largest, nonfinite)


def _crossproducts(plan: CrossprodPlan, sums: _Sums) -> CrossProducts:
    """The summed slots as CrossProducts (the gram's lower triangle mirrored)."""
    terms = plan.terms
    gram = sums.gram  # symmetric: add_weighted_gram mirrors after each chunk
    pairs = [PairBlocks(i, j, lev_t, lev_s, A) for (i, j), (lev_t, lev_s), A
             in zip(plan.pair_terms, plan.pair_levels, sums.pairs)]
    m = sums.gram.shape[0]
    return CrossProducts(
        k=tuple(t.k for t in terms), nlev=tuple(t.nlev for t in terms),
        diag=tuple(sums.diag), pairs=tuple(pairs),
        ZtWXy=np.vstack(sums.cross) if sums.cross else np.zeros((0, m)), XtWXy=gram,
        n=sums.positive, sum_log_w=0.0)
