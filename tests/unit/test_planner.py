"""The planner picks the plan each objective should pick, on profiles whose answers we know."""

from __future__ import annotations

import pytest

from proxy.budget.pricing import ModelPrice
from proxy.routing.planner import Candidate, Planner, PlanRequest
from proxy.routing.policies import Policy
from proxy.routing.profiles import Profiles


def tokens(mean: float, p95: float | None = None) -> dict:
    p95 = p95 if p95 is not None else mean * 2
    return {"mean": mean, "std": mean / 2, "p50": mean, "p90": p95 * 0.9, "p95": p95, "p99": p95 * 1.2}


def row(model: str, acc: float, mean: float, p95: float | None = None, **strategy) -> dict:
    r = {"model": model, "task": "math", "difficulty": None, "n": 100, "accuracy": acc, "tokens": tokens(mean, p95),
         "failure_curve": []}
    if strategy:
        r["strategy"] = strategy.pop("strategy")
        r["k"] = strategy.pop("k")
        r["plan"] = strategy
    return r


# price: 1 USD per million output tokens, prompts free: cost = tokens / 1e6
PROFILE = {
    "version": "t", "provenance": [],
    "models": {m: {"price": {"input_usd_per_mtok": 0.0, "output_usd_per_mtok": 1.0}, "reasoning": True} for m in "AB"},
    "rows": [
        # A's failure curve puts the cut of level 0.1 at 1500 tokens (its cut row below)
        row("A", 0.60, 1000) | {"failure_curve": [[1000, 0.3], [1500, 0.05]]},
        row("B", 0.80, 4000),
        row("A", 0.75, 5000, strategy="parallel", k=5, aggregator="majority", samples_mean=5),
        row("A", 0.79, 2500, 9000, strategy="parallel", k=2, aggregator="consensus", k_max=8, margin=2, samples_mean=2.5),
        row("B", 0.85, 20000, strategy="parallel", k=5, aggregator="majority", samples_mean=5),
        row("A", 0.55, 800, 1200, strategy="single", k=1, cutoff_tokens=1500, restart="stop", max_restarts=0),
    ],
}


@pytest.fixture
def planner() -> Planner:
    profiles = Profiles.from_dict(PROFILE)
    return Planner(profiles, [Candidate("A", "A", ModelPrice(0, 1), tools=True), Candidate("B", "B", ModelPrice(0, 1), tools=False)])


def policy(**kw) -> Policy:
    """A policy that takes the measured accuracies at face value (no shrinkage, no noise
    tolerance) unless a test asks for them: the objective logic is tested on its own."""
    return Policy(**{"name": "t", "shrinkage_problems": 0, "accuracy_z": 0, **kw})


def pick(planner: Planner, **policy_kw) -> tuple:
    req_kw = policy_kw.pop("req", {})
    p = planner.plan(policy(**policy_kw), PlanRequest(task="math", **req_kw))
    return p.model, p.label(), p.k


def test_accurate_takes_the_best_then_the_cheapest_within_tolerance(planner):
    assert pick(planner, objective="accurate") == ("B", "parallel/majority", 5)
    assert pick(planner, objective="accurate", accuracy_tolerance=0.07) == ("A", "parallel/consensus", 2)


def test_balanced_trades_points_for_dollars(planner):
    assert pick(planner, objective="balanced", lambda_usd=20) == ("B", "parallel/majority", 5)
    # 1000 points per dollar: B maj5 = 85 - 20, B single = 80 - 4, A consensus = 79 - 2.5 (best)
    assert pick(planner, objective="balanced", lambda_usd=1000) == ("A", "parallel/consensus", 2)
    # 20,000 points per dollar: A single = 60 - 20 beats consensus = 79 - 50 and the cut plan = 55 - 16
    p = planner.plan(policy(objective="balanced", lambda_usd=20000), PlanRequest(task="math"))
    assert (p.model, p.label(), p.cutoff_tokens) == ("A", "single", None)
    # 60,000: the plan cut at 1500 tokens (55 - 48) beats the uncut one (60 - 60)
    p = planner.plan(policy(objective="balanced", lambda_usd=60000), PlanRequest(task="math"))
    assert (p.model, p.label(), p.cutoff_tokens, p.restart) == ("A", "single", 1500, "stop")


