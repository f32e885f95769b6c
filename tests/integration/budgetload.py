"""Driving real proxies against a budget, and checking the ledger's invariant afterwards.

Shared by the SQLite tests (one proxy, several workers) and the Redis tests (two replicas).
The load is ordinary `openai` client traffic; what is checked comes from three independent
places: what clients were told (`usage.cost_usd`, 429 bodies), the ledger (`GET /admin/budgets`)
and the traces (each request's `cost_usd` and `reserved_usd`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx
import openai
from openai import OpenAI

from tests.conftest import ADMIN_KEY

MSG = [{"role": "user", "content": "What is 17 * 23? Put the answer in \\boxed{}."}]


def admin(url: str, method: str, path: str, **kw) -> httpx.Response:
    return httpx.request(method, url + path, headers={"authorization": f"Bearer {ADMIN_KEY}"}, timeout=30, **kw)


def create_key(url: str, **spec) -> dict:
    r = admin(url, "POST", "/admin/keys", json=spec)
    assert r.status_code == 201, r.text
    return r.json()


def budget_rows(url: str) -> list[dict]:
    r = admin(url, "GET", "/admin/budgets")
    assert r.status_code == 200, r.text
    return r.json()["data"]


def budget_of(url: str, scope: str, ident: str, period: str) -> dict:
    rows = [b for b in budget_rows(url) if b["scope"] == scope and b.get(scope) == ident and b["period"] == period]
    assert len(rows) == 1, rows
    return rows[0]


@dataclass
class Load:
    """What the clients saw."""

    costs: list[float] = field(default_factory=list)  # usage.cost_usd of each answered request
    rejections: list[openai.APIStatusError] = field(default_factory=list)
    others: list[BaseException] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def drive(base_urls: Sequence[str], key: str, threads: int, model: str = "auto", stop_after: int = 3,
          max_requests: int = 400, routing: dict | None = None) -> Load:
    """`threads` clients, each round-robin over `base_urls`, sending until they see `stop_after`
    budget rejections in a row; then one client alone does the same, so the budget ends up
    as full as the admission rule allows."""
    load = Load()
    sent = [0]
    extra = {"routing": {"task": "math", **(routing or {})}}

    def worker(offset: int) -> None:
        clients = [OpenAI(base_url=u, api_key=key, max_retries=0, timeout=60) for u in base_urls]
        streak, i = 0, offset
        while streak < stop_after:
            with load.lock:
                if sent[0] >= max_requests:
                    return
                sent[0] += 1
            client = clients[i % len(clients)]
            i += 1
            try:
                r = client.chat.completions.create(model=model, messages=MSG, max_tokens=4000, extra_body=extra)
                with load.lock:
                    load.costs.append(r.usage.model_extra["cost_usd"])
                streak = 0
            except openai.RateLimitError as e:
                with load.lock:
                    load.rejections.append(e)
                streak += 1
            except Exception as e:  # anything else is a failure of the test's premise: reported
                with load.lock:
                    load.others.append(e)
                return

    pool = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    worker(0)
    return load


def assert_budget_rejections(load: Load) -> None:
    assert not load.others, f"unexpected errors: {load.others[:3]!r}"
    assert load.rejections, "the load never reached the budget"
    for e in load.rejections:
        assert e.status_code == 429
        assert e.code == "budget_exceeded", e.body
        assert e.response.headers["x-should-retry"] == "false"
        remaining = float(e.response.headers["x-pareto-budget-remaining-usd"])
        assert remaining >= 0 and f"{remaining:.6f}" in e.message


def assert_invariant(limit: float, spent: float, traces: list[dict], key_id: str) -> None:
    """committed <= limit + overrun of admitted requests, and >= limit - one reservation."""
    mine = [t for t in traces if t["key_id"] == key_id]
    admitted = [t for t in mine if t.get("reserved_usd") is not None]
    overrun = sum(max(0.0, t["cost_usd"] - t["reserved_usd"]) for t in admitted)
    largest_hold = max(t["reserved_usd"] for t in admitted)
    traced = sum(t["cost_usd"] for t in mine)
    assert abs(spent - traced) < 1e-6, f"ledger spent {spent} != traced {traced}"
    assert spent <= limit + overrun + 1e-9, f"spent {spent} > limit {limit} + overrun {overrun}"
    assert spent >= limit - largest_hold - 1e-9, f"spent {spent} < limit {limit} - one hold {largest_hold}"


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05) -> float:
    """Poll until `predicate()` is true; returns the seconds it took (raises after `timeout`)."""
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)
    return time.monotonic() - t0
