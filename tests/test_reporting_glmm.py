"""Tests for glmm_sparse.reporting on GLMMs: lme4's print(summary(glmer_fit)) and result_dict.

Golden text: tests/reference/glmm/summaries/CASE.txt (lme4 1.1-31, written by generate_glmm.R
there) and, for the shared cbpp cases (tests/reference/lme4/cbpp_binomial_*.json), the two
summaries in CBPP_GOLDEN below, printed by the same R / lme4 with options(width = 80,
digits = 7) from tests/reference/data/cbpp.csv (herd and period levels in numeric order):

    f <- cbind(incidence, size - incidence) ~ period + (1 | herd)
    glmer(f, cbpp, binomial, control = glmerControl(tolPwrss = 1e-13, optimizer = "bobyqa",
                                                    optCtrl = list(rhoend = 1e-10, maxfun = 1e5)))
    glmer(f, cbpp, binomial, nAGQ = 25)

(the first without its "Control:" lines). The Laplace golden is lme4's tight refit, as the
README's tight_refit: lme4's default Laplace fit stops 2.8e-4 below that optimum in logLik
(-92.02657 vs -92.02628; we reach -92.02628) and its SEs are 1.1 % smaller (0.3032 vs 0.3066
for period2), its PIRLS noise; the tight refit prints our summary byte for byte.

The layout must be lme4's exactly: line count, line lengths, every token in the same columns.
Numbers are compared with tolerances for lme4's own noise (tests/reference/glmm/README.md,
"PIRLS noise"): our fits track lme4's tight refits, not its default fits, which differ from
the tight ones by up to 1.8e-3 relative in beta, 3.5e-3 in the SEs and 5.0e-3 in z
(inverse_gaussian_log). So:

- AIC table: one unit of the printed last digit (0.1; the noise is ~1e-2 on that scale);
- Std. Error, z / t value and Pr(>|z|): 6e-3 relative, p-values compared as |z| = qnorm(p/2);
- everything else: 2e-3 relative or one unit of the last printed digit, whichever is larger.

R drops trailing zeros ("0.412" for 0.41200), so a number may print with one digit less than
lme4's; it must then still start or end where lme4's does (left / right-justified column).
"""
import dataclasses
import json
import re
import warnings
from decimal import Decimal, InvalidOperation
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import norm

import glmm_sparse as gs
from glmm_sparse import GlmerResult, GlmmSparseWarning
from glmm_sparse.reporting import (SIGNIF_LEGEND, _coef_strings, fill_lines, format_pval,
                                   matrix_lines, result_dict, signif_stars, strwrap,
                                   summary_tables, summary_text, title_lines)
from jsonplain import GLMM_RESULT_KEYS, LMM_RESULT_KEYS, plain_only
from refdata import glmer_args, load_case, load_data

GOLDEN = Path(__file__).parent / "reference" / "glmm" / "summaries"
GLMM_CASES = sorted(p.stem for p in GOLDEN.glob("*.txt"))
SHARED_CASES = ["cbpp_binomial_laplace", "cbpp_binomial_agq25"]
REL, REL_SE = 2e-3, 6e-3

