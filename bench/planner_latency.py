"""Planner decision latency: p50/p99 microseconds per `Planner.plan()` call.

Uses the shipped profiles and policies, every profiled model as a candidate, and a mix of
requests (tasks, difficulties, prompt sizes, targets, cost caps), so cached cells and fresh
arithmetic are both exercised. Run: `.venv/bin/python bench/planner_latency.py [--n 50000]`.
"""

from __future__ import annotations

import argparse
import random
import time

from proxy.budget.pricing import ModelPrice
from proxy.config import DEFAULT_POLICIES, DEFAULT_PROFILES
from proxy.routing.planner import Candidate, Planner, PlanRequest
from proxy.routing.policies import PolicySet
from proxy.routing.profiles import Profiles


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=50_000)
    args = ap.parse_args()
    profiles = Profiles.load(DEFAULT_PROFILES)
    policies = PolicySet.load(DEFAULT_POLICIES)
    cands = [Candidate(n, n, ModelPrice(i.input_usd_per_mtok, i.output_usd_per_mtok)) for n, i in profiles.models.items()
             if profiles.rows_for(n)]
    planner = Planner(profiles, cands)
    rng = random.Random(0)
    reqs = [(policies.get(rng.choice(policies.names())),
             PlanRequest(task=rng.choice(["math", "science", "code", None]),
                         difficulty=rng.choice([None, None, "easy", "hard"]), prompt_tokens=rng.randint(10, 4000),
                         accuracy_target=rng.choice([None, 0.6, 0.8]), max_cost_usd=rng.choice([None, 0.01])))
            for _ in range(args.n)]
    times = []
    for policy, req in reqs:
        t = time.perf_counter_ns()
        planner.plan(policy, req)
        times.append(time.perf_counter_ns() - t)
    times.sort()
    rows = sum(len(profiles.strategy_rows(c.profile, t)) for c in cands for t in ("math", "science"))
    print(f"planner decisions: {args.n}, candidates {len(cands)}, strategy rows (task level) {rows}")
    print(f"p50 {times[len(times) // 2] / 1000:.1f} us   p99 {times[int(len(times) * 0.99)] / 1000:.1f} us   "
          f"max {times[-1] / 1000:.1f} us (first calls build the cached cells)")


if __name__ == "__main__":
    main()
