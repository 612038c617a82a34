"""M's pattern placed by a counting sort on columns equals the pattern sorted whole.

build_pattern places each group of blocks in the next free slots of their columns
(pattern._place_blocks); _sorted_pattern sorts every entry by (column, row), the plain
definition. Both must give the same CSC arrays and block positions, and blocks that do
not come in order must take the sorting path.
"""
from dataclasses import replace

import numpy as np
import pytest

from glmm_sparse.crossprod import accumulate
from glmm_sparse.formula import parse_formula
from glmm_sparse.frame import build_frame
from glmm_sparse.pattern import (
    _block_groups,
    _place_blocks,
    _sorted_pattern,
    build_pattern,
    pattern_size,
)
from glmm_sparse.synthetic import Design, simulate

MODELS = {
    "crossed": (Design((60, 12)), "y ~ x1 + x2 + (1 | g1) + (1 | g2)"),
    "crossed slopes": (Design((40, 9), slope=True), "y ~ x1 + x2 + (1 + x1 | g1) + (1 | g2)"),
    "three terms": (Design((30, 8, 5)), "y ~ x1 + (1 | g1) + (x1 | g2) + (1 | g3)"),
    "nested": (Design((10, 4), nested=True), "y ~ x1 + (1 | g1) + (1 | g2)"),
}


def crossproducts(name: str):
    design, formula = MODELS[name]
    data = simulate(design, 3000, seed=3)[0]
    return accumulate(build_frame(parse_formula(formula), formula, data))


def assert_same(a, b):
    assert a.q == b.q
    assert np.array_equal(a.indptr, b.indptr) and np.array_equal(a.indices, b.indices)
    for x, y in zip(a.diag_pos + a.pair_pos, b.diag_pos + b.pair_pos, strict=True):
        assert np.array_equal(x, y)


@pytest.mark.parametrize("name", MODELS)
def test_placed_pattern_equals_sorted_pattern(name):
    cp = crossproducts(name)
    diag, pairs = _block_groups(cp)
    placed = _place_blocks(cp.q, pattern_size(cp)[0], diag, pairs)
    assert placed is not None
    assert_same(placed, _sorted_pattern(cp.q, diag, pairs))
    assert_same(build_pattern(cp), placed)


def test_blocks_out_of_order_are_sorted():
    """Level pairs not sorted by (level of t, level of s): the placement refuses, and
    build_pattern sorts, giving the pattern of the sorted pairs with the blocks' own
    positions."""
    cp = crossproducts("crossed")
    pb = cp.pairs[0]
    order = np.random.default_rng(0).permutation(pb.lev_t.shape[0])
    shuffled = replace(cp, pairs=(replace(pb, lev_t=pb.lev_t[order], lev_s=pb.lev_s[order],
                                          A=pb.A[order]),))
    diag, pairs = _block_groups(shuffled)
    assert _place_blocks(shuffled.q, pattern_size(shuffled)[0], diag, pairs) is None
    got, want = build_pattern(shuffled), build_pattern(cp)
    assert np.array_equal(got.indptr, want.indptr) and np.array_equal(got.indices, want.indices)
    assert np.array_equal(got.pair_pos[0], want.pair_pos[0][order])
