"""Final answers: pulling them out of a reply, and deciding when two of them say the same thing.

Majority votes, consensus margins, best-of-n ties and the `math_answer` verifier all hinge on
these two functions, so they live in one place and are shared. Extraction tries the most
explicit conventions first and the loosest last: the last ``\\boxed{...}`` (nested braces
allowed), a "Final answer: ..." line, an "Answer: X" choice letter, a reply that is a lone
choice letter, an "Answer: ..." line, and finally the last number in the text.

Equivalence is decided cheaply whenever it can be: after normalisation (whitespace, ``$``,
``\\text{}``, trailing periods, ``\\dfrac``, thousands separators, ``x =`` prefixes, degrees and
percent signs), integers, decimals and plain fractions compare as exact rationals and choice
letters as letters, with no computer algebra at all, because votes over k samples compare many
pairs and most answers are plain numbers or letters. Anything else goes to math-verify (sympy
underneath), or to plain sympy if math-verify is missing. Those calls can be slow on hostile
input, so they are bounded by input length, never run with math-verify's signal-based timeouts
(which only work on the main thread), and callers on the event loop use `needs_cas` to move
them to a thread.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from fractions import Fraction
from functools import lru_cache
from typing import Any

__all__ = ["equivalent", "extract_answer", "group_answers", "has_final_answer", "last_boxed", "needs_cas", "normalize"]

#: longest answer handed to computer algebra; longer ones compare by normalised text only
_CAS_MAX_CHARS = 300

_FINAL = re.compile(r"final\s+answer\s*(?:is\s*:?|:|=)\s*(.+)", re.I)
_CHOICE = re.compile(r"\banswer\s*(?:is\s*[:：]?|[:：])\s*\**\s*\(?\s*([A-J])\s*\)?(?![A-Za-z0-9])", re.I)
_ANSWER_LINE = re.compile(r"\banswer\s*(?:is)?\s*[:：]\s*(.+)", re.I)
_LONE_LETTER = re.compile(r"\s*[\*\(\[]*\s*([A-J])\s*[\*\)\]]*\s*\.?\s*")
_NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?(?:\s*/\s*\d+)?|-?\.\d+")
_THOUSANDS = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_WRAPPERS = re.compile(r"\\(?:text|textbf|mathrm|mathbf|textit|mbox|operatorname)\s*\{([^{}]*)\}")
_SPACING = re.compile(r"\\[!,;: ]|\\left|\\right|\\displaystyle|~")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°")
_VAR_PREFIX = re.compile(r"^[A-Za-z]\s*=\s*(?!.*=)")
_SPACES = re.compile(r"(?<![A-Za-z])\s+|\s+(?![A-Za-z])")
_PLAIN_NUMBER = re.compile(r"-?(?:\d+(?:\.\d*)?|\.\d+)")
_PLAIN_FRACTION = re.compile(r"(-?)(?:\\frac\{(-?\d+)\}\{(-?\d+)\}|(\d+)/(\d+))")
_LETTER = re.compile(r"[A-Z]")
_BOX_OPEN = re.compile(r"\\(?:boxed|fbox)\s*\{")


# -- extraction --------------------------------------------------------------------------------


def last_boxed(text: str) -> str | None:
    """Contents of the last non-empty ``\\boxed{...}`` (or ``\\fbox{...}``), braces balanced."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    while start != -1:
        opened = _BOX_OPEN.match(text, start)
        i = opened.end() - 1 if opened else -1
        if i != -1:
            depth = 0
            for j in range(i, len(text)):
                if text[j] == "{":
                    depth += 1
                elif text[j] == "}":
                    depth -= 1
                    if depth == 0:
                        inner = text[i + 1 : j].strip()
                        if inner:
                            return inner
                        break
        start = max(text.rfind("\\boxed", 0, start), text.rfind("\\fbox", 0, start))
    return None


