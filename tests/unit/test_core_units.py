"""Small pieces with sharp edges: request validation, keys, cost prediction, trace files."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from proxy.api.protocol import parse_chat_request
from proxy.budget.keys import KeyStore, hash_key
from proxy.budget.pricing import ModelCapabilities, ModelPrice, lookup_price
from proxy.errors import AuthenticationFailed, InvalidRequest
from proxy.routing.catalog import ModelEntry
from proxy.routing.estimate import COLD_START_TOKENS, CostEstimator
from proxy.routing.profiles import Profiles
from proxy.telemetry.traces import TraceWriter
from tests.conftest import REPO

MSG = [{"role": "user", "content": "hi"}]


def body(**kw) -> bytes:
    return json.dumps({"model": "m", "messages": MSG, **kw}).encode()


def test_routing_is_removed_and_validated():
    req = parse_chat_request(body(routing={"explain": True, "task": "math"}, temperature=0.2, foo=1))
    assert req.routing == {"explain": True, "task": "math"} and "routing" not in req.body
    assert req.body["foo"] == 1 and req.explain
    assert req.id.startswith("chatcmpl-")


@pytest.mark.parametrize("raw,param", [
    (b"[1, 2]", None),
    (b"", None),
    (body(temperature=True), "temperature"),
    (body(top_p=1.5), "top_p"),
    (body(stop=["a", "b", "c", "d", "e"]), "stop"),
    (body(response_format={"type": "yaml"}), "response_format"),
    (body(tool_choice="sometimes"), "tool_choice"),
    (body(reasoning_effort="extreme"), "reasoning_effort"),
    (body(messages=[]), "messages"),
    (body(messages=[{"role": "user", "content": 5}]), "messages[0].content"),
    (body(routing={"strategy": "tournament"}), "routing.strategy.name"),
    (body(routing={"strategy": {"name": "parallel", "aggregator": "vibes"}}), "routing.strategy.aggregator"),
    (body(routing={"accuracy_target": 2}), "routing.accuracy_target"),
    (body(routing=[1]), "routing"),
])
def test_invalid_requests_name_the_parameter(raw, param):
    with pytest.raises(InvalidRequest) as ei:
        parse_chat_request(raw)
    assert ei.value.param == param
    assert ei.value.status == 400


def test_stream_usage_flag():
    assert parse_chat_request(body(stream=True, stream_options={"include_usage": True})).include_usage
    assert not parse_chat_request(body(stream=False, stream_options={"include_usage": True})).include_usage


def test_keys_are_hashed_and_checked():
    ks = KeyStore()
    info = ks.add("sk-secret", "team-x", default_task="code")
    assert "sk-secret" not in repr(ks._static) and hash_key("sk-secret") in ks._static
    assert ks.authenticate("Bearer sk-secret") == info and info.key_id.startswith("k_")
    for header in (None, "", "Bearer ", "Basic sk-secret", "Bearer sk-other"):
        with pytest.raises(AuthenticationFailed):
            ks.authenticate(header)


def test_litellm_price_map_is_read_without_import():
    p = lookup_price("openai", "gpt-4o-mini")
    assert p is not None and p.input_usd_per_mtok == pytest.approx(0.15) and p.output_usd_per_mtok == pytest.approx(0.6)
    assert lookup_price("openai", "no-such-model-xyz") is None
    # the app with only fast-path and simulated models never imports litellm (2.5 s, 170 MB)
    code = ("import sys; from proxy.app import build_state; from proxy.config import load_settings; "
            "from proxy.budget.pricing import lookup_price; lookup_price('openai', 'gpt-4o-mini'); "
            "build_state(load_settings(None)); assert 'litellm' not in sys.modules, 'litellm imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.returncode == 0, r.stderr


def _entry(profiled: bool, name: str = "m", profile: str = "R1") -> ModelEntry:
    return ModelEntry(name=name, provider="x", profile=profile, upstream=None, price=ModelPrice(1.0, 2.0),  # type: ignore[arg-type]
                      capabilities=ModelCapabilities(), timeout_s=1, profiled=profiled)


def test_estimator_uses_profile_quantiles_and_caps():
    profiles = Profiles.load(REPO / "profiles" / "default.json")
    est = CostEstimator(profiles)
    row = profiles.row("R1", "math")
    p50, p95 = est.predict(_entry(True), 100, None, task="math")
    assert p50 == pytest.approx((100 * 1.0 + int(row.tokens.p50) * 2.0) / 1e6)
    assert p95 == pytest.approx((100 * 1.0 + int(row.tokens.p95) * 2.0) / 1e6)
    capped = est.predict(_entry(True), 100, 1000, task="math")
    assert capped[1] == pytest.approx((100 + 2000) / 1e6)


def test_estimator_learns_unprofiled_models():
    est = CostEstimator(None)
    e = _entry(False)
    cold = est.predict(e, 0, None)
    assert cold[0] == pytest.approx(COLD_START_TOKENS * 2.0 / 1e6)
    for _ in range(200):
        est.observe("m", 100)
    p50, p95 = est.predict(e, 0, None)
    assert p50 == pytest.approx(100 * 2.0 / 1e6, rel=0.05) and p95 >= p50


async def test_trace_writer_flushes_and_finds_ids(tmp_path):
    w = TraceWriter(str(tmp_path), flush_interval_s=0.01)
    w.start()
    w.append({"id": "chatcmpl-a", "status": 200, "team": "t1"})
    w.append({"kind": "feedback", "id": "chatcmpl-a", "correct": True})
    await w.close()
    lines = [json.loads(x) for f in tmp_path.glob("*.jsonl") for x in f.read_text().splitlines()]
    assert [x["id"] for x in lines] == ["chatcmpl-a", "chatcmpl-a"]
    fresh = TraceWriter(str(tmp_path))  # another process: finds it on disk
    assert await fresh.team_of("chatcmpl-a") == "t1"
    assert await fresh.team_of("chatcmpl-b") is None


def test_a_policy_with_a_bad_verifier_fails_the_start_with_its_name(tmp_path, monkeypatch):
    import shutil

    import yaml

    from proxy.app import build_state
    from proxy.config import DEFAULT_POLICIES, load_settings
    from proxy.errors import ConfigError

    pol = tmp_path / "policies"
    shutil.copytree(DEFAULT_POLICIES, pol)
    (pol / "checked.yaml").write_text(yaml.safe_dump(
        {"objective": "balanced", "verifiers": {"code": {"name": "python_tests", "timeout_s": "soon"}}}))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"policies_dir": str(pol), "traces_dir": str(tmp_path / "t"),
                                   "ledger": f"sqlite:///{tmp_path}/l.db",
                                   "models": [{"name": "m", "provider": "simulated", "profile": "R1"}]}))
    monkeypatch.setenv("PARETO_ADMIN_KEY", "x")
    with pytest.raises(ConfigError) as e:
        build_state(load_settings(cfg))
    assert "policy checked" in str(e.value) and "verifiers.code" in str(e.value)
