"""glmm_sparse.dask.lmer on a LocalCluster against the in-memory fit of the same rows.

The cluster runs two worker processes (so every spec, accumulator, partial scan and
partial sums is pickled between processes). The data are split into partitions so that
the level pairs of crossed terms, the levels of factors and the missing values fall
into several partitions; the fixed-effects level "c" of f exists only in the last
partition, and one partition has no complete row at all.

Tolerances as in tests/test_parquet_batches.py (its module docstring): at the same theta
the criterion, beta, sigma, vcov and u to 1e-10 relative (they differ by summation
order); the fits' fixef, sigma and criterion to 1e-10, theta to 1e-8.
"""
import logging
import warnings

import numpy as np
import pandas as pd
import pytest

dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("distributed")

from refdata import load_case, load_data
from test_parquet_batches import assert_same, make_data

import glmm_sparse as gs
import glmm_sparse.dask as gsd

BATCH = 256


@pytest.fixture(scope="module")
def client():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                           host="127.0.0.1", dashboard_address=None)
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope="module")
def data():
    return make_data()


def dask_frame(df: pd.DataFrame, parts: int = 5):
    return dd.from_pandas(df, npartitions=parts, sort=False)


def fit_both(formula, df, parts=5, **kwargs):
    """The in-memory fit of df and the Dask fit of df in partitions, with their warnings."""
    out = []
    for run in (lambda: gs.lmer(formula, df, **kwargs),
                lambda: gsd.lmer(formula, dask_frame(df, parts), batch_rows=BATCH, **kwargs)):
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            fit = run()
        out.append((fit, sorted((type(x.message).__name__, str(x.message)) for x in w)))
    return out


