"""The seeded generator: same rows in memory and in Parquet, the design's structure, and
a fit that finds the truth it was drawn from."""
import warnings

import numpy as np
import pandas as pd
import pytest

import glmm_sparse as gs
from glmm_sparse.synthetic import Design, chunks, insteval_like, simulate, write_parquet


def test_same_seed_same_rows_and_another_seed_other_rows():
    design = Design((30, 7), family="binomial")
    a, _ = simulate(design, 500, seed=4)
    b, _ = simulate(design, 500, seed=4)
    c, _ = simulate(design, 500, seed=5)
    pd.testing.assert_frame_equal(a, b)
    assert not np.array_equal(a["x1"], c["x1"])


def test_rows_do_not_depend_on_how_many_are_drawn():
    design = Design((20,))
    small, _ = simulate(design, 1000, seed=1)
    large = next(chunks(design, 5000, seed=1, chunk_rows=1000))[1]
    np.testing.assert_array_equal(small["y"].to_numpy(), large["y"])


def test_parquet_holds_the_same_rows_chunk_by_chunk(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    design = Design((50, 4), nested=True, slope=True, family="poisson")
    frame, _ = simulate(design, 3000, seed=2)
    path = write_parquet(tmp_path / "d.parquet", design, 3000, seed=2)
    back = pq.read_table(path).to_pandas()
    for name in frame.columns:
        np.testing.assert_array_equal(np.asarray(back[name].astype(str) if name[0] == "g"
                                                 else back[name]),
                                      np.asarray(frame[name].astype(str) if name[0] == "g"
                                                 else frame[name]))


@pytest.mark.parametrize("design, groups", [
    (Design((40, 6)), {"g1": 40, "g2": 6}),
    (Design((10, 5), nested=True), {"g1": 10, "g2": 50}),
])
def test_grouping_factors_have_the_designed_levels(design, groups):
    frame, truth = simulate(design, 20_000, seed=0)
    for name, nlev in groups.items():
        assert frame[name].nunique() == nlev
    assert [len(b) for b in truth.b] == list(groups.values())


def test_nested_inner_levels_belong_to_one_outer_level():
    frame, _ = simulate(Design((10, 5), nested=True), 5000, seed=0)
    assert (frame.groupby("g2", observed=True)["g1"].nunique() == 1).all()


@pytest.mark.parametrize("design", [Design((200,), slope=True), Design((150, 40))])
def test_lmer_recovers_the_truth(design):
    frame, truth = simulate(design, 40_000, seed=3)
    fit = gs.lmer(design.formula(), frame)
    np.testing.assert_allclose(fit.fixef.to_numpy(), truth.beta, atol=0.15)
    assert abs(fit.sigma - truth.sigma) < 0.02
    intercept_sd = fit.varcorr["sdcor"].iloc[0]
    assert abs(intercept_sd - truth.sd[0]) < 0.15


def test_glmer_recovers_a_binomial_truth():
    design = Design((100,), family="binomial")
    frame, truth = simulate(design, 40_000, seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = gs.glmer(design.formula(), frame, family="binomial")
    np.testing.assert_allclose(fit.fixef.to_numpy(), truth.beta, atol=0.2)


def test_insteval_like_has_the_shape_of_instEval():
    frame, _ = insteval_like(seed=0)
    assert len(frame) == 73_421
    assert frame["s"].nunique() > 2900 and frame["d"].nunique() > 1100
    assert frame.groupby(["dept", "service"], observed=True).ngroups == 28
    assert (frame.groupby("d", observed=True)["dept"].nunique() == 1).all()


@pytest.mark.parametrize("kwargs, words", [
    ({"levels": (1,)}, "at least 2 levels"),
    ({"levels": (3, 4, 5), "nested": True}, "exactly two factors"),
    ({"family": "gamma"}, "family must be one of"),
    ({"sd": (1.0, 2.0)}, "one value per grouping factor"),
])
def test_bad_designs_are_refused(kwargs, words):
    with pytest.raises(ValueError, match=words):
        Design(**kwargs)
