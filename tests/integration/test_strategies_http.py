"""Executed plans over real HTTP: proxy process + simulator process, scripted samples.

The simulator follows a `sim_script` carried in the body (unknown fields pass through the proxy
untouched), so each upstream call of a plan gets a known length and answer, and `/sim/stats`
shows what the simulator actually sent and which connections were closed early.
"""

from __future__ import annotations

import itertools
import json
import time

import httpx
import openai
import pytest
from openai import OpenAI

from tests.conftest import start_proxy, start_sim, wait_trace

KEY = "sk-strategies"
MSG = [{"role": "user", "content": "What is 3 + 4? Put the answer in \\boxed{}."}]
_ids = itertools.count()


def script(*samples: dict) -> dict:
    return {"sim_script": {"id": f"s{next(_ids)}-{time.monotonic_ns()}", "samples": list(samples)}}


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sim")
    p = start_sim(tmp, {"models": [{"name": "R1", "provider": "simulated", "profile": "R1",
                                    "simulator": {"tokens_per_second": 4000, "tokens_per_chunk": 16}}]})
    yield p
    p.stop()


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, sim):
    tmp = tmp_path_factory.mktemp("proxy")
    config = {"models": [{"name": "r1", "provider": "openai", "model": "R1", "api_base": sim.base_url,
                          "profile": "R1", "timeout_s": 30}],
              "keys": [{"key_env": "K", "team": "t"}]}
    p = start_proxy(tmp, config, env={"K": KEY})
    yield p
    p.stop()


@pytest.fixture
def client(proxy) -> OpenAI:
    return OpenAI(base_url=proxy.base_url, api_key=KEY, max_retries=0, timeout=60)


def stats(sim) -> dict:
    return httpx.get(f"{sim.url}/sim/stats").json()


def routing(**kw) -> dict:
    return {"routing": {"explain": True, **kw}}


def test_parallel_majority_votes_and_bills_every_sample(client, validate, proxy):
    body = script({"tokens": 120, "answer": "9"}, {"tokens": 100, "answer": "7"}, {"tokens": 140, "answer": "7"},
                  {"tokens": 90, "answer": "8"})
    raw = client.chat.completions.with_raw_response.create(
        model="r1", messages=MSG, extra_body={**body, **routing(strategy={"name": "parallel", "k": 4})})
    r = raw.parse()
    validate(json.loads(raw.text), "CreateChatCompletionResponse")
    assert "\\boxed{7}" in r.choices[0].message.content
    assert raw.headers["x-pareto-strategy"] == "parallel/majority"
    samples = r.model_extra["routing"]["samples"]
    assert len(samples) == 4 and sum(s["selected"] for s in samples) == 1
    assert r.usage.completion_tokens == 120 + 100 + 140 + 90
    assert r.usage.model_extra["cost_usd"] == pytest.approx(sum(s["cost_usd"] for s in samples))
    t = wait_trace(proxy.tmp / "traces", r.id)
    assert [s["answer"] for s in t["samples"] if s["selected"]] == ["7"]


def test_first_finish_closes_the_other_connections(client, sim):
    before = stats(sim)
    body = script({"tokens": 80, "answer": "7"}, {"tokens": 4000, "answer": "1"}, {"tokens": 4000, "answer": "2"})
    r = client.chat.completions.create(model="r1", messages=MSG,
                                       extra_body={**body, **routing(strategy={"name": "parallel", "k": 3,
                                                                               "aggregator": "first_finish"})})
    assert "\\boxed{7}" in r.choices[0].message.content
    samples = r.model_extra["routing"]["samples"]
    assert sum(s["cancelled"] for s in samples) == 2
    time.sleep(0.3)
    after = stats(sim)
    assert after["connections_closed_early"] - before["connections_closed_early"] == 2
    assert after["streams_open"] == 0
    sent = after["tokens_sent"] - before["tokens_sent"]
    billed = r.usage.completion_tokens
    assert billed >= sent - 2 * 16, "never short of what was sent by more than a chunk per cancelled stream"
    assert billed < 80 + 2 * 4000, "the losers were stopped, not run to the end"


