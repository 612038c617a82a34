"""The merge of keyed level-pair blocks (partials._merge_blocks) against a dense oracle, and
the QR update of the running R (partials.qr_update)."""
import numpy as np
import pytest

from glmm_sparse.partials import BlockRuns, QRStack, _merge_blocks, qr_update, union_of_sorted


def oracle(a, b):
    """The same sum through np.union1d and searchsorted (the former implementation)."""
    keys = np.union1d(a[0], b[0])
    A = np.zeros((len(keys), *a[1].shape[1:]))
    A[np.searchsorted(keys, a[0])] += a[1]
    A[np.searchsorted(keys, b[0])] += b[1]
    return keys, A


@pytest.mark.parametrize("na, nb, span", [(0, 0, 5), (0, 4, 9), (5, 0, 9), (1, 1, 1),
                                          (50, 30, 60), (500, 700, 100_000), (40, 40, 40)])
def test_merge_equals_the_oracle(na, nb, span):
    rng = np.random.default_rng(na * 1000 + nb)
    ka = np.unique(rng.integers(0, span, na)).astype(np.int64)
    kb = np.unique(rng.integers(0, span, nb)).astype(np.int64)
    a = (ka, rng.random((len(ka), 2, 3)))
    b = (kb, rng.random((len(kb), 2, 3)))
    keys, A = _merge_blocks(a, b)
    want_keys, want_A = oracle(a, b)
    np.testing.assert_array_equal(keys, want_keys)
    np.testing.assert_array_equal(A, want_A)  # the same additions in the same order


def test_block_runs_sum_batches_in_any_grouping():
    rng = np.random.default_rng(3)
    runs, dense = BlockRuns((1, 1)), np.zeros(200)
    for _ in range(13):
        keys = np.unique(rng.integers(0, 200, 40)).astype(np.int64)
        values = rng.random((len(keys), 1, 1))
        runs.add(keys, values)
        dense[keys] += values[:, 0, 0]
    keys, A = runs.result()
    assert np.all(np.diff(keys) > 0)
    np.testing.assert_allclose(A[:, 0, 0], dense[keys], rtol=1e-14)
    assert set(np.flatnonzero(dense)) == set(keys)


def test_union_of_sorted_says_where_each_key_lands():
    ka = np.array([1, 4, 9], dtype=np.int64)
    kb = np.array([0, 4, 5, 9, 12], dtype=np.int64)
    keys, where = union_of_sorted(ka, kb)
    np.testing.assert_array_equal(keys, [0, 1, 4, 5, 9, 12])
    np.testing.assert_array_equal(keys[where], np.concatenate([ka, kb]))


@pytest.mark.parametrize("k, nb, m", [(0, 5, 3), (0, 2, 3), (2, 1, 3), (3, 500, 3), (0, 0, 3),
                                      (3, 0, 3), (0, 4, 1), (4, 1000, 4)])
def test_qr_update_is_the_r_of_the_stack(k, nb, m):
    """R of [R; rows]: upper triangular (min(k + nb, m) x m), R'R = the stack's Gram, and
    np.linalg.qr's R up to the signs of its rows."""
    rng = np.random.default_rng(k + nb + m)
    R = np.triu(rng.normal(size=(k, m)))
    rows = rng.normal(size=(nb, m))
    stack = np.vstack([R, rows])
    got = qr_update(R, rows)
    assert got.shape == (min(k + nb, m), m) and np.array_equal(got, np.triu(got))
    np.testing.assert_allclose(got.T @ got, stack.T @ stack, rtol=1e-12, atol=1e-12)
    if got.size:
        want = np.linalg.qr(stack, mode="r")
        signs = np.sign(np.diag(want)) * np.sign(np.diag(got))
        np.testing.assert_allclose(got * signs[:, None], want, rtol=1e-12, atol=1e-12)


def test_qr_stacks_in_threads_and_pickled():
    """One QRStack per running R, used by threads at once, each with its buffer; a
    pickled stack ships without it."""
    import pickle
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(3)
    blocks = [rng.normal(size=(2000, 3)) for _ in range(16)]
    want = [np.abs(np.linalg.qr(b, mode="r")) for b in blocks]
    stacks = [QRStack() for _ in range(16)]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda i: stacks[i].update(np.zeros((0, 3)), blocks[i]), range(16)))
    for i, r in enumerate(got):
        np.testing.assert_allclose(np.abs(r), want[i], rtol=1e-12)
    R = stacks[0].update(got[0], blocks[1])  # the next stack of another shape
    np.testing.assert_allclose(np.abs(R), np.abs(np.linalg.qr(np.vstack(blocks[:2]), mode="r")),
                               rtol=1e-12)
    assert stacks[0].buf is not None and pickle.loads(pickle.dumps(stacks[0])).buf is None
    with pytest.raises(ValueError, match="R has 2 columns, the rows 3"):
        qr_update(np.zeros((2, 2)), blocks[0])
