"""`fit`: failure thresholds recovered from synthetic traces, the sample-size floor, the holdout
split, bad input through the real command line, the study's rows, live JSONL traces."""

from __future__ import annotations

import csv
import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from proxy.errors import ConfigError
from proxy.profiling.fit import fit_profiles
from proxy.routing.cutoffs import cutoff_for_level, threshold_from_curve
from proxy.routing.profiles import Profiles

SHARED = Path(__file__).parents[3] / "shared" / "data"
REPO = Path(__file__).parents[2]
HEADER = ["model", "dataset", "problem_id", "sample_id", "completion_tokens", "finish_reason", "pred", "answer",
          "correct"]

# the synthetic model: lengths uniform on [A, B]; right with P_HI below the knee K, P_LO above it
A, B, K, P_HI, P_LO = 1_000, 16_000, 8_000, 0.9, 0.02
#: where the population's P(correct | longer than L) crosses 0.1 (solve
#: (P_HI (K - L) + P_LO (B - K)) / (B - L) = 0.1 for L): 7,200 tokens, below the knee itself
TRUE_THRESHOLD = (P_HI * K + P_LO * (B - K) - 0.1 * B) / (P_HI - 0.1)


def synthetic_rows(problems: int, samples: int, seed: int = 0, dataset: str = "aime2024", model: str = "M",
                   ) -> list[list[object]]:
    rng = np.random.default_rng(seed)
    out: list[list[object]] = []
    for pid in range(problems):
        for sid in range(samples):
            tokens = int(rng.uniform(A, B))
            right = rng.random() < (P_HI if tokens < K else P_LO)
            out.append([model, dataset, pid, sid, tokens, "stop", "1" if right else "2", "1", int(right)])
    return out


def write_csv(path: Path, rows: list[list[object]], header: list[str] = HEADER) -> Path:
    with open(path, "w", newline="") as handle:
        w = csv.writer(handle)
        w.writerow(header)
        w.writerows(rows)
    return path


def task_row(profile: dict, model: str = "M", task: str = "math") -> dict:
    return next(r for r in profile["rows"]
                if r["model"] == model and r["task"] == task and r["difficulty"] is None and "strategy" not in r)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "proxy", "fit", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=300)


# -- thresholds ----------------------------------------------------------------------------------


def test_fit_recovers_a_known_threshold_with_an_interval_around_it(tmp_path: Path) -> None:
    assert TRUE_THRESHOLD == pytest.approx(7_200)
    path = write_csv(tmp_path / "t.csv", synthetic_rows(problems=80, samples=8))
    profile = fit_profiles([str(path)], None, strategies=False)
    row = task_row(profile)
    threshold = row["failure_threshold_tokens"]
    assert abs(threshold - TRUE_THRESHOLD) <= 0.08 * TRUE_THRESHOLD
    lo, hi = row["threshold_ci"]
    assert lo <= threshold <= hi and lo <= TRUE_THRESHOLD <= hi
    assert hi - lo < 3_000  # an interval that says something
    assert row["threshold_bootstrap"]["resamples"] == 200 and row["threshold_bootstrap"]["found"] >= 190
    # the curve is non-increasing and the planner's reading of it at 0.1 is the fitted threshold
    ps = [p for _, p in row["failure_curve"]]
    assert all(a >= b for a, b in itertools.pairwise(ps))
    loaded = Profiles.from_dict(json.loads(json.dumps(profile))).row("M", "math")
    assert loaded is not None and cutoff_for_level(loaded, 0.1) == threshold
    # a laxer level cuts earlier or at the same place, a stricter one later or never
    lax, strict = cutoff_for_level(loaded, 0.3), cutoff_for_level(loaded, 0.05)
    assert lax is not None and lax <= threshold
    assert strict is None or strict >= threshold
    # same inputs, same bytes: the bootstrap is seeded
    assert fit_profiles([str(path)], None, strategies=False) == profile


def test_no_threshold_below_the_minimum_sample_size(tmp_path: Path) -> None:
    # 3 problems x 8 samples: fewer than 30 samples are ever longer than any L
    few = write_csv(tmp_path / "few.csv", synthetic_rows(problems=3, samples=8))
    row = task_row(fit_profiles([str(few)], None, strategies=False))
    assert row["n"] == 24 and row["failure_curve"] == []
    assert "failure_threshold_tokens" not in row and "threshold_ci" not in row
    # 80 samples, but from 4 problems only: correlated samples are not 80 observations
    clumped = write_csv(tmp_path / "clumped.csv", synthetic_rows(problems=4, samples=20))
    row = task_row(fit_profiles([str(clumped)], None, strategies=False))
    assert row["n"] == 80 and row["failure_curve"] == []
    assert "failure_threshold_tokens" not in row


