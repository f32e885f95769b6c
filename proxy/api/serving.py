"""Serving one chat request end to end: resolve, predict, call, bill, trace, measure.

This is the logic behind the route (vLLM's `serving.py` split): it returns dicts, headers and
byte iterators and never touches the ASGI layer, so it reads as the request's story.

Two paths. A single-attempt plan (one sample, no restarts, no verifier) is the fast path: one
upstream call, `n` passed through, streams relayed live, with retries before the first byte,
the circuit breaker and the policy's fallback model. Every other plan (parallel samples,
consensus, restarts after cuts, sequential rounds, verifiers) runs through the `Executor`, once
per requested choice; streams then send SSE heartbeats until a sample is selected, and replay it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import anyio
import orjson

from proxy.api import outcomes
from proxy.api.protocol import ChatRequest, prompt_chars
from proxy.budget.guard import BudgetGuard
from proxy.budget.keys import KeyInfo
from proxy.budget.ledger import BudgetExceeded, Reservation
from proxy.budget.tokens import count_tokens
from proxy.budget.tokens import warm as warm_tokenizer
from proxy.config import Settings
from proxy.errors import ProxyError, UpstreamError, UpstreamRejected
from proxy.routing.catalog import ModelEntry
from proxy.routing.plan import Plan
from proxy.routing.router import Decision, Router
from proxy.strategies.breaker import CircuitBreaker
from proxy.strategies.executor import Executor, Outcome, RunContext
from proxy.strategies.sampler import RETRYABLE_KINDS, RetryPolicy, Sample
from proxy.telemetry.metrics import Metrics
from proxy.telemetry.traces import TraceWriter

log = logging.getLogger("proxy.serving")

#: HTTP-ish status recorded when the client went away before the answer was complete
CLIENT_CLOSED = 499
#: seconds between SSE comment heartbeats while a multi-attempt plan has not selected a sample
HEARTBEAT_S = 1.0
T = TypeVar("T")


def needs_executor(plan: Plan) -> bool:
    """Whether a plan needs the executor: anything beyond one sample with no restart and no verifier."""
    restarts = plan.cutoff_tokens is not None and plan.max_restarts > 0 and plan.restart != "stop"
    return plan.strategy != "single" or plan.k > 1 or restarts or bool(plan.verifier)


def sse(obj: dict) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


@dataclass(slots=True)
class Call:
    """Bookkeeping for one request while it runs."""

    req: ChatRequest
    key: KeyInfo
    decision: Decision
    plan: Plan
    entry: ModelEntry  # the model that served: the plan's, or its fallback
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
    #: failed fast-path attempts (retried or fallen back from), as trace sample records
    failed: list[dict] = field(default_factory=list)
    #: executed plans: one run per requested choice, and their outcomes once done
    runs: list[RunContext] | None = None
    outcomes: list[Outcome] | None = None
    restarts: int = 0
    #: the budget hold taken before any upstream call; settled (committed or released) exactly once
    reservation: Reservation | None = None
    settled: bool = False

    def executed_samples(self) -> list[Sample]:
        return [s for r in self.runs or () for s in r.samples]


class ChatService:
    def __init__(self, settings: Settings, router: Router, executor: Executor, breaker: CircuitBreaker,
                 retry: RetryPolicy, metrics: Metrics, traces: TraceWriter, guard: BudgetGuard) -> None:
        self.settings = settings
        self.guard = guard
        self.router = router
        self.executor = executor
        self.breaker = breaker
        self.retry = retry
        self.metrics = metrics
        self.traces = traces
        self._rng = random.Random()

    # ---- shared steps -------------------------------------------------------------------

    def _decide(self, req: ChatRequest, key: KeyInfo, budget_remaining_usd: float | None = None) -> Decision:
        messages = req.body["messages"]
        prompt_est = prompt_chars(messages) // 4 + 4 * len(messages)
        d = self.router.decide(req.model, req.routing, req.body, key.default_policy, key.default_task, prompt_est,
                               budget_remaining_usd)
        if d.plan.verifier:  # a bad verifier is the client's 400 before any upstream call
            self.executor.verifiers.validate(d.plan.verifier, param="routing.verifier")  # type: ignore[union-attr]
        return d

    def _start(self, req: ChatRequest, key: KeyInfo) -> Call:
        t0 = time.perf_counter()
        d = self._decide(req, key)
        n = req.body.get("n") or 1
        self.metrics.inflight.inc()
        return Call(req, key, d, d.plan, d.entry, (d.plan.predicted_cost_p50 or 0.0) * n,
                    (d.plan.predicted_cost_p95 or 0.0) * n, t0)

    async def _admit(self, c: Call) -> None:
        """Reserve the plan's p95 cost on the key and its team. When the preferred plan does not
        fit, the planner picks again under what is left, and only if no cheaper plan exists (or
        it does not fit either) is the request refused with `budget_exceeded`."""
        try:
            c.reservation = await self.guard.reserve(c.key, c.predicted_p95)
        except BudgetExceeded as e:
            if not c.decision.routed or e.remaining_usd <= 0:
                raise
            n = c.req.body.get("n") or 1
            d = self._decide(c.req, c.key, e.remaining_usd / n)
            p95 = (d.plan.predicted_cost_p95 or 0.0) * n
            if p95 >= c.predicted_p95:
                raise
            c.decision, c.plan, c.entry = d, d.plan.with_(reason=d.plan.reason + "; chosen to fit the remaining budget"), d.entry
            c.predicted_p50, c.predicted_p95 = (d.plan.predicted_cost_p50 or 0.0) * n, p95
            c.reservation = await self.guard.reserve(c.key, p95)
        plan = c.plan
        if plan.cutoff_tokens is not None and not needs_executor(plan):
            # the native cap: the upstream stops at the cutoff itself
            name = "max_completion_tokens" if "max_completion_tokens" in c.req.body else "max_tokens"
            cap = c.req.cap_tokens()
            c.req.body[name] = min(cap, plan.cutoff_tokens) if cap else plan.cutoff_tokens

    async def _settle(self, c: Call) -> None:
        """Commit the request's spend (durably) or release its hold, once; safe to call again."""
        if c.reservation is None or c.settled:
            return
        c.settled = True
        await self.guard.settle(c.reservation, c.key, c.cost, c.prompt_tokens + c.completion_tokens)

    async def _abandon(self, c: Call, e: BaseException) -> None:
        """End a call that failed (a `ProxyError`) or was cancelled before its response began:
        record why, bill what its samples consumed (or release the hold), measure and trace."""
        if isinstance(e, ProxyError):
            self._fail(c, e)
        else:
            c.status, c.cancelled = CLIENT_CLOSED, True
            if c.runs is not None:
                self._take_runs(c)
        with anyio.CancelScope(shield=True):
            await self._settle(c)
        self._finish(c)

    def _plan(self, c: Call) -> dict:
        return c.plan.to_dict()

    def _samples(self, c: Call) -> list[dict]:
        """One record per upstream call of the request (the trace's and `routing.samples`' form)."""
        if c.runs is not None:
            return [s.to_dict() for s in c.executed_samples()]
        return [*c.failed, {
            "model": c.entry.name, "prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
            "reasoning_tokens": c.reasoning_tokens, "finish_reason": c.finish_reason,
            "cut": c.plan.cutoff_tokens is not None and c.finish_reason == "length",
            "cancelled": c.cancelled, "answer": None, "verdict": None, "selected": c.status == 200}]

    def _routing(self, c: Call) -> dict:
        out = {"plan": self._plan(c), "reason": c.plan.reason, "policy": c.decision.policy,
               "task": c.decision.label.task, "task_source": c.decision.label.source, "samples": self._samples(c)}
        if c.decision.shadow is not None:
            out["shadow_plan"] = c.decision.shadow.to_dict()
        return out

    def _take_usage(self, c: Call, usage: dict | None) -> None:
        """Bill a fast-path call: the upstream's usage, else a count of what we received."""
        if usage:
            c.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            c.completion_tokens = int(usage.get("completion_tokens") or 0)
            details = usage.get("completion_tokens_details") or {}
            c.reasoning_tokens = int(details.get("reasoning_tokens") or 0) if isinstance(details, dict) else 0
        else:
            c.prompt_tokens = sum(count_tokens(m["content"]) for m in c.req.body["messages"]
                                  if isinstance(m.get("content"), str))
            c.completion_tokens = count_tokens("".join(c.output))
        price = c.entry.price
        c.cost = price.cost(c.prompt_tokens, c.completion_tokens) if price else 0.0

    def _take_runs(self, c: Call) -> None:
        """Bill an executed plan: every sample of every run, cut and cancelled ones included."""
        samples = c.executed_samples()
        c.prompt_tokens = sum(s.prompt_tokens for s in samples)
        c.completion_tokens = sum(s.completion_tokens for s in samples)
        c.reasoning_tokens = sum(s.reasoning_tokens for s in samples)
        c.cost = sum(s.cost_usd for s in samples)
        c.restarts = sum(1 for s in samples if s.role in ("restart", "escalate", "force_answer"))

    def headers(self, c: Call, final: bool = True) -> dict[str, str]:
        h = {"x-pareto-request-id": c.req.id, "x-pareto-strategy": c.plan.label()}
        one_model = not needs_executor(c.plan) or not (c.plan.fallback_model or c.plan.restart == "escalate")
        if final or one_model:
            h["x-pareto-model"] = c.entry.name  # before the first byte only when one model can answer
        if final:
            h["x-pareto-cost-usd"] = f"{c.cost:.10f}"
            h["x-pareto-predicted-cost-usd"] = f"{c.predicted_p50:.10f}"
            h["x-pareto-restarts"] = str(c.restarts)
        return h

    def _extra(self, c: Call) -> dict:
        """What the final chunk of a stream carries: the `x-pareto-*` facts known only at the end."""
        extra: dict = {"pareto": {"request_id": c.req.id, "model": c.entry.name, "strategy": c.plan.label(),
                                  "cost_usd": c.cost, "predicted_cost_usd": c.predicted_p50, "restarts": c.restarts}}
        if c.req.explain:
            extra["routing"] = self._routing(c)
        return extra

    def _usage_body(self, c: Call, usage: dict | None = None) -> dict:
        return {**(usage or {}), "prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens,
                "total_tokens": c.prompt_tokens + c.completion_tokens, "cost_usd": c.cost}

    def _measure_sample(self, task: str, verifier: str | None, s: Sample) -> None:
        m = self.metrics
        if s.prompt_tokens:
            m.child(m.tokens, s.model, "prompt").inc(s.prompt_tokens)
        if s.completion_tokens:
            m.child(m.tokens, s.model, "completion").inc(s.completion_tokens)
        if s.wasted_tokens:
            m.child(m.tokens, s.model, "wasted").inc(s.wasted_tokens)
        if s.cut and not s.forced:
            m.child(m.cutoffs, s.model, task).inc()
        if s.role in ("restart", "escalate", "force_answer"):
            m.child(m.restarts, s.model, task).inc()
        if s.verdict is not None:
            m.child(m.verifications, verifier or "unknown", "pass" if s.verdict.passed else "fail").inc()
        if s.error_kind:
            m.child(m.upstream_errors, s.model, s.error_kind).inc()
        m.child(m.upstream_seconds, s.model).observe(s.latency_s)

    def _finish(self, c: Call) -> None:
        """Bill, measure and trace the request, whatever its outcome. Synchronous by design:
        it runs in `finally` blocks of cancelled tasks and must not await."""
        total = time.perf_counter() - c.t0
        m, team = self.metrics, c.key.team
        task = c.decision.label.task or "chat"
        m.inflight.dec()
        m.child(m.requests, c.decision.policy, c.entry.name, c.plan.label(), str(c.status)).inc()
        if c.runs is not None:
            verifier = (c.plan.verifier or {}).get("name")
            for s in c.executed_samples():
                self._measure_sample(task, verifier, s)
                if s.cost_usd:
                    m.child(m.cost, team, s.model).inc(s.cost_usd)
        else:
            model = c.entry.name
            if c.prompt_tokens:
                m.child(m.tokens, model, "prompt").inc(c.prompt_tokens)
            if c.completion_tokens:
                m.child(m.tokens, model, "completion").inc(c.completion_tokens)
                if c.cancelled:
                    m.child(m.tokens, model, "wasted").inc(c.completion_tokens)
            if c.plan.cutoff_tokens is not None and c.finish_reason == "length":
                m.child(m.cutoffs, model, task).inc()
            if c.cost:
                m.child(m.cost, team, model).inc(c.cost)
            m.child(m.upstream_seconds, model).observe(c.upstream_s)
        m.child(m.request_cost, team, c.entry.name).observe(c.cost)
        if c.predicted_p50 > 0 and c.status == 200:
            m.child(m.prediction_ratio, team, c.entry.name).observe(c.cost / c.predicted_p50)
            m.child(m.predicted_cost, team, c.entry.name).inc(c.predicted_p50)
        m.overhead.observe(max(0.0, total - c.upstream_s))
        if c.status == 200 and not c.entry.profiled and c.runs is None:
            self.router.estimator.observe(c.entry.name, c.completion_tokens)
        label = c.decision.label
        record = {
            "id": c.req.id, "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "team": team,
            "key_id": c.key.key_id, "policy": c.decision.policy, "task": label.task, "difficulty": label.difficulty,
            "task_source": label.source, "plan": self._plan(c), "samples": self._samples(c),
            "cost_usd": c.cost, "predicted_cost_usd": c.predicted_p50,
            "reserved_usd": c.reservation.amount_usd if c.reservation else None, "latency_ms": round(total * 1000, 3),
            "restarts": c.restarts, "status": c.status, "feedback": None,
        }
        if c.decision.shadow is not None:
            record["shadow_plan"] = c.decision.shadow.to_dict()
        if c.error:
            record["error"] = c.error
        if self.settings.store_text:
            record["messages"] = c.req.body["messages"]
            record["output"] = ("".join(s.text for s in c.executed_samples() if s.selected) if c.runs is not None
                                else "".join(c.output))
        self.traces.append(record)

    def _fail(self, c: Call, e: ProxyError) -> None:
        c.status, c.error = e.status, e.message
        log.warning("request failed", extra={"request_id": c.req.id, "model": c.entry.name,
                                             "kind": getattr(e, "kind", None), "status": e.status, "error": e.message})

    def finish(self, c: Call) -> None:
        """Measure and trace a call whose response has been sent (or could not be)."""
        self._finish(c)

    # ---- the fast path: retries, breaker, fallback ----------------------------------------

    async def _attempt(self, c: Call, call: Callable[[ModelEntry], Awaitable[T]]) -> T:
        """Run `call` on the plan's model, retrying retryable failures with backoff, then once on
        the plan's fallback model; every failed attempt is recorded for billing and the trace."""
        entries = [c.entry]
        fallback = self.router.catalog.get(c.plan.fallback_model) if c.plan.fallback_model else None
        if fallback is not None and fallback is not c.entry:
            entries.append(fallback)
        last: ProxyError | None = None
        for entry in entries:
            for attempt in range(1, self.retry.attempts + 1):
                if not self.breaker.allow(entry.name):
                    # the request's own last failure says more than the breaker it tripped
                    last = last or UpstreamError(
                        f"upstream {entry.name!r} is failing: its circuit breaker is open for "
                        f"{self.breaker.retry_after(entry.name):.0f} s more", kind="circuit_open")
                    break
                t = time.perf_counter()
                try:
                    result = await call(entry)
                except UpstreamRejected:
                    self.breaker.release(entry.name)
                    raise
                except UpstreamError as e:
                    self.breaker.record_failure(entry.name)
                    self.metrics.child(self.metrics.upstream_errors, entry.name, e.kind).inc()
                    self.metrics.child(self.metrics.upstream_seconds, entry.name).observe(time.perf_counter() - t)
                    c.failed.append({"model": entry.name, "prompt_tokens": 0, "completion_tokens": 0,
                                     "finish_reason": None, "cut": False, "cancelled": False, "answer": None,
                                     "verdict": None, "selected": False, "error": e.kind})
                    last = e
                    if e.kind not in RETRYABLE_KINDS or attempt == self.retry.attempts:
                        break
                    await asyncio.sleep(self.retry.delay(attempt, self._rng))
                    continue
                except BaseException:
                    self.breaker.release(entry.name)
                    raise
                self.breaker.record_success(entry.name)
                c.entry = entry
                return result
        assert last is not None
        raise last

    # ---- non-streaming ------------------------------------------------------------------

    async def complete(self, req: ChatRequest, key: KeyInfo) -> tuple[dict, dict[str, str], Call]:
        """Answer a non-streaming request. On success the caller passes the returned `Call` to
        `finish()` once the response is sent, so metrics and the trace cost the client no latency;
        on failure the call is finished here."""
        c = self._start(req, key)
        try:
            await self._admit(c)
            resp = await (self._complete_executed(c) if needs_executor(c.plan) else self._complete_fast(c))
            if req.explain:
                resp["routing"] = self._routing(c)
            await self._settle(c)  # durable before the response is sent
            return resp, self.headers(c), c
        except BaseException as e:
            await self._abandon(c, e)
            raise

    async def _complete_fast(self, c: Call) -> dict:
        req = c.req
        t = time.perf_counter()
        try:
            resp = await self._attempt(c, lambda e: e.upstream.complete(req.body, timeout_s=e.timeout_s))
        finally:
            c.upstream_s = time.perf_counter() - t
        choices = resp.get("choices") or []
        if choices:
            c.finish_reason = choices[0].get("finish_reason")
        usage = resp.get("usage")
        if not usage:
            await warm_tokenizer()  # counting ourselves: load the tokenizer off the loop first
            for ch in choices:
                msg = ch.get("message") or {}
                c.output.append((msg.get("reasoning_content") or "") + (msg.get("content") or ""))
        elif self.settings.store_text:
            c.output = [(ch.get("message") or {}).get("content") or "" for ch in choices]
        self._take_usage(c, usage)
        resp["id"] = req.id
        resp["model"] = c.entry.name
        resp["usage"] = self._usage_body(c, usage)
        return resp

    def _launch(self, c: Call) -> Awaitable[list[Outcome]]:
        """Start one executor run per requested choice (`n`); each run is the whole plan."""
        n = c.req.body.get("n") or 1
        seed = c.req.body.get("seed")
        c.runs = [RunContext(request_id=c.req.id, task=c.decision.label.task,
                             seed=None if seed is None else seed + 1000 * i) for i in range(n)]
        return asyncio.gather(*(self.executor.run(c.plan, c.req.body, ctx) for ctx in c.runs))

    def _selected(self, c: Call, results: list[Outcome]) -> list[Sample]:
        c.outcomes = results
        self._take_runs(c)
        failed = next((o for o in results if o.selected is None), None)
        if failed is not None:
            raise failed.error or UpstreamError("no sample of the plan produced an answer", kind="no_answer")
        selected = [o.selected for o in results]  # type: ignore[misc]
        served = self.router.catalog.get(selected[0].model)
        if served is not None:
            c.entry = served
        c.finish_reason = outcomes.finish_reason(selected[0])
        return selected  # type: ignore[return-value]

    async def _complete_executed(self, c: Call) -> dict:
        t = time.perf_counter()
        try:
            results = await self._launch(c)
        finally:
            c.upstream_s = time.perf_counter() - t
        selected = self._selected(c, results)
        return outcomes.completion_body(c.req.id, selected, outcomes.usage(results, c.cost))

    # ---- streaming ----------------------------------------------------------------------

    async def stream(self, req: ChatRequest, key: KeyInfo) -> tuple[AsyncIterator[bytes], dict[str, str]]:
        """Single-attempt plans: open the upstream stream and wait for its first chunk (retrying
        before it), so a failure before the first byte is still a proper HTTP error status; then
        relay the rest live. Other plans: heartbeats until a sample is selected, then replay it."""
        c = self._start(req, key)

        async def open_stream(entry: ModelEntry) -> tuple[AsyncIterator[dict], dict | None]:
            agen = entry.upstream.stream(req.body, timeout_s=entry.timeout_s)
            try:
                return agen, await agen.__anext__()
            except StopAsyncIteration:
                return agen, None
            except BaseException:
                await agen.aclose()  # type: ignore[attr-defined]
                raise

        t = time.perf_counter()
        try:
            await self._admit(c)
            if needs_executor(c.plan):
                return self._stream_executed(c), self.headers(c, final=False)
            t = time.perf_counter()
            agen, first = await self._attempt(c, open_stream)
        except BaseException as e:
            if isinstance(e, ProxyError):
                c.upstream_s = time.perf_counter() - t
            await self._abandon(c, e)
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
            if not usage:
                await warm_tokenizer()
            self._take_usage(c, usage)
            async for piece in self._ending(c, held, usage):
                yield piece
            completed = True
        except ProxyError as e:
            c.upstream_s = time.perf_counter() - t_up
            self._fail(c, e)
            self._take_usage(c, usage)
            await self._settle(c)
            yield sse(e.envelope())
        finally:
            if not completed and c.status == 200:  # the client went away (or we were cancelled)
                c.status, c.cancelled = CLIENT_CLOSED, True
                c.upstream_s = time.perf_counter() - t_up
                self._take_usage(c, usage)
            with anyio.CancelScope(shield=True):
                await agen.aclose()  # type: ignore[attr-defined]  # stop the upstream generation at once
                await self._settle(c)
            self._finish(c)

    async def _ending(self, c: Call, held: list[dict], usage: dict | None) -> AsyncIterator[bytes]:
        """The end of a stream: the held final chunks, the usage chunk (if asked), `[DONE]`; the
        cost and routing facts ride on the last chunk the client gets."""
        extra = self._extra(c)
        await self._settle(c)  # the spend is durable before the client sees the end of the stream
        if c.req.include_usage:
            for h in held:
                yield sse(h)
            yield sse({"id": c.req.id, "object": "chat.completion.chunk", "created": int(time.time()),
                       "model": c.entry.name, "choices": [], "usage": self._usage_body(c, usage), **extra})
        else:
            if held:
                held[-1].update(extra)
            for h in held:
                yield sse(h)
        yield b"data: [DONE]\n\n"

    async def _stream_executed(self, c: Call) -> AsyncIterator[bytes]:
        t = time.perf_counter()
        task = asyncio.ensure_future(self._launch(c))
        completed = False
        try:
            yield b": keep-alive\n\n"
            while True:
                done, _ = await asyncio.wait({task}, timeout=HEARTBEAT_S)
                if done:
                    break
                yield b": keep-alive\n\n"
            c.upstream_s = time.perf_counter() - t
            selected = self._selected(c, task.result())
            chunks = list(outcomes.stream_chunks(c.req.id, selected, c.req.include_usage))
            held = [ch for ch in chunks if ch["choices"][0]["finish_reason"]]
            for ch in chunks:
                if not ch["choices"][0]["finish_reason"]:
                    yield sse(ch)
            async for piece in self._ending(c, held, None):
                yield piece
            completed = True
        except ProxyError as e:
            c.upstream_s = time.perf_counter() - t
            self._fail(c, e)
            self._take_runs(c)
            await self._settle(c)
            yield sse(e.envelope())
        finally:
            if not task.done():
                task.cancel()
            with anyio.CancelScope(shield=True):
                await asyncio.gather(task, return_exceptions=True)  # every upstream call closed
                if not completed and c.status == 200:
                    c.status, c.cancelled = CLIENT_CLOSED, True
                self._take_runs(c)
                await self._settle(c)
            self._finish(c)
