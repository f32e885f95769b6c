"""Each built-in verifier on passing, failing and malformed candidates; the timing hook; and the
generated tasks checked by their own verifiers."""

from __future__ import annotations

import asyncio
import json
import random
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from proxy.errors import InvalidRequest
from proxy.upstream.simulator.tasks import KINDS, generate
from proxy.verifiers import VerifierDeps, VerifierUnavailable, default_registry
from proxy.verifiers.remote import parse_grade


@pytest.fixture
def registry():
    return default_registry()


# -- json_schema -------------------------------------------------------------------------------

SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
          "required": ["name", "age"], "additionalProperties": False}


async def test_json_schema(registry):
    v = registry.build({"name": "json_schema", "schema": SCHEMA})
    assert (await v.verify('{"name": "Ada", "age": 36}', {})).passed
    assert (await v.verify('```json\n{"name": "Ada", "age": 36}\n```', {})).passed
    bad = await v.verify('{"name": "Ada", "age": -1, "x": 1}', {})
    assert not bad.passed and bad.score == 0.5 and "age" in bad.feedback and "Additional properties" in bad.feedback
    broken = await v.verify('{"name": "Ada", ', {})
    assert not broken.passed and broken.score == 0.0 and "not valid JSON" in broken.feedback
    assert not (await v.verify("", {})).passed


