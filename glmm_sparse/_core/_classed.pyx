# cython: language_level=3
"""Kernels of the count-class route (classed.py): B = Z0'WZ2 by level rows, class Grams.

B is held as CSR (indptr int64, indices int32, data ``count_t``): row i is level i of
the first term (scalar), columns are the q2 random effects of the other terms; its values
are counts of rows (uint8 or uint16, as small as the counts allow) for unweighted
intercept terms, else float64. The rows of
the data reach B through a counting sort by the first term's code (one int32 per row)
and, per level, a dense scatter workspace over one term's columns. Every kernel writes
into caller-allocated buffers; the thread-split kernels (``add_class_grams``,
``combine_classes``, ``row_quadratic_forms``) take a range of classes or rows, so each
output entry is made by one call in a fixed order whatever the number of threads. Symmetric m x m matrices
are stored as their row-major packed upper triangle (np.triu_indices(m) order).
"""
import numpy as np
cimport numpy as cnp
from libc.math cimport sqrt
from libc.stdlib cimport qsort

cnp.import_array()

INT32_MAX = 2**31 - 1


ctypedef fused count_t:
    # B's values: counts of rows for unweighted intercept terms (as small as they allow:
    # at 10^7 rows, 10 MB against 76 MB of float64), else float64
    cnp.uint8_t
    cnp.uint16_t
    double


cdef _require(bint ok, str message):
    if not ok:
        raise ValueError(message)


ctypedef fused code_t:
    # level codes: int32, or uint16 for a later term of at most 65,536 levels (the codes a
    # streamed pass keeps for sorted_partners: half the memory, rowcodes.RowCodes)
    cnp.int32_t
    cnp.uint16_t


cdef _check_codes(const code_t[::1] codes, Py_ssize_t nlev, str name):
    """Level codes index outputs and workspaces: each must lie in [0, nlev)."""
    if codes.shape[0]:
        arr = np.asarray(codes)
        _require(arr.min() >= 0 and arr.max() < nlev,
                 f"{name} must lie in [0, {nlev}), found [{arr.min()}, {arr.max()}]")


cdef _check_csr(const cnp.int64_t[::1] indptr, const cnp.int32_t[::1] indices,
                const count_t[::1] data, Py_ssize_t ncols):
    """A CSR matrix with ncols columns whose rows hold strictly increasing column indices
    (the kernels read upper triangles through that order)."""
    cdef Py_ssize_t nrow = indptr.shape[0] - 1, g, a
    cdef bint ok = True
    _require(nrow >= 0 and indices.shape[0] == data.shape[0] and indptr[0] == 0
             and indptr[nrow] == indices.shape[0],
             "CSR: indptr must run from 0 to len(indices) == len(data)")
    with nogil:
        for g in range(nrow):
            if indptr[g + 1] < indptr[g]:
                ok = False
                break
            for a in range(indptr[g], indptr[g + 1]):
                if indices[a] < 0 or indices[a] >= ncols or (
                        a > indptr[g] and indices[a] <= indices[a - 1]):
                    ok = False
                    break
            if not ok:
                break
    _require(ok, f"CSR: indptr must not decrease and each row's column indices must be "
                 f"strictly increasing and lie in [0, {ncols}) (failed at row {g})")


cdef int _compare_int32(const void *a, const void *b) noexcept nogil:
    cdef cnp.int32_t x = (<const cnp.int32_t *>a)[0], y = (<const cnp.int32_t *>b)[0]
    return (x > y) - (x < y)


cdef void _starts(const code_t[::1] codes, cnp.int64_t[::1] st) noexcept nogil:
    """st[g] = the rows with codes < g (st zeroed, len(st) = nlev + 1, codes checked): a
    histogram's running sums, where each level's rows begin once sorted by code."""
    cdef Py_ssize_t i, g
    for i in range(codes.shape[0]):
        st[codes[i] + 1] += 1
    for g in range(st.shape[0] - 1):
        st[g + 1] += st[g]


