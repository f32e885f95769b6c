"""Executing plans against the real simulator: every aggregator picks the sample it should, cuts
fire within a chunk, restarts and fallbacks do what the plan says, cancelled streams are closed,
and the bill is exactly what the upstream sent.

Samples are scripted (`sim_script`), so lengths and answers are known; the simulator runs in
process at 200k tokens/s, fast enough for a quick suite and slow enough that a cancelled stream
visibly stops short. The last tests run the same executor against a `pareto-proxy sim` process.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path

import httpx
import pytest

from proxy.budget.pricing import ModelCapabilities, ModelPrice
from proxy.config import Faults, SimulatorSettings
from proxy.errors import UpstreamError, UpstreamRejected
from proxy.routing.catalog import ModelEntry
from proxy.routing.plan import Plan
from proxy.routing.profiles import Profiles
from proxy.strategies.breaker import CircuitBreaker
from proxy.strategies.executor import Executor, Outcome, RunContext
from proxy.strategies.sampler import RetryPolicy, Sample, Sampler, prepare_body
from proxy.upstream.base import Upstream
from proxy.upstream.simulator import SimulatedUpstream
from proxy.upstream.simulator.script import ScriptBook
from proxy.verifiers import Verdict, Verifier, default_registry

REPO = Path(__file__).parents[2]
CHUNK = 16
FAST = SimulatorSettings(tokens_per_second=200_000, tokens_per_chunk=CHUNK, seed=0)
PRICES = {"alpha": ModelPrice(1.0, 4.0), "beta": ModelPrice(0.5, 2.0), "down": ModelPrice(1.0, 4.0)}
_ids = itertools.count()


class Recording(Upstream):
    """Delegates to a real upstream and keeps every body it was sent (to check what went out)."""

    def __init__(self, inner: SimulatedUpstream) -> None:
        self.inner, self.name, self.bodies = inner, inner.name, []

    async def complete(self, body: dict, *, timeout_s: float) -> dict:
        return await self.inner.complete(body, timeout_s=timeout_s)

    async def stream(self, body: dict, *, timeout_s: float) -> AsyncIterator[dict]:
        self.bodies.append(dict(body))
        # aclosing: closing this wrapper must close the inner stream now, not at garbage collection
        async with aclosing(self.inner.stream(body, timeout_s=timeout_s)) as inner:
            async for chunk in inner:
                yield chunk

    @property
    def stats(self):
        return self.inner.stats


@pytest.fixture(scope="module")
def profiles() -> Profiles:
    return Profiles.load(REPO / "profiles" / "default.json")


@pytest.fixture
def models(profiles) -> dict[str, ModelEntry]:
    """alpha (R1, a reasoning model), beta (cheaper), down (every call fails with a 503).
    They share one script book, so a script's next sample goes to whichever model asks next."""
    book = ScriptBook()
    down = SimulatorSettings(tokens_per_second=200_000, tokens_per_chunk=CHUNK, seed=0,
                             faults=Faults(error_rate=1.0, error_status=503))
    out = {}
    for name, profile, settings in (("alpha", "R1", FAST), ("beta", "QwQ", FAST), ("down", "R1", down)):
        up = Recording(SimulatedUpstream(name, profile, profiles, settings, scripts=book))
        out[name] = ModelEntry(name, "simulated", profile, up, PRICES[name], ModelCapabilities(), 5.0, reasoning=True)
    return out


def _executor(models, **kw) -> Executor:
    kw.setdefault("retry", RetryPolicy(base_s=0.001, cap_s=0.005))
    return Executor(models, kw.pop("breaker", CircuitBreaker()), default_registry(), **kw)


def _body(*samples: dict, **extra) -> dict:
    return {"messages": [{"role": "user", "content": "What is the answer?"}],
            "sim_script": {"id": f"t{next(_ids)}", "samples": list(samples)}, **extra}


def S(tokens: int, answer: str | None = None, **kw) -> dict:  # a short name: scripts read like tables
    return {"tokens": tokens, "answer": answer, **kw}


