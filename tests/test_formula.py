"""Tests of glmm_sparse.formula: lme4 formula strings -> ParsedFormula.

Tables map formula strings to what lme4 1.1 (findbars / nobars / expandDoubleVerts /
expandSlash) makes of them, in our canonical spelling: terms joined by " + " / " - ",
random-term left sides starting with an explicit "1" or "0". Malformed formulas map to
the culprit the message must name and the 0-based position the caret must point at.
"""
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from glmm_sparse.errors import FormulaError
from glmm_sparse.formula import ParsedFormula, RandomTerm, parse_formula


def _parsed(response, fixed, random, offsets=()):
    terms = tuple(RandomTerm(lhs, tuple(group)) for lhs, group in random)
    return ParsedFormula(response, fixed, terms, tuple(offsets))


WHOLE = {
    "Reaction ~ Days + (Days | Subject)":
        _parsed("Reaction", "Days", [("1 + Days", ["Subject"])]),
    "Reaction ~ Days + (Days || Subject)":
        _parsed("Reaction", "Days", [("1", ["Subject"]), ("0 + Days", ["Subject"])]),
    "Reaction ~ Days + (1 | Subject)":
        _parsed("Reaction", "Days", [("1", ["Subject"])]),
    "Reaction ~ 1 + Days + (1 + Days | Subject)":
        _parsed("Reaction", "1 + Days", [("1 + Days", ["Subject"])]),
    "Yield ~ 1 + (1 | Batch)":
        _parsed("Yield", "1", [("1", ["Batch"])]),
    "diameter ~ 1 + (1 | plate) + (1 | sample)":
        _parsed("diameter", "1", [("1", ["plate"]), ("1", ["sample"])]),
    "strength ~ 1 + (1 | batch/cask)":
        _parsed("strength", "1", [("1", ["batch"]), ("1", ["cask", "batch"])]),
    "angle ~ recipe * temp + (1 | recipe:replicate)":
        _parsed("angle", "recipe * temp", [("1", ["recipe", "replicate"])]),
    "cbind(incidence, size - incidence) ~ period + (1 | herd)":
        _parsed("cbind(incidence, size - incidence)", "period", [("1", ["herd"])]),
    "y ~ x + offset(log(t)) + (1|g)":
        _parsed("y", "x", [("1", ["g"])], ["log(t)"]),
    "y ~ offset(a) + (1|g) + offset( b * 2 )":
        _parsed("y", "1", [("1", ["g"])], ["a", "b * 2"]),
    "y ~ 0 + x + (0 + x | g)":
        _parsed("y", "0 + x", [("0 + x", ["g"])]),
    "y ~ x - 1 + (x - 1 | g)":
        _parsed("y", "x - 1", [("0 + x", ["g"])]),
    "y ~ -1 + x + (-1 + x | g)":
        _parsed("y", "-1 + x", [("0 + x", ["g"])]),
    "y ~ (1 | g)":
        _parsed("y", "1", [("1", ["g"])]),
    "y ~ x":
        _parsed("y", "x", []),
    "~ x + (1 | g)":
        _parsed(None, "x", [("1", ["g"])]),
    "log(y) ~ poly(x, 2) + I(x - 1) + (0 + recipe | g)":
        _parsed("log(y)", "poly(x, 2) + I(x - 1)", [("0 + recipe", ["g"])]),
    "`my y` ~ `x 1` + (1 | `grp a`)":
        _parsed("`my y`", "`x 1`", [("1", ["grp a"])]),
    "`y` ~ `a+b|c` + (`s(1)` | `g|h`:k)":
        _parsed("`y`", "`a+b|c`", [("1 + `s(1)`", ["g|h", "k"])]),
    "y ~ x + (1 + x | a/b/c)":
        _parsed("y", "x", [("1 + x", ["a"]), ("1 + x", ["b", "a"]),
                           ("1 + x", ["c", "b", "a"])]),
    "y ~ (1 + x || a/b)":
        _parsed("y", "1", [("1", ["a"]), ("1", ["b", "a"]),
                           ("0 + x", ["a"]), ("0 + x", ["b", "a"])]),
    "y ~ (1 | a:b/c)":
        _parsed("y", "1", [("1", ["a", "b"]), ("1", ["c", "a", "b"])]),
    "größe ~ Tag + (Tag | Proband.nr_1)":
        _parsed("größe", "Tag", [("1 + Tag", ["Proband.nr_1"])]),
    "反应 ~ 天 + (1 | 受试者)":
        _parsed("反应", "天", [("1", ["受试者"])]),
    "  y\n ~\tx   +\n  (  x\n |  g )  -   1  ":
        _parsed("y", "x - 1", [("1 + x", ["g"])]),
    "y ~ recipe  *\n temp + ((1 | g))":
        _parsed("y", "recipe * temp", [("1", ["g"])]),
    "y ~ x + (1 + \"a b\" | g)":
        _parsed("y", "x", [("1 + \"a b\"", ["g"])]),
}


