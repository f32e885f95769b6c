"""Keys, budgets and rate limits on the SQLite ledger, through real proxy processes.

The ledger file is shared by the proxy's workers and by the `keys`/`budgets` commands, exactly
as on a user's machine; the invariant checks read the ledger over the admin API and compare it
with the traces and with what the clients were told.
"""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import openai
import pytest
from openai import OpenAI

from tests.conftest import ADMIN_KEY, _env, free_port, read_traces, start_proxy, wait_traces
from tests.integration.budgetload import (
    MSG, admin, assert_budget_rejections, assert_invariant, budget_of, create_key, drive, wait_for,
)

FAST = {"tokens_per_second": 1_000_000, "tokens_per_chunk": 256}
MODELS = [
    {"name": "sim-r1", "provider": "simulated", "profile": "R1", "simulator": FAST},
    {"name": "sim-deepseek", "provider": "simulated", "profile": "Deepseek", "simulator": FAST},
]


def config(tmp: Path, **extra) -> dict:
    return {"models": MODELS, "ledger": f"sqlite:///{tmp}/ledger.db", **extra}


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("budgets")
    p = start_proxy(tmp, config(tmp))
    yield p
    p.stop()


def cli(tmp: Path, cfg: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "proxy", *args, "--config", str(cfg)], cwd=tmp, env=_env(),
                          capture_output=True, text=True, timeout=60)


def test_admin_api_needs_the_admin_key_and_validates(proxy):
    r = httpx.post(proxy.url + "/admin/keys", json={"team": "a"}, headers={"authorization": "Bearer nope"})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    made = create_key(proxy.url, team="a")
    r = httpx.get(proxy.url + "/admin/budgets", headers={"authorization": f"Bearer {made['key']}"})
    assert r.status_code == 401, "a team key is not an admin key"
    for body, param in (({"team": "a", "budget_usd": -1}, "budget_usd"), ({"team": "a", "period": "week"}, "period"),
                        ({"team": "a", "colour": 1}, "colour"), ({}, "team"), ({"team": "a b"}, "team")):
        r = admin(proxy.url, "POST", "/admin/keys", json=body)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["error"]["param"] == param
    r = admin(proxy.url, "PUT", "/admin/budgets", json={"team": "a", "key_id": made["id"], "usd": 1, "period": "day"})
    assert r.status_code == 400 and "exactly one" in r.json()["error"]["message"]
    r = admin(proxy.url, "PUT", "/admin/budgets", json={"key_id": "k_nope", "usd": 1, "period": "day"})
    assert r.status_code == 404 and r.json()["error"]["param"] == "key_id"
    r = admin(proxy.url, "DELETE", "/admin/keys/k_nope")
    assert r.status_code == 404
    r = admin(proxy.url, "PUT", "/admin/budgets", content=b"{not json")
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"


def test_keys_are_listed_without_secrets_and_revocation_is_immediate(proxy):
    made = create_key(proxy.url, team="lister", default_task="math", rpm=1000)
    listed = admin(proxy.url, "GET", "/admin/keys").json()["data"]
    mine = [k for k in listed if k["id"] == made["id"]]
    assert mine and mine[0]["team"] == "lister" and mine[0]["default_task"] == "math" and not mine[0]["revoked"]
    assert made["key"] not in json.dumps(listed)
    client = OpenAI(base_url=proxy.base_url, api_key=made["key"], max_retries=0)
    assert client.chat.completions.create(model="sim-deepseek", messages=MSG, max_tokens=50).choices
    assert admin(proxy.url, "DELETE", f"/admin/keys/{made['id']}").json() == {"id": made["id"], "revoked": True}
    with pytest.raises(openai.AuthenticationError) as e:
        client.chat.completions.create(model="sim-deepseek", messages=MSG, max_tokens=50)
    assert "revoked" in e.value.message


def test_budget_aware_planning_picks_a_plan_that_fits_before_refusing(proxy):
    made = create_key(proxy.url, team="planner")
    client = OpenAI(base_url=proxy.base_url, api_key=made["key"], max_retries=0)
    r = client.chat.completions.create(model="auto/accurate", messages=MSG,
                                       extra_body={"routing": {"task": "math", "explain": True}})
    preferred = r.model_extra["routing"]["plan"]
    # a budget below the preferred plan's p95 but above the cheapest plan's
    room = preferred["predicted_cost_p95"] / 4
    r = admin(proxy.url, "PUT", "/admin/budgets", json={"key_id": made["id"], "usd": room, "period": "day"})
    assert r.status_code == 200, r.text
    spent = r.json()["data"][0]["spent_usd"]
    admin(proxy.url, "PUT", "/admin/budgets", json={"key_id": made["id"], "usd": spent + room, "period": "day"})
    r = client.chat.completions.create(model="auto/accurate", messages=MSG,
                                       extra_body={"routing": {"task": "math", "explain": True}})
    plan = r.model_extra["routing"]["plan"]
    assert plan["predicted_cost_p95"] <= room < preferred["predicted_cost_p95"]
    assert "remaining budget" in r.model_extra["routing"]["reason"]
    # a concrete model is not re-planned: over its budget it is refused outright
    admin(proxy.url, "PUT", "/admin/budgets", json={"key_id": made["id"], "usd": 0.0, "period": "total"})
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="sim-deepseek", messages=MSG, max_tokens=50)
    assert e.value.code == "budget_exceeded" and "window)" in e.value.message
    # lifting the budgets lets it through again; the spend stays recorded
    for period in ("total", "day"):
        r = admin(proxy.url, "DELETE", f"/admin/budgets?key_id={made['id']}&period={period}")
        assert r.status_code == 200 and r.json()["removed"] is True, r.text
    assert client.chat.completions.create(model="sim-deepseek", messages=MSG, max_tokens=50).choices
    r = admin(proxy.url, "DELETE", f"/admin/budgets?key_id={made['id']}&period=day")
    assert r.status_code == 404 and r.json()["error"]["param"] == "period"
    r = admin(proxy.url, "DELETE", "/admin/budgets?period=day")
    assert r.status_code == 400 and "exactly one" in r.json()["error"]["message"]


