# cython: language_level=3
"""Placing the entries of M's blocks in its CSC arrays, by a counting sort on columns.

Used once per model by ``glmm_sparse.pattern.build_pattern``: the blocks of M come in an
order that already sorts each column's rows (the level-pair blocks of every earlier term,
ordered by level, then the term's own diagonal blocks), so each entry only takes the
next free slot of its column, without sorting all entries by (column, row).
"""
import numpy as np
cimport numpy as cnp

cnp.import_array()


def place_entries(const cnp.int64_t[::1] rows, const cnp.int64_t[::1] cols,
                  const cnp.int64_t[::1] indptr, cnp.int64_t[::1] next_free,
                  cnp.int64_t[::1] indices, cnp.int64_t[::1] slots):
    """slots[i] = next_free[cols[i]]++ and indices[slots[i]] = rows[i], in order.

    Returns False, having stopped, if an entry's row is not above the row placed before
    it in its column (the entries did not come in sorted order); True otherwise.
    """
    cdef Py_ssize_t m = rows.shape[0], i
    cdef cnp.int64_t c, s
    cdef bint ok = True
    if cols.shape[0] != m or slots.shape[0] != m or next_free.shape[0] + 1 != indptr.shape[0]:
        raise ValueError("rows, cols and slots must match, and next_free have a slot per column")
    if m and (np.asarray(cols).min() < 0 or np.asarray(cols).max() >= next_free.shape[0]):
        raise ValueError(f"cols must lie in [0, {next_free.shape[0]})")
    with nogil:
        for i in range(m):
            c = cols[i]
            s = next_free[c]
            if s >= indptr[c + 1] or (s > indptr[c] and indices[s - 1] >= rows[i]):
                ok = False
                break
            indices[s] = rows[i]
            slots[i] = s
            next_free[c] = s + 1
    return ok
