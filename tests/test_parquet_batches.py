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
import datetime
import decimal
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


@pytest.mark.parametrize("name", ["slope", "weights_offset", "factor_uncorrelated"])
def test_fixed_effects_crossproducts_equal_in_memory(name, data, folder):
    """A streamed pass keeps no Gram of [X y]: X'WX, X'W(y - X s) and (y - X s)'W(y -
    X s) come from the R of its QR (s: the shift taken out of y, ``beta_shift``; the
    in-memory fit's is unweighted least squares, the streamed one's weighted). They
    equal the in-memory sums to rounding: X'WX entry by entry, X'W(y - offset) (undoing
    each side's shift) and the weighted least-squares residual sum of squares."""
    formula, kwargs = MODELS[name]
    (m0, _), (m1, _) = fit_both(formula, data, str(folder), **kwargs)
    parts = []
    for m in (m0, m1):
        cp = m.model.crossproducts()
        G, p = cp.XtWXy, cp.XtWXy.shape[0] - 1
        XWX, XWr = G[:p, :p], G[:p, p]
        parts.append((XWX, XWr + XWX @ cp.beta_shift, G[p, p] - XWr @ np.linalg.solve(XWX, XWr)))
    (XWX0, XWy0, rss0), (XWX1, XWy1, rss1) = parts
    scale = np.abs(XWX0).max()
    np.testing.assert_allclose(XWX1, XWX0, rtol=0, atol=1e-13 * scale)
    assert rel(XWy0, XWy1) < 1e-13
    assert rel(rss0, rss1) < 1e-13


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


PEAK_SCRIPT = """
import sys, tracemalloc
import pyarrow as pa
import glmm_sparse as gs
tracemalloc.start()
fit = gs.lmer("y ~ x + (1 | g)", sys.argv[1], streaming=True, progress=False)
print(fit.nobs, tracemalloc.get_traced_memory()[1], pa.default_memory_pool().max_memory())
"""


def streamed_peaks(path) -> tuple[int, int, int]:
    """nobs, and the peaks of traced (NumPy, Python) memory and of Arrow's memory pool
    (which tracemalloc does not see) of a streamed fit, in a fresh process each."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(path)], check=True,
                         capture_output=True, text=True).stdout
    return tuple(int(v) for v in out.split())


def test_memory_stays_bounded(tmp_path):
    """One file of 2^18 and one of 2^20 rows, row groups of 2^16, batches of 2^16 (4 and
    16 batches: the pipelined pass holds the batch its kernels add, the batch it encodes
    and one read ahead from the fourth batch on): both peaks, Python's and Arrow's, stay
    those of a few batches and the sums. Measured on 2 threads: 12.0 MB traced and
    8.3 MB of Arrow's pool at both sizes (9.9 MB and 7.7 MB at 2^17, two batches; on one
    thread, nothing overlapped, 8.3 MB and 7.7 MB at all four sizes; reading with
    pyarrow's default pre-buffering, Arrow's pool grew with the file: 8.1 MB, 16.0 MB,
    26.5 MB at 2^17, 2^19, 2^20)."""
    rng = np.random.default_rng(3)
    peaks = {}
    for n in (1 << 18, 1 << 20):
        g = rng.integers(0, 500, n)
        df = pd.DataFrame({"y": rng.normal(size=500)[g] + rng.normal(size=n),
                           "x": rng.normal(size=n), "g": g})
        path = tmp_path / f"rows{n}.parquet"
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path,
                       row_group_size=1 << 16)
        nobs, traced, arrow = streamed_peaks(path)
        assert nobs == n
        peaks[n] = traced, arrow
    (t_small, a_small), (t_big, a_big) = peaks[1 << 18], peaks[1 << 20]
    assert t_big < 1.2 * t_small + 2**20, peaks
    assert a_big < 1.2 * a_small + 2**20, peaks
    assert max(t_big, a_big) < 16 * 2**20, peaks  # the 3 columns of 2^20 rows are 24 MB


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
    one = streaming.accumulate_partition(acc, data, BATCH)  # every row in one partition
    assert left.rows == tree.rows == one.rows == len(data)
    for merged in (left, tree):
        np.testing.assert_allclose(np.abs(merged.sums.R), np.abs(one.sums.R), rtol=1e-10,
                                   atol=1e-9)
        for a, b in zip(merged.sums.cross, one.sums.cross):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-9)
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


# -- files the review found read differently (W1-W4, C1-C5) ----------------------------------
def mixed_levels_data(n=600, seed=7) -> pd.DataFrame:
    """g has levels g0-g2 in the first half of the rows and g0-g4 in the second."""
    rng = np.random.default_rng(seed)
    half = np.arange(n) < n // 2
    g = np.where(half, rng.choice(["g2", "g0", "g1"], n), rng.choice([f"g{i}" for i in range(5)], n))
    a = rng.integers(0, 12, n)
    y = (np.char.lstrip(g.astype(str), "g").astype(int) + rng.normal(size=12)[a]
         + rng.normal(size=n))
    return pd.DataFrame({"y": y, "x": rng.normal(size=n), "g": g,
                         "a": [f"a{i:02d}" for i in a]})


def write_mixed(df: pd.DataFrame, folder, dictionary_first: bool) -> None:
    """g as a Categorical (dictionary-encoded) in one file and as text in the other."""
    half = len(df) // 2
    first, second = df.iloc[:half].copy(), df.iloc[half:].copy()
    (first if dictionary_first else second)["g"] = (
        first if dictionary_first else second)["g"].astype("category")
    pq.write_table(pa.Table.from_pandas(first, preserve_index=False), folder / "a.parquet",
                   row_group_size=100)
    pq.write_table(pa.Table.from_pandas(second, preserve_index=False), folder / "b.parquet",
                   row_group_size=100)


@pytest.mark.parametrize("dictionary_first", [True, False])
@pytest.mark.parametrize("formula", ["y ~ x + g + (1 | a)", "y ~ x + (1 | g)"])
def test_dictionary_and_plain_files_with_other_levels(tmp_path, dictionary_first, formula):
    """g is a Categorical of g0-g2 in one file and text g0-g4 in the other: the levels are
    those pd.read_parquet gives (a Categorical extended by g3, g4 in order of appearance
    when the dictionary comes first; sorted text otherwise). The levels of the plain file
    used to be lost: their rows got the reference level's dummies, or a crash."""
    df = mixed_levels_data()
    write_mixed(df, tmp_path, dictionary_first)
    whole = pd.read_parquet(tmp_path)
    assert isinstance(whole["g"].dtype, pd.CategoricalDtype) == dictionary_first
    (m0, w0), (m1, w1) = fit_both(formula, whole, str(tmp_path))
    assert w1 == w0
    assert_same(m0, m1)
    names = list(m1.fixef.index) if "+ g" in formula else list(m1.ranef["grp"])
    assert len([v for v in names if "g3" in v or "g4" in v]) == 2