def test_rate_limit_per_key_answers_429_with_retry_after(proxy):
    made = create_key(proxy.url, team="rl", rpm=3)
    client = OpenAI(base_url=proxy.base_url, api_key=made["key"], max_retries=0)
    for _ in range(3):
        client.chat.completions.create(model="sim-deepseek", messages=MSG, max_tokens=20)
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="sim-deepseek", messages=MSG, max_tokens=20)
    assert e.value.code == "rate_limited"
    assert int(e.value.response.headers["retry-after"]) >= 1
    other = create_key(proxy.url, team="rl", rpm=3)  # limits are per key
    OpenAI(base_url=proxy.base_url, api_key=other["key"], max_retries=0).chat.completions.create(
        model="sim-deepseek", messages=MSG, max_tokens=20)
    metrics = httpx.get(proxy.url + "/metrics").text
    assert 'pareto_rate_limited_total{team="rl"} 1.0' in metrics


def test_concurrent_load_on_several_workers_never_overspends(tmp_path):
    """Two worker processes on one SQLite file, eight concurrent clients, one small budget."""
    p = start_proxy(tmp_path, config(tmp_path), args=["--workers", "2"])
    try:
        limit = 0.08
        made = create_key(p.url, team="hammer", budget_usd=limit, period="month")
        load = drive([p.base_url], made["key"], threads=8)
        assert_budget_rejections(load)
        spent = budget_of(p.url, "key", made["id"], "month")
        assert spent["reserved_usd"] == 0.0
        assert abs(spent["spent_usd"] - sum(load.costs)) < 1e-6, "the ledger and the clients disagree"
        traces = wait_traces(tmp_path / "traces", len(load.costs) + len(load.rejections))
        assert_invariant(limit, spent["spent_usd"], traces, made["id"])
    finally:
        p.stop()


class _Hook(http.server.BaseHTTPRequestHandler):
    events: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["content-length"]))
        type(self).events.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_soft_limit_is_reported_once_by_metric_log_and_webhook(tmp_path):
    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    p = start_proxy(tmp_path, config(tmp_path, budget_webhook_url=f"http://127.0.0.1:{port}/hook"))
    try:
        made = create_key(p.url, team="soft", soft_usd=0.002, period="day")
        client = OpenAI(base_url=p.base_url, api_key=made["key"], max_retries=0)
        spent = 0.0
        while spent < 0.006:  # well past the soft limit: it is reported once, and nothing is refused
            r = client.chat.completions.create(model="sim-r1", messages=MSG, max_tokens=3000)
            spent += r.usage.model_extra["cost_usd"]
        wait_for(lambda: len(_Hook.events) >= 1)
        assert len(_Hook.events) == 1
        ev = _Hook.events[0]
        assert ev["event"] == "budget_soft_limit" and ev["key"] == made["id"] and ev["soft_limit_usd"] == 0.002
        assert ev["spent_usd"] >= 0.002
        metrics = httpx.get(p.url + "/metrics").text
        assert 'pareto_budget_soft_limit_events_total{scope="key",team="soft"} 1.0' in metrics
        logged = [json.loads(line) for line in p.log.read_text().splitlines() if "budget soft limit" in line]
        assert len(logged) == 1 and logged[0]["level"] == "warning"
    finally:
        p.stop()
        server.shutdown()