def test_threshold_rule_edge_cases() -> None:
    assert threshold_from_curve([], 0.1) is None
    assert threshold_from_curve([[100, 0.05], [200, 0.01]], 0.1) is None  # never right at any length
    assert threshold_from_curve([[100, 0.6], [200, 0.2]], 0.1) is None  # never drops below the level
    assert threshold_from_curve([[100, 0.6], [200, 0.09], [300, 0.0]], 0.1) == 200
    with pytest.raises(ValueError):
        threshold_from_curve([[100, 0.6]], 1.5)


# -- holdout ---------------------------------------------------------------------------------


def _problems(path: Path) -> set[tuple[str, str]]:
    with open(path, newline="") as handle:
        return {(r["dataset"], r["problem_id"]) for r in csv.DictReader(handle)}


def test_holdout_is_by_problem_and_deterministic(tmp_path: Path) -> None:
    rows = synthetic_rows(40, 8, seed=1) + synthetic_rows(20, 8, seed=2, dataset="gpqa")
    rows += synthetic_rows(40, 8, seed=3, model="N")
    traces = write_csv(tmp_path / "t.csv", rows)
    outs = []
    held, out = tmp_path / "held-a.csv", tmp_path / "p.json"
    for _ in range(2):
        r = run_cli("--traces", str(traces), "--out", str(out), "--holdout-fraction", "0.25",
                    "--holdout-out", str(held), "--seed", "7", "--no-strategies")
        assert r.returncode == 0, r.stderr
        outs.append((held.read_bytes(), out.read_bytes()))
    assert outs[0] == outs[1]  # deterministic, to the byte

    held_problems = _problems(tmp_path / "held-a.csv")
    all_problems = _problems(traces)
    # a quarter of each dataset's problems, every sample of each, for every model
    assert {p for p in held_problems if p[0] == "aime2024"}.__len__() == 10
    assert {p for p in held_problems if p[0] == "gpqa"}.__len__() == 5
    with open(tmp_path / "held-a.csv", newline="") as handle:
        held_rows = list(csv.DictReader(handle))
    assert len(held_rows) == 15 * 8 + 10 * 8  # M on both datasets, N on aime2024
    profile = json.loads(outs[0][1])
    fitted_m = task_row(profile, "M", "math")["n"] + task_row(profile, "M", "science")["n"]
    fitted_n = task_row(profile, "N", "math")["n"]
    assert fitted_m + fitted_n + len(held_rows) == len(rows)
    # nothing fitted is held out: the fitted problems are exactly the others
    entry = next(p for p in profile["provenance"] if p["kind"] == "holdout")
    listed = {(d, pid) for d, ids in entry["held_out"].items() for pid in ids}
    assert listed == held_problems and held_problems < all_problems
    assert entry["fraction"] == 0.25 and entry["seed"] == 7 and entry["samples"] == len(held_rows)
    # the held-out file is a trace file in the same format: it fits on its own
    again = run_cli("--traces", str(tmp_path / "held-a.csv"), "--out", str(tmp_path / "h.json"), "--no-strategies")
    assert again.returncode == 0, again.stderr

    other = run_cli("--traces", str(traces), "--out", str(tmp_path / "c.json"), "--holdout-fraction", "0.25",
                    "--holdout-out", str(tmp_path / "held-c.csv"), "--seed", "8", "--no-strategies")
    assert other.returncode == 0 and _problems(tmp_path / "held-c.csv") != held_problems


# -- bad input through the command line ---------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("model,dataset,problem_id\nR1,gpqa,1\n", ["line 1", "missing column(s) sample_id, completion_tokens"]),
        (",".join(HEADER) + "\nR1,gpqa,0,0,100,,A,A,1\nR1,gpqa,0,1,lots,,A,A,1\n",
         ["line 3", "'completion_tokens'", "'lots'"]),
        ("", ["empty file"]),
        (",".join(HEADER) + "\n", ["no samples"]),
    ],
    ids=["missing-columns", "non-numeric-tokens", "empty", "header-only"],
)
def test_bad_trace_files_exit_2_naming_the_row(body: str, expected: list[str], tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(body)
    r = run_cli("--traces", str(path), "--out", str(tmp_path / "p.json"))
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    assert "pareto-proxy fit: error:" in r.stderr and str(path) in r.stderr
    for part in expected:
        assert part in r.stderr
    assert not (tmp_path / "p.json").exists()


def test_bad_arguments_exit_2(tmp_path: Path) -> None:
    traces = write_csv(tmp_path / "t.csv", synthetic_rows(4, 8))
    for args, message in [
        (["--holdout-fraction", "0.3"], "go together"),
        (["--holdout-fraction", "1.5", "--holdout-out", str(tmp_path / "h.csv")], "between 0 and 1"),
        (["--prices", str(tmp_path / "nope.csv")], "cannot read"),
        (["--eureka-dir", str(tmp_path)], "eureka_accuracy.csv: cannot read"),
    ]:
        r = run_cli("--traces", str(traces), "--out", str(tmp_path / "p.json"), "--no-strategies", *args)
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)


# -- the study's rows ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def with_study(tmp_path_factory: pytest.TempPathFactory) -> dict:
    path = write_csv(tmp_path_factory.mktemp("fit") / "t.csv", synthetic_rows(10, 8))
    return fit_profiles([str(path)], None, eureka_dir=str(SHARED), strategies=False)


