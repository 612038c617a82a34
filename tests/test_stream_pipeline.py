"""The pipelined streamed passes against the same passes run one step at a time.

- ``streaming.Accumulator``: a batch is encoded while the previous batch's kernels run
  on the pool; the sums must equal, to the last bit, those of the unpipelined pass (each
  batch's tasks waited for before the next batch is read) on 1 and 2 threads, and the
  threaded path must really be taken (``PARALLEL_MIN_ROWS`` lowered, the pool seen
  running tasks, a batch's tasks seen still pending when ``add`` returned);
- errors keep their message and order: a task's exception, a bad value in a later
  batch, an earlier batch's failed task before a later batch's bad value;
- ``batches.ReadAhead``: items in order, at most ``depth`` read ahead, the reader's
  exception after the items before it, and no thread left running when the consumer
  stops early or raises (also through a whole streamed fit that fails).
"""
import dataclasses
import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_parquet_batches import make_data

import glmm_sparse as gs
from glmm_sparse import batches, levelsums, parallel, streaming
from glmm_sparse.batches import ReadAhead
from glmm_sparse.errors import DataError

BATCH = 100
FORMULAS = {
    "slope_weighted": ("y ~ x + (x | g)", "w"),
    "crossed": ("y ~ x + f + (1 | g) + (1 | h)", None),
    "crossed_slope": ("y ~ x + (x | g) + (1 | h) + (1 | a:b)", None),
}


def reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "glmm_sparse-read-ahead"]


@pytest.fixture
def threaded(monkeypatch):
    """Batches of BATCH rows take the threaded path."""
    monkeypatch.setattr(parallel, "PARALLEL_MIN_ROWS", 0)


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    path = tmp_path_factory.mktemp("pipe") / "d.parquet"
    pq.write_table(pa.Table.from_pandas(make_data(), preserve_index=False), path,
                   row_group_size=250)
    return str(path)


def unpipelined(monkeypatch):
    """Every batch's tasks waited for inside its own ``add``, nothing read ahead."""
    add = streaming.Accumulator.add

    def add_and_wait(self, *args, **kwargs):
        add(self, *args, **kwargs)
        self.wait()

    monkeypatch.setattr(streaming.Accumulator, "add", add_and_wait)
    monkeypatch.setattr(batches, "READ_AHEAD", 0)


def streamed_sums(monkeypatch, path, formula, weights):
    """The Sums at the end of the cross-products pass (the fit itself is skipped), and
    whether some batch's tasks were still running when its ``add`` returned."""
    got, in_flight = {}, []
    add = streaming.Accumulator.add

    def spying_add(self, *args, **kwargs):
        add(self, *args, **kwargs)
        pending = self._pending
        in_flight.append(pending is not None and pending._futures is not None)

    class Stop(Exception):
        pass

    def stop(spec, scan, acc, **kwargs):
        got["sums"] = acc.sums
        raise Stop

    monkeypatch.setattr(streaming.Accumulator, "add", spying_add)
    monkeypatch.setattr(streaming, "fit_sums", stop)
    with pytest.raises(Stop):
        gs.lmer(formula, path, streaming=True, batch_rows=BATCH, weights=weights,
                progress=False)
    monkeypatch.setattr(streaming.Accumulator, "add", add)
    return got["sums"], any(in_flight)


def assert_sums_identical(a, b) -> None:
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if f.name == "pairs":
            for ra, rb in zip(x, y):
                (ka, Aa), (kb, Ab) = ra.result(), rb.result()
                np.testing.assert_array_equal(ka, kb)
                np.testing.assert_array_equal(Aa, Ab)
        elif isinstance(x, list):
            assert len(x) == len(y)
            for u, v in zip(x, y):
                np.testing.assert_array_equal(u, v, err_msg=f.name)
        elif isinstance(x, np.ndarray) or x is None:
            np.testing.assert_array_equal(x, y, err_msg=f.name)
        else:
            assert x == y, f.name


