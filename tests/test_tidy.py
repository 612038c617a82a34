"""tidy() (broom.mixed's columns and names), to_json() and _repr_html_()."""
import dataclasses
import json
import re

import numpy as np
import pytest
from scipy import stats

import glmm_sparse as gs
from refdata import load_data

SS = "Reaction ~ Days + (Days | Subject)"


@pytest.fixture(scope="module")
def sleep():
    return gs.lmer(SS, load_data("sleepstudy"))


@pytest.fixture(scope="module")
def cbpp():
    return gs.glmer("cbind(incidence, size - incidence) ~ period + (1 | herd)",
                    load_data("cbpp"), family="binomial")


def test_tidy_rows_and_names(sleep):
    """broom.mixed::tidy(m) of the sleepstudy fit: these rows, in this order."""
    t = sleep.tidy()
    assert list(t.columns) == ["effect", "group", "term", "estimate", "std.error", "statistic",
                               "df", "p.value"]
    assert t["effect"].tolist() == ["fixed"] * 2 + ["ran_pars"] * 4
    assert t["term"].tolist() == ["(Intercept)", "Days", "sd__(Intercept)", "sd__Days",
                                  "cor__(Intercept).Days", "sd__Observation"]
    assert t["group"].tolist()[2:] == ["Subject"] * 3 + ["Residual"]
    vc = sleep.varcorr
    assert t["estimate"].tolist()[2:] == vc["sdcor"].tolist()
    fixed = sleep.coef_table()
    assert t["df"].tolist()[:2] == fixed["df"].tolist()
    assert t["p.value"].tolist()[:2] == fixed["Pr(>|t|)"].tolist()
    assert t["statistic"].tolist()[:2] == pytest.approx(fixed["t value"].tolist(), rel=1e-14)
    assert t.loc[2:, ["std.error", "statistic", "df", "p.value"]].isna().all().all()


def test_tidy_conf_int_uses_the_ddf_quantiles(sleep):
    t = sleep.tidy(effects="fixed", conf_int=True, conf_level=0.9)
    q = stats.t.ppf(0.95, t["df"])
    assert t["conf.low"].to_numpy() == pytest.approx(t["estimate"] - q * t["std.error"])
    assert t["conf.high"].to_numpy() == pytest.approx(t["estimate"] + q * t["std.error"])
    z = sleep.tidy(effects=["fixed"], conf_int=True, ddf="normal")
    assert z["conf.high"].to_numpy() == pytest.approx(
        z["estimate"] + stats.norm.ppf(0.975) * z["std.error"])
    assert z["df"].isna().all()


def test_tidy_glmm(cbpp):
    t = cbpp.tidy(conf_int=True)
    assert t["term"].tolist() == ["(Intercept)", "period2", "period3", "period4",
                                  "sd__(Intercept)"]
    assert t["df"].isna().all() and t["group"].tolist()[-1] == "herd"
    assert t["p.value"].tolist()[:4] == cbpp.coef_table()["Pr(>|z|)"].tolist()


@pytest.mark.parametrize("kwargs, words", [
    ({"effects": "ran_vals"}, "effects must be among"),
    ({"conf_level": 95}, "conf_level"),
    ({"ddf": "exact"}, "ddf must be one of"),
])
def test_tidy_bad_arguments(sleep, kwargs, words):
    with pytest.raises(gs.ModelSpecError, match=words):
        sleep.tidy(**kwargs)


def test_to_json_writes_the_dict(sleep, tmp_path):
    path = tmp_path / "fit.json"
    text = sleep.to_json(path)
    assert path.read_text() == text
    d = json.loads(text)
    assert d == json.loads(json.dumps(sleep.to_dict()))
    assert d["ddf"] == "satterthwaite" and d["fixed_effects"][1]["term"] == "Days"
    assert "\n  " in text and "\n" not in sleep.to_json(indent=None)


def test_repr_html_draws_the_tables(sleep, cbpp):
    page = sleep._repr_html_()
    tables = re.findall(r"<table>(.*?)</table>", page)
    assert len(tables) == 3  # fit statistics, random effects, fixed effects
    assert tables[1].count("<tr>") == 1 + 3  # header + Subject x 2 + Residual
    # as print(m): lme4's table, no tests (displaying a result computes no df)
    assert tables[2].count("<tr>") == 1 + 2 and "t value" in tables[2]
    assert "Pr(&gt;|t|)" not in tables[2] and "Satterthwaite" not in page
    risky = dataclasses.replace(sleep, data_name="<script>x</script>")
    assert "<script>" not in risky._repr_html_() and "&lt;script&gt;" in risky._repr_html_()
    glmm = cbpp._repr_html_()
    assert "Family: binomial (logit)" in glmm and "Pr(&gt;|z|)" in glmm
    assert np.all(np.isfinite(sleep.coef_table()["df"]))
