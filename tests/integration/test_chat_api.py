"""The proxy as a user meets it: a real server process, the official `openai` client.

One proxy process serves several configured models: in-process simulated ones, a real
`pareto-proxy sim` process behind the fast OpenAI path and behind litellm, a recording upstream
that shows what was sent, and broken upstreams (refused, hanging, disconnecting).
"""

from __future__ import annotations

import json
import math

import httpx
import openai
import pytest
from openai import AsyncOpenAI, OpenAI

from tests.conftest import free_port, start_proxy, start_sim, wait_traces
from tests.integration.recorder import Recorder

KEY = "sk-test-team-a-0123456789"
KEY_B = "sk-test-team-b-0123456789"
UPSTREAM_KEY = "sk-upstream-secret-987"
FAST = {"tokens_per_second": 1_000_000, "tokens_per_chunk": 64}
R1_PRICE = (0.28, 0.42)  # the profile's price for R1 (trace_model_prices.csv)


@pytest.fixture(scope="module")
def recorder():
    r = Recorder().start()
    yield r
    r.stop()


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    p = start_sim(tmp_path_factory.mktemp("sim"))
    yield p
    p.stop()


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, recorder, sim):
    tmp = tmp_path_factory.mktemp("proxy")
    config = {
        "models": [
            {"name": "sim-r1", "provider": "simulated", "profile": "R1", "simulator": {**FAST, "seed": 1}},
            {"name": "sim-chat", "provider": "simulated", "profile": "Deepseek", "simulator": FAST},
            {"name": "recorded", "provider": "openai", "model": "upstream-model-id", "api_base": recorder.url,
             "api_key_env": "TEST_UPSTREAM_KEY", "price": {"input_usd_per_mtok": 1.0, "output_usd_per_mtok": 2.0}},
            {"name": "via-sim", "provider": "openai", "model": "R1", "api_base": sim.base_url, "profile": "R1"},
            {"name": "via-litellm", "provider": "hosted_vllm", "model": "R1", "api_base": sim.base_url,
             "profile": "R1", "price": {"input_usd_per_mtok": 0.28, "output_usd_per_mtok": 0.42}},
            {"name": "down", "provider": "openai", "api_base": f"http://127.0.0.1:{free_port()}/v1",
             "price": {"input_usd_per_mtok": 1.0, "output_usd_per_mtok": 1.0}},
            {"name": "hang", "provider": "simulated", "profile": "R1", "timeout_s": 0.5,
             "simulator": {**FAST, "faults": {"hang_rate": 1.0}}},
            {"name": "flaky", "provider": "simulated", "profile": "R1",
             "simulator": {"tokens_per_second": 200_000, "tokens_per_chunk": 16, "faults": {"disconnect_rate": 1.0}}},
        ],
        "keys": [{"key_env": "TEAM_A_KEY", "team": "team-a", "default_task": "math"},
                 {"key_env": "TEAM_B_KEY", "team": "team-b"}],
        "max_body_bytes": 65536,
    }
    p = start_proxy(tmp, config, env={"TEAM_A_KEY": KEY, "TEAM_B_KEY": KEY_B, "TEST_UPSTREAM_KEY": UPSTREAM_KEY})
    yield p
    p.stop()


@pytest.fixture
def client(proxy) -> OpenAI:
    return OpenAI(base_url=proxy.base_url, api_key=KEY, max_retries=0, timeout=30)


def raw_chat(proxy, body: dict, key: str = KEY) -> httpx.Response:
    return httpx.post(f"{proxy.base_url}/chat/completions", json=body, timeout=30,
                      headers={"Authorization": f"Bearer {key}"})


def sse_events(resp: httpx.Response) -> list[str]:
    return [line[5:].strip() for line in resp.text.splitlines() if line.startswith("data:")]


MSG = [{"role": "user", "content": "Say hello."}]


# ---- answers ---------------------------------------------------------------------------------


