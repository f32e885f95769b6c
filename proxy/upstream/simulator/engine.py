"""The simulator's brain: from a request body to a response plan that imitates a profiled model.

The point of the simulator is that the proxy's decisions (cutoffs, voting, escalation,
budgets) meet the same statistics they would meet in production, without a GPU. So each
sample's correctness is drawn ~ Bernoulli(profile accuracy) for the recognized task, and its
length is drawn from the profiled distribution *of its outcome class*: right answers come from
the correct-sample lengths, wrong ones from the (longer) wrong-sample lengths, which is what
makes long generations a signal of failure exactly as in the traces.

Choices made here, all documented because callers measure against them:

* **Lengths** are lognormal with the class's p50 and p90 (sigma = ln(p90/p50) / z90), clipped to
  [a few tokens, the class max, else the row max, else the row p99]. Without per-class stats the
  class mean rescales the overall median; without class means the overall distribution is
  shifted by x0.8 (right) and x1.25 (wrong), so right answers stay shorter.
* **Chat** (no generated task recognized) and tasks the model has no row for use the model's
  *pooled* distribution: the task-level rows mixed by sample count (log-space moment matching:
  mu = weighted mean of ln p50, sigma^2 = weighted mean of sigma_i^2 plus the variance of the
  mu_i), and the pooled accuracy for unprofiled tasks.
* **Tokens are words**: one whitespace-separated word is one token, so counts are exact and a
  `max_tokens` cut lands on a precise word. Reasoning models put all but the closing sentence
  in `reasoning_content`.
* **prompt_tokens** is an estimate: ceil(chars / 4) of each message's text + 4 per message + 3,
  the usual rule of thumb for English with chat framing; no tokenizer is loaded.
* **Scripts**: a body's `sim_script` replaces the length and answer draws with scripted samples
  of exact lengths, answers and faults (the model's own fault rates still apply); see
  `script.py`. Length statistics live in `lengths.py`.
* **Seeding**: with the request's integer `seed`, every draw is a pure function of
  (settings.seed, request seed, messages, choice index), independent of `n` and of other
  requests. Without it the engine's own RNG (seeded with settings.seed; None means OS entropy)
  is consumed in request order, faults first.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import random
import secrets
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

import orjson

from proxy.config import SimulatorSettings
from proxy.errors import UpstreamError, UpstreamRejected, UpstreamTimeout
from proxy.routing.profiles import Profiles
from proxy.upstream.simulator.lengths import Behaviour, LengthModel, pooled_behaviour, row_behaviour, simulatable_rows
from proxy.upstream.simulator.script import ScriptBook, ScriptedSample, SimScript, parse_script, render_tail
from proxy.upstream.simulator.tasks import SimTask, recognize

__all__ = ["ChoicePlan", "FaultDecision", "LengthModel", "ResponsePlan", "SimEngine", "StreamEvent",
           "estimate_prompt_tokens", "paced", "simulatable_rows"]

_MIN_FILLER = 4  # the shortest sample still "thinks" a little before answering
_MIN_SLEEP_S = 0.001  # below this, sleeping costs more than it paces
_FILLER = tuple(
    (
        "Let me work through this carefully. First I restate what is being asked and note the given "
        "quantities. Next I consider which relation applies here, then I check each intermediate "
        "step, because a small slip early on would change the final result. Suppose we take the "
        "first term and combine it with the second; the sign matters, so I verify it again. Hmm, "
        "wait, let me double check that computation before moving on. That looks consistent. Now "
        "I compare the candidate against the alternatives and see whether anything contradicts it."
    ).split()
)
_CHAT_TAIL = tuple("In short, that is my answer.".split())


@dataclass(frozen=True)
class FaultDecision:
    """The fault injected into one request: kind is none, error, disconnect or hang.

    A disconnect drops the stream after about half its chunks, or, when
    `disconnect_after_tokens` is set (scripts), at the first chunk boundary at or past that
    many completion tokens.
    """

    kind: str
    latency_s: float
    status: int
    disconnect_after_tokens: int | None = None

    def drops_before(self, events_sent: int, tokens_sent: int, half: int) -> bool:
        """True when the stream must be dropped instead of sending its next event."""
        if self.kind != "disconnect":
            return False
        if self.disconnect_after_tokens is not None:
            return tokens_sent >= self.disconnect_after_tokens
        return events_sent == half


@dataclass(frozen=True)
class ChoicePlan:
    """One simulated sample: `filler` words of thinking, then the closing words in `tail`."""

    index: int
    reasoning: bool
    filler: int
    offset: int
    tail: tuple[str, ...]
    finish_reason: str
    answer: str | None
    correct: bool | None

    @property
    def completion_tokens(self) -> int:
        return self.filler + len(self.tail)

    @property
    def reasoning_tokens(self) -> int:
        return self.filler if self.reasoning else 0

    @property
    def content_tokens(self) -> int:
        return self.completion_tokens - self.reasoning_tokens

    def reasoning_text(self, start: int = 0, end: int | None = None) -> str:
        end = self.reasoning_tokens if end is None else end
        return _filler_text(self.offset, start, end)

    def content_text(self, start: int = 0, end: int | None = None) -> str:
        """Words [start, end) of the content; non-reasoning models' content starts with the filler."""
        end = self.content_tokens if end is None else end
        skip = 0 if self.reasoning else self.filler
        parts = []
        if start < skip:
            parts.append(_filler_text(self.offset, start, min(end, skip)))
        if end > skip:
            parts.append(" ".join(self.tail[max(start - skip, 0) : end - skip]))
        return " ".join(p for p in parts if p)


