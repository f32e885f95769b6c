"""The deploy/ files are valid for the tools that will read them.

What runs here, honestly: `promtool check config` and `promtool test rules` (Debian's
prometheus package); the Helm chart rendered by Helm's own Go engine (the `helm-python-sdk`
wheel bundles Helm v4's SDK as a shared library; no `helm` binary is on any registry reachable
here) and every rendered object validated against the Kubernetes OpenAPI schemas of
`kubernetes-validate` (the ServiceMonitor, a Prometheus Operator CRD, against the subset of
its schema below); the compose file against the Compose Specification JSON schema. No image
is built and no compose stack is started: there is no Docker engine here.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import jsonschema
import pytest
import yaml

from tests.conftest import REPO

DEPLOY = REPO / "deploy"
CHART = DEPLOY / "helm" / "pareto-proxy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "pareto-proxy.json"
K8S_VERSION = "1.30.0"
CONTRACT = {  # DESIGN.md, "Metrics"
    "pareto_requests_total", "pareto_tokens_total", "pareto_cost_usd_total", "pareto_request_cost_usd",
    "pareto_cost_prediction_ratio", "pareto_cutoffs_total", "pareto_restarts_total", "pareto_verifications_total",
    "pareto_budget_spent_usd", "pareto_budget_limit_usd", "pareto_budget_rejections_total", "pareto_upstream_seconds",
    "pareto_upstream_errors_total", "pareto_overhead_seconds", "pareto_inflight_requests",
}

# the fields of monitoring.coreos.com/v1 ServiceMonitor the chart uses (prometheus-operator CRD)
SERVICE_MONITOR = {
    "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"const": "ServiceMonitor"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {"type": "object", "required": ["selector", "endpoints"], "additionalProperties": False, "properties": {
            "selector": {"type": "object", "properties": {"matchLabels": {
                "type": "object", "minProperties": 1, "additionalProperties": {"type": "string"}}}},
            "endpoints": {"type": "array", "minItems": 1, "items": {
                "type": "object", "additionalProperties": False, "required": ["port"], "properties": {
                    "port": {"type": "string"}, "path": {"type": "string", "pattern": "^/"},
                    "interval": {"type": "string", "pattern": "^([0-9]+(ms|s|m|h))+$"},
                    "scrapeTimeout": {"type": "string", "pattern": "^([0-9]+(ms|s|m|h))+$"}}}},
        }},
    },
}

assert shutil.which("promtool"), "promtool is missing: apt-get install prometheus (.ci/run does)"


def test_promtool_checks_config_and_rules():
    r = subprocess.run(["promtool", "check", "config", "prometheus.yml"], cwd=DEPLOY / "prometheus",
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "6 rules found" in r.stdout + r.stderr


def test_promtool_alert_rule_unit_tests():
    r = subprocess.run(["promtool", "test", "rules", "alerts_test.yml"], cwd=DEPLOY / "prometheus",
                       capture_output=True, text=True)
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr


def test_promtool_rule_tests_can_fail(tmp_path):
    """The unit tests bite: a budget alert whose bound moved no longer matches its expectations."""
    rules = (DEPLOY / "prometheus" / "alerts.yml").read_text().replace("rate(pareto_cost_usd_total[1h])) * 86400",
                                                                   "rate(pareto_cost_usd_total[1h])) * 3600")
    (tmp_path / "alerts.yml").write_text(rules)
    shutil.copy(DEPLOY / "prometheus" / "alerts_test.yml", tmp_path)
    r = subprocess.run(["promtool", "test", "rules", "alerts_test.yml"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode != 0 and "ParetoBudgetExhaustionWithin24h" in r.stdout + r.stderr


def _alert_names() -> set[str]:
    doc = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    return {r["alert"] for g in doc["groups"] for r in g["rules"]}


def test_alerts_cover_the_issue():
    assert {"ParetoBudgetExhaustionWithin24h", "ParetoCostPredictionDrift", "ParetoUpstreamErrorRate",
            "ParetoCutoffRateSpike", "ParetoOverheadP99High"} <= _alert_names()


def dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def test_dashboard_uses_contract_names_and_template_variables():
    dash = json.loads(DASHBOARD.read_text())
    names = {v["name"] for v in dash["templating"]["list"]}
    assert {"team", "model", "datasource"} <= names
    exprs = " ".join(dashboard_exprs())
    used = set(re.findall(r"\b(pareto_[a-z_]+?)(?:_bucket|_sum|_count)?\b", exprs))
    assert CONTRACT <= used, f"contract metrics missing from the dashboard: {CONTRACT - used}"
    # beyond the contract only the proxy's own extensions, and only ones it really exports
    from proxy.telemetry.metrics import Metrics

    m = Metrics()
    m.child(m.verifier_seconds, "regex").observe(0.1)  # histograms and counters appear once touched
    m.child(m.predicted_cost, "t", "m").inc()
    exported = m.render().decode()
    unknown = {u for u in used if u not in CONTRACT}
    assert unknown <= {"pareto_verifier_seconds", "pareto_predicted_cost_usd_total"}, unknown
    for name in unknown:
        assert f"\n{name}" in exported, f"the dashboard queries {name}, which the proxy does not export"
    titles = " ".join(p["title"].lower() for p in dash["panels"])
    for want in ("spend rate", "budget remaining", "cost per request", "tokens by type", "cutoffs and restarts",
                 "verifier pass rate", "routing mix", "overhead", "predicted vs actual"):
        assert want in titles, want
    # every team- or model-labelled spend/token panel honours the variables
    for e in dashboard_exprs():
        if any(n in e for n in ("pareto_cost_usd_total", "pareto_request_cost_usd", "pareto_cost_prediction_ratio")):
            assert '$team' in e and '$model' in e, e
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))


def test_grafana_provisioning_points_at_the_dashboard():
    prov = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "pareto.yml").read_text())
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    path = prov["providers"][0]["options"]["path"]
    assert f"./grafana/dashboards:{path}:ro" in mounts
    ds = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert ds["datasources"][0]["type"] == "prometheus"


def test_compose_file_validates_against_the_compose_spec():
    schema = json.loads((REPO / "tests" / "e2e" / "schemas" / "compose_spec.json").read_text())
    doc = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in jsonschema.Draft7Validator(schema).iter_errors(doc)]
    assert not errors, "\n".join(errors)
    services = doc["services"]
    assert {"proxy-1", "proxy-2", "redis", "prometheus", "grafana"} <= set(services)
    assert "--appendonly" in services["redis"]["command"]
    # every bind mount of the stack exists in the repository
    for svc in services.values():
        for v in svc.get("volumes", []):
            src = v.split(":")[0]
            if src.startswith("./"):
                assert (DEPLOY / src).exists(), src
    # the scrape config names both replicas
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = prom["scrape_configs"][0]["static_configs"][0]["targets"]
    assert sorted(t.split(":")[0] for t in targets) == ["proxy-1", "proxy-2"]
    # the proxy config the stack mounts is a valid proxy config
    from proxy.config import Settings

    Settings(**yaml.safe_load((DEPLOY / "config" / "pareto.yaml").read_text()))


def test_dockerfile_is_small_and_non_root():
    text = (DEPLOY / "Dockerfile").read_text()
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert len(froms) == 2 and all("slim" in f for f in froms), "multi-stage on a slim base"
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and not users[-1].startswith(("root", "0")), "runs as a non-root user"
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    assert ignore[1:2] == ["**"] or "**" in ignore, "the build context is an allow-list"


# ---- Helm -------------------------------------------------------------------------------

@pytest.fixture(autouse=False)
def helm_sdk():
    # both come with the test extra (pyproject.toml): a missing one is a broken setup, not a skip
    import helm_python  # noqa: F401
    import kubernetes_validate  # noqa: F401


def render(values: dict | None = None) -> list[dict]:
    from helm_python.chart import Chart

    with Chart.load(CHART) as chart:
        out = chart.render(values, name="pareto", namespace="ai", is_install=True)
    docs = []
    for name, text in out.items():
        if name.endswith("NOTES.txt"):
            continue
        docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def test_helm_lint(helm_sdk):
    """`helm lint --strict` (warnings count as errors) through Helm's own linter."""
    from helm_python.chart import lint

    report = lint(CHART, strict=True, namespace="ai", kube_version="v1.30.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["total_charts_linted"] == 1 and not report["errors"] and not problems, report


def test_helm_chart_renders_valid_kubernetes_objects(helm_sdk):
    import kubernetes_validate

    docs = render()
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget",
                            "Service", "ServiceMonitor"])
    for d in docs:
        if d["kind"] == "ServiceMonitor":
            jsonschema.validate(d, SERVICE_MONITOR)
            continue
        kubernetes_validate.validate(d, K8S_VERSION, strict=True)
    by_kind = {d["kind"]: d for d in docs}
    dep = by_kind["Deployment"]
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True and c["securityContext"]["readOnlyRootFilesystem"] is True
    # secrets are references, never values
    refs = [e["valueFrom"]["secretKeyRef"] for e in c["env"] if "valueFrom" in e]
    assert refs == [{"name": "pareto-secrets", "key": "admin-key"}]
    assert "replicas" not in dep["spec"], "the HPA owns the replica count"
    # the HPA, PDB, Service and ServiceMonitor all select the Deployment's pods
    sel = dep["spec"]["selector"]["matchLabels"]
    assert by_kind["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    assert by_kind["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == sel
    assert by_kind["Service"]["spec"]["selector"] == sel
    assert by_kind["ServiceMonitor"]["spec"]["selector"]["matchLabels"] == sel
    assert by_kind["ServiceMonitor"]["spec"]["endpoints"][0]["port"] == by_kind["Service"]["spec"]["ports"][0]["name"]
    # the ConfigMap carries a config the proxy accepts
    from proxy.config import Settings

    Settings(**yaml.safe_load(by_kind["ConfigMap"]["data"]["pareto.yaml"]))


def test_helm_chart_options_render(helm_sdk):
    import kubernetes_validate

    docs = render({"autoscaling": {"enabled": False}, "replicaCount": 3, "serviceMonitor": {"enabled": False},
                   "podDisruptionBudget": {"enabled": False}, "traces": {"existingClaim": "traces-pvc"},
                   "secretEnvFrom": ["team-keys"], "env": [{"name": "PARETO_LOG_LEVEL", "value": "debug"}]})
    assert sorted(d["kind"] for d in docs) == ["ConfigMap", "Deployment", "Service"]
    dep = next(d for d in docs if d["kind"] == "Deployment")
    kubernetes_validate.validate(dep, K8S_VERSION, strict=True)
    assert dep["spec"]["replicas"] == 3
    pod = dep["spec"]["template"]["spec"]
    assert pod["containers"][0]["envFrom"] == [{"secretRef": {"name": "team-keys"}}]
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "traces-pvc"}} in pod["volumes"]


def test_schema_validation_bites(helm_sdk):
    """A broken object is refused: the validation above is not a rubber stamp."""
    import kubernetes_validate

    dep = next(d for d in render() if d["kind"] == "Deployment")
    dep["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "eight thousand"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, K8S_VERSION, strict=True)