CBPP_HEAD = """\
 Family: binomial  ( logit )
Formula: cbind(incidence, size - incidence) ~ period + (1 | herd)
   Data: cbpp

     AIC      BIC   logLik deviance df.resid 
"""
CBPP_TAIL = """\
---
Signif. codes:  0 ‘***’ 0.001 ‘**’ 0.01 ‘*’ 0.05 ‘.’ 0.1 ‘ ’ 1

Correlation of Fixed Effects:
        (Intr) perid2 perid3
"""
CBPP_GOLDEN = {
    "cbpp_binomial_laplace": """\
Generalized linear mixed model fit by maximum likelihood (Laplace
  Approximation) [glmerMod]
""" + CBPP_HEAD + """\
   194.1    204.2    -92.0    184.1       51 

Scaled residuals: 
    Min      1Q  Median      3Q     Max 
-2.3818 -0.7888 -0.2024  0.5146  2.8796 

Random effects:
 Groups Name        Variance Std.Dev.
 herd   (Intercept) 0.4125   0.6423  
Number of obs: 56, groups:  herd, 15

Fixed effects:
            Estimate Std. Error z value Pr(>|z|)    
(Intercept)  -1.3985     0.2325  -6.016 1.79e-09 ***
period2      -0.9923     0.3066  -3.236 0.001212 ** 
period3      -1.1287     0.3266  -3.455 0.000549 ***
period4      -1.5803     0.4274  -3.697 0.000218 ***
""" + CBPP_TAIL + """\
period2 -0.364              
period3 -0.340  0.278       
period4 -0.261  0.212  0.196
""",
    "cbpp_binomial_agq25": """\
Generalized linear mixed model fit by maximum likelihood (Adaptive
  Gauss-Hermite Quadrature, nAGQ = 25) [glmerMod]
""" + CBPP_HEAD + """\
   110.0    120.1    -50.0    100.0       51 

Scaled residuals: 
    Min      1Q  Median      3Q     Max 
-2.3808 -0.7905 -0.2002  0.5112  2.8731 

Random effects:
 Groups Name        Variance Std.Dev.
 herd   (Intercept) 0.4193   0.6475  
Number of obs: 56, groups:  herd, 15

Fixed effects:
            Estimate Std. Error z value Pr(>|z|)    
(Intercept)  -1.3992     0.2335  -5.992 2.07e-09 ***
period2      -0.9914     0.3068  -3.232 0.001230 ** 
period3      -1.1278     0.3268  -3.451 0.000558 ***
period4      -1.5795     0.4276  -3.694 0.000221 ***
""" + CBPP_TAIL + """\
period2 -0.362              
period3 -0.339  0.279       
period4 -0.260  0.212  0.197
""",
}

# lme4 prints nAGQ > 1 fits of Poisson and binomial-with-trials data without the saturated
# part of the log-likelihood (README e.); we print the full one. Expected lines: lme4's
# AICtab formatting of the reference JSON's full logLik, AIC and BIC (printed by R 4.2.2:
# round(c(AIC, BIC, logLik, -2 logLik, nobs - df), 1), format()ed as .prt.aictab does).
FULL_LOGLIK_AIC_LINE = {
    "poisson_agq": "  1210.5   1222.4   -602.3   1204.5      379 ",
    "cbpp_binomial_agq25": "   194.0    204.1    -92.0    184.0       51 ",
}
# Whole summaries that agree with lme4's byte for byte (after the line above).
EXACT = ["binary_agq", "binary_agq15", "binary_crossed_nagq0", "poisson_agq",
         "cbpp_binomial_laplace"]


@pytest.fixture(scope="module")
def fits():
    """Fitted GlmerResults by case id (named data set in "Data:"), each fitted once."""
    cache: dict[str, GlmerResult] = {}

    def get(case_id: str) -> GlmerResult:
        if case_id not in cache:
            base = "shared" if case_id in SHARED_CASES else "glmm"
            ref = load_case(case_id, base)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", GlmmSparseWarning)
                fit = gs.glmer(ref["formula"], load_data(ref["data"], base), **glmer_args(ref))
            cache[case_id] = dataclasses.replace(fit, data_name=ref["data"])
        return cache[case_id]

    return get


def golden_lines(case_id: str) -> list[str]:
    text = CBPP_GOLDEN.get(case_id) or (GOLDEN / f"{case_id}.txt").read_text()
    return text.splitlines()


def expected_lines(case_id: str, result: GlmerResult) -> list[str]:
    """lme4's text with the lines where glmm_sparse says something else on purpose."""
    lines = golden_lines(case_id)
    if case_id in FULL_LOGLIK_AIC_LINE:
        k = next(k for k, s in enumerate(lines) if s.split()[:1] == ["AIC"])
        lines[k + 1] = FULL_LOGLIK_AIC_LINE[case_id]
    return lines


# ---- the tolerant comparison ----------------------------------------------------------------

def _number(token: str) -> Decimal | None:
    """A printed decimal number; integers (counts, df.resid) stay text and compare exactly."""
    if not re.search(r"[.e]", token):
        return None
    try:
        value = Decimal(token)
    except InvalidOperation:
        return None
    return value if value.is_finite() else None


def _unit(x: Decimal) -> Decimal:
    return Decimal(1).scaleb(x.as_tuple().exponent)


def _close(x: Decimal, y: Decimal, rel: float) -> bool:
    unit = max(_unit(x), _unit(y))
    return abs(x - y) <= max(Decimal(rel) * abs(y), unit)


