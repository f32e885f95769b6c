"""OpenAI wire bodies built from executed plans: one choice per run, usage over every call.

A multi-attempt plan (parallel samples, restarts, sequential rounds) answers with the selected
sample of each run; `usage` still counts every token billed for the request, all samples
included, so the client's bill matches the proxy's.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

from proxy.strategies.executor import Outcome
from proxy.strategies.sampler import Sample

#: characters per streamed delta when replaying a selected sample to the client
PIECE = 2048


def finish_reason(s: Sample) -> str:
    if s.tool_calls:
        return "tool_calls"
    if s.cut or s.forced:
        return "length"
    return s.finish_reason if s.finish_reason in ("stop", "length", "tool_calls", "content_filter") else "stop"


def message(s: Sample) -> dict:
    msg: dict = {"role": "assistant", "content": s.text, "refusal": None}
    if s.reasoning_text:
        msg["reasoning_content"] = s.reasoning_text
    if s.tool_calls:
        msg["tool_calls"] = s.tool_calls
    return msg


def usage(outcomes: Sequence[Outcome], cost: float) -> dict:
    samples = [s for o in outcomes for s in o.samples]
    prompt = sum(s.prompt_tokens for s in samples)
    completion = sum(s.completion_tokens for s in samples)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "completion_tokens_details": {"reasoning_tokens": sum(s.reasoning_tokens for s in samples)},
            "cost_usd": cost}


def completion_body(request_id: str, selected: Sequence[Sample], usage_: dict) -> dict:
    return {
        "id": request_id, "object": "chat.completion", "created": int(time.time()), "model": selected[0].model,
        "choices": [{"index": i, "message": message(s), "logprobs": None, "finish_reason": finish_reason(s)}
                    for i, s in enumerate(selected)],
        "usage": usage_,
    }


def _pieces(text: str) -> Iterator[str]:
    for i in range(0, len(text), PIECE):
        yield text[i:i + PIECE]


def stream_chunks(request_id: str, selected: Sequence[Sample], with_usage: bool) -> Iterator[dict]:
    """The chunks that replay the selected samples: role, reasoning, content, tool calls, finish.
    With `with_usage` every chunk carries `"usage": null` (the usage chunk follows)."""
    created = int(time.time())
    extra = {"usage": None} if with_usage else {}

    def chunk(s: Sample, i: int, delta: dict, finish: str | None = None) -> dict:
        return {"id": request_id, "object": "chat.completion.chunk", "created": created, "model": s.model,
                "choices": [{"index": i, "delta": delta, "logprobs": None, "finish_reason": finish}], **extra}

    for i, s in enumerate(selected):
        yield chunk(s, i, {"role": "assistant", "content": ""})
        for piece in _pieces(s.reasoning_text):
            yield chunk(s, i, {"reasoning_content": piece})
        for piece in _pieces(s.text):
            yield chunk(s, i, {"content": piece})
        if s.tool_calls:
            calls = [{"index": j, **call} for j, call in enumerate(s.tool_calls)]
            yield chunk(s, i, {"tool_calls": calls})
        yield chunk(s, i, {}, finish_reason(s))
