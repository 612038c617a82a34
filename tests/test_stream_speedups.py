"""The fast paths of the streamed passes against what they replace.

- ``levelscan.DistinctValues`` (levels kept in the column's dtype, integers as a presence
  table, ``DenseSeen``) against ``pd.unique`` and sorting of all values at once;
- ``batchframe.LevelCoder`` (a dense table for integer levels, int32 offsets for int32
  values, an Index otherwise, a dictionary's codes reused while the dictionaries are
  equal) against ``pd.Index.get_indexer`` of the decoded values;
- ``batches.complete_rows`` and the missing counts (no mask for a floating column
  without nulls whose sum is not NaN) against pandas' ``isna``;
- streamed fits whose factors take those paths (integer codes with gaps, negative
  integers, int64 IDs too far apart for a table, dictionary-encoded files whose
  dictionaries differ, a level first seen in a later file) against the in-memory fit,
  with the tolerances of ``test_parquet_batches``; and the same sums on 1 and 2 threads.
"""
import threading
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_parquet_batches import BATCH, assert_same, fit_both, make_data

import glmm_sparse as gs
from glmm_sparse import parallel, streaming
from glmm_sparse.errors import DataError
from glmm_sparse.batchframe import LevelCoder
from glmm_sparse.batches import complete_rows
from glmm_sparse.levelscan import DENSE_SPAN, ColumnLevels, DistinctValues, LevelScan

INT_CASES = {
    "codes_with_gaps": lambda c: 3 * c + 10,
    "negative": lambda c: 1000 * c - 7000,
    "huge_range": lambda c: c.astype(np.int64) * 10**12 - 5,
}


def batches_of(values, size=37):
    return [values[i:i + size] for i in range(0, len(values), size)]


@pytest.mark.parametrize("name", list(INT_CASES))
@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_distinct_integers_equal_pandas(name, dtype):
    rng = np.random.default_rng(3)
    if name == "huge_range" and dtype == np.int32:
        pytest.skip("int32 holds no 10^12")
    values = INT_CASES[name](rng.integers(0, 50, 1000)).astype(dtype)
    seen = DistinctValues()
    for part in batches_of(values):
        seen.add(part)
    assert (seen.dense is None) == (name == "huge_range")  # which path was taken
    np.testing.assert_array_equal(seen.ordered(), pd.unique(values))
    np.testing.assert_array_equal(seen.sorted(), np.unique(values))
    assert seen.sorted().dtype == dtype and seen.ordered().dtype == dtype


def test_distinct_integers_leave_the_table_when_too_sparse():
    """A first batch of close values, then one far away: the values seen so far carry
    over to the hashed path, in order."""
    seen = DistinctValues()
    first, far = np.array([5, 3, 5, 4]), np.array([7, 3 + 4 * DENSE_SPAN, 4])
    seen.add(first)
    assert seen.dense is not None
    seen.add(far)
    assert seen.dense is None
    np.testing.assert_array_equal(seen.ordered(), [5, 3, 4, 7, 3 + 4 * DENSE_SPAN])
    np.testing.assert_array_equal(seen.sorted(), [3, 4, 5, 7, 3 + 4 * DENSE_SPAN])


def test_distinct_strings_and_merge_of_partitions():
    a, b = DistinctValues(), DistinctValues()
    a.add(np.array(["b", "a", "b"], dtype=object))
    b.add(np.array(["c", "a"], dtype=object))
    a.merge(b)
    assert list(a.ordered()) == ["b", "a", "c"] and list(a.sorted()) == ["a", "b", "c"]
    i, j = DistinctValues(), DistinctValues()
    i.add(np.array([4, 2], dtype=np.int32))
    j.add(np.array([9, 2, 1], dtype=np.int32))
    i.merge(j)
    np.testing.assert_array_equal(i.ordered(), [4, 2, 9, 1])
    np.testing.assert_array_equal(i.sorted(), [1, 2, 4, 9])


