"""One sample on one upstream: streamed, counted live, cut at its threshold, billed honestly.

Every strategy is built from this call. It always streams internally, even when the client
asked for a plain response, because only a stream can be stopped: tokens are counted as the
deltas arrive (reasoning included), and the moment the count passes `cutoff_tokens` the
upstream is closed (within one chunk) and the sample is marked `cut`. Where the provider
honours a cap, the native one (`max_completion_tokens` if the body uses it, else `max_tokens`)
is set to the cutoff too, so the provider stops by itself and bills no further.

Billing is what was received: the provider's `usage` when it arrives (complete streams),
otherwise our own count of the deltas, with the prompt estimated. The simulator's tokens are
whitespace words, so simulated models are counted in words and their bills are exact; every
other model is counted with tiktoken (loaded offline, see `budget/tokens.py`). A provider may
have generated a few more tokens before it saw the cancel; those we cannot see.

Cancellation from outside (first-finish, a client disconnect) closes the upstream stream at
once and still leaves a `Sample` with what was received (`cancelled=True`), because the
`Sample` is created, and appended to the caller's log, before the call starts.

Failures before the first token are retried with a small jittered exponential backoff (never
after: a half-delivered sample is billed and reported, not silently replayed), and each call
asks the model's circuit breaker first.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from proxy.budget.tokens import count_tokens
from proxy.budget.tokens import warm as warm_tokenizer
from proxy.errors import ProxyError, UpstreamError, UpstreamTimeout
from proxy.routing.catalog import ModelEntry
from proxy.strategies.answers import extract_answer
from proxy.strategies.breaker import CircuitBreaker
from proxy.verifiers.base import Verdict

__all__ = ["RetryPolicy", "Sample", "Sampler", "prepare_body", "token_counter"]

log = logging.getLogger("proxy.strategies")

#: body fields never sent upstream: the proxy's own, and the ones the sampler decides itself
#: (one choice per call, always streamed, usage always requested by the upstream client)
_NOT_FORWARDED = frozenset({"routing", "n", "stream", "stream_options"})
#: error kinds worth another attempt when nothing was received yet
RETRYABLE_KINDS = frozenset({"http_5xx", "http_429", "connect", "timeout", "disconnect"})
#: finish reasons of a reply that ended on its own terms
_NORMAL_FINISH = frozenset({"stop", "tool_calls", "function_call", "content_filter"})
#: prompts of cut calls longer than this (characters) are estimated at 4 characters a token
#: rather than tokenized, to keep the event loop free
_EXACT_PROMPT_CHARS = 50_000

OnSample = Callable[["Sample"], None]
OnChunk = Callable[["Sample", dict], Awaitable[None] | None]


@dataclass(slots=True, eq=False)
class Sample:
    """One upstream call: what it cost, how it ended, what it said.

    `cut`: stopped for length by the plan's cutoff (live or native). `cancelled`: stopped by
    the executor or the client (first-finish, short-m, disconnect). `forced`: the answer of a
    `force_answer` restart; such a sample reports finish_reason "length" and cut=True because
    the reply the client gets comes from a cut generation. `error`/`exception`: the upstream
    failed; the tokens it sent before failing are still billed.
    """

    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    finish_reason: str | None = None
    cut: bool = False
    cancelled: bool = False
    text: str = ""
    answer: str | None = None
    verdict: Verdict | None = None
    selected: bool = False
    reasoning_text: str = ""
    latency_s: float = 0.0
    error: str | None = None
    error_kind: str | None = None
    exception: ProxyError | None = field(default=None, repr=False)
    cost_usd: float = 0.0
    #: why the call was made: sample, restart, escalate, force_answer, refine, critic, fallback, judge
    role: str = "sample"
    slot: int = 0
    attempt: int = 1
    seed: int | None = None
    forced: bool = False
    usage_reported: bool = False
    upstream_finish_reason: str | None = None
    tool_calls: list[dict] | None = None
    started_at: float = 0.0
    finished_at: float | None = None

    @property
    def finished(self) -> bool:
        """A complete reply: ended normally (or forced to answer), not cut, cancelled or failed."""
        if self.error is not None or self.cancelled:
            return False
        return self.forced or (not self.cut and self.finish_reason in _NORMAL_FINISH)

    @property
    def wasted_tokens(self) -> int:
        """Completion tokens paid for and thrown away (cut, cancelled or failed, not selected)."""
        if self.selected or not (self.cut or self.cancelled or self.error is not None):
            return 0
        return self.completion_tokens

    def to_dict(self) -> dict[str, Any]:
        """The trace / `routing.samples` form (no text: traces store text only when configured)."""
        return {
            "model": self.model, "role": self.role, "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens, "reasoning_tokens": self.reasoning_tokens,
            "finish_reason": self.finish_reason, "cut": self.cut, "cancelled": self.cancelled,
            "answer": self.answer, "verdict": self.verdict.to_dict() if self.verdict else None,
            "selected": self.selected, "error": self.error_kind, "cost_usd": self.cost_usd,
            "latency_ms": round(self.latency_s * 1000, 3),
        }


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """`attempts` calls at most; waits base * factor^(n-1), capped, +-`jitter` share at random
    (jitter keeps a burst of failed requests from retrying in lockstep)."""

    attempts: int = 3
    base_s: float = 0.05
    factor: float = 2.0
    cap_s: float = 1.0
    jitter: float = 0.5

    def delay(self, attempt: int, rng: random.Random) -> float:
        raw = min(self.cap_s, self.base_s * self.factor ** max(attempt - 1, 0))
        return max(0.0, raw * (1.0 + self.jitter * (2.0 * rng.random() - 1.0)))


def _words(text: str) -> int:
    return len(text.split())


def token_counter(provider: str) -> Callable[[str], int]:
    """How a model's tokens are counted when it does not say: the simulator's tokens are words."""
    return _words if provider == "simulated" else count_tokens


def _message_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _estimate_prompt(provider: str, messages: list[dict]) -> int:
    """Prompt tokens of a call that never reported usage (the provider still bills the prompt)."""
    if provider == "simulated":
        from proxy.upstream.simulator.engine import estimate_prompt_tokens

        return estimate_prompt_tokens(messages)
    return 3 + sum(4 + count_tokens(_message_text(m.get("content"))) for m in messages if isinstance(m, dict))


def prepare_body(body: dict, cutoff_tokens: int | None, native: bool) -> tuple[dict, bool]:
    """The body one upstream call sends, and whether the native cap was lowered to the cutoff.

    The client's cap stays when it is already at or below the cutoff: then a "length" finish is
    the client's own truncation, not a cut.
    """
    out = {k: v for k, v in body.items() if k not in _NOT_FORWARDED}
    if cutoff_tokens is None or not native:
        return out, False
    key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    caps = [c for c in (body.get("max_completion_tokens"), body.get("max_tokens")) if isinstance(c, int)]
    if caps and min(caps) <= cutoff_tokens:
        return out, False
    out[key] = cutoff_tokens
    return out, True


class _ToolCalls:
    """Streamed tool-call fragments merged by index into whole calls."""

    def __init__(self) -> None:
        self.calls: dict[int, dict] = {}

    def add(self, fragments: list) -> str:
        """Merge; returns the argument text added (it is billed like content)."""
        added = []
        for f in fragments:
            if not isinstance(f, dict):
                continue
            call = self.calls.setdefault(int(f.get("index", 0)), {"id": None, "type": "function",
                                                                  "function": {"name": "", "arguments": ""}})
            call["id"] = f.get("id") or call["id"]
            fn = f.get("function") or {}
            call["function"]["name"] += fn.get("name") or ""
            call["function"]["arguments"] += fn.get("arguments") or ""
            added.append(fn.get("arguments") or "")
        return "".join(added)

    def result(self) -> list[dict] | None:
        return [self.calls[i] for i in sorted(self.calls)] or None


class Sampler:
    """Runs samples with retries and a circuit breaker. One per executor (no per-request state)."""

    def __init__(self, breaker: CircuitBreaker | None = None, retry: RetryPolicy | None = None, *,
                 native_cutoffs: bool = True, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 rng: random.Random | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.breaker = breaker
        self.retry = retry or RetryPolicy()
        self.native_cutoffs = native_cutoffs
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.clock = clock

    async def run(self, entry: ModelEntry, body: dict, *, cutoff_tokens: int | None = None,
                  log: list[Sample] | None = None, on_sample: OnSample | None = None,
                  on_chunk: OnChunk | None = None, role: str = "sample", slot: int = 0) -> Sample:
        """One sample of `entry`, retried before its first token; never raises an upstream error
        (it is on the returned Sample). Every call made is appended to `log` as it starts; a call
        refused by an open circuit is not a call and is only returned."""
        if entry.provider != "simulated":
            # the tokenizer loads off the loop before the first stream is read: a blocked loop
            # would let the upstream run on, unread and unbilled
            await warm_tokenizer()
        attempt = 0
        while True:
            attempt += 1
            if self.breaker is not None and not self.breaker.allow(entry.name):
                exc = UpstreamError(f"model {entry.name!r} is failing: its circuit is open", kind="circuit_open")
                now = self.clock()
                return Sample(entry.name, role=role, slot=slot, attempt=attempt, error=exc.message,
                              error_kind="circuit_open", exception=exc, started_at=now, finished_at=now)
            sample = await self._once(entry, body, cutoff_tokens, log, on_sample, on_chunk, role, slot, attempt)
            if not self._retryable(sample) or attempt >= self.retry.attempts:
                return sample
            delay = self.retry.delay(attempt, self.rng)
            _log_retry(entry.name, sample, attempt, delay)
            await self.sleep(delay)

    @staticmethod
    def _retryable(s: Sample) -> bool:
        exc = s.exception
        if exc is None or s.completion_tokens > 0 or s.cancelled or s.cut:
            return False
        return isinstance(exc, UpstreamTimeout) or (isinstance(exc, UpstreamError) and exc.kind in RETRYABLE_KINDS)

    async def _once(self, entry: ModelEntry, body: dict, cutoff: int | None, log_: list[Sample] | None,
                    on_sample: OnSample | None, on_chunk: OnChunk | None, role: str, slot: int,
                    attempt: int) -> Sample:
        sample = Sample(entry.name, role=role, slot=slot, attempt=attempt, seed=body.get("seed"),
                        started_at=self.clock())
        if log_ is not None:
            log_.append(sample)
        call_body, capped = prepare_body(body, cutoff, self.native_cutoffs)
        count = token_counter(entry.provider)
        reasoning: list[str] = []
        content: list[str] = []
        tools = _ToolCalls()
        usage: dict | None = None
        finish: str | None = None
        got_chunk = False
        running = reasoning_count = 0
        stream: AsyncIterator[dict] | None = None
        try:
            try:
                stream = entry.upstream.stream(call_body, timeout_s=entry.timeout_s)
                it = stream.__aiter__()
            except ProxyError as exc:  # an upstream that refuses before returning a stream
                _fail(sample, exc)
                return sample
            while True:
                try:
                    chunk = await it.__anext__()
                except StopAsyncIteration:
                    break
                except ProxyError as exc:
                    _fail(sample, exc)
                    break
                except Exception as exc:  # an upstream client bug must not take the request down
                    log.exception("upstream %s raised an untyped error", entry.name)
                    _fail(sample, UpstreamError(f"upstream {entry.name!r} failed: {type(exc).__name__}", kind="error"))
                    break
                got_chunk = True
                if isinstance(chunk.get("usage"), dict):
                    usage = chunk["usage"]
                for choice in chunk.get("choices") or ():
                    if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                        continue
                    delta = choice.get("delta") or {}
                    r = delta.get("reasoning_content") or delta.get("reasoning")
                    if isinstance(r, str) and r:
                        reasoning.append(r)
                        n = count(r)
                        running += n
                        reasoning_count += n
                    c = delta.get("content")
                    if isinstance(c, str) and c:
                        content.append(c)
                        running += count(c)
                    if isinstance(delta.get("tool_calls"), list):
                        running += count(tools.add(delta["tool_calls"]))
                    finish = choice.get("finish_reason") or finish
                sample.completion_tokens = running  # live, for callers watching the log
                if on_chunk is not None:
                    pending = on_chunk(sample, chunk)
                    if inspect.isawaitable(pending):
                        await pending
                if cutoff is not None and finish is None and running > cutoff:
                    sample.cut = True  # the live cut: stop paying right here
                    break
        except asyncio.CancelledError:
            sample.cancelled = True
            raise
        finally:
            # bookkeeping first and without awaiting, so even a second cancellation arriving
            # while the stream closes cannot leave the sample half-counted
            sample.reasoning_text, sample.text = "".join(reasoning), "".join(content)
            sample.tool_calls = tools.result()
            self._settle(sample, entry, call_body, usage, finish, capped, got_chunk, running, reasoning_count)
            try:
                if stream is not None:
                    await _close(stream)
            finally:
                if on_sample is not None:
                    on_sample(sample)
        return sample

    def _settle(self, s: Sample, entry: ModelEntry, body: dict, usage: dict | None, finish: str | None,
                      capped: bool, got_chunk: bool, running: int, reasoning_count: int) -> None:
        """Final counts, finish reason, answer, cost and breaker bookkeeping of one call."""
        if usage is not None and isinstance(usage.get("completion_tokens"), int):
            s.usage_reported = True
            s.completion_tokens = usage["completion_tokens"]
            s.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            details = usage.get("completion_tokens_details") or {}
            s.reasoning_tokens = int(details.get("reasoning_tokens") or reasoning_count)
        else:
            s.completion_tokens, s.reasoning_tokens = running, reasoning_count
            if got_chunk:  # the provider read the prompt: it bills it even for a stream we cut
                s.prompt_tokens = _prompt_tokens(entry.provider, body.get("messages") or [])
        s.upstream_finish_reason = finish
        if s.cut:
            s.finish_reason = "length"
        elif s.error is None and not s.cancelled:
            s.finish_reason = finish
            s.cut = finish == "length" and capped  # the provider stopped at our native cap
        if s.finished:
            s.answer = extract_answer(s.text)
        s.cost_usd = entry.price.cost(s.prompt_tokens, s.completion_tokens) if entry.price else 0.0
        s.finished_at = self.clock()
        s.latency_s = s.finished_at - s.started_at
        if self.breaker is not None:
            if isinstance(s.exception, UpstreamError):
                self.breaker.record_failure(entry.name)
            elif got_chunk:
                self.breaker.record_success(entry.name)
            else:
                self.breaker.release(entry.name)


def _fail(sample: Sample, exc: ProxyError) -> None:
    sample.exception = exc
    sample.error = exc.message
    sample.error_kind = getattr(exc, "kind", None) or type(exc).__name__


async def _close(stream: AsyncIterator[dict]) -> None:
    """Close the upstream stream now (frees or drops its connection); never raises."""
    aclose = getattr(stream, "aclose", None)
    if aclose is None:
        return
    try:
        await aclose()
    except Exception:  # a stream that fails while closing has nothing more to give us
        log.debug("closing an upstream stream failed", exc_info=True)


def _prompt_tokens(provider: str, messages: list[dict]) -> int:
    chars = sum(len(_message_text(m.get("content"))) for m in messages if isinstance(m, dict))
    if chars > _EXACT_PROMPT_CHARS and provider != "simulated":
        return 3 + 4 * len(messages) + -(-chars // 4)
    return _estimate_prompt(provider, messages)


def _log_retry(model: str, sample: Sample, attempt: int, delay: float) -> None:
    log.info("retrying %s after %s (attempt %d, waiting %.3f s)", model, sample.error_kind, attempt, delay)