def _sent(models, name: str) -> list:
    """The simulator's own record of each call to `name`: tokens handed over, closed early."""
    return list(models[name].upstream.stats.connections)


def _assert_honest(out: Outcome, models) -> None:
    """The bill is every call's prompt + completion at its model's price, and each call's
    completion count is exactly what the simulator handed over (simulated tokens are words)."""
    assert out.cost_usd == pytest.approx(sum(PRICES[s.model].cost(s.prompt_tokens, s.completion_tokens)
                                             for s in out.samples))
    for name in models:
        billed = [s.completion_tokens for s in out.samples if s.model == name]
        if billed:  # this run's calls are the model's latest connections, in the same order
            assert billed == [c.tokens for c in _sent(models, name)][-len(billed):]


# -- single and the aggregators ------------------------------------------------------------------


async def test_single_bills_prompt_and_completion_at_the_model_price(models):
    out = await _executor(models).run(Plan("alpha"), _body(S(120, "42")), RunContext(request_id="r1"))
    s = out.selected
    assert s is not None and s.selected and s.answer == "42" and s.finish_reason == "stop"
    assert s.completion_tokens == 120 and s.usage_reported and s.prompt_tokens > 0
    assert 0 < s.reasoning_tokens < 120 and "\\boxed{42}" in s.text and s.reasoning_text
    assert out.samples == [s] and out.restarts == 0 and out.wasted_tokens == 0
    assert out.cost_usd == pytest.approx(PRICES["alpha"].cost(s.prompt_tokens, 120))
    _assert_honest(out, models)


async def test_majority_votes_over_equivalent_answers(models):
    body = _body(S(100, "0.5"), S(150, "3"), S(200, "\\frac{1}{2}"), S(250, "3.0"), S(300, "1/2"))
    out = await _executor(models).run(Plan("alpha", "parallel", k=5, aggregator="majority"), body)
    assert out.selected.answer == "0.5"  # {0.5, 1/2, \frac12} beat {3, 3.0}; the group's first finisher
    assert len(out.samples) == 5 and sum(s.selected for s in out.samples) == 1
    assert not any(s.cancelled for s in out.samples)
    _assert_honest(out, models)


async def test_majority_tie_goes_to_the_group_that_reached_its_count_first(models):
    body = _body(S(300, "7"), S(100, "8"), S(900, "7"), S(200, "8"))
    out = await _executor(models).run(Plan("alpha", "parallel", k=4, aggregator="majority"), body)
    assert out.selected.answer == "8" and out.selected.completion_tokens == 100


async def test_best_of_n_picks_by_verifier_score_and_is_majority_without_one(models):
    samples = (S(100, "12"), S(200, "12"), S(300, "13"))
    plan = Plan("alpha", "parallel", k=3, aggregator="best_of_n",
                verifier={"name": "math_answer", "reference": "13"})
    out = await _executor(models).run(plan, _body(*samples))
    assert out.selected.answer == "13" and out.selected.verdict.passed
    assert [s.verdict.passed for s in out.samples] == [False, False, True]
    plain = await _executor(models).run(plan.with_(verifier=None), _body(*samples))
    assert plain.selected.answer == "12" and plain.selected.verdict is None


async def test_best_of_n_uses_the_context_verifier_first(models):
    class Longest(Verifier):
        name = "longest"

        async def verify(self, candidate, context):
            assert context["request_id"] == "r9" and context["model"] == "alpha"
            return Verdict(False, len(candidate) / 100, "longer please")

    body = _body(S(100, "1"), S(100, "22"), S(100, "333"))
    out = await _executor(models).run(Plan("alpha", "parallel", k=3, aggregator="best_of_n"), body,
                                      RunContext(request_id="r9", verifier=Longest()))
    assert out.selected.answer == "333"


