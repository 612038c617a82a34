"""lmer on Parquet read in batches (batches.py, streaming.py) against the in-memory fit.

The data are written to several files with small row groups, and read with small
batches, so that every fit crosses many batch, row-group and file boundaries (level
pairs of crossed terms split across batches, a factor level absent from some files).

Two comparisons per model:

- at the same theta (the in-memory optimum), the criterion, beta, sigma, vcov and the
  conditional modes u: 1e-10 relative (they differ only by summation order, ~1e-13);
- the fits themselves: fixef, sigma and the criterion to 1e-10 relative. theta is
  compared to 1e-8: the optimizer's Newton polish uses finite differences, which turn
  rounding of the criterion into ~1e-9 moves of theta; the in-memory fit of the same
  rows in another order moves theta by 2e-10 to 1.4e-9 (sleepstudy, measured), so a
  tighter bound would fail between two in-memory fits too.
"""
import tracemalloc
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from refdata import load_data

import glmm_sparse as gs

BATCH = 128


def make_data(n=3000, seed=1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g, h = rng.integers(0, 40, n), rng.integers(0, 15, n)
    a, b = rng.integers(0, 8, n), rng.integers(0, 4, n)
    x = rng.normal(size=n)
    f = rng.choice(["a", "b"], n)
    f[-300:] = rng.choice(["a", "b", "c"], 300)  # level "c" only in the last file
    bg, sg, bh = rng.normal(size=40), 0.3 * rng.normal(size=40), 0.5 * rng.normal(size=15)
    bab = 0.4 * rng.normal(size=(8, 4))
    y = (100 + 2 * x + (f == "b") - (f == "c") + bg[g] + sg[g] * x + bh[h] + bab[a, b]
         + rng.normal(size=n))
    return pd.DataFrame({"y": y, "x": x, "x2": 2 * x, "f": f, "g": [f"g{i:02d}" for i in g],
                         "h": h, "a": [f"a{i}" for i in a], "b": [f"b{i}" for i in b],
                         "w": rng.uniform(0.5, 2, n), "o": 0.1 * rng.normal(size=n)})


def write_parts(df: pd.DataFrame, folder, parts=3, row_group=200) -> list[str]:
    paths = []
    for i, rows in enumerate(np.array_split(np.arange(len(df)), parts)):
        path = str(folder / f"part{i}.parquet")
        pq.write_table(pa.Table.from_pandas(df.iloc[rows], preserve_index=False), path,
                       row_group_size=row_group)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def data():
    return make_data()


@pytest.fixture(scope="module")
def folder(data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("parts")
    write_parts(data, folder)
    return folder


def fit_both(formula, memory, source, **kwargs):
    """The in-memory and streamed fits, and the warnings each raised."""
    caught = []
    for data, extra in ((memory, {}), (source, dict(streaming=True, batch_rows=BATCH))):
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            fit = gs.lmer(formula, data, **kwargs, **extra)
        caught.append((fit, sorted((type(x.message).__name__, str(x.message)) for x in w)))
    return caught


def rel(a, b) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(a), 1e-300))) if a.size else 0.0


def assert_same(m0, m1):
    """Same fit (see the module docstring for the two tolerances)."""
    assert list(m1.fixef.index) == list(m0.fixef.index)
    assert m1.nobs == m0.nobs and m1.n_dropped == m0.n_dropped
    assert rel(m0.fixef, m1.fixef) < 1e-10
    assert rel(m0.sigma, m1.sigma) < 1e-10
    assert rel(m0.objective, m1.objective) < 1e-10
    np.testing.assert_allclose(m1.theta, m0.theta, rtol=1e-8, atol=1e-9)
    assert list(m1.ranef["grp"]) == list(m0.ranef["grp"])
    assert list(m1.varcorr["grp"]) == list(m0.varcorr["grp"])
    o0, o1 = m0.model.at_optimum(), m1.model.new_objective()
    o1.update(m0.theta)
    assert rel(o0.objective(), o1.objective()) < 1e-10
    assert rel(o0.beta(), o1.beta()) < 1e-10
    assert rel(o0.sigma(), o1.sigma()) < 1e-10
    assert rel(o0.vcov_unscaled(), o1.vcov_unscaled()) < 1e-10
    assert rel(o0.u(), o1.u()) < 1e-10