MODELS = {
    "intercept": ("y ~ x + (1 | g)", {}),
    "slope": ("y ~ x + (x | g)", {}),
    "crossed": ("y ~ x + (1 | g) + (1 | h)", {}),
    "nested_ml": ("y ~ x + (1 | a/b)", dict(reml=False)),
    "weights_offset": ("y ~ x + (1 | g) + (1 | h)", dict(weights="w", offset="o")),
    "factor_levels_missing_from_partitions": ("y ~ x + f + (x || g)", {}),
    "crossed_lbfgsb": ("y ~ x + (1 | g) + (1 | h)", dict(optimizer="lbfgsb")),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_dask_fit_equals_in_memory(name, client, data):
    formula, kwargs = MODELS[name]
    (m0, w0), (m1, w1) = fit_both(formula, data, **kwargs)
    assert w1 == w0
    assert_same(m0, m1)
    assert m1.fitted is None
    if kwargs.get("optimizer") == "lbfgsb":
        assert m0.optimizer.method == m1.optimizer.method == "scipy L-BFGS-B"


def test_crossed_level_pairs_split_across_partitions(client, data):
    """The same (g, h) pairs occur in several partitions: their blocks of Z'Z are summed
    by key in the merges (checked here: the pair count of the merged sums equals the
    in-memory one, and so does the fit)."""
    parts = np.array_split(np.arange(len(data)), 5)
    pairs = [set(zip(data["g"].iloc[p], data["h"].iloc[p])) for p in parts]
    assert len(pairs[0] & pairs[1]) > 100
    m0 = gs.lmer("y ~ x + (1 | g) + (1 | h)", data)
    m1 = gsd.lmer("y ~ x + (1 | g) + (1 | h)", dask_frame(data), batch_rows=BATCH)
    cp0, cp1 = m0.model.crossproducts(), m1.model.crossproducts()
    assert len(cp1.pairs[0].lev_t) == len(set(zip(data["g"], data["h"])))
    assert len(cp1.pairs[0].lev_t) == len(cp0.pairs[0].lev_t)
    assert_same(m0, m1)


def test_missing_values_and_an_empty_partition(client, data):
    df = data.copy()
    df.loc[[3, 500, 2999], "x"] = np.nan
    df["g"] = df["g"].astype(object)
    df.loc[[7, 1200], "g"] = None
    df.loc[600:1199, "y"] = np.nan  # the second of five partitions: no complete row
    (m0, w0), (m1, w1) = fit_both("y ~ x + (1 | g)", df)
    assert w1 == w0 == [("DroppedRowsWarning", "605 rows with missing values dropped (2395 used)")]
    assert_same(m0, m1)
    with pytest.raises(gs.DataError, match="605 rows have missing values"):
        gsd.lmer("y ~ x + (1 | g)", dask_frame(df), na_action="raise")


def test_categorical_order_and_sleepstudy_against_lme4(client):
    """A Categorical keeps its categories' order; lme4 1.1-31's sleepstudy fit
    (tests/reference/lme4/sleepstudy_reml.json) is met at test_lmer_reference's
    tolerances: log-likelihood 1e-6 relative, fixed effects 0.01 standard errors."""
    ref = load_case("sleepstudy_reml")
    sleep = load_data(ref["data"])
    m0 = gs.lmer(ref["formula"], sleep)
    m1 = gsd.lmer(ref["formula"], dask_frame(sleep, 3))
    assert list(m1.ranef["grp"].unique()) == list(sleep["Subject"].cat.categories)
    assert_same(m0, m1)
    assert abs(m1.loglik - ref["logLik"]) < 1e-6 * abs(ref["logLik"])
    assert np.all(np.abs(m1.fixef.to_numpy() - ref["beta"]) < 0.01 * np.asarray(ref["beta_se"]))


def test_default_scheduler_without_a_client(data):
    """No distributed client: the same tree of merges on Dask's default scheduler."""
    with _no_client():
        m1 = gsd.lmer("y ~ x + (1 | g) + (1 | h)", dask_frame(data), batch_rows=BATCH)
    assert_same(gs.lmer("y ~ x + (1 | g) + (1 | h)", data), m1)


class _no_client:
    """Hide the module's client from get_client() (Dask's default scheduler runs)."""

    def __enter__(self):
        self.patch = pytest.MonkeyPatch()
        self.patch.setattr(gsd, "_client", lambda: None)

    def __exit__(self, *exc):
        self.patch.undo()


def test_logging_and_no_progress_output(client, data, caplog, capfd):
    with caplog.at_level(logging.INFO, logger="glmm_sparse"):
        gsd.lmer("y ~ x + (1 | g)", dask_frame(data), batch_rows=BATCH)
    text = caplog.text
    assert "Dask fit of y ~ x + (1 | g): 5 partition(s)" in text
    assert "levels pass: 3000 rows (3000 complete)" in text
    assert "cross-products pass: 3000 rows" in text
    assert "evaluations in" in text
    out, err = capfd.readouterr()
    # stderr is not a terminal: no bar (a tqdm bar draws "%|" and carriage returns; log
    # handlers that other code left on the logger may still write lines)
    assert out == "" and "%|" not in err and "\r" not in err


def test_progress_bar_forced_on(client, data, capfd):
    gsd.lmer("y ~ x + (1 | g)", dask_frame(data), progress=True)
    err = capfd.readouterr().err
    assert "levels pass" in err and "cross-products pass" in err and "partition" in err


def test_bad_inputs(client, data):
    with pytest.raises(TypeError, match="dask.dataframe.DataFrame"):
        gsd.lmer("y ~ x + (1 | g)", data)
    with pytest.raises(gs.FormulaError, match="'z' used in the formula is not in the data"):
        gsd.lmer("y ~ z + (1 | g)", dask_frame(data))
    with pytest.raises(gs.ModelSpecError, match="column"):
        gsd.lmer("y ~ x + (1 | g)", dask_frame(data), weights=np.ones(len(data)))
    # refused with the other argument checks, before any pass (lmer's message)
    with pytest.raises(gs.ModelSpecError, match="optimizer='lbfgsb' needs the analytic"):
        gsd.lmer("y ~ x + (1 | g)", dask_frame(data), factor_mode="classes",
                 optimizer="lbfgsb")


def test_partial_sums_pickle_small(data):
    """What a partition ships is n-free: the same size for 3,000 and 30,000 rows."""
    import pickle

    import pyarrow as pa

    from glmm_sparse.formula import parse_formula
    from glmm_sparse.streaming import accumulate_partition, stream_spec

    formula = "y ~ x + (1 | g) + (1 | h)"
    big = pd.concat([data] * 10, ignore_index=True)
    sizes = []
    for df in (data, big):
        spec = stream_spec(formula, parse_formula(formula),
                           pa.Schema.from_pandas(df, preserve_index=False), weights=None,
                           offset=None, na_action="omit")
        scan = spec.scan_partition(df)
        part = accumulate_partition(spec.accumulator(scan), df)
        sizes.append((len(pickle.dumps(scan)), len(pickle.dumps(part))))
    assert part.rows == len(big)
    assert sizes[1][1] < 1.05 * sizes[0][1] and sizes[1][0] < 1.05 * sizes[0][0], sizes


def test_extras_stay_optional():
    """Importing glmm_sparse imports neither Dask nor Spark; without them, the modules'
    ImportError names the extra to install."""
    import subprocess
    import sys

    code = ("import sys, glmm_sparse\n"
            "assert not {'dask', 'distributed', 'pyspark'} & set(sys.modules), "
            "sorted({'dask', 'distributed', 'pyspark'} & set(sys.modules))\n"
            "sys.modules['dask'] = None; sys.modules['pyspark'] = None\n"
            "for mod, extra in (('glmm_sparse.dask', '[dask]'), ('glmm_sparse.spark', '[spark]')):\n"
            "    try:\n"
            "        __import__(mod)\n"
            "    except ImportError as err:\n"
            "        assert 'pip install glmm_sparse' + extra in str(err), str(err)\n"
            "    else:\n"
            "        raise AssertionError(mod)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("method", ["ml", "reml"])
def test_known_sigma_one_row_per_group(client, method):
    """sigma= on Dask: one random effect per row is identifiable, and the fixed-sigma
    boundary is escaped as in memory. Reference: metafor 3.8.1 rma of the BCG trials."""
    import json
    from pathlib import Path

    ref_dir = Path(__file__).parent / "reference" / "inference"
    ref = json.loads((ref_dir / "bcg_known_variances.json").read_text())[method]
    bcg = pd.read_csv(ref_dir / "bcg.csv").assign(w=lambda f: 1.0 / f["vi"])
    bcg["trial"] = bcg["trial"].astype(str)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = gsd.lmer("yi ~ ablat + alloc + (1 | trial)", dd.from_pandas(bcg, npartitions=3),
                     weights="w", sigma=1.0, reml=method == "reml")
    assert float(m.varcorr["vcov"].iloc[0]) == pytest.approx(ref["tau2"], rel=1e-5)
    np.testing.assert_allclose(m.fixef.to_numpy(), ref["beta"], rtol=1e-5)
