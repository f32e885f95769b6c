"""Ledger conformance: the same behaviour from the SQLite backend (a real file) and the Redis
backend (a real redis-server), plus cross-process concurrency and kill -9 tests.

Running this file as a script is the worker the concurrency tests start in other processes."""

from __future__ import annotations

import asyncio
import calendar
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from proxy.budget.ledger import (
    NANO, BudgetExceeded, KeyRecord, RateCheck, RateLimited, key_scope, team_scope,
)

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
REPO = Path(__file__).resolve().parents[2]


def ts(s: str) -> float:
    """'2026-11-23T23:59:00' (UTC) -> epoch seconds."""
    return float(calendar.timegm(time.strptime(s, "%Y-%m-%dT%H:%M:%S")))


def make_ledger(backend: str, target: str, clock=time.time):
    if backend == "sqlite":
        from proxy.budget.sqlite_ledger import SQLiteLedger

        return SQLiteLedger(target, clock=clock)
    from proxy.budget.redis_ledger import RedisLedger

    return RedisLedger(target, clock=clock)


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture(params=["sqlite", "redis"])
def backend(request, tmp_path):
    """(backend name, target): a SQLite path under tmp_path (parent dirs not yet created) or a redis URL."""
    if request.param == "sqlite":
        return "sqlite", str(tmp_path / "nested" / "dir" / "ledger.db")
    return "redis", request.getfixturevalue("redis_url")


@pytest.fixture
async def clock_ledger(backend):
    clock = Clock(ts("2026-11-23T12:00:10"))
    led = make_ledger(*backend, clock=clock)
    try:
        yield clock, led
    finally:
        await led.close()


K, T = key_scope("k_1"), team_scope("team-a")


# ---- money ------------------------------------------------------------------------------


async def test_reserve_within_and_over_budget(clock_ledger):
    clock, led = clock_ledger
    await led.set_budget(T, "day", 1.0, None)
    await led.set_budget(K, "month", 0.5, None)
    r = await led.reserve([K, T], 0.3, ttl_s=60)
    assert r.scopes == (K, T) and r.amount_usd == pytest.approx(0.3)
    assert r.remaining_usd == pytest.approx(0.2)  # the key's month budget is the tighter one
    with pytest.raises(BudgetExceeded) as ei:
        await led.reserve([K, T], 0.25, ttl_s=60)
    e = ei.value
    assert e.scope == K and e.period == "month"
    assert e.remaining_usd == pytest.approx(0.2) and e.needed_usd == pytest.approx(0.25)
    assert e.status == 429 and e.code == "budget_exceeded"
    assert e.headers["x-pareto-budget-remaining-usd"] == "0.200000"
    assert e.headers["x-should-retry"] == "false"
    # a refused reservation holds nothing
    states = {(b.scope, b.period): b for b in await led.budgets()}
    assert states[(K, "month")].reserved_usd == pytest.approx(0.3)
    assert states[(T, "day")].remaining_usd == pytest.approx(0.7)
    # scopes without budgets: no limit, remaining None
    r2 = await led.reserve([key_scope("free")], 100.0, ttl_s=60)
    assert r2.remaining_usd is None


async def test_commit_release_and_windows(clock_ledger):
    clock, led = clock_ledger
    await led.set_budget(T, "day", 1.0, None)
    r = await led.reserve([K, T], 0.4, ttl_s=60)
    await led.commit(r, 0.25, tokens=10)
    assert await led.spent(T, "day") == pytest.approx(0.25)
    assert await led.spent(K, "month") == pytest.approx(0.25)  # spend recorded without a budget
    assert await led.spent(K, "total") == pytest.approx(0.25)
    r = await led.reserve([K, T], 0.5, ttl_s=60)
    await led.release(r)
    [b] = await led.budgets([T])
    assert (b.spent_usd, b.reserved_usd, b.limit_usd) == (pytest.approx(0.25), 0.0, 1.0)
    assert b.window == "2026-11-23T00:00:00Z"
    assert b.to_dict()["team"] == "team-a"
    # the day budget is nearly used; across UTC midnight the day resets, month and total do not
    await led.commit(await led.reserve([K, T], 0.7, ttl_s=60), 0.7)
    with pytest.raises(BudgetExceeded):
        await led.reserve([K, T], 0.1, ttl_s=60)
    clock.t = ts("2026-11-24T00:00:01")
    assert await led.spent(T, "day") == 0.0
    assert await led.spent(T, "month") == pytest.approx(0.95)
    r = await led.reserve([K, T], 0.1, ttl_s=60)
    await led.commit(r, 0.1)
    [b] = await led.budgets([T])
    assert b.spent_usd == pytest.approx(0.1) and b.window == "2026-11-24T00:00:00Z"
    # month end: the month resets, total keeps counting
    clock.t = ts("2026-11-30T23:59:59")
    await led.commit(await led.reserve([K], 0.05, ttl_s=60), 0.05)
    assert await led.spent(K, "month") == pytest.approx(1.1)
    clock.t = ts("2026-12-01T00:00:00")
    assert await led.spent(K, "month") == 0.0
    assert await led.spent(K, "day") == 0.0
    assert await led.spent(K, "total") == pytest.approx(1.1)