def test_non_streaming_body_headers_and_cost(proxy, validate):
    r = raw_chat(proxy, {"model": "sim-r1", "messages": MSG})
    assert r.status_code == 200, r.text
    body = r.json()
    validate(body, "CreateChatCompletionResponse")
    assert body["id"] == r.headers["x-pareto-request-id"] and body["id"].startswith("chatcmpl-")
    assert body["model"] == r.headers["x-pareto-model"] == "sim-r1"
    assert r.headers["x-pareto-strategy"] == "single" and r.headers["x-pareto-restarts"] == "0"
    u = body["usage"]
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"] > 0
    expected = (u["prompt_tokens"] * R1_PRICE[0] + u["completion_tokens"] * R1_PRICE[1]) / 1e6
    assert math.isclose(u["cost_usd"], expected, rel_tol=1e-9)
    assert math.isclose(float(r.headers["x-pareto-cost-usd"]), expected, rel_tol=1e-6)
    assert float(r.headers["x-pareto-predicted-cost-usd"]) > 0
    # a reasoning model: reasoning tokens counted with the answer
    assert u["completion_tokens_details"]["reasoning_tokens"] > 0
    assert body["choices"][0]["message"]["reasoning_content"]


def test_sync_client(client):
    r = client.chat.completions.create(model="sim-chat", messages=MSG)
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content
    assert r.model == "sim-chat"
    assert r.usage.model_extra["cost_usd"] > 0


async def test_async_client_streaming_and_not(proxy):
    client = AsyncOpenAI(base_url=proxy.base_url, api_key=KEY, max_retries=0, timeout=30)
    r = await client.chat.completions.create(model="sim-r1", messages=MSG)
    assert r.choices[0].finish_reason in ("stop", "length")
    stream = await client.chat.completions.create(model="sim-r1", messages=MSG, stream=True)
    text = reasoning = ""
    async for chunk in stream:
        for ch in chunk.choices:
            text += ch.delta.content or ""
            reasoning += (ch.delta.model_extra or {}).get("reasoning_content") or ""
    assert reasoning and text
    await client.close()


def test_streaming_with_usage_chunks_valid(proxy, validate):
    with httpx.stream("POST", f"{proxy.base_url}/chat/completions", timeout=30,
                      headers={"Authorization": f"Bearer {KEY}"},
                      json={"model": "sim-r1", "messages": MSG, "stream": True,
                            "stream_options": {"include_usage": True}, "routing": {"explain": True}}) as r:
        assert r.status_code == 200
        assert r.headers["x-pareto-model"] == "sim-r1" and r.headers["x-pareto-strategy"] == "single"
        rid = r.headers["x-pareto-request-id"]
        r.read()
        events = sse_events(r)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    for ch in chunks:
        validate(ch, "CreateChatCompletionStreamResponse")
        assert ch["id"] == rid and ch["model"] == "sim-r1"
    kinds = ["r" if c["choices"] and c["choices"][0]["delta"].get("reasoning_content") else
             "c" if c["choices"] and c["choices"][0]["delta"].get("content") else "-" for c in chunks]
    assert "r" in kinds and "c" in kinds and kinds.index("r") < kinds.index("c"), "reasoning streams first"
    last = chunks[-1]
    assert last["choices"] == [] and last["usage"]["cost_usd"] > 0
    assert last["pareto"]["cost_usd"] == last["usage"]["cost_usd"]
    samples = last["routing"]["samples"]
    assert len(samples) == 1 and samples[0]["completion_tokens"] == last["usage"]["completion_tokens"]


def test_streaming_without_usage_carries_cost_on_final_chunk(client):
    chunks = list(client.chat.completions.create(model="sim-chat", messages=MSG, stream=True))
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert chunks[-1].model_extra["pareto"]["cost_usd"] > 0


def test_n_two(client, validate):
    r = client.chat.completions.create(model="sim-r1", messages=MSG, n=2, seed=7)
    assert [c.index for c in r.choices] == [0, 1]
    validate(r.model_dump(exclude_unset=True), "CreateChatCompletionResponse")


