"""lme4 formula -> response, fixed-effects part and random-effects term specs.

First stage of the pipeline (formula -> terms -> cross-products -> factor -> optimize ->
results -> report). Only the string is read here; no data are touched. The fixed part is
handed to formulaic as a string; the random terms become ``RandomTerm`` specs that
``terms.py`` materializes against the data.

The grammar is lme4 1.1's (``findbars``, ``nobars``, ``expandDoubleVerts``,
``expandSlash``), read at the level of additive terms only: everything inside a fixed
term is left for formulaic. Every position reported in a ``FormulaError`` is a 0-based
index into the formula string exactly as the caller wrote it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NoReturn

from glmm_sparse.errors import FormulaError


@dataclass(frozen=True)
class RandomTerm:
    """One random-effects term ``(lhs | group)`` after expanding ``||`` and ``/``.

    lhs: the model-matrix expression of the term for formulaic, always with an explicit
        intercept choice, e.g. "1", "1 + Days", "0 + Days", "0 + recipe".
    group: the grouping factors whose interaction defines the levels, in lme4's written
        order, e.g. ("Subject",) or ("cask", "batch") for ``cask:batch``.
    """

    lhs: str
    group: tuple[str, ...]

    @property
    def group_name(self) -> str:
        """The grouping label as lme4 writes it, e.g. "cask:batch"."""
        return ":".join(self.group)


@dataclass(frozen=True)
class ParsedFormula:
    """An lme4 formula split into its parts."""

    response: str | None
    fixed: str
    random: tuple[RandomTerm, ...]
    offsets: tuple[str, ...] = ()


_QUOTES = "`'\""
# Binary operators that cannot start or end an additive term.
_DANGLING = "*:/^%|~"
_GROUP_TOKEN = re.compile(r"\s+|`(?:[^`\\]|\\.)*`|(?!\d)[\w.]+|[:/]")
_OFFSET_CALL = re.compile(r"offset\s*\(")
_CALL_CHARS = re.compile(r"[\w.`)\]]")


class _Source:
    """The formula text with its paren depth, quoting and paren matches precomputed.

    ``level[i]`` is the paren depth at character i, counting an opening or closing
    paren as outside itself, so the inside of a paren at depth d is at depth d + 1.
    """

    def __init__(self, text: str):
        self.text = text
        self.level = [0] * len(text)
        self.quoted = [False] * len(text)
        self.match: dict[int, int] = {}
        self._scan()

    def fail(self, message: str, position: int | None = None) -> NoReturn:
        # Same length as the input, so the caret lines up on multi-line formulas.
        shown = self.text.translate(str.maketrans("\n\r\t", "   "))
        raise FormulaError(message, formula=shown, position=position)

    def _scan(self) -> None:
        text, opened, i = self.text, [], 0
        while i < len(text):
            char = text[i]
            if char in _QUOTES:
                i = self._skip_quoted(i, len(opened))
                continue
            if char == ")":
                if not opened:
                    self.fail("unmatched ')'", i)
                self.match[opened.pop()] = i
            self.level[i] = len(opened)
            if char == "(":
                opened.append(i)
            i += 1
        if opened:
            self.fail("unmatched '(': no closing ')'", opened[-1])

    def _skip_quoted(self, start: int, depth: int) -> int:
        """Mark a backtick name or string starting at ``start``; return the index after it."""
        text, quote, i = self.text, self.text[start], start + 1
        while i < len(text) and text[i] != quote:
            i += 2 if text[i] == "\\" else 1
        if i >= len(text):
            kind = "backtick-quoted name" if quote == "`" else "string"
            self.fail(f"unterminated {kind}: no closing {quote}", start)
        for k in range(start, i + 1):
            self.quoted[k], self.level[k] = True, depth
        return i + 1

    def top(self, lo: int, hi: int, depth: int, chars: str) -> list[int]:
        """Indices in [lo, hi) of unquoted ``chars`` at paren depth ``depth``."""
        return [i for i in range(lo, hi) if self.text[i] in chars
                and not self.quoted[i] and self.level[i] == depth]

    def strip(self, lo: int, hi: int) -> tuple[int, int]:
        """The span without surrounding whitespace (empty spans collapse to lo == hi)."""
        while lo < hi and self.text[lo].isspace():
            lo += 1
        while hi > lo and self.text[hi - 1].isspace():
            hi -= 1
        return lo, hi

    def squash(self, lo: int, hi: int) -> str:
        """The span's text with unquoted whitespace runs collapsed to one space."""
        out = []
        for i in range(*self.strip(lo, hi)):
            char = self.text[i]
            if char.isspace() and not self.quoted[i]:
                if out[-1] != " ":
                    out.append(" ")
            else:
                out.append(char)
        return "".join(out)

    def enclosed(self, lo: int, hi: int) -> bool:
        """Whether the stripped span is one parenthesized group ``( ... )``."""
        return hi > lo and self.text[lo] == "(" and self.match.get(lo) == hi - 1