def _clean(value: str) -> str | None:
    """An extracted span without markup around it; None when nothing is left."""
    previous = None
    while value != previous:  # "**$\frac{3}{4}$**." peels in a few rounds
        previous = value
        value = value.strip().strip("*").strip().rstrip(".").strip().strip("$")
    return value or None


def extract_answer(text: str | None) -> str | None:
    """The final answer stated in `text`, or None. See the module docstring for the order."""
    if not text:
        return None
    if (boxed := last_boxed(text)) is not None:
        return _clean(boxed)
    finals = _FINAL.findall(text)
    if finals and (value := _clean(finals[-1].splitlines()[0] if finals[-1] else "")):
        return value
    if choices := _CHOICE.findall(text):
        return choices[-1].upper()
    if m := _LONE_LETTER.fullmatch(text):
        return m.group(1)
    lines = _ANSWER_LINE.findall(text)
    if lines and (value := _clean(lines[-1])):
        return value
    numbers = _NUMBER.findall(text)
    return _clean(numbers[-1]) if numbers else None


def has_final_answer(text: str | None) -> bool:
    """True when `text` states a final answer explicitly (boxed, "Final answer:", "Answer:"),
    not merely because it contains a number: the `math_answer` check without a reference."""
    if not text:
        return False
    return bool(last_boxed(text) or _FINAL.search(text) or _CHOICE.search(text) or _LONE_LETTER.fullmatch(text)
                or _ANSWER_LINE.search(text))


# -- normalisation and equivalence ---------------------------------------------------------------


