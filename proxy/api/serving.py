"""Serving one chat request end to end: resolve, predict, call, bill, trace, measure.

This is the logic behind the route (vLLM's `serving.py` split): it returns dicts, headers and
byte iterators and never touches the ASGI layer, so it reads as the request's story.

Until the strategies land, every request is one upstream call (a "single" plan, possibly capped
at a cutoff): `n` is passed to the upstream, which returns n choices from one call.
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
from proxy.errors import InvalidRequest, ProxyError
from proxy.routing.catalog import ModelEntry
from proxy.routing.plan import Plan
from proxy.routing.router import Decision, Router
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
    decision: Decision
    plan: Plan
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
        return self.decision.entry


class ChatService:
    def __init__(self, settings: Settings, router: Router, metrics: Metrics, traces: TraceWriter) -> None:
        self.settings = settings
        self.router = router
        self.metrics = metrics
        self.traces = traces

    # ---- shared steps -------------------------------------------------------------------

    def _start(self, req: ChatRequest, key: KeyInfo) -> Call:
        t0 = time.perf_counter()
        messages = req.body["messages"]
        prompt_est = prompt_chars(messages) // 4 + 4 * len(messages)
        d = self.router.decide(req.model, req.routing, req.body, key.default_policy, key.default_task, prompt_est)
        plan = d.plan
        if plan.strategy != "single":
            raise InvalidRequest(
                f"Strategy {plan.label()!r} cannot be executed by this version of the proxy yet: only single-sample "
                "plans run (the planner is limited to them for 'auto').", param="routing.strategy",
                code="unsupported_strategy")
        if plan.cutoff_tokens is not None:  # the native cap: the upstream stops at the cutoff itself
            name = "max_completion_tokens" if "max_completion_tokens" in req.body else "max_tokens"
            cap = req.cap_tokens()
            req.body[name] = min(cap, plan.cutoff_tokens) if cap else plan.cutoff_tokens
        n = req.body.get("n") or 1
        self.metrics.inflight.inc()
        return Call(req, key, d, plan, (plan.predicted_cost_p50 or 0.0) * n, (plan.predicted_cost_p95 or 0.0) * n, t0)

    def _plan(self, c: Call) -> dict:
        return c.plan.to_dict()

    def _sample(self, c: Call) -> dict:
        return {"model": c.entry.name, "prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
                "reasoning_tokens": c.reasoning_tokens, "finish_reason": c.finish_reason,
                "cut": c.plan.cutoff_tokens is not None and c.finish_reason == "length",
                "cancelled": c.cancelled, "answer": None, "verdict": None, "selected": c.status == 200}

    def _routing(self, c: Call) -> dict:
        out = {"plan": self._plan(c), "reason": c.plan.reason, "policy": c.decision.policy,
               "task": c.decision.label.task, "task_source": c.decision.label.source, "samples": [self._sample(c)]}
        if c.decision.shadow is not None:
            out["shadow_plan"] = c.decision.shadow.to_dict()
        return out

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
        h = {"x-pareto-request-id": c.req.id, "x-pareto-model": c.entry.name, "x-pareto-strategy": c.plan.label()}
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
        m.child(m.requests, c.decision.policy, model, c.plan.label(), str(c.status)).inc()
        if c.prompt_tokens:
            m.child(m.tokens, model, "prompt").inc(c.prompt_tokens)
        if c.completion_tokens:
            m.child(m.tokens, model, "completion").inc(c.completion_tokens)
            if c.cancelled:
                m.child(m.tokens, model, "wasted").inc(c.completion_tokens)
        if c.plan.cutoff_tokens is not None and c.finish_reason == "length":
            m.child(m.cutoffs, model, c.decision.label.task or "chat").inc()
        if c.cost:
            m.child(m.cost, team, model).inc(c.cost)
        m.request_cost.observe(c.cost)
        if c.predicted_p50 > 0 and c.status == 200:
            m.prediction_ratio.observe(c.cost / c.predicted_p50)
        m.child(m.upstream_seconds, model).observe(c.upstream_s)
        m.overhead.observe(max(0.0, total - c.upstream_s))
        if c.status == 200 and not c.entry.profiled:
            self.router.estimator.observe(model, c.completion_tokens)
        label = c.decision.label
        record = {
            "id": c.req.id, "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "team": team,
            "key_id": c.key.key_id, "policy": c.decision.policy, "task": label.task, "difficulty": label.difficulty,
            "task_source": label.source, "plan": self._plan(c), "samples": [self._sample(c)],
            "cost_usd": c.cost, "predicted_cost_usd": c.predicted_p50, "latency_ms": round(total * 1000, 3),
            "status": c.status, "feedback": None,
        }
        if c.decision.shadow is not None:
            record["shadow_plan"] = c.decision.shadow.to_dict()
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

    async def complete(self, req: ChatRequest, key: KeyInfo) -> tuple[dict, dict[str, str], Call]:
        """Answer a non-streaming request. On success the caller passes the returned `Call` to
        `finish()` once the response is sent, so metrics and the trace cost the client no latency;
        on failure the call is finished here."""
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
            return resp, self.headers(c), c
        except ProxyError as e:
            self._fail(c, e)
            self._finish(c)
            raise
        except BaseException:
            c.status, c.cancelled = CLIENT_CLOSED, True
            self._finish(c)
            raise

    def finish(self, c: Call) -> None:
        """Measure and trace a call whose response has been sent (or could not be)."""
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
            extra = {"pareto": {"request_id": req.id, "model": name, "strategy": c.plan.label(), "cost_usd": c.cost,
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
            self._take_usage(c, usage)
            yield sse(e.envelope())
        finally:
            if not completed and c.status == 200:  # the client went away (or we were cancelled)
                c.status, c.cancelled = CLIENT_CLOSED, True
                c.upstream_s = time.perf_counter() - t_up
                self._take_usage(c, usage)
            with anyio.CancelScope(shield=True):
                await agen.aclose()  # stop the upstream generation at once
            self._finish(c)