@pytest.mark.parametrize("name", list(FORMULAS))
def test_pipelined_sums_equal_unpipelined_bit_for_bit(name, path, threaded, monkeypatch):
    formula, weights = FORMULAS[name]
    seen = set()
    submit = parallel.submit_all

    def spying_submit(tasks, rows):
        def spied(task):
            def run():
                seen.add(threading.current_thread().name)
                return task()
            return run
        return submit([spied(t) for t in tasks], rows)

    monkeypatch.setattr(streaming, "submit_all", spying_submit)
    results = {}
    for threads in ("1", "2"):
        monkeypatch.setenv("GLMM_SPARSE_THREADS", threads)
        seen.clear()
        results["pipelined", threads] = streamed_sums(monkeypatch, path, formula, weights)
        assert (seen == {"MainThread"}) == (threads == "1")
        assert results["pipelined", threads][1] == (threads == "2")  # left running
    with monkeypatch.context() as m:
        unpipelined(m)
        for threads in ("1", "2"):
            m.setenv("GLMM_SPARSE_THREADS", threads)
            results["waited", threads] = streamed_sums(m, path, formula, weights)
            assert not results["waited", threads][1]
    reference = results["waited", "1"][0]
    assert reference.n_pos == 3000
    for key in [("waited", "2"), ("pipelined", "1"), ("pipelined", "2")]:
        assert_sums_identical(reference, results[key][0])


def test_pipelined_fit_equals_in_memory(path, threaded, monkeypatch):
    """The whole fit, pipelined on 2 threads, against the in-memory fit (1e-10)."""
    monkeypatch.setenv("GLMM_SPARSE_THREADS", "2")
    import pandas as pd

    memory = gs.lmer("y ~ x + (x | g)", pd.read_parquet(path), weights="w")
    streamed = gs.lmer("y ~ x + (x | g)", path, streaming=True, batch_rows=BATCH,
                       weights="w")
    np.testing.assert_allclose(streamed.fixef, memory.fixef, rtol=1e-10)
    np.testing.assert_allclose(streamed.loglik, memory.loglik, rtol=1e-10)
    np.testing.assert_allclose(streamed.sigma, memory.sigma, rtol=1e-10)


@pytest.mark.parametrize("threads", ["1", "2"])
def test_an_exception_in_a_task_surfaces(threads, path, threaded, monkeypatch):
    monkeypatch.setenv("GLMM_SPARSE_THREADS", threads)
    calls = []
    row_sums = streaming.Accumulator._row_sums

    def failing(self, *args):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom in the third batch's task")
        return row_sums(self, *args)

    monkeypatch.setattr(streaming.Accumulator, "_row_sums", failing)
    with pytest.raises(RuntimeError, match="boom in the third batch's task"):
        gs.lmer("y ~ x + (x | g)", path, streaming=True, batch_rows=BATCH)
    assert len(calls) <= 4  # at most the next batch's tasks started, none after
    assert not reader_threads()


def with_bad_weight(tmp_path, row: int, value: float) -> str:
    df = make_data()
    df.loc[row, "w"] = value
    out = str(tmp_path / "bad.parquet")
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), out, row_group_size=500)
    return out


@pytest.mark.parametrize("threads", ["1", "2"])
def test_a_bad_value_in_a_later_batch_names_its_row(threads, tmp_path, threaded,
                                                    monkeypatch):
    monkeypatch.setenv("GLMM_SPARSE_THREADS", threads)
    bad = with_bad_weight(tmp_path, 1234, -2.0)
    with pytest.raises(DataError, match=r"weights must be finite and >= 0; row 1234 has "
                                        r"-2.0 \(1 row\(s\) in this batch\)"):
        gs.lmer("y ~ x + (x | g)", bad, streaming=True, batch_rows=BATCH, weights="w")
    assert not reader_threads()


def test_an_earlier_task_error_comes_before_a_later_bad_value(tmp_path, threaded,
                                                              monkeypatch):
    """As in the unpipelined order: batch 12's task fails before batch 13 is checked
    (row groups of 500 rows: batches of exactly BATCH rows)."""
    monkeypatch.setenv("GLMM_SPARSE_THREADS", "2")
    bad = with_bad_weight(tmp_path, 13 * BATCH + 5, -1.0)
    calls = []
    row_sums = streaming.Accumulator._row_sums

    def failing(self, *args):
        calls.append(1)
        if len(calls) == 13:
            raise RuntimeError("boom in batch 12")
        return row_sums(self, *args)

    monkeypatch.setattr(streaming.Accumulator, "_row_sums", failing)
    with pytest.raises(RuntimeError, match="boom in batch 12"):
        gs.lmer("y ~ x + (x | g)", bad, streaming=True, batch_rows=BATCH, weights="w")


