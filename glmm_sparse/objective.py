"""The profiled deviance / REML criterion of an LMM as a function of theta, n-free.

Fourth stage (... -> cross-products -> factor -> optimize -> ...). One evaluation is a
chain of in-place updates: ``set_theta`` (T_t of each term), ``update_L`` (M's values on
the fixed pattern, numeric refactorization), ``update_RZX`` (R_ZX and c_u, y carried as
the last column), ``update_RX`` (Cholesky of the (p+1)x(p+1) Schur complement, whose last
diagonal is sqrt(pwrss)), then the ``objective`` query. Nothing here reads the n rows.

With the residual SD fixed (``sigma=``, known sampling variances) the same PLS
quantities give the criterion without profiling sigma out (``fixed_sigma_criterion``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import scipy.linalg

from . import schur
from ._core import _lambda
from ._core._cholmod import CholmodNotPositiveDefiniteError, SymbolicFactor
from .blockdiag import LEVEL_KS, LEVEL_MAX_COLUMNS, BlockDiagonalFactor
from .crossprod import CrossProducts
from .errors import FactorMemoryError, ModelSpecError, NumericalError
from .memory import check_factor_fits, check_schur_fits
from .pattern import MPattern, build_pattern
from .scaling import power_of_ten

LOG_2PI = float(np.log(2.0 * np.pi))
MEASURE_ABOVE_NNZ = 200_000  # entries of L above which the factorization mode is timed
AMD_BELOW_NNZ = 200_000  # entries of M below which AMD's analysis is cheap enough to try
NO_FILL_RATIO = 1.05  # nnz(L) / nnz(M) up to which a factor counts as free of fill
# share of the Schur factor's dense block that the sparse factor must fill for "measure"
# to take the Schur factor untimed (objective.schur_by_fill)
SCHUR_FILL_SHARE = 0.9
FACTOR_MODES = ("measure", "simplicial", "supernodal", "auto", "schur")
# pwrss / y'Wy below which a fit is exact to rounding (objective.check_residual_left):
# at 1e-9 pwrss still has 7 digits; a random intercept 1e4 times the residual sd (theta
# within 1.5e-4 of a QR-based oracle) leaves 1e-8, an exact fit stopped at 1.6e-10.
RESIDUAL_FLOOR = 1e-9


class ThetaMap:
    """theta <-> the lower-triangular factors T_t, lme4's order (column-wise lower triangles)."""

    def __init__(self, ks: tuple[int, ...]):
        self.ks = ks
        self.rows, self.cols = [], []
        for k in ks:
            c, r = np.triu_indices(k)  # column-major lower triangle: (r >= c), by column
            self.rows.append(r)
            self.cols.append(c)
        self.sizes = [len(r) for r in self.rows]
        self.n_theta = int(sum(self.sizes))

    @property
    def lower(self) -> np.ndarray:
        """Bounds: 0 for diagonal entries of T, -inf for the rest."""
        return np.concatenate([np.where(r == c, 0.0, -np.inf) for r, c in zip(self.rows, self.cols)])

    @property
    def start(self) -> np.ndarray:
        """lme4's start: T_t = identity."""
        return np.concatenate([(r == c).astype(float) for r, c in zip(self.rows, self.cols)])

    def factors(self, theta: np.ndarray) -> list[np.ndarray]:
        """The T_t matrices of a theta vector."""
        out, at = [], 0
        for k, r, c, size in zip(self.ks, self.rows, self.cols, self.sizes):
            T = np.zeros((k, k))
            T[r, c] = theta[at:at + size]
            out.append(T)
            at += size
        return out


