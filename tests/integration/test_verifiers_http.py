"""Verifiers end to end: a real proxy process, a real simulator process, the real `openai` client.

Scripted samples (`sim_script`, passed through the proxy untouched) say exactly what each
upstream call replies, code blocks included, so each test knows which sample must win and why.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import openai
import pytest
from openai import OpenAI

from tests.conftest import start_proxy, start_sim, wait_trace

KEY = "sk-verifiers"
MSG = [{"role": "user", "content": "Write add(a, b) in Python."}]
_ids = itertools.count()

TESTS = "def test_small():\n    assert add(2, 3) == 5\n\ndef test_negative():\n    assert add(-1, -1) == -2\n"
WRONG = "Here it is:\n```python\ndef add(a, b):\n    return a - b\n```"
RIGHT = "Here it is:\n```python\ndef add(a, b):\n    return a + b\n```"
HANGS = "Here it is:\n```python\ndef add(a, b):\n    while True:\n        pass\n```"
FORK_BOMB = "Here:\n```python\nimport os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n```"


def script(*samples: dict) -> dict:
    return {"sim_script": {"id": f"v{next(_ids)}-{time.monotonic_ns()}", "samples": list(samples)}}


def text(t: str, tokens: int = 60) -> dict:
    return {"tokens": max(tokens, len(t.split())), "text": t}


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sim")
    p = start_sim(tmp, {"models": [{"name": "R1", "provider": "simulated", "profile": "R1",
                                    "simulator": {"tokens_per_second": 20000, "tokens_per_chunk": 16}}]})
    yield p
    p.stop()


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, sim):
    tmp = tmp_path_factory.mktemp("proxy")
    model = {"provider": "openai", "model": "R1", "api_base": sim.base_url, "profile": "R1", "timeout_s": 30}
    config = {"models": [{"name": "r1", **model}, {"name": "judge", **model}],
              "keys": [{"key_env": "K", "team": "t"}]}
    p = start_proxy(tmp, config, env={"K": KEY, "PARETO_TEST_SECRET": "hunter2"})
    yield p
    p.stop()


@pytest.fixture
def client(proxy) -> OpenAI:
    return OpenAI(base_url=proxy.base_url, api_key=KEY, max_retries=0, timeout=60)


def routing(**kw) -> dict:
    return {"routing": {"explain": True, "task": "code", **kw}}


def metrics(proxy) -> str:
    return httpx.get(f"{proxy.url}/metrics").text


def test_parallel_python_tests_returns_the_sample_that_passes(client, proxy, validate):
    # majority: every sample is checked (no early stop), and the vote is among passing samples
    body = script(text(WRONG), text(RIGHT), text(WRONG))
    raw = client.chat.completions.with_raw_response.create(
        model="r1", messages=MSG,
        extra_body={**body, **routing(strategy={"name": "parallel", "k": 3, "aggregator": "majority"},
                                      verifier={"name": "python_tests", "tests": TESTS, "timeout_s": 10})})
    validate(json.loads(raw.text), "CreateChatCompletionResponse")
    r = raw.parse()
    assert "a + b" in r.choices[0].message.content
    samples = r.model_extra["routing"]["samples"]
    assert len(samples) == 3
    (winner,) = [s for s in samples if s["selected"]]
    assert winner["verdict"]["passed"] and winner["verdict"]["score"] == 1.0
    losers = [s for s in samples if not s["selected"]]
    assert all(not s["verdict"]["passed"] and "test_small: FAILED" in s["verdict"]["feedback"] for s in losers)
    m = metrics(proxy)
    assert 'pareto_verifications_total{result="pass",verifier="python_tests"}' in m
    assert 'pareto_verifications_total{result="fail",verifier="python_tests"} 2.0' in m
    assert 'pareto_verifier_seconds_count{verifier="python_tests"} 3.0' in m


def test_best_of_n_with_python_tests_picks_the_passing_sample(client):
    body = script(text(WRONG), text(WRONG), text(RIGHT))
    r = client.chat.completions.create(
        model="r1", messages=MSG,
        extra_body={**body, **routing(strategy={"name": "parallel", "k": 3, "aggregator": "best_of_n"},
                                      verifier={"name": "python_tests", "tests": TESTS})})
    assert "a + b" in r.choices[0].message.content
    samples = r.model_extra["routing"]["samples"]
    (winner,) = [s for s in samples if s["selected"]]
    assert winner["verdict"] == {"passed": True, "score": 1.0, "feedback": winner["verdict"]["feedback"]}
    # the others were checked and failed, or their sample or check was cancelled once a perfect pass was in
    assert all(s["verdict"] is None or not s["verdict"]["passed"] for s in samples if not s["selected"])


def test_first_finish_with_a_verifier_waits_for_the_first_pass(client):
    body = script(text(WRONG, 40), text(RIGHT, 400), text(WRONG, 60))
    r = client.chat.completions.create(
        model="r1", messages=MSG,
        extra_body={**body, **routing(strategy={"name": "parallel", "k": 3, "aggregator": "first_finish"},
                                      verifier={"name": "python_tests", "tests": TESTS})})
    assert "a + b" in r.choices[0].message.content, "the fastest sample failed its tests, so it did not win"


def test_sandbox_attacks_fail_and_the_proxy_keeps_serving(client, proxy):
    leak = "Here:\n```python\nimport os\nSECRET = os.environ.get('PARETO_TEST_SECRET')\ndef add(a, b):\n    return a + b\n```"
    for reply, why in ((HANGS, "time limit"), (FORK_BOMB, "time limit"), (leak, "test_leak: FAILED")):
        r = client.chat.completions.create(
            model="r1", messages=MSG,
            extra_body={**script(text(reply)), **routing(
                verifier={"name": "python_tests", "tests": TESTS + "def test_leak():\n    assert SECRET is None or False\n"
                          if reply is leak else TESTS, "timeout_s": 2})})
        (s,) = r.model_extra["routing"]["samples"]
        if reply is leak:
            assert s["verdict"]["passed"], "the secret is not in the sandbox's environment"
        else:
            assert not s["verdict"]["passed"] and why in s["verdict"]["feedback"]
    assert httpx.get(f"{proxy.url}/healthz").status_code == 200
    ok = client.chat.completions.create(model="r1", messages=MSG, extra_body={**script(text(RIGHT)), **routing()})
    assert "a + b" in ok.choices[0].message.content


class _Hook(BaseHTTPRequestHandler):
    """An enterprise's validator: approves only replies that cite the internal policy number."""

    calls: list = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).calls.append(body)
        ok = "POLICY-42" in body["candidate"]
        payload = json.dumps({"passed": ok, "score": 0.95 if ok else 0.1,
                              "feedback": "" if ok else "Cite the policy number."}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def hook():
    _Hook.calls = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/check"
    server.shutdown()


def test_a_webhook_decides_which_sample_wins(client, hook, proxy):
    body = script(text("Refunds take 5 days. \\boxed{5}"), text("Per POLICY-42 refunds take 7 days. \\boxed{7}"),
                  text("Refunds take 5 days. \\boxed{5}"))
    r = client.chat.completions.create(
        model="r1", messages=[{"role": "user", "content": "How long do refunds take?"}],
        extra_body={**body, **routing(strategy={"name": "parallel", "k": 3, "aggregator": "majority"},
                                      verifier={"name": "webhook", "url": hook, "timeout_s": 5})})
    assert "POLICY-42" in r.choices[0].message.content, "the hook's pass beats the 2-vote majority"
    assert len(_Hook.calls) == 3
    assert {c["request_id"] for c in _Hook.calls} == {r.id} and all(c["task"] == "code" for c in _Hook.calls)
    assert _Hook.calls[0]["context"]["messages"][0]["content"] == "How long do refunds take?"
    t = wait_trace(proxy.tmp / "traces", r.id)
    assert sorted(s["verdict"]["passed"] for s in t["samples"]) == [False, False, True]


def test_a_dead_webhook_is_a_failed_verdict_not_an_error(client):
    r = client.chat.completions.create(
        model="r1", messages=MSG,
        extra_body={**script(text(RIGHT)), **routing(verifier={"name": "webhook", "url": "http://127.0.0.1:1/x",
                                                               "timeout_s": 2})})
    (s,) = r.model_extra["routing"]["samples"]
    assert r.choices[0].message.content and not s["verdict"]["passed"]
    assert "webhook failed" in s["verdict"]["feedback"]


CNF = "p cnf 3 3\n1 -2 0\n2 3 0\n-1 -3 0\n"


def test_a_failing_sat_verdict_triggers_a_restart(client, proxy):
    body = script(text("I think: Assignment: 1 2 3"), text("Assignment: 1 2 -3"))
    raw = client.chat.completions.with_raw_response.create(
        model="r1", messages=[{"role": "user", "content": f"Satisfy this CNF:\n{CNF}"}],
        extra_body={**body, **routing(task="sat", max_restarts=1, verifier={"name": "sat", "cnf": CNF})})
    r = raw.parse()
    assert raw.headers["x-pareto-restarts"] == "1"
    assert r.choices[0].message.content.strip().endswith("Assignment: 1 2 -3")
    first, second = r.model_extra["routing"]["samples"]
    assert first["role"] == "sample" and not first["verdict"]["passed"] and "clause 3" in first["verdict"]["feedback"]
    assert second["role"] == "restart" and second["verdict"]["passed"] and second["selected"]
    assert r.usage.completion_tokens == first["completion_tokens"] + second["completion_tokens"]
    assert 'pareto_restarts_total{model="r1",task="sat"}' in metrics(proxy)


def test_without_restarts_a_failing_verdict_is_reported_not_retried(client):
    r = client.chat.completions.create(
        model="r1", messages=[{"role": "user", "content": f"Satisfy this CNF:\n{CNF}"}],
        extra_body={**script(text("Assignment: 1 2 3"), text("Assignment: 1 2 -3")),
                    **routing(task="sat", verifier={"name": "sat", "cnf": CNF})})
    (s,) = r.model_extra["routing"]["samples"]
    assert s["selected"] and not s["verdict"]["passed"]


def test_the_judge_is_a_billed_sample(client, proxy):
    body = script(text("Paris is the capital of France."), text("Correct and concise.\nSCORE: 9\nVERDICT: PASS"))
    r = client.chat.completions.create(
        model="r1", messages=[{"role": "user", "content": "Capital of France?"}],
        extra_body={**body, **routing(task="chat", verifier={"name": "llm_judge", "model": "judge",
                                                             "rubric": "Names the right city."})})
    samples = r.model_extra["routing"]["samples"]
    answer, judge = samples
    assert answer["selected"] and answer["verdict"]["passed"] and answer["verdict"]["score"] == 0.9
    assert judge["role"] == "judge" and judge["model"] == "judge" and judge["cost_usd"] > 0 and not judge["selected"]
    assert r.usage.completion_tokens == answer["completion_tokens"] + judge["completion_tokens"]
    assert r.usage.model_extra["cost_usd"] == pytest.approx(answer["cost_usd"] + judge["cost_usd"])
    assert r.model == "r1"


@pytest.mark.parametrize("verifier, param", [
    ({"name": "python_tests"}, "routing.verifier.tests"),
    ({"name": "python_tests", "tests": "assert 1", "timeout_s": 0}, "routing.verifier.timeout_s"),
    ({"name": "sat", "cnf": [[1, 0]]}, "routing.verifier.cnf"),
    ({"name": "tsp", "distances": [[0, 1]]}, "routing.verifier.distances"),
    ({"name": "calendar", "participants": [{"name": "A"}]}, "routing.verifier.duration_min"),
    ({"name": "json_schema", "schema": {"type": 5}}, "routing.verifier.schema"),
    ({"name": "llm_judge", "model": "gpt-9", "rubric": "x"}, "routing.verifier.model"),
    ({"name": "webhook", "url": "file:///etc/passwd"}, "routing.verifier.url"),
    ({"name": "sandbox"}, "routing.verifier.name"),
])
def test_bad_verifier_arguments_are_clear_400s(client, verifier, param):
    with pytest.raises(openai.BadRequestError) as ei:
        client.chat.completions.create(model="r1", messages=MSG, extra_body=routing(verifier=verifier))
    err = ei.value.body
    assert ei.value.status_code == 400 and err["param"] == param and err["code"] == "invalid_value"
    assert param in err["message"]