def _close_p(x: Decimal, y: Decimal) -> bool:
    """p-values as |z| = qnorm(p / 2): REL_SE of |z| plus one printed unit of p."""
    z = lambda p: float(norm.isf(float(p) / 2))  # noqa: E731
    rounding = abs(z(y) - z(y + max(_unit(x), _unit(y))))
    return abs(z(x) - z(y)) <= REL_SE * z(y) + rounding


def _kinds(expected: list[str]) -> list[str]:
    """Per expected line: "aic" (the AICtab values), "fixef" (a coefficient row), "other"."""
    kinds, section = [], "other"
    for k, line in enumerate(expected):
        if k and expected[k - 1].split()[:1] == ["AIC"]:
            kinds.append("aic")
            continue
        if line in ("", "---"):
            section = "other"
        kinds.append(section if section == "fixef" and not line.startswith(" ") else "other")
        if line == "Fixed effects:":
            section = "fixef"
    return kinds


def _token_ok(kind: str, index: int, x: Decimal, y: Decimal) -> bool:
    if kind == "aic":
        return abs(x - y) <= max(_unit(x), _unit(y))
    if kind == "fixef" and index >= 4:
        return _close_p(x, y)
    return _close(x, y, REL_SE if kind == "fixef" and index in (2, 3) else REL)


def compare_lines(ours: list[str], expected: list[str]) -> list[str]:
    """Mismatches of layout (line count and length, token columns) and values."""
    if len(ours) != len(expected):
        return [f"{len(ours)} lines, expected {len(expected)}"]
    problems = []
    for k, (a, b, kind) in enumerate(zip(ours, expected, _kinds(expected))):
        ta, tb = list(re.finditer(r"\S+", a)), list(re.finditer(r"\S+", b))
        if len(a) != len(b) or len(ta) != len(tb):
            problems.append(f"line {k}: layout {a!r} != {b!r}")
            continue
        for i, (ma, mb) in enumerate(zip(ta, tb)):
            x, y = _number(ma.group()), _number(mb.group())
            if x is None or y is None:
                ok = ma.group() == mb.group() and ma.span() == mb.span()
            else:
                aligned = ma.start() == mb.start() or ma.end() == mb.end()
                same_span = ma.span() == mb.span() or (len(ma.group()) != len(mb.group())
                                                       and aligned)
                ok = same_span and _token_ok(kind, i, x, y)
            if not ok:
                problems.append(f"line {k}: {ma.group()!r} != {mb.group()!r} in {b!r}")
    return problems


FIXEF = ["Fixed effects:", "            Estimate Std. Error z value Pr(>|z|)    "]


@pytest.mark.parametrize("ours, expected, ok", [
    (["  8429.1"], ["  8431.2"], True),  # other lines: 2e-3 relative...
    ([" AIC", "  8429.2"], [" AIC", "  8429.1"], True),  # ... the AICtab one unit only
    ([" AIC", "  8429.3"], [" AIC", "  8429.1"], False),
    (["a 0.412 "], ["a 0.4119"], True),  # R dropped a trailing zero: left-justified column
    (["a  0.412"], ["a 0.4119"], True),  # right-justified
    (["a 0.412 "], ["a 0.4139"], False),
    (["a 0.4119"], ["a 0.4129"], False),  # 2.4e-3 relative
    (["a   0.40"], ["a   0.39"], True),  # one unit
    (["subj, 300"], ["subj, 301"], False),  # integers are exact
    (["a 1.2"], ["a  1.2"], False),
    (FIXEF + ["x   0.8253  0.03195  25.829   <2e-16 ***"],
     FIXEF + ["x   0.8251  0.03184  25.913   <2e-16 ***"], True),
    (FIXEF + ["x   0.8253  0.03195  25.829   <2e-16 ** "],
     FIXEF + ["x   0.8251  0.03184  25.913   <2e-16 ***"], False),
    (FIXEF + ["x   0.8263  0.03184  25.913   <2e-16 ***"],
     FIXEF + ["x   0.8251  0.03184  25.913   <2e-16 ***"], True),
    (FIXEF + ["x   0.8283  0.03184  25.913   <2e-16 ***"],  # estimates: 2e-3
     FIXEF + ["x   0.8251  0.03184  25.913   <2e-16 ***"], False),
    (FIXEF + ["x   0.2958  0.06743   4.386 1.16e-05 ***"],
     FIXEF + ["x   0.2963  0.06723   4.407 1.05e-05 ***"], True),
    (FIXEF + ["x   0.2958  0.06743   4.386 1.36e-05 ***"],
     FIXEF + ["x   0.2963  0.06723   4.407 1.05e-05 ***"], False),
    (FIXEF + ["x   0.2958  0.06803   4.386 1.16e-05 ***"],  # SE 1.2e-2 off
     FIXEF + ["x   0.2963  0.06723   4.407 1.05e-05 ***"], False),
])
def test_compare_lines(ours, expected, ok):
    assert (not compare_lines(ours, expected)) is ok


