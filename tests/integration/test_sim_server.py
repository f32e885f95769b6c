"""The simulator's own HTTP server, as a user meets it: a real process on a free port, called
with the official `openai` client (max_retries=0, timeouts on every call)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jsonschema
import openai
import pytest
import yaml

REPO = Path(__file__).parents[2]
SCHEMAS = Path(__file__).parents[3] / "shared" / "reference" / "openai-chat-schemas.json"
CALL_TIMEOUT = 30.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(tmp: Path, config: dict | None = None) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    cmd = [sys.executable, "-m", "proxy.upstream.simulator", "--port", str(port)]
    if config is not None:
        path = tmp / f"sim-{port}.yaml"
        path.write_text(yaml.safe_dump(config))
        cmd += ["--config", str(path)]
    log = tmp / f"sim-{port}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARETO_")}  # only our config counts
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"simulator exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/v1/models", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"simulator not ready:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def check():
    spec = json.loads(SCHEMAS.read_text())
    cache: dict[str, jsonschema.Draft202012Validator] = {}

    def run(body: object, name: str) -> None:
        v = cache.setdefault(name, jsonschema.Draft202012Validator(
            {"$ref": f"#/components/schemas/{name}", "components": spec["components"]}))
        errors = [f"{list(e.absolute_path)}: {e.message}" for e in v.iter_errors(body)]
        assert not errors, f"{name}: {errors}"

    return run


@pytest.fixture(scope="module")
def sim(tmp_path_factory) -> Iterator[str]:
    """The simulator with no config: every profiled model, as `R1` and as `sim-r1`."""
    proc, url = _start(tmp_path_factory.mktemp("sim"))
    yield url
    _stop(proc)


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=CALL_TIMEOUT)


def _stats(url: str) -> dict:
    return httpx.get(f"{url}/sim/stats", timeout=CALL_TIMEOUT).json()


def test_models_lists_profiled_models_under_both_names(sim, check):
    raw = httpx.get(f"{sim}/v1/models", timeout=CALL_TIMEOUT).json()
    check(raw, "ListModelsResponse")
    ids = {m.id for m in _client(sim).models.list()}
    assert {"R1", "sim-r1", "GPT-OSS-120B", "sim-gpt-oss-120b"} <= ids


def test_openai_client_non_streaming_and_streaming_count_tokens_sent(sim, check):
    client = _client(sim)
    before = _stats(sim)
    prompt = "Compute 2 + 2.\n\n[pareto-task arithmetic easy 4]"
    raw = client.chat.completions.with_raw_response.create(
        model="sim-r1", messages=[{"role": "user", "content": prompt}], max_tokens=300, seed=3)
    check(raw.http_response.json(), "CreateChatCompletionResponse")
    done = raw.parse()
    assert done.model == "sim-r1" and done.id.startswith("chatcmpl-")
    reasoning = done.choices[0].message.model_extra["reasoning_content"]
    words = len(reasoning.split()) + len((done.choices[0].message.content or "").split())
    assert words == done.usage.completion_tokens <= 300
    assert done.usage.completion_tokens_details.reasoning_tokens == len(reasoning.split())

    chunks = list(client.chat.completions.create(
        model="R1", messages=[{"role": "user", "content": "hello"}], max_tokens=250,
        stream=True, stream_options={"include_usage": True}))
    for chunk in chunks:
        check(chunk.model_dump(exclude_unset=True), "CreateChatCompletionStreamResponse")
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage is not None
    text = "".join((c.choices[0].delta.model_extra.get("reasoning_content") or "") + (c.choices[0].delta.content or "")
                   for c in chunks if c.choices)
    assert len(text.split()) == usage.completion_tokens
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finish) == 1

    after = _stats(sim)
    assert after["requests"] - before["requests"] == 2
    assert after["tokens_sent"] - before["tokens_sent"] == done.usage.completion_tokens + usage.completion_tokens
    assert after["connections_closed_early"] == before["connections_closed_early"]


def test_errors_come_as_openai_envelopes(sim, check):
    with pytest.raises(openai.NotFoundError) as info:
        _client(sim).chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    check(info.value.body and {"error": info.value.body}, "ErrorResponse")
    for body in (b"{not json", b'{"model": "R1", "messages": []}'):
        r = httpx.post(f"{sim}/v1/chat/completions", content=body, timeout=CALL_TIMEOUT)
        assert r.status_code == 400
        check(r.json(), "ErrorResponse")


def test_disconnect_fault_breaks_the_stream_without_hanging(tmp_path, check):
    config = {
        "profiles": str(REPO / "profiles" / "default.json"),
        "models": [
            {"name": "flaky", "provider": "simulated", "profile": "R1",
             "simulator": {"tokens_per_second": 1e6, "tokens_per_chunk": 8, "faults": {"disconnect_rate": 1.0}}},
            {"name": "broken", "provider": "simulated", "profile": "Deepseek",
             "simulator": {"tokens_per_second": 1e6, "faults": {"error_rate": 1.0, "error_status": 503}}},
            {"name": "stuck", "provider": "simulated", "profile": "QwQ", "simulator": {"faults": {"hang_rate": 1.0}}},
        ],
    }
    proc, url = _start(tmp_path, config)
    try:
        client = _client(url)
        assert {m.id for m in client.models.list()} == {"flaky", "broken", "stuck"}
        received = []
        start = time.monotonic()
        with pytest.raises((openai.APIError, httpx.HTTPError)):
            for chunk in client.chat.completions.create(
                    model="flaky", messages=[{"role": "user", "content": "hi"}], max_tokens=400, stream=True):
                received.append(chunk)
        assert time.monotonic() - start < CALL_TIMEOUT  # it broke; it did not wait out the timeout
        assert 0 < len(received) < 400 // 8 + 2 and all(c.choices[0].finish_reason is None for c in received)
        with pytest.raises(openai.APIConnectionError):
            client.chat.completions.create(model="flaky", messages=[{"role": "user", "content": "hi"}], max_tokens=50)
        with pytest.raises(openai.InternalServerError) as info:
            client.chat.completions.create(model="broken", messages=[{"role": "user", "content": "hi"}])
        assert info.value.status_code == 503
        check({"error": info.value.body}, "ErrorResponse")
        stats = _stats(url)
        assert stats["disconnects_injected"] == 2 and stats["connections_closed_early"] == 2
        assert stats["errors_injected"] == 1 and stats["requests"] == 3
        assert 0 < stats["tokens_sent"] < 400

        # a hung upstream never answers: the client's own timeout is what ends the call
        with pytest.raises(openai.APITimeoutError):
            client.with_options(timeout=1.0).chat.completions.create(
                model="stuck", messages=[{"role": "user", "content": "hi"}])
        deadline = time.monotonic() + CALL_TIMEOUT
        while (stats := _stats(url))["connections_closed_early"] < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stats["hangs_injected"] == 1 and stats["connections_closed_early"] == 3
    finally:
        _stop(proc)


def test_scripted_samples_over_http_and_per_connection_stats(sim, check):
    """A script reaches the server through the openai client's extra_body, is counted per
    process across model names, and /sim/stats shows each connection and how it ended."""
    client = _client(sim)
    script = {"id": "http-script", "samples": [{"tokens": 120, "answer": "42"}, {"tokens": 60, "answer": "C"},
                                                {"tokens": 4000, "answer": "1"}]}
    first = client.chat.completions.create(model="sim-r1", messages=[{"role": "user", "content": "q"}],
                                           extra_body={"sim_script": script})
    assert first.usage.completion_tokens == 120 and first.choices[0].message.content.endswith("\\boxed{42}.")
    chunks = list(client.chat.completions.create(
        model="R1", messages=[{"role": "user", "content": "q"}], stream=True,
        stream_options={"include_usage": True}, extra_body={"sim_script": script}))
    for chunk in chunks:
        check(chunk.model_dump(exclude_unset=True), "CreateChatCompletionStreamResponse")
    assert chunks[-1].usage.completion_tokens == 60
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).endswith("Answer: C")

    # a client that stops reading: the server sees the connection close early
    body = {"model": "sim-r1", "messages": [{"role": "user", "content": "q"}], "stream": True, "sim_script": script}
    with httpx.stream("POST", f"{sim}/v1/chat/completions", json=body, timeout=CALL_TIMEOUT) as r:
        for line in r.iter_lines():
            if "reasoning_content" in line:
                break
    deadline = time.monotonic() + CALL_TIMEOUT
    while True:
        stats = _stats(sim)
        mine = [c for c in stats["connections"] if c["script"] == "http-script"]
        if len(mine) == 3 and mine[2]["closed_early"] or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert [(c["script_index"], c["tokens"], c["done"], c["closed_early"]) for c in mine[:2]] == [
        (0, 120, True, False), (1, 60, True, False)]
    assert [c["stream"] for c in mine] == [False, True, True] and [c["model"] for c in mine] == ["sim-r1", "R1", "sim-r1"]
    assert mine[2]["closed_early"] and 0 < mine[2]["tokens"] < 4000
    assert stats["streams_open"] == 0 and stats["connections_closed_early"] >= 1
    ids = [c["id"] for c in stats["connections"]]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_script_faults_over_http(sim):
    client = _client(sim)
    script = {"id": "http-faults", "samples": [{"tokens": 10, "error": 503}, {"tokens": 300, "disconnect_at": 64},
                                                {"tokens": 5, "answer": "9"}]}
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model="sim-r1", messages=[{"role": "user", "content": "q"}],
                                       extra_body={"sim_script": script})
    assert info.value.status_code == 503
    received = []
    with pytest.raises((openai.APIError, httpx.HTTPError)):
        for chunk in client.chat.completions.create(model="sim-r1", messages=[{"role": "user", "content": "q"}],
                                                    stream=True, extra_body={"sim_script": script}):
            received.append(chunk)
    text = "".join((c.choices[0].delta.model_extra.get("reasoning_content") or "") for c in received if c.choices)
    assert len(text.split()) == 64
    done = client.chat.completions.create(model="sim-r1", messages=[{"role": "user", "content": "q"}],
                                          extra_body={"sim_script": script})
    assert done.usage.completion_tokens == 5
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="sim-r1", messages=[{"role": "user", "content": "q"}],
                                       extra_body={"sim_script": {"id": "bad", "samples": [{"tokens": 0}]}})
    assert info.value.body["param"] == "sim_script.samples[0].tokens"
    mine = [c for c in _stats(sim)["connections"] if c["script"] == "http-faults"]
    assert [(c["tokens"], c["done"], c["closed_early"]) for c in mine] == [(0, True, False), (64, False, True), (5, True, False)]
