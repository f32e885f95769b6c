"""The simulator imitates a profile: right answers at the profiled rate, right ones shorter,
exact token counts, OpenAI-valid bodies and chunks, reproducible seeds and honest faults."""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from pathlib import Path

import jsonschema
import pytest

from proxy.config import Faults, ModelConfig, Settings, SimulatorSettings
from proxy.errors import ConfigError, UpstreamError, UpstreamRejected, UpstreamTimeout
from proxy.routing.profiles import Profiles
from proxy.upstream.simulator import SimEngine, SimulatedUpstream, default_sim_name, generate, recognize
from proxy.upstream.simulator.engine import simulatable_rows
from proxy.upstream.simulator.script import ScriptBook
from proxy.upstream.simulator.server import build_sim_models
from proxy.upstream.simulator.tasks import KINDS

SCHEMAS = Path(__file__).parents[3] / "shared" / "reference" / "openai-chat-schemas.json"
DEFAULT_PROFILES = Path(__file__).parents[2] / "profiles" / "default.json"
FAST = SimulatorSettings(tokens_per_second=1e6, tokens_per_chunk=16, seed=123)


def _stats(p50: float, p90: float, top: float, mean: float | None = None) -> dict:
    mean = mean if mean is not None else p50 * 1.1
    return {"mean": mean, "std": p50 / 2, "p50": p50, "p90": p90, "p95": min(p90 * 1.1, top), "p99": top, "max": top}


def _row(model: str, task: str, difficulty: str | None, accuracy: float, **extra) -> dict:
    return {"model": model, "task": task, "difficulty": difficulty, "n": 100, "accuracy": accuracy,
            "tokens": _stats(3000, 9000, 16000, mean=4000), "failure_curve": [], **extra}


PROFILE_DOC = {
    "version": "test",
    "provenance": [{"source": "hand-made for tests"}],
    "models": {
        "Thinker": {"price": {"input_usd_per_mtok": 1.0, "output_usd_per_mtok": 4.0}, "reasoning": True},
        "Talker": {"price": {"input_usd_per_mtok": 0.2, "output_usd_per_mtok": 0.8}, "reasoning": False},
    },
    "rows": [
        _row("Thinker", "math", None, 0.6, tokens_correct=_stats(2000, 4000, 12000), tokens_wrong=_stats(6000, 11000, 16000)),
        _row("Thinker", "math", "hard", 0.3, tokens_correct=_stats(2500, 5000, 12000), tokens_wrong=_stats(7000, 12000, 16000)),
        _row("Thinker", "science", None, 0.5, tokens_correct_mean=2500, tokens_wrong_mean=6000),
        _row("Talker", "math", None, 0.4),
        _row("Talker", "science", None, 0.7, tokens_correct_mean=300, tokens_wrong_mean=500),
    ],
}


@pytest.fixture(scope="module")
def profiles() -> Profiles:
    return Profiles.from_dict(PROFILE_DOC, source="test")


@pytest.fixture(scope="module")
def check():
    spec = json.loads(SCHEMAS.read_text())
    validators = {
        name: jsonschema.Draft202012Validator({"$ref": f"#/components/schemas/{name}", "components": spec["components"]})
        for name in ("CreateChatCompletionResponse", "CreateChatCompletionStreamResponse")
    }

    def run(body: dict, name: str) -> None:
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in validators[name].iter_errors(body)]
        assert not errors, f"{name}: {errors}\n{json.dumps(body)[:600]}"

    return run