@pytest.mark.parametrize("name", list(INT_CASES))
def test_level_coder_integers_equal_get_indexer(name):
    rng = np.random.default_rng(4)
    levels = np.unique(INT_CASES[name](rng.integers(0, 60, 40)).astype(np.int64))
    values = INT_CASES[name](rng.integers(-5, 70, 500)).astype(np.int64)  # some unknown
    coder = LevelCoder(levels)
    assert (coder.table is None) == (name == "huge_range")
    expected = pd.Index(levels).get_indexer(values)
    assert (expected < 0).any() and (expected >= 0).any()
    np.testing.assert_array_equal(coder.codes(pa.array(values)), expected)
    np.testing.assert_array_equal(coder.codes(pa.array(values.astype(np.int32)))
                                  if name != "huge_range" else expected, expected)


@pytest.mark.parametrize("lo", [-2**31, -7, 0, 2**31 - 40])
def test_level_coder_int32_offsets_at_the_ends_of_the_range(lo):
    """int32 values coded through int32 offsets (values - lo, wrapped modulo 2^32): equal
    to get_indexer at the ends of int32's range, for values all inside the table (the
    fast path) and with some outside it; int32 codes from the table."""
    levels = np.array([lo, lo + 3, lo + 10, lo + 39], dtype=np.int32)
    coder = LevelCoder(levels)
    assert coder.table is not None
    inside = levels[[3, 0, 0, 2, 1, 3]]
    outside = np.array([lo + 1, lo, max(lo - 1, -2**31), min(lo + 40, 2**31 - 1),
                        2**31 - 1, -2**31], dtype=np.int32)
    for values in (inside, outside, inside.astype(np.int64), outside.astype(np.uint64)
                   if lo >= 0 else outside.astype(np.int64)):
        got = coder.of(values)
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, pd.Index(levels).get_indexer(values))


@pytest.mark.parametrize("levels, identity", [
    (np.arange(-3, 40), True),  # every integer from the min up, in order: no gather
    (np.arange(40)[::-1], False),  # the same values in another order (a dictionary's)
    (np.delete(np.arange(40), 17), False),
])
@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint16])
def test_level_coder_without_a_gather_equals_get_indexer(levels, identity, dtype):
    if dtype == np.uint16:
        levels = levels - levels.min()
    levels = levels.astype(dtype)
    coder = LevelCoder(levels)
    assert coder.identity == identity
    rng = np.random.default_rng(5)
    inside = rng.choice(levels, 300)
    outside = np.append(inside, [levels.max() + 1, levels.min()]).astype(np.int64)
    for values in (inside, outside):
        got = coder.of(values)
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, pd.Index(levels).get_indexer(values))


@pytest.mark.parametrize("values, nulls", [
    ([1.0, 2.0, 3.0], [False, False, False]),
    ([1.0, np.nan, 3.0], [False, True, False]),
    ([np.inf, -np.inf, 1.0], [False, False, False]),  # a NaN sum without a NaN
    ([np.inf, -np.inf, np.nan], [False, False, True]),
    ([1.0, None, 2.0], [False, True, False]),
])
@pytest.mark.parametrize("typ", ["float64", "float32", "dictionary"])
def test_complete_rows_equal_pandas_isna(values, nulls, typ):
    col = pa.array(values, type=pa.float32() if typ == "float32" else pa.float64())
    if typ == "dictionary":
        col = col.dictionary_encode()
    batch = pa.record_batch({"v": col, "i": pa.array([1, 2, 3])})
    np.testing.assert_array_equal(complete_rows(batch, ["v", "i"]), ~np.array(nulls))
    scan = LevelScan.empty(["v", "i"], [], [])
    scan.add(batch, ["v", "i"])
    assert scan.missing == {"v": sum(nulls), "i": 0}


