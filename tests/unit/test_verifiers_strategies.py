"""Verdicts driving the executor's strategies (in-process simulator, scripted samples): restart on
a failed check, first pass wins, votes among passing samples, per-test feedback in sequential
rounds, and a verifier that cannot decide never triggers a restart."""

from __future__ import annotations

import pytest

from proxy.routing.plan import Plan
from proxy.verifiers import Verdict, Verifier, VerifierUnavailable
from tests.unit.test_strategies import S, _body, _executor, models, profiles  # noqa: F401  (fixtures)

CNF = [[1, -2], [2, 3], [-1, -3]]
RIGHT = "```python\ndef add(a, b):\n    return a + b\n```"
WRONG = "```python\ndef add(a, b):\n    return a - b\n```"
TESTS = "def test_small():\n    assert add(2, 3) == 5\n"


def T(text: str, tokens: int = 40) -> dict:
    return {"tokens": max(tokens, len(text.split())), "text": text}


async def test_a_failed_check_restarts_the_slot(models):
    plan = Plan("alpha", "single", max_restarts=2, restart="same", verifier={"name": "sat", "cnf": CNF})
    out = await _executor(models).run(plan, _body(T("Assignment: 1 2 3"), T("Assignment: -1 2 3"), T("Assignment: 1 2 -3")))
    assert [s.role for s in out.samples] == ["sample", "restart", "restart"] and out.restarts == 2
    assert [s.verdict.passed for s in out.samples] == [False, False, True] and out.selected is out.samples[-1]


async def test_restart_stop_keeps_the_failed_sample(models):
    plan = Plan("alpha", "single", max_restarts=2, restart="stop", verifier={"name": "sat", "cnf": CNF})
    out = await _executor(models).run(plan, _body(T("Assignment: 1 2 3"), T("Assignment: 1 2 -3")))
    assert len(out.samples) == 1 and not out.selected.verdict.passed and out.restarts == 0


async def test_escalate_on_a_failed_check_moves_to_the_fallback(models):
    plan = Plan("alpha", "single", max_restarts=1, restart="escalate", fallback_model="beta",
                verifier={"name": "sat", "cnf": CNF})
    out = await _executor(models).run(plan, _body(T("Assignment: 1 2 3"), T("Assignment: 1 2 -3")))
    assert [(s.model, s.role) for s in out.samples] == [("alpha", "sample"), ("beta", "escalate")]
    assert out.selected.model == "beta" and out.selected.verdict.passed


async def test_first_finish_takes_the_first_pass_and_cancels_the_rest(models):
    plan = Plan("alpha", "parallel", k=3, aggregator="first_finish", verifier={"name": "sat", "cnf": CNF})
    out = await _executor(models).run(plan, _body(T("Assignment: 1 2 3", 40), T("Assignment: 1 2 -3", 200),
                                                  T("Assignment: 1 2 -3", 20_000)))
    assert out.selected.text.endswith("1 2 -3") and out.selected.verdict.passed
    assert [s.cancelled for s in out.samples] == [False, False, True]


async def test_best_of_n_stops_at_a_perfect_pass(models):
    plan = Plan("alpha", "parallel", k=2, aggregator="best_of_n", verifier={"name": "sat", "cnf": CNF})
    out = await _executor(models).run(plan, _body(T("Assignment: 1 2 -3", 40), T("Assignment: 1 2 3", 20_000)))
    assert out.selected.verdict.passed and out.samples[1].cancelled


async def test_majority_votes_among_passing_samples(models):
    plan = Plan("alpha", "parallel", k=3, aggregator="majority", verifier={"name": "math_answer", "reference": "7"})
    out = await _executor(models).run(plan, _body(S(100, "9"), S(120, "7"), S(140, "9")))
    assert out.selected.answer == "7"


async def test_sequential_rounds_get_per_test_feedback(models):
    plan = Plan("alpha", "sequential", rounds=2, verifier={"name": "python_tests", "tests": TESTS})
    out = await _executor(models).run(plan, _body(T(WRONG), T(RIGHT), T(WRONG)))
    assert [s.role for s in out.samples] == ["sample", "refine"] and out.selected.verdict.passed
    sent = models["alpha"].upstream.bodies[-1]["messages"][-1]["content"]
    assert "test_small: FAILED" in sent and "AssertionError" in sent


class _Undecided(Verifier):
    name = "undecided"

    async def verify(self, candidate, context):
        raise VerifierUnavailable("the judge is down")


async def test_no_verdict_never_restarts(models):
    from proxy.strategies.executor import RunContext

    plan = Plan("alpha", "single", max_restarts=2, restart="same")
    out = await _executor(models).run(plan, _body(S(100, "1"), S(100, "2")), RunContext(verifier=_Undecided()))
    assert len(out.samples) == 1 and out.selected.verdict is None


async def test_each_sample_is_checked_once(models):
    calls = []

    class Counting(Verifier):
        name = "counting"

        async def verify(self, candidate, context):
            calls.append(candidate)
            return Verdict("7" in candidate, 1.0 if "7" in candidate else 0.0)

    from proxy.strategies.executor import RunContext

    plan = Plan("alpha", "parallel", k=3, aggregator="best_of_n")
    out = await _executor(models).run(plan, _body(S(100, "9"), S(120, "8"), S(140, "6")), RunContext(verifier=Counting()))
    assert len(calls) == 3 and out.selected is not None


@pytest.mark.parametrize("agg", ["majority", "short_m", "consensus"])
async def test_voting_aggregators_still_work_with_a_verifier_that_passes_nothing(models, agg):
    plan = Plan("alpha", "parallel", k=3, m=2, k_max=3, margin=2, aggregator=agg,
                verifier={"name": "math_answer", "reference": "100"})
    out = await _executor(models).run(plan, _body(S(100, "9"), S(120, "9"), S(140, "8")))
    assert out.selected.answer == "9" and not out.selected.verdict.passed
