# cython: language_level=3
"""One pass over the rows: the weighted cross-products of Z (implicit) with Z, X and y.

Z is never formed: a term is its level code per row and its k covariate values per row.
Each kernel adds into a caller-allocated buffer, so row chunks can be accumulated one
after another (or on different workers) and the sums added.

Level codes (and block numbers) are int32 or int64 (``index_t``): int32 halves what
they hold at 10^7 rows, int64 is what the streamed and out-of-core paths write. A term's
covariates ``Xt`` may be None, meaning one column of ones: an intercept-only term
``(1 | g)`` carries no n x 1 column of ones (80 MB at 10^7 rows). ``Xt`` may be strided
(columns of the fixed-effects buffer [X y] that a term shares, terms.shared_columns).
"""
import numpy as np
cimport numpy as cnp
from libc.stdlib cimport qsort

cnp.import_array()

cdef extern from *:
    # GCC/Clang: fetch the cache line at addr ahead of its use (rw 1: for writing)
    void __builtin_prefetch(const void *addr, int rw, int locality) nogil

DEF PREFETCH_ROWS = 32  # rows ahead whose level sums are fetched (misses overlap)
DEF CACHE_LINE = 64  # bytes (x86-64, ARMv8)

ctypedef fused index_t:
    cnp.int32_t
    cnp.int64_t

INT32_MAX = 2**31 - 1


def add_term_diag(const index_t[::1] codes, const double[:, :] Xt,
                  const double[::1] w, double[:, :, ::1] out):
    """out[g] += sum_{i: codes[i] = g} w_i x_i x_i'  (diagonal blocks of Z'WZ for a term;
    Xt None: x_i = 1)."""
    cdef Py_ssize_t n = codes.shape[0], k = _ncols(Xt), i, r, c
    cdef bint ones = Xt is None
    cdef Py_ssize_t g
    cdef double wr
    _check_rows(n, Xt, w.shape[0])
    _require(out.shape[1] == k and out.shape[2] == k, "out must be (nlev, k, k)")
    _check_codes(codes, out.shape[0])
    with nogil:
        if ones:
            for i in range(n):
                out[codes[i], 0, 0] += w[i]
        else:
            for i in range(n):
                g = codes[i]
                for r in range(k):
                    wr = w[i] * Xt[i, r]
                    for c in range(k):
                        out[g, r, c] += wr * Xt[i, c]
    return None


def add_pair_blocks(const index_t[::1] block, const double[:, :] Xt,
                    const double[:, :] Xs, const double[::1] w, double[:, :, ::1] out):
    """out[b] += sum_{i: block[i] = b} w_i xt_i xs_i'  (off-diagonal blocks of Z'WZ;
    Xt or Xs None: ones)."""
    cdef Py_ssize_t n = block.shape[0], kt = _ncols(Xt), ks = _ncols(Xs), i, r, c
    cdef bint t_ones = Xt is None, s_ones = Xs is None
    cdef Py_ssize_t b
    cdef double wr
    _check_rows(n, Xt, w.shape[0])
    _check_rows(n, Xs, n)
    _require(out.shape[1] == kt and out.shape[2] == ks, "out must be (nblocks, k_t, k_s)")
    _check_codes(block, out.shape[0])
    with nogil:
        if t_ones and s_ones:
            for i in range(n):
                out[block[i], 0, 0] += w[i]
        else:
            for i in range(n):
                b = block[i]
                for r in range(kt):
                    wr = w[i] if t_ones else w[i] * Xt[i, r]
                    for c in range(ks):
                        out[b, r, c] += wr if s_ones else wr * Xs[i, c]
    return None


