"""Verifiers that ask someone else: `webhook` (an enterprise's own validator over HTTP) and
`llm_judge` (a configured model grading against a rubric).

A webhook that is down, slow or answers nonsense is a *failed verdict* with a reason, never an
exception: the enterprise's validator being unavailable must not turn into a 502 for the
client. The judge is different: when its model cannot be reached there is no verdict at all
(`VerifierUnavailable`), because a failed grade would wrongly push a strategy to restart.

The webhook receives ``{"candidate", "task", "request_id", "context"}`` (context: the
conversation asked and the model that answered) and answers ``{"passed", "score",
"feedback"}`` (score and feedback optional)::

    registry.build({"name": "webhook", "url": "https://validators.internal/check", "timeout_s": 5})
    registry.build({"name": "llm_judge", "model": "gpt-4o-mini", "rubric": "Cites a source for every claim."})
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Collection, Mapping
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from proxy.verifiers.base import ModelCaller, Verdict, Verifier, VerifierUnavailable
from proxy.verifiers.basic import _Args

__all__ = ["LlmJudgeArgs", "LlmJudgeVerifier", "WebhookArgs", "WebhookVerifier"]

_MAX_RESPONSE = 64 * 1024
_MAX_FEEDBACK = 2000


class WebhookArgs(_Args):
    url: str = Field(min_length=1, max_length=2000)
    timeout_s: float = Field(default=10.0, gt=0, le=120)

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL")
        return v


def _clean_context(context: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON-safe part of the verify context that a webhook gets."""
    return {k: context.get(k) for k in ("messages", "model", "response_format") if context.get(k) is not None}


class WebhookVerifier(Verifier):
    """POSTs the candidate to `url`; the hook's JSON answer is the verdict."""

    name = "webhook"

    def __init__(self, args: WebhookArgs, allowed_hosts: Collection[str] | None = None) -> None:
        self.url, self.timeout_s = args.url, args.timeout_s
        self.allowed = allowed_hosts

    async def verify(self, candidate: str, context: Mapping[str, Any]) -> Verdict:
        import aiohttp

        host = urlsplit(self.url).hostname or ""
        if self.allowed is not None and host not in self.allowed:
            return _hook_failed(f"the host {host} is not an allowed webhook host")
        payload = {"candidate": candidate, "task": context.get("task"), "request_id": context.get("request_id"),
                   "context": _clean_context(context)}
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session, \
                    session.post(self.url, json=payload, allow_redirects=False) as resp:
                raw = await resp.content.read(_MAX_RESPONSE + 1)
                status = resp.status
        except (TimeoutError, asyncio.TimeoutError):
            return _hook_failed(f"it did not answer within {self.timeout_s:g} s")
        except aiohttp.ClientError as e:
            return _hook_failed(f"the request failed ({type(e).__name__})")
        except (ValueError, OSError) as e:  # a bad payload (unserialisable context) or socket trouble
            return _hook_failed(f"the request could not be made ({type(e).__name__})")
        if not 200 <= status < 300:
            return _hook_failed(f"it answered HTTP {status}")
        if len(raw) > _MAX_RESPONSE:
            return _hook_failed("its answer is too large")
        return _parse_hook(raw)


def _hook_failed(why: str) -> Verdict:
    return Verdict(False, 0.0, f"The answer could not be validated: the verification webhook failed ({why}).")


def _parse_hook(raw: bytes) -> Verdict:
    import orjson

    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _hook_failed("its answer is not JSON")
    if not isinstance(body, dict) or not isinstance(body.get("passed"), bool):
        return _hook_failed("its answer has no boolean 'passed'")
    passed = body["passed"]
    score = body.get("score")
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
        score = 1.0 if passed else 0.0
    feedback = body.get("feedback")
    feedback = feedback[:_MAX_FEEDBACK] if isinstance(feedback, str) else ""
    return Verdict(passed, min(1.0, max(0.0, float(score))), feedback)


# -- llm_judge ---------------------------------------------------------------------------------

JUDGE_PROMPT = (
    "You are grading an answer against a rubric. Be strict and specific.\n\n"
    "Rubric:\n{rubric}\n\nQuestion:\n{question}\n\nAnswer to grade:\n{answer}\n\n"
    "Explain briefly what the answer does well and what it gets wrong. Then end with two lines:\n"
    "SCORE: <a number from 0 to 10>\nVERDICT: PASS or VERDICT: FAIL"
)
_SCORE = re.compile(r"SCORE:\s*(\d+(?:\.\d+)?)\s*(?:/\s*(\d+))?", re.I)
_VERDICT = re.compile(r"VERDICT:\s*(PASS|FAIL)\b", re.I)


class LlmJudgeArgs(_Args):
    model: str = Field(min_length=1, max_length=200)
    rubric: str = Field(min_length=1, max_length=20_000)
    #: without a VERDICT line, the grade (0..1) at or above which the answer passes
    pass_score: float = Field(default=0.7, ge=0, le=1)
    max_tokens: int = Field(default=1024, ge=16, le=32_768)


def _question(messages: Any) -> str:
    if isinstance(messages, list):
        for m in reversed(messages):
            if isinstance(m, Mapping) and m.get("role") == "user" and isinstance(m.get("content"), str):
                return m["content"]
    return "(not available)"


def parse_grade(text: str, pass_score: float) -> Verdict | None:
    """The judge's verdict from its reply, or None when it gave no usable grade."""
    scores = _SCORE.findall(text or "")
    verdicts = _VERDICT.findall(text or "")
    if not scores and not verdicts:
        return None
    score = None
    if scores:
        value, scale = scores[-1]
        score = min(1.0, max(0.0, float(value) / (float(scale) if scale else 10.0)))
    passed = verdicts[-1].upper() == "PASS" if verdicts else (score is not None and score >= pass_score)
    if score is None:
        score = 1.0 if passed else 0.0
    critique = _VERDICT.sub("", _SCORE.sub("", text)).strip()
    return Verdict(passed, score, critique[-_MAX_FEEDBACK:])


class LlmJudgeVerifier(Verifier):
    """A configured model grades the candidate against `rubric`. The judge call goes through
    the run's `call_model` (context), so it is a billed sample of the request (role "judge")
    and shows in usage, cost and the trace."""

    name = "llm_judge"

    def __init__(self, args: LlmJudgeArgs) -> None:
        self.a = args

    async def verify(self, candidate: str, context: Mapping[str, Any]) -> Verdict:
        call: ModelCaller | None = context.get("call_model")
        if call is None:
            raise VerifierUnavailable("llm_judge needs a model caller (it runs inside the executor)")
        prompt = JUDGE_PROMPT.format(rubric=self.a.rubric, question=_question(context.get("messages")),
                                     answer=candidate or "(empty)")
        reply = await call(self.a.model, [{"role": "user", "content": prompt}], role="judge",
                           max_tokens=self.a.max_tokens)
        if reply is None:
            raise VerifierUnavailable(f"the judge model {self.a.model} did not answer")
        verdict = parse_grade(reply, self.a.pass_score)
        if verdict is None:
            raise VerifierUnavailable(f"the judge model {self.a.model} gave no SCORE or VERDICT line")
        return verdict