def bucket_rows(const cnp.int32_t[::1] codes0, Py_ssize_t nlev0):
    """(start, rows): rows[start[g]:start[g + 1]] are the rows with codes0 == g, in order.

    A counting sort: start is int64 (nlev0 + 1), rows int32 (n); nothing else of length n.
    """
    cdef Py_ssize_t n = codes0.shape[0], i, g
    _require(n <= INT32_MAX, "bucket_rows numbers rows in int32: at most 2^31 - 1 rows")
    _check_codes(codes0, nlev0, "codes0")
    start = np.zeros(nlev0 + 1, dtype=np.int64)
    rows = np.empty(n, dtype=np.int32)
    cdef cnp.int64_t[::1] st = start
    cdef cnp.int32_t[::1] rw = rows
    with nogil:
        _starts(codes0, st)
        for i in range(n):  # st[g] walks to the end of level g's bucket ...
            g = codes0[i]
            rw[st[g]] = <cnp.int32_t>i
            st[g] += 1
        for g in range(nlev0, 0, -1):  # ... and is moved back to its beginning
            st[g] = st[g - 1]
        st[0] = 0
    return start, rows


def count_level_partners(const cnp.int64_t[::1] start, const cnp.int32_t[::1] rows,
                         const cnp.int32_t[::1] codes_s, Py_ssize_t nlev_s,
                         cnp.int64_t[::1] counts_out):
    """counts_out[g] += #{distinct codes_s[i] : row i in bucket g}  (levels of term s met by
    each level g of the first term)."""
    cdef Py_ssize_t nlev0 = start.shape[0] - 1, g, j, s
    _require(counts_out.shape[0] == nlev0, "counts_out must have one entry per bucket")
    _require(rows.shape[0] == codes_s.shape[0] and start[nlev0] == rows.shape[0],
             "rows, codes_s and start must describe the same n rows")
    _check_codes(codes_s, nlev_s, "codes_s")
    mark = np.full(nlev_s, -1, dtype=np.int64)
    cdef cnp.int64_t[::1] mk = mark
    with nogil:
        for g in range(nlev0):
            for j in range(start[g], start[g + 1]):
                s = codes_s[rows[j]]
                if mk[s] != g:
                    mk[s] = g
                    counts_out[g] += 1
    return None


def fill_level_rows(const cnp.int64_t[::1] start, const cnp.int32_t[::1] rows,
                    const cnp.int32_t[::1] codes_s, const double[:, :] Xs,
                    const double[::1] w, Py_ssize_t nlev_s, Py_ssize_t col_offset,
                    cnp.int64_t[::1] pos, cnp.int32_t[::1] indices_out,
                    count_t[::1] data_out):
    """Term s's part of each CSR row of B = Z0'WZ_s, written at pos[g] (which advances).

    Row g, column col_offset + s k + r holds sum_{i in bucket g, codes_s[i] = s}
    w_i Xs[i, r], summed in row order (Xs None: k = 1, Xs[i, 0] = 1; w None: w_i = 1).
    The levels s met by bucket g are written in increasing order, all k columns of each
    (an exact zero is kept: B's pattern is the co-occurrence of levels). An integer
    ``data_out`` takes the sums as integers: the caller checks they are counts that fit.
    """
    cdef Py_ssize_t nlev0 = start.shape[0] - 1, k = 1 if Xs is None else Xs.shape[1]
    cdef Py_ssize_t g, j, i, s, r, a, first, nfound, at
    cdef bint ones = Xs is None, unweighted = w is None
    cdef double wi
    _require(rows.shape[0] == codes_s.shape[0] and start[nlev0] == rows.shape[0],
             "rows, codes_s and start must describe the same n rows")
    _require(ones or Xs.shape[0] == rows.shape[0], "Xs must have n rows")
    _require(unweighted or w.shape[0] == rows.shape[0], "w must have n entries")
    _require(pos.shape[0] == nlev0 and indices_out.shape[0] == data_out.shape[0],
             "pos has one entry per bucket; indices_out and data_out the same length")
    _check_codes(codes_s, nlev_s, "codes_s")
    _require(col_offset + nlev_s * k <= INT32_MAX, "B's columns must fit in int32")
    mark = np.full(nlev_s, -1, dtype=np.int64)
    found = np.empty(max(nlev_s, 1), dtype=np.int32)
    work = np.zeros(nlev_s * k, dtype=np.float64)  # dense scatter over term s's columns
    cdef cnp.int64_t[::1] mk = mark
    cdef cnp.int32_t[::1] fd = found
    cdef double[::1] ws = work
    with nogil:
        for g in range(nlev0):
            nfound = 0
            for j in range(start[g], start[g + 1]):
                i = rows[j]
                s = codes_s[i]
                if mk[s] != g:
                    mk[s] = g
                    fd[nfound] = <cnp.int32_t>s
                    nfound += 1
                wi = 1.0 if unweighted else w[i]
                if ones:
                    ws[s] += wi
                else:
                    for r in range(k):
                        ws[s * k + r] += wi * Xs[i, r]
            if nfound > 1:
                qsort(&fd[0], nfound, sizeof(cnp.int32_t), _compare_int32)
            at = pos[g]
            for a in range(nfound):
                s = fd[a]
                for r in range(k):
                    indices_out[at] = <cnp.int32_t>(col_offset + s * k + r)
                    data_out[at] = <count_t>ws[s * k + r]
                    ws[s * k + r] = 0.0
                    at += 1
            pos[g] = at
    return None