MODELS = {
    "intercept": ("y ~ x + (1 | g)", {}),
    "slope": ("y ~ x + (x | g)", {}),
    "crossed": ("y ~ x + (1 | g) + (1 | h)", {}),
    "nested": ("y ~ x + (1 | a/b)", {}),
    "weights_offset": ("y ~ x + (1 | g)", dict(weights="w", offset="o")),
    "factor_uncorrelated": ("y ~ x + f + (x || g) + (1 | h)", {}),
    "ml_offset_term": ("y ~ x + offset(o) + (1 | g) + (1 | h)", dict(reml=False)),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_streamed_fit_equals_in_memory(name, data, folder):
    formula, kwargs = MODELS[name]
    (m0, w0), (m1, w1) = fit_both(formula, data, str(folder), **kwargs)
    assert w1 == w0
    assert_same(m0, m1)
    assert m1.fitted is None and m1.residuals is None


def test_factor_level_absent_from_some_files(data, folder):
    """f = "c" is only in the last file: every batch still has f's three columns."""
    (m0, _), (m1, _) = fit_both("y ~ x + f + (1 | g)", data, str(folder))
    assert list(m1.fixef.index) == ["(Intercept)", "x", "fb", "fc"]
    assert_same(m0, m1)


def test_aliased_column_dropped_with_the_same_warning(data, folder):
    (m0, w0), (m1, w1) = fit_both("y ~ x + x2 + (1 | g)", data, str(folder))
    assert w1 == w0 and any("x2" in msg for _, msg in w1)
    assert m1.dropped_columns == ("x2",)
    assert_same(m0, m1)


def test_missing_values_dropped_as_in_memory(data, tmp_path):
    df = data.copy()
    df.loc[[3, 500, 2999], "x"] = np.nan
    df["g"] = df["g"].astype(object)
    df.loc[[7, 1200], "g"] = None
    write_parts(df, tmp_path)
    (m0, w0), (m1, w1) = fit_both("y ~ x + (1 | g)", df, str(tmp_path))
    assert w1 == w0 == [("DroppedRowsWarning", "5 rows with missing values dropped (2995 used)")]
    assert_same(m0, m1)
    with pytest.raises(gs.DataError, match="5 rows have missing values"):
        gs.lmer("y ~ x + (1 | g)", str(tmp_path), streaming=True, na_action="raise")


def test_glob_file_and_dataset_sources(data, folder):
    m0 = gs.lmer("y ~ x + (1 | g) + (1 | h)", data)
    for source in (str(folder / "part*.parquet"), ds.dataset(str(folder), format="parquet")):
        m1 = gs.lmer("y ~ x + (1 | g) + (1 | h)", source, streaming=True, batch_rows=BATCH)
        assert_same(m0, m1)
    one = data.iloc[:1000]
    (m0, _), (m1, _) = fit_both("y ~ x + (1 | g)", one, str(folder / "part0.parquet"))
    assert_same(m0, m1)


def test_dictionary_columns_keep_their_categories(data, tmp_path):
    """Categoricals written by pandas are dictionary-encoded: their category order (not
    sorted) gives the levels and the reference level, as pd.read_parquet reads them."""
    df = data.assign(g=pd.Categorical(data["g"], categories=sorted(data["g"].unique())[::-1]),
                     f=pd.Categorical(data["f"], categories=["b", "c", "a"]))
    write_parts(df, tmp_path)
    assert pa.types.is_dictionary(pq.read_schema(tmp_path / "part0.parquet").field("g").type)
    whole = pd.read_parquet(tmp_path)
    (m0, _), (m1, _) = fit_both("y ~ x + f + (x | g)", whole, str(tmp_path))
    assert list(m1.fixef.index) == ["(Intercept)", "x", "fc", "fa"]
    assert list(m1.ranef["grp"][:2]) == ["g39", "g38"]
    assert_same(m0, m1)


def test_streaming_false_reads_whole(data, folder):
    m = gs.lmer("y ~ x + (1 | g)", str(folder), streaming=False)
    assert m.fitted is not None and len(m.fitted) == len(data)
    m_auto = gs.lmer("y ~ x + (1 | g)", str(folder))  # small: in memory by default
    assert m_auto.fitted is not None


def test_rowless_result_refuses_row_methods_clearly(data, folder):
    m = gs.lmer("y ~ x + (1 | g)", str(folder), streaming=True, batch_rows=BATCH)
    with pytest.raises(gs.DataError, match="streaming=False"):
        m.model.frame.y
    assert m.model.at_optimum().objective() == pytest.approx(m.objective, rel=1e-12)


def test_bad_inputs(data, folder, tmp_path):
    with pytest.raises(gs.DataError, match="does not exist"):
        gs.lmer("y ~ x + (1 | g)", str(tmp_path / "nope.parquet"), streaming=True)
    with pytest.raises(gs.DataError, match="no file matches"):
        gs.lmer("y ~ x + (1 | g)", str(tmp_path / "nope*.parquet"), streaming=True)
    with pytest.raises(gs.FormulaError, match="'z' used in the formula is not in the data"):
        gs.lmer("y ~ z + (1 | g)", str(folder), streaming=True)
    other = tmp_path / "mixed"
    other.mkdir()
    write_parts(data.iloc[:1500], other, parts=1)
    bad = data.iloc[1500:].assign(x=data["x"].iloc[1500:].astype(str))
    pq.write_table(pa.Table.from_pandas(bad, preserve_index=False), other / "part9.parquet")
    with pytest.raises(gs.DataError, match="column .x. has type double in .* but (large_)?string in"):
        gs.lmer("y ~ x + (1 | g)", str(other), streaming=True)
    with pytest.raises(gs.ModelSpecError, match="stateful transform"):
        gs.lmer("y ~ scale(x) + (1 | g)", str(folder), streaming=True)
    with pytest.raises(gs.ModelSpecError, match="column"):
        gs.lmer("y ~ x + (1 | g)", str(folder), streaming=True, weights=np.ones(len(data)))


def test_memory_stays_bounded(tmp_path):
    """10^6 rows in batches of 2^16: the streamed fit's peak of traced (NumPy and Python)
    memory is a batch and the sums; the in-memory fit holds every column of every row.
    Measured: 7.0 MB against 80 MB (ratio 11)."""
    rng = np.random.default_rng(3)
    n, nlev = 1_000_000, 500
    g = rng.integers(0, nlev, n)
    df = pd.DataFrame({"y": rng.normal(size=nlev)[g] + rng.normal(size=n),
                       "x": rng.normal(size=n), "g": g})
    path = tmp_path / "big.parquet"
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path, row_group_size=1 << 17)
    del df
    peaks = {}
    for streaming in (True, False):
        tracemalloc.start()
        fit = gs.lmer("y ~ x + (1 | g)", str(path), streaming=streaming)
        peaks[streaming] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert fit.nobs == n
    assert peaks[True] < peaks[False] / 5, peaks


