"""A real Prometheus scrapes a real proxy through a mixed workload; the dashboard and the alerts
are then evaluated against what it stored.

The stack: `pareto-proxy sim` (an OpenAI-compatible upstream over HTTP), the proxy with
passthrough, simulated, and failing models and two teams, and Debian's `prometheus` on a free
port with a 1 s scrape interval, a private storage dir and deploy/prometheus/alerts.yml loaded.
The workload: passthrough (non-streaming and streaming), routed (`auto/<policy>`), parallel
samples with length cutoffs and restarts and a verifier, and an upstream that fails a third of
its calls.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
import yaml
from openai import OpenAI

from proxy.upstream.simulator.tasks import generate
from tests.conftest import REPO, free_port, start_proxy, start_sim, wait_traces

assert shutil.which("prometheus"), "prometheus is missing: apt-get install prometheus (.ci/run does)"

DEPLOY = REPO / "deploy"
KEY_A, KEY_B, ADMIN = "sk-e2e-team-a", "sk-e2e-team-b", "sk-e2e-admin"
FAST = {"tokens_per_second": 2_000_000, "tokens_per_chunk": 512}
MATH = [{"role": "user", "content": "Compute 12 * 7 and put the answer in \\boxed{}."}]
RATE_INTERVAL = "1m"
#: a dashboard query "has data" when it returns at least one finite sample; at least this share must
MIN_WITH_DATA = 0.75


def _renderer():
    spec = importlib.util.spec_from_file_location("render_dashboard", DEPLOY / "render_dashboard.py")
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


render_dashboard = _renderer()


class Prom:
    def __init__(self, url: str, proc: subprocess.Popen, log) -> None:
        self.url, self.proc, self.log = url, proc, log
        self.http = httpx.Client(base_url=url, timeout=30)

    def query(self, expr: str) -> dict:
        return self.http.get("/api/v1/query", params={"query": expr}).json()

    def value(self, expr: str) -> float:
        res = self.query(expr)["data"]["result"]
        return sum(float(r["value"][1]) for r in res)


def start_prometheus(tmp, target: str) -> Prom:
    port = free_port()
    rules = tmp / "alerts.yml"
    shutil.copy(DEPLOY / "prometheus" / "alerts.yml", rules)
    cfg = tmp / "prometheus.yml"
    cfg.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [{"job_name": "pareto-proxy", "static_configs": [{"targets": [target]}]}],
    }))
    check = subprocess.run(["promtool", "check", "config", str(cfg)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    log = tmp / "prometheus.log"
    proc = subprocess.Popen(["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={tmp / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=log.open("wb"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                return Prom(url, proc, log)
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("prometheus not ready:\n" + log.read_text()[-3000:])


def workload(proxy_url: str, rounds: int) -> dict[str, int]:
    """The mixed workload; returns how many requests of each kind were answered or failed."""
    a = OpenAI(base_url=f"{proxy_url}/v1", api_key=KEY_A, max_retries=0, timeout=60)
    b = OpenAI(base_url=f"{proxy_url}/v1", api_key=KEY_B, max_retries=0, timeout=60)
    counts = {"passthrough": 0, "stream": 0, "routed": 0, "parallel": 0, "failed": 0}

    def one(i: int) -> str:
        kind = ("passthrough", "stream", "routed", "parallel", "flaky")[i % 5]
        try:
            if kind == "passthrough":
                a.chat.completions.create(model="via-sim", messages=MATH, max_tokens=400, seed=i)
            elif kind == "stream":
                for _ in a.chat.completions.create(model="via-sim", messages=MATH, max_tokens=300, stream=True,
                                                   stream_options={"include_usage": True}):
                    pass
            elif kind == "routed":
                b.chat.completions.create(model=("auto/balanced", "auto/cheap", "auto/accurate")[i % 3],
                                          messages=MATH, max_tokens=2000, seed=i,
                                          extra_body={"routing": {"task": "math"}})
            elif kind == "parallel":  # a task the simulator knows the answer to, so some verdicts pass
                task = generate("arithmetic", i)
                b.chat.completions.create(model="sim-r1", messages=[{"role": "user", "content": task.prompt}], seed=i,
                                          extra_body={"routing": {
                                              "task": "math", "strategy": {"name": "parallel", "k": 4, "aggregator": "majority"},
                                              "cutoff_tokens": 6000, "max_restarts": 1,
                                              "verifier": {"name": "math_answer", "reference": task.answer}}})
            else:
                a.chat.completions.create(model="flaky", messages=MATH, max_tokens=200, seed=i)
        except openai.APIError:
            return "failed"
        return kind if kind != "flaky" else "passthrough"

    with ThreadPoolExecutor(4) as pool:
        for kind in pool.map(one, range(rounds * 5)):
            counts[kind] += 1
    return counts


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e-prom")
    sim = start_sim(tmp)
    config = {
        "models": [
            {"name": "via-sim", "provider": "openai", "model": "R1", "api_base": sim.base_url, "profile": "R1"},
            {"name": "sim-r1", "provider": "simulated", "profile": "R1", "simulator": FAST},
            {"name": "sim-qwq", "provider": "simulated", "profile": "QwQ", "simulator": FAST},
            {"name": "sim-gpt-oss", "provider": "simulated", "profile": "GPT-OSS-120B", "simulator": FAST},
            {"name": "flaky", "provider": "simulated", "profile": "Deepseek",
             "simulator": {**FAST, "faults": {"error_rate": 0.3, "error_status": 500}}},
        ],
        "keys": [{"key_env": "KA", "team": "team-a", "default_task": "math"},
                 {"key_env": "KB", "team": "team-b", "default_task": "math"}],
        "ledger": f"sqlite:///{tmp / 'ledger.db'}",
        "budget_poll_s": 0.5,
    }
    proxy = start_proxy(tmp, config, env={"KA": KEY_A, "KB": KEY_B, "PARETO_ADMIN_KEY": ADMIN})
    prom = start_prometheus(tmp, f"127.0.0.1:{proxy.port}")
    admin = httpx.Client(base_url=proxy.url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10)
    for team, usd in (("team-a", 50.0), ("team-b", 80.0)):  # budgets, where the ledger API is there (issue 6)
        admin.put("/admin/budgets", json={"team": team, "usd": usd, "period": "total"})
    try:
        # wait until Prometheus has scraped the proxy once, so the workload's first counts are not lost
        deadline = time.monotonic() + 60
        while prom.query('up{job="pareto-proxy"} == 1')["data"]["result"] == [] and time.monotonic() < deadline:
            time.sleep(0.5)
        start = time.time()
        counts = workload(proxy.url, rounds=int(os.environ.get("PARETO_E2E_ROUNDS", "24")))
        answered = sum(v for k, v in counts.items() if k != "failed")
        traces = wait_traces(proxy.tmp / "traces", answered + counts["failed"], timeout=60)
        # wait for a scrape that has everything: Prometheus' total equals the proxy's own
        expected = len(traces)
        deadline = time.monotonic() + 90
        while prom.value("sum(pareto_requests_total)") != expected:
            assert time.monotonic() < deadline, f"Prometheus never saw {expected} requests"
            time.sleep(0.5)
        time.sleep(3)  # a few more scrapes so rate() windows end on flat counters too
        yield {"tmp": tmp, "proxy": proxy, "prom": prom, "admin": admin, "traces": traces, "counts": counts,
               "start": start, "end": time.time()}
    finally:
        prom.proc.terminate()
        prom.proc.wait(30)
        proxy.stop()
        sim.stop()


def has_data(result: dict) -> bool:
    data = result["data"]
    if data["resultType"] in ("vector", "matrix"):
        return any(not math.isnan(float(r["value"][1])) for r in data["result"]) if data["resultType"] == "vector" \
            else bool(data["result"])
    return not math.isnan(float(data["result"][1]))


def dashboard_exprs() -> list[tuple[str, str]]:
    dash = json.loads((DEPLOY / "grafana" / "dashboards" / "pareto-proxy.json").read_text())
    return [(p["title"], t["expr"]) for p in dash["panels"] for t in p.get("targets", [])]


def test_workload_was_mixed(stack):
    c = stack["counts"]
    assert c["passthrough"] and c["stream"] and c["routed"] and c["parallel"], c
    assert c["failed"], "the flaky upstream failed some requests"
    strategies = {t["plan"]["strategy"] for t in stack["traces"]}
    assert {"single", "parallel"} <= strategies
    assert any(s["cut"] for t in stack["traces"] for s in t["samples"]), "some samples were cut"


def test_every_dashboard_expression_evaluates_and_most_have_data(stack):
    prom: Prom = stack["prom"]
    variables = render_dashboard.default_variables(RATE_INTERVAL, f"{int(time.time() - stack['start']) + 5}s")
    errors, empty, total = [], [], 0
    for title, expr in dashboard_exprs():
        q = render_dashboard.substitute(expr, variables)
        assert "$" not in q, f"unsubstituted variable in {q}"
        r = prom.query(q)
        total += 1
        if r["status"] != "success":
            errors.append(f"{title}: {q}: {r.get('error')}")
        elif not has_data(r):
            empty.append(f"{title}: {q}")
    assert not errors, "\n".join(errors)
    assert (total - len(empty)) / total >= MIN_WITH_DATA, f"{len(empty)}/{total} empty:\n" + "\n".join(empty)
    # what a workload without budgets or verifier timings cannot fill is the only thing allowed to be empty
    for e in empty:
        assert any(m in e for m in ("budget", "verifier_seconds", "restarts")), f"unexpectedly empty: {e}"


def test_every_alert_rule_evaluates_in_prometheus(stack):
    prom: Prom = stack["prom"]
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    exprs = {r["alert"]: r["expr"] for g in rules["groups"] for r in g["rules"]}
    for name, expr in exprs.items():
        r = prom.query(expr)
        assert r["status"] == "success", f"{name}: {r.get('error')}"
    # and Prometheus' own rule manager loaded and evaluated them without error
    deadline = time.monotonic() + 30
    while True:
        groups = prom.http.get("/api/v1/rules").json()["data"]["groups"]
        loaded = {r["name"]: r for g in groups for r in g["rules"]}
        if set(exprs) <= set(loaded) and all(r.get("lastEvaluation", "").startswith("20") for r in loaded.values()):
            break
        assert time.monotonic() < deadline, loaded
        time.sleep(0.5)
    bad = {n: r.get("lastError") for n, r in loaded.items() if r["health"] != "ok"}
    assert not bad, bad
    # the inputs of the upstream-error alert are live: the flaky model's failure share is visible
    # (raw counters, not rate(): the workload may have finished before a second scrape saw it grow)
    share = prom.value('sum(pareto_upstream_errors_total{model="flaky"}) '
                       '/ sum(pareto_upstream_seconds_count{model="flaky"})')
    assert 0 < share < 1


def test_metric_values_agree_with_the_traces(stack):
    prom: Prom = stack["prom"]
    traces = stack["traces"]
    samples = [s for t in traces for s in t["samples"]]
    assert prom.value("sum(pareto_requests_total)") == len(traces)
    assert prom.value('sum(pareto_requests_total{status="200"})') == sum(1 for t in traces if t["status"] == 200)
    for team in ("team-a", "team-b"):
        spent = sum(t["cost_usd"] for t in traces if t["team"] == team)
        assert spent > 0
        assert prom.value(f'sum(pareto_cost_usd_total{{team="{team}"}})') == pytest.approx(spent, rel=1e-9)
    assert prom.value('sum(pareto_tokens_total{type="prompt"})') == sum(s["prompt_tokens"] for s in samples)
    assert prom.value('sum(pareto_tokens_total{type="completion"})') == sum(s["completion_tokens"] for s in samples)
    wasted = sum(s["completion_tokens"] for s in samples if (s["cut"] and not s.get("forced")) or s["cancelled"])
    assert 0 < prom.value('sum(pareto_tokens_total{type="wasted"})') <= wasted + 1e-9
    cuts = sum(1 for s in samples if s["cut"])
    assert 0 < prom.value("sum(pareto_cutoffs_total)") <= cuts
    # increase() over the whole workload gives the spend back (restart-safe form of the same total)
    window = f"{int(time.time() - stack['start']) + 30}s"
    assert prom.value(f"sum(increase(pareto_cost_usd_total[{window}]))") == pytest.approx(
        sum(t["cost_usd"] for t in traces), rel=0.25)
    assert prom.value("sum(pareto_request_cost_usd_count)") == len(traces)


def _ledger_budgets(admin: httpx.Client) -> list[dict] | None:
    r = admin.get("/admin/budgets")
    if r.status_code == 404:
        return None
    assert r.status_code == 200, r.text
    body = r.json()
    return body.get("budgets", body.get("data", [])) if isinstance(body, dict) else body


def test_metric_values_agree_with_the_ledger(stack):
    budgets = _ledger_budgets(stack["admin"])
    assert budgets is not None, "GET /admin/budgets answered 404"
    prom: Prom = stack["prom"]
    traces = stack["traces"]
    teams = {b["team"]: b for b in budgets if b.get("scope") == "team" and b.get("team")}
    assert {"team-a", "team-b"} <= set(teams), budgets
    for team, b in teams.items():
        if team not in ("team-a", "team-b"):
            continue
        spent = sum(t["cost_usd"] for t in traces if t["team"] == team)
        assert b["spent_usd"] == pytest.approx(spent, rel=1e-6)
        assert prom.value(f'sum(pareto_cost_usd_total{{team="{team}"}})') == pytest.approx(b["spent_usd"], rel=1e-6)
        # the budget gauges are the ledger's numbers
        deadline = time.monotonic() + 30
        while prom.value(f'max(pareto_budget_spent_usd{{team="{team}"}})') != pytest.approx(b["spent_usd"], rel=1e-6):
            assert time.monotonic() < deadline, f"pareto_budget_spent_usd{{team={team}}} never matched the ledger"
            time.sleep(0.5)
        assert prom.value(f'max(pareto_budget_limit_usd{{team="{team}"}})') == pytest.approx(b["limit_usd"])


def test_dashboard_png_renders_from_the_recorded_workload(stack, tmp_path):
    prom: Prom = stack["prom"]
    start, end = stack["start"] - 5, time.time()
    rec = render_dashboard.record(prom.url, start, end, step=1.0, variables=render_dashboard.default_variables(
        "10s", f"{int(end - start)}s"))
    assert all(t["error"] is None for p in rec["panels"] for t in p["targets"])
    drawn = [p["title"] for p in rec["panels"] if any(t["series"] for t in p["targets"])]
    assert "Spend rate by team and model" in drawn and "Tokens by type" in drawn
    png = render_dashboard.render(rec, tmp_path / "dashboard.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    if os.environ.get("PARETO_DASHBOARD_DOCS"):
        (REPO / "docs").mkdir(exist_ok=True)
        (REPO / "docs" / "dashboard-recording.json").write_text(json.dumps(rec))
        render_dashboard.render(rec, REPO / "docs" / "dashboard.png")