cdef inline Py_ssize_t _packed(Py_ssize_t r, Py_ssize_t s, Py_ssize_t m) noexcept nogil:
    """Position of (r, s), r <= s, in the row-major packed upper triangle of an m x m matrix
    (rows r' < r hold m - r' entries each; np.triu_indices(m) order)."""
    return r * (2 * m - r + 1) // 2 + (s - r)


ctypedef fused gram_t:
    # the Z2 block of the class Grams: counts of rows (unsigned integers, as small as the
    # sums allow) for unweighted intercept terms, else float64
    cnp.uint8_t
    cnp.uint16_t
    cnp.uint32_t
    double


cdef _check_starts(const cnp.int64_t[::1] start):
    """Level starts (as level_starts makes them) begin at 0 and never decrease."""
    arr = np.asarray(start)
    _require(arr.shape[0] > 0 and arr[0] == 0 and bool(np.all(np.diff(arr) >= 0)),
             "start0 must begin at 0 and never decrease (level_starts)")


def level_starts(const cnp.int32_t[::1] codes0, Py_ssize_t nlev0):
    """start (int64, nlev0 + 1): level g's rows are number start[g] .. start[g + 1] - 1
    once the rows are ordered by codes0 (a histogram's running sums)."""
    _check_codes(codes0, nlev0, "codes0")
    start = np.zeros(nlev0 + 1, dtype=np.int64)
    cdef cnp.int64_t[::1] st = start
    with nogil:
        _starts(codes0, st)
    return start


def sorted_partners(const cnp.int32_t[::1] codes0, const code_t[::1] codes_s,
                    const cnp.int64_t[::1] start0, Py_ssize_t nlev_s, cnp.int32_t[::1] out):
    """out[start0[g] .. start0[g + 1] - 1] = the codes_s of level g's rows, increasing.

    Two counting sorts, by codes_s and then (stably) by codes0, so that within each level
    of the first term its partners come in order and equal ones next to each other: B's
    row is then a run-length code of them (``count_runs``, ``fill_runs``), with no
    per-level sort. The first sort writes codes0 in codes_s order (an int32 per row, nlev_s
    streams: cache-friendly); the second reads that sequentially. ``out`` may be codes0
    itself (read in full before out is written: no n-long array beyond the one inside).
    codes_s may be uint16 (code_t).
    """
    cdef Py_ssize_t n = codes0.shape[0], nlev0 = start0.shape[0] - 1, i, j, s, g
    cdef bint overflow = False
    _check_starts(start0)
    _require(codes_s.shape[0] == n and out.shape[0] == n and start0[nlev0] == n,
             "codes0, codes_s, out and start0 must describe the same n rows")
    _check_codes(codes_s, nlev_s, "codes_s")
    _check_codes(codes0, nlev0, "codes0")
    start_s = np.zeros(nlev_s + 1, dtype=np.int64)
    by_s = np.empty(n, dtype=np.int32)  # codes0 in codes_s order
    at0 = np.array(start0[:nlev0], dtype=np.int64)
    cdef cnp.int64_t[::1] st = start_s
    cdef cnp.int64_t[::1] a0 = at0
    cdef cnp.int32_t[::1] b = by_s
    with nogil:
        _starts(codes_s, st)
        for i in range(n):  # st[s] walks through level s's run
            s = codes_s[i]
            b[st[s]] = codes0[i]
            st[s] += 1
        j = 0
        for s in range(nlev_s):  # runs of s in order, so each level g gets its s increasing
            while j < st[s]:
                g = b[j]
                if a0[g] >= start0[g + 1]:  # more rows of g than start0 gives it
                    overflow = True
                    break
                out[a0[g]] = <cnp.int32_t>s
                a0[g] += 1
                j += 1
            if overflow:
                break
    _require(not overflow, "start0 must be level_starts(codes0): a level has more rows")
    return None


