"""Replaying plans on recorded samples: every rule checked on a problem whose outcome is worked
out by hand (the draw order is pinned with `orders`), plus the fast path against the general
engine and strategy rows against the profile loader."""

from __future__ import annotations

import random

import numpy as np
import pytest

from proxy.profiling.grid import (
    DEFAULT_GRID,
    GridConfig,
    strategy_rows,
)
from proxy.profiling.simulate import (
    FORCE_ANSWER_TOKENS,
    NotReplayable,
    ProblemSamples,
    simulate,
)
from proxy.profiling.tracedata import read_traces
from proxy.routing.plan import Plan
from proxy.routing.profiles import Profiles

# one problem (reference answer "7"), eight recorded samples of model A:
#   idx  tokens  pred  correct
A = ProblemSamples.of(
    [1000, 3000, 2000, 9000, 12000, 1500, 4000, 20000],
    ["7", "5", "7", "5", "5", "3", "7", ""],
    [True, False, True, False, False, False, True, False],
)
B = ProblemSamples.of([15000, 800], ["7", "7"], [True, True])


def run(plan: Plan, order_a: list[int], order_b: list[int] | None = None, verifier: str = "none", **kw):
    orders = {"A": order_a} | ({"B": order_b} if order_b is not None else {})
    return simulate(plan, {"A": A, "B": B}, None, verifier, orders=orders, **kw)  # type: ignore[arg-type]


def par(aggregator: str, k: int, **kw) -> Plan:
    return Plan(model="A", strategy="parallel", k=k, aggregator=aggregator, **kw)  # type: ignore[arg-type]


def test_single_sample_is_the_drawn_one():
    o = run(Plan(model="A"), [3, 0])
    assert (o.correct, o.completion_tokens, o.samples_used, o.answer) == (False, 9000, 1, "5")
    o = run(Plan(model="A"), [6])
    assert (o.correct, o.completion_tokens) == (True, 4000)


def test_majority_vote_and_its_tie_break():
    o = run(par("majority", 3), [0, 1, 3])  # 7, 5, 5 -> 5
    assert (o.answer, o.correct, o.completion_tokens, o.samples_used) == ("5", False, 13000, 3)
    # 5 (3000 tokens) vs 7 (1000 tokens): a tie goes to the answer with the shorter samples
    o = run(par("majority", 2), [1, 0])
    assert (o.answer, o.correct, o.completion_tokens) == ("7", True, 4000)
    # a finished sample with no extracted answer does not vote (but is paid for)
    o = run(par("majority", 3), [7, 1, 0])
    assert (o.answer, o.correct, o.completion_tokens) == ("7", True, 24000)


def test_first_finish_pays_k_times_the_winner():
    o = run(par("first_finish", 4), [1, 3, 0, 6])
    assert (o.answer, o.correct, o.completion_tokens, o.samples_used) == ("7", True, 4 * 1000, 4)
    o = run(par("first_finish", 2), [5, 1])  # 1500 "3" beats 3000 "5"
    assert (o.answer, o.correct, o.completion_tokens) == ("3", False, 2 * 1500)


def test_short_m_stops_at_the_mth_finish():
    # lengths 9000, 3000, 2000, 12000: the first two to finish are 2000 (7) and 3000 (5); tie -> 7
    o = run(par("short_m", 4, m=2), [3, 1, 2, 4])
    assert (o.answer, o.correct) == ("7", True)
    assert o.completion_tokens == 3000 + 3000 + 2000 + 3000  # each pays min(own, 3000)
    # fewer than m finish (two are cut): everything runs out, vote among those that finished
    o = run(par("short_m", 3, m=2, cutoff_tokens=5000), [3, 4, 0])
    assert (o.answer, o.correct, o.completion_tokens, o.cut) == ("7", True, 5000 + 5000 + 1000, 2)


