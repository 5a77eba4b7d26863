"""Math answers: pull the final answer out of a solution, and grade it against a reference.

Grading has two paths. The fast one, in this process, compares numbers exactly
(`18` = `18.00` = `$18`). Everything else goes to math-verify, which handles LaTeX,
fractions and expressions but relies on `signal.alarm` for its timeouts, so it runs in
worker processes with a deadline per item (see `MathGrader`).
"""
from __future__ import annotations

import re
import unicodedata
from fractions import Fraction
from typing import Iterable

from mindxh.rewards.pool import TimeoutPool

__all__ = ["MathGrader", "extract_answer", "gsm8k_reference_answer", "normalize_number",
           "numbers_equal", "reference_number"]

# A number not glued to a Latin word: 1,234.5  -3  .5  3/4.  The sign counts only when the
# character before it is not a digit, letter or ')' (so `16-3` is 16 and 3, not -3). Chinese
# and Japanese text glue numbers to words (`共42个`), so only ASCII letters make a word here.
_NUM = re.compile(r"(?:(?<![A-Za-z0-9_.)])-)?(?<![A-Za-z0-9_.])"
                  r"(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][+-]?\d+(?![\w.]))?"
                  r"(?:/\d+(?!\d|\.\d))?|\.\d+)")
# A mixed number, `2 1/2` or `2 and 1/2` (= 5/2): a whole number of at most 3 digits (not a
# year: `In 2023 1/4 of...`), blanks, then a proper fraction that is not the start of a
# hyphenated unit (`12 1/4-pound burgers` are 12) nor followed by `of which/whom` (`$20 1/5
# of which was tax`)
_MIXED = re.compile(r"(-?\d{1,3})[ \t\u00a0]+(?:and[ \t]+)?(\d+)/(\d+)"
                    r"(?!\d|/|\.\d|-[A-Za-z]|\s+of\s+(?:which|whom)\b)")