async def test_first_finish_cancels_the_others_at_once(models):
    body = _body(S(6000, "1"), S(200, "2"), S(6000, "3"))
    out = await _executor(models).run(Plan("alpha", "parallel", k=3, aggregator="first_finish"), body)
    assert out.selected.answer == "2" and out.selected.completion_tokens == 200
    losers = [s for s in out.samples if not s.selected]
    assert len(losers) == 2 and all(s.cancelled and s.finish_reason is None and s.answer is None for s in losers)
    assert all(0 < s.completion_tokens < 6000 for s in losers)
    assert out.wasted_tokens == sum(s.completion_tokens for s in losers)
    conns = _sent(models, "alpha")
    assert sum(c.closed_early for c in conns) == 2 and not any(c.open for c in conns)
    _assert_honest(out, models)


async def test_short_m_stops_when_m_finished_and_votes_among_them(models):
    body = _body(S(100, "4"), S(5000, "9"), S(150, "5"), S(5000, "9"), S(200, "4"), S(5000, "9"))
    plan = Plan("alpha", "parallel", k=6, aggregator="short_m", m=3)
    out = await _executor(models).run(plan, body)
    assert out.selected.answer == "4"  # "9" would win a full vote, but it never finished in time
    assert sum(s.finished for s in out.samples) == 3 and sum(s.cancelled for s in out.samples) == 3
    _assert_honest(out, models)


async def test_consensus_stops_at_the_margin(models):
    body = _body(S(100, "5"), S(100, "6"), S(100, "5"), S(100, "5"), S(100, "6"))
    plan = Plan("alpha", "parallel", k=2, aggregator="consensus", k_max=10, margin=2)
    out = await _executor(models).run(plan, body)
    assert [s.answer for s in out.samples] == ["5", "6", "5", "5"]  # 3 to 1 after the fourth
    assert out.selected.answer == "5"


async def test_consensus_cancels_in_flight_samples_once_the_margin_is_reached(models):
    body = _body(S(100, "5"), S(150, "5"), S(8000, "6"))
    out = await _executor(models).run(Plan("alpha", "parallel", k=3, aggregator="consensus", margin=2), body)
    assert out.selected.answer == "5" and [s.cancelled for s in out.samples] == [False, False, True]


async def test_consensus_stops_at_k_max(models):
    body = _body(*(S(100, "1" if i % 2 == 0 else "2") for i in range(12)))
    plan = Plan("alpha", "parallel", k=2, aggregator="consensus", k_max=5, margin=2)
    out = await _executor(models).run(plan, body)
    assert [s.answer for s in out.samples] == ["1", "2", "1", "2", "1"]
    assert out.selected.answer == "1"


# -- cutoffs and restarts ------------------------------------------------------------------------


async def test_live_cutoff_fires_within_one_chunk_and_bills_what_was_received(models):
    ex = _executor(models, native_cutoffs=False)
    out = await ex.run(Plan("alpha", cutoff_tokens=1000), _body(S(6000, "3")))
    s = out.samples[0]
    assert s.cut and s.finish_reason == "length" and s.answer is None and not s.usage_reported
    assert 1000 < s.completion_tokens <= 1000 + CHUNK
    assert "max_tokens" not in models["alpha"].upstream.bodies[-1]
    conn = _sent(models, "alpha")[-1]
    assert conn.closed_early and conn.tokens == s.completion_tokens  # billed == received
    assert s.prompt_tokens > 0  # the prompt is billed though usage never came
    assert out.selected is s and out.cuts == 1  # stop: the cut sample is what there is


async def test_native_cutoff_lowers_the_cap_only_below_the_clients(models):
    up = models["alpha"].upstream
    out = await _executor(models).run(Plan("alpha", cutoff_tokens=1000), _body(S(6000, "3"), max_completion_tokens=4000))
    assert up.bodies[-1]["max_completion_tokens"] == 1000 and "max_tokens" not in up.bodies[-1]
    s = out.samples[0]
    assert s.cut and s.completion_tokens == 1000 and s.usage_reported and s.finish_reason == "length"
    # the client's own cap is lower: a "length" finish is the client's truncation, not a cut
    out = await _executor(models).run(Plan("alpha", cutoff_tokens=1000), _body(S(6000, "3"), max_tokens=300))
    assert up.bodies[-1]["max_tokens"] == 300
    assert not out.samples[0].cut and out.samples[0].finish_reason == "length" and out.cuts == 0
    assert prepare_body({"n": 3, "stream": True, "routing": {}, "messages": []}, None, True) == ({"messages": []}, False)


