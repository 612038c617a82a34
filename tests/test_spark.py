"""glmm_sparse.spark.lmer on a local[2] SparkSession against the in-memory fit of the
same rows (``sdf.toPandas()``).

One session for the module (the JVM starts once), bound to 127.0.0.1, UI off, stopped at
the end. The rows are split into 4 partitions, so that crossed level pairs, factor
levels and missing values fall into several of them; the level "c" of f exists only in
the last partition. Tolerances as in tests/test_parquet_batches.py (module docstring).
"""
import os
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pyspark = pytest.importorskip("pyspark")

from test_parquet_batches import assert_same, make_data

import glmm_sparse as gs

BATCH = 256
PARTS = 4


def java_home() -> str | None:
    """JAVA_HOME, else the JDK of the java on PATH, else Debian's Java 17."""
    if os.environ.get("JAVA_HOME"):
        return os.environ["JAVA_HOME"]
    java = shutil.which("java")
    if java:
        return str(Path(java).resolve().parents[1])
    debian = Path("/usr/lib/jvm/java-17-openjdk-amd64")
    return str(debian) if debian.exists() else None


@pytest.fixture(scope="module")
def spark():
    home = java_home()
    if home is None:
        pytest.skip("Spark needs Java (set JAVA_HOME)")
    env = {"JAVA_HOME": home, "PYSPARK_PYTHON": sys.executable,
           "PYSPARK_DRIVER_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    from pyspark.sql import SparkSession

    session = (SparkSession.builder.master("local[2]").appName("glmm_sparse-tests")
               .config("spark.driver.host", "127.0.0.1")
               .config("spark.driver.bindAddress", "127.0.0.1")
               .config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", "false")
               .config("spark.sql.shuffle.partitions", "2")
               .config("spark.sql.execution.arrow.pyspark.enabled", "true")
               .getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def data():
    return make_data()


def spark_frame(spark, df):
    """df in PARTS partitions of consecutive rows (by range of the row number)."""
    return spark.createDataFrame(df.assign(rid=np.arange(len(df)))).repartitionByRange(
        PARTS, "rid")


def fit_both(spark, formula, df, **kwargs):
    """The in-memory fit of df and the Spark fit of df in PARTS partitions, with the
    warnings of each (glmm_sparse's own: PySpark warns about pandas versions)."""
    import glmm_sparse.spark as gss

    sdf = spark_frame(spark, df)
    assert sdf.rdd.getNumPartitions() == PARTS
    out = []
    for run in (lambda: gs.lmer(formula, df, **kwargs),
                lambda: gss.lmer(formula, sdf, batch_rows=BATCH, **kwargs)):
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            fit = run()
        out.append((fit, sorted((type(x.message).__name__, str(x.message)) for x in w
                                 if issubclass(x.category, gs.GlmmSparseWarning))))
    return out


def with_missing(data):
    df = data.copy()
    df.loc[[3, 500, 2999], "x"] = np.nan
    df["g"] = df["g"].astype(object)
    df.loc[[7, 1200], "g"] = None
    return df


# few fits: the JVM and the first Python workers already take most of the ~30 s
MODELS = {
    "intercept_missing_values": ("y ~ x + (1 | g)", {}, True),
    "crossed_weights": ("y ~ x + (1 | g) + (1 | h)", dict(weights="w"), False),
    "crossed_lbfgsb": ("y ~ x + (1 | g) + (1 | h)", dict(optimizer="lbfgsb"), False),
    "factor_levels_missing_from_partitions": ("y ~ x + f + (1 | g)", dict(offset="o"), False),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_spark_fit_equals_in_memory(name, spark, data):
    """Level "c" of f is only in the last partition; crossed (g, h) pairs in all four."""
    formula, kwargs, missing = MODELS[name]
    df = with_missing(data) if missing else data
    (m0, w0), (m1, w1) = fit_both(spark, formula, df, **kwargs)
    assert w1 == w0
    if missing:
        assert w1 == [("DroppedRowsWarning", "5 rows with missing values dropped (2995 used)")]
    assert_same(m0, m1)
    assert m1.fitted is None
    if kwargs.get("optimizer") == "lbfgsb":
        assert m0.optimizer.method == m1.optimizer.method == "scipy L-BFGS-B"


def test_bad_input(spark, data):
    import glmm_sparse.spark as gss

    with pytest.raises(TypeError, match="pyspark.sql.DataFrame"):
        gss.lmer("y ~ x + (1 | g)", data)
    with pytest.raises(gs.FormulaError, match="'z' used in the formula is not in the data"):
        gss.lmer("y ~ z + (1 | g)", spark.createDataFrame(data.head(50)))


def test_broadcasts_leave_no_files_on_the_driver(spark, data):
    """The accumulator's broadcast is destroyed after each fit: its pickle in Spark's
    temporary directory goes too (unpersist() left one per fit)."""
    import glmm_sparse.spark as gss

    temp = Path(spark.sparkContext._temp_dir)
    sdf = spark_frame(spark, data)
    gss.lmer("y ~ x + (1 | g)", sdf, batch_rows=BATCH)
    before = sorted(temp.rglob("*"))
    for _ in range(2):
        gss.lmer("y ~ x + (1 | g)", sdf, batch_rows=BATCH)
    assert sorted(temp.rglob("*")) == before


def test_an_error_in_a_partition_is_raised_as_itself(spark, data):
    """A DataError on an executor reaches the caller as that DataError (not as Spark's
    PythonException with a Java trace), its rows counted in their batch."""
    import glmm_sparse.spark as gss

    df = data.assign(w=data["w"].where(data.index != 2500, -1.0))
    with pytest.raises(gs.DataError, match=r"weights must be finite and >= 0; row \d+ has "
                                           r"-1.0 \(1 row\(s\) in this batch\)"):
        gss.lmer("y ~ x + (1 | g)", spark_frame(spark, df), weights="w", batch_rows=BATCH)


def test_decimal_and_known_sigma(spark, data):
    """A decimal column (Spark's type for exact numbers) is a number, as in memory; and
    sigma= allows one random effect per row (the BCG trials; metafor's tau^2)."""
    import json

    import glmm_sparse.spark as gss
    from pyspark.sql.types import DecimalType

    df = data.assign(x=data["x"].round(6))
    sdf = spark_frame(spark, df)
    sdf = sdf.withColumn("x", sdf["x"].cast(DecimalType(12, 6)))
    assert isinstance(sdf.schema["x"].dataType, DecimalType)
    m = gss.lmer("y ~ x + (1 | g)", sdf, batch_rows=BATCH)
    assert_same(gs.lmer("y ~ x + (1 | g)", df), m)
    ref_dir = Path(__file__).parent / "reference" / "inference"
    ref = json.loads((ref_dir / "bcg_known_variances.json").read_text())["ml"]
    bcg = pd.read_csv(ref_dir / "bcg.csv").assign(w=lambda f: 1.0 / f["vi"])
    bcg["trial"] = bcg["trial"].astype(str)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = gss.lmer("yi ~ ablat + alloc + (1 | trial)", spark.createDataFrame(bcg),
                     weights="w", sigma=1.0, reml=False)
    assert float(m.varcorr["vcov"].iloc[0]) == pytest.approx(ref["tau2"], rel=1e-5)