def add_term_cross(const index_t[::1] codes, const double[:, :] Xt,
                   const double[:, ::1] B, const double[::1] w, double[:, ::1] out):
    """out[g k + r, :] += sum_{i: codes[i] = g} w_i Xt[i, r] B[i, :]  (rows of Z'W[X y];
    Xt None: Xt[i, 0] = 1)."""
    cdef Py_ssize_t n = codes.shape[0], k = _ncols(Xt), m = B.shape[1], i, r, c
    cdef bint ones = Xt is None
    cdef Py_ssize_t row
    cdef double wr
    _check_rows(n, Xt, w.shape[0])
    _require(B.shape[0] == n and out.shape[1] == m and out.shape[0] % max(k, 1) == 0,
             "B must have n rows and out (nlev * k, B.shape[1])")
    _check_codes(codes, out.shape[0] // max(k, 1))
    with nogil:
        for i in range(n):
            row = codes[i] * k
            for r in range(k):
                wr = w[i] if ones else w[i] * Xt[i, r]
                for c in range(m):
                    out[row + r, c] += wr * B[i, c]
    return None


def add_term_sums(const index_t[::1] codes, const double[:, :] Xt,
                  const double[:, ::1] B, const double[::1] w, const double[::1] yc,
                  double[:, ::1] out):
    """Every per-level sum of one term in one pass over the rows (one visit of each
    row's level instead of four), into the columns of ``out`` (nlev, k k + k m + 2):

        out[g, r k + c]           += sum_{i: codes[i] = g} w_i Xt[i, r] Xt[i, c]  (add_term_diag)
        out[g, k k + r m + c]     += sum_{i: codes[i] = g} w_i Xt[i, r] B[i, c]   (add_term_cross)
        out[g, k k + k m]         += #{i: codes[i] = g}                           (rows per level)
        out[g, k k + k m + 1]     += sum_{i: codes[i] = g} yc_i

    with m = B.shape[1]; Xt None: x_i = 1; columns of ``out`` past these are left as
    they are (padding, level_sums_buffer). Each sum adds its rows in order, as the
    separate kernels (and np.bincount) do. At 10^6 levels nearly every row's level
    misses the cache: the lines of the level 32 rows ahead are fetched now, and ``out``
    is best made by ``level_sums_buffer`` (rows on as few lines as can be).
    """
    cdef Py_ssize_t n = codes.shape[0], k = _ncols(Xt), m = B.shape[1], i, r, c
    cdef Py_ssize_t kk = k * k, at_n = k * k + k * m
    cdef bint ones = Xt is None
    cdef double wr, wi
    cdef double *row
    cdef const double *b
    _check_rows(n, Xt, w.shape[0])
    _require(B.shape[0] == n and yc.shape[0] == n, "B and yc must have n rows")
    _require(out.shape[1] >= at_n + 2,
             "out must be (nlev, at least k * k + k * B.shape[1] + 2)")
    _check_codes(codes, out.shape[0])
    if n == 0:
        return None
    # rows of out and B through pointers: the memoryviews' index arithmetic, redone
    # after every store into out, took 7.7 ns a row at 1,000 levels (in cache)
    cdef double *base = &out[0, 0]
    cdef Py_ssize_t width = out.shape[1]
    with nogil:
        for i in range(n):
            row = _level_row(base, &codes[0], i, n, width, at_n + 2)
            b = &B[i, 0]
            wi = w[i]
            if ones:
                row[0] += wi
                for c in range(m):
                    row[1 + c] += wi * b[c]
            else:
                for r in range(k):
                    wr = wi * Xt[i, r]
                    for c in range(k):
                        row[r * k + c] += wr * Xt[i, c]
                    for c in range(m):
                        row[kk + r * m + c] += wr * b[c]
            row[at_n] += 1.0
            row[at_n + 1] += yc[i]
    return None


def add_shared_sums(const index_t[::1] codes, const cnp.intp_t[::1] left,
                    const cnp.intp_t[::1] right, const double[:, ::1] B,
                    const double[::1] w, const double[::1] yc, double[:, ::1] out,
                    const cnp.intp_t[::1] cols, double[::1] sumsq_out,
                    cnp.int64_t[::1] nonzero_out):
    """add_term_sums for a term whose columns are the columns ``cols`` of B (``(1 + x |
    g)`` with ``y ~ x + ...``), each product once, with add_column_sums of those columns:
    with J = len(left),

        out[g, j]     += sum_{i: codes[i] = g} (w_i B[i, left[j]]) B[i, right[j]]   (j < J)
        out[g, J]     += #{i: codes[i] = g}
        out[g, J + 1] += sum_{i: codes[i] = g} yc_i
        sumsq_out[r]  += sum_i B[i, cols[r]]^2,  nonzero_out[r] += #{i: B[i, cols[r]] != 0}

    add_term_sums' k k + k m sums of such a term hold k (k + 1) / 2 + k (m - k)
    distinct ones, and fewer floats a level are fewer cache lines: (1 + x | g) with
    [1 x y] is 7 sums a level on one line (level_sums_buffer's 8) instead of 12 on two,
    0.67 against 1.24 ms a batch of 65,536 rows at 10^6 levels. Rows added in order,
    the next levels' lines prefetched, as add_term_sums; the column sums add the rows
    in order as add_column_sums does, while the level's line is on its way.
    """
    cdef Py_ssize_t n = codes.shape[0], m = B.shape[1], J = left.shape[0], i, j, r
    cdef Py_ssize_t k = cols.shape[0]
    cdef double x
    _require(right.shape[0] == J, "left and right must have the same length")
    _require(B.shape[0] == n and w.shape[0] == n and yc.shape[0] == n,
             "codes, B, w and yc must have the same rows")
    _require(out.shape[1] >= J + 2, "out must be (nlev, at least len(left) + 2)")
    _require(sumsq_out.shape[0] == k and nonzero_out.shape[0] == k,
             "sumsq_out and nonzero_out must have one entry per column in cols")
    for idx in (np.asarray(left), np.asarray(right), np.asarray(cols)):
        _require(idx.size == 0 or (idx.min() >= 0 and idx.max() < m),
                 f"left, right and cols must index B's {m} columns")
    _check_codes(codes, out.shape[0])
    if n == 0:
        return None
    cdef double *base = &out[0, 0]  # rows through pointers, as add_term_sums
    cdef Py_ssize_t width = out.shape[1]
    cdef double *row
    cdef const double *b
    cdef double wi
    with nogil:
        for i in range(n):
            row = _level_row(base, &codes[0], i, n, width, J + 2)
            b = &B[i, 0]
            wi = w[i]
            for j in range(J):
                row[j] += (wi * b[left[j]]) * b[right[j]]
            row[J] += 1.0
            row[J + 1] += yc[i]
            for r in range(k):
                x = b[cols[r]]
                sumsq_out[r] += x * x
                nonzero_out[r] += x != 0
    return None


cdef inline double *_level_row(double *base, const index_t *codes, Py_ssize_t i,
                               Py_ssize_t n, Py_ssize_t width, Py_ssize_t used) noexcept nogil:
    """Row i's level's row of a (nlev, width) buffer at base, whose first ``used`` floats
    the kernel adds into; the lines of the level PREFETCH_ROWS rows ahead are fetched now
    (at 10^6 levels nearly every level misses the cache: the misses overlap)."""
    cdef double *ahead
    if i + PREFETCH_ROWS < n:
        ahead = base + codes[i + PREFETCH_ROWS] * width
        _prefetch_lines(ahead, ahead + used - 1)
    return base + codes[i] * width


cdef inline void _prefetch_lines(const double *first, const double *last) noexcept nogil:
    """Fetch (for writing) every cache line from first's to last's: a row of the buffer
    that straddles a line boundary needs up to three."""
    cdef size_t at = <size_t>first & ~(<size_t>CACHE_LINE - 1)
    while at <= <size_t>last:
        __builtin_prefetch(<const void *>at, 1, 1)
        at += CACHE_LINE


def padded_width(Py_ssize_t width):
    """The fewest floats, at least ``width``, in rows of which (the first starting on a
    cache line) none spans more lines than ``width`` floats need: rows of 8 w bytes start
    at multiples of gcd(8 w, 64) past a line, so the worst starts 64 - gcd past one. 3 -> 4,
    5 to 7 -> 8, 11 -> 12, 15 -> 16; 9, 10, 12 or 17 floats are left as they are."""
    _require(width >= 1, f"width must be >= 1, not {width}")
    cdef Py_ssize_t need = (8 * width + CACHE_LINE - 1) // CACHE_LINE, out = width
    while (CACHE_LINE - _gcd(8 * out, CACHE_LINE) + 8 * out + CACHE_LINE - 1) // CACHE_LINE > need:
        out += 1
    return out


cdef Py_ssize_t _gcd(Py_ssize_t a, Py_ssize_t b):
    while b:
        a, b = b, a % b
    return a


def level_sums_buffer(Py_ssize_t nlev, Py_ssize_t width):
    """Zeros (nlev, padded_width(width)) for add_term_sums and add_shared_sums (which use
    the first ``width`` columns), starting on a cache line (64 bytes). From np.zeros (16
    bytes past a page) half the rows of 12 floats straddle three lines instead of two,
    and add_term_sums at 10^6 levels, one cache miss per line, took 2.6x as long; rows of
    6 floats, on one line or two, took 0.88 ms a batch of 65,536 rows against 0.69 ms
    for rows padded to 8."""
    _require(nlev >= 0 and width >= 1, f"nlev must be >= 0 and width >= 1, not {nlev}, {width}")
    width = padded_width(width)
    raw = np.zeros(nlev * width + CACHE_LINE // 8)
    skip = (-raw.ctypes.data % CACHE_LINE) // 8
    return raw[skip:skip + nlev * width].reshape(nlev, width)


def add_column_sums(const double[:, :] Xt, double[::1] sumsq_out, cnp.int64_t[::1] nonzero_out):
    """sumsq_out[r] += sum_i Xt[i, r]^2 and nonzero_out[r] += #{i: Xt[i, r] != 0} (a
    term's column sizes, for the optimizer's units), the rows added in order."""
    cdef Py_ssize_t n = Xt.shape[0], k = Xt.shape[1], i, r
    cdef double x, sq
    cdef cnp.int64_t nz
    _require(sumsq_out.shape[0] == k and nonzero_out.shape[0] == k,
             "sumsq_out and nonzero_out must have one entry per column of Xt")
    with nogil:
        for r in range(k):  # a column at a time into locals: no chain through memory
            sq, nz = sumsq_out[r], nonzero_out[r]
            for i in range(n):
                x = Xt[i, r]
                sq = sq + x * x
                nz += x != 0
            sumsq_out[r], nonzero_out[r] = sq, nz
    return None


def add_weighted_gram(const double[:, ::1] B, const double[::1] w, double[:, ::1] out):
    """out += B' W B (upper triangle and mirror), for the p + 1 columns of [X y]."""
    cdef Py_ssize_t n = B.shape[0], m = B.shape[1], i, r, c
    cdef double wr
    _require(w.shape[0] == n and out.shape[0] == m and out.shape[1] == m,
             "w must have n entries and out be (m, m)")
    with nogil:
        for i in range(n):
            for r in range(m):
                wr = w[i] * B[i, r]
                for c in range(r, m):
                    out[r, c] += wr * B[i, c]
        for r in range(m):
            for c in range(r):
                out[r, c] = out[c, r]
    return None


cdef _require(bint ok, str message):
    if not ok:
        raise ValueError(message)


cdef Py_ssize_t _ncols(const double[:, :] Xt):
    """A term's columns: Xt's, or the one column of ones that None stands for."""
    return 1 if Xt is None else Xt.shape[1]


cdef _check_rows(Py_ssize_t n, const double[:, :] Xt, Py_ssize_t nw):
    _require((Xt is None or Xt.shape[0] == n) and nw == n,
             "codes, covariates and weights must have the same rows")


cdef _check_codes(const index_t[::1] codes, Py_ssize_t nlev):
    """Level codes index the output: every one must lie in [0, nlev) (kernels skip bounds checks)."""
    if codes.shape[0]:
        arr = np.asarray(codes)
        _require(arr.min() >= 0 and arr.max() < nlev, f"codes must lie in [0, {nlev})")


def add_term_times(const index_t[::1] codes, const double[:, :] Xt,
                   const double[:, ::1] b, double[::1] out):
    """out[i] += sum_r Xt[i, r] b[codes[i], r]  (Z_t b for one term, Z implicit; Xt None:
    out[i] += b[codes[i], 0])."""
    cdef Py_ssize_t n = codes.shape[0], k = _ncols(Xt), i, r
    cdef bint ones = Xt is None
    cdef double s
    cdef Py_ssize_t g
    _require((ones or Xt.shape[0] == n) and out.shape[0] == n and b.shape[1] == k,
             "codes, Xt and out must have n rows and b k columns")
    _check_codes(codes, b.shape[0])
    with nogil:
        if ones:
            for i in range(n):
                out[i] += b[codes[i], 0]
        else:
            for i in range(n):
                g = codes[i]
                s = 0.0
                for r in range(k):
                    s += Xt[i, r] * b[g, r]
                out[i] += s
    return None


cdef int _compare_int32(const void *a, const void *b) noexcept nogil:
    cdef cnp.int32_t x = (<const cnp.int32_t *>a)[0], y = (<const cnp.int32_t *>b)[0]
    return (x > y) - (x < y)


def pair_index(const index_t[::1] codes_t, const index_t[::1] codes_s,
               Py_ssize_t nlev_t, Py_ssize_t nlev_s):
    """The (level of t, level of s) pairs that share a row, sorted, and each row's pair.

    Returns ``(block, lev_t, lev_s)``, all int32: row i is in block ``block[i]``, whose
    levels are ``lev_t[block[i]] == codes_t[i]`` and ``lev_s[block[i]] == codes_s[i]``;
    blocks are ordered by lev_t, then lev_s (what sorting the keys
    ``codes_t * nlev_s + codes_s`` gives). Without sorting n keys: the rows are bucketed
    by their level of t (a counting sort, one int32 per row), and each level's few
    distinct partners are found with a marker array and sorted on their own. Levels,
    rows and blocks must fit in int32 (the caller checks).
    """
    cdef Py_ssize_t n = codes_t.shape[0], i, j, t, s, nb, first
    _require(codes_s.shape[0] == n, "codes_t and codes_s must have the same rows")
    _require(max(n, nlev_t, nlev_s) <= INT32_MAX, "pair_index needs int32 sizes")
    _check_codes(codes_t, nlev_t)
    _check_codes(codes_s, nlev_s)
    start = np.zeros(nlev_t + 1, dtype=np.intp)
    rows = np.empty(n, dtype=np.int32)
    mark = np.full(nlev_s, -1, dtype=np.intp)
    cdef Py_ssize_t[::1] start_v = start, mark_v = mark
    cdef cnp.int32_t[::1] rows_v = rows
    with nogil:
        _bucket_rows(codes_t, start_v, rows_v)
        nb = 0
        for t in range(nlev_t):  # distinct partners of each level of t
            for j in range(start_v[t], start_v[t + 1]):
                s = codes_s[rows_v[j]]
                if mark_v[s] != t:
                    mark_v[s] = t
                    nb += 1
    _require(nb <= INT32_MAX, "pair_index needs int32 sizes")
    block = np.empty(n, dtype=np.int32)
    lev_t = np.empty(nb, dtype=np.int32)
    lev_s = np.empty(nb, dtype=np.int32)
    mark[:] = -1
    cdef cnp.int32_t[::1] block_v = block, lev_t_v = lev_t, lev_s_v = lev_s
    with nogil:
        nb = 0
        for t in range(nlev_t):
            first = nb
            for j in range(start_v[t], start_v[t + 1]):
                s = codes_s[rows_v[j]]
                if mark_v[s] != t:
                    mark_v[s] = t
                    lev_s_v[nb] = <cnp.int32_t>s
                    lev_t_v[nb] = <cnp.int32_t>t
                    nb += 1
            if nb - first > 1:
                qsort(&lev_s_v[first], nb - first, sizeof(cnp.int32_t), _compare_int32)
            for j in range(first, nb):  # mark now holds the block of each partner
                mark_v[lev_s_v[j]] = nlev_t + j
            for j in range(start_v[t], start_v[t + 1]):
                i = rows_v[j]
                block_v[i] = <cnp.int32_t>(mark_v[codes_s[i]] - nlev_t)
    return block, lev_t, lev_s


cdef void _bucket_rows(const index_t[::1] codes, Py_ssize_t[::1] start,
                       cnp.int32_t[::1] rows) noexcept nogil:
    """rows[start[g]:start[g + 1]] = the rows of level g, in order (a counting sort)."""
    cdef Py_ssize_t n = codes.shape[0], nlev = start.shape[0] - 1, i, g
    for i in range(n):
        start[codes[i] + 1] += 1
    for g in range(nlev):
        start[g + 1] += start[g]
    for i in range(n):  # start[g] walks to the end of level g's bucket ...
        g = codes[i]
        rows[start[g]] = <cnp.int32_t>i
        start[g] += 1
    for g in range(nlev, 0, -1):  # ... and is moved back to its beginning
        start[g] = start[g - 1]
    start[0] = 0