async def test_restart_same_draws_new_seeds_until_a_sample_fits(models):
    plan = Plan("alpha", cutoff_tokens=1000, max_restarts=2, restart="same")
    out = await _executor(models).run(plan, _body(S(5000, "1"), S(5000, "2"), S(300, "3")), RunContext(seed=7))
    assert out.selected.answer == "3" and out.restarts == 2
    assert [s.cut for s in out.samples] == [True, True, False]
    assert [s.role for s in out.samples] == ["sample", "restart", "restart"]
    assert [b["seed"] for b in models["alpha"].upstream.bodies[-3:]] == [7, 8, 9]
    # the restart budget is per slot: a third cut stays cut
    out = await _executor(models).run(plan, _body(S(5000), S(5000), S(5000), S(300, "3")))
    assert len(out.samples) == 3 and out.selected.cut and out.selected.finish_reason == "length"


async def test_restart_escalate_moves_to_the_fallback_model_without_its_cutoff(models):
    plan = Plan("alpha", cutoff_tokens=1000, max_restarts=1, restart="escalate", fallback_model="beta")
    out = await _executor(models).run(plan, _body(S(5000, "1"), S(3000, "7")))
    assert [s.model for s in out.samples] == ["alpha", "beta"] and out.restarts == 1
    assert out.selected.model == "beta" and out.selected.answer == "7" and not out.selected.cut
    assert "max_tokens" not in models["beta"].upstream.bodies[-1]  # alpha's cutoff is not beta's
    _assert_honest(out, models)


async def test_restart_force_answer_sends_the_partial_reasoning_back_under_a_small_cap(models):
    plan = Plan("alpha", cutoff_tokens=1000, max_restarts=1, restart="force_answer")
    out = await _executor(models).run(plan, _body(S(5000, "1"), S(40, "9")))
    cut, forced = out.samples
    assert cut.cut and not cut.selected and cut.answer is None
    assert forced.selected and forced.forced and forced.answer == "9"
    assert forced.finish_reason == "length" and forced.cut  # the cut stays visible to the client
    sent = models["alpha"].upstream.bodies[-1]
    assert sent["max_tokens"] == 256
    assert sent["messages"][-2] == {"role": "assistant", "content": cut.reasoning_text.strip()}
    assert "final answer" in sent["messages"][-1]["content"]
    assert forced.prompt_tokens > cut.prompt_tokens + 900  # the partial reasoning is billed as prompt
    # a forced answer that runs long is capped too
    out = await _executor(models).run(plan, _body(S(5000, "1"), S(2000, "9")))
    assert out.samples[1].completion_tokens == 256 and out.selected.answer is None


async def test_restart_stop_keeps_the_best_answer_so_far(models):
    plan = Plan("alpha", "parallel", k=3, aggregator="majority", cutoff_tokens=1000, max_restarts=3, restart="stop")
    out = await _executor(models).run(plan, _body(S(300, "4"), S(5000, "9"), S(400, "5")))
    assert len(out.samples) == 3 and out.restarts == 0 and out.cuts == 1
    assert out.selected.answer == "4"


# -- sequential ----------------------------------------------------------------------------------


async def test_sequential_feeds_verifier_feedback_back_until_it_passes(models):
    plan = Plan("alpha", "sequential", rounds=3, verifier={"name": "math_answer", "reference": "10"})
    out = await _executor(models).run(plan, _body(S(200, "8"), S(200, "10"), S(200, "11")))
    assert [s.answer for s in out.samples] == ["8", "10"] and out.selected.answer == "10"
    assert out.selected.verdict.passed and not out.samples[0].verdict.passed
    sent = models["alpha"].upstream.bodies[-1]["messages"]
    assert sent[-2]["role"] == "assistant" and "\\boxed{8}" in sent[-2]["content"]
    assert "is not correct" in sent[-1]["content"] and "10" not in sent[-1]["content"]  # no leaked reference


