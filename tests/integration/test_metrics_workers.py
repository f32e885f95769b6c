"""`serve --workers 2`: /metrics aggregates every worker (prometheus-client's multiprocess mode).

Each worker process counts what it served into its own files under PROMETHEUS_MULTIPROC_DIR;
whichever worker answers GET /metrics must report the sum. The test makes sure both workers
really served (a value file per worker pid, a trace file per worker pid), so a proxy that
exported only its own worker's counts would fail it.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from openai import OpenAI
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import start_proxy, wait_traces

KEY = "sk-workers-test"
FAST = {"tokens_per_second": 1_000_000, "tokens_per_chunk": 256}
MSG = [{"role": "user", "content": "Compute 12 * 7 and put the answer in \\boxed{}."}]


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics as {(name, sorted labels): value}, pareto_* only."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    out: dict[tuple[str, tuple], float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name.startswith("pareto_"):
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(samples: dict, name: str, **match: str) -> float:
    return sum(v for (n, labels), v in samples.items()
               if n == name and all(dict(labels).get(k) == want for k, want in match.items()))


def worker_pids(directory: Path, prefix: str) -> set[str]:
    return {m.group(1) for f in directory.glob(f"{prefix}_*.db") if (m := re.search(r"_(\d+)\.db$", f.name))}


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("workers")
    prom_dir = tmp / "prom"
    prom_dir.mkdir()
    config = {
        "models": [{"name": "sim-r1", "provider": "simulated", "profile": "R1", "simulator": FAST}],
        "keys": [{"key_env": "K", "team": "team-w", "default_task": "math"}],
    }
    p = start_proxy(tmp, config, env={"K": KEY, "PARETO_ADMIN_KEY": "sk-admin-w",
                                      "PROMETHEUS_MULTIPROC_DIR": str(prom_dir)}, args=["--workers", "2"])
    yield p, prom_dir
    p.stop()


def test_counters_add_up_across_workers(proxy):
    p, prom_dir = proxy
    # a new connection per request, several at once, so the kernel spreads them over both workers
    http = httpx.Client(limits=httpx.Limits(max_keepalive_connections=0), timeout=60)
    client = OpenAI(base_url=p.base_url, api_key=KEY, max_retries=0, http_client=http)

    def one(i: int) -> str:
        routing = {"strategy": {"name": "parallel", "k": 3, "aggregator": "majority"}} if i % 3 == 0 else {}
        r = client.chat.completions.create(model="sim-r1", messages=MSG, max_tokens=300, seed=i,
                                           extra_body={"routing": routing})
        return r.id

    sent = 0
    with ThreadPoolExecutor(8) as pool:
        for _ in range(10):  # at most 300 requests; stop once both workers have served some
            sent += len(list(pool.map(one, range(sent, sent + 30))))
            if len(worker_pids(prom_dir, "counter")) >= 2:
                break
    served_by = worker_pids(prom_dir, "counter")
    assert len(served_by) >= 2, f"every request went to one worker ({served_by}); cannot test aggregation"

    traces = wait_traces(p.tmp / "traces", sent, timeout=30)
    assert len(traces) == sent
    trace_files = list((p.tmp / "traces").glob("traces-*.jsonl"))
    assert len(trace_files) >= 2, "each worker writes its own trace file"

    # /metrics, whichever worker answers it, counts every request exactly once
    reads = [scrape(p.url) for _ in range(6)]
    for m in reads:
        assert total(m, "pareto_requests_total") == sent
        assert total(m, "pareto_requests_total", status="200") == sent
        assert total(m, "pareto_request_cost_usd_count") == sent
        assert total(m, "pareto_overhead_seconds_count") == sent
        assert total(m, "pareto_inflight_requests") == 0
    m = reads[-1]
    assert all(r == m for r in reads), "every worker renders the same aggregate"

    # tokens and spend agree with the traces (every sample billed, parallel ones included)
    samples = [s for t in traces for s in t["samples"]]
    assert total(m, "pareto_tokens_total", type="prompt") == sum(s["prompt_tokens"] for s in samples)
    assert total(m, "pareto_tokens_total", type="completion") == sum(s["completion_tokens"] for s in samples)
    assert total(m, "pareto_cost_usd_total", team="team-w") == pytest.approx(sum(t["cost_usd"] for t in traces),
                                                                          rel=1e-9, abs=1e-12)
    strategies = {dict(k[1])["strategy"] for k in m if k[0] == "pareto_requests_total"}
    assert len(strategies) == 2, strategies