@dataclass(frozen=True)
class _Term:
    """One additive term: its sign and its stripped span in the formula."""

    sign: str
    lo: int
    hi: int


def parse_formula(formula: str) -> ParsedFormula:
    """Split an lme4 formula into response, fixed part, random terms and offsets.

    Raises ``TypeError`` for a non-string and ``FormulaError`` (with the 0-based
    position of the culprit) for any malformed formula.
    """
    if not isinstance(formula, str):
        raise TypeError(f"formula must be a str, not {type(formula).__name__}")
    src = _Source(formula)
    tilde = _find_tilde(src)
    response = _parse_response(src, tilde)
    fixed, random, offsets = [], [], []
    for term in _split_rhs(src, tilde):
        _classify_term(src, term, fixed, random, offsets)
    return ParsedFormula(response=response, fixed=_join_fixed(src, fixed),
                         random=tuple(random), offsets=tuple(offsets))


def _find_tilde(src: _Source) -> int:
    tildes = src.top(0, len(src.text), 0, "~")
    nested = [i for i, char in enumerate(src.text)
              if char == "~" and src.level[i] and not src.quoted[i]]
    if nested:
        src.fail("'~' inside parentheses: the formula must be 'response ~ terms'", nested[0])
    if not tildes:
        src.fail("formula has no '~': write it as 'response ~ terms'")
    if len(tildes) > 1:
        src.fail("more than one '~' in the formula", tildes[1])
    return tildes[0]


def _parse_response(src: _Source, tilde: int) -> str | None:
    lo, hi = src.strip(0, tilde)
    if lo == hi:
        return None
    bars = src.top(lo, hi, 0, "|")
    if bars:
        src.fail("'|' in the response: random terms belong on the right of '~'", bars[0])
    _check_dangling(src, lo, hi, "response")
    return src.squash(lo, hi)


def _split_rhs(src: _Source, tilde: int) -> list[_Term]:
    lo, hi = src.strip(tilde + 1, len(src.text))
    if lo == hi:
        src.fail("nothing on the right of '~'", tilde)
    return _split_terms(src, lo, hi, 0)


def _split_terms(src: _Source, lo: int, hi: int, depth: int) -> list[_Term]:
    """The additive terms of [lo, hi) at ``depth``; a leading sign is unary."""
    ops = src.top(lo, hi, depth, "+-")
    bounds = [lo - 1] + ops + [hi]
    terms = []
    for k in range(len(bounds) - 1):
        a, b = src.strip(bounds[k] + 1, bounds[k + 1])
        if a < b:
            sign = src.text[bounds[k]] if k else "+"
            terms.append(_Term(sign, a, b))
        elif k == len(bounds) - 2:
            src.fail(f"trailing operator '{src.text[ops[-1]]}' with nothing after it", ops[-1])
        elif k > 0:
            src.fail(f"empty term before '{src.text[ops[k]]}'", ops[k])
    return terms


