"""The built-in checkers that need nothing but the candidate text: `regex` and `math_answer`."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from proxy.strategies.answers import equivalent, extract_answer, has_final_answer, needs_cas
from proxy.verifiers.base import Verdict, Verifier

__all__ = ["MathAnswerArgs", "MathAnswerVerifier", "RegexArgs", "RegexVerifier"]

#: longest pattern accepted: patterns come from clients, and a huge one is a denial of service
_MAX_PATTERN = 2000


class _Args(BaseModel):
    # strict: "true" is not a boolean and 5 is not a pattern; extra: a misspelt argument is an
    # error the client should see, not a silently ignored setting
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class RegexArgs(_Args):
    pattern: str = Field(min_length=1, max_length=_MAX_PATTERN)
    must_match: bool = True

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return v


class RegexVerifier(Verifier):
    """Passes when the candidate matches `pattern` (or, with must_match false, when it does not).

    Python's `re.search` semantics; the pattern is compiled once, at build time.
    """

    name = "regex"

    def __init__(self, args: RegexArgs) -> None:
        self.pattern = re.compile(args.pattern)
        self.must_match = args.must_match

    async def verify(self, candidate: str, context: Mapping[str, Any]) -> Verdict:
        matched = self.pattern.search(candidate or "") is not None
        if matched == self.must_match:
            return Verdict(True, 1.0, "")
        wanted = "must match" if self.must_match else "must not match"
        return Verdict(False, 0.0, f"The reply {wanted} the pattern /{self.pattern.pattern}/.")


class MathAnswerArgs(_Args):
    reference: str | int | float | None = None

    @field_validator("reference")
    @classmethod
    def _not_blank(cls, v: str | int | float | None) -> str | int | float | None:
        if isinstance(v, str) and not v.strip():
            raise ValueError("must not be empty")
        return v


class MathAnswerVerifier(Verifier):
    """With a `reference`: passes when the final answer equals it (see `answers.equivalent`).
    Without one: passes when the reply states a well-formed final answer at all, which is what
    a sequential round can still check when nobody knows the truth."""

    name = "math_answer"

    def __init__(self, args: MathAnswerArgs) -> None:
        self.reference = None if args.reference is None else str(args.reference)

    async def verify(self, candidate: str, context: Mapping[str, Any]) -> Verdict:
        if self.reference is None:
            if has_final_answer(candidate):
                return Verdict(True, 1.0, "")
            return Verdict(False, 0.0, "No final answer was stated. End the reply with the answer as \\boxed{...}.")
        answer = extract_answer(candidate)
        if answer is None:
            return Verdict(False, 0.0, "No final answer was found. End the reply with the answer as \\boxed{...}.")
        if needs_cas(answer, self.reference):
            same = await asyncio.to_thread(equivalent, answer, self.reference)
        else:
            same = equivalent(answer, self.reference)
        if same:
            return Verdict(True, 1.0, "")
        # never reveal the reference: this text goes back to the model in sequential rounds
        return Verdict(False, 0.0, f"The final answer {answer} is not correct. Re-check the reasoning step by step.")