async def test_budget_set_later_sees_spend_and_can_be_removed(clock_ledger):
    clock, led = clock_ledger
    await led.commit(await led.reserve([T], 0.6, ttl_s=60), 0.6)
    await led.set_budget(T, "month", 0.5, 0.4)
    with pytest.raises(BudgetExceeded) as ei:
        await led.reserve([T], 0.01, ttl_s=60)
    assert ei.value.remaining_usd == 0.0  # clamped, never negative
    await led.set_budget(T, "month", None, 0.4)  # soft-only: no refusals
    await led.reserve([T], 5.0, ttl_s=60)
    [b] = await led.budgets([T])
    assert b.limit_usd is None and b.soft_usd == pytest.approx(0.4) and b.remaining_usd is None


async def test_ttl_expiry_and_late_commit(clock_ledger):
    clock, led = clock_ledger
    await led.set_budget(T, "total", 1.0, None)
    r = await led.reserve([T], 0.8, ttl_s=30)
    with pytest.raises(BudgetExceeded):
        await led.reserve([T], 0.5, ttl_s=30)
    clock.t += 29
    with pytest.raises(BudgetExceeded):
        await led.reserve([T], 0.5, ttl_s=30)
    clock.t += 2  # past the TTL: the hold stops counting
    [b] = await led.budgets([T])
    assert b.reserved_usd == 0.0
    r2 = await led.reserve([T], 0.5, ttl_s=30)
    # the late commit of the expired reservation still records its spend, without freeing r2's hold
    await led.commit(r, 0.3)
    [b] = await led.budgets([T])
    assert b.spent_usd == pytest.approx(0.3) and b.reserved_usd == pytest.approx(0.5)
    clock.t += 5  # purge runs again; the hold of r2 still counts
    [b] = await led.budgets([T])
    assert b.reserved_usd == pytest.approx(0.5)
    await led.release(r2)
    await led.release(r2)  # idempotent
    [b] = await led.budgets([T])
    assert b.reserved_usd == 0.0 and b.spent_usd == pytest.approx(0.3)


async def test_soft_limit_crossed_exactly_once(clock_ledger):
    clock, led = clock_ledger
    await led.set_budget(T, "day", 10.0, 0.45)
    await led.set_budget(K, "month", None, 0.25)
    res = [await led.reserve([K, T], 0.1, ttl_s=60) for _ in range(10)]
    results = await asyncio.gather(*(led.commit(r, 0.1) for r in res))  # concurrent: batched together
    crossed = [s for cr in results for s in cr.soft_crossed]
    assert sorted((s.scope, s.period) for s in crossed) == [(K, "month"), (T, "day")]
    team = next(s for s in crossed if s.scope == T)
    assert team.soft_usd == pytest.approx(0.45) and team.limit_usd == 10.0
    assert team.spent_usd == pytest.approx(0.5) and team.window == "2026-11-23T00:00:00Z"
    assert (await led.commit(await led.reserve([K, T], 1, ttl_s=60), 1.0)).soft_crossed == []
    # a new window is a new crossing
    clock.t = ts("2026-11-24T08:00:00")
    cr = await led.commit(await led.reserve([K, T], 1, ttl_s=60), 0.5)
    assert [(s.scope, s.period) for s in cr.soft_crossed] == [(T, "day")]


# ---- rate limits ------------------------------------------------------------------------


async def test_rpm(clock_ledger):
    clock, led = clock_ledger
    clock.t = ts("2026-11-23T12:00:00")
    rate = RateCheck("k_1", rpm=3)
    for _ in range(3):
        r = await led.reserve([K], 0.0, ttl_s=60, rate=rate)
        assert r.rate_key == "k_1"
    with pytest.raises(RateLimited) as ei:
        await led.reserve([K], 0.0, ttl_s=60, rate=rate)
    e = ei.value
    assert e.code == "rate_limited" and e.status == 429
    # all 3 requests in this minute: free again once the next minute's estimate leaves room
    assert 60 <= e.retry_after_s <= 120 and e.headers["retry-after"] == str(e.retry_after_s)
    with pytest.raises(RateLimited):  # refusals are not counted, still refused
        await led.reserve([K], 0.0, ttl_s=60, rate=rate)
    await led.reserve([K], 0.0, ttl_s=60, rate=RateCheck("k_other", rpm=3))  # other keys unaffected
    clock.t += e.retry_after_s
    await led.reserve([K], 0.0, ttl_s=60, rate=rate)
    clock.t += 180
    for _ in range(3):
        await led.reserve([K], 0.0, ttl_s=60, rate=rate)


