"""`pareto-proxy demo`: a workload of generated tasks through a live proxy, a table and a PNG.

The tasks come from the simulator's generators (arithmetic -> math, multiple choice -> science,
3-SAT -> sat, TSP -> tsp, meeting scheduling -> planning), so every answer can be graded against
the truth. The puzzles carry the verifier a real deployment would use for them, built from the
problem alone (the formula, the distance matrix, the calendars; no known answer), with one
restart: a failing verdict redraws the sample, and best-of-n prefers shorter tours. Each target (the router aliases for each policy,
and each fixed model) gets the same prompts through the real `openai` client; the table shows
what the policies buy: accuracy, cost per request, p95 cost, and the share of completion tokens
wasted on cut or cancelled samples (losing votes of a majority are not waste: they voted).

Without `--url` the demo starts its own proxy on the embedded defaults (simulated models) on a
free port and stops it afterwards.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from proxy.upstream.simulator.tasks import SimTask, generate

KINDS = {"arithmetic": "math", "multiple_choice": "science", "sat": "sat", "tsp": "tsp", "calendar": "planning"}
#: kinds whose requests carry a verifier (and one restart on a failed verdict)
VERIFIED = ("sat", "tsp", "calendar")
DIFFICULTIES = ("easy", "medium", "hard")


@dataclass
class TargetResult:
    name: str
    correct: int = 0
    requests: int = 0
    errors: int = 0
    costs: list[float] = field(default_factory=list)
    completion_tokens: int = 0
    wasted_tokens: int = 0
    models: dict[str, int] = field(default_factory=dict)
    verdicts: int = 0
    verdicts_passed: int = 0
    restarts: int = 0

    def row(self) -> dict:
        costs = np.array(self.costs or [0.0])
        return {
            "target": self.name, "requests": self.requests, "errors": self.errors,
            "accuracy": self.correct / self.requests if self.requests else 0.0,
            "cost_usd_per_request": float(costs.mean()), "p95_cost_usd": float(np.percentile(costs, 95)),
            "wasted_share": self.wasted_tokens / self.completion_tokens if self.completion_tokens else 0.0,
            "models": dict(sorted(self.models.items(), key=lambda kv: -kv[1])),
            "verdicts": self.verdicts, "verdicts_passed": self.verdicts_passed, "restarts": self.restarts,
        }


def workload(n: int, seed: int) -> list[SimTask]:
    """n tasks, alternating kinds and difficulties, reproducible from the seed."""
    out = []
    kinds = list(KINDS)
    for i in range(n):
        out.append(generate(kinds[i % len(kinds)], seed * 100_003 + i, DIFFICULTIES[(i // len(kinds)) % 3]))
    return out


def request_routing(task: SimTask) -> dict:
    """The `routing` object of a demo request: the task, and for puzzles their verifier."""
    routing: dict = {"task": KINDS[task.kind], "explain": True}
    verifier = task.verifier
    if task.kind in VERIFIED and verifier is not None:
        verifier = {k: v for k, v in verifier.items() if k != "max_length"}  # the optimum is not known in real life
        routing.update(verifier=verifier, max_restarts=1)
    return routing


async def _one(client, target: str, task: SimTask, res: TargetResult, sem: asyncio.Semaphore) -> None:
    async with sem:
        try:
            r = await client.chat.completions.create(
                model=target, messages=[{"role": "user", "content": task.prompt}],
                extra_body={"routing": request_routing(task)})
        except Exception:  # a failed request is counted, not fatal: the table shows it
            res.requests += 1
            res.errors += 1
            return
    res.requests += 1
    text = r.choices[0].message.content or ""
    res.correct += task.is_correct(text)
    res.costs.append(float((r.usage.model_extra or {}).get("cost_usd", 0.0)))
    res.models[r.model] = res.models.get(r.model, 0) + 1
    for s in (r.model_extra or {}).get("routing", {}).get("samples", []):
        res.completion_tokens += s["completion_tokens"]
        if s.get("cut") or s.get("cancelled"):  # DESIGN's "wasted": cut or cancelled samples
            res.wasted_tokens += s["completion_tokens"]
        if s.get("verdict") is not None:
            res.verdicts += 1
            res.verdicts_passed += bool(s["verdict"]["passed"])
        res.restarts += s.get("role") in ("restart", "escalate", "force_answer")


async def run_targets(url: str, key: str, targets: list[str], tasks: list[SimTask], concurrency: int,
                      progress) -> list[TargetResult]:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=url, api_key=key, max_retries=0, timeout=600)
    sem = asyncio.Semaphore(concurrency)
    results = []
    for t in targets:
        res = TargetResult(t)
        job = progress.add_task(f"{t:>16}", total=len(tasks))

        async def one(task: SimTask, res: TargetResult = res, job=job) -> None:
            await _one(client, t, task, res, sem)
            progress.advance(job)

        await asyncio.gather(*(one(task) for task in tasks))
        results.append(res)
    await client.close()
    return results


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_embedded(tps: float) -> tuple[subprocess.Popen, str, str, Path]:
    """A proxy on the embedded defaults in a temp dir, with a known dev key."""
    import httpx

    tmp = Path(tempfile.mkdtemp(prefix="pareto-demo-"))
    port = _free_port()
    key = "sk-pareto-demo"
    env = {**os.environ, "PARETO_DEV_KEY": key, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    env.pop("PARETO_CONFIG", None)
    proc = subprocess.Popen([sys.executable, "-m", "proxy", "serve", "--port", str(port)], cwd=tmp, env=env,
                            stdout=(tmp / "proxy.log").open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the proxy exited: {(tmp / 'proxy.log').read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc, f"http://127.0.0.1:{port}/v1", key, tmp
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the proxy did not become ready within 60 s")


def plot(rows: list[dict], out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    for r in rows:
        routed = r["target"].startswith("auto")
        ax.scatter(r["cost_usd_per_request"], r["accuracy"], s=90 if routed else 50,
                   marker="*" if routed else "o", color="tab:red" if routed else "tab:blue", zorder=3)
        ax.annotate(r["target"], (r["cost_usd_per_request"], r["accuracy"]), textcoords="offset points",
                    xytext=(6, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("cost per request (USD, log scale)")
    ax.set_ylabel("accuracy")
    ax.set_title("pareto-proxy demo: policies (stars) vs fixed models (dots)")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(url: str | None, key: str | None, n: int, seed: int, concurrency: int, policies: list[str],
         models: list[str] | None, png: str, as_json: bool) -> int:
    import httpx
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    err = Console(stderr=True)
    proc = None
    try:
        if url is None:
            proc, url, key, tmp = start_embedded(0)
            err.print(f"started an embedded proxy at {url} (logs in {tmp})")
        assert key is not None
        listed = httpx.get(f"{url}/models", headers={"Authorization": f"Bearer {key}"}, timeout=10).json()
        ids = [m["id"] for m in listed.get("data", [])]
        fixed = models if models else [i for i in ids if not i.startswith("auto")]
        targets = [f"auto/{p}" for p in policies if f"auto/{p}" in ids] + fixed
        tasks = workload(n, seed)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=err) as progress:
            results = asyncio.run(run_targets(url, key, targets, tasks, concurrency, progress))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
    rows = [r.row() for r in results]
    if as_json:
        import json

        print(json.dumps({"tasks": n, "seed": seed, "rows": rows}, indent=2))
    else:
        table = Table(title=f"{n} generated tasks (arithmetic, multiple choice, SAT, TSP, calendar) per target")
        for col in ("target", "accuracy", "cost/request", "p95 cost", "wasted", "verified", "restarts", "errors",
                    "served by"):
            table.add_column(col, justify="left" if col in ("target", "served by") else "right")
        for r in rows:
            table.add_row(r["target"], f"{r['accuracy']:.3f}", f"${r['cost_usd_per_request']:.6f}",
                          f"${r['p95_cost_usd']:.6f}", f"{100 * r['wasted_share']:.1f}%",
                          f"{r['verdicts_passed']}/{r['verdicts']}", str(r["restarts"]), str(r["errors"]),
                          ", ".join(f"{m} ({c})" for m, c in list(r["models"].items())[:3]))
        out = Console()
        if not out.is_terminal:  # piped: do not squeeze the table to 80 columns
            out = Console(width=160)
        out.print(table)
    plot(rows, png)
    err.print(f"plot written to {png}")
    return 0