# Thousands separated by spaces, only where they cannot be two numbers: after a dollar sign
# (`$118 000`), or as the whole of what a marker points at (`#### 118 000`)
_SPACED_THOUSANDS = r"\d{1,3}(?: \d{3})+(?![\d/])"
_MONEY_SPACED_THOUSANDS = re.compile(r"(?<=\$)" + _SPACED_THOUSANDS)
_ONLY_SPACED_THOUSANDS = re.compile(r"-?" + _SPACED_THOUSANDS + r"(?:\.\d+)?")
# Words after a LaTeX answer (`\frac{3}{4} cups`): a unit, which math-verify would multiply in
_TRAILING_WORDS = re.compile(r"(?<=[}\d])(?:\s+[A-Za-z]{2,}\.?)+\s*$")
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.S)
_HASHES = re.compile(r"####\s*([^\n]*)")
_A_LINE = re.compile(r"^[ \t]*A:[ \t]*([^\n]*)", re.M)  # [ \t]: \s would backtrack over blank lines
_ANSWER_IS = re.compile(r"answer\s*(?:(?:is|was|will be|would be)\s*[:=]?|[:=])\s*", re.I)
# LaTeX that says nothing about the value: \$, \%, thin spaces, \left/\right; \text{...} keeps
# its words (`\boxed{\text{18 dollars}}` answers 18), unit exponents go (`18 \text{cm}^2`)
_LATEX_NOISE = re.compile(r"\\[$%,;!]|\\(?:left|right)\b")
_LATEX_TEXT = re.compile(r"\\(?:text|mathrm|textbf|mbox)\s*\{([^{}]*)\}(?:\^\{?\d+\}?)?")
# thousands separated by a thin space or LaTeX's `\,` / `{,}` (1\,000\,000)
_THIN_THOUSANDS = re.compile(r"(?<=\d)(?:\\,|\{,\}|[\u2009\u202f])(?=\d{3}(?!\d))")
_MARKDOWN = re.compile(r"\*\*|__")  # bold: `The final answer is **18**.`
_SPACED_MINUS = re.compile(r"(?<![\w)])-\s+(?=[\d.])")  # `-\$18` and `- 18` are -18
_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.S)
_LATEX_CMD = re.compile(r"\\[a-zA-Z]+")
# Inline or display math: $...$, $$...$$, \(...\), \[...\]
_MATH_SPAN = re.compile(r"\$\$(.+?)\$\$|\$(.+?)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.S)
# A tuple or interval, `(1, 2)` or `[0, \infty)`: one answer of several numbers, for
# math-verify; not `(1,000)` (a thousands separator) and not a bracketed remark (words)
_WORD = re.compile(r"(?<!\\)\b[a-zA-Z]{2}")
_LIST_COMMA = re.compile(r"\D,|,(?!\d{3}(?!\d))")


def _bracketed_list(s: str) -> bool:
    """(three linear scans: one regex with per-character lookaheads backtracked
    quadratically on a long run of digits and commas)"""
    return (len(s) >= 2 and s[0] in "([" and s[-1] in ")]" and not _WORD.search(s)
            and _LIST_COMMA.search(s) is not None)


# What a model may write for ASCII digits and minus: the Unicode minus (U+2212), the small and
# full-width hyphen-minus, the en dash (a sign only where `_NUM` takes one), full-width digits,
# and the vulgar fractions (`2½` is the mixed number 2 1/2; `⁄` is a fraction slash)
_ASCII = str.maketrans({"\u2212": "-", "\ufe63": "-", "\uff0d": "-", "\u2013": "-", "\u2044": "/",
                        **{chr(0xFF10 + d): str(d) for d in range(10)},
                        **{c: " {0.numerator}/{0.denominator}".format(
                            Fraction(unicodedata.numeric(c)).limit_denominator(10))
                           for c in "¼½¾⅐⅑⅒⅓⅔⅕⅖⅗⅘⅙⅚⅛⅜⅝⅞"}})
_OPERATORS = tuple("^*/+-×÷·")


def normalize_number(text: str) -> str | None:
    """`'1,234.50'` -> `'1234.5'`, `'-3'` -> `'-3'`, `'6/4'` -> `'3/2'`; None if not a number."""
    s = text.strip().replace(",", "")
    try:
        value = Fraction(s)
    except (ValueError, ZeroDivisionError):
        return None
    if value.denominator == 1:
        return str(value.numerator)
    if "/" in s:
        return f"{value.numerator}/{value.denominator}"
    whole, _, frac = s.partition(".")
    whole = whole + "0" if whole in ("", "-", "+") else whole
    return f"{whole.lstrip('+')}.{frac.rstrip('0')}"


def _mixed_at(text: str, start: int, end: int | None = None) -> str | None:
    """The mixed number that starts at `start` (and ends at `end`, if given), normalised:
    `2 1/2` -> `'5/2'`; None unless the fraction is proper (`2 3/2` is two numbers)."""
    m = _MIXED.match(text, start)
    if m is None or (end is not None and m.end() != end):
        return None
    whole, num, den = int(m.group(1)), int(m.group(2)), int(m.group(3))
    if not 0 < num < den:
        return None
    value = abs(whole) + Fraction(num, den)
    return normalize_number(str(-value if m.group(1).startswith("-") else value))


def reference_number(text: str) -> str | None:
    """A reference answer as a number, read as responses are (`2 1/2` is 5/2, `½` is 1/2);
    None if it is not one (then math-verify compares it)."""
    s = text.translate(_ASCII).strip()
    return _mixed_at(s, 0, len(s)) or normalize_number(s)


def numbers_equal(a: str | None, b: str | None) -> bool:
    """Exact equality of two number strings (`'18'` == `'18.0'`); False if either is not one."""
    if a is None or b is None:
        return False
    try:
        return Fraction(a.replace(",", "")) == Fraction(b.replace(",", ""))
    except (ValueError, ZeroDivisionError):
        return False


def _balanced(text: str, open_at: int) -> str | None:
    """The text inside the braces that open at `open_at`, or None if they never close."""
    depth = 0
    for i in range(open_at, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[open_at + 1:i]
    return None


def _last_boxed(text: str) -> str | None:
    for m in reversed(list(re.finditer(r"\\(?:boxed|fbox)\s*\{", text))):
        inner = _balanced(text, m.end() - 1)
        if inner is not None:
            return inner
    return None


def _from_region(region: str) -> str | None:
    """What a marker points at: its first number (`18 dollars`), or an expression as written."""
    span = _MATH_SPAN.search(region)  # `$\\frac{1}{2}$ cup`: the math, without the unit
    if span and not re.search(r"\d", region[:span.start()] + region[span.end():]):
        region = next(g for g in span.groups() if g is not None)
    s = _THIN_THOUSANDS.sub(",", _MARKDOWN.sub(" ", region))
    s = _LATEX_NOISE.sub(" ", _LATEX_TEXT.sub(r" \1 ", s)).replace("$", " ")
    s = _SPACED_MINUS.sub("-", s).strip().rstrip(".").strip()
    if not s:
        return None
    s = s.rsplit("=", 1)[-1].strip() or s  # `5 + 3 = 8` answers 8
    if _ONLY_SPACED_THOUSANDS.fullmatch(s):
        s = s.replace(" ", "")
    if _bracketed_list(s):
        return s
    if _LATEX_CMD.search(s):
        return _TRAILING_WORDS.sub("", s)  # an expression (`\\frac{1}{2}`): math-verify's job
    m = _NUM.search(s)
    if m is None:
        return s
    mixed = _mixed_at(s, m.start())
    end = _MIXED.match(s, m.start()).end() if mixed else m.end()
    if s[end:].lstrip()[:1] in _OPERATORS:  # an expression (`2^{10}`): math-verify's job,
        return f"{s[:m.start()]}({mixed}){s[end:]}" if mixed else s  # `(13/4) + 2`, not 3*1/4 + 2
    return mixed or normalize_number(m.group(0))


def extract_answer(text: str) -> str | None:
    """The final answer of a solution, normalised if it is a number; None if there is none.

    Markers, strongest first (the last occurrence of each wins): `<answer>...</answer>`,
    `\\boxed{...}`, `#### X`, a line `A: X`, `the answer is X`; then the last number, or
    the LaTeX math around it (`$\\frac{1}{2}$`). A mixed number (`2 1/2`) is one number.
    """
    if not text or text.isspace():
        return None
    text = _MONEY_SPACED_THOUSANDS.sub(lambda m: m.group(0).replace(" ", ","),
                                       text.translate(_ASCII))
    outside = _THINK_BLOCK.sub(" ", text)  # the answer given after thinking, not a draft in it
    if outside.strip() and outside != text:
        answer = extract_answer(outside)
        if answer is not None:
            return answer
    tags = _ANSWER_TAG.findall(text)
    if tags:
        return _from_region(tags[-1])
    boxed = _last_boxed(text)
    if boxed is not None:
        return _from_region(boxed)
    for pattern in (_HASHES, _A_LINE):
        found = pattern.findall(text)
        answer = _from_region(found[-1]) if found else None
        if answer is not None:
            return answer
    said = list(_ANSWER_IS.finditer(text))
    if said:
        answer = _from_region(text[said[-1].end():].split("\n", 1)[0])
        if answer is not None:
            return answer
    numbers = list(_NUM.finditer(text))
    if not numbers:
        return None
    last = numbers[-1]
    spans = list(_MATH_SPAN.finditer(text))
    if spans and spans[-1].start() <= last.start() < spans[-1].end():
        inner = next(g for g in spans[-1].groups() if g is not None)
        if _LATEX_CMD.search(inner):
            return _from_region(inner)
    if len(numbers) > 1:  # `2 1/2` is one number, not 2 and 1/2
        mixed = _mixed_at(text, numbers[-2].start(), last.end())
        if mixed is not None:
            return mixed
    return normalize_number(last.group(0))


def gsm8k_reference_answer(answer_text: str) -> str | None:
    """The number after `####` (GSM8K test.jsonl) or `A:` (the example solutions' ground truth)."""
    answer_text = answer_text.translate(_ASCII)
    for pattern in (_HASHES, _A_LINE):
        found = pattern.findall(answer_text)
        if found:
            region = found[-1].replace("$", " ")
            m = _NUM.search(region)
            return (_mixed_at(region, m.start()) or normalize_number(m.group(0))) if m else None
    return reference_number(answer_text)


def _import_math_verify() -> None:
    import math_verify  # noqa: F401  (sympy and ANTLR take a while to load)


def _as_latex(answer: str) -> str:
    """An answer as math-verify reads LaTeX: without `$...$`, `2^{10}` would parse as 2."""
    return answer if "$" in answer or "\\boxed" in answer else f"${answer}$"


def _verify(pair: tuple[str, str]) -> bool:
    """math-verify on (reference, prediction), both ready to parse; runs in a pool worker."""
    from math_verify import parse, verify

    gold, pred = parse(pair[0]), parse(pair[1])
    return bool(gold and pred and verify(gold, pred))


class MathGrader:
    """Grades responses against reference answers; math-verify in `workers` processes.

    Use as a context manager (or call `close()`) so the workers stop. A response whose
    check runs past `timeout_s` scores False and the pool carries on.
    """

    def __init__(self, workers: int = 2, timeout_s: float = 10.0):
        self._pool = TimeoutPool(_verify, workers=workers, timeout_s=timeout_s, default=False,
                                 init=_import_math_verify)

    def grade(self, reference: str, response: str) -> bool:
        """Whether `response` reaches the reference answer (a number or LaTeX, not a solution)."""
        return self.grade_many([(reference, response)])[0]

    def grade_many(self, pairs: Iterable[tuple[str, str]]) -> list[bool]:
        pairs = list(pairs)
        results: list[bool] = [False] * len(pairs)
        slow: list[tuple[int, tuple[str, str]]] = []
        for i, (reference, response) in enumerate(pairs):
            predicted = extract_answer(response)
            number = reference_number(reference)
            if number is not None and predicted is not None and normalize_number(predicted):
                results[i] = numbers_equal(number, predicted)  # two numbers: nothing to parse
            elif reference.strip():  # no extracted answer: math-verify searches the whole text
                pred = _as_latex(predicted) if predicted is not None else response
                # a number as read here: math-verify reads `$2 1/2$` as 3/2
                slow.append((i, (_as_latex(number or reference.strip()), pred)))
        for (i, _), ok in zip(slow, self._pool.map(pair for _, pair in slow)):
            results[i] = bool(ok)
        return results

    @property
    def timeouts(self) -> int:
        """Items that ran out of time so far (each scored False)."""
        return self._pool.timeouts

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> "MathGrader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
