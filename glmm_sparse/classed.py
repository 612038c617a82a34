"""The LMM criterion with the first term eliminated exactly, through count classes.

Fourth stage, an alternative to objective.py (... -> cross-products -> [this] ->
optimize -> results) for crossed designs whose first term (lme4's order: most levels)
is a scalar ``(1 | g1)``. There M = Lambda'Z'WZ Lambda + I has g1's block diagonal, but
Z1'WZ2 couples every g1 level with the g2 levels it meets; at 10^6 x 10^3 crossed levels
that is ~10^8 entries in M and in L. Eliminating g1 first leaves a dense matrix of the
size of the other terms, and g1's diagonal only enters through a few distinct values.

The math (DESIGN.md notation). Split Z = [Z0 Z2]: Z0 the first term's nlev0 columns, Z2
the q2 columns of all other terms; r is the response with its least-squares fit on X
taken out (crossprod.response_matrix). For level i of the first term let

    d_i = (Z0'WZ0)_ii                     (its row count when unweighted)
    a_i = [ (Z0'WZ2)_i , (Z0'W[X r])_i ]  (length m = q2 + p + 1; B_i and F_i)

With Lambda = blockdiag(theta0 I, Lambda2) and Lt = blockdiag(Lambda2, I_{p+1}), the
augmented matrix [[M, Lambda'Z'W[X r]], [., [X r]'W[X r]]] has the diagonal block
D = diag(theta0^2 d_i + 1) for u0 and the rows theta0 a_i' Lt coupling u0 to the rest.
Its Schur complement after u0 is the dense m x m matrix

    C(theta) = Lt' K Lt + blockdiag(I_q2, 0) - theta0^2 Lt' (sum_i a_i a_i' / D_i) Lt

with K the (Z2, X, r) block of the augmented cross-products. Levels with equal d_i
(exact float equality) form a CLASS c with value delta_c and N_c levels, and
G_c = sum_{i in c} a_i a_i' is summed once, so

    sum_i a_i a_i' / D_i = sum_c G_c / (theta0^2 delta_c + 1)

costs n_classes additions of m x m matrices per evaluation (their packed upper
triangles: G and K are stored that way), nothing of size nlev0. With
U'U = C (upper Cholesky), the trailing (p+1) x (p+1) block of U is the Cholesky factor
of the same Schur complement that objective.LmmObjective factors, so it IS Ry (R_X,
c_b, sqrt(pwrss)), and

    log|M| = sum_c N_c log(theta0^2 delta_c + 1) + 2 sum_{j < q2} log U_jj.

The criterion is then LmmObjective's. At the optimum (beta the fitted part, as in
LmmObjective._beta_fitted; U11, U12 the leading blocks of U):

    U11 u2 = U12[:, r] - U12[:, X] beta
    u0_i   = theta0 (F_i,r - F_i,X beta - (B Lambda2 u2)_i) / D_i

and the conditional variances (condvar.py) come from S22 = U11'U11, the Schur
complement of M's first block: (M^-1)_22 = S22^-1, and for a level i of the first term
(M^-1)_ii = 1/D_i + theta0^2 / D_i^2 v_i' S22^-1 v_i with v_i = Lambda2' B_i'.

``B = Z0'WZ2`` (CSR, rows = levels of the first term) is needed to build the G stack
and, after the fit, for u0 and the conditional variances; the evaluations use only
``ClassSums``. ``b_from_pairs`` makes B from in-memory cross-products,
``levelrows.b_from_rows`` from the rows' level codes (what a streamed pass hands over).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.sparse

from ._core import _classed, _lambda
from .blas import one_blas_thread
from .crossprod import CrossProducts, PairBlocks, accumulate
from .errors import ModelSpecError, NumericalError
from .levelrows import LevelRows, as_level_rows, b_from_rows, smallest_unsigned
from .memory import format_bytes, memory_budget
from .objective import LmmObjective, ThetaMap, check_fixed_sigma
from .parallel import n_threads, run_all
from .tilechol import cholesky_lower

log = logging.getLogger(__name__)

MAX_DENSE_COLUMNS = 5000  # m above which C (m x m, dense, Cholesky per evaluation) is refused
MIN_LEVELS_PER_CLASS = 10  # classes must be this much fewer than the first term's levels
DENSE_COPIES = 6  # m x m arrays besides the G stack: K and the class sum (packed), C, U,
#                  and the two halves of the Lambda congruence


# -- B = Z0'WZ2 from in-memory cross-products (levelrows.py: from rows) -------------
def b_from_pairs(cp: CrossProducts) -> LevelRows:
    """B = Z0'WZ2 from the level-pair blocks of the first term (cp.pairs with t == 0)."""
    _check_structure(cp)
    nlev0, offs = cp.nlev[0], cp.offsets
    rows, cols, vals = [], [], []
    for pb in cp.pairs:
        if pb.t != 0:
            continue
        ks = cp.k[pb.s]
        first = offs[pb.s] - offs[1] + np.asarray(pb.lev_s, dtype=np.int64) * ks
        rows.append(np.repeat(np.asarray(pb.lev_t, dtype=np.int64), ks))
        cols.append((first[:, None] + np.arange(ks)).ravel())
        vals.append(pb.A[:, 0, :].ravel())
    if not rows:  # no row meets two terms (no rows at all)
        rows, cols, vals = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0)]
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    order = np.lexsort((cols, rows))
    if np.any((np.diff(rows[order]) == 0) & (np.diff(cols[order]) == 0)):
        raise ValueError("cp.pairs holds a level pair twice: merge the blocks first")
    indptr = np.zeros(nlev0 + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=nlev0), out=indptr[1:])
    return LevelRows(indptr, cols[order].astype(np.int32), np.concatenate(vals)[order],
                     cp.q - offs[1])