def test_level_coder_strings_and_changing_dictionaries():
    levels = np.array(["a", "b", "c", "d"], dtype=object)
    coder = LevelCoder(levels)
    plain = pa.array(["d", "x", None, "a"])
    np.testing.assert_array_equal(coder.codes(plain), [3, -1, -1, 0])
    first = pa.DictionaryArray.from_arrays(pa.array([0, 1, None, 1]), pa.array(["c", "a"]))
    again = pa.DictionaryArray.from_arrays(pa.array([1, 1, 0]), pa.array(["c", "a"]))
    other = pa.DictionaryArray.from_arrays(pa.array([0, 2, 1]), pa.array(["b", "zz", "c"]))
    for col in (first, again, other, first):
        expected = pd.Index(levels).get_indexer(col.to_pandas().astype(object))
        np.testing.assert_array_equal(coder.codes(col), expected)


def test_column_levels_of_changing_dictionaries_equal_pandas(tmp_path):
    """Dictionary batches whose dictionaries differ (and repeat): the categories are the
    dictionaries' values in order of first appearance, the used ones those of complete
    rows, as pd.read_parquet of the files gives them."""
    parts = [pd.Categorical(["b", "a", None], categories=["b", "a", "q"]),
             pd.Categorical(["c", "c"], categories=["c", "b"]),
             pd.Categorical(["a"], categories=["b", "a", "q"])]
    levels = ColumnLevels()
    paths = []
    for i, cat in enumerate(parts):
        table = pa.Table.from_pandas(pd.DataFrame({"f": cat}), preserve_index=False)
        paths.append(tmp_path / f"p{i}.parquet")
        pq.write_table(table, paths[-1])
        col = pq.read_table(paths[-1]).column("f").chunk(0)
        levels.add(col, col.is_valid().to_numpy(zero_copy_only=False))
    whole = pd.read_parquet([str(p) for p in paths])["f"]
    assert levels.categories(keep_unused=True) == list(whole.cat.categories)
    assert levels.categories(keep_unused=False) == ["b", "a", "c"]


def int_data(name):
    df = make_data()
    codes = df["g"].str[1:].astype(int).to_numpy()
    df["gi"] = INT_CASES[name](codes).astype(np.int64 if name == "huge_range" else np.int32)
    df["fi"] = INT_CASES[name](df["h"].to_numpy() % 4)  # a numeric factor, through C()
    return df


@pytest.mark.parametrize("name", list(INT_CASES))
def test_integer_grouping_codes_fit_equals_in_memory(name, tmp_path):
    df = int_data(name)
    formula = "y ~ x + C(fi) + (x | gi)"
    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path, row_group_size=300)
    (m0, w0), (m1, w1) = fit_both(formula, pd.read_parquet(path), str(path))
    assert w0 == w1
    assert_same(m0, m1)


def test_dictionaries_differing_between_files_fit_equals_in_memory(tmp_path):
    """Each file's factor columns are Categoricals of their own categories (in another
    order, some unused), the level 'g40' of the grouping factor only in the last file,
    a missing label in the first: the streamed fit equals the in-memory fit of
    pd.read_parquet of the files."""
    df = make_data()
    df.loc[df.index[-200:], "g"] = "g40"
    df.loc[df.index[5], "g"] = None
    rng = np.random.default_rng(7)
    paths = []
    for i, rows in enumerate(np.array_split(np.arange(len(df)), 3)):
        part = df.iloc[rows].copy()
        for name in ("g", "f"):
            cats = sorted(set(part[name].dropna()) | {f"unused{i}"})
            part[name] = pd.Categorical(part[name], categories=list(rng.permutation(cats)))
        paths.append(str(tmp_path / f"part{i}.parquet"))
        pq.write_table(pa.Table.from_pandas(part, preserve_index=False), paths[-1],
                       row_group_size=250)
    memory = pd.read_parquet(paths)
    (m0, w0), (m1, w1) = fit_both("y ~ x + f + (x | g)", memory, str(tmp_path))
    assert w0 == w1
    assert_same(m0, m1)
    assert "g40" in list(m1.ranef["grp"])