async def test_tpm_after_committed_tokens(clock_ledger):
    clock, led = clock_ledger
    clock.t = ts("2026-11-23T12:00:30")
    rate = RateCheck("k_1", tpm=1000)
    r = await led.reserve([K], 0.01, ttl_s=60, rate=rate)
    r2 = await led.reserve([K], 0.01, ttl_s=60, rate=rate)  # tokens are known only at commit
    await led.commit(r, 0.01, tokens=600)
    await led.reserve([K], 0.01, ttl_s=60, rate=rate)
    await led.commit(r2, 0.01, tokens=600)
    with pytest.raises(RateLimited) as ei:
        await led.reserve([K], 0.01, ttl_s=60, rate=rate)
    assert "tokens" in str(ei.value) and ei.value.retry_after_s >= 1
    clock.t += ei.value.retry_after_s
    await led.reserve([K], 0.01, ttl_s=60, rate=rate)


async def test_rate_refusal_holds_no_budget_and_budget_refusal_counts_no_request(clock_ledger):
    clock, led = clock_ledger
    clock.t = ts("2026-11-23T12:00:00")
    await led.set_budget(K, "day", 1.0, None)
    rate = RateCheck("k_1", rpm=2)
    with pytest.raises(BudgetExceeded):
        await led.reserve([K], 2.0, ttl_s=60, rate=rate)
    await led.reserve([K], 0.1, ttl_s=60, rate=rate)
    await led.reserve([K], 0.1, ttl_s=60, rate=rate)  # the refused one above was not counted
    with pytest.raises(RateLimited):
        await led.reserve([K], 0.1, ttl_s=60, rate=rate)
    [b] = await led.budgets([K])
    assert b.reserved_usd == pytest.approx(0.2)


# ---- keys and drain ---------------------------------------------------------------------


async def test_keys(clock_ledger):
    clock, led = clock_ledger
    assert await led.keys() == [] and await led.keys_version() == 0 and await led.ping()
    h = hashlib.sha256(b"sk-pp-one").hexdigest()
    await led.add_key(KeyRecord("k_1", h, "team-a", default_policy="cheap", rpm=60, created=100.0))
    v1 = await led.keys_version()
    await led.add_key(KeyRecord("k_2", "00" * 32, "team-b", tpm=5000, created=200.0))
    v2 = await led.keys_version()
    assert 0 < v1 < v2
    ks = await led.keys()
    assert [k.key_id for k in ks] == ["k_1", "k_2"]
    assert ks[0] == KeyRecord("k_1", h, "team-a", default_policy="cheap", rpm=60, created=100.0)
    assert await led.revoke_key("k_1") is True
    assert await led.keys_version() > v2
    v3 = await led.keys_version()
    assert await led.revoke_key("nope") is False
    assert await led.keys_version() == v3
    assert [(k.key_id, k.revoked) for k in await led.keys()] == [("k_1", True), ("k_2", False)]


async def test_plain_key_is_stored_nowhere(backend, tmp_path):
    name, target = backend
    plain = "sk-pp-PLAINSECRET0123456789abcdef"
    h = hashlib.sha256(plain.encode()).hexdigest()
    led = make_ledger(name, target)
    await led.add_key(KeyRecord("k_9", h, "team-a"))
    await led.commit(await led.reserve([key_scope("k_9")], 0.1, ttl_s=60), 0.1)
    await led.close()
    if name == "sqlite":
        blob = b"".join(p.read_bytes() for p in Path(target).parent.glob("ledger.db*"))
    else:
        import redis

        port = int(target.rsplit(":", 1)[1].split("/")[0])
        r = redis.Redis(port=port)
        r.config_set("rdbcompression", "no")
        r.save()
        blob = (tmp_path / f"redis-{port}" / "dump.rdb").read_bytes()
        blob += b"".join(str(r.dump(k)).encode() + k for k in r.keys("*"))
        r.close()
    assert h.encode() in blob  # the test can see what is stored...
    assert plain.encode() not in blob and plain[6:].encode() not in blob  # ...and the key is not in it


async def test_release_all(clock_ledger):
    clock, led = clock_ledger
    await led.set_budget(T, "day", 1.0, None)
    rs = [await led.reserve([K, T], 0.2, ttl_s=600) for _ in range(4)]
    await led.commit(rs[0], 0.1)
    await led.release(rs[1])
    assert await led.release_all() == 2
    [b] = await led.budgets([T])
    assert b.reserved_usd == 0.0 and b.spent_usd == pytest.approx(0.1)
    assert await led.release_all() == 0