def test_consensus_adds_samples_until_the_margin():
    plan = par("consensus", 2, margin=2, k_max=8)
    o = run(plan, [0, 2, 1])  # 7, 7: two votes ahead at once
    assert (o.answer, o.correct, o.samples_used, o.completion_tokens) == ("7", True, 2, 3000)
    o = run(plan, [0, 1, 2, 6, 3])  # 7,5 -> +7 (2-1) -> +7 (3-1): stop at four
    assert (o.answer, o.correct, o.samples_used, o.completion_tokens) == ("7", True, 4, 10000)
    # k_max reached first: 7,5 -> +3 -> +5 -> four samples, 5 leads 2-1-1
    o = run(par("consensus", 2, margin=2, k_max=4), [0, 1, 5, 3, 2])
    assert (o.answer, o.correct, o.samples_used, o.completion_tokens) == ("5", False, 4, 14500)


def test_consensus_cancels_what_is_in_flight_once_the_margin_is_reached():
    # 1000 "7" and 2000 "7" finish first: two ahead at 2000, the 9000-token sample is cancelled
    o = run(par("consensus", 3, margin=2, k_max=8), [0, 2, 3])
    assert (o.answer, o.correct, o.samples_used, o.completion_tokens) == ("7", True, 3, 1000 + 2000 + 2000)


def test_vote_ties_go_to_the_answer_that_reached_its_count_first():
    # "x": 1000 and 5000 tokens (reached two votes at 5000); "y": 3500 and 3600 (at 3600)
    ps = ProblemSamples.of([1000, 3500, 3600, 5000], ["x", "y", "y", "x"], [False, True, True, False])
    o = simulate(par("majority", 4), {"A": ps}, None)
    assert (o.answer, o.correct) == ("y", True)


def test_cut_sample_costs_the_cutoff_and_gives_no_answer():
    o = run(Plan(model="A", cutoff_tokens=5000), [3, 0])
    assert (o.correct, o.answer, o.completion_tokens, o.cut, o.samples_used) == (False, None, 5000, 1, 1)
    o = run(Plan(model="A", cutoff_tokens=5000), [0])  # under the cutoff: untouched
    assert (o.correct, o.completion_tokens, o.cut) == (True, 1000, 0)


def test_restart_same_draws_another_sample_up_to_max_restarts():
    plan = Plan(model="A", cutoff_tokens=5000, restart="same", max_restarts=1)
    o = run(plan, [3, 0])
    assert (o.correct, o.completion_tokens, o.restarts, o.cut, o.samples_used) == (True, 6000, 1, 1, 2)
    o = run(plan, [3, 4, 0])  # the restart is cut too, and no restarts are left
    assert (o.correct, o.completion_tokens, o.restarts, o.cut) == (False, 10000, 1, 2)
    o = run(plan.with_(max_restarts=2), [3, 4, 0])
    assert (o.correct, o.completion_tokens, o.restarts, o.cut) == (True, 11000, 2, 2)


def test_restart_escalate_runs_the_fallback_uncut():
    plan = Plan(model="A", cutoff_tokens=5000, restart="escalate", max_restarts=1, fallback_model="B")
    o = run(plan, [3], [0])  # A cut at 5000, then B's 15000-token sample (not cut: A's cutoff)
    assert (o.correct, o.completion_tokens, o.restarts) == (True, 20000, 1)
    assert o.tokens_by_model == {"A": 5000, "B": 15000}
    assert o.samples_by_model == {"A": 1, "B": 1}


def test_force_answer_is_replayed_as_a_wrong_forced_answer():
    # the forced answer is a second call, billed, whose answer the traces cannot know: counted wrong
    o = run(Plan(model="A", cutoff_tokens=5000, restart="force_answer", max_restarts=1), [3])
    assert (o.correct, o.answer, o.completion_tokens, o.cut) == (False, None, 5000 + FORCE_ANSWER_TOKENS, 1)
    assert (o.samples_used, o.restarts) == (2, 1)
    o = run(Plan(model="A", cutoff_tokens=5000, restart="force_answer", max_restarts=0), [3])
    assert (o.completion_tokens, o.samples_used, o.restarts) == (5000, 1, 0)  # no restart left: a stop


def test_escalate_without_a_fallback_keeps_what_there_is():
    o = run(Plan(model="A", cutoff_tokens=5000, restart="escalate", max_restarts=1), [3])
    assert (o.correct, o.completion_tokens, o.restarts, o.cut) == (False, 5000, 0, 1)


