"""The command line: summaries, JSON output, exit codes."""
import json
from pathlib import Path

import numpy as np
import pytest

from glmm_sparse.__main__ import main

SLEEP = Path(__file__).parent / "reference" / "data" / "sleepstudy.csv"
FORMULA = "Reaction ~ Days + (Days | Subject)"


def test_fit_prints_the_summary_and_writes_json(tmp_path, capsys):
    out = tmp_path / "fit.json"
    assert main(["fit", FORMULA, str(SLEEP), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("Linear mixed model fit by REML. t-tests use Satterthwaite's "
                           "method [\nlmerModLmerTest]")
    assert "REML criterion at convergence: 1743.6" in text
    result = json.loads(out.read_text())
    assert result["reml"] is True and result["nobs"] == 180
    assert result["loglik"] == pytest.approx(-871.814135979976, rel=1e-9)  # lme4 1.1-31 logLik
    assert set(result["fixef"]) == {"(Intercept)", "Days"}
    assert result["ddf"] == "satterthwaite"
    assert result["fixed_effects"][1]["df"] == pytest.approx(17.0, rel=1e-4)  # lmerTest: 17.000


@pytest.mark.parametrize("ddf, title, header", [
    ("none", "Linear mixed model fit by REML ['lmerMod']", "Estimate Std. Error t value"),
    ("kenward-roger", "Linear mixed model fit by REML. t-tests use Kenward-Roger's method [",
     "Estimate Std. Error      df t value Pr(>|t|)"),
    ("normal", "Linear mixed model fit by REML ['lmerMod']",
     "Estimate Std. Error z value Pr(>|z|)"),
])
def test_fit_with_ddf(ddf, title, header, tmp_path, capsys):
    out = tmp_path / "fit.json"
    assert main(["fit", FORMULA, str(SLEEP), "--ddf", ddf, "--json", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == title
    assert any(line.strip() == header for line in lines)
    assert json.loads(out.read_text())["ddf"] == ddf


def test_ddf_help_and_bad_choice(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    assert "--ddf {satterthwaite,kenward-roger,normal,none}" in capsys.readouterr().out
    with pytest.raises(SystemExit) as err:
        main(["fit", FORMULA, str(SLEEP), "--ddf", "bonferroni"])
    assert err.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_glmm_refuses_satterthwaite(capsys):
    cbpp = Path(__file__).parent / "reference" / "data" / "cbpp.csv"
    code = main(["fit", "cbind(incidence, size - incidence) ~ C(period) + (1 | herd)",
                 str(cbpp), "--family", "binomial", "--ddf", "satterthwaite"])
    assert code == 2 and "ddf='normal'" in capsys.readouterr().err


def test_fit_by_ml(capsys):
    assert main(["fit", FORMULA, str(SLEEP), "--ml"]) == 0
    assert "fit by maximum likelihood" in capsys.readouterr().out


def test_parquet_input(tmp_path, capsys):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    path = tmp_path / "sleep.parquet"
    pd.read_csv(SLEEP).to_parquet(path)
    assert main(["fit", FORMULA, str(path)]) == 0
    assert "Number of obs: 180, groups:  Subject, 18" in capsys.readouterr().out


@pytest.mark.parametrize("formula, data, words", [
    ("Reaction ~ Dayz + (Days | Subject)", SLEEP, "did you mean 'Days'"),
    ("Reaction ~ Days + (Days | Subject", SLEEP, "error:"),
    ("Reaction ~ Days", SLEEP, "no random-effects term"),
    (FORMULA, Path("no/such/file.csv"), "does not exist"),
])
def test_bad_input_exits_with_2_and_says_why(formula, data, words, capsys):
    assert main(["fit", formula, str(data)]) == 2
    assert words in capsys.readouterr().err


def test_synthetic_prints_fit_and_truth(capsys):
    assert main(["synthetic", "--rows", "5000", "--levels", "50", "10", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "Number of obs: 5000, groups:  g1, 50; g2, 10" in out
    assert "truth: beta = (1, 0.5, -0.5)" in out


def test_glmm_fit_from_the_command_line(tmp_path, capsys):
    cbpp = Path(__file__).parent / "reference" / "data" / "cbpp.csv"
    out = tmp_path / "glmm.json"
    code = main(["fit", "cbind(incidence, size - incidence) ~ C(period) + (1 | herd)", str(cbpp),
                 "--family", "binomial", "--nagq", "25", "--json", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "(Adaptive\n  Gauss-Hermite Quadrature, nAGQ = 25) [glmerMod]" in text
    assert " Family: binomial  ( logit )" in text
    result = json.loads(out.read_text())
    assert result["family"] == "binomial" and result["nagq"] == 25
    assert result["loglik"] == pytest.approx(-91.9833690390309, rel=1e-8)  # lme4, full scale


def test_impossible_link_exits_with_2(capsys):
    cbpp = Path(__file__).parent / "reference" / "data" / "cbpp.csv"
    code = main(["fit", "incidence ~ period + (1 | herd)", str(cbpp), "--family", "poisson",
                 "--link", "logit"])
    assert code == 2
    assert "logit" in capsys.readouterr().err


def test_synthetic_writes_the_seeded_rows_to_parquet(tmp_path, capsys):
    pq = pytest.importorskip("pyarrow.parquet")
    from glmm_sparse.synthetic import Design, simulate

    out = tmp_path / "rows.parquet"
    code = main(["synthetic", "--rows", "3000", "--levels", "30", "4", "--nested",
                 "--family", "binomial", "--seed", "5", "--write", str(out)])
    assert code == 0
    assert "wrote 3,000 rows" in capsys.readouterr().out
    back = pq.read_table(out).to_pandas()
    expected, _ = simulate(Design((30, 4), nested=True, family="binomial"), 3000, seed=5)
    np.testing.assert_array_equal(back["y"].to_numpy(), expected["y"].to_numpy())
    np.testing.assert_array_equal(back["g2"].astype(str), expected["g2"].astype(str))


def test_synthetic_glmm_fit_prints_the_truth(capsys):
    assert main(["synthetic", "--rows", "4000", "--levels", "40", "--family", "poisson"]) == 0
    out = capsys.readouterr().out
    assert "Generalized linear mixed model" in out and "truth: beta = (0.5, 0.3, -0.3)" in out


@pytest.mark.parametrize("argv, words", [
    (["--levels", "1"], "at least 2 levels"),
    (["--levels", "5", "6", "7", "--nested"], "exactly two factors"),
    (["--rows", "1"], "--rows must be at least 2"),
])
def test_synthetic_refuses_bad_designs_with_exit_2(argv, words, capsys):
    assert main(["synthetic", *argv]) == 2
    assert words in capsys.readouterr().err


# ---- pipeline jobs: Parquet globs, JSON and Parquet outputs, exit codes --------------------

def _sleep_parquet_parts(tmp_path):
    """sleepstudy split over three Parquet files in a directory."""
    import pandas as pd

    data = pd.read_csv(SLEEP)
    folder = tmp_path / "parts"
    folder.mkdir()
    for i, part in enumerate((data.iloc[:60], data.iloc[60:130], data.iloc[130:])):
        part.to_parquet(folder / f"part-{i}.parquet")
    return folder


@pytest.mark.parametrize("streaming", ["auto", "yes", "no"])
def test_a_parquet_glob_fits_quietly_and_writes_json_and_ranef(tmp_path, capsys, streaming):
    import pandas as pd

    folder = _sleep_parquet_parts(tmp_path)
    out, ranef = tmp_path / "fit.json", tmp_path / "ranef.parquet"
    code = main(["fit", FORMULA, str(folder / "part-*.parquet"), "--quiet", "--streaming",
                 streaming, "--json", str(out), "--ranef", str(ranef)])
    assert code == 0
    assert capsys.readouterr().out == ""
    result = json.loads(out.read_text())
    assert result["nobs"] == 180
    assert result["loglik"] == pytest.approx(-871.814135979976, rel=1e-9)  # lme4 1.1-31 logLik
    table = pd.read_parquet(ranef)
    assert list(table.columns) == ["grpvar", "term", "grp", "condval", "condsd"]
    assert len(table) == 36 and table["grp"].nunique() == 18
    assert (table["condsd"] > 0).all()


def test_ranef_as_csv_and_a_directory_as_data(tmp_path, capsys):
    import pandas as pd

    folder = _sleep_parquet_parts(tmp_path)
    ranef = tmp_path / "ranef.csv"
    assert main(["fit", FORMULA, str(folder), "--ddf", "none", "--ranef", str(ranef)]) == 0
    assert "Number of obs: 180" in capsys.readouterr().out
    table = pd.read_csv(ranef)
    assert table.loc[0, "grpvar"] == "Subject" and len(table) == 36


def test_an_output_that_cannot_be_written_exits_with_2_before_the_fit(tmp_path, capsys):
    code = main(["fit", FORMULA, str(SLEEP), "--json", str(tmp_path / "no" / "fit.json")])
    assert code == 2
    captured = capsys.readouterr()
    assert "does not exist" in captured.err and captured.out == ""


CBPP = Path(__file__).parent / "reference" / "data" / "cbpp.csv"
CBPP_FORMULA = "cbind(incidence, size - incidence) ~ C(period) + (1 | herd)"


def _cbpp_parquet_parts(tmp_path) -> Path:
    import pandas as pd

    data = pd.read_csv(CBPP)
    folder = tmp_path / "cbpp"
    folder.mkdir()
    for i, part in enumerate((data.iloc[:20], data.iloc[20:])):
        part.to_parquet(folder / f"part-{i}.parquet")
    return folder


def test_streaming_a_glmm_fits_out_of_core_in_the_spill_dir(tmp_path, capsys):
    """--streaming yes fits a GLMM out of core (it used to be refused), its rows encoded
    under --spill-dir; lme4 1.1-31's AGQ-25 log-likelihood (as the in-memory test above)."""
    folder, spill, out = _cbpp_parquet_parts(tmp_path), tmp_path / "spill", tmp_path / "g.json"
    spill.mkdir()
    code = main(["fit", CBPP_FORMULA, str(folder), "--family", "binomial", "--nagq", "25",
                 "--streaming", "yes", "--spill-dir", str(spill), "--json", str(out),
                 "--quiet", "--log-level", "INFO"])
    assert code == 0
    err = capsys.readouterr().err
    assert "glmer out of core: 56 rows" in err and f"in {spill}" in err
    result = json.loads(out.read_text())
    assert result["nobs"] == 56 and result["fitted"] is None
    assert result["loglik"] == pytest.approx(-91.9833690390309, rel=1e-8)  # lme4, full scale
    assert list(spill.iterdir()) == []


def test_streaming_no_reads_a_glmm_whole(tmp_path, capsys, monkeypatch):
    """--streaming no is passed on to glmer: in memory even above the row threshold."""
    from glmm_sparse import streaming

    monkeypatch.setattr(streaming, "STREAM_ABOVE_ROWS", 10)
    folder, out = _cbpp_parquet_parts(tmp_path), tmp_path / "g.json"
    for mode, whole in (("no", True), ("auto", False)):
        assert main(["fit", CBPP_FORMULA, str(folder), "--family", "binomial", "--quiet",
                     "--streaming", mode, "--json", str(out), "--log-level", "INFO"]) == 0
        err = capsys.readouterr().err
        assert ("glmer out of core" not in err) == whole
        assert (json.loads(out.read_text())["fitted"] is not None) == whole


def test_help_says_what_streaming_does_for_glmms(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "a GLMM out of core" in text and "--spill-dir" in text
    assert "LMMs on Parquet" not in text


def test_unreadable_parquet_data_exits_with_2(tmp_path, capsys):
    """Files pyarrow cannot read together (a column of type null with rows, then text)
    are bad input: exit 2 with a message, not a traceback."""
    import pandas as pd

    data = pd.read_csv(SLEEP)
    data.iloc[:10].assign(Subject=None).to_parquet(tmp_path / "a.parquet")
    data.iloc[10:].assign(Subject=data["Subject"].astype(str)).to_parquet(tmp_path / "b.parquet")
    assert main(["fit", FORMULA, str(tmp_path), "--streaming", "no"]) == 2
    assert "cannot read the Parquet data" in capsys.readouterr().err


def test_no_room_for_the_spill_files_exits_with_1(tmp_path, capsys, monkeypatch):
    import collections

    from glmm_sparse import outofcore

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(outofcore.shutil, "disk_usage", lambda path: usage(10**6, 0, 10))
    code = main(["fit", CBPP_FORMULA, str(_cbpp_parquet_parts(tmp_path)), "--family",
                 "binomial", "--streaming", "yes", "--spill-dir", str(tmp_path)])
    assert code == 1
    assert "the fit failed: the out-of-core fit needs about" in capsys.readouterr().err


def test_a_failed_fit_exits_with_1(tmp_path, capsys):
    import pandas as pd

    # the random effects reproduce the response exactly: no residual variance is left
    data = pd.DataFrame({"g": list("aabbccdd") * 3, "x": np.arange(24.0)})
    data["y"] = data["g"].map({"a": 1.0, "b": 5.0, "c": -2.0, "d": 7.0})
    path = tmp_path / "exact.csv"
    data.to_csv(path, index=False)
    code = main(["fit", "y ~ 1 + (1 | g)", str(path)])
    assert code == 1
    assert "the fit failed" in capsys.readouterr().err


def test_a_ddf_the_fit_cannot_take_is_refused_before_reading_the_data(capsys):
    # the data file does not exist: a refusal that reads it would say so instead
    missing = "no/such/file.csv"
    assert main(["fit", FORMULA, missing, "--ml", "--ddf", "kenward-roger"]) == 2
    assert "needs a REML fit" in capsys.readouterr().err
    assert main(["fit", "y ~ x + (1 | g)", missing, "--family", "binomial",
                 "--ddf", "satterthwaite"]) == 2
    assert "ddf='normal'" in capsys.readouterr().err


def test_log_level_info_logs_the_passes_and_leaves_no_handler(tmp_path, capsys):
    import logging

    folder = _sleep_parquet_parts(tmp_path)
    logger = logging.getLogger("glmm_sparse")
    before = list(logger.handlers)
    assert main(["fit", FORMULA, str(folder), "--quiet", "--streaming", "yes",
                 "--log-level", "INFO"]) == 0
    err = capsys.readouterr().err
    assert "glmm_sparse" in err and "INFO" in err and "rows" in err
    assert logger.handlers == before


def test_print_of_an_lmm_is_the_lme4_layout_without_tests():
    import pandas as pd

    import glmm_sparse as gs

    m = gs.lmer(FORMULA, pd.read_csv(SLEEP))
    assert str(m) == m.summary(ddf="none")
    assert "Pr(>|t|)" in m.summary() and "Pr(>|t|)" not in str(m)



def test_optimizer_choice(tmp_path, capsys):
    out = tmp_path / "fit.json"
    assert main(["fit", FORMULA, str(SLEEP), "--optimizer", "lbfgsb", "--json", str(out)]) == 0
    assert "L-BFGS-B" in out.read_text()
    cbpp = Path(__file__).parent / "reference" / "data" / "cbpp.csv"
    code = main(["fit", "cbind(incidence, size - incidence) ~ C(period) + (1 | herd)",
                 str(cbpp), "--family", "binomial", "--optimizer", "lbfgsb"])
    assert code == 2 and "lbfgsb" in capsys.readouterr().err