def _check_dangling(src: _Source, lo: int, hi: int, what: str) -> None:
    """Reject a binary operator with no operand at either end of [lo, hi)."""
    for i, chars in ((lo, _DANGLING), (hi - 1, _DANGLING + "+-")):
        if src.text[i] in chars and not src.quoted[i]:
            side = "begins" if i == lo else "ends"
            src.fail(f"{what} '{src.squash(lo, hi)}' {side} with operator "
                     f"'{src.text[i]}' that has no operand", i)


def _classify_term(src: _Source, term: _Term, fixed: list, random: list,
                   offsets: list) -> None:
    inner = _bar_interior(src, term.lo, term.hi)
    if inner is not None:
        if term.sign == "-":
            src.fail("a random-effects term cannot be subtracted", term.lo)
        random.extend(_parse_random(src, term, *inner))
    elif _OFFSET_CALL.match(src.text, term.lo) and src.enclosed(
            src.text.index("(", term.lo), term.hi):
        offsets.append(_parse_offset(src, term))
    else:
        _check_fixed_term(src, term.lo, term.hi, 0)
        fixed.append(term)


def _bar_interior(src: _Source, lo: int, hi: int) -> tuple[int, int, int] | None:
    """(lo, hi, depth) inside a term's redundant parens if that holds a bar, else None."""
    depth = 0
    while src.enclosed(lo, hi):
        lo, hi = src.strip(lo + 1, hi - 1)
        depth += 1
    if depth and src.top(lo, hi, depth, "|"):
        return lo, hi, depth
    return None


def _parse_offset(src: _Source, term: _Term) -> str:
    if term.sign == "-":
        src.fail("an offset cannot be subtracted", term.lo)
    lo, hi = src.strip(src.text.index("(", term.lo) + 1, term.hi - 1)
    if lo == hi:
        src.fail("offset() needs an expression", term.lo)
    return src.squash(lo, hi)


def _check_fixed_term(src: _Source, lo: int, hi: int, depth: int) -> None:
    """Reject bars in a fixed term: unparenthesized, or a bar group inside the term."""
    bars = src.top(lo, hi, depth, "|")
    if bars:
        src.fail(f"'|' outside parentheses in '{src.squash(lo, hi)}': wrap each "
                 "random-effects term in parentheses, e.g. '(1 | g)'", bars[0])
    for i in src.top(lo, hi, depth, "("):
        _check_bare_paren(src, lo, i)
    _check_dangling(src, lo, hi, "term")


def _check_bare_paren(src: _Source, term_lo: int, i: int) -> None:
    """A '(' that is not a call's must not hold a bar: that would be a nested random term."""
    before = src.strip(term_lo, i)[1]
    if before > term_lo and _CALL_CHARS.match(src.text[before - 1]):
        return
    close = src.match[i]
    if not src.text[i + 1:close].strip():
        src.fail("empty parentheses '()'", i)
    bars = src.top(i + 1, close, src.level[i] + 1, "|")
    nested = src.top(i + 1, close, src.level[i] + 1, "(")
    if bars:
        src.fail(f"random-effects term '{src.squash(i, close + 1)}' must be its own "
                 "additive term, not part of a larger expression", i)
    for j in nested:
        _check_bare_paren(src, i + 1, j)


def _parse_random(src: _Source, term: _Term, lo: int, hi: int,
                  depth: int) -> list[RandomTerm]:
    """Expand one ``(lhs | group)`` or ``(lhs || group)``: parts first, then nesting."""
    bar, width = _find_bar(src, term, lo, hi, depth)
    lhs_lo, lhs_hi = src.strip(lo, bar)
    grp_lo, grp_hi = src.strip(bar + width, hi)
    term_text = src.squash(term.lo, term.hi)
    if lhs_lo == lhs_hi:
        src.fail(f"random-effects term '{term_text}' has nothing left of the bar", bar)
    if grp_lo == grp_hi:
        src.fail(f"random-effects term '{term_text}' has no grouping factor", bar)
    lhss = _random_lhs(src, lhs_lo, lhs_hi, depth, term_text, uncorrelated=width == 2)
    groups = _parse_group(src, grp_lo, grp_hi, term_text)
    return [RandomTerm(lhs, group) for lhs in lhss for group in groups]


