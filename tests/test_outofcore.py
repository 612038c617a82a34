"""glmer on Parquet out of core (outofcore.py) against the in-memory glmer of the same rows.

The rows are written to three files with small row groups and read in batches of 128, so
every fit crosses batch, row-group and file boundaries (level pairs of crossed terms split
across batches, the factor level "c" only in the last file).

Tolerance. The out-of-core fit runs the unchanged GLMM machinery on arrays that hold the
in-memory fit's values in the same row order (files in path order, as pd.read_parquet of
the list reads them), so its estimates are the in-memory ones to the last bit: measured
difference 0 in fixef, theta, vcov, ranef and the deviance for every model below. The
bound is 1e-12 relative. For scale: the in-memory fit of the same rows in another order
moves fixef by up to 3e-9, theta by 2e-10 and the standard errors by up to 9e-6 (the
Hessian's finite differences; 3 permutations of these data, measured), so 1e-8 would not
tell a reordering from a defect, while 1e-12 does.
"""
import gc
import mmap
import pickle
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import glmm_sparse as gs
from glmm_sparse import outofcore
from glmm_sparse.errors import DataError, ModelSpecError
from glmm_sparse.outofcore import SPILL_PREFIX
from glmm_sparse.streaming import RowsNotKeptError

BATCH = 128
TOL = 1e-12


def make_data(n=3000, seed=2) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    g, h = rng.integers(0, 40, n), rng.integers(0, 15, n)
    x = rng.normal(size=n)
    f = rng.choice(["a", "b"], n)
    f[-300:] = rng.choice(["a", "b", "c"], 300)  # level "c" only in the last file
    bg, sg, bh = rng.normal(size=40), 0.3 * rng.normal(size=40), 0.5 * rng.normal(size=15)
    eta = -0.3 + 0.5 * x + 0.4 * (f == "b") + bg[g] + sg[g] * x + bh[h]
    p = 1 / (1 + np.exp(-eta))
    size = rng.integers(1, 8, n)
    o = np.log(rng.uniform(0.5, 2, n))
    y = (rng.uniform(size=n) < p).astype(float)
    return pd.DataFrame({
        "y": y, "yes": np.where(y == 1, "yes", "no"), "s": rng.binomial(size, p),
        "size": size, "c": rng.poisson(np.exp(0.5 * eta + o)), "o": o, "x": x, "f": f,
        "g": [f"g{i:02d}" for i in g], "h": h, "wi": rng.integers(1, 3, n).astype(float)})


def write_parts(df: pd.DataFrame, folder: Path, parts=3, row_group=200) -> Path:
    for i, rows in enumerate(np.array_split(np.arange(len(df)), parts)):
        pq.write_table(pa.Table.from_pandas(df.iloc[rows], preserve_index=False),
                       folder / f"part{i}.parquet", row_group_size=row_group)
    return folder


@pytest.fixture(scope="module")
def data():
    return make_data()


@pytest.fixture(scope="module")
def folder(data, tmp_path_factory):
    return write_parts(data, tmp_path_factory.mktemp("glmm_parts"))


def rel(a, b) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(a), 1e-300))) if a.size else 0.0


def fit_both(formula, memory, source, **kwargs):
    """The in-memory and out-of-core fits, and the warnings each raised."""
    caught = []
    for data, extra in ((memory, {}), (str(source), dict(streaming=True, batch_rows=BATCH))):
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            fit = gs.glmer(formula, data, **kwargs, **extra)
        caught.append((fit, sorted((type(x.message).__name__, str(x.message)) for x in w)))
    return caught


def assert_same(m0, m1):
    assert list(m1.fixef.index) == list(m0.fixef.index)
    assert (m1.nobs, m1.n_dropped) == (m0.nobs, m0.n_dropped)
    assert rel(m0.fixef, m1.fixef) <= TOL
    assert rel(m0.theta, m1.theta) <= TOL
    assert rel(m0.objective, m1.objective) <= TOL
    assert rel(m0.deviance, m1.deviance) <= TOL
    assert rel(m0.sigma, m1.sigma) <= TOL
    assert rel(m0.vcov.to_numpy(), m1.vcov.to_numpy()) <= TOL
    assert list(m1.ranef["grp"]) == list(m0.ranef["grp"])
    assert rel(m0.ranef["condval"], m1.ranef["condval"]) <= TOL
    assert rel(m0.ranef["condsd"], m1.ranef["condsd"]) <= TOL
    assert m1.varcorr[["grp", "var1"]].equals(m0.varcorr[["grp", "var1"]])