def test_first_finish_with_cutoff():
    # the winner finishes (1000) before the other would have been cut (5000): cancelled, not cut
    o = run(par("first_finish", 2, cutoff_tokens=5000), [3, 0])
    assert (o.correct, o.completion_tokens, o.cut) == (True, 2000, 0)
    o = run(par("first_finish", 2, cutoff_tokens=5000), [3, 4])  # both cut: no answer
    assert (o.correct, o.answer, o.completion_tokens, o.cut) == (False, None, 10000, 2)


def test_oracle_best_of_n_is_right_when_any_sample_is():
    plan = par("best_of_n", 3)
    assert not run(plan, [1, 3, 6]).correct  # without a verifier: majority (5, 5, 7)
    o = run(plan, [1, 3, 6], verifier="oracle")
    assert (o.correct, o.answer, o.completion_tokens) == (True, "7", 3000 + 9000 + 4000)
    assert not run(plan, [1, 3, 4], verifier="oracle").correct  # no right sample at all


def test_a_plan_needing_more_samples_stops_with_what_it_has():
    three = ProblemSamples.of([100, 200, 300], ["1", "2", "3"], [True, False, False])
    o = simulate(par("majority", 8), {"A": three}, np.random.default_rng(0))
    assert (o.samples_used, o.completion_tokens) == (3, 600)
    o = simulate(par("consensus", 2, margin=2, k_max=8), {"A": three}, np.random.default_rng(0))
    assert o.samples_used == 3 and o.answer == "1"  # three-way tie: shortest wins
    one = ProblemSamples.of([900], ["1"], [True])
    o = simulate(Plan(model="A", cutoff_tokens=500, restart="same", max_restarts=3), {"A": one}, None)
    assert (o.correct, o.completion_tokens, o.restarts, o.samples_used) == (False, 500, 0, 1)
    o = simulate(Plan(model="A"), {}, None)  # no samples of the model at all
    assert (o.correct, o.completion_tokens, o.samples_used) == (False, 0, 0)


def test_draws_are_without_replacement_and_seeded():
    plan = par("majority", 8)
    o = simulate(plan, {"A": A}, np.random.default_rng(1))
    assert o.completion_tokens == sum(A.tokens)  # all eight, each once
    a = simulate(par("first_finish", 3), {"A": A}, np.random.default_rng(7))
    b = simulate(par("first_finish", 3), {"A": A}, np.random.default_rng(7))
    assert a == b


def test_sequential_is_not_replayable():
    with pytest.raises(NotReplayable, match="critic"):
        run(Plan(model="A", strategy="sequential", rounds=2), [0])


@pytest.mark.parametrize("seed", range(3))
def test_fast_path_agrees_with_the_general_engine(seed: int):
    """Plans without restarts take a shortcut; it must give exactly what the engine gives."""
    rnd = random.Random(seed)
    plans = [c.plan("A", 4000) for c in DEFAULT_GRID if c.max_restarts == 0]
    plans += [par("best_of_n", 4), par("best_of_n", 4, cutoff_tokens=3000),
              Plan(model="A", cutoff_tokens=3000, restart="force_answer"),
              par("short_m", 5, m=3, cutoff_tokens=2500, restart="force_answer")]
    for _ in range(200):
        n = rnd.randint(1, 8)
        ps = ProblemSamples.of([rnd.randint(500, 9000) for _ in range(n)], [rnd.choice("1234 ").strip() for _ in range(n)],
                               [rnd.random() < 0.4 for _ in range(n)])
        order = rnd.sample(range(n), n)
        for plan in plans:
            for verifier in ("none", "oracle"):
                fast = simulate(plan, {"A": ps}, None, verifier, orders={"A": order})  # type: ignore[arg-type]
                slow = simulate(plan, {"A": ps}, None, verifier, orders={"A": order}, _fast=False)  # type: ignore[arg-type]
                assert fast == slow, (plan.label(), plan.cutoff_tokens, ps, order)


