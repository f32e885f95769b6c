"""Scripted samples: a test says exactly how long each simulated sample is and what it answers.

Strategy tests (majority votes, first-finish races, live cutoffs, retries) need samples whose
lengths and answers are known in advance, whatever the profile would have drawn. A request body
may carry::

    "sim_script": {"id": "t1", "samples": [{"tokens": 900, "answer": "42"},
                                            {"tokens": 5000, "answer": "41"},
                                            {"tokens": 10, "error": 503}]}

The i-th request carrying id ``t1`` (in arrival order, counted by the `ScriptBook` the engine
shares: one per server process, one per `SimulatedUpstream` unless several are handed the same
book) gets ``samples[i]``, the last one again once i runs past the end; a request with ``n``
choices takes n consecutive samples. The model's configured fault rates still apply (an
injected error or hang fails the request before it reaches the script, without consuming a
sample), so a "downed" model stays down for scripted traffic. Routing-independent on purpose: the proxy passes unknown body fields through, so a
script reaches the simulator whichever model the router picks.

A scripted sample emits exactly ``tokens`` completion tokens (reasoning + answer for reasoning
models) and ends with its answer rendered the way the generated tasks do (``\\boxed{42}``, or
``Answer: B`` for a single capital letter); ``text`` replaces that closing text verbatim, its
line breaks and indentation kept (a token is a whitespace-separated word, carrying the line
break and indentation before it), so a script can reply with a fenced code block.
``max_tokens`` / ``max_completion_tokens`` cut it as usual (finish_reason "length", no answer).
``error`` fails the request with that HTTP status, ``hang`` never answers, ``disconnect_at``
drops the stream at the first chunk boundary at or past that many tokens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from proxy.errors import UpstreamRejected

__all__ = ["ScriptBook", "ScriptedSample", "SimScript", "parse_script", "render_tail", "text_tokens"]

_LETTER = re.compile(r"[A-Z]")
_FIELDS = {"tokens", "answer", "text", "error", "hang", "disconnect_at"}
_MAX_SAMPLES = 10_000


@dataclass(frozen=True, slots=True)
class ScriptedSample:
    """One scripted sample (see the module docstring for the meaning of each field)."""

    tokens: int
    answer: str | None = None
    text: str | None = None
    error: int | None = None
    hang: bool = False
    disconnect_at: int | None = None


@dataclass(frozen=True, slots=True)
class SimScript:
    id: str
    samples: tuple[ScriptedSample, ...]


def _reject(message: str, param: str) -> UpstreamRejected:
    return UpstreamRejected(f"{param}: {message}", param=param)


def _int(value: Any, param: str, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise _reject(f"must be an integer of at least {lo}", param)
    return value


def parse_script(raw: Any) -> SimScript:
    """Validate a body's `sim_script`; a malformed one is the client's fault (`UpstreamRejected`)."""
    if not isinstance(raw, dict):
        raise _reject("must be an object {id, samples}", "sim_script")
    unknown = set(raw) - {"id", "samples"}
    if unknown:
        raise _reject(f"unknown field(s) {sorted(unknown)}", "sim_script")
    script_id = raw.get("id")
    if not isinstance(script_id, str) or not script_id:
        raise _reject("must be a non-empty string", "sim_script.id")
    items = raw.get("samples")
    if not isinstance(items, list) or not items or len(items) > _MAX_SAMPLES:
        raise _reject(f"must be a list of 1 to {_MAX_SAMPLES} sample objects", "sim_script.samples")
    samples = []
    for i, item in enumerate(items):
        where = f"sim_script.samples[{i}]"
        if not isinstance(item, dict):
            raise _reject("must be an object", where)
        extra = set(item) - _FIELDS
        if extra:
            raise _reject(f"unknown field(s) {sorted(extra)}; known: {sorted(_FIELDS)}", where)
        answer, text = item.get("answer"), item.get("text")
        if answer is not None and (not isinstance(answer, str) or not answer.strip()):
            raise _reject("must be a non-empty string or null", f"{where}.answer")
        if text is not None and not isinstance(text, str):
            raise _reject("must be a string", f"{where}.text")
        error = item.get("error")
        if error is not None:
            error = _int(error, f"{where}.error", 400)
            if error > 599:
                raise _reject("must be an HTTP error status (400-599)", f"{where}.error")
        hang = item.get("hang", False)
        if not isinstance(hang, bool):
            raise _reject("must be a boolean", f"{where}.hang")
        disconnect = item.get("disconnect_at")
        samples.append(ScriptedSample(
            tokens=_int(item.get("tokens"), f"{where}.tokens", 1),
            answer=answer,
            text=text,
            error=error,
            hang=hang,
            disconnect_at=None if disconnect is None else _int(disconnect, f"{where}.disconnect_at", 0),
        ))
    return SimScript(script_id, tuple(samples))


class ScriptBook:
    """Arrival counters per script id: which scripted sample the next request gets.

    Owned by whoever owns the engines (the server app, or the caller of `SimulatedUpstream`),
    never module-level, so two test servers or two test cases never see each other's counts.
    """

    def __init__(self) -> None:
        self._next: dict[str, int] = {}

    def take(self, script: SimScript, n: int = 1) -> list[tuple[int, ScriptedSample]]:
        """The next `n` samples of `script` with their positions (the last repeats at the end)."""
        start = self._next.get(script.id, 0)
        self._next[script.id] = start + n
        last = len(script.samples) - 1
        return [(i, script.samples[min(i, last)]) for i in range(start, start + n)]

    def served(self) -> dict[str, int]:
        """Requests' samples handed out so far, per script id."""
        return dict(self._next)


def text_tokens(text: str) -> tuple[str, ...]:
    """`text` as tokens that rebuild it when joined by single spaces, line breaks and indentation
    included (a line then ends in a space, which no reader of code or prose minds)."""
    out = []
    for m in re.finditer(r"(\s*)(\S+)", text):
        ws, word = m.groups()
        if not out or ws in ("", " ") or "\n" not in ws:
            out.append(word)
        else:
            out.append(ws[1:] + word if ws.startswith(" ") else ws + word)
    return tuple(out)


def render_tail(sample: ScriptedSample) -> tuple[str, ...]:
    """The closing words of a scripted sample, at most `sample.tokens` of them.

    The full sentence when it fits, else the bare answer (``\\boxed{42}``, ``Answer: B``), else
    its last words: the count is what a script promises, the answer is best effort.
    """
    if sample.text is not None:
        words = text_tokens(sample.text)
        return words[len(words) - sample.tokens:] if len(words) > sample.tokens else words
    if sample.answer is None:
        return ()
    answer = sample.answer.strip()
    if _LETTER.fullmatch(answer):
        full, bare = f"So the best option is {answer}. Answer: {answer}", f"Answer: {answer}"
    else:
        full, bare = f"So the final answer is \\boxed{{{answer}}}.", f"\\boxed{{{answer}}}"
    for option in (full, bare):
        words = tuple(option.split())
        if len(words) <= sample.tokens:
            return words
    words = tuple(bare.split())
    return words[len(words) - sample.tokens:]