def best_ordering(pattern: MPattern, natural: SymbolicFactor | None = None
                  ) -> tuple[str, SymbolicFactor]:
    """The fill-reducing ordering for M and its simplicial analysis (``natural``: the
    natural order's, if already made).

    lme4's term order (most levels first) makes the first term's block diagonal, so the
    natural order confines fill to the later terms' blocks, and its analysis is nearly
    free. AMD can still do better, but on crossed designs its analysis is slow (1.5-2.2 s
    for 10^4 x 10^3 crossed levels, where it found the same nnz(L) as the natural order),
    so it is only tried on small patterns, and kept when it fills less.
    """
    if natural is None:
        natural = natural_probe(pattern)
    if pattern.nnz > AMD_BELOW_NNZ:
        return "natural", natural
    amd = SymbolicFactor(pattern.indptr, pattern.indices, pattern.q, "simplicial", "default")
    if amd.factor_nnz() < natural.factor_nnz():
        return "default", amd
    return "natural", natural


def natural_probe(pattern: MPattern) -> SymbolicFactor:
    """M's simplicial analysis in the natural order (lme4's term order)."""
    return SymbolicFactor(pattern.indptr, pattern.indices, pattern.q, "simplicial", "natural")


def schur_by_fill(pattern: MPattern, natural: SymbolicFactor) -> bool:
    """Whether "measure" takes the Schur factor without timing it: its structure applies,
    L is large enough to be timed at all, and the sparse factor in the natural order
    (``natural``) stores all but at most 1 - SCHUR_FILL_SHARE of the Schur factor's
    dense block, i.e. the later terms' block of L fills in (nearly) completely.

    Both factors then do the same dense work there, which the Schur factor does with
    less overhead, so the race would only confirm it (it did on every crossed shape of
    benchmarks/factorization.py: 1.7-3.6x), at the cost of two factorizations of each
    kind and the supernodal analysis (0.13 s of a 1.1 s InstEval fit; the AMD analysis
    this also skips, 0.04 s more). AMD is not tried first: on these shapes it found the
    natural order's fill or within 0.1% of it. The choice also no longer depends on the
    machine's load, so such fits repeat bit for bit.
    """
    if natural.factor_nnz() < MEASURE_ABOVE_NNZ or not schur.applies(pattern):
        return False
    q2 = pattern.q - schur.first_columns(pattern)
    spare = schur.factor_entries(pattern) - natural.factor_nnz()
    return spare <= (1.0 - SCHUR_FILL_SHARE) * (q2 * (q2 + 1) // 2)


def fastest_factor(pattern: MPattern, Mx: np.ndarray, mode: str):
    """The analysed factor of M; with mode "measure", the fastest of the candidates.

    Which one wins depends on the structure and the BLAS: the supernodal factorization
    wins where fill makes dense blocks (crossed designs: 0.12 s against 0.28 s for
    10^4 x 10^3 crossed levels), the simplicial one on nearly diagonal patterns, and the
    Schur complement of the first term's block-diagonal block (schur.py) where the later
    terms' block fills in completely (0.039 s there). Above MEASURE_ABOVE_NNZ entries in
    L, the Schur factor is taken untimed where that block of L fills in (``schur_by_fill``);
    otherwise factorizations at the start theta decide, and the simplicial one is not timed
    where the Schur factor beats the supernodal one (pass mode "simplicial", "supernodal"
    or "schur" for bitwise reproducibility). A single term makes M block diagonal:
    "measure" then factors its blocks directly (blockdiag.py). Each candidate's memory
    is checked against the budget (memory.py) before it is factorized. Mode "classes"
    (lmer's count classes, which have no factor of M) is "measure" here: the objectives a
    classes fit's methods build (profiles, refits, Satterthwaite's, the sparse one) factor
    M as a default fit would.
    """
    if mode == "classes":
        mode = "measure"
    if mode not in FACTOR_MODES:
        raise ModelSpecError(f"factor_mode must be one of {FACTOR_MODES}, not {mode!r}")
    if mode == "measure" and len(pattern.diag_pos) == 1:
        factor = BlockDiagonalFactor(pattern.diag_pos[0], pattern.nnz)  # one term: no fill
        check_factor_fits(factor)
        return factor
    if mode == "schur":
        if not schur.applies(pattern):
            raise ModelSpecError(
                "factor_mode='schur' needs two or more random-effects terms, the first of "
                f"at most {schur.MAX_K} columns (as (1 | g) or (1 + x | g)) and the later "
                f"ones of at most {schur.MAX_COLUMNS:,} random effects in all; use "
                "factor_mode='measure'")
        _check_schur_fits(pattern)
        return schur.SchurFactor(pattern)
    natural = natural_probe(pattern)
    if mode == "measure" and schur_by_fill(pattern, natural):
        try:
            _check_schur_fits(pattern)
            return schur.SchurFactor(pattern)
        except FactorMemoryError:
            pass  # the sparse candidates may still fit
    ordering, probe = best_ordering(pattern, natural)
    del natural
    no_fill = probe.factor_nnz() <= NO_FILL_RATIO * pattern.nnz
    if mode == "measure" and (probe.factor_nnz() < MEASURE_ABOVE_NNZ or no_fill):
        # small, or L has M's own pattern (nested and single-factor designs): nothing for
        # supernodes to gain; skip the timing and stay deterministic
        check_factor_fits(probe)
        return probe
    if mode != "measure":
        factor = probe if mode == "simplicial" else SymbolicFactor(
            pattern.indptr, pattern.indices, pattern.q, mode, ordering)
        check_factor_fits(factor)
        return factor
    if schur.applies(pattern):
        quick = _schur_against_supernodal(pattern, Mx, ordering)
        if quick is not None:
            return quick
    held = [probe]
    del probe  # _faster_mode holds the only reference, so it can let the probe go
    return _faster_mode(pattern, Mx, held, ordering)


def _check_schur_fits(pattern: MPattern) -> None:
    """The memory guard of the Schur factor, before it is set up."""
    q1 = schur.first_columns(pattern)
    check_schur_fits(schur.schur_bytes(pattern), q1, pattern.q - q1, schur.b_entries(pattern))


def _time_factorization(factor, Mx: np.ndarray) -> float:
    """Seconds of one factorization of M at the values Mx (the start theta's)."""
    start = time.perf_counter()
    try:
        factor.factorize(Mx, beta=1.0)
    except CholmodNotPositiveDefiniteError:
        pass  # the start theta is always positive definite; keep timing honest anyway
    return time.perf_counter() - start


def _schur_against_supernodal(pattern: MPattern, Mx: np.ndarray, ordering: str):
    """The Schur factor if it fits the budget and factors M faster than CHOLMOD's
    supernodal code (or that one does not fit), else None (for the race of CHOLMOD's
    two modes, which then analyses the supernodal factor again).

    The simplicial factorization is not timed when the Schur factor wins (0.2 s on the
    InstEval shape): a heuristic, since a block dense enough for the Schur factor to win
    is one where the simplicial code, which wins on light fill, loses (true of every
    shape in benchmarks/factorization.py). Each candidate is timed on its second
    factorization: the first also starts the thread pool, looks up the BLAS libraries
    and touches fresh memory (a fresh process's InstEval fit: 0.08 s against 0.025 s).
    As in _faster_mode, one candidate exists at a time.
    """
    try:
        _check_schur_fits(pattern)
    except FactorMemoryError:
        return None
    supernodal = SymbolicFactor(pattern.indptr, pattern.indices, pattern.q, "supernodal",
                                ordering)
    try:
        check_factor_fits(supernodal)
        _time_factorization(supernodal, Mx)
        beat = _time_factorization(supernodal, Mx)
    except FactorMemoryError:
        beat = np.inf
    del supernodal
    candidate = schur.SchurFactor(pattern)
    _time_factorization(candidate, Mx)
    return candidate if _time_factorization(candidate, Mx) < beat else None


def _faster_mode(pattern: MPattern, Mx: np.ndarray, held: list, ordering: str) -> SymbolicFactor:
    """Of the simplicial and supernodal factors that fit the memory budget, the one whose
    factorization at the start values Mx is faster.

    ``held`` holds the analysed simplicial factor, and nothing else refers to it. Only one
    candidate exists at a time: each keeps its own copy of M and, once timed, its numeric
    factor, so holding both would double the objective's peak (on 10^5 x 10^3 crossed
    levels, 10^7 rows: 336 MiB over the objective's held 1,110). The simplicial one is
    timed first and dropped; the supernodal one is analysed and timed; if the simplicial
    one was faster, it is analysed again (the same deterministic ordering, so the same
    factor; its analysis is the cheap one).
    """
    timings, refusal = {}, None
    for candidate in ("simplicial", "supernodal"):
        factor = held.pop() if candidate == "simplicial" else SymbolicFactor(
            pattern.indptr, pattern.indices, pattern.q, candidate, ordering)
        try:
            check_factor_fits(factor)
        except FactorMemoryError as err:  # the other mode may still fit
            refusal = err
            del factor
            continue
        timings[candidate] = _time_factorization(factor, Mx)
        if candidate == "supernodal" and timings[candidate] < timings.get("simplicial", np.inf):
            return factor
        del factor
    if not timings:
        raise refusal
    return SymbolicFactor(pattern.indptr, pattern.indices, pattern.q, "simplicial", ordering)


def check_fixed_sigma(sigma) -> float | None:
    """A fixed residual SD: None, or a positive finite number (as a float)."""
    if sigma is None:
        return None
    if isinstance(sigma, (bool, np.bool_)) or not isinstance(
            sigma, (int, float, np.integer, np.floating)):
        raise ModelSpecError(f"sigma must be a positive number (the fixed residual standard "
                             f"deviation) or None to estimate it, not {sigma!r}")
    if not (np.isfinite(sigma) and sigma > 0):
        raise ModelSpecError(f"sigma must be a positive finite number (the fixed residual "
                             f"standard deviation), got {sigma!r}; pass sigma=None to "
                             "estimate it")
    return float(sigma)


def fixed_sigma_criterion(*, sigma: float, pwrss: float, ldL2: float, ldRX2: float, n: int,
                          p: int, sum_log_w: float, reml: bool) -> float:
    """-2 log-likelihood (ML) or the REML criterion with the residual SD fixed at sigma.

    With V = sigma^2 (Z Lambda Lambda' Z' + W^-1), log|V| = n log sigma^2 + ldL2 -
    sum(log w) and the quadratic form at beta-hat is pwrss / sigma^2:

        ML:   ldL2 - sum(log w) + n log(2 pi sigma^2) + pwrss / sigma^2
        REML: ldL2 + ldRX2 - sum(log w) + (n - p) log(2 pi sigma^2) + pwrss / sigma^2

    (the REML term log|X'V^-1 X| = ldRX2 - p log sigma^2, integrating beta out gives
    (2 pi)^(p/2)). Minimizing either over sigma^2 gives the profiled criteria.
    """
    dof = n - p if reml else n
    dev = ldL2 - sum_log_w + dof * (LOG_2PI + np.log(sigma**2)) + pwrss / sigma**2
    return float(dev + ldRX2) if reml else float(dev)


def fixed_sigma_unit(cp: CrossProducts, sigma: float) -> float:
    """The optimizer's extra unit for theta when sigma is fixed (1 for ordinary sizes).

    theta = sd(b) / sigma. Profiled, sigma follows the data and theta's size is set by
    the covariates (scaling.theta_units); fixed, theta also scales as (the residual scale
    of y) / sigma: a sigma of 1 for a response of order 1e4 puts theta near 1e4. The
    residual scale is sqrt(r'Wr / (n - p)) of y less its least-squares fit on X (the
    cross-products carry y that way); within 10^(+-1.5) of sigma the unit stays 1.
    """
    dof = max(cp.n - cp.p, 1)
    scale = float(np.sqrt(max(cp.XtWXy[-1, -1], 0.0) / dof))
    return power_of_ten(scale / sigma) if scale > 0 else 1.0


@dataclass(frozen=True, eq=False)
class DirectB:
    """Where the Schur factor's B = M[first term, later terms] gets its values: the pair
    blocks of the first term with each later one, congruence-scattered into B's row order
    (``pos[i]``: pair block i's positions in ``values``) instead of into M's column-major
    values and gathered back from there (two random permutations of B's entries per
    factorization: 10 of the 46 ms a factorization took at 10^6 rows of 10^4 x 10^3
    crossed levels; in B's order the scatter is sequential for a scalar first term)."""

    pos: dict
    values: np.ndarray

    @classmethod
    def of(cls, factor, pattern: MPattern, cp: CrossProducts) -> DirectB | None:
        """For a Schur factor whose B is exactly the first term's pair blocks, else None."""
        if not isinstance(factor, schur.SchurFactor):
            return None
        nb = factor.bpos.shape[0]
        in_b = np.full(pattern.nnz, -1, dtype=np.int64)
        in_b[factor.bpos] = np.arange(nb)
        pos, hits = {}, np.zeros(nb, dtype=np.int64)
        for i, (pb, at) in enumerate(zip(cp.pairs, pattern.pair_pos)):
            if pb.t != 0:
                continue
            mapped = np.where(at >= 0, in_b[np.maximum(at, 0)], -1)
            if np.any(mapped[at >= 0] < 0):
                return None
            pos[i] = np.ascontiguousarray(mapped)
            hits += np.bincount(mapped[mapped >= 0], minlength=nb)
        if not pos or not np.all(hits == 1):
            return None  # B's entries not covered once each: M's values serve
        return cls(pos, np.zeros(nb))


class LmmObjective:
    """Penalized least squares at given theta and the criterion it profiles out.

    ``sigma``, if given, fixes the residual SD: the criterion is then a function of theta
    with sigma held (``fixed_sigma_criterion``), and ``sigma()`` returns it.
    """

    def __init__(self, cp: CrossProducts, *, reml: bool, factor_mode: str = "measure",
                 sigma: float | None = None):
        self.cp = cp
        self.reml = reml
        self.fixed_sigma = check_fixed_sigma(sigma)
        self.theta_map = ThetaMap(cp.k)
        self.pattern: MPattern = build_pattern(cp)
        self._Mx = np.zeros(self.pattern.nnz)
        self._levels_at = None  # (cp, T) of the last update_levels, which stores no M
        self._RtR = None  # R_ZX'R_ZX of the last update_levels, for update_RX
        self.LtB = np.zeros_like(cp.ZtWXy)
        self.theta = self.theta_map.start
        self.T = self.theta_map.factors(self.theta)
        self.RZXy = np.zeros_like(cp.ZtWXy)
        self.Ry = np.zeros((cp.p + 1, cp.p + 1))
        self.direct = None
        self.update_M()
        self.factor = fastest_factor(self.pattern, self.Mx, factor_mode)
        perm = self.factor.perm()  # fixed by the analysis: P B = B[perm]
        self.perm = None if np.array_equal(perm, np.arange(perm.shape[0])) else perm
        self.direct = DirectB.of(self.factor, self.pattern, cp)
        # one term, M block diagonal: an evaluation is one pass over the levels
        self.by_levels = (isinstance(self.factor, BlockDiagonalFactor) and len(cp.diag) == 1
                          and cp.k[0] in LEVEL_KS and cp.p + 1 <= LEVEL_MAX_COLUMNS
                          and self.perm is None and self.direct is None)

    @property
    def Mx(self) -> np.ndarray:
        """M's values on its pattern (upper triangle, CSC). With ``DirectB`` the values of
        B are kept in B's order, and copied in here, for readers other than update_L.
        After ``update_levels``, which does not store them, a new array of the values it
        factored (its cross-products and theta, whatever was set since)."""
        if self._levels_at is not None:
            cp, T = self._levels_at
            out = np.zeros_like(self._Mx)
            _lambda.congruence_scatter(cp.diag[0], T[0], T[0], self.pattern.diag_pos[0], out)
            return out
        if self.direct is not None:
            self._Mx[self.factor.bpos] = self.direct.values
        return self._Mx

    # -- updates (mutate, return None) ------------------------------------------------
    def set_crossproducts(self, cp: CrossProducts) -> None:
        """New values of the cross-products (new weights) with the same block structure."""
        if cp.k != self.cp.k or cp.nlev != self.cp.nlev or len(cp.pairs) != len(self.cp.pairs):
            raise ValueError("cross-products with a different structure need a new objective")
        self.cp, self._RtR = cp, None
        if self.LtB.shape != cp.ZtWXy.shape:
            self.LtB = np.zeros_like(cp.ZtWXy)

    def set_theta(self, theta) -> None:
        theta = np.asarray(theta, dtype=np.float64)
        if theta.shape != (self.theta_map.n_theta,) or not np.all(np.isfinite(theta)):
            raise NumericalError("theta must be a finite vector of length "
                                 f"{self.theta_map.n_theta}", theta=np.atleast_1d(theta))
        self.theta = theta.copy()
        self.T = self.theta_map.factors(self.theta)

    def update_M(self) -> None:
        """Values of Lambda' A_ZZ Lambda on the fixed pattern, block by block (the blocks
        of B straight into B's order for the Schur factor: ``DirectB``)."""
        cp, pat, T, direct = self.cp, self.pattern, self.T, self.direct
        self._levels_at = None
        for t, D in enumerate(cp.diag):
            _lambda.congruence_scatter(D, T[t], T[t], pat.diag_pos[t], self._Mx)
        for i, (pb, pos) in enumerate(zip(cp.pairs, pat.pair_pos)):
            if direct is not None and i in direct.pos:
                _lambda.congruence_scatter(pb.A, T[pb.t], T[pb.s], direct.pos[i], direct.values)
            else:
                _lambda.congruence_scatter(pb.A, T[pb.t], T[pb.s], pos, self._Mx)

    def update_L(self) -> None:
        """P (Lambda' A_ZZ Lambda + I) P' = L L'."""
        self._RtR = None
        self.update_M()
        try:
            if self.direct is None:
                self.factor.factorize(self._Mx, beta=1.0)
            else:  # B's values go to the factor directly, not through M's
                self.factor.factorize(self._Mx, beta=1.0, b_values=self.direct.values)
        except CholmodNotPositiveDefiniteError as err:
            raise NumericalError(f"Lambda'Z'WZ Lambda + I is not positive definite "
                                 f"(column {err.column})", theta=self.theta) from None

    def update_RZX(self) -> None:
        """[R_ZX c_u] = L^-1 P Lambda' Z'W[X y]."""
        self._RtR = None
        offs = self.cp.offsets
        for t, T in enumerate(self.T):
            blk = slice(offs[t], offs[t + 1])
            _lambda.lambdat_apply(T, self.cp.ZtWXy[blk], self.LtB[blk])
        # P applied as a row gather: one CHOLMOD solve (and its copies) instead of two
        PLtB = self.LtB if self.perm is None else self.LtB[self.perm]
        self.RZXy = self.factor.solve("L", PLtB)

    def update_L_RZX(self) -> None:
        """update_L, then update_RZX: for a single term (``by_levels``) update_levels."""
        if self.by_levels:
            self.update_levels()
        else:
            self.update_L()
            self.update_RZX()

    def update_levels(self) -> None:
        """update_L and update_RZX of a single term's objective (``by_levels``) in one pass
        over its levels (``BlockDiagonalFactor.factorize_levels``), which also leaves
        R_ZX'R_ZX for update_RX: the separate updates each pass over arrays of nlev
        blocks, which took 70-90 ms an evaluation for 10^6 levels of k = 2. M's values are
        not stored (``Mx`` makes them when read), nor is LtB, the scratch of update_RZX."""
        cp, self._RtR = self.cp, None
        RZXy = self.RZXy  # written in place, as the factor's L (a fresh q x (p + 1) array
        if RZXy.shape != cp.ZtWXy.shape or not RZXy.flags.c_contiguous:  # faulted in
            RZXy = np.empty_like(cp.ZtWXy)  # its pages each time: 10 of 29 ms at 10^6 x 2)
        self._levels_at = (cp, self.T)  # Mx: the M of this factorization, even a failed one
        try:
            G = self.factor.factorize_levels(cp.diag[0], self.T[0], cp.ZtWXy, 1.0, RZXy)
        except CholmodNotPositiveDefiniteError as err:
            raise NumericalError(f"Lambda'Z'WZ Lambda + I is not positive definite "
                                 f"(column {err.column})", theta=self.theta) from None
        self.RZXy, self._RtR = RZXy, G

    def update_RX(self) -> None:
        """R'R = [X y]'W[X y] - [R_ZX c_u]'[R_ZX c_u]: R_X, c_b and sqrt(pwrss) in one factor
        (R_ZX'R_ZX as update_levels summed it, if it made R_ZX)."""
        RtR = self._RtR if self._RtR is not None else self.RZXy.T @ self.RZXy
        S = self.cp.XtWXy - RtR
        try:
            self.Ry = scipy.linalg.cholesky(S, lower=False)
        except np.linalg.LinAlgError:
            self.Ry = self._factor_exact_fit(S)

    def _factor_exact_fit(self, S: np.ndarray) -> np.ndarray:
        """The factor when only its last pivot (pwrss) fails: the response is fitted exactly
        at this theta, pwrss = 0 (PIRLS needs R_X and c_b only). A failing R_X is an error."""
        p = self.cp.p
        try:
            RX = scipy.linalg.cholesky(S[:p, :p], lower=False)
        except np.linalg.LinAlgError:
            raise NumericalError("the fixed-effects columns are (numerically) collinear given "
                                 "the random effects: X'WX - R_ZX'R_ZX is not positive "
                                 "definite; remove fixed effects that the random-effects "
                                 "terms reproduce, or rescale columns of very different "
                                 "sizes", theta=self.theta) from None
        Ry = np.zeros_like(S)
        Ry[:p, :p] = RX
        Ry[:p, p] = scipy.linalg.solve_triangular(RX, S[:p, p], trans="T")
        return Ry

    def update(self, theta) -> None:
        self.set_theta(theta)
        self.update_L_RZX()
        self.update_RX()

    # -- queries (no side effects) ----------------------------------------------------
    @property
    def pwrss(self) -> float:
        return float(self.Ry[-1, -1] ** 2)

    @property
    def ldL2(self) -> float:
        return self.factor.logdet()

    @property
    def ldRX2(self) -> float:
        return float(2.0 * np.log(np.abs(np.diag(self.Ry)[:-1])).sum())

    def objective(self) -> float:
        """-2 log-likelihood (ML) or the REML criterion at the current theta."""
        n, p = self.cp.n, self.cp.p
        if self.fixed_sigma is not None:
            return fixed_sigma_criterion(sigma=self.fixed_sigma, pwrss=self.pwrss,
                                         ldL2=self.ldL2, ldRX2=self.ldRX2, n=n, p=p,
                                         sum_log_w=self.cp.sum_log_w, reml=self.reml)
        dof = n - p if self.reml else n
        pwrss = self.pwrss
        if not pwrss > 0.0:
            raise NumericalError("the penalized residual sum of squares is 0: the fixed and "
                                 "random effects fit the response exactly, so the residual "
                                 "variance cannot be estimated; check that the response is "
                                 "not computed from the predictors", theta=self.theta)
        dev = self.ldL2 + dof * (1.0 + LOG_2PI + np.log(pwrss / dof)) - self.cp.sum_log_w
        return float(dev + self.ldRX2) if self.reml else float(dev)

    def __call__(self, theta) -> float:
        self.update(theta)
        return self.objective()

    def gradient(self) -> np.ndarray:
        """d objective() / d theta at the current theta (gradient.py), n-free."""
        from .gradient import criterion_gradient

        return criterion_gradient(self)

    def value_and_gradient(self, theta) -> tuple[float, np.ndarray]:
        """The criterion at theta and its gradient (one update)."""
        self.update(theta)
        return self.objective(), self.gradient()

    def check_residual_left(self) -> None:
        """Refuse an optimum whose pwrss is below what the downdate of y'Wy resolves.

        pwrss is found as y'Wy minus the fitted part, to a precision of eps y'Wy; a fit
        that leaves less than RESIDUAL_FLOOR of y'Wy (y taken from the least-squares fit
        on X, crossprod.py) is an exact fit by the random effects, whose criterion falls
        without bound as theta grows: BOBYQA stops where rounding hides the slope. With
        sigma fixed the criterion is bounded (pwrss / sigma^2 >= 0 while log|L|^2 grows
        with theta), and an exact fit is an ordinary optimum.
        """
        if self.fixed_sigma is not None:
            return
        yy = float(self.cp.XtWXy[-1, -1])
        if self.pwrss < RESIDUAL_FLOOR * yy:
            raise NumericalError(
                f"the random effects fit the response almost exactly (residual sum of "
                f"squares {self.pwrss:.3g} of {yy:.3g} after the fixed effects): the "
                "residual variance is at the limit of double precision and the maximum of "
                "the likelihood lies at infinite theta; check that the response is not "
                "computed from the grouping factors, or drop the term", theta=self.theta)

    def beta(self) -> np.ndarray:
        """R_X beta = c_b, plus the least-squares coefficients taken out of y (crossprod.py)."""
        shift = self.cp.beta_shift
        return self._beta_fitted() if shift is None else self._beta_fitted() + shift

    def _beta_fitted(self) -> np.ndarray:
        """R_X beta = c_b: the fixed effects of the response in the cross-products."""
        p = self.cp.p
        return scipy.linalg.solve_triangular(self.Ry[:p, :p], self.Ry[:p, p])

    def sigma(self) -> float:
        """The residual SD: the fixed one, else sqrt(pwrss / (n or n - p))."""
        if self.fixed_sigma is not None:
            return self.fixed_sigma
        dof = self.cp.n - self.cp.p if self.reml else self.cp.n
        return float(np.sqrt(self.pwrss / dof))

    def u(self) -> np.ndarray:
        """u = P' L'^-1 (c_u - R_ZX beta)."""
        p = self.cp.p
        v = self.RZXy[:, p] - self.RZXy[:, :p] @ self._beta_fitted()
        return self.factor.solve("Pt", self.factor.solve("Lt", v))

    def lambda_times(self, u: np.ndarray) -> np.ndarray:
        """b = Lambda u, term by term."""
        b = np.empty_like(u)
        offs = self.cp.offsets
        for t, T in enumerate(self.T):
            blk = slice(offs[t], offs[t + 1])
            _lambda.lambda_apply(T, u[blk].reshape(-1, 1), b[blk].reshape(-1, 1))
        return b

    def vcov_unscaled(self) -> np.ndarray:
        """R_X^-1 R_X^-T (vcov(beta) / sigma^2)."""
        p = self.cp.p
        Rinv = scipy.linalg.solve_triangular(self.Ry[:p, :p], np.eye(p))
        return Rinv @ Rinv.T
