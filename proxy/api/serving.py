"""Serving one chat request end to end: resolve, predict, call, bill, trace, measure.

This is the logic behind the route (vLLM's `serving.py` split): it returns dicts, headers and
byte iterators and never touches the ASGI layer, so it reads as the request's story.

Until the planner and strategies land, every request is one upstream call (a "single" plan):
`n` is passed to the upstream, which returns n choices from one call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import anyio
import orjson

from proxy.api.protocol import ChatRequest, prompt_chars
from proxy.budget.keys import KeyInfo
from proxy.budget.tokens import count_tokens
from proxy.config import Settings
from proxy.errors import ProxyError, UpstreamError
from proxy.routing.catalog import Catalog, ModelEntry, Resolution
from proxy.routing.estimate import CostEstimator
from proxy.telemetry.metrics import Metrics
from proxy.telemetry.traces import TraceWriter

log = logging.getLogger("proxy.serving")

#: HTTP-ish status recorded when the client went away before the answer was complete
CLIENT_CLOSED = 499


def sse(obj: dict) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


@dataclass(slots=True)
class Call:
    """Bookkeeping for one request while it runs."""

    req: ChatRequest
    key: KeyInfo
    res: Resolution
    policy: str
    task: str | None
    task_source: str | None
    predicted_p50: float
    predicted_p95: float
    t0: float
    upstream_s: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    finish_reason: str | None = None
    cancelled: bool = False
    cost: float = 0.0
    status: int = 200
    error: str | None = None
    output: list[str] = field(default_factory=list)

    @property
    def entry(self) -> ModelEntry:
        return self.res.entry


class ChatService:
    def __init__(self, settings: Settings, catalog: Catalog, estimator: CostEstimator, metrics: Metrics,
                 traces: TraceWriter) -> None:
        self.settings = settings
        self.catalog = catalog
        self.estimator = estimator
        self.metrics = metrics
        self.traces = traces

    # ---- shared steps -------------------------------------------------------------------

    def _start(self, req: ChatRequest, key: KeyInfo) -> Call:
        t0 = time.perf_counter()
        res = self.catalog.resolve(req.model)
        policy = req.routing.get("policy") or res.policy or key.default_policy or self.settings.default_policy
        task, source = req.routing.get("task"), "explicit"
        if task is None:
            task, source = key.default_task, ("key" if key.default_task else None)
        prompt_est = prompt_chars(req.body["messages"]) // 4 + 4 * len(req.body["messages"])
        p50, p95 = self.estimator.predict(
            res.entry, prompt_est, req.cap_tokens(), req.body.get("n") or 1, task, req.routing.get("difficulty")
        )
        self.metrics.inflight.inc()
        return Call(req, key, res, policy, task, source, p50, p95, t0)

    def _plan(self, c: Call) -> dict:
        return {"model": c.entry.name, "strategy": "single", "k": 1, "cutoff_tokens": None,
                "predicted_cost_p50": c.predicted_p50, "predicted_cost_p95": c.predicted_p95}

    def _reason(self, c: Call) -> str:
        if c.res.routed:
            return (f"'{c.req.model}' routes to the default model {c.entry.name!r}: the planner is not built yet, "
                    "so aliases map to the first configured model")
        return f"concrete model {c.entry.name!r} requested; single sample"

    def _sample(self, c: Call) -> dict:
        return {"model": c.entry.name, "prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
                "reasoning_tokens": c.reasoning_tokens, "finish_reason": c.finish_reason, "cut": False,
                "cancelled": c.cancelled, "answer": None, "verdict": None, "selected": c.status == 200}

    def _routing(self, c: Call) -> dict:
        return {"plan": self._plan(c), "reason": self._reason(c), "samples": [self._sample(c)]}

    def _take_usage(self, c: Call, usage: dict | None) -> None:
        if usage:
            c.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            c.completion_tokens = int(usage.get("completion_tokens") or 0)
            details = usage.get("completion_tokens_details") or {}
            c.reasoning_tokens = int(details.get("reasoning_tokens") or 0) if isinstance(details, dict) else 0
        else:  # no usage from the upstream: bill what we received, counted ourselves
            c.prompt_tokens = sum(count_tokens(m["content"]) for m in c.req.body["messages"]
                                  if isinstance(m.get("content"), str))
            c.completion_tokens = count_tokens("".join(c.output))
        price = c.entry.price
        c.cost = price.cost(c.prompt_tokens, c.completion_tokens) if price else 0.0

    def headers(self, c: Call, final: bool = True) -> dict[str, str]:
        h = {"x-pareto-request-id": c.req.id, "x-pareto-model": c.entry.name, "x-pareto-strategy": "single"}
        if final:
            h["x-pareto-cost-usd"] = f"{c.cost:.10f}"
            h["x-pareto-predicted-cost-usd"] = f"{c.predicted_p50:.10f}"
            h["x-pareto-restarts"] = "0"
        return h

    def _finish(self, c: Call) -> None:
        """Bill, measure and trace the request, whatever its outcome. Synchronous by design:
        it runs in `finally` blocks of cancelled tasks and must not await."""
        total = time.perf_counter() - c.t0
        m, model, team = self.metrics, c.entry.name, c.key.team
        m.inflight.dec()
        m.child(m.requests, c.policy, model, "single", str(c.status)).inc()
        if c.prompt_tokens:
            m.child(m.tokens, model, "prompt").inc(c.prompt_tokens)
        if c.completion_tokens:
            m.child(m.tokens, model, "completion").inc(c.completion_tokens)
            if c.cancelled:
                m.child(m.tokens, model, "wasted").inc(c.completion_tokens)
        if c.cost:
            m.child(m.cost, team, model).inc(c.cost)
        m.request_cost.observe(c.cost)
        if c.predicted_p50 > 0 and c.status == 200:
            m.prediction_ratio.observe(c.cost / c.predicted_p50)
        m.child(m.upstream_seconds, model).observe(c.upstream_s)
        m.overhead.observe(max(0.0, total - c.upstream_s))
        if c.status == 200 and not c.entry.profiled:
            self.estimator.observe(model, c.completion_tokens)
        record = {
            "id": c.req.id, "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "team": team,
            "key_id": c.key.key_id, "policy": c.policy, "task": c.task, "difficulty": c.req.routing.get("difficulty"),
            "task_source": c.task_source, "plan": self._plan(c), "samples": [self._sample(c)],
            "cost_usd": c.cost, "predicted_cost_usd": c.predicted_p50, "latency_ms": round(total * 1000, 3),
            "status": c.status, "feedback": None,
        }
        if c.error:
            record["error"] = c.error
        if self.settings.store_text:
            record["messages"] = c.req.body["messages"]
            record["output"] = "".join(c.output)
        self.traces.append(record)

    def _fail(self, c: Call, e: ProxyError) -> None:
        c.status, c.error = e.status, e.message
        kind = getattr(e, "kind", None)
        if kind:
            self.metrics.child(self.metrics.upstream_errors, c.entry.name, kind).inc()
        log.warning("upstream failed", extra={"request_id": c.req.id, "model": c.entry.name, "kind": kind,
                                               "status": e.status, "error": e.message})

    # ---- non-streaming ------------------------------------------------------------------

    async def complete(self, req: ChatRequest, key: KeyInfo) -> tuple[dict, dict[str, str]]:
        c = self._start(req, key)
        try:
            t = time.perf_counter()
            try:
                resp = await c.entry.upstream.complete(req.body, timeout_s=c.entry.timeout_s)
            finally:
                c.upstream_s = time.perf_counter() - t
            choices = resp.get("choices") or []
            if choices:
                c.finish_reason = choices[0].get("finish_reason")
            usage = resp.get("usage")
            if not usage:
                for ch in choices:
                    msg = ch.get("message") or {}
                    c.output.append((msg.get("reasoning_content") or "") + (msg.get("content") or ""))
            elif self.settings.store_text:
                c.output = [(ch.get("message") or {}).get("content") or "" for ch in choices]
            self._take_usage(c, usage)
            resp["id"] = req.id
            resp["model"] = c.entry.name
            resp["usage"] = {**(usage or {}), "prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
                             "total_tokens": c.prompt_tokens + c.completion_tokens, "cost_usd": c.cost}
            if req.explain:
                resp["routing"] = self._routing(c)
            return resp, self.headers(c)
        except ProxyError as e:
            self._fail(c, e)
            raise
        except BaseException:
            c.status, c.cancelled = CLIENT_CLOSED, True
            raise
        finally:
            self._finish(c)

    # ---- streaming ----------------------------------------------------------------------

    async def stream(self, req: ChatRequest, key: KeyInfo) -> tuple[AsyncIterator[bytes], dict[str, str]]:
        """Open the upstream stream and wait for its first chunk, so a failure before the first
        byte is still a proper HTTP error status; then relay the rest."""
        c = self._start(req, key)
        t = time.perf_counter()
        agen = c.entry.upstream.stream(req.body, timeout_s=c.entry.timeout_s)
        try:
            first = await agen.__anext__()
        except StopAsyncIteration:
            first = None
        except ProxyError as e:
            c.upstream_s = time.perf_counter() - t
            self._fail(c, e)
            self._finish(c)
            raise
        except BaseException:
            c.status, c.cancelled = CLIENT_CLOSED, True
            self._finish(c)
            raise
        return self._relay(c, t, first, agen), self.headers(c, final=False)

    async def _relay(self, c: Call, t_up: float, first: dict | None, agen: AsyncIterator[dict]) -> AsyncIterator[bytes]:
        req, name = c.req, c.entry.name
        held: list[dict] = []  # chunks with a finish_reason: sent at the end with the cost attached
        usage: dict | None = None
        completed = False
        try:
            chunk = first
            while chunk is not None:
                if chunk.get("usage"):
                    usage = chunk["usage"]
                choices = chunk.get("choices") or []
                if choices:
                    chunk["id"] = req.id
                    chunk["model"] = name
                    final = False
                    for ch in choices:
                        delta = ch.get("delta") or {}
                        text = delta.get("content")
                        if text:
                            c.output.append(text)
                        rtext = delta.get("reasoning_content")
                        if rtext:
                            c.output.append(rtext)
                        if ch.get("finish_reason"):
                            final = True
                            c.finish_reason = ch["finish_reason"]
                    if final:
                        held.append(chunk)
                    else:
                        yield sse(chunk)
                try:
                    chunk = await agen.__anext__()
                except StopAsyncIteration:
                    chunk = None
            c.upstream_s = time.perf_counter() - t_up
            self._take_usage(c, usage)
            extra = {"pareto": {"request_id": req.id, "model": name, "strategy": "single", "cost_usd": c.cost,
                                "predicted_cost_usd": c.predicted_p50, "restarts": 0}}
            if req.explain:
                extra["routing"] = self._routing(c)
            if req.include_usage:
                for h in held:
                    yield sse(h)
                u = {**(usage or {}), "prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
                     "total_tokens": c.prompt_tokens + c.completion_tokens, "cost_usd": c.cost}
                yield sse({"id": req.id, "object": "chat.completion.chunk", "created": int(time.time()), "model": name,
                           "choices": [], "usage": u, **extra})
            else:
                if held:
                    held[-1].update(extra)
                for h in held:
                    yield sse(h)
            completed = True
            yield b"data: [DONE]\n\n"
        except ProxyError as e:
            c.upstream_s = time.perf_counter() - t_up
            self._fail(c, e)
            self._take_usage(c, None if not usage else usage)
            yield sse(e.envelope())
        finally:
            if not completed and c.status == 200:  # the client went away (or we were cancelled)
                c.status, c.cancelled = CLIENT_CLOSED, True
                c.upstream_s = time.perf_counter() - t_up
                self._take_usage(c, usage)
            with anyio.CancelScope(shield=True):
                await agen.aclose()  # stop the upstream generation at once
            self._finish(c)