@pytest.mark.parametrize("formula", WHOLE)
def test_parse_whole_formula(formula):
    assert parse_formula(formula) == WHOLE[formula]


RANDOM = {
    "y ~ (1 | g)": [("1", ("g",))],
    "y ~ (Days | g)": [("1 + Days", ("g",))],
    "y ~ (1 + Days | g)": [("1 + Days", ("g",))],
    "y ~ (0 + x | g)": [("0 + x", ("g",))],
    "y ~ (x + 0 | g)": [("0 + x", ("g",))],
    "y ~ (x - 1 | g)": [("0 + x", ("g",))],
    "y ~ (- 1 + x | g)": [("0 + x", ("g",))],
    "y ~ (0 + 1 + x | g)": [("1 + x", ("g",))],
    "y ~ (x + z - w | g)": [("1 + x + z - w", ("g",))],
    "y ~ (x * z | g)": [("1 + x * z", ("g",))],
    "y ~ (1 + x + z || g)": [("1", ("g",)), ("0 + x", ("g",)), ("0 + z", ("g",))],
    "y ~ (0 + x + z || g)": [("0 + x", ("g",)), ("0 + z", ("g",))],
    "y ~ (x || g)": [("1", ("g",)), ("0 + x", ("g",))],
    "y ~ (1 || g)": [("1", ("g",))],
    "y ~ (1 | a:b)": [("1", ("a", "b"))],
    "y ~ (1 | a / b)": [("1", ("a",)), ("1", ("b", "a"))],
    "y ~ (0 + x || a/b)": [("0 + x", ("a",)), ("0 + x", ("b", "a"))],
    "y ~ (1 | `a b`/`c:d`)": [("1", ("a b",)), ("1", ("c:d", "a b"))],
    "y ~ (1|g1) + x + (0+x|g2) + (1|g1:g2)":
        [("1", ("g1",)), ("0 + x", ("g2",)), ("1", ("g1", "g2"))],
}


@pytest.mark.parametrize("formula", RANDOM)
def test_random_terms(formula):
    got = [(term.lhs, term.group) for term in parse_formula(formula).random]
    assert got == RANDOM[formula]


@pytest.mark.parametrize("group, name", [
    (("Subject",), "Subject"), (("cask", "batch"), "cask:batch"), (("c", "b", "a"), "c:b:a"),
])
def test_group_name_joins_with_colon(group, name):
    assert RandomTerm("1", group).group_name == name