@pytest.mark.parametrize("formula, weights", [("y ~ x + (x | g)", None),
                                              ("y ~ x + (x | g)", "w"),
                                              ("y ~ x + (1 | g) + (1 | h)", None)])
def test_sums_do_not_depend_on_the_threads(formula, weights, tmp_path, monkeypatch):
    """The same sums to the last bit on 1 and 2 threads; batches of 128 rows are made to
    take the threaded path (PARALLEL_MIN_ROWS 0), which the test checks was taken."""
    df = make_data()
    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path, row_group_size=300)
    monkeypatch.setattr(parallel, "PARALLEL_MIN_ROWS", 0)
    threads_seen = set()

    def spying_submit_all(tasks, rows):
        def spied(task):
            def run():
                threads_seen.add(threading.current_thread().name)
                return task()
            return run
        return parallel.submit_all([spied(t) for t in tasks], rows)

    monkeypatch.setattr(streaming, "submit_all", spying_submit_all)
    fits, seen = [], []
    for threads in ("1", "2"):
        monkeypatch.setenv("GLMM_SPARSE_THREADS", threads)
        threads_seen.clear()
        fits.append(gs.lmer(formula, str(path), streaming=True, batch_rows=BATCH,
                            weights=weights))
        seen.append(set(threads_seen))
    assert seen[0] == {"MainThread"}
    assert len(seen[1] - {"MainThread"}) == 2  # both workers of the pool took tasks
    a, b = (f.model.crossproducts() for f in fits)
    for x, y in zip(a.diag, b.diag):
        np.testing.assert_array_equal(x, y)
    for x, y in zip(a.pairs, b.pairs):
        np.testing.assert_array_equal(x.A, y.A)
    np.testing.assert_array_equal(a.ZtWXy, b.ZtWXy)
    np.testing.assert_array_equal(a.XtWXy, b.XtWXy)
    assert (a.n, a.sum_log_w) == (b.n, b.sum_log_w)
    np.testing.assert_array_equal(fits[0].theta, fits[1].theta)
    np.testing.assert_array_equal(fits[0].fixef, fits[1].fixef)


# -- the lean model frame (batchframe.LeanPlan) -----------------------------------------
LEAN = {  # formula, weights -> whether the batches after the first take the lean path
    ("y ~ x + (x | g)", "w"): True,
    ("y ~ x + (1 | g) + (1 | h)", None): True,
    ("y ~ 0 + x + (0 + x | g) + (1 | a:b)", None): True,
    ("y ~ x + f + (1 | g)", None): False,  # a factor in X
    ("log(y) ~ x + (1 | g)", None): False,  # a transformed response
    ("y ~ x + offset(o) + (1 | g)", None): False,
    ("y ~ I(2 * x) + (1 | g)", None): False,
}


def pass_sums(monkeypatch, path, formula, weights, *, lean: bool):
    """The Sums of the cross-products pass, and whether the lean path was taken."""
    from glmm_sparse import batchframe

    if not lean:
        monkeypatch.setattr(batchframe.LeanPlan, "of", classmethod(lambda *a: None))
    got = {}

    class Stop(Exception):
        pass

    def stop(spec, scan, acc, **kwargs):
        got["sums"], got["lean"] = acc.sums, acc.lean is not None
        raise Stop

    monkeypatch.setattr(streaming, "fit_sums", stop)
    with pytest.raises(Stop):
        gs.lmer(formula, path, streaming=True, batch_rows=BATCH, weights=weights)
    monkeypatch.undo()
    return got["sums"], got["lean"]


@pytest.mark.parametrize("formula, weights", list(LEAN))
def test_lean_frames_give_the_same_sums_bit_for_bit(formula, weights, tmp_path, monkeypatch):
    from test_stream_pipeline import assert_sums_identical

    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pandas(make_data(), preserve_index=False), path,
                   row_group_size=300)
    full, took = pass_sums(monkeypatch, str(path), formula, weights, lean=False)
    assert not took
    lean, took = pass_sums(monkeypatch, str(path), formula, weights, lean=True)
    assert took == LEAN[formula, weights]
    assert_sums_identical(full, lean)