def _find_bar(src: _Source, term: _Term, lo: int, hi: int, depth: int) -> tuple[int, int]:
    """Position and width (1 for '|', 2 for '||') of the term's only bar."""
    bars = src.top(lo, hi, depth, "|")
    width = 2 if len(bars) > 1 and bars[1] == bars[0] + 1 else 1
    if len(bars) > width:
        src.fail(f"more than one bar in random-effects term '{src.squash(term.lo, term.hi)}'",
                 bars[width])
    return bars[0], width


def _random_lhs(src: _Source, lo: int, hi: int, depth: int, term_text: str, *,
                uncorrelated: bool) -> list[str]:
    """The term's model-matrix expressions: one, or one per part for ``||``."""
    intercept, others = True, []
    for term in _split_terms(src, lo, hi, depth):
        text = src.squash(term.lo, term.hi)
        if text in ("0", "1"):
            # As in R, the last intercept choice wins: "-1" and "0" drop it.
            intercept = (text == "1") == (term.sign == "+")
            continue
        _check_fixed_term(src, term.lo, term.hi, depth)
        if uncorrelated and term.sign == "-":
            src.fail("'||' cannot subtract a term; list the terms to keep", term.lo)
        others.append((term.sign, text))
    if not intercept and not others:
        src.fail(f"random-effects term '{term_text}' has no columns: its left side "
                 f"'{src.squash(lo, hi)}' removes the intercept and adds nothing", lo)
    if uncorrelated:
        return ["1"] * intercept + [f"0 + {text}" for _, text in others]
    return [" ".join(["1" if intercept else "0"] + [f"{s} {t}" for s, t in others])]


def _parse_group(src: _Source, lo: int, hi: int, term_text: str) -> list[tuple[str, ...]]:
    """Grouping factors of ``a:b/c``: one group per nesting level, outermost first."""
    levels, names, expect_name = [], [], True
    for match in _group_tokens(src, lo, hi, term_text):
        token = match.group()
        if token.isspace():
            continue
        if expect_name == (token in ":/"):
            _bad_group(src, lo, hi, term_text, match.start())
        if token == "/":
            levels.append(tuple(names))
            names = []
        elif token != ":":
            names.append(token[1:-1].replace("\\`", "`") if token[0] == "`" else token)
        expect_name = token in ":/"
    if expect_name:
        _bad_group(src, lo, hi, term_text, hi - 1)
    levels.append(tuple(names))
    nested = [levels[0]]
    for names in levels[1:]:
        nested.append(names + nested[-1])
    return nested


def _group_tokens(src: _Source, lo: int, hi: int, term_text: str):
    """Tokens of a grouping expression; anything else is reported where it starts."""
    i = lo
    while i < hi:
        match = _GROUP_TOKEN.match(src.text, i, hi)
        if match is None:
            _bad_group(src, lo, hi, term_text, i)
        yield match
        i = match.end()


def _bad_group(src: _Source, lo: int, hi: int, term_text: str, pos: int) -> NoReturn:
    src.fail(f"invalid grouping expression '{src.squash(lo, hi)}' in '{term_text}' "
             f"at '{src.text[pos]}': grouping must be factor names joined by ':' "
             "(interaction) or '/' (nesting)", pos)


def _join_fixed(src: _Source, terms: list[_Term]) -> str:
    """The fixed terms as one formulaic right-hand side; "1" when none is left."""
    if not terms:
        return "1"
    first = terms[0]
    parts = [("-" if first.sign == "-" else "") + src.squash(first.lo, first.hi)]
    parts += [f"{t.sign} {src.squash(t.lo, t.hi)}" for t in terms[1:]]
    return " ".join(parts)
