"""Two proxy replicas sharing one real Redis: budgets, rate limits, revocation and a crash.

This is the scaled-out deployment in miniature: stateless replicas, all shared state in Redis.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import openai
import pytest
from openai import OpenAI

from tests.conftest import read_traces, start_proxy, start_redis, stop_redis, wait_traces
from tests.integration.budgetload import (
    MSG, Load, assert_budget_rejections, assert_invariant, budget_of, create_key, drive, wait_for,
)

FAST = {"tokens_per_second": 1_000_000, "tokens_per_chunk": 256}
MODELS = [
    {"name": "sim-r1", "provider": "simulated", "profile": "R1", "simulator": FAST},
    {"name": "sim-deepseek", "provider": "simulated", "profile": "Deepseek", "simulator": FAST},
]


def replicas(tmp: Path, url: str, n: int = 2, **extra) -> list:
    out = []
    for i in range(n):
        d = tmp / f"replica-{i}"
        d.mkdir()
        out.append(start_proxy(d, {"models": MODELS, "ledger": url, **extra}))
    return out


@pytest.fixture
def redis(tmp_path):
    proc, url = start_redis(tmp_path)
    yield url
    stop_redis(proc)


def all_traces(tmp: Path) -> list[dict]:
    return [t for d in sorted(tmp.glob("replica-*")) for t in read_traces(d / "traces") if t.get("kind") is None]


def test_two_replicas_never_overspend_one_budget(tmp_path, redis):
    a, b = replicas(tmp_path, redis)
    try:
        limit = 0.08
        made = create_key(a.url, team="shared", budget_usd=limit, period="day")
        load = drive([a.base_url, b.base_url], made["key"], threads=8)
        assert_budget_rejections(load)
        for p in (a, b):  # both replicas read the same ledger
            row = budget_of(p.url, "key", made["id"], "day")
            assert row["reserved_usd"] == 0.0
            assert abs(row["spent_usd"] - sum(load.costs)) < 1e-6
        for i, p in enumerate((a, b)):
            assert wait_traces(tmp_path / f"replica-{i}" / "traces", 1), "each replica served part of the load"
        traces = all_traces(tmp_path)
        assert_invariant(limit, row["spent_usd"], traces, made["id"])
    finally:
        a.stop()
        b.stop()


def test_rate_limits_hold_across_replicas(tmp_path, redis):
    a, b = replicas(tmp_path, redis)
    try:
        made = create_key(a.url, team="rl", rpm=4)
        clients = [OpenAI(base_url=p.base_url, api_key=made["key"], max_retries=0) for p in (a, b)]
        admitted, refused = 0, []
        for i in range(10):  # alternating replicas: each alone would admit 4
            try:
                clients[i % 2].chat.completions.create(model="sim-deepseek", messages=MSG, max_tokens=10)
                admitted += 1
            except openai.RateLimitError as e:
                refused.append(e)
        assert admitted == 4, "the limit is per key across replicas, not per replica"
        assert all(e.code == "rate_limited" and int(e.response.headers["retry-after"]) >= 1 for e in refused)
    finally:
        a.stop()
        b.stop()


def test_revocation_on_one_replica_reaches_the_other_within_a_second(tmp_path, redis):
    a, b = replicas(tmp_path, redis)
    try:
        made = create_key(a.url, team="rev")
        on_b = OpenAI(base_url=b.base_url, api_key=made["key"], max_retries=0)
        assert on_b.chat.completions.create(model="sim-deepseek", messages=MSG, max_tokens=5).choices
        from tests.integration.budgetload import admin

        assert admin(a.url, "DELETE", f"/admin/keys/{made['id']}").status_code == 200

        def refused() -> bool:
            try:
                on_b.chat.completions.create(model="sim-deepseek", messages=MSG, max_tokens=5)
                return False
            except openai.AuthenticationError:
                return True

        took = wait_for(refused, timeout=5)
        # replicas poll the key version every 0.5 s; generous slack for a loaded machine
        assert took < 2.0, f"revocation took {took:.2f} s to reach the other replica"
    finally:
        a.stop()
        b.stop()


def test_a_killed_replica_loses_nothing_committed_and_leaves_no_phantom_hold(tmp_path, redis):
    ttl = 3.0
    slow = {"tokens_per_second": 2000, "tokens_per_chunk": 16}
    models = [{"name": "sim-r1", "provider": "simulated", "profile": "R1", "simulator": slow}]
    procs = []
    for i in range(2):
        d = tmp_path / f"replica-{i}"
        d.mkdir()
        procs.append(start_proxy(d, {"models": models, "ledger": redis, "reservation_ttl_s": ttl}))
    a, b = procs
    try:
        made = create_key(b.url, team="crash", budget_usd=10, period="day")
        load = Load()
        stop = threading.Event()

        def worker(url: str) -> None:
            client = OpenAI(base_url=url, api_key=made["key"], max_retries=0, timeout=60)
            while not stop.is_set():
                try:
                    r = client.chat.completions.create(model="sim-r1", messages=MSG, max_tokens=1500)
                    with load.lock:
                        load.costs.append(r.usage.model_extra["cost_usd"])
                except (openai.APIConnectionError, openai.APITimeoutError) as e:
                    with load.lock:
                        load.others.append(e)  # the replica died under this request
                    if url == a.base_url:
                        return

        threads = [threading.Thread(target=worker, args=(p.base_url,)) for p in (a, a, a, b, b)]
        for t in threads:
            t.start()
        wait_for(lambda: len(load.costs) >= 6, timeout=30)
        wait_for(lambda: budget_of(b.url, "key", made["id"], "day")["reserved_usd"] > 0, timeout=10)
        a.stop(signal.SIGKILL)
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join()
        assert load.others, "requests were in flight on the killed replica"
        # the killed replica's holds stop counting once their TTL passes; nothing else holds budget
        wait_for(lambda: budget_of(b.url, "key", made["id"], "day")["reserved_usd"] == 0.0, timeout=ttl + 10)
        spent = budget_of(b.url, "key", made["id"], "day")["spent_usd"]
        answered = sum(load.costs)
        # every answer a client received was committed before its response ended ...
        assert spent >= answered - 1e-9
        # ... and the only spend beyond that is from requests the crash cut off after their commit
        cut_off = len([e for e in load.others])
        per_request_max = max(load.costs)
        assert spent <= answered + cut_off * per_request_max * 2 + 1e-9
    finally:
        stop.set()
        a.stop(signal.SIGKILL)
        b.stop()


def test_without_its_ledger_a_replica_refuses_rather_than_serving_unbilled(tmp_path):
    proc, url = start_redis(tmp_path)
    (p,) = replicas(tmp_path, url, n=1)
    try:
        made = create_key(p.url, team="down")
        client = OpenAI(base_url=p.base_url, api_key=made["key"], max_retries=0)
        assert client.chat.completions.create(model="sim-deepseek", messages=MSG, max_tokens=5).choices
        stop_redis(proc)
        with pytest.raises(openai.APIStatusError) as e:
            client.chat.completions.create(model="sim-deepseek", messages=MSG, max_tokens=5)
        assert e.value.status_code == 503 and e.value.code == "ledger_unavailable"
        import httpx

        assert httpx.get(p.url + "/readyz").status_code == 503
        assert p.proc.poll() is None, "the replica keeps running and recovers when Redis returns"
    finally:
        p.stop()
        stop_redis(proc)