# formula -> (text the message must contain, expected position or None)
MALFORMED = {
    "": ("no '~'", None),
    "y + x": ("no '~'", None),
    "y ~ x ~ z": ("more than one '~'", 6),
    "y ~ f(x ~ z)": ("'~' inside parentheses", 8),
    "y ~": ("nothing on the right", 2),
    "y ~   \n ": ("nothing on the right", 2),
    "y ~ (x": ("unmatched '('", 4),
    "y ~ ((1 | g)": ("unmatched '('", 4),
    "y ~ x)": ("unmatched ')'", 5),
    "y ~ (1 | g))": ("unmatched ')'", 11),
    "y ~ `x": ("unterminated backtick", 4),
    "y ~ x + \"a": ("unterminated string", 8),
    "y ~ x + 1 | g": ("wrap each random-effects term in parentheses", 10),
    "y ~ x | g": ("'x | g'", 6),
    "y | g ~ x": ("'|' in the response", 2),
    "y ~ (|g)": ("nothing left of the bar", 5),
    "y ~ ( | g)": ("'( | g)'", 6),
    "y ~ (1|)": ("no grouping factor", 6),
    "y ~ (1 ||   )": ("no grouping factor", 7),
    "y ~ (1|a|b)": ("more than one bar", 8),
    "y ~ (1 ||| g)": ("more than one bar", 9),
    "y ~ (1 | | g)": ("more than one bar", 9),
    "y ~ x + + z": ("empty term", 8),
    "y ~ x - + z": ("empty term", 8),
    "y ~ (1 + + x | g)": ("empty term", 9),
    "y ~ x +": ("trailing operator '+'", 6),
    "y ~ x + (1|g) -": ("trailing operator '-'", 14),
    "y ~ (x - | g)": ("trailing operator '-'", 7),
    "y ~ x *": ("ends with operator '*'", 6),
    "y ~ : x": ("begins with operator ':'", 4),
    "y + ~ x": ("response 'y +'", 2),
    "y ~ (1 | g + h)": ("'g + h'", 11),
    "y ~ (1 | log(g))": ("factor names joined by ':'", 12),
    "y ~ (1 | (g))": ("at '('", 9),
    "y ~ (1 | (a:b)/c)": ("invalid grouping expression '(a:b)/c'", 9),
    "y ~ (1 | a/)": ("'a/'", 10),
    "y ~ (1 | :a)": ("at ':'", 9),
    "y ~ (1 | a b)": ("at 'b'", 11),
    "y ~ (1 | 2)": ("at '2'", 9),
    "y ~ (0 | g)": ("has no columns", 5),
    "y ~ x - (1 | g)": ("cannot be subtracted", 8),
    "y ~ x - offset(t)": ("offset cannot be subtracted", 8),
    "y ~ offset( )": ("offset() needs an expression", 4),
    "y ~ x * (1 | g)": ("must be its own additive term", 8),
    "y ~ log((1 | g) + 1) + (x*(1|h))": ("'(1|h)'", 26),
    "y ~ (1 + x - z || g)": ("'||' cannot subtract", 13),
    "y ~ x + ()": ("empty parentheses", 8),
}


@pytest.mark.parametrize("formula", MALFORMED)
def test_malformed_formula_names_culprit(formula):
    text, position = MALFORMED[formula]
    with pytest.raises(FormulaError, match=re.escape(text)) as info:
        parse_formula(formula)
    assert info.value.position == position


def test_caret_lines_up_on_multiline_formula():
    formula = "y ~ x +\n  (1 | g + h)"
    with pytest.raises(FormulaError) as info:
        parse_formula(formula)
    shown, caret = str(info.value).splitlines()[-2:]
    assert info.value.position == formula.index("+ h")
    assert shown[caret.index("^")] == "+"


@pytest.mark.parametrize("formula", [None, 1, b"y ~ x", ["y ~ x"]])
def test_non_string_formula_is_type_error(formula):
    with pytest.raises(TypeError, match="formula must be a str"):
        parse_formula(formula)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="y~x+()|:/ 1-0g`\n", max_size=30))
def test_any_string_parses_or_raises_formula_error(formula):
    try:
        parsed = parse_formula(formula)
    except FormulaError as error:
        assert error.position is None or 0 <= error.position < max(len(formula), 1)
        return
    assert isinstance(parsed, ParsedFormula)
    assert parsed.fixed and all(term.lhs and term.group for term in parsed.random)