# ---- golden summaries -----------------------------------------------------------------------

@pytest.mark.parametrize("case_id", GLMM_CASES + SHARED_CASES)
def test_summary_matches_lme4(fits, case_id):
    result = fits(case_id)
    problems = compare_lines(result.summary().splitlines(), expected_lines(case_id, result))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("case_id", EXACT)
def test_layout_is_exact_when_numbers_agree(fits, case_id):
    result = fits(case_id)
    assert summary_text(result) == "\n".join(expected_lines(case_id, result)) + "\n"


def test_offset_line(fits):
    lines = fits("poisson_offset_arg").summary().splitlines()
    assert lines[3:7] == ["Formula: count ~ x + (1 | region/site)", "   Data: poisson_nested",
                          " Offset: logexp", ""]
    assert not compare_lines(lines, golden_lines("poisson_offset_arg"))


def test_weights_line(fits):
    lines = fits("binomial_prop_weights").summary().splitlines()
    assert lines[3:7] == ["Formula: prop ~ x + (1 + x | g)", "   Data: binomial_slopes",
                          "Weights: trials", ""]


def test_saturated_part_is_the_only_aic_difference(fits):
    """Our AIC line for poisson_agq is lme4's with the saturated log-likelihood added back."""
    ref = load_case("poisson_agq", "glmm")
    result = fits("poisson_agq")
    saturated = ref["devcomp"]["saturated_loglik"]
    assert result.loglik == pytest.approx(ref["logLik_lme4"] + saturated, abs=1e-6)
    assert summary_tables(result).fit["deviance"] == pytest.approx(-2 * ref["logLik"], abs=1e-5)


@pytest.mark.parametrize("nagq, expected", [
    (1, ["Generalized linear mixed model fit by maximum likelihood (Laplace",
         "  Approximation) [glmerMod]"]),
    (0, ["Generalized linear mixed model fit by maximum likelihood (Adaptive",
         "  Gauss-Hermite Quadrature, nAGQ = 0) [glmerMod]"]),
    (25, ["Generalized linear mixed model fit by maximum likelihood (Adaptive",
          "  Gauss-Hermite Quadrature, nAGQ = 25) [glmerMod]"]),
])
def test_title(fits, nagq, expected):
    result = dataclasses.replace(fits("binary_agq"), nagq=nagq)
    assert result.summary().splitlines()[:2] == expected


@pytest.mark.parametrize("family, link, line", [
    ("binomial", "logit", " Family: binomial  ( logit )"),
    ("binomial", "cloglog", " Family: binomial  ( cloglog )"),
    ("poisson", "sqrt", " Family: poisson  ( sqrt )"),
    ("gamma", "inverse", " Family: Gamma  ( inverse )"),
    ("inverse_gaussian", "1/mu^2", " Family: inverse.gaussian  ( 1/mu^2 )"),
])
def test_family_line_uses_r_names(fits, family, link, line):
    result = dataclasses.replace(fits("binary_agq"), family=family, link=link)
    assert result.summary().splitlines()[2] == line


@pytest.mark.parametrize("case_id, stat", [("gamma_log", "t value"),
                                           ("inverse_gaussian_log", "t value"),
                                           ("binary_crossed", "z value"),
                                           ("poisson_nested_offset", "z value")])
def test_t_for_scale_families_and_normal_p_values(fits, case_id, stat):
    fe = summary_tables(fits(case_id)).fixed_effects
    assert list(fe.columns) == ["Estimate", "Std. Error", stat, "Pr(>|z|)"]
    assert np.allclose(fe[stat], fe["Estimate"] / fe["Std. Error"], rtol=1e-15)
    assert np.allclose(fe["Pr(>|z|)"], 2 * norm.sf(np.abs(fe[stat])), rtol=1e-12, atol=0)