# -- the n-free sums ----------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class ClassSums:
    """What the classed criterion needs, n-free and picklable.

    The attributes results and streaming read from an objective's ``cp`` are here too
    (k, nlev, offsets, q, p, n, XtWXy, sum_log_w, beta_shift).
    """

    k: tuple[int, ...]
    nlev: tuple[int, ...]
    delta: np.ndarray  # (n_classes,) the distinct d_i, increasing
    count: np.ndarray  # int64 (n_classes,) N_c, levels per class
    level_class: np.ndarray  # int32 (nlev0,) class of each level of the first term
    # sum of a_i a_i' over each class (m x m), in two parts (_classed.add_class_grams):
    Gz: np.ndarray  # (n_classes, q2 (q2 + 1) / 2) its Z2 block, packed; gram_dtype
    Gr: np.ndarray  # (n_classes, q2 (p + 1) + (p + 1) (p + 2) / 2) the rest, float64
    K: np.ndarray  # (m (m + 1) / 2,) [Z2 X r]'W[Z2 X r], packed
    F: np.ndarray  # (nlev0, p + 1) Z0'W[X r]
    XtWXy: np.ndarray
    n: int
    sum_log_w: float
    beta_shift: np.ndarray | None = None

    @property
    def p(self) -> int:
        return self.XtWXy.shape[0] - 1

    @property
    def q(self) -> int:
        return int(sum(k * nl for k, nl in zip(self.k, self.nlev)))

    @property
    def q2(self) -> int:
        return self.q - self.nlev[0]

    @property
    def m(self) -> int:
        return self.q2 + self.p + 1

    @property
    def n_classes(self) -> int:
        return self.delta.shape[0]

    @property
    def offsets(self) -> np.ndarray:
        """First column of each term in Z (and in u, b)."""
        sizes = [k * nl for k, nl in zip(self.k, self.nlev)]
        return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

    def d(self) -> np.ndarray:
        """d_i of each level of the first term."""
        return self.delta[self.level_class]

    @property
    def G(self) -> np.ndarray:
        """(n_classes, m (m + 1) / 2) the class sums as packed float64 triangles (assembled
        on each call, the size of the float64 stack: for tests and inspection)."""
        out = np.empty((self.n_classes, self.m * (self.m + 1) // 2))
        zero = np.zeros_like(self.K)
        for c in range(self.n_classes):
            one = np.zeros(self.n_classes)
            one[c] = 1.0
            _classed.combine_classes(one, self.Gz, self.Gr, zero, 0, self.m, out[c])
        return out


def level_classes(cp: CrossProducts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(delta, count, level_class): the distinct values d_c of the first term's diagonal
    (exact equality), how many levels hold each, and each level's class."""
    delta, level_class, count = np.unique(cp.diag[0][:, 0, 0], return_inverse=True,
                                          return_counts=True)
    return delta, count.astype(np.int64), level_class.astype(np.int32).ravel()


def class_sums(cp: CrossProducts, B) -> ClassSums:
    """The ClassSums of cross-products cp, B = Z0'WZ2 (``b_from_pairs``, ``b_from_rows``)."""
    _check_structure(cp)
    nlev0, p1 = cp.nlev[0], cp.p + 1
    B = as_level_rows(B, nlev0, cp.q - nlev0)
    delta, count, level_class = level_classes(cp)
    F = np.ascontiguousarray(cp.ZtWXy[:nlev0])
    q2, n_classes = B.ncols, delta.shape[0]
    Gz = np.zeros((n_classes, q2 * (q2 + 1) // 2), dtype=gram_dtype(B, level_class, n_classes))
    Gr = np.zeros((n_classes, q2 * p1 + p1 * (p1 + 1) // 2))
    order = np.argsort(level_class, kind="stable").astype(np.int64)
    class_start = np.concatenate([[0], np.cumsum(count)]).astype(np.int64)
    work = (np.diff(B.indptr) + p1).astype(np.float64) ** 2
    ranges = _balanced_ranges(np.bincount(level_class, weights=work, minlength=n_classes))
    run_all([lambda lo=lo, hi=hi: _classed.add_class_grams(
        B.indptr, B.indices, B.data, F, order, class_start, lo, hi, Gz, Gr)
        for lo, hi in ranges], B.nnz)
    return ClassSums(k=tuple(cp.k), nlev=tuple(cp.nlev), delta=delta, count=count,
                     level_class=level_class, Gz=Gz, Gr=Gr, K=packed(rest_crossproducts(cp)),
                     F=F, XtWXy=cp.XtWXy, n=cp.n, sum_log_w=cp.sum_log_w,
                     beta_shift=cp.beta_shift)


def gram_dtype(B: LevelRows, level_class: np.ndarray, n_classes: int) -> np.dtype:
    """The smallest type holding the Z2 block of every class sum exactly. Unweighted
    intercept terms make B's values counts of rows, so the block's entries are whole
    numbers, at most sum over the class's levels of (largest value of the level's row)^2:
    uint8, uint16 or uint32 when that fits, else (or for other values) float64. Each
    evaluation reads the whole block (combine_classes): a quarter of the float64 bytes
    for uint16. Unsigned values (``count_dtype``'s counts) are whole and >= 0 as they
    are: no check, whose float64 copy of B's values (0.76 GB at 95 million entries) set
    the 10^8-row crossed fit's peak."""
    data = B.data
    if data.dtype.kind != "u" and data.size and (
            data.min() < 0 or not np.array_equal(data, np.rint(data))):
        return np.dtype(np.float64)
    filled = np.diff(B.indptr) > 0
    row_max = np.zeros(B.nrows)
    if data.size:
        row_max[filled] = np.maximum.reduceat(data, B.indptr[:-1][filled])
    bound = np.bincount(level_class, weights=row_max ** 2, minlength=n_classes).max(initial=0)
    return smallest_unsigned(bound, (np.uint8, np.uint16, np.uint32))


def packed(A: np.ndarray) -> np.ndarray:
    """The row-major packed upper triangle of a square matrix (np.triu_indices order)."""
    return np.ascontiguousarray(A[np.triu_indices(A.shape[0])])


def unpacked(P: np.ndarray, m: int) -> np.ndarray:
    """The symmetric m x m matrix whose packed upper triangle is P (``packed``)."""
    out = np.empty((m, m))
    _classed.unpack_symmetric(np.ascontiguousarray(P, dtype=np.float64), out)
    return out


def _balanced_ranges(work: np.ndarray) -> list[tuple[int, int]]:
    """Contiguous ranges of items, one per thread, of about equal total work. The split
    only decides which thread makes which output: the outputs do not depend on it."""
    if work.shape[0] == 0:
        return []
    parts = min(n_threads(), work.shape[0])
    cum = np.cumsum(work)
    cuts = np.searchsorted(cum, cum[-1] * np.arange(1, parts) / parts, side="right")
    bounds = np.unique(np.concatenate([[0], cuts, [work.shape[0]]]).astype(np.int64))
    return [(int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:])]


def rest_crossproducts(cp: CrossProducts) -> np.ndarray:
    """K = [Z2 X r]'W[Z2 X r], dense m x m: Z2'WZ2 from the diagonal blocks of the terms
    after the first and their level-pair blocks, Z2'W[X r] and [X r]'W[X r]."""
    q0, q2 = cp.nlev[0], cp.q - cp.nlev[0]
    offs = cp.offsets - q0
    K = np.zeros((q2 + cp.p + 1, q2 + cp.p + 1))
    for t in range(1, len(cp.k)):
        k = cp.k[t]
        idx = offs[t] + np.arange(cp.nlev[t])[:, None] * k + np.arange(k)
        K[idx[:, :, None], idx[:, None, :]] = cp.diag[t]
    for pb in cp.pairs:
        if pb.t == 0:
            continue
        kt, ks = cp.k[pb.t], cp.k[pb.s]
        rows = offs[pb.t] + np.asarray(pb.lev_t, dtype=np.int64)[:, None] * kt + np.arange(kt)
        cols = offs[pb.s] + np.asarray(pb.lev_s, dtype=np.int64)[:, None] * ks + np.arange(ks)
        K[rows[:, :, None], cols[:, None, :]] = pb.A
        K[cols[:, :, None], rows[:, None, :]] = np.swapaxes(pb.A, 1, 2)
    K[:q2, q2:] = cp.ZtWXy[q0:]
    K[q2:, :q2] = cp.ZtWXy[q0:].T
    K[q2:, q2:] = cp.XtWXy
    return K


# -- when the route applies ---------------------------------------------------------------
def _structure_refusal(cp) -> str | None:
    return (terms_refusal(cp.k, cp.nlev[0])
            or size_refusal(cp.q - cp.nlev[0] + cp.p + 1))


def terms_refusal(ks, nlev0: int, first: str | None = None) -> str | None:
    """Why terms with these columns per level (lme4's order; the first, ``first``, has
    nlev0 levels) leave nothing to eliminate through the classes, or None."""
    if len(ks) < 2:
        return ("a single random-effects term: M is block diagonal already (objective.py "
                "factors it block by block), there is nothing to eliminate")
    if ks[0] != 1:
        name = "" if first is None else f"{first}, "
        return (f"the first term (lme4's order: most levels, {name}{nlev0:,}) has {ks[0]} "
                "columns per level; the count classes eliminate a scalar term (1 | g) only")
    return None


def size_refusal(m: int) -> str | None:
    """Why m columns left after the first term are too many for a dense C, or None."""
    if m > MAX_DENSE_COLUMNS:
        return (f"the terms after the first and the fixed effects make m = {m:,} columns: "
                f"above {MAX_DENSE_COLUMNS:,}, a dense m x m Cholesky per evaluation costs "
                "more than the sparse factor")
    return None


def _check_structure(cp) -> None:
    reason = _structure_refusal(cp)
    if reason is not None:
        raise ModelSpecError(f"the count-class route does not apply: {reason}")


def classes_apply(cp: CrossProducts) -> str | None:
    """None when ``ClassedObjective`` suits cp, else the reason it does not.

    Refused: fewer than two terms, a first term that is not scalar, more than
    MAX_DENSE_COLUMNS columns left after eliminating it, no saving (fewer than
    MIN_LEVELS_PER_CLASS levels per class, e.g. weights that make every level's sum
    distinct), or a G stack and dense matrices larger than the memory budget (memory.py).
    """
    reason = _structure_refusal(cp)
    if reason is not None:
        return reason
    n_classes = np.unique(cp.diag[0][:, 0, 0]).shape[0]
    if n_classes * MIN_LEVELS_PER_CLASS > cp.nlev[0]:
        return (f"no saving: the first term's {cp.nlev[0]:,} levels take {n_classes:,} "
                f"distinct diagonal values (classes); the route needs at least "
                f"{MIN_LEVELS_PER_CLASS} levels per class (weights that differ per row make "
                "every level's sum distinct)")
    m = cp.q - cp.nlev[0] + cp.p + 1
    # float64 class sums: an upper bound (counts of rows take 1-4 bytes, gram_dtype)
    need = 8 * (n_classes * m * (m + 1) // 2 + DENSE_COPIES * m * m)
    budget = memory_budget()
    if need > budget:
        return (f"the class sums need up to {format_bytes(need)} ({n_classes:,} classes of "
                f"{m:,} x {m:,} dense symmetric matrices), above the memory budget of "
                f"{format_bytes(budget)}")
    return None


# -- the objective ------------------------------------------------------------------------
class ClassedObjective:
    """The criterion of objective.LmmObjective, with the first term eliminated through its
    count classes: one dense m x m Cholesky per evaluation.

    The same interface as LmmObjective for optimize.py and results.py; the queries that
    read only Ry, the log-determinant and the cross-products are LmmObjective's own.
    ``B`` (Z0'WZ2) is needed for ``u`` and ``condvar_blocks`` only.
    """

    def __init__(self, sums: ClassSums, *, reml: bool, sigma: float | None = None, B=None):
        self.cp = sums
        self.reml = reml
        self.fixed_sigma = check_fixed_sigma(sigma)
        self.theta_map = ThetaMap(sums.k)
        self.B = None if B is None else as_level_rows(B, sums.nlev[0], sums.q2)
        self.source_cp = None  # the CrossProducts it was built from, if in memory
        self.theta = self.theta_map.start
        self.T = self.theta_map.factors(self.theta)
        self.C = np.zeros((sums.m, sums.m))
        self.U = np.zeros((sums.m, sums.m))
        self._H = np.empty_like(sums.K)  # the packed class sum
        # rows of the packed triangle per thread for combine_classes (row r: m - r entries)
        self._rows = _balanced_ranges(np.arange(sums.m, 0, -1, dtype=np.float64))
        self.Ry = np.zeros((sums.p + 1, sums.p + 1))

    @classmethod
    def from_crossproducts(cls, cp: CrossProducts, *, reml: bool,
                           sigma: float | None = None) -> "ClassedObjective":
        """The objective of in-memory cross-products (B from their level-pair blocks)."""
        B = b_from_pairs(cp)
        obj = cls(class_sums(cp, B), reml=reml, sigma=sigma, B=B)
        obj.source_cp = cp  # for the fit's methods that need the sparse route (context.py)
        return obj

    # -- updates (mutate, return None) ------------------------------------------------
    set_theta = LmmObjective.set_theta

    @property
    def theta0(self) -> float:
        return float(self.T[0][0, 0])

    def update_C(self) -> None:
        """C = Lt'(K - theta0^2 sum_c G_c / (theta0^2 delta_c + 1)) Lt + blockdiag(I, 0)."""
        s, H = self.cp, self._H
        t2 = self.theta0 ** 2
        v = -t2 / (t2 * s.delta + 1.0)
        run_all([lambda lo=lo, hi=hi: _classed.combine_classes(v, s.Gz, s.Gr, s.K, lo, hi, H)
                 for lo, hi in self._rows], s.Gz.size)  # one pass over the class sums
        _classed.unpack_symmetric(H, self.C)
        self.C = self._lt_congruence(self.C)
        self.C[np.diag_indices(s.q2)] += 1.0

    def _lt_congruence(self, A: np.ndarray) -> np.ndarray:
        """Lt' A Lt for symmetric A: Lambda2' on the row blocks, twice around a transpose."""
        half = self._by_rows(_lambda.lambdat_apply, A)
        return self._by_rows(_lambda.lambdat_apply, half.T)

    def _by_rows(self, kernel, A: np.ndarray) -> np.ndarray:
        """``kernel`` ((I (x) T_t) or its transpose) on the q2 leading rows of A, term by
        term; the remaining p + 1 rows copied."""
        A = np.ascontiguousarray(A)
        out = np.empty_like(A)
        offs = self.cp.offsets - self.cp.nlev[0]
        for t in range(1, len(self.T)):
            blk = slice(offs[t], offs[t + 1])
            kernel(self.T[t], A[blk], out[blk])
        out[offs[-1]:] = A[offs[-1]:]
        return out

    def update_U(self) -> None:
        """U'U = C (upper Cholesky; below its diagonal U holds C's values, which the
        triangular solves do not read); Ry is its trailing (p+1) x (p+1) block.

        C's lower triangle is factored (C is symmetric to rounding, ~1e-19 relative;
        the fallback for an exact fit reads its upper one)."""
        S = self.C.copy()
        if cholesky_lower(S) == 0:  # S's lower triangle: L = U', by tiles on both cores
            self.U = S.T
        elif not np.all(np.isfinite(self.C)):
            raise NumericalError("Lambda'Z'WZ Lambda + I (the count classes' C) holds values "
                                 "that are not finite numbers; rescale the response or the "
                                 "random-effects columns", theta=self.theta)
        else:
            self.U = self._factor_exact_fit(self.C)
        q2 = self.cp.q2
        self.Ry = np.triu(self.U[q2:, q2:])

    def _factor_exact_fit(self, C: np.ndarray) -> np.ndarray:
        """U when only its last pivot (pwrss) fails (an exact fit: pwrss = 0), as
        LmmObjective._factor_exact_fit; a failing leading block is an error."""
        q2, m = self.cp.q2, self.cp.m
        try:
            U1 = scipy.linalg.cholesky(C[:m - 1, :m - 1], lower=False)
        except np.linalg.LinAlgError:
            try:
                scipy.linalg.cholesky(C[:q2, :q2], lower=False)
            except np.linalg.LinAlgError:
                raise NumericalError("Lambda'Z'WZ Lambda + I is not positive definite (its "
                                     "Schur complement after the first term)",
                                     theta=self.theta) from None
            raise NumericalError("the fixed-effects columns are (numerically) collinear given "
                                 "the random effects: X'WX - R_ZX'R_ZX is not positive "
                                 "definite; remove fixed effects that the random-effects "
                                 "terms reproduce, or rescale columns of very different "
                                 "sizes", theta=self.theta) from None
        U = np.zeros_like(C)
        U[:m - 1, :m - 1] = U1
        U[:m - 1, m - 1] = scipy.linalg.solve_triangular(U1, C[:m - 1, m - 1], trans="T")
        return U

    def update(self, theta) -> None:
        """C and U at theta, the BLAS on one thread (blas.py: its threads and the fit's
        own compete for the cores; measured faster on one)."""
        self.set_theta(theta)
        with one_blas_thread():
            self.update_C()
            self.update_U()

    # -- queries (no side effects) ----------------------------------------------------
    pwrss = LmmObjective.pwrss
    ldRX2 = LmmObjective.ldRX2
    objective = LmmObjective.objective
    __call__ = LmmObjective.__call__
    check_residual_left = LmmObjective.check_residual_left
    beta = LmmObjective.beta
    _beta_fitted = LmmObjective._beta_fitted
    sigma = LmmObjective.sigma
    lambda_times = LmmObjective.lambda_times
    vcov_unscaled = LmmObjective.vcov_unscaled

    @property
    def ldL2(self) -> float:
        """log|M| = sum_c N_c log(theta0^2 delta_c + 1) + log|S22|."""
        s = self.cp
        first = float(np.dot(s.count, np.log1p(self.theta0 ** 2 * s.delta)))
        return first + float(2.0 * np.log(np.diag(self.U)[:s.q2]).sum())

    def _D(self) -> np.ndarray:
        """D_i = theta0^2 d_i + 1 of each level of the first term."""
        return self.theta0 ** 2 * self.cp.d() + 1.0

    def _require_B(self, what: str) -> LevelRows:
        if self.B is None:
            raise ModelSpecError(f"{what} needs B = Z0'WZ2 (the first term's level rows): "
                                 "pass B= to ClassedObjective (b_from_pairs or b_from_rows)")
        return self.B

    def u(self) -> np.ndarray:
        """The conditional modes [u0, u2]: U11 u2 = U12 [-beta; 1], then u0 from u2."""
        B = self._require_B("u()")
        s, q2, p = self.cp, self.cp.q2, self.cp.p
        beta = self._beta_fitted()
        U11 = self.U[:q2, :q2]
        u2 = scipy.linalg.solve_triangular(U11, self.U[:q2, q2 + p] - self.U[:q2, q2:q2 + p] @ beta)
        Bb = np.empty(s.nlev[0])
        _classed.csr_times(B.indptr, B.indices, B.data, self._lambda2(u2[:, None])[:, 0], Bb)
        h0 = s.F[:, p] - s.F[:, :p] @ beta
        u0 = self.theta0 * (h0 - Bb) / self._D()
        return np.concatenate([u0, u2])

    def _lambda2(self, X: np.ndarray) -> np.ndarray:
        """Lambda2 X for X with q2 rows."""
        return self._by_rows(_lambda.lambda_apply, X)

    def condvar_blocks(self, sigma: float) -> list[np.ndarray]:
        """Per term, (nlev, k, k): sigma^2 T_t (M^-1)_block T_t' (as condvar.condvar_blocks)."""
        B = self._require_B("condvar_blocks() (the conditional variances)")
        s, q2 = self.cp, self.cp.q2
        Rinv = scipy.linalg.solve_triangular(self.U[:q2, :q2], np.eye(q2))
        S22inv = Rinv @ Rinv.T  # (M^-1)_22
        Q = self._lambda2(self._lambda2(S22inv).T)  # Lambda2 S22^-1 Lambda2'
        quad = np.empty(s.nlev[0])
        run_all([lambda lo=lo, hi=hi: _classed.row_quadratic_forms(
            B.indptr, B.indices, B.data, Q, lo, hi, quad)
            for lo, hi in _balanced_ranges(np.diff(B.indptr).astype(np.float64) ** 2)], B.nnz)
        D, t2 = self._D(), self.theta0 ** 2
        minv0 = 1.0 / D + t2 / D ** 2 * quad
        out = [(sigma ** 2 * t2 * minv0).reshape(-1, 1, 1)]
        offs = s.offsets - s.nlev[0]
        for t in range(1, len(s.k)):
            k, T = s.k[t], self.T[t]
            idx = offs[t] + np.arange(s.nlev[t])[:, None] * k + np.arange(k)
            blocks = S22inv[idx[:, :, None], idx[:, None, :]]
            out.append(sigma ** 2 * np.einsum("ij,ajk,lk->ail", T, blocks, T))
        return out


# -- which route a fit takes --------------------------------------------------------------
def classes_pay(cp: CrossProducts, B: LevelRows | None = None) -> bool:
    """Whether an evaluation through the classes does less work than the sparse factor.

    Per evaluation the classes sum n_classes packed m x m matrices (n_classes m (m + 1) / 2
    multiply-adds); the sparse factor's elimination of the first term updates the later
    terms' block by every first-term level's partners (the sum of nnz(B_i)^2). Both then
    factor the same dense trailing block, so these two counts decide. On 10^4 x 10^3
    crossed levels with ~100 rows per level: 3.7e7 against 9e7 (the classes; measured 2.6x
    faster per evaluation); on the InstEval shape (2,972 students rating ~20 lecturers
    each) the sparse updates are 50 times cheaper, and it keeps the sparse factor.
    """
    nlev0, offs = cp.nlev[0], cp.offsets
    if B is not None:  # B = Z0'WZ2 given (a streamed pass skips the first term's pairs)
        partners = np.diff(B.indptr).astype(np.float64)
    else:
        partners = np.zeros(nlev0)
        for pb in cp.pairs:
            if pb.t == 0:
                partners += cp.k[pb.s] * np.bincount(np.asarray(pb.lev_t, dtype=np.int64),
                                                     minlength=nlev0)
    partners += cp.p + 1
    m = int(cp.q - offs[1]) + cp.p + 1
    n_classes = np.unique(cp.diag[0][:, 0, 0]).shape[0]
    return n_classes * m * (m + 1) / 2 < float(partners @ partners)


NEEDS_GRADIENT = "the optimizer needs the criterion's gradient, which this route does not give"


def classes_refused(reason: str) -> ModelSpecError:
    """The error of ``factor_mode="classes"`` where the route does not apply."""
    return ModelSpecError(f"factor_mode='classes' does not apply to this model: {reason}")


def takes_classes(cp: CrossProducts, factor_mode: str) -> bool:
    """Whether an LMM on cp is fitted through the count classes: always with
    ``factor_mode="classes"`` (refused, with the reason, where the route does not apply),
    and by default ("measure") where it applies and does less work (``classes_pay``)."""
    if factor_mode == "classes":
        reason = classes_apply(cp)
        if reason is not None:
            raise classes_refused(reason)
        return True
    return factor_mode == "measure" and classes_apply(cp) is None and classes_pay(cp)


def same_route(obj, *, reml: bool):
    """A new objective on obj's sums and route with another ``reml`` (sigma kept)."""
    if isinstance(obj, ClassedObjective):
        return ClassedObjective(obj.cp, reml=reml, sigma=obj.fixed_sigma, B=obj.B)
    return LmmObjective(obj.cp, reml=reml, sigma=obj.fixed_sigma)


def intercept_only(term) -> bool:
    """Whether a term's Z column is all ones, ``(1 | g)`` (no values to read per row)."""
    return tuple(term.cnames) == ("(Intercept)",)


def with_first_pairs(cp: CrossProducts, B: LevelRows) -> CrossProducts:
    """cp with the first term's level-pair blocks made from B = Z0'WZ2, added or replacing
    any it holds: for the sparse route and the fit's methods when the pairs were not
    accumulated (``accumulate(skip_first_pairs=True)``, a streamed pass keeping codes)."""
    offs = cp.offsets
    rows = np.repeat(np.arange(B.nrows, dtype=np.int64), np.diff(B.indptr))
    first = []
    for s in range(1, len(cp.k)):
        ks = cp.k[s]
        lo, hi = offs[s] - offs[1], offs[s + 1] - offs[1]
        inside = (B.indices >= lo) & (B.indices < hi)
        cols = B.indices[inside].astype(np.int64) - lo
        lead = cols % ks == 0  # every partner level holds its k_s columns, in order
        A = np.ascontiguousarray(B.data[inside].reshape(-1, ks)[:, None, :], dtype=np.float64)
        first.append(PairBlocks(0, s, rows[inside][lead], cols[lead] // ks, A))
    pairs = tuple(first) + tuple(pb for pb in cp.pairs if pb.t != 0)
    return CrossProducts(k=cp.k, nlev=cp.nlev, diag=cp.diag, pairs=pairs, ZtWXy=cp.ZtWXy,
                         XtWXy=cp.XtWXy, n=cp.n, sum_log_w=cp.sum_log_w,
                         beta_shift=cp.beta_shift)


def frame_objective(frame, *, reml: bool, factor_mode: str = "measure",
                    sigma: float | None = None, classes: bool = True):
    """lmer's objective for an in-memory frame, by the route ``takes_classes`` picks
    (``classes=False``: never the count classes, for an optimizer that needs the gradient
    they do not have; their sums are then not built).

    Where the classes may be taken (a first term (1 | g) and more terms), the first term's
    level pairs are not accumulated: B = Z0'WZ2 comes from the terms' codes
    (``b_from_rows``, one int32 per row and the CSR, against the pair index's n-long
    arrays and the blocks), and the sparse route, if it wins, gets its pairs from B. A
    scalar first term with values, ``(0 + x | g)``, sums its pairs with those values
    (b_from_rows reads codes only: its B would take them for ones).
    """
    terms = frame.terms
    if not classes and factor_mode == "classes":
        raise classes_refused(NEEDS_GRADIENT)
    if (factor_mode not in ("measure", "classes") or len(terms) < 2
            or not intercept_only(terms[0])):
        cp = accumulate(frame)
        if classes and takes_classes(cp, factor_mode):  # "classes" where not applicable: refused
            return ClassedObjective.from_crossproducts(cp, reml=reml, sigma=sigma)
        return LmmObjective(cp, reml=reml, factor_mode=factor_mode, sigma=sigma)
    cp = accumulate(frame, skip_first_pairs=True)
    B = b_from_rows(terms[0].codes, [t.codes for t in terms[1:]],
                    [None if intercept_only(t) else t.X for t in terms[1:]],
                    [t.nlev for t in terms], [t.k for t in terms], weights=frame.weights)
    obj = objective_with_b(cp, B, reml=reml, factor_mode=factor_mode, sigma=sigma,
                           classes=classes)
    if isinstance(obj, ClassedObjective):
        obj.source_cp = cp  # without the first pairs: context.py adds them when asked
    return obj


def objective_with_b(cp: CrossProducts, B: LevelRows, *, reml: bool, factor_mode: str,
                     sigma: float | None, classes: bool = True):
    """The objective of cp, whose first-term level pairs are given as B instead: the
    classes where they apply and pay (or are asked for, refused with the reason where they
    do not apply), else the sparse factor with the pairs made from B. ``classes=False``:
    the sparse factor whatever the classes would do (not with factor_mode "classes")."""
    reason = classes_apply(cp) if classes else NEEDS_GRADIENT
    if factor_mode == "classes" and reason is not None:
        raise classes_refused(reason)
    if reason is None and (factor_mode == "classes" or classes_pay(cp, B)):
        t0 = time.perf_counter()
        sums = class_sums(cp, B)
        log.info("count classes: %d classes of the first term's %d levels, m = %d, in %.2f s",
                 sums.n_classes, sums.nlev[0], sums.m, time.perf_counter() - t0)
        return ClassedObjective(sums, reml=reml, sigma=sigma, B=B)
    if reason is not None:
        log.info("no count classes: %s", reason)
    return LmmObjective(with_first_pairs(cp, B), reml=reml, factor_mode=factor_mode,
                        sigma=sigma)