def test_a_streamed_fit_has_a_summary_and_a_dict(tmp_path):
    data = load_data("sleepstudy")
    path = tmp_path / "sleep.parquet"
    data.to_parquet(path)
    m = gs.lmer("Reaction ~ Days + (Days | Subject)", str(path), streaming=True)
    text = m.summary(ddf="none")
    assert "Scaled residuals: not kept" in text
    memory = gs.lmer("Reaction ~ Days + (Days | Subject)", data)
    # everything after the residuals' block is the in-memory fit's
    assert text.split("Random effects:")[1] == memory.summary(ddf="none").split("Random effects:")[1]
    d = m.to_dict()
    assert d["fitted"] is None and d["residuals"] is None
    assert d["fixef"] == pytest.approx(memory.to_dict()["fixef"], rel=1e-10)


def test_methods_that_need_the_rows_say_so(tmp_path):
    path = tmp_path / "sleep.parquet"
    load_data("sleepstudy").to_parquet(path)
    m = gs.lmer("Reaction ~ Days + (Days | Subject)", str(path), streaming=True)
    with pytest.raises(gs.ModelSpecError, match="streaming=False"):
        m.predict(load_data("sleepstudy").head())
    with pytest.raises(gs.DataError, match="streaming=False"):
        m.refit(load_data("sleepstudy")["Reaction"])
    with pytest.raises(gs.DataError, match="streaming=False"):
        gs.plots.residual_plot(m)