MODELS = {
    "binomial_01_factor": ("y ~ x + f + (1 | g)", dict(family="binomial")),
    "binomial_text_response": ("yes ~ x + (1 | g)", dict(family="binomial")),
    "cbind_weights_crossed": ("cbind(s, size - s) ~ x + (1 | g) + (1 | h)",
                              dict(family="binomial", weights="wi")),
    "poisson_offset_term_slope": ("c ~ x + offset(o) + (x | g)", dict(family="poisson")),
    "poisson_offset_arg_crossed": ("c ~ x + f + (1 | g) + (1 | h)",
                                   dict(family="poisson", offset="o")),
    "probit_nagq0": ("y ~ x + (1 | g)", dict(family="binomial", link="probit", nagq=0)),
    "agq": ("y ~ x + (1 | g)", dict(family="binomial", nagq=7)),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_out_of_core_fit_equals_in_memory(name, data, folder):
    formula, kwargs = MODELS[name]
    (m0, w0), (m1, w1) = fit_both(formula, data, folder, **kwargs)
    assert w1 == w0
    assert_same(m0, m1)
    assert m1.fitted is None and m1.residuals is None and m1.scaled_residuals is None


def test_factor_level_absent_from_some_files(data, folder):
    m1 = gs.glmer("y ~ x + f + (1 | g)", str(folder), family="binomial", streaming=True,
                  batch_rows=BATCH)
    assert list(m1.fixef.index) == ["(Intercept)", "x", "fb", "fc"]  # "c": last file only


def test_missing_values_dropped_as_in_memory(data, tmp_path):
    df = data.copy()
    df.loc[[3, 500, 2999], "x"] = np.nan
    df.loc[[10, 1700], "c"] = np.nan
    df.loc[1200:1300, "g"] = None  # a whole batch without a complete row
    write_parts(df, tmp_path)
    (m0, w0), (m1, w1) = fit_both("c ~ x + (1 | g) + (1 | h)", df, tmp_path,
                                  family="poisson", offset="o")
    assert w1 == w0 and any("rows with missing values dropped" in m for _, m in w1)
    assert m1.n_dropped == 106
    assert_same(m0, m1)


def test_aliased_column_dropped_with_the_same_warning(data, tmp_path):
    df = data.assign(x2=2 * data["x"])
    write_parts(df, tmp_path)
    (m0, w0), (m1, w1) = fit_both("y ~ x + x2 + (1 | g)", df, tmp_path, family="binomial")
    assert w1 == w0 and any("dropping 1 column(s): x2" in m for _, m in w1)
    assert_same(m0, m1)


def spill_dirs(root: Path) -> list:
    return sorted(p.name for p in root.iterdir() if p.name.startswith(SPILL_PREFIX))


def test_spill_files_have_no_name_while_the_fit_reads_them(folder, tmp_path, monkeypatch):
    """The encoded rows are on disk (mapped) but under no name: nothing a killed or failed
    fit could leave behind. /proc shows the process's maps of the unlinked files."""
    seen = []
    fit_spilled = outofcore.fit_spilled

    def watch(formula, parsed, gdata, spiller, *args, **kwargs):
        maps = Path("/proc/self/maps")
        mapped = (sorted({line.split()[-2] for line in maps.read_text().splitlines()
                          if SPILL_PREFIX in line and "(deleted)" in line})
                  if maps.exists() else None)
        seen.append((sorted(p.name for p in tmp_path.iterdir()), spiller.spill.nbytes(), mapped))
        return fit_spilled(formula, parsed, gdata, spiller, *args, **kwargs)

    monkeypatch.setattr(outofcore, "fit_spilled", watch)
    gs.glmer("c ~ x + (1 | g) + (1 | h)", str(folder), family="poisson", streaming=True,
             batch_rows=BATCH, spill_dir=tmp_path)
    [(names, nbytes, mapped)] = seen
    assert names == []
    assert nbytes >= 3000 * 8 * 9  # y, X (2), offset, prior_w, 2 x (codes, Z), a pair key
    if mapped is not None:
        assert len(mapped) == 9 and all(m.startswith(str(tmp_path)) for m in mapped)
    assert list(tmp_path.iterdir()) == []


def test_a_killed_fit_leaves_no_spill_files(folder, tmp_path):
    """SIGKILL while the fit runs on the spilled rows (no cleanup code can run): the
    spill directory is empty (it held a 54 MB glmm_sparse-spill-* directory per 10^6
    rows before the files were unlinked at once)."""
    import signal
    import subprocess
    import sys

    spill = tmp_path / "spill"
    spill.mkdir()
    script = (
        "import sys, time\n"
        "import glmm_sparse as gs\n"
        "from glmm_sparse import outofcore\n"
        "def hang(*args, **kwargs):\n"
        "    print('spilled', flush=True)\n"
        "    time.sleep(120)\n"
        "outofcore.fit_spilled = hang\n"
        "gs.glmer('y ~ x + (1 | g)', sys.argv[1], family='binomial', streaming=True,\n"
        "         batch_rows=128, spill_dir=sys.argv[2])\n")
    proc = subprocess.Popen([sys.executable, "-c", script, str(folder), str(spill)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "spilled"
        assert list(spill.iterdir()) == []
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    assert list(spill.iterdir()) == []


def test_too_little_disk_space_is_refused_before_writing(folder, tmp_path, monkeypatch):
    import collections

    created = []
    create = outofcore.SpillDirectory.create
    monkeypatch.setattr(outofcore.SpillDirectory, "create",
                        lambda self, *a: created.append(a) or create(self, *a))
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(outofcore.shutil, "disk_usage", lambda path: usage(10**6, 0, 10**5))
    with pytest.raises(DataError, match=r"needs about 0 MB in spill_dir .* which has 0 MB "
                                        r"free: give spill_dir= a local disk"):
        gs.glmer("y ~ x + (1 | g)", str(folder), family="binomial", streaming=True,
                 batch_rows=BATCH, spill_dir=tmp_path)
    assert created == [] and list(tmp_path.iterdir()) == []


def test_a_full_disk_is_an_error_not_a_crash(folder, tmp_path, monkeypatch):
    """posix_fallocate reserves each file's blocks: a full disk fails there, with a
    message, instead of a SIGBUS when a page of a sparse file is first written."""
    import errno
    import os

    if not hasattr(os, "posix_fallocate"):
        pytest.skip("no posix_fallocate on this platform")
    calls = []

    def full(fd, offset, size):
        calls.append(size)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(outofcore.os, "posix_fallocate", full)
    with pytest.raises(DataError, match="cannot reserve .* No space left on device; give "
                                        "spill_dir="):
        gs.glmer("y ~ x + (1 | g)", str(folder), family="binomial", streaming=True,
                 batch_rows=BATCH, spill_dir=tmp_path)
    assert len(calls) == 3 and list(tmp_path.iterdir()) == []


def test_spill_directory_removed_after_a_failing_fit(data, tmp_path, monkeypatch):
    bad = data.copy()
    bad.loc[2900, "c"] = -1  # a negative count, found in the last file while encoding
    src = tmp_path / "src"
    src.mkdir()
    write_parts(bad, src)
    spill = tmp_path / "spill"
    spill.mkdir()
    with pytest.raises(DataError, match="row 2900"):
        gs.glmer("c ~ x + (1 | g)", str(src), family="poisson", streaming=True,
                 batch_rows=BATCH, spill_dir=spill)
    assert spill_dirs(spill) == []

    def fail(*args, **kwargs):
        raise RuntimeError("the optimizer failed")

    monkeypatch.setattr(outofcore, "fit_glmm", fail)  # after every file is on disk
    with pytest.raises(RuntimeError, match="the optimizer failed"):
        gs.glmer("y ~ x + (1 | g)", str(src), family="binomial", streaming=True,
                 batch_rows=BATCH, spill_dir=spill)
    assert spill_dirs(spill) == []


def memory_maps(root) -> list:
    """Every ndarray reachable from ``root`` that is backed by a memory map."""
    found, seen, stack = [], set(), [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, (str, bytes, int, float, type)):
            continue
        seen.add(id(obj))
        if isinstance(obj, np.ndarray):
            base = obj
            while isinstance(base, np.ndarray) and base.base is not None:
                base = base.base
            if isinstance(obj, np.memmap) or isinstance(base, mmap.mmap):
                found.append(obj)
            continue
        stack.extend(gc.get_referents(obj))
    return found


def test_the_result_keeps_no_rows_and_refuses_row_methods(folder):
    m = gs.glmer("y ~ x + f + (1 | g) + (1 | h)", str(folder), family="binomial",
                 streaming=True, batch_rows=BATCH)
    assert memory_maps(m) == []
    assert "Fixed effects" in m.summary() and m.to_dict()["nobs"] == 3000
    again = pickle.loads(pickle.dumps(m))
    assert again.fixef.equals(m.fixef)
    with pytest.raises(RowsNotKeptError, match="streaming=False"):
        m.confint(method="profile")
    with pytest.raises(RowsNotKeptError, match="streaming=False"):
        m.simulate(nsim=1, seed=1)


def test_streams_by_default_above_the_row_threshold(folder, monkeypatch):
    from glmm_sparse import streaming

    assert gs.glmer("y ~ x + (1 | g)", str(folder), family="binomial").fitted is not None
    monkeypatch.setattr(streaming, "STREAM_ABOVE_ROWS", 1000)
    assert gs.glmer("y ~ x + (1 | g)", str(folder), family="binomial").fitted is None


def test_bad_inputs(data, folder, tmp_path):
    with pytest.raises(DataError, match="spill_dir .* is not a directory"):
        gs.glmer("y ~ x + (1 | g)", str(folder), family="binomial", streaming=True,
                 spill_dir=tmp_path / "nowhere")
    with pytest.raises(ModelSpecError, match="weights from a column"):
        gs.glmer("y ~ x + (1 | g)", str(folder), family="binomial", streaming=True,
                 weights=np.ones(3000))
    with pytest.raises(ModelSpecError, match="streaming=True reads Parquet"):
        gs.glmer("y ~ x + (1 | g)", data, family="binomial", streaming=True)
    with pytest.raises(DataError, match="must have two levels"):
        gs.glmer("f ~ x + (1 | g)", str(folder), family="binomial", streaming=True)


def test_the_default_spill_directory_is_the_temporary_directory(folder, tmp_path,
                                                                monkeypatch):
    """A private temporary directory (not the system's, which other fits share)."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    seen = []
    fit_spilled = outofcore.fit_spilled

    def watch(formula, parsed, gdata, spiller, *args, **kwargs):
        seen.append(spiller.spill.path)
        return fit_spilled(formula, parsed, gdata, spiller, *args, **kwargs)

    monkeypatch.setattr(outofcore, "fit_spilled", watch)
    gs.glmer("y ~ x + (1 | g)", str(folder), family="binomial", streaming=True,
             batch_rows=BATCH)
    assert seen == [tmp_path] and list(tmp_path.iterdir()) == []


def test_logs_each_pass(folder, caplog):
    with caplog.at_level("INFO", logger="glmm_sparse"):
        gs.glmer("y ~ x + (1 | g)", str(folder), family="binomial", streaming=True,
                 batch_rows=BATCH, progress=False)
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("levels pass: 3000 rows (3000 complete)") for m in messages)
    assert any(m.startswith("encoding pass: 3000 rows") and "MB on disk" in m
               for m in messages)
    assert any(m.startswith("fit: q = 40 random effects, p = 2 fixed effects")
               for m in messages)


# -- memory ---------------------------------------------------------------------------------
def binomial_file(n: int, folder: Path) -> str:
    rng = np.random.default_rng(1)
    g, x = rng.integers(0, 1000, n), rng.normal(size=n)
    eta = -0.5 + 0.5 * x + 0.8 * rng.normal(size=1000)[g]
    df = pd.DataFrame({"y": (rng.uniform(size=n) < 1 / (1 + np.exp(-eta))).astype(float),
                       "x": x, "g": g})
    path = str(folder / "big.parquet")
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path,
                   row_group_size=1 << 16)
    return path


def traced_peaks(path: str, batch_rows: int, monkeypatch) -> dict:
    """tracemalloc peaks: the in-memory fit, the out-of-core fit, and its passes over the
    files alone (everything before the GLMM machinery starts)."""
    peaks = {}
    fit_spilled = outofcore.fit_spilled

    def mark(*args, **kwargs):
        peaks["passes"] = tracemalloc.get_traced_memory()[1]
        return fit_spilled(*args, **kwargs)

    for streaming in (False, True):  # warm: first-use imports and caches are not the fit's
        gs.glmer("y ~ x + (1 | g)", path, family="binomial", streaming=streaming,
                 batch_rows=batch_rows, progress=False)
    monkeypatch.setattr(outofcore, "fit_spilled", mark)
    for name, streaming in (("memory", False), ("outofcore", True)):
        tracemalloc.start()
        m = gs.glmer("y ~ x + (1 | g)", path, family="binomial", streaming=streaming,
                     batch_rows=batch_rows, progress=False)
        peaks[name] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        peaks[f"fixef_{name}"] = m.fixef.to_numpy()
    assert rel(peaks["fixef_memory"], peaks["fixef_outofcore"]) <= TOL
    return peaks


def check_peaks(peaks: dict, n: int, batch_rows: int) -> None:
    """Measured (tests below): the passes over Parquet stay at a few batches' worth,
    whatever n. PIRLS streams the rows in chunks of 65,536 (rowpass.py): besides the
    mapped inputs the fit holds the family's starting eta, two workers' chunk buffers and
    stage 1's every-k-th-row copy. Out of core, at peak: 10.05 float64 vectors per row at
    5 x 10^4 rows (one chunk is all rows there), 3.77 at 10^6 (it was 17.6 when PIRLS held
    its working vectors whole). Against the in-memory peak, both paths warmed first (a
    cold in-memory fit's peak holds first-use allocations, which made the ratio look like
    0.55): 0.654 at 5 x 10^4 rows, whatever ran before in the process."""
    assert peaks["passes"] < 60 * 8 * batch_rows + 2 * 2**20  # measured ~ 44 x 8 x batch
    assert peaks["outofcore"] < 0.7 * peaks["memory"]
    assert peaks["outofcore"] < 12 * 8 * n + 2**20


def test_memory_of_the_passes_is_bounded(tmp_path, monkeypatch):
    n, batch = 50_000, 4096
    check_peaks(traced_peaks(binomial_file(n, tmp_path), batch, monkeypatch), n, batch)


@pytest.mark.slow
def test_memory_at_a_million_rows(tmp_path, monkeypatch):
    n, batch = 1_000_000, 1 << 16
    check_peaks(traced_peaks(binomial_file(n, tmp_path), batch, monkeypatch), n, batch)


@pytest.mark.parametrize("dictionary_first", [True, False])
def test_dictionary_and_plain_files_with_other_levels(tmp_path, dictionary_first):
    """g a Categorical of g0-g2 in one file, text g0-g4 in the other: the levels
    pd.read_parquet gives (see test_parquet_batches.py), in the fixed part."""
    from test_parquet_batches import mixed_levels_data, write_mixed

    df = mixed_levels_data()
    df["c"] = np.random.default_rng(3).poisson(np.exp(0.2 * df["y"].clip(-3, 6)))
    write_mixed(df, tmp_path, dictionary_first)
    (m0, w0), (m1, w1) = fit_both("c ~ x + g + (1 | a)", pd.read_parquet(tmp_path), tmp_path,
                                  family="poisson")
    assert w1 == w0
    assert_same(m0, m1)
    assert {"gg3", "gg4"} <= set(m1.fixef.index)


def test_agq_refused_before_any_row_is_written(folder, monkeypatch):
    created = []
    create = outofcore.SpillDirectory.create
    monkeypatch.setattr(outofcore.SpillDirectory, "create",
                        lambda self, *a: created.append(a) or create(self, *a))
    with pytest.raises(ModelSpecError, match="nAGQ = 7 needs exactly one random-effects term"):
        gs.glmer("y ~ x + (1 | g) + (1 | h)", str(folder), family="binomial", nagq=7,
                 streaming=True, batch_rows=BATCH)
    assert created == []


def test_a_bad_value_is_counted_in_its_batch(data, tmp_path):
    """A per-batch check counts the rows of that batch ("in this batch"): an in-memory
    fit's "in all" would claim a total it never saw."""
    bad = data.copy()
    bad.loc[[2900, 2901], "c"] = -1
    write_parts(bad, tmp_path)
    with pytest.raises(DataError, match=r"first at row 2900 \(value -1\), 2 row\(s\) in this batch$"):
        gs.glmer("c ~ x + (1 | g)", str(tmp_path), family="poisson", streaming=True,
                 batch_rows=BATCH)