async def test_two_ledger_objects_share_state(backend):
    """Two objects on one backend (two workers or replicas) see each other's holds immediately."""
    a, b = make_ledger(*backend), make_ledger(*backend)
    try:
        await a.set_budget(T, "total", 1.0, None)
        await a.reserve([T], 0.7, ttl_s=60)
        with pytest.raises(BudgetExceeded):
            await b.reserve([T], 0.4, ttl_s=60)
        assert await b.release_all() == 0  # b holds nothing of its own
        assert await a.release_all() == 1
        await b.reserve([T], 0.4, ttl_s=60)
    finally:
        await a.close()
        await b.close()


# ---- several processes ------------------------------------------------------------------

LIMIT, RESERVE = 1.0, 0.02


def _spawn(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    return subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env, cwd=REPO)


async def test_processes_hammering_one_budget(backend):
    name, target = backend
    led = make_ledger(name, target)
    await led.set_budget(T, "day", LIMIT, None)
    procs = [_spawn("hammer", name, target, str(seed)) for seed in range(4)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=150)
        assert p.returncode == 0, err.decode()[-3000:]
        outs.append(json.loads(out.decode().strip().splitlines()[-1]))
    committed = [tuple(c) for o in outs for c in o["committed"]]
    assert all(o["errors"] == [] for o in outs), [o["errors"] for o in outs]  # every refusal was BudgetExceeded
    assert sum(o["refused"] for o in outs) > 0  # demand exceeded the limit
    total = sum(actual for _, actual in committed)
    overrun = sum(max(0, actual - reserved) for reserved, actual in committed)
    spent = await led.spent(T, "day")
    assert spent == pytest.approx(total, abs=1e-9 * len(committed))  # no increment lost
    assert spent <= LIMIT + overrun + 1e-9
    assert spent >= LIMIT - RESERVE - 1e-9
    [b] = await led.budgets([T])
    assert b.reserved_usd == 0.0
    await led.close()


async def test_killed_process_hold_expires(backend):
    name, target = backend
    t0 = ts("2026-11-23T12:00:00")
    clock = Clock(t0 + 1)
    led = make_ledger(name, target, clock=clock)
    await led.set_budget(T, "total", 1.0, None)
    p = _spawn("hold", name, target, str(t0))
    try:
        line = p.stdout.readline().decode()
        assert line.strip() == "held", p.stderr.read().decode()[-3000:] if not line else line
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=30)
        [b] = await led.budgets([T])
        assert b.reserved_usd == pytest.approx(0.9)
        with pytest.raises(BudgetExceeded):
            await led.reserve([T], 0.5, ttl_s=30)
        clock.t = t0 + 31  # past the dead child's TTL
        [b] = await led.budgets([T])
        assert b.reserved_usd == 0.0
        r = await led.reserve([T], 0.9, ttl_s=30)
        assert r.remaining_usd == pytest.approx(0.1)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        await led.close()


async def _hammer(name: str, target: str, seed: int) -> dict:
    rng = random.Random(seed)
    led = make_ledger(name, target)
    committed, refused, errors, streak = [], 0, [], 0
    try:
        for _ in range(2000):
            try:
                res = await led.reserve([key_scope(f"k{seed}"), T], RESERVE, ttl_s=600)
            except BudgetExceeded:
                refused += 1
                streak += 1
                [b] = await led.budgets([T])
                if b.spent_usd + RESERVE > LIMIT or streak > 200:
                    break
                await asyncio.sleep(0.005)
                continue
            except Exception as e:  # noqa: BLE001 - reported to the parent
                errors.append(repr(e))
                continue
            streak = 0
            await asyncio.sleep(rng.random() * 0.002)
            actual = round(RESERVE * rng.uniform(0.3, 1.5), 9)  # some requests overrun their reservation
            await led.commit(res, actual)
            committed.append((res.amount_usd, actual))
    finally:
        await led.close()
    return {"committed": committed, "refused": refused, "errors": errors}


async def _hold(name: str, target: str, t0: float) -> None:
    led = make_ledger(name, target, clock=lambda: t0)
    await led.reserve([T], 0.9, ttl_s=30)
    print("held", flush=True)
    await asyncio.sleep(3600)


if __name__ == "__main__":
    what, name, target, arg = sys.argv[1:5]
    if what == "hammer":
        print(json.dumps(asyncio.run(_hammer(name, target, int(arg)))), flush=True)
    else:
        asyncio.run(_hold(name, target, float(arg)))