def normalize(answer: str) -> str:
    """A canonical spelling: what two equal answers most often differ by is removed."""
    s = answer.strip().strip("$").strip()
    if (inner := last_boxed(s)) is not None and s.startswith(("\\boxed", "\\fbox")):
        s = inner
    for opener, closer in (("\\(", "\\)"), ("\\[", "\\]")):
        if s.startswith(opener) and s.endswith(closer):
            s = s[2:-2].strip()
    for _ in range(3):  # nested wrappers: \text{\textbf{B}}
        s = _WRAPPERS.sub(r"\1", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = _SPACING.sub(" ", s)
    s = _DEGREES.sub("", s).replace("\\%", "").replace("%", "")
    s = s.strip().rstrip(".").strip()
    s = _VAR_PREFIX.sub("", s)
    if _THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    s = _SPACES.sub("", s)
    if m := _LONE_LETTER.fullmatch(s):
        s = m.group(1)
    return s


def _as_fraction(s: str) -> Fraction | None:
    """An integer, decimal or plain fraction as an exact rational; anything else None."""
    if _PLAIN_NUMBER.fullmatch(s):
        return Fraction(s)
    m = _PLAIN_FRACTION.fullmatch(s)
    if m:
        num, den = (m.group(2), m.group(3)) if m.group(2) is not None else (m.group(4), m.group(5))
        if int(den) == 0:
            return None
        value = Fraction(int(num), int(den))
        return -value if m.group(1) else value
    return None


def _decimal_places(s: str) -> int:
    return len(s.split(".", 1)[1]) if _PLAIN_NUMBER.fullmatch(s) and "." in s else 0


def _numbers_equal(na: str, fa: Fraction, nb: str, fb: Fraction) -> bool:
    """Exact, except that a decimal written to 3+ places matches a rational it rounds from
    (0.333 ~ 1/3): such decimals are rounded results, not exact claims."""
    if fa == fb:
        return True
    for text, value, other in ((na, fa, fb), (nb, fb, fa)):
        places = _decimal_places(text)
        if places >= 3 and round(other, places) == value:
            return True
    return False


def _fast(na: str, nb: str) -> bool | None:
    """The verdict on two normal forms when it needs no algebra, else None.

    Two plain numbers compare as rationals; a choice letter equals only itself; a number against
    an expression ("4" vs "2^2") is left to algebra; over-long inputs never reach it.
    """
    if na == nb:
        return True
    fa, fb = _as_fraction(na), _as_fraction(nb)
    if fa is not None and fb is not None:
        return _numbers_equal(na, fa, nb, fb)
    if _LETTER.fullmatch(na) or _LETTER.fullmatch(nb):
        return False
    if max(len(na), len(nb)) > _CAS_MAX_CHARS:
        return False
    return None


def needs_cas(a: str | None, b: str | None) -> bool:
    """True when `equivalent(a, b)` would call computer algebra (callers move it off-loop)."""
    if a is None or b is None:
        return False
    return _fast(normalize(a), normalize(b)) is None


def equivalent(a: str | None, b: str | None) -> bool:
    """True when two extracted answers mean the same value (or the same choice)."""
    if a is None or b is None:
        return False
    na, nb = normalize(a), normalize(b)
    verdict = _fast(na, nb)
    if verdict is not None:
        return verdict
    return _cas_equal(*sorted((na, nb)))


def group_answers(answers: Sequence[str]) -> list[list[int]]:
    """Indices of `answers` grouped by equivalence, groups in order of first appearance.

    Identical normal forms are merged first, so the pairwise comparisons (the slow ones) run
    over distinct spellings only.
    """
    by_form: dict[str, list[int]] = {}
    for i, a in enumerate(answers):
        by_form.setdefault(normalize(a), []).append(i)
    groups: list[tuple[str, list[int]]] = []
    for form, members in by_form.items():
        for rep, group in groups:
            if equivalent(rep, form):
                group.extend(members)
                break
        else:
            groups.append((form, list(members)))
    return [sorted(g) for _, g in groups]


# -- computer algebra ----------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _math_verify() -> Any:
    """math-verify, imported on first use (it pulls in sympy: ~0.5 s), or None if unavailable."""
    try:
        import math_verify
    except Exception:
        return None
    # we pass no timeouts (signals only work on the main thread) and bound inputs ourselves;
    # its one-time warning about that would only be noise in the proxy's logs
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    return math_verify


@lru_cache(maxsize=4096)
def _cas_equal(a: str, b: str) -> bool:
    """Algebraic equality of two normalised answers (cached: votes repeat the same pairs)."""
    mv = _math_verify()
    if mv is not None:
        try:
            ga = mv.parse(f"${a}$", parsing_timeout=None)
            gb = mv.parse(f"${b}$", parsing_timeout=None)
            return bool(ga and gb and mv.verify(ga, gb, timeout_seconds=None))
        except Exception:
            return False
    return sympy_equal(a, b)


def _latex_to_sympy_text(s: str) -> str:
    """A small LaTeX subset (frac, sqrt, cdot, times, pi, ^, braces) as sympy input text."""
    out = s
    for _ in range(10):
        new = re.sub(r"\\frac\{([^{}]*)\}\{([^{}]*)\}", r"((\1)/(\2))", out)
        new = re.sub(r"\\sqrt\{([^{}]*)\}", r"sqrt(\1)", new)
        if new == out:
            break
        out = new
    out = out.replace("\\cdot", "*").replace("\\times", "*").replace("\\pi", "pi").replace("^", "**")
    return out.replace("{", "(").replace("}", ")").replace("\\", "")


def sympy_equal(a: str, b: str) -> bool:
    """The fallback when math-verify is not installed: sympy on a LaTeX subset."""
    try:
        from sympy import simplify
        from sympy.parsing.sympy_parser import (implicit_multiplication_application, parse_expr,
                                                standard_transformations)
    except Exception:
        return False
    transforms = (*standard_transformations, implicit_multiplication_application)
    try:
        ea = parse_expr(_latex_to_sympy_text(a), transformations=transforms, evaluate=True)
        eb = parse_expr(_latex_to_sympy_text(b), transformations=transforms, evaluate=True)
        return bool(simplify(ea - eb) == 0)
    except Exception:
        return False
