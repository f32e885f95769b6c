"""Latency of the task classifier per request: p50/p99 microseconds over real examples.

    .venv/bin/python bench/classifier_latency.py [--per-task 400] [--repeat 3] [--json]

What it measures: `TaskClassifier.label(messages, None, None)` (the full per-request path the
router pays: find the last user turn, featurize, score, softmax, apply the floor) on the
project's held-out examples of every task plus the simulator's prompts, each wrapped in a
realistic request (a system prompt; every third request has an earlier user turn, an assistant
turn and a tool message before the last user turn). Each request is timed on its own with
`perf_counter_ns` after a warm-up; the garbage collector is left on, as in the server. A
separate line reports very long turns (20,000 characters), which are clipped to their head and
tail. Why not a unit test: wall-clock thresholds flake on shared machines; this prints numbers
(with the load average at the end of the run: p99 here is mostly scheduling jitter, 3-5x p50
when other processes compete for the two cores) to record in bench/RESULTS.md instead.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time

from proxy.routing.classifier import TaskClassifier
from proxy.routing.classifier_data import examples

SYSTEM = "You are a helpful assistant. Answer carefully and cite your reasoning when asked."


def requests(per_task: int, seed: int) -> list[list[dict]]:
    """Chat requests around the held-out examples (some multi-turn, with tool output)."""
    rng = random.Random(seed)
    out = []
    for i, ex in enumerate(examples("heldout", per_task, seed, sim_per_kind=per_task // 2)):
        messages: list[dict] = [{"role": "system", "content": SYSTEM}]
        if i % 3 == 0:
            messages += [
                {"role": "user", "content": "Earlier question about something else entirely."},
                {"role": "assistant", "content": "Sure, here is an answer.",
                 "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "search", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "def f(x):\n    return x * 2\n" * 20},
            ]
        content: str | list[dict] = ex.text
        if rng.random() < 0.2:
            content = [{"type": "text", "text": ex.text}]
        messages.append({"role": "user", "content": content})
        out.append(messages)
    return out


def user_chars(messages: list[dict]) -> int:
    content = messages[-1]["content"]
    return len(content if isinstance(content, str) else content[0]["text"])


def timed(clf: TaskClassifier, batch: list[list[dict]], repeat: int) -> list[float]:
    """Microseconds per request (in `batch` order, `repeat` rounds), each request timed on its own."""
    for messages in batch[:500]:  # warm-up
        clf.label(messages, None, None)
    samples = []
    clock = time.perf_counter_ns
    for _ in range(repeat):
        for messages in batch:
            t0 = clock()
            clf.label(messages, None, None)
            samples.append((clock() - t0) / 1000)
    return samples


def summary(samples: list[float]) -> dict[str, float]:
    q = statistics.quantiles(samples, n=100, method="inclusive")
    return {"n": len(samples), "p50_us": round(q[49], 1), "p90_us": round(q[89], 1), "p99_us": round(q[98], 1),
            "max_us": round(max(samples), 1), "mean_us": round(statistics.fmean(samples), 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="task classifier latency per request")
    ap.add_argument("--per-task", type=int, default=400)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    clf = TaskClassifier.load()
    load_ms = (time.perf_counter() - t0) * 1000
    batch = requests(args.per_task, args.seed)
    chars = sorted(user_chars(m) for m in batch)
    samples = timed(clf, batch, args.repeat)
    typical = summary(samples)
    sizes = [user_chars(m) for m in batch] * args.repeat
    buckets = {}
    for name, lo, hi in (("<=500 chars", 0, 500), ("501-2000 chars", 501, 2000), (">2000 chars", 2001, 10**9)):
        part = [t for t, n in zip(samples, sizes) if lo <= n <= hi]
        if len(part) >= 2:
            buckets[name] = summary(part)
    long_text = "Please look at this log and tell me what went wrong.\n" + "x = compute(a, b)  # step\n" * 800
    long = summary(timed(clf, [[{"role": "user", "content": long_text}]] * 500, 1))
    result = {"load_ms": round(load_ms, 1), "requests": len(batch), "loadavg_1m": round(os.getloadavg()[0], 2),
              "cpus": os.cpu_count(),
              "user_turn_chars": {"p50": chars[len(chars) // 2], "p99": chars[int(len(chars) * 0.99)],
                                  "max": chars[-1]},
              "typical": typical, "by_user_turn_length": buckets, "long_turn_20k_chars": long}
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"load average {result['loadavg_1m']} on {result['cpus']} CPUs (other processes inflate the tail); "
          f"loaded weights in {load_ms:.0f} ms; {len(batch)} requests "
          f"(last user turn: p50 {result['user_turn_chars']['p50']} chars, p99 {result['user_turn_chars']['p99']}, "
          f"max {result['user_turn_chars']['max']})")
    rows = [("typical requests", typical), *((f"  {k}", v) for k, v in buckets.items()),
            (f"long turns ({len(long_text)} chars)", long)]
    for name, s in rows:
        print(f"{name:<28} n={s['n']:<6} p50 {s['p50_us']:>6.1f} us  p90 {s['p90_us']:>6.1f} us  "
              f"p99 {s['p99_us']:>6.1f} us  max {s['max_us']:>7.1f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