@pytest.mark.parametrize("task_fails", [False, True])
def test_a_failing_source_waits_for_the_last_batchs_tasks(path, threaded, monkeypatch,
                                                         task_fails):
    """The source fails while the tasks of the batch before are still running: the pass
    waits for them before raising (none writes into the sums after lmer has raised), and
    a failure of those tasks, the earlier one, is what is raised, the source's error as
    its cause."""
    monkeypatch.setenv("GLMM_SPARSE_THREADS", "2")
    finished = []
    level_sums = levelsums._crossprod.add_term_sums

    class SlowKernels:
        def __getattr__(self, name):
            return getattr(kernels, name)

        def add_term_sums(self, *args):
            time.sleep(0.3)
            level_sums(*args)
            finished.append(time.perf_counter())
            if task_fails:
                raise MemoryError("the task of the batch before failed")

    kernels = levelsums._crossprod
    monkeypatch.setattr(levelsums, "_crossprod", SlowKernels())
    read = batches.ParquetSource.batches
    passes = []

    def failing_second_pass(self, columns, batch_rows=batches.BATCH_ROWS):
        passes.append(1)
        for i, item in enumerate(read(self, columns, batch_rows)):
            if len(passes) == 2 and i == 1:
                raise DataError("cannot read the Parquet file 'part-2.parquet': corrupt")
            yield item

    monkeypatch.setattr(batches.ParquetSource, "batches", failing_second_pass)
    expected = (MemoryError, "failed") if task_fails else (DataError, "corrupt")
    with pytest.raises(expected[0], match=expected[1]) as raised:
        gs.lmer("y ~ x + (1 | g)", path, streaming=True, batch_rows=BATCH, progress=False)
    raised_at = time.perf_counter()
    assert len(finished) == 1 and finished[0] < raised_at  # waited for, not left running
    if task_fails:
        assert isinstance(raised.value.__cause__, DataError)
    assert not reader_threads()


def test_an_interrupted_wait_keeps_the_tasks_to_wait_for():
    """Accumulator.wait forgets the last batch's tasks only once they have finished."""
    acc = streaming.Accumulator.__new__(streaming.Accumulator)
    release = threading.Event()
    future_pool = parallel.submit_all([release.wait, release.wait], 10**6)

    class Interrupted:
        def wait(self):
            raise KeyboardInterrupt

        def done(self):
            return future_pool.done()

    acc._pending = Interrupted()
    with pytest.raises(KeyboardInterrupt):
        acc.wait()
    assert acc._pending is not None  # still running: kept for the next wait
    release.set()
    acc._pending = future_pool
    acc.wait()
    assert acc._pending is None and future_pool.done()


def test_a_fresh_copy_frames_its_first_batch_in_full(path):
    """fresh() (one per Dask/Spark partition) forgets the lean plan of the batches its
    original has seen: a copy's first batch is checked through formulaic again."""
    acc = streaming.Accumulator.__new__(streaming.Accumulator)
    acc._pending, acc._sums, acc._level_sums = None, None, None
    acc.lean, acc._lean_decided = object(), True
    acc.layout, acc.rows, acc.classes_mode, acc.row_codes = None, 0, None, None
    copy = acc.fresh()
    assert copy.lean is None and copy._lean_decided is False
    assert acc._lean_decided  # the original keeps its own


# -- ReadAhead ----------------------------------------------------------------------------
def counted(n, produced, fail_at=None):
    for i in range(n):
        if i == fail_at:
            raise ValueError(f"cannot read item {i}")
        produced.append(threading.current_thread().name)
        yield i


