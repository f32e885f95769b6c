"""The wire schema of `POST /v1/chat/completions`: parse, validate, and say precisely what is wrong.

Validation is a table of field checks rather than a pydantic model: it runs on every request,
costs a few microseconds this way, and lets unknown fields pass through to the upstream untouched
as the contract requires. Every failure names the offending parameter in `param`, like OpenAI.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from proxy.config import DIFFICULTIES, TASKS
from proxy.errors import InvalidRequest

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
STRATEGIES = frozenset({"single", "parallel", "sequential"})
AGGREGATORS = frozenset({"majority", "best_of_n", "first_finish", "short_m", "consensus"})
REASONING_EFFORTS = frozenset({"none", "minimal", "low", "medium", "high", "off"})


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _fail(param: str, message: str) -> InvalidRequest:
    return InvalidRequest(f"Invalid value for '{param}': {message}", param=param, code="invalid_value")


def _check_messages(v: Any) -> None:
    if not isinstance(v, list):
        raise _fail("messages", f"expected an array of message objects, got {type(v).__name__}.")
    if not v:
        raise _fail("messages", "the array must contain at least one message.")
    for i, m in enumerate(v):
        if not isinstance(m, dict):
            raise _fail(f"messages[{i}]", f"expected an object, got {type(m).__name__}.")
        role = m.get("role")
        if role not in ROLES:
            raise _fail(f"messages[{i}].role", f"expected one of {', '.join(sorted(ROLES))}, got {role!r}.")
        content = m.get("content")
        if content is not None and not isinstance(content, (str, list)):
            raise _fail(f"messages[{i}].content", f"expected a string or an array of content parts, got {type(content).__name__}.")


def _int_range(lo: int, hi: int | None = None) -> Callable[[str, Any], None]:
    def check(name: str, v: Any) -> None:
        if not _is_int(v) or v < lo or (hi is not None and v > hi):
            bound = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
            raise _fail(name, f"expected an integer {bound}, got {v!r}.")
    return check


def _num_range(lo: float, hi: float) -> Callable[[str, Any], None]:
    def check(name: str, v: Any) -> None:
        if not _is_num(v) or not lo <= v <= hi:
            raise _fail(name, f"expected a number between {lo:g} and {hi:g}, got {v!r}.")
    return check


def _type(*types: type, label: str) -> Callable[[str, Any], None]:
    def check(name: str, v: Any) -> None:
        if not isinstance(v, types) or (bool not in types and isinstance(v, bool)):
            raise _fail(name, f"expected {label}, got {type(v).__name__}.")
    return check


def _stop(name: str, v: Any) -> None:
    if isinstance(v, str):
        return
    if not isinstance(v, list) or len(v) > 4 or not all(isinstance(s, str) for s in v):
        raise _fail(name, "expected a string or an array of up to 4 strings.")


def _response_format(name: str, v: Any) -> None:
    if not isinstance(v, dict) or v.get("type") not in ("text", "json_object", "json_schema"):
        raise _fail(name, "expected an object whose 'type' is 'text', 'json_object' or 'json_schema'.")
    if v["type"] == "json_schema" and not isinstance(v.get("json_schema"), dict):
        raise _fail(f"{name}.json_schema", "required when type is 'json_schema'.")


def _tool_choice(name: str, v: Any) -> None:
    if isinstance(v, str):
        if v not in ("none", "auto", "required"):
            raise _fail(name, f"expected 'none', 'auto', 'required' or an object, got {v!r}.")
    elif not isinstance(v, dict):
        raise _fail(name, f"expected a string or an object, got {type(v).__name__}.")


def _reasoning_effort(name: str, v: Any) -> None:
    if v not in REASONING_EFFORTS:
        raise _fail(name, f"expected one of {', '.join(sorted(REASONING_EFFORTS))}, got {v!r}.")


#: field -> check(name, value); fields not listed pass through unchecked
_CHECKS: dict[str, Callable[[str, Any], None]] = {
    "stream": _type(bool, label="a boolean"),
    "n": _int_range(1, 128),
    "temperature": _num_range(0, 2),
    "top_p": _num_range(0, 1),
    "max_tokens": _int_range(1),
    "max_completion_tokens": _int_range(1),
    "presence_penalty": _num_range(-2, 2),
    "frequency_penalty": _num_range(-2, 2),
    "stop": _stop,
    "tools": _type(list, label="an array of tools"),
    "tool_choice": _tool_choice,
    "response_format": _response_format,
    "seed": _type(int, label="an integer"),
    "user": _type(str, label="a string"),
    "stream_options": _type(dict, label="an object"),
    "reasoning_effort": _reasoning_effort,
}


def _strategy(name: str, v: Any) -> None:
    if isinstance(v, str):
        v = {"name": v}
    if not isinstance(v, dict):
        raise _fail(name, "expected a strategy name or an object {name, k, aggregator, m, k_max, margin, rounds}.")
    unknown = set(v) - {"name", "k", "aggregator", "m", "k_max", "margin", "rounds"}
    if unknown:
        raise _fail(f"{name}.{sorted(unknown)[0]}", "unknown strategy field.")
    if v.get("name") not in STRATEGIES:
        raise _fail(f"{name}.name", f"expected one of {', '.join(sorted(STRATEGIES))}, got {v.get('name')!r}.")
    if "aggregator" in v and v["aggregator"] not in AGGREGATORS:
        raise _fail(f"{name}.aggregator", f"expected one of {', '.join(sorted(AGGREGATORS))}, got {v['aggregator']!r}.")
    for k in ("k", "m", "k_max", "margin", "rounds"):
        if k in v:
            _int_range(1, 64)(f"{name}.{k}", v[k])


def _verifier(name: str, v: Any) -> None:
    if not isinstance(v, dict) or not isinstance(v.get("name"), str):
        raise _fail(name, "expected an object with a 'name' and the verifier's arguments.")


def _choice(options: tuple[str, ...]) -> Callable[[str, Any], None]:
    def check(name: str, v: Any) -> None:
        if v not in options:
            raise _fail(name, f"expected one of {', '.join(options)}, got {v!r}.")
    return check


_ROUTING_CHECKS: dict[str, Callable[[str, Any], None]] = {
    "policy": _type(str, label="a policy name"),
    "task": _choice(TASKS),
    "difficulty": _choice(DIFFICULTIES),
    "accuracy_target": _num_range(0, 1),
    "max_cost_usd": _num_range(0, 1e9),
    "strategy": _strategy,
    "verifier": _verifier,
    "cutoff_tokens": _int_range(1),
    "max_restarts": _int_range(0, 16),
    "explain": _type(bool, label="a boolean"),
    "session": _type(str, label="a string"),
}


@dataclass(slots=True)
class ChatRequest:
    """A validated chat request. `body` is what goes upstream (the `routing` field removed)."""

    id: str
    model: str
    body: dict
    stream: bool
    include_usage: bool
    routing: dict = field(default_factory=dict)

    @property
    def explain(self) -> bool:
        return bool(self.routing.get("explain"))

    def cap_tokens(self) -> int | None:
        """The client's output cap, whichever name it used."""
        return self.body.get("max_completion_tokens") or self.body.get("max_tokens")


