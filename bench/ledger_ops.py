"""Ledger hot-path cost: reserve+commit pairs per second at concurrency 1 and 16, per backend.

    .venv/bin/python bench/ledger_ops.py [--seconds 3] [--backends sqlite,redis]

Each pair is ``reserve([key, team], 0.01, rate=RateCheck(rpm, tpm))`` then ``commit(actual,
tokens)`` against a budget large enough never to refuse: the work every proxied request adds.
SQLite runs on a file in a temp dir (WAL, synchronous=FULL for commits, group commit); Redis
is a real redis-server started here (AOF on, appendfsync everysec). "CPU µs/pair" is this
process's CPU time (user+sys, all threads) per pair; Redis's own CPU is reported separately.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from proxy.budget.ledger import RateCheck, key_scope, team_scope  # noqa: E402


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run(led, concurrency: int, seconds: float) -> tuple[float, float, int]:
    team = team_scope("bench")
    await led.set_budget(team, "day", 1e9, None)
    rate = RateCheck("k_bench", rpm=10**9, tpm=10**12)
    stop = False
    count = 0

    async def worker(i: int) -> None:
        nonlocal count
        scopes = [key_scope(f"k_bench{i}"), team]
        while not stop:
            res = await led.reserve(scopes, 0.01, ttl_s=600, rate=rate)
            await led.commit(res, 0.007, tokens=500)
            count += 1

    # warm up
    for _ in range(20):
        await led.commit(await led.reserve([team], 0.01, ttl_s=600), 0.0)
    c0, t0, n0 = cpu(), time.perf_counter(), count
    tasks = [asyncio.create_task(worker(i)) for i in range(concurrency)]
    await asyncio.sleep(seconds)
    stop = True
    await asyncio.gather(*tasks)
    el, used, n = time.perf_counter() - t0, cpu() - c0, count - n0
    return n / el, used / n * 1e6, n


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--backends", default="sqlite,redis")
    a = ap.parse_args()
    print(f"# {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, {a.seconds:.0f} s per row")
    print(f"{'backend':<8} {'conc':>4} {'pairs/s':>9} {'CPU us/pair':>12} {'extra':>30}")
    for backend in a.backends.split(","):
        for conc in (1, 16):
            with tempfile.TemporaryDirectory() as d:
                extra = ""
                if backend == "sqlite":
                    from proxy.budget.sqlite_ledger import SQLiteLedger

                    led = SQLiteLedger(Path(d) / "ledger.db")
                    rate, us, n = await run(led, conc, a.seconds)
                    extra = f"{led.ops / max(1, led.batches):.1f} ops/transaction"
                    await led.close()
                else:
                    from conftest import start_redis, stop_redis

                    from proxy.budget.redis_ledger import RedisLedger

                    proc, url = start_redis(Path(d), aof=True, appendfsync="everysec")
                    try:
                        led = RedisLedger(url)
                        r0 = proc_cpu(proc.pid)
                        rate, us, n = await run(led, conc, a.seconds)
                        extra = f"redis-server {(proc_cpu(proc.pid) - r0) / n * 1e6:.0f} us/pair"
                        await led.close()
                    finally:
                        stop_redis(proc)
                print(f"{backend:<8} {conc:>4} {rate:>9.0f} {us:>12.0f} {extra:>30}", flush=True)


if __name__ == "__main__":
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    asyncio.run(main())