def test_a_lean_frame_gives_a_term_of_x_columns_as_their_view(tmp_path, monkeypatch):
    """(x | g) of y ~ x: the lean frame's Z columns of the term are X's own columns in the
    batch's [X y] (a view, no copy), which the kernels read strided; a term whose
    columns are not side by side in X (here the intercept of y ~ 0 + x) gets its own
    array."""
    from glmm_sparse import batchframe

    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pandas(make_data(), preserve_index=False), path,
                   row_group_size=300)
    frames = []
    frame = batchframe.LeanPlan.frame

    def spy(self, enc, batch, rows):
        bf = frame(self, enc, batch, rows)
        frames.append(bf)
        return bf

    monkeypatch.setattr(batchframe.LeanPlan, "frame", spy)
    for formula, shared in [("y ~ x + (x | g)", True), ("y ~ x + (0 + x | g)", True),
                            ("y ~ 0 + x + (1 | g)", False)]:
        frames.clear()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gs.lmer(formula, str(path), streaming=True, batch_rows=BATCH, progress=False)
        assert len(frames) > 2  # the batches after the first
        bf = frames[-1]
        assert np.shares_memory(bf.xs[0], bf.XB) == shared
        if shared:
            X = bf.XB[:, [bf.xnames.index(c) for c in bf.cnames[0]]]
            np.testing.assert_array_equal(bf.xs[0], X)
        else:
            np.testing.assert_array_equal(bf.xs[0], 1.0)


@pytest.mark.parametrize("column, value, message", [
    ("x", np.inf, r"the fixed-effects column 'x' is inf at row 1234 \(1 row\(s\) in this "
                  r"batch\)"),
    ("y", -np.inf, r"the response 'y' is -inf at row 1234 \(1 row\(s\) in this batch\)"),
    ("w", -1.0, r"weights must be finite and >= 0; row 1234 has -1.0 \(1 row\(s\) in "
                r"this batch\)"),
    ("x2", 1e300, r"x2"),
])
def test_lean_frames_refuse_bad_values_as_the_full_path(column, value, message, tmp_path,
                                                        monkeypatch):
    errors = full_and_lean_errors(monkeypatch, tmp_path, {(1234, column): value},
                                  "y ~ x + (x2 | g)", message, weights="w")
    assert errors[0] == errors[1]


def full_and_lean_errors(monkeypatch, tmp_path, bad: dict, formula: str, message: str,
                         **kwargs) -> list[str]:
    """The DataError messages (each matching ``message``) of a streamed fit of make_data()
    with ``bad`` values ({(row, column): value}) through the full batch frame, then the
    lean one."""
    from glmm_sparse import batchframe

    df = make_data()
    for (row, column), value in bad.items():
        df.loc[row, column] = value
    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path, row_group_size=300)
    errors = []
    for lean in (False, True):
        with monkeypatch.context() as m:
            if not lean:
                m.setattr(batchframe.LeanPlan, "of", classmethod(lambda *a: None))
            with pytest.raises(DataError, match=message) as err:
                gs.lmer(formula, str(path), streaming=True, batch_rows=BATCH, **kwargs)
            errors.append(str(err.value))
    return errors


@pytest.mark.parametrize("formula, bad, message", [
    ("y ~ x + (x + x2 | g)", {1234: "x"}, r"the fixed-effects column 'x' is inf at row 1234"),
    ("y ~ x + (x + x2 | g)", {1234: "x2"},
     r"the column 'x2' of the random-effects term \(1 \+ x \+ x2 \| g\) is inf at row 1234"),
    # two bad columns: the first bad row of any, the rows bad in any (both paths)
    ("y ~ x + o + (x + x2 | g)", {1234: "x", 1210: "o"},
     r"the fixed-effects column 'o' is inf at row 1210 \(2 row\(s\)"),
    ("y ~ x + o + (x + x2 | g)", {1234: "o", 1210: "x"},
     r"the fixed-effects column 'x' is inf at row 1210 \(2 row\(s\)")])