async def test_json_schema_from_the_requests_response_format(registry):
    v = registry.build("json_schema")
    fmt = {"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA}}
    assert (await v.verify('{"name": "Ada", "age": 3}', {"response_format": fmt})).passed
    assert not (await v.verify('{"name": "Ada"}', {"response_format": fmt})).passed
    obj = {"type": "json_object"}
    assert (await v.verify('{"a": 1}', {"response_format": obj})).passed
    assert not (await v.verify("[1, 2]", {"response_format": obj})).passed
    assert (await v.verify("[1, 2]", {})).passed  # no schema anywhere: any JSON


def test_json_schema_rejects_a_broken_schema(registry):
    with pytest.raises(InvalidRequest) as info:
        registry.build({"name": "json_schema", "schema": {"type": "integer", "minimum": "zero"}})
    assert info.value.param == "routing.verifier.schema" and "not a valid JSON Schema" in info.value.message


# -- sat / tsp / calendar ------------------------------------------------------------------------


async def test_sat(registry):
    v = registry.build({"name": "sat", "cnf": "c example\np cnf 3 3\n1 -2 0\n2 3 0\n-1 -3 0\n"})
    assert (await v.verify("So: Assignment: 1 2 -3", {})).passed
    assert (await v.verify("x1 = true, x2 = true, x3 = false", {})).passed
    assert (await v.verify("\\boxed{110}", {})).passed
    wrong = await v.verify("Assignment: 1 2 3", {})
    assert not wrong.passed and 0 < wrong.score < 1 and "clause 3" in wrong.feedback
    assert "not assigned" in (await v.verify("Assignment: 1 2", {})).feedback
    assert "two values" in (await v.verify("Assignment: 1 -1 2 3", {})).feedback
    assert not (await v.verify("I could not find one.", {})).passed
    assert not (await v.verify("The formula is UNSAT.", {})).passed


@pytest.mark.parametrize("cnf, fragment", [([], "at least one clause"), ([[1, 0]], "non-zero"), ("1 x 0", "DIMACS"),
                                           ([[True]], "valid integer"), ([[]], "empty")])
def test_sat_bad_formulas_are_400s(registry, cnf, fragment):
    with pytest.raises(InvalidRequest) as info:
        registry.build({"name": "sat", "cnf": cnf})
    assert info.value.param == "routing.verifier.cnf" and fragment in info.value.message


async def test_tsp_scores_shorter_tours_higher(registry):
    d = [[0, 1, 5, 1], [1, 0, 1, 5], [5, 1, 0, 1], [1, 5, 1, 0]]
    v = registry.build({"name": "tsp", "distances": d})
    best = await v.verify("Tour: 0 1 2 3 0", {})
    worse = await v.verify("Tour: 0 2 1 3", {})
    assert best.passed and worse.passed and best.score > worse.score and "length 4" in best.feedback
    assert (await v.verify("Tour: 1 2 3 4", {})).score == best.score  # 1-based
    assert not (await v.verify("Tour: 0 1 1 3", {})).passed
    assert not (await v.verify("Tour: 0 1 2 7", {})).passed
    assert not (await v.verify("no idea", {})).passed
    capped = registry.build({"name": "tsp", "distances": d, "max_length": 4})
    assert (await capped.verify("Tour: 0 1 2 3", {})).passed
    long = await capped.verify("Tour: 0 2 1 3", {})
    assert not long.passed and "at most 4" in long.feedback


@pytest.mark.parametrize("distances, fragment", [([[0]], "2 to"), ([[0, 1], [1]], "2 x 2"), ([[0, -1], [1, 0]], "non-negative")])
def test_tsp_bad_matrices_are_400s(registry, distances, fragment):
    with pytest.raises(InvalidRequest) as info:
        registry.build({"name": "tsp", "distances": distances})
    assert info.value.param == "routing.verifier.distances" and fragment in info.value.message


async def test_calendar(registry):
    v = registry.build({"name": "calendar", "duration_min": 30, "buffer_min": 15, "day_start": "09:00", "day_end": "17:00",
                        "participants": [{"name": "Ana", "busy": [["09:00", "10:30"], [780, 840]]},
                                         {"name": "Bo", "available": [["10:00", "12:00"], ["14:00", "17:00"]]}]})
    assert (await v.verify("Slot: 10:45-11:15", {})).passed
    assert (await v.verify("How about 2:30 pm?", {})).passed
    near = await v.verify("Slot: 10:30-11:00", {})
    assert not near.passed and "Ana's meeting 09:00-10:30 (with a 15-min buffer)" in near.feedback
    assert "not available" in (await v.verify("Slot: 12:30-13:00", {})).feedback
    assert "lasts 60 min" in (await v.verify("Slot: 10:45-11:45", {})).feedback
    assert "outside working hours" in (await v.verify("Slot: 16:45-17:15", {})).feedback
    assert not (await v.verify("whenever suits", {})).passed


@pytest.mark.parametrize("config, param", [
    ({"participants": [], "duration_min": 30}, "routing.verifier.participants"),
    ({"participants": [{"name": "A", "busy": [["10:00", "09:00"]]}], "duration_min": 30}, "routing.verifier.participants"),
    ({"participants": [{"name": "A"}], "duration_min": 0}, "routing.verifier.duration_min"),
    ({"participants": [{"name": "A"}], "duration_min": 30, "day_start": "25:00"}, "routing.verifier.day_start"),
])
def test_calendar_bad_configs_are_400s(registry, config, param):
    with pytest.raises(InvalidRequest) as info:
        registry.build({"name": "calendar", **config})
    assert info.value.param == param


# -- python_tests ------------------------------------------------------------------------------


async def test_python_tests_takes_the_last_code_block(registry):
    v = registry.build({"name": "python_tests", "tests": "def test_add():\n    assert add(2, 3) == 5\n", "timeout_s": 10})
    reply = "First try:\n```python\ndef add(a, b): return a - b\n```\nFixed:\n```python\ndef add(a, b):\n    return a + b\n```"
    ok = await v.verify(reply, {})
    assert ok.passed and ok.score == 1.0 and "test_add: passed" in ok.feedback
    bad = await v.verify("```python\ndef add(a, b): return a - b\n```", {})
    assert not bad.passed and "test_add: FAILED" in bad.feedback and "AssertionError" in bad.feedback
    none = await v.verify("def add(a, b): return a + b", {})
    assert not none.passed and "No code" in none.feedback
    syntax = await v.verify("```python\ndef add(a, b) return\n```", {})
    assert not syntax.passed and "SyntaxError" in syntax.feedback


# -- webhook -----------------------------------------------------------------------------------


class _Hook(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).received.append(body)
        mode = self.path.strip("/")
        if mode == "slow":
            import time
            time.sleep(2)
        if mode == "500":
            self.send_response(500)
            self.end_headers()
            return
        payload = {"ok": b'{"passed": true, "score": 0.9, "feedback": "fine"}',
                   "fail": b'{"passed": false, "feedback": "too vague"}',
                   "junk": b"<html>oops</html>", "shape": b'{"passed": "yes"}'}.get(mode, b"{}")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def hook():
    _Hook.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


async def test_webhook_verdicts_and_failures(registry, hook):
    ctx = {"task": "code", "request_id": "chatcmpl-1", "messages": [{"role": "user", "content": "hi"}], "model": "m"}
    ok = await registry.build({"name": "webhook", "url": f"{hook}/ok"}).verify("cand", ctx)
    assert ok.passed and ok.score == 0.9 and ok.feedback == "fine"
    sent = _Hook.received[0]
    assert set(sent) == {"candidate", "task", "request_id", "context"} and sent["candidate"] == "cand"
    assert sent["request_id"] == "chatcmpl-1" and sent["context"]["messages"][0]["content"] == "hi"
    fail = await registry.build({"name": "webhook", "url": f"{hook}/fail"}).verify("c", ctx)
    assert not fail.passed and fail.score == 0.0 and fail.feedback == "too vague"
    for mode, why in (("500", "HTTP 500"), ("junk", "not JSON"), ("shape", "boolean 'passed'")):
        v = await registry.build({"name": "webhook", "url": f"{hook}/{mode}"}).verify("c", ctx)
        assert not v.passed and why in v.feedback, mode
    slow = await registry.build({"name": "webhook", "url": f"{hook}/slow", "timeout_s": 0.3}).verify("c", ctx)
    assert not slow.passed and "did not answer within 0.3 s" in slow.feedback
    down = await registry.build({"name": "webhook", "url": "http://127.0.0.1:1/x", "timeout_s": 2}).verify("c", ctx)
    assert not down.passed and "request failed" in down.feedback


async def test_webhook_host_allow_list(hook):
    reg = default_registry(VerifierDeps(webhook_hosts={"validators.internal"}))
    v = await reg.build({"name": "webhook", "url": f"{hook}/ok"}).verify("c", {})
    assert not v.passed and "not an allowed webhook host" in v.feedback and _Hook.received == []


# -- llm_judge ---------------------------------------------------------------------------------


async def test_llm_judge_grades_through_the_model_caller():
    reg = default_registry(VerifierDeps(models={"judge-model": object()}))
    with pytest.raises(InvalidRequest) as info:
        reg.build({"name": "llm_judge", "model": "nope", "rubric": "r"})
    assert info.value.param == "routing.verifier.model" and "not configured" in info.value.message
    v = reg.build({"name": "llm_judge", "model": "judge-model", "rubric": "Must mention a source."})
    calls = []

    async def call_model(model, messages, *, role="judge", max_tokens=None):
        calls.append((model, role, messages[0]["content"]))
        return "It cites nothing.\nSCORE: 3/10\nVERDICT: FAIL"

    verdict = await v.verify("The sky is green.", {"messages": [{"role": "user", "content": "Why?"}],
                                                   "call_model": call_model})
    assert not verdict.passed and verdict.score == pytest.approx(0.3) and "cites nothing" in verdict.feedback
    assert calls[0][:2] == ("judge-model", "judge") and "Must mention a source." in calls[0][2] and "Why?" in calls[0][2]

    async def silent(model, messages, **kw):
        return None

    with pytest.raises(VerifierUnavailable):
        await v.verify("x", {"call_model": silent})


def test_judge_grades_parse():
    assert parse_grade("good\nSCORE: 8\nVERDICT: PASS", 0.7).passed
    assert parse_grade("SCORE: 8", 0.7).passed and not parse_grade("SCORE: 6", 0.7).passed
    assert not parse_grade("VERDICT: FAIL", 0.7).passed
    assert parse_grade("no grade here", 0.7) is None


# -- the timing hook ---------------------------------------------------------------------------


async def test_every_check_is_observed():
    seen = []
    reg = default_registry(VerifierDeps(observe=lambda name, s, result: seen.append((name, result))))
    v = reg.build({"name": "regex", "pattern": "ok"})
    await v.verify("ok", {})
    await v.verify("no", {})
    judge = reg.build({"name": "llm_judge", "model": "m", "rubric": "r"})
    with pytest.raises(VerifierUnavailable):
        await judge.verify("x", {})
    assert seen == [("regex", "pass"), ("regex", "fail"), ("llm_judge", "error")] and v.name == "regex"


# -- generated tasks and their verifiers -------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(KINDS))
async def test_generated_tasks_pass_their_verifier_when_right_and_fail_when_wrong(registry, kind):
    for seed in range(8):
        for difficulty in ("easy", "hard"):
            task = generate(kind, seed, difficulty)
            v = registry.build(task.verifier)
            right = "Working... " + task.render(task.answer)
            wrong = "Working... " + task.render(task.wrong_answer(random.Random(seed)))
            assert task.is_correct(right) and not task.is_correct(wrong)
            assert (await v.verify(right, {})).passed, (kind, seed, difficulty)
            assert not (await v.verify(wrong, {})).passed, (kind, seed, difficulty)


async def test_checks_run_concurrently_without_blocking(registry):
    v = registry.build({"name": "sat", "cnf": [[i, -(i + 1)] for i in range(1, 2000)]})
    verdicts = await asyncio.gather(*(v.verify("Assignment: " + " ".join(str(i) for i in range(1, 2001)), {})
                                      for _ in range(4)))
    assert all(x.passed for x in verdicts)


@pytest.mark.parametrize("kind, task", [("sat", "sat"), ("tsp", "tsp"), ("calendar", "planning")])
def test_the_classifier_labels_the_new_puzzle_prompts(kind, task):
    from proxy.routing.classifier import TaskClassifier

    clf = TaskClassifier.load()
    prompts = [generate(kind, 7000 + i, (None, "easy", "medium", "hard")[i % 4]).prompt for i in range(20)]
    right = sum(clf.classify([{"role": "user", "content": p}])[0] == task for p in prompts)
    assert right >= 18, f"{kind}: {right}/20"
