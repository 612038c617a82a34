"""Dense test matrices as the compiled kernels take them (CSC, upper triangle)."""
import numpy as np


def upper_csc(M):
    """(indptr, indices, data) of the upper triangle of M (diagonal always stored)."""
    n = M.shape[0]
    mask = np.triu(M != 0) | np.eye(n, dtype=bool)
    cols = [np.flatnonzero(mask[:, j]) for j in range(n)]
    indptr = np.concatenate([[0], np.cumsum([len(c) for c in cols])]).astype(np.int64)
    indices = np.concatenate(cols).astype(np.int64)
    data = M[indices, np.repeat(np.arange(n), np.diff(indptr))]
    return indptr, indices, data