def count_runs(const cnp.int64_t[::1] start0, const cnp.int32_t[::1] partners,
               cnp.int64_t[::1] counts_out):
    """counts_out[g] += the number of distinct partners of level g (runs in ``partners``,
    as ``sorted_partners`` orders them)."""
    cdef Py_ssize_t nlev0 = start0.shape[0] - 1, g, j
    _check_starts(start0)
    _require(counts_out.shape[0] == nlev0, "counts_out must have one entry per level")
    _require(start0[nlev0] == partners.shape[0], "start0 and partners must describe the same rows")
    with nogil:
        for g in range(nlev0):
            for j in range(start0[g], start0[g + 1]):
                if j == start0[g] or partners[j] != partners[j - 1]:
                    counts_out[g] += 1
    return None


def fill_runs(const cnp.int64_t[::1] start0, const cnp.int32_t[::1] partners,
              Py_ssize_t col_offset, cnp.int64_t[::1] pos, cnp.int32_t[::1] indices_out,
              count_t[::1] data_out):
    """Level g's CSR entries of B = Z0'Z_s (intercept terms, no weights) at pos[g], which
    advances: column col_offset + s and the count of g's rows with partner s, per run of
    ``partners`` (as ``sorted_partners`` orders them). The caller sizes data_out's type to
    hold every level's row count."""
    cdef Py_ssize_t nlev0 = start0.shape[0] - 1, g, j, at, run
    cdef Py_ssize_t room = indices_out.shape[0]
    cdef bint overflow = False
    _check_starts(start0)
    _require(start0[nlev0] == partners.shape[0], "start0 and partners must describe the same rows")
    _require(pos.shape[0] == nlev0 and indices_out.shape[0] == data_out.shape[0],
             "pos has one entry per level; indices_out and data_out the same length")
    if partners.shape[0]:
        _require(col_offset + np.asarray(partners).max() <= INT32_MAX,
                 "B's columns must fit in int32")
    with nogil:
        for g in range(nlev0):
            at = pos[g]
            run = 0
            for j in range(start0[g], start0[g + 1]):
                run += 1
                if j + 1 == start0[g + 1] or partners[j + 1] != partners[j]:
                    if at < 0 or at >= room:
                        overflow = True
                        break
                    indices_out[at] = <cnp.int32_t>(col_offset + partners[j])
                    data_out[at] = <count_t>run
                    at += 1
                    run = 0
            if overflow:
                break
            pos[g] = at
    _require(not overflow, "pos must leave room for every level's entries (count_runs)")
    return None