def test_study_rows_carry_provenance_and_fractions(with_study: dict) -> None:
    with open(SHARED / "eureka_accuracy.csv", newline="") as handle:
        table = {(r["model"], r["benchmark"]): float(r["accuracy_pct"]) / 100 for r in csv.DictReader(handle)}
    study = [r for r in with_study["rows"] if r["model"] != "M"]
    assert {r["model"] for r in study} == {m for m, _ in table}
    files = {p.get("file") for p in with_study["provenance"]}
    assert {"eureka_accuracy.csv", "eureka_gpqa_tokens.csv"} <= files
    for row in study:
        assert 0.0 <= row["accuracy"] <= 1.0
        assert row["sources"][0] == "eureka_accuracy.csv" and "accuracy" in row["certainty"]
        for bench, info in row["benchmarks"].items():
            assert info["accuracy"] == pytest.approx(table[(row["model"], bench)], abs=1e-4)
            assert info["certainty"] in {"text", "figure", "figure+derived", "figure-uncertain"}
        assert "failure_threshold_tokens" not in row and "failure_curve" not in row
        if row["task"] != "science":
            assert "tokens" not in row and "n" not in row  # the study gives none: absent
    o1 = {r["task"]: r for r in study if r["model"] == "o1"}
    assert set(o1) == {"math", "science", "planning", "sat", "tsp", "spatial"}
    assert o1["sat"]["accuracy"] == 0.889
    assert o1["math"]["accuracy"] == pytest.approx((0.733 + 0.675) / 2, abs=1e-4)  # AIME 2025, Omni-MATH
    # GPQA: 198 questions; tokens are the question-weighted mean of the per-domain averages
    assert o1["science"]["n"] == 198
    assert o1["science"]["tokens"] == {"mean": round((19 * 2527 + 93 * 4979 + 86 * 2161) / 198)}
    # aime-1983-2024 is reported for three models only: listed, not pooled into math
    o3 = next(r for r in study if r["model"] == "o3-mini-high" and r["task"] == "math")
    assert o3["benchmarks"]["aime-1983-2024"]["in_accuracy"] is False

    models = with_study["models"]
    assert models["o1"] == {"price": {"input_usd_per_mtok": 15.0, "output_usd_per_mtok": 60.0}, "reasoning": True}
    assert models["gpt-4o"]["reasoning"] is False and models["deepseek-r1"]["reasoning"] is True
    prices = next(p for p in with_study["provenance"] if p.get("kind") == "prices")
    assert set(prices["unpriced"]) == {"gemini-2.0-pro", "gemini-2-flash-thinking"}
    assert not set(prices["unpriced"]) & set(models)
    # and the loader takes all of it
    loaded = Profiles.from_dict(json.loads(json.dumps(with_study)))
    sat = loaded.row("o1", "sat")
    assert sat is not None and sat.n is None and sat.tokens.mean is None and cutoff_for_level(sat, 0.1) is None


def test_study_models_clashing_with_trace_models_are_refused(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", synthetic_rows(3, 8, model="o1"))
    with pytest.raises(ConfigError, match="o1"):
        fit_profiles([str(path)], None, eureka_dir=str(SHARED), strategies=False)


# -- the proxy's own traces ---------------------------------------------------------------------


def test_jsonl_traces_join_feedback_by_id(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    lines: list[dict] = []
    for i in range(60):
        tokens = int(rng.uniform(A, B))
        right = bool(rng.random() < (P_HI if tokens < K else P_LO))
        rid = f"chatcmpl-{i}"
        samples = [{"model": "sim-r1", "prompt_tokens": 10, "completion_tokens": tokens, "finish_reason": "stop",
                    "cut": False, "cancelled": False, "answer": "7", "verdict": None, "selected": True},
                   {"model": "sim-r1", "prompt_tokens": 10, "completion_tokens": 500, "finish_reason": "length",
                    "cut": True, "cancelled": False, "answer": None, "verdict": None, "selected": False}]
        lines.append({"id": rid, "task": "math", "difficulty": None, "samples": samples, "status": 200})
        if i % 10 != 0:  # some requests never get feedback: unlabelled, left out
            lines.append({"kind": "feedback", "id": rid, "correct": right})
    lines.append({"id": "chatcmpl-x", "task": "math", "samples": [], "status": 502})
    path = tmp_path / "traces-2026-11-23.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    profile = fit_profiles([str(path)], None)
    row = task_row(profile, "sim-r1")
    assert row["n"] == 54  # 60 requests, 6 without feedback; cut samples never count
    assert not [r for r in profile["rows"] if r["difficulty"] is not None or "strategy" in r]

    path.write_text('{"id": "a", "task": "math", "samples": [{"model": "m", "completion_tokens": "many"}]}\n')
    with pytest.raises(ConfigError, match=r"line 1, field 'samples\[0\].completion_tokens'"):
        fit_profiles([str(path)], None)