@dataclass(frozen=True)
class StreamEvent:
    """A chunk due `at_s` seconds after generation starts, carrying `tokens` completion tokens."""

    at_s: float
    chunk: dict
    tokens: int


@dataclass(frozen=True)
class ResponsePlan:
    """Everything about one response, decided up front; text is produced lazily when sent."""

    id: str
    created: int
    model: str
    prompt_tokens: int
    choices: tuple[ChoicePlan, ...]
    task: SimTask | None
    tokens_per_second: float
    tokens_per_chunk: int
    #: the script id and the position of the first scripted sample used, for scripted requests
    script: str | None = None
    script_index: int | None = None
    scripted: tuple[ScriptedSample, ...] = ()

    @property
    def completion_tokens(self) -> int:
        return sum(c.completion_tokens for c in self.choices)

    @property
    def generation_s(self) -> float:
        """Choices are generated in parallel, so the longest one sets the time."""
        return max(c.completion_tokens for c in self.choices) / self.tokens_per_second

    def usage(self) -> dict:
        completion = self.completion_tokens
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
            "completion_tokens_details": {
                "reasoning_tokens": sum(c.reasoning_tokens for c in self.choices),
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
                "audio_tokens": 0,
            },
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        }

    def response(self) -> dict:
        """The `chat.completion` body."""
        choices = []
        for c in self.choices:
            message: dict[str, Any] = {"role": "assistant", "content": c.content_text(), "refusal": None}
            if c.reasoning:
                message["reasoning_content"] = c.reasoning_text()
            choices.append({"index": c.index, "message": message, "logprobs": None, "finish_reason": c.finish_reason})
        return {**self._head("chat.completion"), "choices": choices, "usage": self.usage()}

    def events(self, include_usage: bool) -> Iterator[StreamEvent]:
        """The `chat.completion.chunk`s in time order (choices interleaved), then the usage chunk."""
        per_choice = [self._choice_events(c, include_usage) for c in self.choices]
        yield from heapq.merge(*per_choice, key=attrgetter("at_s"))
        if include_usage:
            last = {**self._head("chat.completion.chunk"), "choices": [], "usage": self.usage()}
            yield StreamEvent(self.generation_s, last, 0)

    def n_events(self, include_usage: bool) -> int:
        k = self.tokens_per_chunk
        n = sum(2 + -(-c.reasoning_tokens // k) + -(-c.content_tokens // k) for c in self.choices)
        return n + int(include_usage)

    def _head(self, obj: str) -> dict:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model,
                "system_fingerprint": "fp_pareto_sim"}

    def _choice_events(self, c: ChoicePlan, include_usage: bool) -> Iterator[StreamEvent]:
        head = self._head("chat.completion.chunk")
        tail = {"usage": None} if include_usage else {}
        tps, k = self.tokens_per_second, self.tokens_per_chunk

        def event(at: float, delta: dict, tokens: int, finish: str | None = None) -> StreamEvent:
            choice = {"index": c.index, "delta": delta, "logprobs": None, "finish_reason": finish}
            return StreamEvent(at, {**head, "choices": [choice], **tail}, tokens)

        yield event(0.0, {"role": "assistant", "content": "", "refusal": None}, 0)
        done = 0
        for field, total, text in (
            ("reasoning_content", c.reasoning_tokens, c.reasoning_text),
            ("content", c.content_tokens, c.content_text),
        ):
            for start in range(0, total, k):
                end = min(total, start + k)
                done += end - start
                yield event(done / tps, {field: (" " if start else "") + text(start, end)}, end - start)
        yield event(done / tps, {}, 0, c.finish_reason)


class SimEngine:
    """Turns request bodies into `ResponsePlan`s for models imitating `profiles` rows.

    One engine per simulated model configuration: it owns that configuration's RNG, so two
    models with the same seed still draw independently of each other's traffic.
    """

    def __init__(self, profiles: Profiles, settings: SimulatorSettings, scripts: ScriptBook | None = None) -> None:
        self.profiles = profiles
        self.settings = settings
        self.scripts = scripts if scripts is not None else ScriptBook()
        self._rng = random.Random(settings.seed) if settings.seed is not None else random.Random()
        self._behaviours: dict[tuple, Behaviour] = {}

    def prepare(self, body: dict, *, model: str, profile_model: str) -> tuple[FaultDecision, ResponsePlan]:
        """The fault and the plan of one request, from its `sim_script` when it has one.

        A scripted request's fault comes from its (first) scripted sample. The model's own fault
        rates still apply (a downed model stays down for scripted traffic too): an injected
        error or hang fails the request before it reaches the script, so it consumes no scripted
        sample; an injected disconnect cuts the scripted stream half-way. With no fault rates
        configured a scripted request draws nothing from the engine's RNG.
        """
        raw = body.get("sim_script")
        if raw is None:
            fault = self.fault(body)
            return fault, self.plan(body, model=model, profile_model=profile_model)
        script = parse_script(raw)
        f = self.settings.faults
        injected = self.fault(body) if (f.error_rate or f.disconnect_rate or f.hang_rate) else None
        if injected is not None and injected.kind in ("error", "hang"):
            return injected, self.plan(body, model=model, profile_model=profile_model)
        plan = self.plan(body, model=model, profile_model=profile_model, script=script)
        first = plan.scripted[0]
        latency = f.latency_ms / 1000.0
        if first.error is not None:
            return FaultDecision("error", latency, first.error), plan
        if first.hang:
            return FaultDecision("hang", latency, 0), plan
        if first.disconnect_at is not None:
            return FaultDecision("disconnect", latency, 0, first.disconnect_at), plan
        return injected or FaultDecision("none", latency, 0), plan

    def fault(self, body: dict) -> FaultDecision:
        """Which fault (if any) this request gets. Rates are shares of requests: one uniform draw
        is compared with error, then error+disconnect, then error+disconnect+hang."""
        f = self.settings.faults
        key = _request_key(self.settings.seed, body)
        u = (random.Random(key + b"/fault") if key is not None else self._rng).random()
        kind = "none"
        if u < f.error_rate:
            kind = "error"
        elif u < f.error_rate + f.disconnect_rate:
            kind = "disconnect"
        elif u < f.error_rate + f.disconnect_rate + f.hang_rate:
            kind = "hang"
        return FaultDecision(kind, f.latency_ms / 1000.0, f.error_status)

    def plan(self, body: dict, *, model: str, profile_model: str, script: SimScript | None = None) -> ResponsePlan:
        """Decide every choice of the response. Raises `UpstreamRejected` for a malformed body.

        With `script`, the choices are the script's next samples (taken only once the body is
        known to be valid, so a rejected request does not move the script on).
        """
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise UpstreamRejected("'messages' must be a non-empty list of message objects", param="messages")
        n = _int_param(body, "n", 1, hi=128)
        cap_name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
        cap = _int_param(body, cap_name, None, hi=None)
        seed = body.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise UpstreamRejected("'seed' must be an integer", param="seed")
        task = recognize(_last_user_text(messages))
        info = self.profiles.models.get(profile_model)
        reasoning = bool(info and info.reasoning)
        scripted: list[tuple[int, ScriptedSample]] = []
        if script is not None:
            if not simulatable_rows(self.profiles, profile_model):
                raise UpstreamError(f"the simulator has no profile rows for {profile_model!r}", kind="config")
            scripted = self.scripts.take(script, n)
            choices = tuple(_scripted_choice(i, pos, s, task, reasoning, cap) for i, (pos, s) in enumerate(scripted))
        else:
            behaviour = self._behaviour(profile_model, task)
            key = _request_key(self.settings.seed, body)
            choices = tuple(
                _draw_choice(i, random.Random(key + b"/choice/%d" % i) if key is not None else self._rng,
                             task, behaviour, reasoning, cap)
                for i in range(n)
            )
        return ResponsePlan(
            id=f"chatcmpl-{secrets.token_hex(12)}",
            created=int(time.time()),
            model=model,
            prompt_tokens=estimate_prompt_tokens(messages),
            choices=choices,
            task=task,
            tokens_per_second=self.settings.tokens_per_second,
            tokens_per_chunk=self.settings.tokens_per_chunk,
            script=script.id if script is not None else None,
            script_index=scripted[0][0] if scripted else None,
            scripted=tuple(s for _, s in scripted),
        )

    def _behaviour(self, profile_model: str, task: SimTask | None) -> Behaviour:
        key = (profile_model, task.task if task else None, task.difficulty if task else None)
        hit = self._behaviours.get(key)
        if hit is None:
            rows = simulatable_rows(self.profiles, profile_model)
            if not rows:
                raise UpstreamError(f"the simulator has no profile rows for {profile_model!r}", kind="config")
            row = self.profiles.row(profile_model, task.task, task.difficulty) if task else None
            if row is not None and row.tokens.p50 is None:
                row = None  # a published row without a length distribution: the pooled one instead
            hit = row_behaviour(row) if row is not None else pooled_behaviour(rows)
            self._behaviours[key] = hit
        return hit


def _draw_choice(index: int, rng: random.Random, task: SimTask | None, b: Behaviour, reasoning: bool,
                 cap: int | None) -> ChoicePlan:
    """Draw one sample: outcome first, then a length from that outcome's distribution."""
    if task is None:
        answer, correct, tail = None, None, _CHAT_TAIL
        total = b.pooled.draw(rng, len(tail) + _MIN_FILLER)
    else:
        correct = rng.random() < b.accuracy
        answer = task.answer if correct else task.wrong_answer(rng)
        tail = tuple(task.render(answer).split())
        total = (b.right if correct else b.wrong).draw(rng, len(tail) + _MIN_FILLER)
    offset = rng.randrange(len(_FILLER))
    filler, finish = total - len(tail), "stop"
    if cap is not None and total > cap:
        # cut mid-answer or mid-thought: no complete answer was given
        filler, tail, finish = min(filler, cap), tail[: max(cap - filler, 0)], "length"
        answer, correct = None, (False if task is not None else None)
    return ChoicePlan(index, reasoning, filler, offset, tuple(tail), finish, answer, correct)


def _scripted_choice(index: int, position: int, s: ScriptedSample, task: SimTask | None, reasoning: bool,
                     cap: int | None) -> ChoicePlan:
    """Exactly `s.tokens` tokens: filler, then the rendered answer; a cap cuts it like any sample."""
    tail = render_tail(s)
    filler, finish, answer = s.tokens - len(tail), "stop", s.answer
    if cap is not None and s.tokens > cap:
        filler, tail, finish = min(filler, cap), tail[: max(cap - filler, 0)], "length"
        answer = None
    correct = (answer == task.answer) if task is not None and answer is not None else None
    offset = (position * 7) % len(_FILLER)  # different scripted samples read differently
    return ChoicePlan(index, reasoning, filler, offset, tuple(tail), finish, answer, correct)


def _filler_text(offset: int, start: int, end: int) -> str:
    count = end - start
    if count <= 0:
        return ""
    first = (offset + start) % len(_FILLER)
    reps = (first + count) // len(_FILLER) + 1
    return " ".join((_FILLER * reps)[first : first + count])


def _text(content: Any) -> str:
    """The text of a message's content: a string, or the text parts of a content list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _last_user_text(messages: list[dict]) -> str:
    return next((_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")


def estimate_prompt_tokens(messages: list[dict]) -> int:
    """ceil(chars/4) per message text (tool calls counted as their JSON) + 4 per message + 3."""
    total = 3
    for m in messages:
        chars = len(_text(m.get("content")))
        if m.get("tool_calls"):
            chars += len(orjson.dumps(m["tool_calls"]))
        total += 4 + -(-chars // 4)
    return total


def _int_param(body: dict, name: str, default: int | None, hi: int | None) -> int | None:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or (hi is not None and value > hi):
        bound = f" and at most {hi}" if hi is not None else ""
        raise UpstreamRejected(f"'{name}' must be an integer of at least 1{bound}", param=name)
    return value


def _request_key(settings_seed: int | None, body: dict) -> bytes | None:
    """A digest of (settings seed, request seed, messages) when the request has a seed."""
    seed = body.get("seed")
    if seed is None or isinstance(seed, bool) or not isinstance(seed, int):
        return None
    try:
        payload = orjson.dumps([settings_seed, seed, body.get("messages")], option=orjson.OPT_SORT_KEYS)
    except TypeError:
        payload = repr((settings_seed, seed, body.get("messages"))).encode()
    return hashlib.blake2b(payload, digest_size=16).digest()


async def paced(events: Iterable[StreamEvent], *, max_gap_s: float | None = None) -> AsyncIterator[StreamEvent]:
    """Yield `events` on their schedule, measured from the first call on the loop clock.

    Due times are absolute (start + at_s), so time spent by the consumer does not accumulate as
    drift; waits under a millisecond are skipped (a zero sleep still lets cancellation in).
    With `max_gap_s`, a scheduled gap longer than that raises `UpstreamTimeout` after waiting
    `max_gap_s`, as a network client's read timeout would.
    """
    loop = asyncio.get_running_loop()
    start = last = loop.time()
    for ev in events:
        due = start + ev.at_s
        if max_gap_s is not None and due - last > max_gap_s:
            await asyncio.sleep(max(last + max_gap_s - loop.time(), 0.0))
            raise UpstreamTimeout(f"no data from the simulated upstream for {max_gap_s:g} s")
        delay = due - loop.time()
        await asyncio.sleep(delay if delay >= _MIN_SLEEP_S else 0)
        last = max(due, last)
        yield ev
