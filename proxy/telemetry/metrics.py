"""Prometheus metrics; the names are a contract (DESIGN.md, "Metrics").

Labels stay low-cardinality (no key ids, no prompts). Metrics live on a registry owned by the
app rather than the global default, so tests can run several apps in one process. With several
worker processes, prometheus-client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR set before
start) makes every worker write its own files and `/metrics` aggregates them.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess

COST_BUCKETS = (1e-6, 1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0)
RATIO_BUCKETS = (0.1, 0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0)
OVERHEAD_BUCKETS = (5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.5)
UPSTREAM_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
VERIFIER_BUCKETS = (1e-4, 5e-4, 1e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    """Every metric of the contract, registered on one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.multiprocess = "PROMETHEUS_MULTIPROC_DIR" in os.environ
        self._children: dict[tuple, object] = {}
        r = self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.requests = Counter("pareto_requests", "Requests by outcome", ["policy", "model", "strategy", "status"], registry=r)
        self.tokens = Counter("pareto_tokens", "Tokens billed (type: prompt, completion, wasted)", ["model", "type"], registry=r)
        self.cost = Counter("pareto_cost_usd", "Spend in USD", ["team", "model"], registry=r)
        # team and model labels (an extension of the contract's names) let the dashboard's team and
        # model variables filter cost per request and prediction drift, like every other panel
        self.request_cost = Histogram("pareto_request_cost_usd", "Cost of one request in USD", ["team", "model"],
                                      buckets=COST_BUCKETS, registry=r)
        self.prediction_ratio = Histogram(
            "pareto_cost_prediction_ratio", "Actual / predicted cost per request", ["team", "model"],
            buckets=RATIO_BUCKETS, registry=r
        )
        self.predicted_cost = Counter("pareto_predicted_cost_usd", "Predicted (p50) cost of answered requests in USD",
                                      ["team", "model"], registry=r)
        self.cutoffs = Counter("pareto_cutoffs", "Samples cut at a token cutoff", ["model", "task"], registry=r)
        self.restarts = Counter("pareto_restarts", "Restarts after a cut or failure", ["model", "task"], registry=r)
        self.verifications = Counter("pareto_verifications", "Verifier verdicts", ["verifier", "result"], registry=r)
        self.verifier_seconds = Histogram(
            "pareto_verifier_seconds", "Verifier check duration", ["verifier"], buckets=VERIFIER_BUCKETS, registry=r
        )
        gauge_mode = {"multiprocess_mode": "mostrecent"} if self.multiprocess else {}
        self.budget_spent = Gauge("pareto_budget_spent_usd", "Spend in the current budget window", ["team"], registry=r, **gauge_mode)
        self.budget_limit = Gauge("pareto_budget_limit_usd", "Budget limit of the current window", ["team"], registry=r, **gauge_mode)
        self.budget_rejections = Counter("pareto_budget_rejections", "Requests refused for budget", ["team"], registry=r)
        # extensions beyond the contract
        self.budget_soft_events = Counter(
            "pareto_budget_soft_limit_events", "Soft budget limits crossed (once per window)", ["team", "scope"], registry=r
        )
        self.rate_limited = Counter("pareto_rate_limited", "Requests refused by a key's rate limit", ["team"], registry=r)
        self.upstream_seconds = Histogram(
            "pareto_upstream_seconds", "Upstream call duration", ["model"], buckets=UPSTREAM_BUCKETS, registry=r
        )
        self.upstream_errors = Counter("pareto_upstream_errors", "Upstream failures", ["model", "kind"], registry=r)
        self.overhead = Histogram(
            "pareto_overhead_seconds", "Proxy time outside upstream calls", buckets=OVERHEAD_BUCKETS, registry=r
        )
        self.inflight = Gauge(
            "pareto_inflight_requests", "Requests in flight", registry=r,
            **({"multiprocess_mode": "livesum"} if self.multiprocess else {}),
        )

    def child(self, metric: Counter | Gauge | Histogram, *values: str):
        """`metric.labels(*values)`, memoised: labels are low-cardinality and this runs per request."""
        key = (metric._name, values)
        c = self._children.get(key)
        if c is None:
            c = self._children[key] = metric.labels(*values)
        return c

    def observe_verifier(self, verifier: str, seconds: float, result: str) -> None:
        """After every verifier check: its duration; checks that gave no verdict count as
        `pareto_verifications_total{result="error"}` (pass and fail are counted per sample)."""
        self.child(self.verifier_seconds, verifier).observe(seconds)
        if result == "error":
            self.child(self.verifications, verifier, "error").inc()

    def render(self) -> bytes:
        """The Prometheus text exposition of every worker's metrics."""
        if self.multiprocess:
            reg = CollectorRegistry()
            multiprocess.MultiProcessCollector(reg)
            return generate_latest(reg)
        return generate_latest(self.registry)
