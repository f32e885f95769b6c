"""Routing through a real proxy: `auto` planned per policy, shadow mode, reload without restart."""

from __future__ import annotations

import shutil

import httpx
import openai
import pytest
import yaml
from openai import OpenAI

from tests.conftest import REPO, start_proxy, wait_trace

KEY = "sk-routing-test"
ADMIN = "sk-routing-admin"
FAST = {"tokens_per_second": 1_000_000, "tokens_per_chunk": 256}
MSG = [{"role": "user", "content": "Compute 12 * 7 and put the answer in \\boxed{}."}]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("routing")
    pol = tmp / "policies"
    shutil.copytree(REPO / "policies", pol)
    (pol / "shadowed.yaml").write_text(yaml.safe_dump(
        {"objective": "accurate", "shadow": True, "default_model": "cheapo"}))
    config = {
        "models": [
            {"name": "cheapo", "provider": "simulated", "profile": "Deepseek", "simulator": FAST},
            {"name": "thinker", "provider": "simulated", "profile": "R1", "simulator": FAST},
            {"name": "qwq", "provider": "simulated", "profile": "QwQ", "simulator": FAST,
             "capabilities": {"tools": False}},
        ],
        "policies_dir": str(pol),
        "keys": [{"key_env": "K", "team": "t", "default_task": "math"}],
    }
    p = start_proxy(tmp, config, env={"K": KEY, "PARETO_ADMIN_KEY": ADMIN})
    yield p, pol
    p.stop()


def explain(client: OpenAI, model: str, **routing) -> dict:
    r = client.chat.completions.create(model=model, messages=MSG, max_tokens=200,
                                       extra_body={"routing": {"explain": True, **routing}})
    return r.model_extra["routing"] | {"served_by": r.model}


@pytest.fixture
def client(env) -> OpenAI:
    return OpenAI(base_url=env[0].base_url, api_key=KEY, max_retries=0, timeout=30)


def test_policies_choose_per_objective_and_say_why(client):
    acc = explain(client, "auto/accurate", task="math")
    cheap = explain(client, "auto/cheap", task="math", accuracy_target=0.5)
    assert acc["plan"]["predicted_accuracy"] > cheap["plan"]["predicted_accuracy"] >= 0.5
    assert cheap["plan"]["predicted_cost_p50"] < acc["plan"]["predicted_cost_p50"]
    for r in (acc, cheap):
        assert r["served_by"] == r["plan"]["model"]
        # one sample record per upstream call: a multi-sample plan shows all of them
        assert len(r["samples"]) >= r["plan"].get("k", 1) or r["plan"].get("aggregator") in ("short_m", "first_finish")
    assert acc["reason"].startswith("accurate") and cheap["reason"].startswith("cheap")
    # the request's own constraints: a target nobody reaches is said so
    hard = explain(client, "auto/cheap", task="math", accuracy_target=0.99)
    assert "no plan reaches accuracy 0.99" in hard["reason"]


def test_capabilities_constrain_the_choice(client):
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}]
    r = client.chat.completions.create(model="auto/accurate", messages=MSG, tools=tools, max_tokens=100,
                                       extra_body={"routing": {"explain": True, "task": "math"}})
    assert r.model != "qwq", "qwq is configured without tool support"
    assert r.model_extra["routing"]["plan"]["strategy"] == "single", "tool calls cannot be voted"


def test_unknown_policy(client):
    with pytest.raises(openai.BadRequestError) as ei:
        client.chat.completions.create(model="auto", messages=MSG, extra_body={"routing": {"policy": "lavish"}})
    assert ei.value.body["param"] == "routing.policy"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="auto/lavish", messages=MSG)


def test_shadow_mode_serves_default_and_records_the_plan(client, env):
    proxy = env[0]
    r = client.chat.completions.create(model="auto/shadowed", messages=MSG, max_tokens=100,
                                       extra_body={"routing": {"task": "math"}})
    assert r.model == "cheapo"
    t = wait_trace(proxy.tmp / "traces", r.id)
    assert t["plan"]["model"] == "cheapo"
    planned = explain(client, "auto/accurate", task="math")["plan"]  # the same objective, not in shadow
    assert t["shadow_plan"]["model"] == planned["model"] != "cheapo"
    assert t["shadow_plan"]["predicted_accuracy"] == planned["predicted_accuracy"]


def test_reload_swaps_policies_without_restart(client, env):
    proxy, pol = env
    before = explain(client, "auto/cheap", task="math")
    (pol / "cheap.yaml").write_text(yaml.safe_dump({"name": "cheap", "objective": "accurate"}))
    h = {"Authorization": f"Bearer {ADMIN}"}
    assert httpx.post(f"{proxy.url}/admin/reload", headers={"Authorization": f"Bearer {KEY}"}).status_code == 401
    r = httpx.post(f"{proxy.url}/admin/reload", headers=h)
    assert r.status_code == 200 and "cheap" in r.json()["policies"]
    after = explain(client, "auto/cheap", task="math")
    assert after["reason"].startswith("accurate (cheap)") and not before["reason"].startswith("accurate")
    # a broken file is refused and the previous policies keep serving
    (pol / "cheap.yaml").write_text("objective: [unclosed\n")
    bad = httpx.post(f"{proxy.url}/admin/reload", headers=h)
    assert bad.status_code == 400 and "not valid YAML" in bad.json()["error"]["message"]
    assert explain(client, "auto/cheap", task="math")["reason"].startswith("accurate (cheap)")


def test_conversation_stays_on_its_model(client):
    first = client.chat.completions.create(model="auto/accurate", messages=MSG, max_tokens=50,
                                           extra_body={"routing": {"task": "math"}})
    # a follow-up whose task alone would route elsewhere (cheap, science) stays on the first model
    follow = [*MSG, {"role": "assistant", "content": "84"}, {"role": "user", "content": "And 13 * 7?"}]
    r = client.chat.completions.create(model="auto/cheap", messages=follow, max_tokens=50,
                                       extra_body={"routing": {"task": "science", "explain": True}})
    assert r.model == first.model
    assert r.model_extra["routing"]["reason"].startswith(f"conversation stays on {first.model}")
    # an explicit session id does the same across unrelated messages
    a = client.chat.completions.create(model="auto/accurate", messages=MSG, max_tokens=50,
                                       extra_body={"routing": {"task": "math", "session": "s-1"}})
    b = client.chat.completions.create(model="auto/cheap", messages=[{"role": "user", "content": "hi"}],
                                       max_tokens=50, extra_body={"routing": {"task": "science", "session": "s-1"}})
    assert b.model == a.model
    # a fresh conversation is free to go elsewhere
    c = client.chat.completions.create(model="auto/cheap", messages=[{"role": "user", "content": "hello"}],
                                       max_tokens=50, extra_body={"routing": {"task": "science", "explain": True}})
    assert not c.model_extra["routing"]["reason"].startswith("conversation stays"), "a fresh conversation is not pinned"


def test_an_explicit_strategy_is_priced_per_sample_and_its_p95_covers_restarts(client):
    one = explain(client, "thinker", task="math", cutoff_tokens=150)["plan"]
    four = explain(client, "thinker", task="math", cutoff_tokens=150, max_restarts=1,
                   strategy={"name": "parallel", "k": 4, "aggregator": "majority"})["plan"]
    assert four["predicted_cost_p50"] == pytest.approx(4 * one["predicted_cost_p50"])
    assert four["predicted_cost_p95"] == pytest.approx((4 + 4) * one["predicted_cost_p95"])