async def test_sequential_with_a_critic_model_stops_when_it_approves(models):
    plan = Plan("alpha", "sequential", rounds=3, critic_model="beta")
    script = (S(200, "8"), S(30, text="Step two adds wrongly. VERDICT: FAIL"),
              S(200, "10"), S(30, text="All steps check out. VERDICT: PASS"), S(200, "99"))
    out = await _executor(models).run(plan, _body(*script))
    assert [(s.model, s.role) for s in out.samples] == [("alpha", "sample"), ("beta", "critic"),
                                                          ("alpha", "refine"), ("beta", "critic")]
    assert out.selected.answer == "10" and not any(s.selected for s in out.samples if s.role == "critic")
    assert "Step two adds wrongly." in models["alpha"].upstream.bodies[-1]["messages"][-1]["content"]
    _assert_honest(out, models)


async def test_sequential_without_a_pass_keeps_the_best_scored_round(models):
    class Score(Verifier):
        async def verify(self, candidate, context):
            return Verdict(False, {"3": 0.9}.get(candidate.split("{")[-1].rstrip("}."), 0.1), "try again")

    out = await _executor(models).run(Plan("alpha", "sequential", rounds=2), _body(S(100, "1"), S(100, "3"), S(100, "2")),
                                      RunContext(verifier=Score()))
    assert len(out.samples) == 3 and out.selected.answer == "3"


# -- failures: retries, fallbacks, the breaker, cancellation -------------------------------------


async def test_a_500_before_the_first_token_is_retried_with_backoff(models):
    waits: list[float] = []

    async def sleep(s: float) -> None:
        waits.append(s)

    ex = _executor(models, sleep=sleep, retry=RetryPolicy(attempts=3, base_s=0.1, factor=2, cap_s=1, jitter=0.5))
    out = await ex.run(Plan("alpha"), _body(S(10, error=500), S(10, error=502), S(300, "4")))
    assert out.selected.answer == "4" and [s.attempt for s in out.samples] == [1, 2, 3]
    assert [s.error_kind for s in out.samples] == ["http_5xx", "http_5xx", None]
    assert out.samples[0].cost_usd == 0 and out.samples[0].prompt_tokens == 0  # nothing was processed
    assert 0.05 <= waits[0] <= 0.15 and 0.1 <= waits[1] <= 0.3


async def test_failures_after_tokens_are_never_retried_and_still_billed(models):
    out = await _executor(models).run(Plan("alpha"), _body(S(1000, "4", disconnect_at=160), S(300, "5")))
    assert len(out.samples) == 1 and out.selected is None
    s = out.samples[0]
    assert s.error_kind == "disconnect" and s.completion_tokens == 160 and s.cost_usd > 0
    assert isinstance(out.error, UpstreamError) and out.cost_usd == s.cost_usd
    rejected = await _executor(models).run(Plan("alpha", fallback_model="beta"), _body(S(10, error=400)))
    assert isinstance(rejected.error, UpstreamRejected) and len(rejected.samples) == 1  # not retried, no fallback


async def test_a_downed_model_falls_back(models):
    plan = Plan("down", "parallel", k=2, aggregator="majority", fallback_model="beta")
    out = await _executor(models, breaker=CircuitBreaker(failure_threshold=100)).run(plan, _body(S(300, "6")))
    assert out.fell_back and out.selected.model == "beta" and out.selected.answer == "6"
    assert [s.role for s in out.samples].count("fallback") == 1
    assert sum(1 for s in out.samples if s.model == "down" and s.error_kind == "http_5xx") == 6  # 2 slots x 3 tries
    no_fallback = await _executor(models).run(Plan("down"), _body(S(300, "6")))
    assert no_fallback.selected is None and isinstance(no_fallback.error, UpstreamError)
    assert no_fallback.error.status == 502