@pytest.mark.parametrize("depth", [0, 1, 2])
def test_read_ahead_keeps_order_and_reads_at_most_depth_ahead(depth):
    produced, got = [], []
    with ReadAhead(counted(20, produced), depth) as items:
        for i in items:
            time.sleep(0.005)  # the reader could run far ahead if it were not held
            assert len(produced) <= i + 1 + depth
            got.append(i)
    assert got == list(range(20))
    expected = {"MainThread"} if depth == 0 else {"glmm_sparse-read-ahead"}
    assert set(produced) == expected
    assert not reader_threads()


def test_read_ahead_raises_the_readers_error_after_the_items_before_it():
    got = []
    with pytest.raises(ValueError, match="cannot read item 5"):
        with ReadAhead(counted(20, [], fail_at=5), 2) as items:
            for i in items:
                got.append(i)
    assert got == [0, 1, 2, 3, 4]
    assert not reader_threads()


def test_read_ahead_raises_when_the_items_cannot_be_iterated():
    """The iterable's own iter() fails in the reader thread: the consumer gets the error
    (it used to wait forever), and no thread is left."""
    class Unlistable:
        def __iter__(self):
            raise OSError("cannot list the files")

    with pytest.raises(OSError, match="cannot list"), ReadAhead(Unlistable(), 1) as items:
        list(items)
    assert not reader_threads()


def test_read_ahead_is_iterated_once():
    with ReadAhead(iter([1, 2]), 1) as items:
        assert list(items) == [1, 2]
        with pytest.raises(RuntimeError, match="iterated once"):
            list(items)
    assert not reader_threads()


def test_read_ahead_stops_when_the_consumer_raises_or_leaves():
    closed = []

    def endless():
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            closed.append(threading.current_thread().name)

    with pytest.raises(KeyError):
        with ReadAhead(endless(), 2) as items:
            for i in items:
                if i == 3:
                    raise KeyError("the consumer failed")
    assert not reader_threads()
    assert closed == ["glmm_sparse-read-ahead"]  # the source closed where it was read
    with ReadAhead(endless(), 1) as items:
        for i in items:
            if i == 2:
                break
    assert not reader_threads()


def test_one_thread_reads_in_the_consumer(monkeypatch):
    monkeypatch.setenv("GLMM_SPARSE_THREADS", "1")
    assert batches.read_ahead_depth() == 0
    monkeypatch.setenv("GLMM_SPARSE_THREADS", "2")
    assert batches.read_ahead_depth() == batches.READ_AHEAD >= 1


def test_submit_all_waits_for_every_task_and_raises_the_first_error(monkeypatch):
    monkeypatch.setenv("GLMM_SPARSE_THREADS", "2")
    done = []

    def slow():
        time.sleep(0.05)
        done.append("slow")

    def fail(message):
        def run():
            raise ValueError(message)
        return run

    pending = parallel.submit_all([fail("first"), slow, fail("second")],
                                  parallel.PARALLEL_MIN_ROWS)
    with pytest.raises(ValueError, match="first"):
        pending.wait()
    assert done == ["slow"]  # nothing left running when the error is raised
    assert parallel.submit_all([lambda: 1, lambda: 2], 10**6).wait() == [1, 2]


def test_every_batch_runs_under_one_blas_thread(path, threaded, monkeypatch):
    """The BLAS stays on one thread for every batch's tasks, the last one included (the
    pass waits for it before the limit is lifted), and its limits are restored after."""
    from threadpoolctl import threadpool_info

    def blas_threads():
        return sorted({pool["num_threads"] for pool in threadpool_info()
                       if pool["user_api"] == "blas"})

    before = blas_threads()
    monkeypatch.setenv("GLMM_SPARSE_THREADS", "2")
    seen = []
    row_sums = streaming.Accumulator._row_sums

    def spying(self, *args):
        time.sleep(0.01)  # the last batch's tasks outlive the loop over the batches
        seen.append(blas_threads())
        return row_sums(self, *args)

    monkeypatch.setattr(streaming.Accumulator, "_row_sums", spying)
    gs.lmer("y ~ x + (x | g)", path, streaming=True, batch_rows=BATCH)
    assert len(seen) == 30 and all(s in ([], [1]) for s in seen), seen
    assert blas_threads() == before
