"""The one interface every checker implements: a candidate reply in, a verdict out.

A verifier is what turns extra samples into accuracy: best-of-n picks by its score, sequential
refinement feeds its `feedback` back to the model and stops when it passes. Keeping it to one
async method (like RouteLLM's one-method router) lets programmatic checks, sandboxed tests,
webhooks and LLM judges sit behind the same call::

    verifier = registry.build({"name": "regex", "pattern": r"\\d+"})
    verdict = await verifier.verify("The answer is 42", {"task": "math", "request_id": "..."})
    if not verdict.passed:
        retry_with(verdict.feedback)

`context` carries what a checker may need beyond the candidate: `task`, `request_id`,
`messages` (the conversation asked), `model` (the model that answered), `response_format`
(the request's), and inside the executor `call_model` (a `ModelCaller`: a billed call to a
configured model, for judges). Checkers must not raise for a bad candidate (that is a failed
verdict); an exception means the checker itself is broken or could not run
(`VerifierUnavailable`), and callers treat it as "no verdict".
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["ModelCaller", "Verdict", "Verifier", "VerifierUnavailable"]


class VerifierUnavailable(Exception):
    """The checker could not reach a verdict (its judge model is down): "no verdict", logged
    without a traceback, unlike a checker that crashed."""


class ModelCaller(Protocol):
    """`await call(model, messages, role="judge", max_tokens=...)` -> the reply text, or None
    when the call failed. Provided by the executor, which bills the call to the request."""

    async def __call__(self, model: str, messages: list[dict], *, role: str = ..., max_tokens: int | None = ...
                       ) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Verdict:
    """`score` is in [0, 1] (1 = certainly right); `feedback` is text a model can act on, and
    must never reveal a reference answer, since sequential rounds send it back to the model."""

    passed: bool
    score: float
    feedback: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "score": self.score, "feedback": self.feedback}


class Verifier(ABC):
    """A checker built from its arguments by the registry; one instance per request or policy."""

    #: the registry name (`regex`, `math_answer`, ...): metric label `pareto_verifications_total{verifier}`
    name: str = "verifier"

    @abstractmethod
    async def verify(self, candidate: str, context: Mapping[str, Any]) -> Verdict:
        """Judge `candidate` (the reply's content). Never raises for a bad candidate."""