def test_live_cutoff_and_restart(client, proxy):
    body = script({"tokens": 3000, "answer": "1"}, {"tokens": 200, "answer": "7"})
    raw = client.chat.completions.with_raw_response.create(
        model="r1", messages=MSG, extra_body={**body, **routing(cutoff_tokens=500, max_restarts=1)})
    r = raw.parse()
    assert raw.headers["x-pareto-restarts"] == "1" and "\\boxed{7}" in r.choices[0].message.content
    cut, second = r.model_extra["routing"]["samples"]
    assert cut["cut"] and 500 <= cut["completion_tokens"] <= 500 + 16
    assert second["selected"] and second["completion_tokens"] == 200
    metrics = httpx.get(f"{proxy.url}/metrics").text
    assert 'pareto_cutoffs_total{model="r1",task="math"}' in metrics, "the classifier labels the prompt math"
    assert 'pareto_restarts_total{model="r1",task="math"}' in metrics
    assert 'pareto_tokens_total{model="r1",type="wasted"}' in metrics


def test_streaming_multi_attempt_heartbeats_then_the_selected_sample(proxy, validate):
    body = {"model": "r1", "messages": MSG, "stream": True, "stream_options": {"include_usage": True},
            **script({"tokens": 5000, "answer": "7"}, {"tokens": 5200, "answer": "7"}),
            **routing(strategy={"name": "parallel", "k": 2})}
    with httpx.stream("POST", f"{proxy.base_url}/chat/completions", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {KEY}"}) as r:
        assert r.status_code == 200 and r.headers["x-pareto-strategy"] == "parallel/majority"
        lines = [line for line in r.iter_lines() if line]
    assert lines.count(": keep-alive") >= 2, "heartbeats while the samples ran (about 1.3 s)"
    data = [x[5:].strip() for x in lines if x.startswith("data:")]
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    for ch in chunks:
        validate(ch, "CreateChatCompletionStreamResponse")
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert "\\boxed{7}" in text
    assert chunks[-1]["usage"]["completion_tokens"] == 10200 and chunks[-1]["usage"]["cost_usd"] > 0


def test_client_disconnect_during_heartbeats_closes_every_upstream_stream(proxy, sim):
    before = stats(sim)
    body = {"model": "r1", "messages": MSG, "stream": True,
            **script({"tokens": 20000, "answer": "7"}, {"tokens": 20000, "answer": "7"}),
            **routing(strategy={"name": "parallel", "k": 2})}
    with httpx.stream("POST", f"{proxy.base_url}/chat/completions", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {KEY}"}) as r:
        rid = r.headers["x-pareto-request-id"]
        lines = r.iter_lines()  # held: a dropped iterator would close the response at once
        next(lines)  # the first heartbeat
        deadline = time.monotonic() + 10  # hang up once both upstream streams are under way
        while time.monotonic() < deadline:
            live = [c for c in stats(sim)["connections"] if c["script"] == body["sim_script"]["id"]]
            if len(live) == 2 and all(c["tokens"] > 0 for c in live):
                break
            time.sleep(0.02)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and stats(sim)["streams_open"]:
        time.sleep(0.05)
    after = stats(sim)
    assert after["streams_open"] == 0
    assert after["connections_closed_early"] - before["connections_closed_early"] == 2
    t = wait_trace(proxy.tmp / "traces", rid)
    assert t["status"] == 499 and len(t["samples"]) == 2
    assert all(s["cancelled"] for s in t["samples"]) and t["cost_usd"] > 0


def test_verifier_picks_and_bad_verifier_is_400(client):
    body = script({"tokens": 50, "answer": "9"}, {"tokens": 60, "answer": "7"}, {"tokens": 70, "answer": "9"})
    r = client.chat.completions.create(
        model="r1", messages=MSG,
        extra_body={**body, **routing(strategy={"name": "parallel", "k": 3, "aggregator": "best_of_n"},
                                      verifier={"name": "math_answer", "reference": "7"})})
    assert "\\boxed{7}" in r.choices[0].message.content, "the verifier beats the 2-vote majority"
    with pytest.raises(openai.BadRequestError) as ei:
        client.chat.completions.create(model="r1", messages=MSG,
                                       extra_body=routing(verifier={"name": "regex", "must_match": True}))
    assert ei.value.body["param"].startswith("routing.verifier")


def test_retry_after_a_500(client):
    body = script({"tokens": 10, "error": 500}, {"tokens": 40, "answer": "7"})
    r = client.chat.completions.create(model="r1", messages=MSG, extra_body={**body, **routing()})
    assert "\\boxed{7}" in r.choices[0].message.content
    failed, ok = r.model_extra["routing"]["samples"]
    assert failed["error"] == "http_5xx" and ok["selected"]