def _ask(prompt: str, **params) -> dict:
    return {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": prompt}], **params}


def _words(text: str | None) -> int:
    return len(text.split()) if text else 0


# -- tasks -----------------------------------------------------------------------------------


def _mc_truth(prompt: str) -> int:
    """Recompute a multiple-choice truth from the question's numbers, independently of tasks.py."""
    if m := re.search(r"constant (\d+) m/s for (\d+) s", prompt):
        return int(m[1]) * int(m[2])
    if m := re.search(r"mass (\d+) kg moves at (\d+) m/s", prompt):
        return int(m[1]) * int(m[2]) ** 2 // 2
    m = re.search(r"resistors of (\d+) ohm and (\d+) ohm .* ideal (\d+) V", prompt, re.S)
    assert m, prompt
    return int(m[3]) ** 2 // (int(m[1]) + int(m[2]))


@pytest.mark.parametrize("difficulty", ["easy", "medium", "hard", None])
def test_generated_tasks_are_recognized_and_their_truth_recomputes(difficulty):
    for seed in range(200):
        arith = generate("arithmetic", seed, difficulty)
        assert arith.task == "math" and recognize("please: " + arith.prompt) == arith
        expr = arith.prompt.split("\n\n")[1]
        assert re.fullmatch(r"[\d+\-* ()]+", expr)
        assert int(arith.answer) == eval(expr)  # noqa: S307 - digits and operators only, checked above
        assert arith.is_correct("thinking... " + arith.render(arith.answer))
        wrong = arith.wrong_answer(__import__("random").Random(seed))
        assert wrong != arith.answer and not arith.is_correct(arith.render(wrong))

        mc = generate("multiple_choice", seed, difficulty)
        assert mc.task == "science" and recognize(mc.prompt) == mc
        options = dict(re.findall(r"^([A-D])\) (\d+)$", mc.prompt, re.M))
        assert len(options) == 4 and len(set(options.values())) == 4
        assert int(options[mc.answer]) == _mc_truth(mc.prompt)
        assert mc.extract("x Answer: B") == "B"


def test_task_size_grows_with_difficulty_and_tags_are_strict():
    sizes = {d: sum(generate("arithmetic", s, d).prompt.count(" ") for s in range(50)) for d in ("easy", "medium", "hard")}
    assert sizes["easy"] < sizes["medium"] < sizes["hard"]
    assert generate("arithmetic", 5, "easy") != generate("arithmetic", 6, "easy")
    assert recognize("what is 2+2?") is None
    assert recognize("[pareto-task nosuchkind easy 3]") is None
    assert set(KINDS) >= {"arithmetic", "multiple_choice"}


# -- statistics ------------------------------------------------------------------------------


def _median(values: list[int]) -> float:
    return sorted(values)[len(values) // 2]


@pytest.mark.parametrize(
    "difficulty, accuracy, p50_right, p50_wrong",
    [("hard", 0.3, 2500, 7000), ("medium", 0.6, 2000, 6000)],  # medium has no row: the task-level row
)
def test_correct_rate_matches_profile_and_right_answers_are_shorter(profiles, difficulty, accuracy, p50_right, p50_wrong):
    engine = SimEngine(profiles, FAST)
    draws = 3000
    right, wrong = [], []
    for seed in range(draws):
        task = generate("arithmetic", seed, difficulty)
        choice = engine.plan(_ask(task.prompt), model="sim", profile_model="Thinker").choices[0]
        assert choice.finish_reason == "stop"
        # judged from the text, as a verifier would, not from the plan's own flag
        (right if task.is_correct(choice.content_text()) else wrong).append(choice.completion_tokens)
    rate = len(right) / draws
    assert abs(rate - accuracy) < 4 * math.sqrt(accuracy * (1 - accuracy) / draws)
    assert sum(right) / len(right) < sum(wrong) / len(wrong)
    # each outcome's lengths follow its own class in the profile
    assert abs(_median(right) / p50_right - 1) < 0.15 and abs(_median(wrong) / p50_wrong - 1) < 0.15


def test_class_means_and_pooled_chat_lengths(profiles):
    engine = SimEngine(profiles, FAST)
    right, wrong = [], []
    for seed in range(1500):
        task = generate("multiple_choice", seed, "easy")  # no easy row: task-level row with class means only
        c = engine.plan(_ask(task.prompt), model="sim", profile_model="Talker").choices[0]
        (right if c.correct else wrong).append(c.completion_tokens)
    assert sum(right) / len(right) < sum(wrong) / len(wrong)
    # without per-class quantiles the class mean rescales the overall median (3000 * mean / 4000)
    assert abs(_median(right) / 225 - 1) < 0.15 and abs(_median(wrong) / 375 - 1) < 0.15
    chat = [engine.plan(_ask(f"tell me a story {i}"), model="sim", profile_model="Talker").choices[0] for i in range(200)]
    assert all(c.answer is None and c.correct is None and c.finish_reason == "stop" for c in chat)
    assert 1000 < sorted(c.completion_tokens for c in chat)[100] < 9000  # pooled median is ~3000


# -- wire format, counts, seeds ----------------------------------------------------------------


async def _collect(upstream: SimulatedUpstream, body: dict, timeout_s: float = 10.0) -> list[dict]:
    return [c async for c in upstream.stream(body, timeout_s=timeout_s)]


@pytest.mark.parametrize("profile_model", ["Thinker", "Talker"])
async def test_bodies_and_chunks_validate_and_agree(profiles, check, profile_model):
    up = SimulatedUpstream("sim-x", profile_model, profiles, FAST)
    task = generate("arithmetic", 11, "hard")
    for params in ({}, {"max_tokens": 5}, {"n": 3}, {"max_completion_tokens": 40, "n": 2}):
        body = _ask(task.prompt, seed=7, **params)
        full = await up.complete(body, timeout_s=10)
        check(full, "CreateChatCompletionResponse")
        assert full["object"] == "chat.completion" and full["id"].startswith("chatcmpl-") and full["model"] == "sim-x"
        chunks = await _collect(up, {**body, "stream": True})
        for chunk in chunks:
            check(chunk, "CreateChatCompletionStreamResponse")
            assert chunk["object"] == "chat.completion.chunk" and "usage" in chunk
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == full["usage"]
        assert all(c["usage"] is None for c in chunks[:-1])
        # the same seed streams exactly the text of the non-streaming body
        for choice in full["choices"]:
            i = choice["index"]
            deltas = [ch["choices"][0] for ch in chunks if ch["choices"] and ch["choices"][0]["index"] == i]
            assert deltas[0]["delta"]["role"] == "assistant"
            assert [d["finish_reason"] for d in deltas if d["finish_reason"]] == [choice["finish_reason"]]
            content = "".join(d["delta"].get("content") or "" for d in deltas)
            reasoning = "".join(d["delta"].get("reasoning_content") or "" for d in deltas)
            assert content == choice["message"]["content"]
            assert reasoning == choice["message"].get("reasoning_content", "")
            sizes = [_words(d["delta"].get("reasoning_content") or d["delta"].get("content")) for d in deltas[1:-1]]
            assert sizes and max(sizes) <= FAST.tokens_per_chunk
            if profile_model == "Thinker":  # reasoning first, then the answer
                kinds = ["r" if "reasoning_content" in d["delta"] else "c" for d in deltas[1:-1]]
                assert kinds == sorted(kinds, reverse=True)


@pytest.mark.parametrize("profile_model, reasoning", [("Thinker", True), ("Talker", False)])
async def test_max_tokens_truncates_with_exact_counts(profiles, profile_model, reasoning):
    up = SimulatedUpstream("sim-x", profile_model, profiles, FAST)
    task = generate("arithmetic", 3, "hard")
    body = _ask(task.prompt, max_tokens=50)
    out = await up.complete(body, timeout_s=10)
    choice, usage = out["choices"][0], out["usage"]
    assert choice["finish_reason"] == "length" and usage["completion_tokens"] == 50
    assert usage["total_tokens"] == usage["prompt_tokens"] + 50
    msg = choice["message"]
    if reasoning:
        assert _words(msg["reasoning_content"]) == 50 == usage["completion_tokens_details"]["reasoning_tokens"]
        assert msg["content"] == ""
    else:
        assert _words(msg["content"]) == 50 and "reasoning_content" not in msg
        assert usage["completion_tokens_details"]["reasoning_tokens"] == 0
    # a cut one word before the end lands in the answer: no complete answer is given
    free = await up.complete(_ask(task.prompt, seed=5), timeout_s=10)
    total = free["usage"]["completion_tokens"]
    cut = await up.complete(_ask(task.prompt, seed=5, max_completion_tokens=total - 1), timeout_s=10)
    assert cut["usage"]["completion_tokens"] == total - 1 and cut["choices"][0]["finish_reason"] == "length"
    assert task.extract(cut["choices"][0]["message"]["content"]) is None
    assert task.extract(free["choices"][0]["message"]["content"]) is not None
    uncut = await up.complete(_ask(task.prompt, seed=5, max_tokens=total), timeout_s=10)
    assert uncut["choices"][0]["finish_reason"] == "stop" and uncut["choices"] == free["choices"]


async def test_n_gives_independent_choices_and_summed_usage(profiles):
    up = SimulatedUpstream("sim-x", "Thinker", profiles, FAST)
    out = await up.complete(_ask(generate("multiple_choice", 1, None).prompt, n=3), timeout_s=10)
    assert [c["index"] for c in out["choices"]] == [0, 1, 2]
    counts = [_words(c["message"]["content"]) + _words(c["message"]["reasoning_content"]) for c in out["choices"]]
    reasoning = [_words(c["message"]["reasoning_content"]) for c in out["choices"]]
    assert len(set(counts)) > 1
    assert out["usage"]["completion_tokens"] == sum(counts)
    assert out["usage"]["completion_tokens_details"]["reasoning_tokens"] == sum(reasoning)
    assert out["usage"]["prompt_tokens"] > 0


async def test_seeds_reproduce_and_differ(profiles):
    prompt = generate("arithmetic", 9, "hard").prompt

    async def run(up: SimulatedUpstream, **params) -> list:
        return (await up.complete(_ask(prompt, n=2, **params), timeout_s=10))["choices"]

    a = SimulatedUpstream("a", "Thinker", profiles, FAST)
    b = SimulatedUpstream("b", "Thinker", profiles, FAST)
    assert await run(a, seed=1) == await run(b, seed=1)
    await run(a)  # unseeded traffic in between does not disturb seeded requests
    assert await run(a, seed=1) == await run(b, seed=1)
    assert await run(a, seed=1) != await run(a, seed=2)
    other = SimulatedUpstream("c", "Thinker", profiles, SimulatorSettings(tokens_per_second=1e6, seed=99))
    assert await run(other, seed=1) != await run(a, seed=1)
    # without a request seed: the engine's RNG, seeded from settings, replays in order
    c = SimulatedUpstream("c", "Thinker", profiles, FAST)
    d = SimulatedUpstream("d", "Thinker", profiles, FAST)
    first = [await run(c) for _ in range(3)]
    assert first == [await run(d) for _ in range(3)] and first[0] != first[1]


async def test_bad_bodies_are_rejected(profiles):
    up = SimulatedUpstream("sim-x", "Thinker", profiles, FAST)
    for body in ({}, {"messages": []}, _ask("x", n=0), _ask("x", max_tokens=-1), _ask("x", seed="s")):
        with pytest.raises(UpstreamRejected):
            await up.complete(body, timeout_s=5)
    with pytest.raises(ConfigError):
        SimulatedUpstream("sim-x", "Nobody", profiles, FAST)
    assert default_sim_name("GPT-OSS-120B") == "sim-gpt-oss-120b"


async def test_every_shipped_profile_model_answers(check):
    profiles = Profiles.load(DEFAULT_PROFILES)
    names = [n for n in profiles.model_names() if simulatable_rows(profiles, n)]
    assert len(names) >= 5
    for name in names:
        up = SimulatedUpstream(default_sim_name(name), name, profiles, FAST)
        out = await up.complete(_ask(generate("arithmetic", 1, "easy").prompt, max_tokens=200), timeout_s=10)
        check(out, "CreateChatCompletionResponse")
        info = profiles.models.get(name)
        assert ("reasoning_content" in out["choices"][0]["message"]) == bool(info and info.reasoning)


# -- pacing, cancellation, faults ------------------------------------------------------------


def _faulty(profiles: Profiles, tps: float = 1e6, chunk: int = 16, **faults) -> SimulatedUpstream:
    settings = SimulatorSettings(tokens_per_second=tps, tokens_per_chunk=chunk, seed=1, faults=Faults(**faults))
    return SimulatedUpstream("sim-f", "Thinker", profiles, settings)


async def test_pacing_follows_tokens_per_second(profiles):
    up = _faulty(profiles, tps=2000, chunk=20)
    start = time.monotonic()
    chunks = await asyncio.wait_for(_collect(up, _ask("hi", max_tokens=200)), 30)
    assert time.monotonic() - start >= 0.09  # 200 tokens at 2000/s: the schedule is honoured
    assert chunks[-1]["usage"]["completion_tokens"] == 200
    start = time.monotonic()
    await asyncio.wait_for(up.complete(_ask("hi", max_tokens=200), timeout_s=10), 30)
    assert time.monotonic() - start >= 0.09


async def test_cancelling_the_consumer_stops_generation(profiles):
    up = _faulty(profiles, tps=100, chunk=1)
    got: list[dict] = []

    async def consume() -> None:
        async for chunk in up.stream(_ask("hi"), timeout_s=10):
            got.append(chunk)

    task = asyncio.create_task(consume())
    while len(got) < 3:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    seen = len(got)
    await asyncio.sleep(0.1)
    assert len(got) == seen


@pytest.mark.parametrize("status, error", [(500, UpstreamError), (503, UpstreamError), (429, UpstreamError),
                                           (400, UpstreamRejected), (422, UpstreamRejected)])
async def test_error_fault_raises_typed_errors(profiles, status, error):
    up = _faulty(profiles, error_rate=1.0, error_status=status)
    with pytest.raises(error) as info:
        await up.complete(_ask("hi"), timeout_s=5)
    assert not isinstance(info.value, UpstreamTimeout)
    if status == 429:
        assert info.value.kind == "http_429"
    elif status >= 500:
        assert info.value.kind == "http_5xx"
    with pytest.raises(error):
        await _collect(up, _ask("hi"))


async def test_hang_and_slow_generation_time_out_within_timeout(profiles):
    cases = [
        (_faulty(profiles, hang_rate=1.0), {}),
        (_faulty(profiles, latency_ms=60_000), {}),
        (_faulty(profiles, tps=50), {}),  # generation would take minutes
    ]
    for up, extra in cases:
        for call in (lambda: up.complete(_ask("hi", **extra), timeout_s=0.2), lambda: _collect(up, _ask("hi"), 0.2)):
            start = time.monotonic()
            with pytest.raises(UpstreamTimeout):
                await asyncio.wait_for(call(), 10)
            assert time.monotonic() - start >= 0.19


async def test_stream_gap_longer_than_timeout_times_out_mid_stream(profiles):
    up = _faulty(profiles, tps=10, chunk=16)  # 1.6 s between chunks
    got = []
    with pytest.raises(UpstreamTimeout):
        async for chunk in up.stream(_ask("hi"), timeout_s=0.2):
            got.append(chunk)
    assert len(got) == 1  # the role chunk arrives at once


async def test_disconnect_fault_raises_mid_stream(profiles):
    up = _faulty(profiles, disconnect_rate=1.0)
    body = _ask("hi", max_tokens=160)  # 10 reasoning chunks + role + finish + usage = 13 events
    got = []
    with pytest.raises(UpstreamError) as info:
        async for chunk in up.stream(body, timeout_s=5):
            got.append(chunk)
    assert info.value.kind == "disconnect" and 3 <= len(got) <= 10
    assert all(c["choices"] for c in got)  # never reached the usage chunk
    with pytest.raises(UpstreamError) as info:
        await up.complete(body, timeout_s=5)
    assert info.value.kind == "disconnect"


def test_fault_rates_are_shares_of_requests(profiles):
    engine = SimEngine(profiles, SimulatorSettings(seed=3, faults=Faults(error_rate=0.2, disconnect_rate=0.3, hang_rate=0.1)))
    kinds = [engine.fault(_ask("x")).kind for _ in range(4000)]
    for kind, share in (("error", 0.2), ("disconnect", 0.3), ("hang", 0.1), ("none", 0.4)):
        assert abs(kinds.count(kind) / 4000 - share) < 4 * math.sqrt(share * (1 - share) / 4000)
    seeded = [engine.fault(_ask("x", seed=4)).kind for _ in range(20)]
    assert len(set(seeded)) == 1  # with a request seed the decision is a pure function of the request


def test_served_models_come_from_config_or_every_profiled_model(profiles):
    everything = build_sim_models(Settings(), profiles)
    assert set(everything) == {"Thinker", "sim-thinker", "Talker", "sim-talker"}
    assert everything["sim-thinker"][0] == "Thinker"
    sim = SimulatorSettings(tokens_per_second=5.0)
    configured = Settings(models=[
        ModelConfig(name="fast-thinker", provider="simulated", profile="Thinker", simulator=sim),
        ModelConfig(name="real", provider="openai", api_base="http://127.0.0.1:1/v1"),
    ])
    assert build_sim_models(configured, profiles) == {"fast-thinker": ("Thinker", sim)}
    with pytest.raises(ConfigError, match="Nobody"):
        build_sim_models(Settings(models=[ModelConfig(name="x", provider="simulated", profile="Nobody")]), profiles)


# -- scripted samples and per-connection stats --------------------------------------------------


def _scripted(*samples: dict, script_id: str = "s", **params) -> dict:
    return _ask("What is the answer?", sim_script={"id": script_id, "samples": list(samples)}, **params)


@pytest.mark.parametrize("profile_model, reasoning", [("Thinker", True), ("Talker", False)])
async def test_scripted_samples_have_exact_lengths_and_recognisable_answers(profiles, check, profile_model, reasoning):
    up = SimulatedUpstream("sim-x", profile_model, profiles, FAST)
    body = _scripted({"tokens": 300, "answer": "42"}, {"tokens": 40, "answer": "B"},
                     {"tokens": 25, "text": "the end, really"}, {"tokens": 12, "answer": None})
    outs = [await up.complete(body, timeout_s=5) for _ in range(5)]
    for out in outs:
        check(out, "CreateChatCompletionResponse")
    tokens = [o["usage"]["completion_tokens"] for o in outs]
    assert tokens == [300, 40, 25, 12, 12]  # in arrival order; the last sample repeats
    messages = [o["choices"][0]["message"] for o in outs]
    words = [_words(m["content"]) + _words(m.get("reasoning_content")) for m in messages]
    assert words == tokens and all(o["choices"][0]["finish_reason"] == "stop" for o in outs)
    contents = [m["content"] for m in messages]
    assert contents[0].endswith("\\boxed{42}.") and contents[1].endswith("Answer: B")
    assert contents[2].endswith("the end, really")
    assert "\\boxed" not in contents[3] and "Answer" not in contents[3]
    if reasoning:  # reasoning + answer make up the count; the answer is in the content
        assert contents[0] == "So the final answer is \\boxed{42}." and _words(messages[0]["reasoning_content"]) == 294
        assert outs[0]["usage"]["completion_tokens_details"]["reasoning_tokens"] == 294
    else:
        assert "reasoning_content" not in messages[0] and _words(contents[0]) == 300
    task = generate("arithmetic", 1)
    assert task.extract(contents[0]) == "42"  # rendered the way generated tasks render answers


async def test_scripts_stream_the_same_text_and_honour_caps(profiles):
    up = SimulatedUpstream("sim-x", "Thinker", profiles, FAST)
    body = _scripted({"tokens": 100, "answer": "7"}, script_id="a")
    full = await up.complete(body, timeout_s=5)
    chunks = await _collect(up, _scripted({"tokens": 100, "answer": "7"}, script_id="b"))
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert content == full["choices"][0]["message"]["content"] and chunks[-1]["usage"]["completion_tokens"] == 100
    cut = await up.complete(_scripted({"tokens": 100, "answer": "7"}, script_id="c", max_completion_tokens=99), timeout_s=5)
    assert cut["usage"]["completion_tokens"] == 99 and cut["choices"][0]["finish_reason"] == "length"
    assert "\\boxed{7}" not in cut["choices"][0]["message"]["content"]
    tiny = await up.complete(_scripted({"tokens": 1, "answer": "7"}, script_id="d"), timeout_s=5)
    assert tiny["choices"][0]["message"]["content"] == "\\boxed{7}"  # the bare answer when the sentence does not fit
    many = await up.complete(_scripted({"tokens": 10, "answer": "1"}, {"tokens": 20, "answer": "2"}, script_id="e", n=2),
                             timeout_s=5)
    assert [c["message"]["content"] for c in many["choices"]] == [
        "So the final answer is \\boxed{1}.", "So the final answer is \\boxed{2}."]
    assert many["usage"]["completion_tokens"] == 30  # n choices take consecutive samples


async def test_script_faults_error_hang_and_disconnect(profiles):
    up = SimulatedUpstream("sim-x", "Thinker", profiles, FAST)
    body = _scripted({"tokens": 10, "error": 503}, {"tokens": 10, "error": 400}, {"tokens": 10, "hang": True},
                     {"tokens": 200, "answer": "1", "disconnect_at": 48}, {"tokens": 50, "answer": "2"})
    with pytest.raises(UpstreamError) as info:
        await _collect(up, body)
    assert info.value.kind == "http_5xx"
    with pytest.raises(UpstreamRejected):
        await up.complete(body, timeout_s=5)
    start = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        await _collect(up, body, timeout_s=0.2)
    assert time.monotonic() - start >= 0.19
    got = []
    with pytest.raises(UpstreamError) as info:
        async for chunk in up.stream(body, timeout_s=5):
            got.append(chunk)
    assert info.value.kind == "disconnect"
    words = sum(_words(c["choices"][0]["delta"].get("reasoning_content")) for c in got if c["choices"])
    assert words == 48  # dropped at the chunk boundary at 48 tokens
    assert (await up.complete(body, timeout_s=5))["usage"]["completion_tokens"] == 50
    s = up.stats
    assert (s.errors_injected, s.hangs_injected, s.disconnects_injected) == (2, 1, 1)
    assert [(c.script_index, c.tokens, c.closed_early, c.done) for c in s.connections] == [
        (0, 0, False, True), (1, 0, False, True), (2, 0, True, False), (3, 48, True, False), (4, 50, False, True)]
    assert s.connections_closed_early == 2 and s.tokens_sent == 98


async def test_a_models_own_faults_fail_scripted_requests_without_using_the_script(profiles):
    up = _faulty(profiles, error_rate=1.0, error_status=502)
    with pytest.raises(UpstreamError):
        await up.complete(_scripted({"tokens": 10, "answer": "1"}, {"tokens": 20, "answer": "2"}), timeout_s=5)
    up.engine.settings = FAST  # the model recovers: the script starts from its first sample
    assert (await up.complete(_scripted({"tokens": 10, "answer": "1"}), timeout_s=5))["usage"]["completion_tokens"] == 10


async def test_a_shared_script_book_counts_across_models(profiles):
    book = ScriptBook()
    a = SimulatedUpstream("a", "Thinker", profiles, FAST, scripts=book)
    b = SimulatedUpstream("b", "Talker", profiles, FAST, scripts=book)
    lone = SimulatedUpstream("c", "Talker", profiles, FAST)
    body = _scripted({"tokens": 10, "answer": "1"}, {"tokens": 20, "answer": "2"})
    assert (await a.complete(body, timeout_s=5))["usage"]["completion_tokens"] == 10
    assert (await b.complete(body, timeout_s=5))["usage"]["completion_tokens"] == 20
    assert (await lone.complete(body, timeout_s=5))["usage"]["completion_tokens"] == 10  # its own book
    assert book.served() == {"s": 2}


@pytest.mark.parametrize("script, param", [
    ("x", "sim_script"),
    ({"id": "", "samples": [{"tokens": 1}]}, "sim_script.id"),
    ({"id": "x", "samples": []}, "sim_script.samples"),
    ({"id": "x", "samples": [{"tokens": 0}]}, "sim_script.samples[0].tokens"),
    ({"id": "x", "samples": [{"tokens": 5}, {"tokens": 5, "answer": 3}]}, "sim_script.samples[1].answer"),
    ({"id": "x", "samples": [{"tokens": 5, "error": 200}]}, "sim_script.samples[0].error"),
    ({"id": "x", "samples": [{"tokens": 5, "hang": "yes"}]}, "sim_script.samples[0].hang"),
    ({"id": "x", "samples": [{"tokens": 5, "disconnect_at": -1}]}, "sim_script.samples[0].disconnect_at"),
    ({"id": "x", "samples": [{"tokens": 5, "colour": "red"}]}, "sim_script.samples[0]"),
    ({"id": "x", "samples": [{"tokens": 5}], "extra": 1}, "sim_script"),
])
async def test_bad_scripts_are_rejected_without_moving_the_script_on(profiles, script, param):
    up = SimulatedUpstream("sim-x", "Thinker", profiles, FAST)
    with pytest.raises(UpstreamRejected) as info:
        await up.complete(_ask("x", sim_script=script), timeout_s=5)
    assert info.value.param == param
    assert up.engine.scripts.served() == {}


async def test_stats_record_each_connection_and_early_closes(profiles):
    up = _faulty(profiles, tps=20_000, chunk=16)
    await up.complete(_scripted({"tokens": 64, "answer": "1"}, script_id="full"), timeout_s=5)
    assert len(await _collect(up, _scripted({"tokens": 64, "answer": "1"}, script_id="stream"))) > 4
    stream = up.stream(_scripted({"tokens": 5000, "answer": "1"}, script_id="closed"), timeout_s=5)
    async for chunk in stream:
        if chunk["choices"] and chunk["choices"][0]["delta"].get("reasoning_content"):
            break
    await stream.aclose()  # what a cutoff does

    async def consume() -> None:
        async for _ in up.stream(_scripted({"tokens": 5000, "answer": "1"}, script_id="cancelled"), timeout_s=5):
            pass

    task = asyncio.create_task(consume())
    while not up.stats.connections or up.stats.connections[-1].tokens < 64:
        await asyncio.sleep(0.001)
    assert up.stats.streams_open == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    conns = {c.script: c for c in up.stats.connections}
    assert [c.id for c in up.stats.connections] == [1, 2, 3, 4]
    assert (conns["full"].tokens, conns["full"].done, conns["full"].stream) == (64, True, False)
    assert (conns["stream"].tokens, conns["stream"].done, conns["stream"].closed_early) == (64, True, False)
    assert conns["closed"].closed_early and conns["closed"].tokens == 16
    assert conns["cancelled"].closed_early and 64 <= conns["cancelled"].tokens < 5000
    stats = up.stats.to_dict()
    assert stats["connections_closed_early"] == 2 and stats["streams_open"] == 0 and stats["requests"] == 4
    assert stats["tokens_sent"] == sum(c["tokens"] for c in stats["connections"])