def new_request_id() -> str:
    # 128 random bits like uuid4, without its syscall per call (random reseeds after fork);
    # ids are not secrets: feedback on an id is only accepted from the team that made the request
    return f"chatcmpl-{random.getrandbits(128):032x}"


def parse_json_body(raw: bytes) -> dict:
    if not raw:
        raise InvalidRequest("The request body is empty: send a JSON object.", code="invalid_json")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise InvalidRequest(f"The request body is not valid JSON: {e}.", code="invalid_json") from None
    if not isinstance(body, dict):
        raise InvalidRequest(f"The request body must be a JSON object, got {type(body).__name__}.", code="invalid_json")
    return body


def parse_chat_request(raw: bytes) -> ChatRequest:
    body = parse_json_body(raw)
    model = body.get("model")
    if model is None:
        raise InvalidRequest("Missing required parameter: 'model'.", param="model", code="missing_required_parameter")
    if not isinstance(model, str) or not model:
        raise _fail("model", f"expected a model name string, got {model!r}.")
    if "messages" not in body:
        raise InvalidRequest("Missing required parameter: 'messages'.", param="messages", code="missing_required_parameter")
    _check_messages(body["messages"])
    for name, check in _CHECKS.items():
        if name in body and body[name] is not None:
            check(name, body[name])
    routing = body.pop("routing", None) or {}
    if not isinstance(routing, dict):
        raise _fail("routing", f"expected an object, got {type(routing).__name__}.")
    for key, value in routing.items():
        check = _ROUTING_CHECKS.get(key)
        if check is None:
            raise InvalidRequest(
                f"Unknown routing option 'routing.{key}'; known options: {', '.join(_ROUTING_CHECKS)}.",
                param=f"routing.{key}", code="unknown_parameter",
            )
        check(f"routing.{key}", value)
    stream = bool(body.get("stream"))
    opts = body.get("stream_options")
    include_usage = bool(stream and isinstance(opts, dict) and opts.get("include_usage"))
    return ChatRequest(id=new_request_id(), model=model, body=body, stream=stream, include_usage=include_usage, routing=routing)


def prompt_chars(messages: list[dict]) -> int:
    """Characters of text in the messages: the cheap input-size signal for cost prediction."""
    n = 0
    for m in messages:
        c = m.get("content")
        if isinstance(c, str):
            n += len(c)
        elif isinstance(c, list):
            for part in c:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    n += len(part["text"])
    return n