def test_logging_and_progress(data, folder, caplog, capfd, monkeypatch):
    """The passes are logged on the "glmm_sparse" logger; no progress bar is drawn when
    stderr is not a terminal (as under pytest), one per pass when it is."""
    import logging
    import sys

    with caplog.at_level(logging.INFO, logger="glmm_sparse"):
        gs.lmer("y ~ x + (1 | g) + (1 | h)", str(folder), streaming=True, batch_rows=BATCH)
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("glmm_sparse")]
    assert any("streaming 3000 rows from 3 Parquet file(s)" in m for m in messages)
    assert any(m.startswith("levels pass: 3000 rows (3000 complete)") and "'h': 15" in m
               for m in messages)
    assert any(m.startswith("cross-products pass: 3000 rows") for m in messages)
    assert any(m.startswith("fit: q = 55 random effects, p = 2 fixed effects") for m in messages)
    out, err = capfd.readouterr()
    assert out == "" and "%|" not in err and "\r" not in err  # no tqdm bar
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    gs.lmer("y ~ x + (1 | g)", str(folder), streaming=True, batch_rows=BATCH)
    err = capfd.readouterr().err
    assert "levels pass" in err and "cross-products pass" in err and "%|" in err


def test_partitions_merged_equal_one_pass(data):
    """Partial sums of row partitions, merged (in any grouping), equal the sums of one
    pass over all rows: same fit to 1e-10 (at the same theta: summation order only)."""
    from glmm_sparse import partials, streaming
    from glmm_sparse.formula import parse_formula

    formula = "y ~ x + f + (x | g) + (1 | h)"
    spec = streaming.stream_spec(formula, parse_formula(formula),
                                 pa.Schema.from_pandas(data, preserve_index=False),
                                 weights="w", offset="o", na_action="omit", batch_rows=BATCH)
    pieces = np.array_split(np.arange(len(data)), 7)
    scans = [spec.scan_partition(data.iloc[p]) for p in pieces]
    scan = partials.tree_merge(scans, lambda a, b: a.merge(b))
    assert scan.n_complete == len(data) and scan.centre == pytest.approx(
        float((data["y"] - data["o"]).mean()), rel=1e-14)
    acc = spec.accumulator(scan)
    parts = [streaming.accumulate_partition(acc, pa.Table.from_pandas(data.iloc[p]), BATCH)
             for p in pieces]
    left = parts[0]
    for part in parts[1:]:  # a left fold and a tree give the same sums to rounding
        left = partials.merge_partials(left, part)
    tree = partials.tree_merge(parts, partials.merge_partials)
    for merged in (left, tree):
        assert merged.rows == len(data)
        np.testing.assert_allclose(merged.sums.gram, tree.sums.gram, rtol=1e-12)
    m1 = streaming.fit_partials(spec, scan, spec.accumulator(scan), tree,
                                source_name="partitions", reml=True, sigma=None, start=None,
                                check_convergence=True, options={}, factor_mode="measure",
                                stacklevel=2)
    assert_same(gs.lmer(formula, data, weights="w", offset="o"), m1)


def test_a_float_grouping_column_is_labelled_as_in_memory(tmp_path):
    data = load_data("sleepstudy")
    data["S"] = data["Subject"].astype(str).astype(float)
    path = tmp_path / "sleep.parquet"
    data.to_parquet(path)
    formula = "Reaction ~ Days + (1 | S)"
    streamed = gs.lmer(formula, str(path), streaming=True)
    memory = gs.lmer(formula, data)
    assert list(streamed.ranef["grp"]) == list(memory.ranef["grp"])
    assert streamed.ranef["grp"].iloc[0] == "308"