def _write_csv(path, rows) -> None:
    lines = ["model,dataset,problem_id,sample_id,completion_tokens,finish_reason,pred,answer,correct"]
    lines += [",".join(str(x) for x in r) for r in rows]
    path.write_text("\n".join(lines) + "\n")


def test_strategy_rows_load_as_profile_rows(tmp_path):
    rows = []
    # six problems; on each, M's samples all agree, so every plan's accuracy is exact
    for p in range(6):
        ok = p % 2 == 0
        for s in range(4):
            rows.append(("M", "aime2024", p, s, 1000 * (s + 1) + (0 if ok else 8000), "", "1" if ok else "2", "1", int(ok)))
    csv = tmp_path / "t.csv"
    _write_csv(csv, rows)
    table = read_traces(csv)
    grid = (GridConfig("single"), GridConfig("parallel", k=2, aggregator="first_finish"),
            GridConfig("single", cut=True, restart="stop"))
    out = strategy_rows(table, None, grid=grid, seeds=(0, 1, 2), thresholds={("M", "math"): 5000},
                        difficulty=np.array(["medium"] * len(table)))
    by = {(r["plan"]["aggregator"], r["plan"]["cutoff_tokens"], r["difficulty"]): r for r in out}
    assert set(by) == {(a, c, d) for a, c in ((None, None), ("first_finish", None), (None, 5000))
                       for d in (None, "medium")}
    single = by[(None, None, None)]
    assert single["n"] == 6 and single["accuracy"] == 0.5 and single["k"] == 1
    assert single["plan"]["samples_mean"] == 1.0
    cut = by[(None, 5000, None)]  # the wrong problems' samples are all > 5000: cut, no answer
    assert cut["accuracy"] == 0.5 and cut["tokens"]["max"] == 5000 and cut["plan"]["restart"] == "stop"
    ff = by[("first_finish", None, None)]
    assert ff["strategy"] == "parallel" and ff["k"] == 2 and ff["plan"]["samples_mean"] == 2.0
    # each request pays 2 x the shorter of its two draws: at most 2 x 11000 (a wrong problem's 3rd-longest)
    assert ff["tokens"]["max"] % 2 == 0 and 2 * 1000 <= ff["tokens"]["p50"] <= ff["tokens"]["max"] <= 2 * 11000
    doc = {"version": "1", "provenance": [], "models": {}, "rows": [
        {"model": "M", "task": "math", "difficulty": None, "n": 24, "accuracy": 0.5,
         "tokens": {"mean": 1, "std": 1, "p50": 1, "p90": 1, "p95": 1, "p99": 1}}, *out]}
    profiles = Profiles.from_dict(doc)
    assert len(profiles.strategy_rows("M", "math")) == 3
    assert len(profiles.strategy_rows("M", "math", "medium")) == 3


def test_strategy_rows_without_a_threshold_skip_cut_configurations(tmp_path):
    rows = [("M", "gpqa", p, s, 100 + s, "", "A", "A", 1) for p in range(5) for s in range(2)]
    csv = tmp_path / "t.csv"
    _write_csv(csv, rows)
    out = strategy_rows(read_traces(csv), None, seeds=(0,), thresholds={})
    assert out and all(r["plan"]["cutoff_tokens"] is None for r in out)
    assert {r["difficulty"] for r in out} == {None, "easy"}  # fit's pooled pass-rate binning


def test_stratified_draws_make_single_sample_rows_exact(tmp_path):
    """A block of 8 seeds draws each of 8 recorded samples first exactly once."""
    rnd = random.Random(3)
    rows = []
    for p in range(7):
        for s in range(8):
            ok = rnd.random() < 0.5
            rows.append(("M", "aime2024", p, s, rnd.randint(100, 9000), "", "1" if ok else "2", "1", int(ok)))
    csv = tmp_path / "t.csv"
    _write_csv(csv, rows)
    table = read_traces(csv)
    out = strategy_rows(table, None, grid=(GridConfig("single"),), seeds=tuple(range(8)), thresholds={})
    task_row = next(r for r in out if r["difficulty"] is None)
    assert task_row["accuracy"] == round(float(table.correct.mean()), 4)
    assert task_row["tokens"]["mean"] == round(float(table.completion_tokens.mean()))