async def test_the_breaker_opens_rejects_and_closes_after_the_cooldown(models):
    now = [0.0]
    breaker = CircuitBreaker(failure_threshold=3, cooldown_s=30, clock=lambda: now[0])
    ex = _executor(models, breaker=breaker)
    plan = Plan("down", fallback_model="beta")
    out = await ex.run(plan, _body(S(100, "1")))
    assert breaker.state("down") == "open" and out.selected.model == "beta"
    calls = models["down"].upstream.stats.requests
    out = await ex.run(plan, _body(S(100, "2")))  # refused at once: no call to the downed model
    assert models["down"].upstream.stats.requests == calls and out.selected.model == "beta"
    assert [s.model for s in out.samples] == ["beta"] and breaker.retry_after("down") == 30
    now[0] = 31.0  # half-open: one trial goes through; it fails, so the circuit opens again
    assert breaker.state("down") == "half_open"
    await ex.run(plan, _body(S(100, "3")))
    assert models["down"].upstream.stats.requests == calls + 1 and breaker.state("down") == "open"
    now[0] = 62.0  # a trial that succeeds closes the circuit
    models["down"].upstream.inner.engine.settings = FAST
    out = await ex.run(plan, _body(S(100, "4")))
    assert out.selected.model == "down" and breaker.state("down") == "closed"


def test_breaker_half_open_allows_a_single_trial():
    now = [0.0]
    b = CircuitBreaker(failure_threshold=2, cooldown_s=10, clock=lambda: now[0])
    b.record_failure("m")
    assert b.allow("m") and b.state("m") == "closed"
    b.record_success("m")
    b.record_failure("m")
    assert b.state("m") == "closed"  # successes reset the count: failures must be consecutive
    b.record_failure("m")
    assert b.state("m") == "open" and not b.allow("m")
    now[0] = 10.0
    assert b.allow("m") and not b.allow("m")  # one trial at a time
    b.release("m")  # the trial was cancelled: another may try
    assert b.allow("m")
    b.record_success("m")
    assert b.state("m") == "closed" and b.allow("m") and b.allow("other")
    with pytest.raises(ValueError):
        CircuitBreaker(failure_threshold=0)


async def test_cancelling_the_run_closes_the_upstream_and_keeps_the_bill(models):
    ctx = RunContext()
    seen: list[Sample] = []
    ctx.on_sample = seen.append
    task = asyncio.create_task(_executor(models).run(Plan("alpha", "parallel", k=2), _body(S(50_000, "1")), ctx))
    while sum(s.completion_tokens for s in ctx.samples) < 500:
        await asyncio.sleep(0.001)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(ctx.samples) == 2 and all(s.cancelled and s.completion_tokens > 0 for s in ctx.samples)
    assert {id(s) for s in seen} == {id(s) for s in ctx.samples} and ctx.cost_usd() > 0
    conns = _sent(models, "alpha")
    assert all(c.closed_early for c in conns) and [c.tokens for c in conns] == [s.completion_tokens for s in ctx.samples]


async def test_on_chunk_sees_every_chunk_live(models):
    chunks: list[int] = []

    async def on_chunk(sample: Sample, chunk: dict) -> None:
        chunks.append(sample.completion_tokens)

    out = await _executor(models).run(Plan("alpha"), _body(S(100, "1")), RunContext(on_chunk=on_chunk))
    assert chunks == sorted(chunks) and chunks[-1] == 100 == out.selected.completion_tokens


async def test_sampler_counts_tiktoken_for_other_providers(models):
    entry = models["alpha"]
    other = ModelEntry("alpha", "openai", "R1", entry.upstream, entry.price, ModelCapabilities(), 5.0)
    s = await Sampler(native_cutoffs=False).run(other, _body(S(2000, "1")), cutoff_tokens=300)
    assert s.cut and s.completion_tokens > 300 and s.completion_tokens >= _sent(models, "alpha")[-1].tokens