def test_printed_fixed_effects_are_the_tables_numbers(fits):
    """Each printed coefficient row rounds the table's values (nothing shifted or swapped)."""
    result = fits("cbpp_binomial_laplace")
    fe = summary_tables(result).fixed_effects
    lines = result.summary().splitlines()
    start = lines.index("Fixed effects:") + 2
    p_values = format_pval(fe["Pr(>|z|)"], 3)  # formatted together, as printCoefmat does
    for (name, row), p, line in zip(fe.iterrows(), p_values, lines[start:start + len(fe)]):
        tokens = line.split()
        assert tokens[0] == name and tokens[4] == p.strip()
        for token, value in zip(tokens[1:4], row.iloc[:3]):
            assert abs(Decimal(token) - Decimal(value)) <= _unit(Decimal(token)) / 2


def test_no_stars_or_legend_when_no_p_value_is_below_a_tenth(fits):
    result = fits("binary_agq")
    flat = dataclasses.replace(result, fixef=result.fixef * 1e-3)
    lines = flat.summary().splitlines()
    k = lines.index("Fixed effects:")
    assert lines[k + 1].endswith(" Pr(>|z|)") and lines[k + 2].endswith(" 0.999")
    assert lines[k + 4] == "" and "---" not in lines


def test_summary_and_str_render_the_same_text(fits):
    result = fits("gamma_log")
    assert result.summary() == str(result) == summary_text(result)


def test_reporting_leaves_the_result_unchanged(fits):
    result = fits("binomial_slopes")
    before = (result.theta.copy(), result.fixef.copy(), result.vcov.copy())
    summary_text(result)
    result_dict(result)
    assert np.array_equal(before[0], result.theta)
    assert before[1].equals(result.fixef) and before[2].equals(result.vcov)


# ---- R's formatting primitives (expected values printed by R 4.2.2) -------------------------

@pytest.mark.parametrize("pv, expected", [
    ([0.47, 1e-20], ["0.47", "<2e-16"]),
    ([8.15e-09, 1e-20], ["8.15e-09", "< 2e-16"]),
    ([0.001288, 0.000594, 0.000238, 2.26e-09], ["0.001288", "0.000594", "0.000238", "2.26e-09"]),
    ([1e-20, 1e-30], ["<2e-16", "<2e-16"]),
    ([0.5, 0.05, 0.0123456], ["0.5000", "0.0500", "0.0123"]),
    ([0.00009, 0.2], ["9e-05", "0.2"]),
    ([1, 0.99999], ["1", "1"]),
    ([1e-5, 3e-17, 0.2], ["1e-05", "<2e-16", "0.2"]),
])
def test_format_pval(pv, expected):
    assert [s.strip() for s in format_pval(pv, 3)] == expected


@pytest.mark.parametrize("pv, expected", [
    ([0.001, 0.0010001, 0.01, 0.0100001], ["***", "** ", "** ", "*  "]),
    ([0.05, 0.0500001, 0.1, 0.1000001], ["*", ".", ".", " "]),
    ([float("nan"), 0.01], ["  ", "**"]),
])
def test_signif_stars(pv, expected):
    assert signif_stars(pv) == expected


def test_printcoefmat_layouts_from_r(fits):
    """R 4.2.2's printCoefmat(m, digits = 4) for p-values (0.06, 0.5), (0.001, 0.0100001)
    and a NaN row, through the fixed-effects renderer."""
    result = fits("binary_agq")
    names = list(result.fixef.index)

    def rows(p, se=(1.0, 1.0)):
        z = np.array([0.1, 0.2])
        fe = summary_tables(result).fixed_effects.copy()
        fe[:] = np.column_stack([[0.1, 0.2], se, z * np.array(se), p])
        cols, cells, stars = _coef_strings(fe)
        return matrix_lines(names, cols, cells, right=True) + (SIGNIF_LEGEND if stars else [])

    assert rows([0.06, 0.5]) == [
        "            Estimate Std. Error z value Pr(>|z|)  ",
        "(Intercept)      0.1        1.0     0.1     0.06 .",
        "x                0.2        1.0     0.2     0.50  ", *SIGNIF_LEGEND]
    assert rows([0.001, 0.0100001])[1:3] == [
        "(Intercept)      0.1        1.0     0.1    0.001 ***",
        "x                0.2        1.0     0.2    0.010 *  "]
    assert rows([np.nan, 0.01], se=(np.nan, 1.0))[:3] == [
        "            Estimate Std. Error z value Pr(>|z|)   ",
        "(Intercept)      0.1        NaN     NaN      NaN   ",
        "x                0.2        1.0     0.2     0.01 **"]
    assert SIGNIF_LEGEND[1] == "Signif. codes:  0 ‘***’ 0.001 ‘**’ 0.01 ‘*’ 0.05 ‘.’ 0.1 ‘ ’ 1"