def test_cheap_and_predictable(planner):
    assert pick(planner, objective="cheap", accuracy_target=0.7) == ("A", "parallel/consensus", 2)
    # predictable ranks by p95: consensus has a long tail (9000) so B single (p95 8000) wins
    assert pick(planner, objective="predictable", accuracy_target=0.7) == ("B", "single", 1)
    p = planner.plan(policy(objective="cheap", accuracy_target=0.95), PlanRequest(task="math"))
    assert (p.model, p.label()) == ("B", "parallel/majority") and "no plan reaches accuracy 0.95" in p.reason


def test_request_constraints(planner):
    # max cost: only plans whose p95 fits $0.002 remain
    assert pick(planner, objective="accurate", req={"max_cost_usd": 0.002}) == ("A", "single", 1)
    # tools: B lacks them, and tool-call answers cannot be voted: single samples on A only
    assert pick(planner, objective="accurate", req={"needs_tools": True}) == ("A", "single", 1)
    # the request's own accuracy target constrains balanced too
    assert pick(planner, objective="balanced", lambda_usd=10000, req={"accuracy_target": 0.7}) == ("A", "parallel/consensus", 2)
    # policies restrict models and strategies
    assert pick(planner, objective="accurate", models=["A"]) == ("A", "parallel/consensus", 2)
    assert pick(planner, objective="accurate", strategies=["single"]) == ("B", "single", 1)
    assert pick(planner, objective="accurate", cutoffs=False, models=["A"], strategies=["single"]) == ("A", "single", 1)


def test_predictions_and_reason(planner):
    p = planner.plan(policy(objective="cheap", accuracy_target=0.7), PlanRequest(task="math", prompt_tokens=0))
    assert p.predicted_accuracy == pytest.approx(0.79)
    assert p.predicted_cost_p95 == pytest.approx(9000 / 1e6) and p.predicted_cost_p50 == pytest.approx(2500 / 1e6)
    assert "cheap" in p.reason and "A" in p.reason and p.k_max == 8 and p.margin == 2


def test_unknown_task_falls_back(planner):
    p = planner.plan(policy(objective="balanced", fallback_model="B"), PlanRequest(task="code"))
    assert p.model == "B" and "no profile rows for task 'code'" in p.reason


def test_executable_filter():
    profiles = Profiles.from_dict(PROFILE)
    pl = Planner(profiles, [Candidate("A", "A", ModelPrice(0, 1))], executable=frozenset({"single"}))
    labels = {p.label() for p in pl.options(policy(objective="accurate"), PlanRequest(task="math"))}
    assert labels == {"single"}


def test_cut_rows_only_at_the_policys_failure_level(planner):
    # level 0.2 reads no cut at 1500 from A's curve (0.3 at 1000, 0.05 at 1500 -> 1500 too), but
    # level 0.5 reads 1000: the 1500 row was measured at another level and is not offered
    opts = planner.options(policy(objective="balanced", failure_level=0.5), PlanRequest(task="math"))
    assert all(o.cutoff_tokens is None for o in opts)
    opts = planner.options(policy(objective="balanced", failure_level=0.1), PlanRequest(task="math"))
    assert any(o.cutoff_tokens == 1500 for o in opts)


def test_shrinkage_pulls_strategy_gains_toward_the_single_sample():
    profiles = Profiles.from_dict(PROFILE)
    pl = Planner(profiles, [Candidate("A", "A", ModelPrice(0, 1))])
    opts = {o.label(): o for o in pl.options(policy(objective="accurate", shrinkage_problems=100),
                                             PlanRequest(task="math")) if o.cutoff_tokens is None}
    # consensus measured 0.79 on 100 problems vs single 0.60: half the gain survives a prior of 100
    assert opts["parallel/consensus"].predicted_accuracy == pytest.approx(0.60 + 0.19 * 100 / 200)
    assert opts["single"].predicted_accuracy == pytest.approx(0.60)


def test_accurate_treats_plans_within_noise_as_tied(planner):
    # 2 standard errors of B majority@5 (0.85 on 100 problems: 2 * 0.036) reach down to 0.779:
    # A consensus (0.79, $0.0025) is the cheapest plan that close to the best
    p = planner.plan(policy(objective="accurate", accuracy_z=2), PlanRequest(task="math"))
    assert (p.model, p.label()) == ("A", "parallel/consensus") and "measurement noise" in p.reason
    assert (planner.plan(policy(objective="accurate", accuracy_z=1), PlanRequest(task="math")).label()
            == "parallel/majority")
