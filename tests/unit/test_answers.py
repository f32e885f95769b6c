"""Answer extraction and equivalence: the tables every vote and every math check rely on."""

from __future__ import annotations

import pytest

from proxy.strategies import answers
from proxy.strategies.answers import equivalent, extract_answer, group_answers, has_final_answer, needs_cas, normalize


@pytest.mark.parametrize("text, expected", [
    ("So the final answer is \\boxed{42}.", "42"),
    ("first \\boxed{1} then \\boxed{\\frac{\\sqrt{3}}{2}} at last", "\\frac{\\sqrt{3}}{2}"),  # the last, nested braces
    ("\\boxed{x^{2} + {y}}", "x^{2} + {y}"),
    ("\\fbox{7}", "7"),
    ("\\boxed{} and then 12", "12"),  # an empty box is no answer
    ("Final answer: 12.", "12"),
    ("**Final answer:** **$\\frac{3}{4}$**.", "\\frac{3}{4}"),
    ("The final answer is -3", "-3"),
    ("So the best option is B. Answer: B", "B"),
    ("Answer: (C)", "C"),
    ("the answer is: d", "D"),
    ("The answer is B", "B"),
    (" **D** ", "D"),
    ("(A)", "A"),
    ("B.", "B"),
    ("Answer: x = 5", "x = 5"),
    ("we get 3, then 4.5, then 17 apples", "17"),
    ("a total of 1,000,000 dollars", "1,000,000"),
    ("ratio 3/4", "3/4"),
    ("no digits here at all", None),
    ("", None),
    (None, None),
])
def test_extraction(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize("text, explicit", [
    ("\\boxed{4}", True), ("Final answer: 4", True), ("Answer: C", True), ("C", True),
    ("it is probably 4", False), ("", False), (None, False),
])
def test_has_final_answer_needs_an_explicit_statement(text, explicit):
    assert has_final_answer(text) is explicit


@pytest.mark.parametrize("a, b, same", [
    ("42", "42.0", True),
    ("42", " 42. ", True),
    ("0.5", "\\frac{1}{2}", True),
    ("1/2", "\\dfrac{1}{2}", True),
    ("-\\frac{1}{2}", "-0.5", True),
    ("0.333", "\\frac{1}{3}", True),  # a decimal to 3+ places is a rounded value
    ("0.3", "\\frac{1}{3}", False),
    ("1,000", "1000", True),
    ("\\text{B}", "B", True),
    ("(B)", "B", True),
    ("A", "B", False),
    ("A", "4", False),
    ("x = 5", "5", True),
    ("90^\\circ", "90", True),
    ("50\\%", "50", True),
    ("3", "4", False),
    ("4", "2^2", True),
    ("x+1", "1+x", True),
    ("2\\sqrt{2}", "\\sqrt{8}", True),
    ("\\frac{\\sqrt{3}}{2}", "\\frac{\\sqrt 3}{2}", True),
    ("\\pi/2", "\\frac{\\pi}{2}", True),
    ("x+1", "x+2", False),
    (None, "1", False),
    ("1", None, False),
])
def test_equivalence(a, b, same):
    assert equivalent(a, b) is same
    assert equivalent(b, a) is same


def test_plain_numbers_and_letters_never_reach_computer_algebra(monkeypatch):
    def boom(*args):
        raise AssertionError("computer algebra was called on a plain answer")

    monkeypatch.setattr(answers, "_cas_equal", boom)
    for a, b in [("42", "42.0"), ("0.5", "1/2"), ("A", "B"), ("A", "x+1"), ("7", "8"), ("1,000", "1000")]:
        equivalent(a, b)
        assert not needs_cas(a, b)
    assert needs_cas("x+1", "1+x") and needs_cas("4", "2^2")
    assert not needs_cas("x" * 400, "y" * 400)  # too long for algebra: compared as text only
    assert not equivalent("x" * 400, "y" * 400)


def test_normal_forms():
    assert normalize(" $\\boxed{\\dfrac{1}{2}}$ ") == "\\frac{1}{2}"
    assert normalize("\\left( 1, 2 \\right)") == "(1,2)"
    assert normalize("\\text{\\textbf{B}}") == "B"
    assert normalize("\\cdot x") == "\\cdot x"  # a space between letters is meaningful in LaTeX


def test_grouping_merges_equivalent_spellings_in_order_of_appearance():
    assert group_answers(["42", "B", "42.0", "x+1", "1+x", "B", "7"]) == [[0, 2], [1, 5], [3, 4], [6]]
    assert group_answers([]) == []


def test_sympy_fallback_when_math_verify_is_missing(monkeypatch):
    monkeypatch.setattr(answers, "_math_verify", lambda: None)
    answers._cas_equal.cache_clear()
    try:
        assert answers._cas_equal("2\\sqrt{2}", "\\sqrt{8}")
        assert answers._cas_equal("1+x", "x+1")
        assert answers._cas_equal("0.5", "\\frac{1}{2}")
        assert not answers._cas_equal("x+1", "x+2")
        assert not answers._cas_equal("\\unknown{", "1")  # unparsable: not equal, never an exception
    finally:
        answers._cas_equal.cache_clear()