def test_known_sigma_streamed_as_in_memory(tmp_path):
    """lmer(sigma=) streamed: one row per trial is identifiable (as in memory) and the
    boundary of the fixed-sigma criterion is escaped (models.optimize_lmm). Reference:
    metafor 3.8.1 rma of the BCG trials (tests/reference/inference/generate_bcg.R)."""
    import json
    from pathlib import Path

    ref_dir = Path(__file__).parent / "reference" / "inference"
    ref = json.loads((ref_dir / "bcg_known_variances.json").read_text())
    d = pd.read_csv(ref_dir / "bcg.csv").assign(w=lambda f: 1.0 / f["vi"])
    d["trial"] = d["trial"].astype(str)
    d.to_parquet(tmp_path / "bcg.parquet")
    for method in ("ml", "reml"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m = gs.lmer("yi ~ ablat + alloc + (1 | trial)", str(tmp_path / "bcg.parquet"),
                        weights="w", sigma=1.0, reml=method == "reml", streaming=True)
        assert float(m.varcorr["vcov"].iloc[0]) == pytest.approx(ref[method]["tau2"],
                                                                 rel=1e-5)
        np.testing.assert_allclose(m.fixef.to_numpy(), ref[method]["beta"], rtol=1e-5)
        if method == "ml":
            assert m.loglik == pytest.approx(ref["ml"]["loglik_unrestricted"], rel=1e-7)


def test_underscore_and_dot_paths_are_left_out(data, tmp_path):
    """Spark's _temporary/ attempts, _SUCCESS and hidden files are not data (pyarrow's
    ignore_prefixes); both paths read the 3000 rows pd.read_parquet reads."""
    write_parts(data, tmp_path)
    (tmp_path / "_temporary" / "0").mkdir(parents=True)
    write_parts(data.iloc[:100], tmp_path / "_temporary" / "0", parts=1)
    pq.write_table(pa.Table.from_pandas(data.iloc[:50], preserve_index=False),
                   tmp_path / ".hidden.parquet")
    (tmp_path / "_SUCCESS").touch()
    assert len(pd.read_parquet(tmp_path)) == len(data)
    (m0, _), (m1, _) = fit_both("y ~ x + (1 | g)", data, str(tmp_path))
    assert_same(m0, m1)
    assert gs.lmer("y ~ x + (1 | g)", str(tmp_path), streaming=False).nobs == len(data)


def dated(n=400, seed=1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    k = rng.integers(0, 6, n)
    ts = pd.Timestamp("2024-01-01") + pd.to_timedelta(k, unit="D")
    return pd.DataFrame({"y": rng.normal(size=n) + 0.5 * rng.normal(size=6)[k] + 0.3 * k,
                         "x": rng.normal(size=n), "g": rng.choice([f"g{i}" for i in range(10)], n),
                         "ts": ts, "day": ts.date})


@pytest.mark.parametrize("formula", ["y ~ x + (1 | ts)", "y ~ x + (1 | day)",
                                     "y ~ x + day + (1 | g)"])
def test_dates_and_timestamps_as_in_memory(tmp_path, formula):
    """Timestamp levels labelled as pandas prints them ('2024-01-01 00:00:00', not NumPy's
    '2024-01-01T00:00:00.000000'); dates without a pandas warning per batch; a date in
    the fixed part a factor, as in memory (it used to fail in formulaic)."""
    df = dated()
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), tmp_path / "d.parquet",
                   row_group_size=64)
    (m0, w0), (m1, w1) = fit_both(formula, pd.read_parquet(tmp_path), str(tmp_path))
    assert w1 == w0
    assert_same(m0, m1)
    if "ts" in formula:
        assert m1.ranef["grp"].iloc[0] == "2024-01-01 00:00:00"
    if "+ day" in formula:
        assert list(m1.fixef.index)[2] == "day2024-01-02"


