"""Executing a `Plan`: samples, aggregation, cutoffs and restarts, fallbacks, honest bills.

One `Executor` per app; `run(plan, body, ctx)` per request (or per choice of a request with
`n`: each of the client's n outcomes is one run, the plan's `k` is the strategy's own count).
Strategies, as `Plan`'s docstring defines them:

- single: one sample slot.
- parallel: `k` concurrent slots, combined by the aggregator: `majority` (vote over answers),
  `best_of_n` (verifier score; majority without a verifier), `first_finish` (the first normal
  finish wins, the rest are cancelled at once), `short_m` (stop when `m` finished, majority
  among them, cancel the rest), `consensus` (start `k`, then one more at a time until the
  leader is `margin` votes ahead or `k_max` slots exist; in-flight ones are cancelled as soon as
  the margin is reached).
- sequential: a sample, then up to `rounds` revisions with feedback (the verifier's, or a
  critique from `critic_model`, else from the model itself), stopping when the verifier passes.

Verdicts drive every strategy when the plan has a verifier: each finished sample of a single
or parallel plan is checked as soon as it ends (concurrently with the samples still running);
a failed check is a reason to restart the slot, like a cut (`same` and `force_answer` draw a new
sample, `escalate` moves to the fallback model, `stop` keeps it; `max_restarts` counts both);
`first_finish` takes the first sample that *passes*, `best_of_n` stops as soon as one passes with
a perfect score and otherwise takes the best score, and the voting aggregators vote among the
passing samples when there are any. A verifier that could not decide (it broke, its judge was
down) gives no verdict, which never triggers a restart.

A slot is one sample plus its restarts: after a cut, `same` draws a new sample with a new seed,
`escalate` moves to `fallback_model`, `force_answer` sends the partial reasoning back with an
instruction to answer now under a small cap, `stop` keeps what there is; at most
`max_restarts` times per slot. If every slot failed with an upstream error, one sample of
`fallback_model` is tried before giving up.

Billing: every upstream call is a `Sample` in `Outcome.samples` (and in `ctx.samples` as it
starts, so a caller whose run was cancelled can still bill it), and `cost_usd` is their sum.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from proxy.errors import ModelNotFound, ProxyError, UpstreamRejected
from proxy.routing.catalog import ModelEntry
from proxy.routing.plan import Plan
from proxy.strategies import aggregate
from proxy.strategies.answers import extract_answer
from proxy.strategies.breaker import CircuitBreaker
from proxy.strategies.sampler import OnChunk, OnSample, RetryPolicy, Sample, Sampler
from proxy.verifiers.base import Verdict, Verifier, VerifierUnavailable
from proxy.verifiers.registry import VerifierRegistry

__all__ = ["Executor", "Outcome", "RunContext"]

log = logging.getLogger("proxy.strategies")

FORCE_ANSWER_PROMPT = (
    "You have run out of thinking budget. Stop reasoning now and give your final answer "
    "immediately, in the format the question asked for."
)
CRITIC_PROMPT = (
    "Review the following answer to the question. Point out any mistake precisely and say how to "
    "fix it. End with a line 'VERDICT: PASS' if the answer is correct, or 'VERDICT: FAIL' if it "
    "is not.\n\nQuestion:\n{question}\n\nAnswer:\n{answer}"
)
REVISE_PROMPT = (
    "Feedback on your previous answer:\n{feedback}\n\nRevise your answer accordingly and state "
    "the final answer in the format the question asked for."
)
_CRITIC_PASS = re.compile(r"VERDICT:\s*PASS\b", re.I)
_DEFAULT_MARGIN = 2
_DEFAULT_ROUNDS = 1


@dataclass(slots=True)
class RunContext:
    """What one run needs beyond the plan and the body.

    `verifier`: built by the caller (from `routing.verifier` or the policy); when None the
    plan's own `verifier` config is built with the executor's registry. `on_sample` sees every
    upstream call when it ends (metrics); `on_chunk` sees every upstream chunk as it arrives
    (live streaming of single-attempt plans; it may be async, and a slow client then slows the
    upstream read, which is the backpressure wanted). `seed`: the base seed; call i sends
    seed + i, so samples differ and a seeded request replays. `samples` fills as calls start.
    """

    request_id: str = ""
    task: str | None = None
    verifier: Verifier | None = None
    on_sample: OnSample | None = None
    on_chunk: OnChunk | None = None
    seed: int | None = None
    samples: list[Sample] = field(default_factory=list)

    def cost_usd(self) -> float:
        """The bill so far: what a cancelled run still owes."""
        return sum(s.cost_usd for s in self.samples)


@dataclass(slots=True)
class Outcome:
    """The result of a run. `selected` is None only when nothing usable came back; `error` then
    says why (an `UpstreamError`/`UpstreamTimeout` for 502/504, `UpstreamRejected` for 400)."""

    selected: Sample | None
    samples: list[Sample]
    cost_usd: float
    restarts: int
    latency_s: float
    error: ProxyError | None = None
    #: True when the whole-plan fallback model produced the selected sample
    fell_back: bool = False

    @property
    def prompt_tokens(self) -> int:
        return sum(s.prompt_tokens for s in self.samples)

    @property
    def completion_tokens(self) -> int:
        return sum(s.completion_tokens for s in self.samples)

    @property
    def wasted_tokens(self) -> int:
        return sum(s.wasted_tokens for s in self.samples)

    @property
    def cuts(self) -> int:
        return sum(1 for s in self.samples if s.cut and not s.forced)


class Executor:
    """Runs plans against configured models. Holds no per-request state."""

    def __init__(self, entries: Mapping[str, ModelEntry], breaker: CircuitBreaker | None = None,
                 verifiers: VerifierRegistry | None = None, *, retry: RetryPolicy | None = None,
                 native_cutoffs: bool = True, force_answer_tokens: int = 256,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.entries = entries
        self.verifiers = verifiers
        self.force_answer_tokens = force_answer_tokens
        self.clock = clock
        self.sampler = Sampler(breaker, retry, native_cutoffs=native_cutoffs, sleep=sleep, clock=clock)

    def entry(self, name: str) -> ModelEntry:
        e = self.entries.get(name)
        if e is None:
            raise ModelNotFound(f"the plan names model {name!r}, which is not configured", param="model")
        return e

    async def run(self, plan: Plan, body: dict, ctx: RunContext | None = None) -> Outcome:
        """Execute `plan` for `body` (an OpenAI chat body; `routing`, `n`, `stream` are ignored).

        Cancelling the run cancels every upstream call at once; `ctx.samples` then holds what
        was consumed.
        """
        ctx = ctx if ctx is not None else RunContext()
        start = self.clock()
        self.entry(plan.model)
        verifier = ctx.verifier
        if verifier is None and plan.verifier and self.verifiers is not None:
            verifier = self.verifiers.build(plan.verifier, param="routing.verifier")
        run = _Run(self, plan, body, ctx, verifier)
        selected, finals = await run.execute()
        fell_back = False
        if _all_failed(finals) and plan.fallback_model and plan.fallback_model != plan.model \
                and plan.fallback_model in self.entries:
            rescue = await run.call(self.entry(plan.fallback_model), body, cutoff=None, role="fallback", slot=0)
            finals.append(rescue)
            if rescue.error is None and not rescue.cancelled:
                selected, fell_back = rescue, True
        if selected is not None and (selected.error is not None or selected.cancelled):
            selected = None
        if selected is not None:
            selected.selected = True
            if verifier is not None and selected.verdict is None and selected.finished:
                await run.verify(selected)
        error = None
        if selected is None:
            error = next((s.exception for s in reversed(finals) if s.exception is not None), None)
        return Outcome(selected, list(ctx.samples), ctx.cost_usd(), run.restarts, self.clock() - start,
                       error, fell_back)


def _all_failed(finals: list[Sample]) -> bool:
    """Every slot ended in an upstream failure (the client's own bad request does not count)."""
    return bool(finals) and all(s.error is not None and not isinstance(s.exception, UpstreamRejected)
                                for s in finals)


class _Run:
    """The state of one run: its log, its seed counter, its restart count."""

    def __init__(self, ex: Executor, plan: Plan, body: dict, ctx: RunContext, verifier: Verifier | None) -> None:
        self.ex, self.plan, self.body, self.ctx, self.verifier = ex, plan, body, ctx, verifier
        self.restarts = 0
        self.calls = 0
        self._verified: dict[int, asyncio.Future[Verdict | None]] = {}
        base = ctx.seed if ctx.seed is not None else body.get("seed")
        self.base_seed = base if isinstance(base, int) and not isinstance(base, bool) else None

    # -- calls ---------------------------------------------------------------------------------

    async def call(self, entry: ModelEntry, body: dict, *, cutoff: int | None, role: str, slot: int) -> Sample:
        """One sample with a fresh seed (call i of the run sends base + i)."""
        if self.base_seed is not None:
            body = {**body, "seed": self.base_seed + self.calls}
        self.calls += 1
        return await self.ex.sampler.run(entry, body, cutoff_tokens=cutoff, log=self.ctx.samples,
                                         on_sample=self.ctx.on_sample, on_chunk=self.ctx.on_chunk,
                                         role=role, slot=slot)

    async def slot(self, slot: int, body: dict | None = None, role: str = "sample", check: bool = True) -> Sample:
        """One sample slot: a sample, then the plan's restart rule after each cut and, with
        `check` and a verifier, after each finished sample whose verdict is a fail."""
        plan, body = self.plan, body if body is not None else self.body
        entry, cutoff = self.ex.entry(plan.model), plan.cutoff_tokens
        s = await self.call(entry, body, cutoff=cutoff, role=role, slot=slot)
        used = 0
        while s.error is None and not s.cancelled:
            failed_check = False
            if not s.cut:
                if not (check and self.verifier is not None and s.finished):
                    break
                verdict = await self.verify(s)
                if verdict is None or verdict.passed:
                    break
                failed_check = True
            if used >= plan.max_restarts or plan.restart == "stop":
                break
            if plan.restart == "escalate":
                if not plan.fallback_model or plan.fallback_model not in self.ex.entries:
                    break  # nowhere to escalate to: keep what there is
                # the cutoff was learned for the plan's model, not for the one escalated to
                entry, cutoff = self.ex.entry(plan.fallback_model), None
            used += 1
            self.restarts += 1
            if plan.restart == "force_answer" and not failed_check:
                forced = await self.force_answer(entry, body, s, slot)
                if check and self.verifier is not None and forced.finished:
                    await self.verify(forced)
                return forced
            s = await self.call(entry, body, cutoff=cutoff, role="escalate" if plan.restart == "escalate" else "restart",
                                slot=slot)
        return s

    async def force_answer(self, entry: ModelEntry, body: dict, cut: Sample, slot: int) -> Sample:
        """Send the partial reasoning back and ask for the answer now, under a small cap."""
        partial = "\n".join(p for p in (cut.reasoning_text.strip(), cut.text.strip()) if p) or "(no output yet)"
        messages = [*body.get("messages", []), {"role": "assistant", "content": partial},
                    {"role": "user", "content": FORCE_ANSWER_PROMPT}]
        key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
        caps = [c for c in (body.get("max_completion_tokens"), body.get("max_tokens")) if isinstance(c, int)]
        forced_body = {k: v for k, v in body.items() if k not in ("max_tokens", "max_completion_tokens")}
        forced_body["messages"] = messages
        forced_body[key] = min([self.ex.force_answer_tokens, *caps])
        s = await self.call(entry, forced_body, cutoff=None, role="force_answer", slot=slot)
        if s.error is None and not s.cancelled:
            # the client's reply comes from a cut generation: say so, whatever this call's ending
            s.forced, s.cut, s.finish_reason = True, True, "length"
            s.answer = extract_answer(s.text)
        return s

    async def verify(self, s: Sample) -> Verdict | None:
        """The verifier's verdict on `s` (stored on it); None without a verifier or if it could
        not decide. Each sample is checked once, however many strategies ask."""
        if self.verifier is None:
            return None
        pending = self._verified.get(id(s))
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[Verdict | None] = asyncio.get_running_loop().create_future()
        self._verified[id(s)] = fut
        context = {"task": self.ctx.task, "request_id": self.ctx.request_id,
                   "messages": self.body.get("messages"), "model": s.model,
                   "response_format": self.body.get("response_format"), "call_model": self._caller(s.slot)}
        try:
            s.verdict = await self.verifier.verify(s.text, context)
        except VerifierUnavailable as e:
            log.warning("verifier %s gave no verdict on request %s: %s", self.verifier.name, self.ctx.request_id, e)
            s.verdict = None
        except asyncio.CancelledError:
            fut.cancel()
            self._verified.pop(id(s), None)
            raise
        except Exception:
            log.exception("verifier %s failed on request %s", getattr(self.verifier, "name", "?"), self.ctx.request_id)
            s.verdict = None
        fut.set_result(s.verdict)
        return s.verdict

    def _caller(self, slot: int):
        """The `call_model` of a verify context: a configured model, called as a billed sample
        of this run (judges). The request's tools and response format are not the judge's."""

        async def call_model(model: str, messages: list[dict], *, role: str = "judge",
                             max_tokens: int | None = None) -> str | None:
            entry = self.ex.entries.get(model)
            if entry is None:
                return None
            body = {k: v for k, v in self.body.items()
                    if k not in ("messages", "tools", "tool_choice", "response_format", "max_tokens",
                                 "max_completion_tokens", "functions", "function_call", "parallel_tool_calls")}
            body["messages"] = messages
            if max_tokens is not None:
                body["max_tokens"] = max_tokens
            j = await self.call(entry, body, cutoff=None, role=role, slot=slot)
            if j.error is not None or j.cancelled or not j.text.strip():
                return None
            return j.text

        return call_model

    # -- strategies ----------------------------------------------------------------------------

    async def execute(self) -> tuple[Sample | None, list[Sample]]:
        """(selected, the final sample of every slot that ended by itself)."""
        plan = self.plan
        if plan.strategy == "sequential":
            return await self.sequential()
        if plan.strategy == "parallel":
            return await self.parallel(plan.aggregator or "majority")
        s = await self.slot(0)
        return (s if s.error is None else None), [s]

    async def parallel(self, agg: str) -> tuple[Sample | None, list[Sample]]:
        plan = self.plan
        k = max(1, plan.k)
        k_max = max(k, plan.k_max or k) if agg == "consensus" else k
        m = min(k, plan.m or (k + 1) // 2)
        tasks: dict[asyncio.Task[Sample], int] = {}
        finals: list[Sample] = []
        started = 0

        def start() -> None:
            nonlocal started
            tasks[asyncio.create_task(self.slot(started))] = started
            started += 1

        for _ in range(k):
            start()
        try:
            while tasks:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for t in done:
                    del tasks[t]
                finals.extend(sorted((t.result() for t in done), key=lambda s: s.finished_at or 0.0))
                if await self._enough(agg, finals, m):
                    break
                if agg == "consensus" and not tasks and started < k_max:
                    start()
        finally:
            await _cancel(tasks)
        return await self._select(agg, finals, m), finals

    async def _enough(self, agg: str, finals: list[Sample], m: int) -> bool:
        """May the rest be cancelled now? (Slots have checked their samples when they end.)"""
        if self.verifier is not None and agg == "first_finish":
            return any(_passed(s) for s in finals)
        if self.verifier is not None and agg == "best_of_n":
            return any(_passed(s) and s.verdict is not None and s.verdict.score >= 1.0 for s in finals)
        if agg == "first_finish":
            return any(s.finished for s in finals)
        if agg == "short_m":
            return sum(1 for s in finals if s.finished) >= m
        if agg == "consensus":
            margin = self.plan.margin or _DEFAULT_MARGIN
            return aggregate.lead_margin(await aggregate.groups(finals)) >= margin
        return False

    async def _select(self, agg: str, finals: list[Sample], m: int) -> Sample | None:
        finished = [s for s in finals if s.finished]
        passing = [s for s in finished if _passed(s)]
        if agg == "best_of_n" and self.verifier is not None:
            chosen = await aggregate.best_of_n(finished, self.verify)
        elif agg == "first_finish":
            chosen = (passing or finished or [None])[0]
        elif agg == "short_m":
            chosen = await aggregate.majority(passing or finished[:m])
        else:
            chosen = await aggregate.majority(passing or finished)
        return chosen or aggregate.best_so_far(finals)

    async def sequential(self) -> tuple[Sample | None, list[Sample]]:
        plan = self.plan
        rounds = plan.rounds if plan.rounds is not None else _DEFAULT_ROUNDS
        body = self.body
        history: list[Sample] = []
        for r in range(rounds + 1):
            s = await self.slot(r, body, role="sample" if r == 0 else "refine", check=False)
            history.append(s)
            if s.error is not None:
                break
            verdict = await self.verify(s) if s.finished else None
            if verdict is not None and verdict.passed:
                return s, history
            if r == rounds:
                break
            if not s.finished:
                feedback = "The previous attempt did not finish: it ran out of budget. Answer more concisely."
            elif self.verifier is not None:
                feedback = verdict.feedback if verdict is not None else "The answer could not be checked."
            else:
                feedback, approved = await self.critique(s, r)
                if approved:
                    return s, history
            reply = s.text if s.text.strip() else "(the previous attempt ran out of budget before answering)"
            body = {**body, "messages": [*body.get("messages", []), {"role": "assistant", "content": reply},
                                         {"role": "user", "content": REVISE_PROMPT.format(feedback=feedback)}]}
        scored = [x for x in history if x.finished and x.verdict is not None]
        if scored:  # no pass: the best score, the latest among equals
            return max(reversed(scored), key=lambda x: x.verdict.score if x.verdict else 0.0), history
        finished = [x for x in history if x.finished]
        return (finished[-1] if finished else aggregate.best_so_far(history)), history

    async def critique(self, s: Sample, round_: int) -> tuple[str, bool]:
        """A critic's review of `s`: (feedback, approved). The critic is `critic_model`, else the
        plan's own model reviewing itself."""
        name = self.plan.critic_model if self.plan.critic_model in self.ex.entries else self.plan.model
        question = next((m.get("content") for m in reversed(self.body.get("messages", []))
                         if isinstance(m, dict) and m.get("role") == "user" and isinstance(m.get("content"), str)), "")
        prompt = CRITIC_PROMPT.format(question=question, answer=s.text or "(no answer)")
        critic_body = {**self.body, "messages": [{"role": "user", "content": prompt}]}
        c = await self.call(self.ex.entry(name), critic_body, cutoff=None, role="critic", slot=round_)
        if c.error is not None or c.cancelled or not c.text.strip():
            return "Check every step of the previous answer for mistakes.", False
        return _CRITIC_PASS.sub("", c.text).strip() or c.text, bool(_CRITIC_PASS.search(c.text))


def _passed(s: Sample) -> bool:
    return s.finished and s.verdict is not None and s.verdict.passed


async def _cancel(tasks: Mapping[asyncio.Task, int]) -> None:
    """Cancel slots still running and wait until each has closed its upstream stream."""
    if not tasks:
        return
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