def add_class_grams(const cnp.int64_t[::1] indptr, const cnp.int32_t[::1] indices,
                    const count_t[::1] data, const double[:, ::1] F,
                    const cnp.int64_t[::1] order, const cnp.int64_t[::1] class_start,
                    Py_ssize_t c_lo, Py_ssize_t c_hi, gram_t[:, ::1] Gz,
                    double[:, ::1] Gr):
    """G_c += upper(sum_{g in class c} a_g a_g'), a_g = [B_g, F_g], for c_lo <= c < c_hi.

    G_c, m x m with m = q2 + p1, is held in two parts (``combine_classes`` reads them):
    Gz[c], the row-major packed upper triangle of its leading q2 x q2 block (B_g B_g');
    Gr[c], the rest: its rows r < q2 beyond column q2 (B_g F_g', p1 entries a row), then
    the packed upper triangle of its trailing p1 x p1 block (F_g F_g'). The levels of
    class c are order[class_start[c]:class_start[c + 1]]; B_g is CSR row g (q2 columns,
    strictly increasing), F_g row g of F. An integer Gz takes the products of B's values
    as integers: the caller checks they are whole numbers whose sums fit the type.
    """
    cdef Py_ssize_t p1 = F.shape[1], n_classes = Gz.shape[0]
    cdef Py_ssize_t q2, c, t, g, a, b, ja, lo, hi, r, s, zrow, tail
    cdef double va
    _require(Gr.shape[0] == n_classes and Gr.shape[1] >= p1 * (p1 + 1) // 2
             and p1 > 0 and (Gr.shape[1] - p1 * (p1 + 1) // 2) % p1 == 0,
             "Gr must be (n_classes, q2 p1 + p1 (p1 + 1) / 2), p1 = F's columns")
    q2 = (Gr.shape[1] - p1 * (p1 + 1) // 2) // p1
    _require(Gz.shape[1] == q2 * (q2 + 1) // 2, "Gz must be (n_classes, q2 (q2 + 1) / 2)")
    _require(0 <= c_lo <= c_hi <= n_classes and class_start.shape[0] == n_classes + 1,
             "class range out of bounds, or class_start not of length n_classes + 1")
    _require(F.shape[0] == indptr.shape[0] - 1, "F must have one row per CSR row")
    _check_csr(indptr, indices, data, q2)
    _require(class_start[n_classes] <= order.shape[0], "class_start points past order")
    if order.shape[0]:
        _require(np.asarray(order).min() >= 0 and np.asarray(order).max() < F.shape[0],
                 "order must hold CSR row numbers")
    tail = q2 * p1
    with nogil:
        for c in range(c_lo, c_hi):
            for t in range(class_start[c], class_start[c + 1]):
                g = order[t]
                lo, hi = indptr[g], indptr[g + 1]
                for a in range(lo, hi):
                    ja, va = indices[a], <double>data[a]
                    zrow = _packed(ja, ja, q2) - ja  # Gz[c, zrow + s] is entry (ja, s)
                    for b in range(a, hi):  # B_g B_g' (columns increasing: upper triangle)
                        Gz[c, zrow + indices[b]] += <gram_t>(va * <double>data[b])
                    for s in range(p1):  # B_g F_g'
                        Gr[c, ja * p1 + s] += va * F[g, s]
                for r in range(p1):  # F_g F_g'
                    for s in range(r, p1):
                        Gr[c, tail + _packed(r, s, p1)] += F[g, r] * F[g, s]
    return None


def combine_classes(const double[::1] v, const gram_t[:, ::1] Gz, const double[:, ::1] Gr,
                    const double[::1] K, Py_ssize_t r_lo, Py_ssize_t r_hi, double[::1] H):
    """H = K + sum_c v[c] G_c on the rows r_lo <= r < r_hi of the packed upper triangle
    of an m x m matrix (K, H: m (m + 1) / 2 entries; G_c in the two parts of
    ``add_class_grams``). Each entry is K's plus the classes' terms in class order, so
    any split of the rows between calls gives the same bits."""
    cdef Py_ssize_t n_classes = v.shape[0], m, q2, p1, r, j, c, at, z, L, rr, tail
    cdef double vc, v0, v1, v2, v3
    cdef double *h
    cdef const gram_t *gz
    cdef const gram_t *g0
    cdef const gram_t *g1
    cdef const gram_t *g2
    cdef const gram_t *g3
    cdef const double *gr
    _require(Gz.shape[0] == n_classes and Gr.shape[0] == n_classes,
             "v, Gz and Gr must have one entry (row) per class")
    q2 = <Py_ssize_t>((sqrt(8.0 * Gz.shape[1] + 1.0) - 1.0) / 2.0 + 0.5)
    _require(q2 * (q2 + 1) // 2 == Gz.shape[1], "Gz's rows must be packed triangles")
    m = <Py_ssize_t>((sqrt(8.0 * K.shape[0] + 1.0) - 1.0) / 2.0 + 0.5)
    p1 = m - q2
    _require(m * (m + 1) // 2 == K.shape[0] and H.shape[0] == K.shape[0] and p1 >= 0
             and Gr.shape[1] == q2 * p1 + p1 * (p1 + 1) // 2,
             "K and H must be packed m x m triangles, m = q2 + p1, and Gr (n_classes, "
             "q2 p1 + p1 (p1 + 1) / 2)")
    _require(0 <= r_lo <= r_hi <= m, "row range out of bounds")
    tail = q2 * p1
    with nogil:
        for r in range(r_lo, r_hi):
            at = _packed(r, r, m)
            L = m - r
            for j in range(L):
                H[at + j] = K[at + j]
            h = &H[at]
            if r < q2:
                L = q2 - r
                z = _packed(r, r, q2)
                c = 0
                while c + 4 <= n_classes:  # four classes a sweep: four streams in flight
                    g0, g1, g2, g3 = &Gz[c, z], &Gz[c + 1, z], &Gz[c + 2, z], &Gz[c + 3, z]
                    v0, v1, v2, v3 = v[c], v[c + 1], v[c + 2], v[c + 3]
                    for j in range(L):  # left to right: the bits of one class at a time
                        h[j] = (h[j] + v0 * <double>g0[j] + v1 * <double>g1[j]
                                + v2 * <double>g2[j] + v3 * <double>g3[j])
                    c += 4
                while c < n_classes:
                    vc = v[c]
                    gz = &Gz[c, z]
                    for j in range(L):
                        h[j] += vc * <double>gz[j]
                    c += 1
                for c in range(n_classes):
                    vc = v[c]
                    gr = &Gr[c, r * p1]
                    for j in range(p1):
                        h[L + j] += vc * gr[j]
            else:
                rr = r - q2
                z = tail + _packed(rr, rr, p1)
                for c in range(n_classes):
                    vc = v[c]
                    gr = &Gr[c, z]
                    for j in range(L):
                        h[j] += vc * gr[j]
    return None


def unpack_symmetric(const double[::1] packed, double[:, ::1] out):
    """out = the symmetric m x m matrix whose row-major packed upper triangle is packed."""
    cdef Py_ssize_t m = out.shape[0], r, s, at = 0
    _require(out.shape[1] == m and packed.shape[0] == m * (m + 1) // 2,
             "out must be m x m and packed of length m (m + 1) / 2")
    with nogil:
        for r in range(m):
            for s in range(r, m):
                out[r, s] = packed[at]
                out[s, r] = packed[at]
                at += 1
    return None


def csr_times(const cnp.int64_t[::1] indptr, const cnp.int32_t[::1] indices,
              const count_t[::1] data, const double[::1] x, double[::1] out):
    """out = B x  (out[g] = sum_j B[g, j] x[j])."""
    cdef Py_ssize_t nrow = indptr.shape[0] - 1, g, a
    cdef double s
    _require(out.shape[0] == nrow, "out must have one entry per CSR row")
    _check_csr(indptr, indices, data, x.shape[0])
    with nogil:
        for g in range(nrow):
            s = 0.0
            for a in range(indptr[g], indptr[g + 1]):
                s += <double>data[a] * x[indices[a]]
            out[g] = s
    return None


def row_quadratic_forms(const cnp.int64_t[::1] indptr, const cnp.int32_t[::1] indices,
                        const count_t[::1] data, const double[:, ::1] Q,
                        Py_ssize_t row_lo, Py_ssize_t row_hi, double[::1] out):
    """out[g] = B_g Q B_g' for rows row_lo <= g < row_hi (Q symmetric: its upper triangle
    is read)."""
    cdef Py_ssize_t nrow = indptr.shape[0] - 1, g, a, b, ja, jb
    cdef double s, off, va
    _require(Q.shape[0] == Q.shape[1], "Q must be square")
    _require(0 <= row_lo <= row_hi <= nrow and out.shape[0] == nrow,
             "row range out of bounds, or out not of one entry per CSR row")
    _check_csr(indptr, indices, data, Q.shape[0])
    with nogil:
        for g in range(row_lo, row_hi):
            s = 0.0
            for a in range(indptr[g], indptr[g + 1]):
                ja, va = indices[a], <double>data[a]
                off = 0.0
                for b in range(a + 1, indptr[g + 1]):  # columns sorted: Q[ja, jb] upper
                    off += <double>data[b] * Q[ja, indices[b]]
                s += va * (va * Q[ja, ja] + 2.0 * off)
            out[g] = s
    return None