def test_tools_and_response_format_pass_through_untouched(client, recorder):
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "weather",
                                                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    fmt = {"type": "json_schema", "json_schema": {"name": "out", "schema": {"type": "object"}}}
    recorder.requests.clear()
    r = client.chat.completions.create(model="recorded", messages=MSG, tools=tools, tool_choice="auto",
                                       response_format=fmt, seed=3, user="u1",
                                       extra_body={"routing": {"explain": True}, "custom_field": {"x": 1}})
    assert r.choices[0].message.content == "recorded answer"
    sent = recorder.requests[-1]
    assert sent["body"]["tools"] == tools and sent["body"]["tool_choice"] == "auto"
    assert sent["body"]["response_format"] == fmt and sent["body"]["seed"] == 3
    assert sent["body"]["custom_field"] == {"x": 1}, "unknown fields pass through"
    assert "routing" not in sent["body"], "the proxy's own field is not forwarded"
    assert sent["body"]["model"] == "upstream-model-id"
    assert sent["headers"]["Authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert r.id.startswith("chatcmpl-") and r.id != "chatcmpl-upstream"
    assert r.usage.model_extra["cost_usd"] == pytest.approx((11 * 1.0 + 7 * 2.0) / 1e6)


def test_separate_sim_process_fast_path(client, sim):
    before = httpx.get(f"{sim.url}/sim/stats").json()
    r = client.chat.completions.create(model="via-sim", messages=MSG)
    assert r.model == "via-sim" and r.usage.completion_tokens > 0
    chunks = list(client.chat.completions.create(model="via-sim", messages=MSG, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[-1].usage.completion_tokens > 0
    after = httpx.get(f"{sim.url}/sim/stats").json()
    assert after["tokens_sent"] - before["tokens_sent"] == r.usage.completion_tokens + chunks[-1].usage.completion_tokens


def test_litellm_adapter(client):
    r = client.chat.completions.create(model="via-litellm", messages=MSG)
    assert r.model == "via-litellm" and r.choices[0].message.content
    assert r.usage.completion_tokens > 0
    assert r.usage.model_extra["cost_usd"] == pytest.approx(
        (r.usage.prompt_tokens * 0.28 + r.usage.completion_tokens * 0.42) / 1e6)
    chunks = list(client.chat.completions.create(model="via-litellm", messages=MSG, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_auto_alias_is_planned(client):
    r = client.chat.completions.create(model="auto", messages=MSG, extra_body={"routing": {"explain": True}})
    routing = r.model_extra["routing"]
    assert routing["reason"].startswith("balanced (balanced)") and routing["policy"] == "balanced"
    assert routing["plan"]["model"] == r.model and routing["plan"]["predicted_accuracy"] > 0
    assert routing["task"] == "math" and routing["task_source"] == "key"
    r = client.chat.completions.create(model="auto/cheap", messages=MSG, extra_body={"routing": {"explain": True}})
    assert r.model_extra["routing"]["reason"].startswith("cheap (cheap)")


def test_models_list(client, proxy, validate):
    ids = [m.id for m in client.models.list().data]
    assert {"sim-r1", "recorded", "auto", "auto/balanced", "auto/accurate"} <= set(ids)
    raw = httpx.get(f"{proxy.base_url}/models", headers={"Authorization": f"Bearer {KEY}"}).json()
    validate(raw, "ListModelsResponse")


def test_passthrough_other_paths(client, recorder):
    e = client.embeddings.create(model="recorded", input="hello")
    assert e.data[0].embedding == [0.1, 0.2, 0.3]
    assert recorder.requests[-1]["path"] == "/v1/embeddings"
    assert recorder.requests[-1]["body"]["model"] == "upstream-model-id"
    with pytest.raises(openai.NotFoundError) as ei:
        client.embeddings.create(model="sim-r1", input="hello")
    assert "not OpenAI-compatible" in ei.value.message


def test_health_ready_metrics(proxy, client):
    client.chat.completions.create(model="sim-r1", messages=MSG)
    assert httpx.get(f"{proxy.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{proxy.url}/readyz").json()["status"] == "ready"
    text = httpx.get(f"{proxy.url}/metrics").text
    assert 'pareto_requests_total{model="sim-r1",policy="balanced",status="200",strategy="single"}' in text
    assert 'pareto_cost_usd_total{model="sim-r1",team="team-a"}' in text
    assert 'pareto_tokens_total{model="sim-r1",type="completion"}' in text
    for name in ("pareto_upstream_seconds_bucket", "pareto_overhead_seconds_bucket", "pareto_inflight_requests",
                 "pareto_request_cost_usd_bucket", "pareto_cost_prediction_ratio_bucket"):
        assert name in text, name
    assert KEY not in text and "k_" not in text, "no key ids in metric labels"


# ---- errors ------------------------------------------------------------------------------------


def _assert_error(r: httpx.Response, status: int, validate, code: str | None = None, param: str | None = None):
    assert r.status_code == status, r.text
    body = r.json()
    validate(body, "ErrorResponse")
    if code is not None:
        assert body["error"]["code"] == code
    if param is not None:
        assert body["error"]["param"] == param
    assert "Traceback" not in r.text
    return body["error"]


def test_malformed_json(proxy, validate):
    r = httpx.post(f"{proxy.base_url}/chat/completions", content=b'{"model": "sim-r1", "messages": [',
                   headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    err = _assert_error(r, 400, validate, code="invalid_json")
    assert "not valid JSON" in err["message"]


@pytest.mark.parametrize("patch,param", [
    ({"temperature": "hot"}, "temperature"),
    ({"messages": "hello"}, "messages"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
    ({"n": 0}, "n"),
    ({"stream": "yes"}, "stream"),
    ({"max_tokens": -5}, "max_tokens"),
    ({"model": 42}, "model"),
    ({"routing": {"explain": True, "colour": "red"}}, "routing.colour"),
    ({"routing": {"task": "poetry"}}, "routing.task"),
    ({"routing": {"strategy": {"name": "parallel", "k": "four"}}}, "routing.strategy.k"),
])
def test_wrong_field_types(proxy, validate, patch, param):
    _assert_error(raw_chat(proxy, {"model": "sim-r1", "messages": MSG, **patch}), 400, validate, param=param)


def test_missing_messages_and_model(proxy, validate):
    _assert_error(raw_chat(proxy, {"model": "sim-r1"}), 400, validate, param="messages")
    _assert_error(raw_chat(proxy, {"messages": MSG}), 400, validate, param="model")


def test_unknown_model_and_path(client, proxy, validate):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-17", messages=MSG)
    err = _assert_error(raw_chat(proxy, {"model": "gpt-17", "messages": MSG}), 404, validate, code="model_not_found")
    assert "GET /v1/models" in err["message"]
    _assert_error(raw_chat(proxy, {"model": "auto/lavish", "messages": MSG}), 404, validate)
    _assert_error(httpx.get(f"{proxy.base_url}/nope"), 404, validate)


def test_bad_or_missing_key(proxy, validate):
    bad = OpenAI(base_url=proxy.base_url, api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="sim-r1", messages=MSG)
    _assert_error(raw_chat(proxy, {"model": "sim-r1", "messages": MSG}, key="sk-wrong"), 401, validate)
    r = httpx.post(f"{proxy.base_url}/chat/completions", json={"model": "sim-r1", "messages": MSG})
    _assert_error(r, 401, validate)
    _assert_error(httpx.get(f"{proxy.base_url}/models"), 401, validate)


def test_oversize_body(proxy, validate):
    big = [{"role": "user", "content": "x" * 70_000}]
    _assert_error(raw_chat(proxy, {"model": "sim-r1", "messages": big}), 413, validate, code="payload_too_large")

    def chunks():  # no Content-Length: the limit must still hold while streaming the body in
        yield b'{"model": "sim-r1", "messages": [{"role": "user", "content": "'
        for _ in range(100):
            yield b"y" * 1000
        yield b'"}]}'

    r = httpx.post(f"{proxy.base_url}/chat/completions", content=chunks(),
                   headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    _assert_error(r, 413, validate)


def test_upstream_down(client, proxy, validate):
    with pytest.raises(openai.APIStatusError) as ei:
        client.chat.completions.create(model="down", messages=MSG)
    assert ei.value.status_code == 502
    _assert_error(raw_chat(proxy, {"model": "down", "messages": MSG, "stream": True}), 502, validate)


def test_breaker_opens_for_a_downed_model(client, proxy):
    for _ in range(3):  # 3 attempts each: the breaker (5 failures) opens during the second request
        with pytest.raises(openai.APIStatusError):
            client.chat.completions.create(model="down", messages=MSG)
    with pytest.raises(openai.APIStatusError) as ei:
        client.chat.completions.create(model="down", messages=MSG)
    assert ei.value.status_code == 502 and "circuit breaker is open" in ei.value.message
    metrics = httpx.get(f"{proxy.url}/metrics").text
    assert 'pareto_upstream_errors_total{kind="connect",model="down"}' in metrics


def test_upstream_timeout(proxy, validate):
    _assert_error(raw_chat(proxy, {"model": "hang", "messages": MSG}), 504, validate, code="upstream_timeout")
    _assert_error(raw_chat(proxy, {"model": "hang", "messages": MSG, "stream": True}), 504, validate)


def test_upstream_disconnect_mid_stream(client):
    stream = client.chat.completions.create(model="flaky", messages=MSG, stream=True)
    got = 0
    with pytest.raises(openai.APIError) as ei:
        for _ in stream:
            got += 1
    assert got > 0, "some chunks arrived before the failure"
    assert "upstream" in str(ei.value.message)


# ---- feedback, traces, secrets ------------------------------------------------------------------


def test_feedback(client, proxy, validate):
    r = client.chat.completions.create(model="sim-r1", messages=MSG)
    h = {"Authorization": f"Bearer {KEY}"}
    ok = httpx.post(f"{proxy.base_url}/feedback", json={"id": r.id, "correct": True}, headers=h)
    assert ok.status_code == 200 and ok.json()["recorded"] is True
    assert httpx.post(f"{proxy.base_url}/feedback", json={"id": r.id, "score": 0.5}, headers=h).status_code == 200
    _assert_error(httpx.post(f"{proxy.base_url}/feedback", json={"id": "chatcmpl-nope", "correct": True}, headers=h),
                  404, validate)
    _assert_error(httpx.post(f"{proxy.base_url}/feedback", json={"id": r.id, "correct": "yes"}, headers=h), 400,
                  validate, param="correct")
    _assert_error(httpx.post(f"{proxy.base_url}/feedback", json={"id": r.id}, headers=h), 400, validate)
    other_team = {"Authorization": f"Bearer {KEY_B}"}
    _assert_error(httpx.post(f"{proxy.base_url}/feedback", json={"id": r.id, "correct": False}, headers=other_team),
                  404, validate)


def test_traces_match_responses_and_hold_no_secrets(proxy, client):
    traces_dir = proxy.tmp / "traces"
    before = len(wait_traces(traces_dir, 0))
    r1 = client.chat.completions.create(model="sim-r1", messages=MSG, extra_body={"routing": {"task": "science"}})
    chunks = list(client.chat.completions.create(model="sim-chat", messages=MSG, stream=True,
                                                 stream_options={"include_usage": True}))
    with pytest.raises(openai.APIStatusError):
        client.chat.completions.create(model="down", messages=MSG)
    recs = {r["id"]: r for r in wait_traces(traces_dir, before + 3)}
    t1 = recs[r1.id]
    assert t1["team"] == "team-a" and t1["key_id"].startswith("k_") and t1["status"] == 200
    assert t1["task"] == "science" and t1["task_source"] == "explicit"
    s = t1["samples"][0]
    assert s["prompt_tokens"] == r1.usage.prompt_tokens and s["completion_tokens"] == r1.usage.completion_tokens
    assert t1["cost_usd"] == pytest.approx(r1.usage.model_extra["cost_usd"])
    assert t1["plan"]["model"] == "sim-r1" and t1["predicted_cost_usd"] > 0
    t2 = recs[chunks[-1].id]
    assert t2["samples"][0]["completion_tokens"] == chunks[-1].usage.completion_tokens
    assert t2["task"] == "math" and t2["task_source"] == "key"
    failed = [r for r in recs.values() if r["status"] == 502]
    assert failed and failed[-1]["cost_usd"] == 0
    on_disk = "".join(f.read_text() for f in traces_dir.glob("*.jsonl")) + proxy.log.read_text()
    assert KEY not in on_disk and UPSTREAM_KEY not in on_disk
    assert "Say hello." not in on_disk, "prompts are stored only with store_text: true"
    for line in proxy.log.read_text().splitlines():
        if line.startswith("{"):
            json.loads(line)  # structured logs: every log line is JSON


def test_client_disconnect_cancels_upstream_and_bills_what_was_received(proxy, sim):
    """The client reads a few chunks and hangs up: the upstream connection is closed at once and
    the tokens received so far are billed (counted by the proxy, since no usage arrived)."""
    import time

    before = httpx.get(f"{sim.url}/sim/stats").json()
    with httpx.stream("POST", f"{proxy.base_url}/chat/completions", timeout=30,
                      headers={"Authorization": f"Bearer {KEY}"},
                      json={"model": "via-sim", "messages": MSG, "stream": True, "max_tokens": 20000,
                            "seed": 11}) as r:
        rid = r.headers["x-pareto-request-id"]
        lines = r.iter_lines()
        got = [next(lines) for _ in range(6)]
    assert any(x.startswith("data:") for x in got)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        after = httpx.get(f"{sim.url}/sim/stats").json()
        if after["connections_closed_early"] > before["connections_closed_early"]:
            break
        time.sleep(0.05)
    assert after["connections_closed_early"] == before["connections_closed_early"] + 1
    rec = {t["id"]: t for t in wait_traces(proxy.tmp / "traces", 1)}
    deadline = time.monotonic() + 10
    while rid not in rec and time.monotonic() < deadline:
        time.sleep(0.05)
        rec = {t["id"]: t for t in wait_traces(proxy.tmp / "traces", 1)}
    t = rec[rid]
    assert t["status"] == 499 and t["samples"][0]["cancelled"] is True
    sent = after["tokens_sent"] - before["tokens_sent"]
    billed = t["samples"][0]["completion_tokens"]
    assert 0 < billed <= sent + 64, (billed, sent)
    assert t["cost_usd"] > 0


def test_task_is_labelled_from_the_last_user_turn(proxy):
    b = OpenAI(base_url=proxy.base_url, api_key=KEY_B, max_retries=0, timeout=30)  # a key with no default task
    messages = [{"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "Write a Python function that merges two sorted lists."},
                {"role": "assistant", "content": "def merge(a, b): ..."},
                {"role": "user", "content": "What is 48 * 17? Put the final answer in \\boxed{}."}]
    r = b.chat.completions.create(model="auto", messages=messages, max_tokens=50,
                                  extra_body={"routing": {"explain": True}})
    routing = r.model_extra["routing"]
    assert (routing["task"], routing["task_source"]) == ("math", "classifier")
    r = b.chat.completions.create(model="auto", messages=messages, max_tokens=50,
                                  extra_body={"routing": {"explain": True, "task": "science"}})
    assert (r.model_extra["routing"]["task"], r.model_extra["routing"]["task_source"]) == ("science", "explicit")