def test_lean_frames_check_a_column_in_x_and_z_once_with_the_full_paths_message(
        formula, bad, message, tmp_path, monkeypatch):
    """x in both X and the term's Z: the lean frame checks its values once, as a
    fixed-effects column (the full path's first message); x2, in Z only, as Z's."""
    errors = full_and_lean_errors(monkeypatch, tmp_path,
                                  {(row, col): np.inf for row, col in bad.items()},
                                  formula, message)
    assert errors[0] == errors[1]


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64, np.uint8,
                                   np.uint32, np.uint64])
def test_integer_labels_equal_level_labels(dtype):
    from glmm_sparse.batchframe import labels_of
    from glmm_sparse.design import level_labels

    info = np.iinfo(dtype)
    values = np.unique(np.array([info.min, info.min + 1, 0, 7, 10, 99, 100, info.max - 1,
                                 info.max], dtype=dtype))
    assert labels_of(values) == level_labels(values)
    assert labels_of(values[:0]) == []


@pytest.mark.parametrize("formula, offset, plain", [
    ("y ~ x + (1 | g)", None, True),
    ("yi ~ x + (1 | g)", None, True),  # integers, as float64
    ("y ~ x + (1 | g)", "o", False),
    ("y ~ x + offset(o) + (1 | g)", None, False),
    ("log(y) ~ x + (1 | g)", None, False),
])
def test_response_shift_of_a_plain_column_equals_pandas(formula, offset, plain, monkeypatch):
    """The levels pass's y - offset of complete rows without pandas, against the frame
    path (forced by a column tuple that is not the response alone)."""
    from glmm_sparse.batchframe import ResponseShift, stream_plan
    from glmm_sparse.formula import parse_formula

    df = make_data(600).assign(yi=lambda d: np.arange(len(d)) - 50)
    batch = pa.RecordBatch.from_pandas(df, preserve_index=False)
    parsed = parse_formula(formula)
    plan = stream_plan(parsed, formula, batch.schema, None, offset)
    shift = ResponseShift.of(parsed, formula, plan, offset)
    complete = np.arange(len(df)) % 7 != 3
    assert (shift._plain(batch) is not None) == plain
    got = shift(batch, complete, 0)
    monkeypatch.setattr(ResponseShift, "_plain", lambda self, batch: None)
    expected = shift(batch, complete, 0)
    assert got.dtype == expected.dtype == np.float64
    np.testing.assert_array_equal(got, expected)


def test_level_coder_shared_by_threads_never_mixes_two_dictionaries():
    """Dask's threaded partitions share one LevelCoder (Accumulator.fresh copies
    shallowly). Another thread coding a batch of the previous dictionary right when this
    one stores a new dictionary's codes must get its own dictionary's codes (the cache
    used to be two attributes, set one after the other)."""
    import pyarrow as pa

    class Interleaved(LevelCoder):
        hook = None

        def __setattr__(self, name, value):
            object.__setattr__(self, name, value)
            if name.startswith("_dictionary") and self.hook is not None:
                hook, self.hook = self.hook, None
                hook()

    coder = Interleaved(np.array(["a", "b", "c", "d"], dtype=object))
    first = pa.array(["c", "a", "c"]).dictionary_encode()
    second = pa.array(["d", "b", "b"]).dictionary_encode()
    np.testing.assert_array_equal(coder.codes(second), [3, 1, 1])  # cached
    seen = []
    coder.hook = lambda: seen.append(coder.codes(second))  # "the other thread"
    np.testing.assert_array_equal(coder.codes(first), [2, 0, 2])
    assert len(seen) == 1
    np.testing.assert_array_equal(seen[0], [3, 1, 1])