def test_numeric_types_of_other_widths_across_files(data, tmp_path):
    """int32 in one file and int64 in another, or int64 and double, are unified (as
    pyarrow's permissive promotion does) instead of refused."""
    df = data.assign(k=np.arange(len(data)) % 7)
    a = pa.Table.from_pandas(df.iloc[:1500], preserve_index=False)
    a = a.set_column(a.schema.get_field_index("k"), "k", a.column("k").cast(pa.int32()))
    pq.write_table(a, tmp_path / "a.parquet", row_group_size=200)
    pq.write_table(pa.Table.from_pandas(df.iloc[1500:].assign(k=df["k"].iloc[1500:] * 1.0),
                                        preserve_index=False), tmp_path / "b.parquet")
    for formula in ("y ~ x + k + (1 | g)", "y ~ x + (1 | k)"):
        (m0, w0), (m1, w1) = fit_both(formula, df, str(tmp_path))
        assert w1 == w0
        assert_same(m0, m1)


def test_an_empty_pandas_file_with_null_columns(data, tmp_path):
    """pandas writes an empty object column with type null: such a file adds no rows and
    is left out, in both paths (in memory pyarrow could not cast it: a traceback)."""
    empty = data.iloc[:0].astype({"g": object, "f": object})
    table = pa.Table.from_pandas(empty, preserve_index=False)
    assert pa.types.is_null(table.schema.field("g").type)
    pq.write_table(table, tmp_path / "a.parquet")
    (tmp_path / "rest").mkdir()
    write_parts(data, tmp_path / "rest")
    for i, path in enumerate(sorted((tmp_path / "rest").iterdir())):
        path.rename(tmp_path / f"b{i}.parquet")
    (tmp_path / "rest").rmdir()
    (m0, _), (m1, _) = fit_both("y ~ x + f + (1 | g)", data, str(tmp_path))
    assert_same(m0, m1)
    assert_same(m0, gs.lmer("y ~ x + f + (1 | g)", str(tmp_path), streaming=False))


def test_a_file_pyarrow_cannot_read_is_a_data_error(data, tmp_path):
    """Arrow's own errors (here a null column with rows against text) become DataErrors."""
    pq.write_table(pa.Table.from_pandas(data.iloc[:10].assign(g=None), preserve_index=False),
                   tmp_path / "a.parquet")
    write_parts(data.iloc[10:], tmp_path, parts=1)
    for streaming in (True, False):
        with pytest.raises(gs.DataError, match="column 'g'|cannot read the Parquet data"):
            gs.lmer("y ~ x + (1 | g)", str(tmp_path), streaming=streaming)


def test_decimal_columns_are_numbers_in_both_paths(data, tmp_path):
    """A decimal128 column (Spark writes them) is read as float64 by both paths: x is one
    coefficient, not a factor with a level per value."""
    df = data.assign(x=data["x"].round(6))
    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.set_column(table.schema.get_field_index("x"), "x",
                             pa.array([decimal.Decimal(f"{v:.6f}") for v in df["x"]],
                                      pa.decimal128(12, 6)))
    pq.write_table(table, tmp_path / "a.parquet", row_group_size=500)
    m_ref = gs.lmer("y ~ x + (1 | g)", df)
    for streaming in (True, False):
        m = gs.lmer("y ~ x + (1 | g)", str(tmp_path), streaming=streaming, batch_rows=BATCH)
        assert list(m.fixef.index) == ["(Intercept)", "x"]
        assert rel(m_ref.fixef, m.fixef) < 1e-10


def test_hive_partition_columns_are_named(data, tmp_path):
    """A streamed fit reads the columns inside the files; a partition column (k=value
    directories) is refused by name, for a directory and for a pyarrow Dataset."""
    df = data.assign(k=np.arange(len(data)) % 4)
    pq.write_to_dataset(pa.Table.from_pandas(df, preserve_index=False), str(tmp_path),
                        partition_cols=["k"])
    for source in (str(tmp_path), ds.dataset(str(tmp_path), format="parquet",
                                             partitioning="hive")):
        with pytest.raises(gs.DataError, match="column 'k' is a partition column .* write "
                                               "'k' into the files"):
            gs.lmer("y ~ x + (1 | k)", source, streaming=True)
    m = gs.lmer("y ~ x + (1 | g)", str(tmp_path), streaming=True, batch_rows=BATCH)
    assert m.nobs == len(data)