# -- against a real `pareto-proxy sim` process ---------------------------------------------------


@pytest.fixture(scope="module")
def sim_server(tmp_path_factory):
    from tests.conftest import start_sim

    # 1,000 tokens/s: a chunk every 16 ms, so at most about one chunk is in flight on the socket
    # when a stream is cancelled (faster, and loopback buffers hold many chunks the proxy never
    # read: "sent" then outruns "received" by more than the one chunk the contract allows)
    config = {"profiles": str(REPO / "profiles" / "default.json"),
              "models": [{"name": "sim-a", "provider": "simulated", "profile": "R1",
                          "simulator": {"tokens_per_second": 1_000, "tokens_per_chunk": CHUNK}}]}
    proc = start_sim(tmp_path_factory.mktemp("strategies-sim"), config)
    yield proc
    proc.stop()


@pytest.fixture
async def http_models(sim_server):
    from proxy.upstream.openai_compat import OpenAICompatUpstream

    up = OpenAICompatUpstream("sim-a", "sim-a", sim_server.base_url, None)
    yield {"sim-a": ModelEntry("sim-a", "openai", "R1", up, ModelPrice(1.0, 4.0), ModelCapabilities(), 10.0)}
    await up.aclose()


async def _connections(url: str, script: str, count: int) -> list[dict]:
    """The simulator's records of `script`'s connections, once all `count` have ended.

    Polls from a thread, never blocking the loop: a closed transport only really closes its
    socket on the loop's next turn (building an HTTP client on the loop can delay that turn by
    tens of milliseconds, while the simulator keeps writing)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while True:
        stats = (await asyncio.to_thread(httpx.get, f"{url}/sim/stats", timeout=10)).json()
        conns = [c for c in stats["connections"] if c["script"] == script]
        if len(conns) == count and not any(not (c["done"] or c["closed_early"]) for c in conns):
            return conns
        assert loop.time() < deadline, f"connections never all closed: {conns}"
        await asyncio.sleep(0.02)


async def test_first_finish_over_http_closes_the_other_connections(http_models, sim_server):
    body = _body(S(300, "1"), S(6000, "2"), S(6000, "3"))
    out = await Executor(http_models).run(Plan("sim-a", "parallel", k=3, aggregator="first_finish"), body)
    assert out.selected.answer == "1" and out.selected.completion_tokens == 300 and out.selected.usage_reported
    cancelled = [s for s in out.samples if s.cancelled]
    assert len(cancelled) == 2
    conns = await _connections(sim_server.url, body["sim_script"]["id"], 3)
    early = sorted(c["tokens"] for c in conns if c["closed_early"])
    assert len(early) == 2 and all(t < 6000 for t in early)
    assert [c["tokens"] for c in conns if c["done"]] == [300]
    # billed (tiktoken over what arrived) never falls short of what was sent by more than a chunk
    billed = sorted(s.completion_tokens for s in cancelled)
    received = sorted(len((s.reasoning_text + " " + s.text).split()) for s in cancelled)  # simulated tokens are words
    assert all(b >= r for b, r in zip(billed, received, strict=True))
    assert all(r >= sent - CHUNK for r, sent in zip(received, early, strict=True))
    assert all(b >= sent - CHUNK for b, sent in zip(billed, early, strict=True))


async def test_live_cutoff_over_http_stops_the_stream(http_models, sim_server):
    body = _body(S(6000, "2"))
    out = await Executor(http_models, native_cutoffs=False).run(Plan("sim-a", cutoff_tokens=500), body)
    s = out.samples[0]
    assert s.cut and 500 < s.completion_tokens <= 500 + 3 * CHUNK  # tiktoken tokens: a chunk is ~16-40
    [conn] = await _connections(sim_server.url, body["sim_script"]["id"], 1)
    assert conn["closed_early"] and conn["tokens"] < 1000 and s.completion_tokens >= conn["tokens"] - CHUNK