@pytest.mark.parametrize("text, width, exdent, expected", [
    ("aaa bbb ccc", 8, 2, ["aaa bbb", "  ccc"]),
    ("aaa bbb ccc", 9, 0, ["aaa bbb", "ccc"]),
    ("aaaaaaaaaaaa b", 5, 2, ["aaaaaaaaaaaa", "  b"]),
])
def test_strwrap(text, width, exdent, expected):
    assert strwrap(text, width, exdent) == expected


def test_title_lines_short_and_long():
    assert title_lines("Linear mixed model fit by REML", "lmerMod") == [
        "Linear mixed model fit by REML ['lmerMod']"]
    assert fill_lines(["a" * 70, "  b" * 5, " [", "x", "]"], "") == [
        "a" * 70, "  b  b  b  b  b [x]"]


# ---- result_dict ----------------------------------------------------------------------------

@pytest.mark.parametrize("case_id", ["binary_crossed", "gamma_log", "binary_crossed_nagq0",
                                     "poisson_agq"])
def test_result_dict_is_json_and_round_trips(fits, case_id):
    d = fits(case_id).to_dict()
    assert set(d) == GLMM_RESULT_KEYS
    assert d["ddf"] == "normal"
    assert plain_only(d)
    assert json.loads(json.dumps(d, allow_nan=False)) == d


def test_result_dict_glmm_values(fits):
    result = fits("gamma_log")
    d = result_dict(result)
    assert (d["family"], d["link"], d["nagq"]) == ("gamma", "log", 1)
    assert d["deviance"] == result.deviance and d["objective"] == result.objective
    assert d["loglik"] == pytest.approx(-0.5 * d["objective"], rel=1e-15)
    assert d["npar"] == 4 and d["sigma"] == result.sigma
    assert [r["grp"] for r in d["varcorr"]] == ["g", "Residual"]
    assert d["stage1"]["method"] and d["optimizer"]["method"]
    fe = summary_tables(result).fixed_effects
    assert d["fixed_effects"] == [
        {"term": name, "Estimate": row["Estimate"], "Std. Error": row["Std. Error"],
         "t value": row["t value"], "Pr(>|z|)": row["Pr(>|z|)"]} for name, row in fe.iterrows()]
    assert d["fixef_se"] == fe["Std. Error"].to_dict()


def test_result_dict_binomial_has_z_values_and_no_residual_row(fits):
    d = result_dict(fits("binary_crossed"))
    assert set(d["fixed_effects"][0]) == {"term", "Estimate", "Std. Error", "z value",
                                          "Pr(>|z|)"}
    assert "Residual" not in [r["grp"] for r in d["varcorr"]] and d["sigma"] == 1.0
    assert d["stage1"] is not None


def test_result_dict_nagq0_has_no_second_stage(fits):
    result = fits("cbpp_nagq0")
    d = result_dict(result)
    assert d["nagq"] == 0 and d["optimizer"] == d["stage1"]


def test_lmm_result_dict_keeps_its_keys():
    """GLMM fields are added for GlmerResults only (tests/test_reporting.py checks the rest)."""
    df = load_data("dyestuff")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GlmmSparseWarning)
        d = gs.lmer("Yield ~ 1 + (1 | Batch)", df, reml=False).to_dict()
    assert set(d) == LMM_RESULT_KEYS


@pytest.mark.parametrize("case_id", ["binary_crossed", "gamma_log"])
def test_ddf_none_drops_the_p_values(fits, case_id):
    """ddf="none" is honoured for GLMMs as for LMMs: the summary and its JSON show
    coef_table("none") (no Pr(>|z|)); the default keeps glmer's p-values."""
    result = fits(case_id)
    plain = result.coef_table("none")
    assert not any(c.startswith("Pr(") for c in plain.columns)
    d = result.to_dict(ddf="none")
    assert d["ddf"] == "none"
    assert [set(row) - {"term"} for row in d["fixed_effects"]] == [set(plain.columns)] * len(plain)
    assert "Pr(>|" not in summary_text(result, ddf="none")
    assert "Pr(>|z|)" in summary_text(result) and "Pr(>|z|)" in result.to_dict()["fixed_effects"][0]