def test_cli_keys_and_budgets_share_the_ledger_with_a_running_proxy(tmp_path):
    p = start_proxy(tmp_path, config(tmp_path))
    try:
        cfg = next(tmp_path.glob("proxy-*.yaml"))
        out = cli(tmp_path, cfg, "keys", "create", "--team", "cli-team", "--budget-usd", "0.5", "--period", "day",
                  "--json")
        assert out.returncode == 0, out.stderr
        made = json.loads(out.stdout)
        assert set(made) == {"id", "key", "team"} and made["team"] == "cli-team"
        client = OpenAI(base_url=p.base_url, api_key=made["key"], max_retries=0)
        wait_for(lambda: _works(client))  # the proxy picks the new key up from the ledger
        r = client.chat.completions.create(model="sim-deepseek", messages=MSG, max_tokens=100)
        out = cli(tmp_path, cfg, "budgets", "set", "--team", "cli-team", "--usd", "2", "--period", "month",
                  "--soft-usd", "1")
        assert out.returncode == 0, out.stderr
        shown = json.loads(cli(tmp_path, cfg, "budgets", "show", "--json").stdout)
        key_row = next(b for b in shown if b.get("key") == made["id"])
        team_row = next(b for b in shown if b.get("team") == "cli-team")
        assert key_row["limit_usd"] == 0.5 and key_row["period"] == "day"
        assert key_row["spent_usd"] >= r.usage.model_extra["cost_usd"] > 0
        billed = sum(t["cost_usd"] for t in read_traces(tmp_path / "traces") if t.get("key_id") == made["id"])
        assert abs(key_row["spent_usd"] - billed) < 1e-9
        assert team_row["limit_usd"] == 2 and team_row["soft_limit_usd"] == 1
        assert abs(team_row["spent_usd"] - key_row["spent_usd"]) < 1e-9, "team spend includes spend before its budget"
        table = cli(tmp_path, cfg, "budgets", "show").stdout
        assert "team:cli-team" in table and "remaining" in table
        listed = cli(tmp_path, cfg, "keys", "list").stdout
        assert made["id"] in listed and made["key"] not in listed
        bad = cli(tmp_path, cfg, "budgets", "set", "--team", "x", "--usd", "1", "--soft-usd", "2", "--period", "day")
        assert bad.returncode == 2 and "soft_usd" in bad.stderr and "Traceback" not in bad.stderr
        out = cli(tmp_path, cfg, "budgets", "remove", "--team", "cli-team", "--period", "month")
        assert out.returncode == 0, out.stderr
        shown = json.loads(cli(tmp_path, cfg, "budgets", "show", "--json").stdout)
        assert not any(b.get("team") == "cli-team" for b in shown)
        again = cli(tmp_path, cfg, "budgets", "remove", "--team", "cli-team", "--period", "month")
        assert again.returncode == 2 and "No month budget" in again.stderr
        out = cli(tmp_path, cfg, "keys", "revoke", made["id"])
        assert out.returncode == 0, out.stderr
        wait_for(lambda: not _works(client), timeout=5)
        missing = cli(tmp_path, cfg, "keys", "revoke", "k_unknown")
        assert missing.returncode == 2 and "k_unknown" in missing.stderr
    finally:
        p.stop()
    # the plain key is nowhere on disk: not in the ledger (and its WAL), traces or logs
    for f in tmp_path.rglob("*"):
        if f.is_file():
            assert made["key"].encode() not in f.read_bytes(), f"plain key found in {f}"


def _works(client: OpenAI) -> bool:
    try:
        client.chat.completions.create(model="sim-deepseek", messages=MSG, max_tokens=5)
        return True
    except openai.AuthenticationError:
        return False


def test_outside_embedded_mode_the_proxy_needs_an_admin_key(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(json.dumps(config(tmp_path)))
    out = subprocess.run([sys.executable, "-m", "proxy", "serve", "--config", str(cfg), "--port", str(free_port())],
                         cwd=tmp_path, env=_env({"PARETO_ADMIN_KEY": ""}), capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "PARETO_ADMIN_KEY" in out.stderr and "Traceback" not in out.stderr


def test_a_request_cut_short_by_shutdown_is_billed_and_its_hold_released(tmp_path):
    slow = {"tokens_per_second": 400, "tokens_per_chunk": 8}
    cfg = config(tmp_path, drain_timeout_s=1.0)
    cfg["models"] = [{"name": "slow", "provider": "simulated", "profile": "R1", "simulator": slow}]
    p = start_proxy(tmp_path, cfg)
    made = create_key(p.url, team="drain", budget_usd=5, period="day")
    client = OpenAI(base_url=p.base_url, api_key=made["key"], max_retries=0, timeout=30)
    got: list[str] = []

    def consume() -> None:
        try:
            for chunk in client.chat.completions.create(model="slow", messages=MSG, max_tokens=20000, stream=True):
                if chunk.choices and chunk.choices[0].delta.model_extra.get("reasoning_content"):
                    got.append("x")
        except Exception:
            pass

    t = threading.Thread(target=consume)
    t.start()
    wait_for(lambda: len(got) > 5)
    held = budget_of(p.url, "key", made["id"], "day")
    assert held["reserved_usd"] > 0
    p.stop()
    t.join()
    # the proxy is gone: read the ledger with the CLI, as an operator would
    shown = json.loads(cli(tmp_path, next(tmp_path.glob("proxy-*.yaml")), "budgets", "show", "--json").stdout)
    row = next(b for b in shown if b.get("key") == made["id"])
    assert row["reserved_usd"] == 0.0, "a stopped replica left budget held"
    assert row["spent_usd"] > 0, "the tokens streamed before shutdown were not billed"
    trace = next(t for t in read_traces(tmp_path / "traces") if t.get("key_id") == made["id"])
    assert abs(trace["cost_usd"] - row["spent_usd"]) < 1e-9
