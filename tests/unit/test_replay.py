"""`pareto-proxy replay` end to end on a tiny hand-made trace file, through the real command line.

The file is small enough to work out every number by hand. Model A (10 $/Mtok out) and model B
(2 $/Mtok out), two samples each per problem, all on aime2024 (task math):

    problem  A samples (tokens pred correct)      B samples
    0 (= 7)  1000 7 1 | 3000 5 0                  500 7 1 | 500 7 1
    1 (= 9)  2000 9 1 | 2000 9 1                  6000 1 0 | 8000 1 0
    2 (= 3)  1000 2 0 | 4000 3 1                  700 3 1 | 900 3 1

With two samples per problem, any plan that draws both sees the same two whatever the
permutation, so most numbers below are exact.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SAMPLES = {
    "A": [[(1000, "7", 1), (3000, "5", 0)], [(2000, "9", 1), (2000, "9", 1)], [(1000, "2", 0), (4000, "3", 1)]],
    "B": [[(500, "7", 1), (500, "7", 1)], [(6000, "1", 0), (8000, "1", 0)], [(700, "3", 1), (900, "3", 1)]],
}
ANSWERS = ["7", "9", "3"]
HEADER = "model,dataset,problem_id,sample_id,completion_tokens,finish_reason,pred,answer,correct"
ROOT = Path(__file__).resolve().parents[2]


def _stats(x: float) -> dict:
    return {"mean": x, "std": 0, "p50": x, "p90": x, "p95": x, "p99": x}


def _strategy_row(k: int, accuracy: float, **plan) -> dict:
    plan = {"aggregator": None, "m": None, "k_max": None, "margin": None, "cutoff_tokens": None,
            "restart": "stop", "max_restarts": 0, "samples_mean": float(k)} | plan
    return {"model": "A", "task": "math", "difficulty": None, "n": 3, "accuracy": accuracy, "tokens": _stats(3000),
            "strategy": "single" if k == 1 and plan["aggregator"] is None else "parallel", "k": k, "plan": plan}


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    lines = [HEADER]
    for model, problems in SAMPLES.items():
        for p, samples in enumerate(problems):
            for s, (tokens, pred, ok) in enumerate(samples):
                lines.append(f"{model},aime2024,{p},{s},{tokens},stop,{pred},{ANSWERS[p]},{ok}")
    traces = tmp_path / "traces.csv"
    traces.write_text("\n".join(lines) + "\n")
    prices = tmp_path / "prices.csv"
    prices.write_text("trace_model,input_usd_per_mtok,output_usd_per_mtok\nA,1,10\nB,1,2\n")
    rows = [
        # the curve puts the cut of the policies' level (0.1) at 1500, where the cut row was measured
        {"model": m, "task": "math", "difficulty": None, "n": 6, "accuracy": 0.6, "tokens": _stats(2000),
         "failure_curve": [[1000, 0.3], [1500, 0.05]]}
        for m in ("A", "B")
    ]
    rows += [
        _strategy_row(2, 0.90, aggregator="first_finish"),
        _strategy_row(2, 0.92, aggregator="consensus", margin=2, k_max=8),
        _strategy_row(1, 0.95, cutoff_tokens=1500, restart="same", max_restarts=1),
    ]
    profile = {"version": "1", "provenance": [{"kind": "traces", "file": "other.csv", "sha256": "0" * 64}],
               "models": {m: {"price": {"input_usd_per_mtok": 0, "output_usd_per_mtok": 100}, "reasoning": True}
                          for m in ("A", "B")},
               "rows": rows}
    profiles = tmp_path / "profile.json"
    profiles.write_text(json.dumps(profile))
    out = {"traces": traces, "prices": prices, "profiles": profiles, "dir": tmp_path}
    for name, strategies in (("ff", "[parallel]"), ("cons", "[consensus]"), ("cut", "[single]")):
        policy = tmp_path / f"{name}.yaml"
        policy.write_text(f"name: {name}\nobjective: accurate\nmodels: [A]\nstrategies: {strategies}\n"
                          "accuracy_tolerance: 0.0\n")
        out[name] = policy
    return out


def replay(files: dict[str, Path], policy: str, *extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARETO_")}
    cmd = [sys.executable, "-m", "proxy", "replay", "--traces", str(files["traces"]), "--policy", str(files[policy]),
           "--profiles", str(files["profiles"]), "--permutations", "8", *extra]
    return subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)


def as_json(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_json_has_every_contract_field_and_first_finish_numbers(files):
    proc = replay(files, "ff", "--prices", str(files["prices"]), "--json")
    out = as_json(proc)
    for field in ("policy", "requests", "accuracy", "cost_usd_per_request", "tokens_per_request", "p95_cost_usd",
                  "baselines", "frontier"):
        assert field in out, field
    assert out["policy"] == "ff" and out["requests"] == 3
    assert out["plans"]["math"]["aggregator"] == "first_finish"
    # first_finish@2 draws both samples: the shorter wins, both pay its length
    #   p0: 1000 "7" right, 2000 tokens; p1: 2000 "9" right, 4000; p2: 1000 "2" wrong, 2000
    assert out["accuracy"] == pytest.approx(2 / 3, abs=1e-4)
    assert out["tokens_per_request"] == pytest.approx(8000 / 3, abs=0.1)
    assert out["cost_usd_per_request"] == pytest.approx(8000 / 3 * 10 / 1e6)
    assert out["p95_cost_usd"] == pytest.approx(4000 * 10 / 1e6)  # the p1 requests
    base = {b["name"]: b for b in out["baselines"]}
    assert set(base) == {"A single", "A majority@8", "B single", "B majority@8"}
    for b in base.values():
        assert set(b) == {"name", "accuracy", "cost_usd_per_request"}
    # majority@8 stops with the two recorded samples. A: p0 tie 7 (1000) vs 5 (3000) -> 7 right;
    # p1 9 right; p2 tie 2 (1000) vs 3 (4000) -> 2 wrong. B: right, wrong, right.
    assert base["A majority@8"]["accuracy"] == pytest.approx(2 / 3, abs=1e-4)
    assert base["A majority@8"]["cost_usd_per_request"] == pytest.approx(13000 / 3 * 10 / 1e6)
    assert base["B majority@8"]["accuracy"] == pytest.approx(2 / 3, abs=1e-4)
    assert base["B majority@8"]["cost_usd_per_request"] == pytest.approx(16600 / 3 * 2 / 1e6)
    # B single is right on p0 and p2 whichever sample is drawn, wrong on p1
    assert base["B single"]["accuracy"] == pytest.approx(2 / 3, abs=1e-4)
    front = out["frontier"]
    assert front and all({"name", "accuracy", "cost_usd_per_request"} <= set(f) for f in front)
    costs = [f["cost_usd_per_request"] for f in front]
    accs = [f["accuracy"] for f in front]
    assert costs == sorted(costs) and accs == sorted(accs) and len(set(accs)) == len(accs)
    assert out["fitted_on_replayed_file"] is False
    assert "WARNING" not in proc.stderr


def test_without_prices_the_profile_prices_are_used(files):
    out = as_json(replay(files, "ff", "--json"))
    assert out["cost_usd_per_request"] == pytest.approx(8000 / 3 * 100 / 1e6)


def test_consensus_stops_with_what_it_has(files):
    out = as_json(replay(files, "cons", "--prices", str(files["prices"]), "--json"))
    assert out["plans"]["math"]["aggregator"] == "consensus"
    # p0: 7 vs 5, no third sample to add: tie -> 7 (shorter) right, 4000 tokens
    # p1: 9, 9: two ahead at once, 4000; p2: 2 vs 3 -> 2 (shorter) wrong, 5000
    assert out["accuracy"] == pytest.approx(2 / 3, abs=1e-4)
    assert out["tokens_per_request"] == pytest.approx(13000 / 3, abs=0.1)


def test_cutoff_with_restart_same(files):
    out = as_json(replay(files, "cut", "--prices", str(files["prices"]), "--json"))
    plan = out["plans"]["math"]
    assert (plan["cutoff_tokens"], plan["restart"], plan["max_restarts"]) == (1500, "same", 1)
    # p0: right either way (1000 directly, or 3000 cut at 1500 then 1000): 1000 or 2500 tokens
    # p1: both 2000 samples are cut: 1500 + 1500, no answer; p2: ends on the wrong "2" either way
    assert out["accuracy"] == pytest.approx(1 / 3, abs=1e-4)
    assert 1000 + 3000 + 1000 <= 3 * out["tokens_per_request"] <= 2500 + 3000 + 2500
    assert out["restarts_per_request"] >= 1 / 3 and out["cuts_per_request"] >= 2 / 3


def test_oracle_verifier_is_the_best_of_n_bound(files):
    files["bon"] = files["dir"] / "bon.yaml"
    files["bon"].write_text("name: bon\nobjective: accurate\nmodels: [A]\nstrategies: [parallel]\n")
    doc = json.loads(files["profiles"].read_text())
    doc["rows"] = [r for r in doc["rows"] if (r.get("plan") or {}).get("aggregator") != "first_finish"]
    doc["rows"].append(_strategy_row(2, 0.91, aggregator="best_of_n"))
    files["profiles"].write_text(json.dumps(doc))
    plain = as_json(replay(files, "bon", "--json"))
    oracle = as_json(replay(files, "bon", "--json", "--verifier", "oracle"))
    assert plain["plans"]["math"]["aggregator"] == "best_of_n"
    assert plain["accuracy"] == pytest.approx(2 / 3, abs=1e-4)  # no verifier: majority (p2 tie -> wrong)
    assert oracle["accuracy"] == 1.0  # some sample is right on every problem
    assert any("best_of_n" in f["name"] for f in oracle["frontier"])


def test_table_and_plot(files):
    png = files["dir"] / "out.png"
    proc = replay(files, "ff", "--plot", str(png))
    assert proc.returncode == 0, proc.stderr
    assert "frontier" in proc.stdout and "baselines" in proc.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_loud_warning_when_profiles_were_fitted_on_the_replayed_file(files):
    doc = json.loads(files["profiles"].read_text())
    doc["provenance"] = [{"kind": "traces", "file": "traces.csv",
                          "sha256": hashlib.sha256(files["traces"].read_bytes()).hexdigest()}]
    files["profiles"].write_text(json.dumps(doc))
    proc = replay(files, "ff", "--json")
    assert proc.returncode == 0
    assert "WARNING" in proc.stderr and "fitted on traces.csv" in proc.stderr
    assert json.loads(proc.stdout)["fitted_on_replayed_file"] is True


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("", "empty file"),
        (HEADER + "\n", "no samples"),
        ("model,dataset,problem_id,sample_id,completion_tokens\nA,aime2024,0,0,10\n", "missing column"),
        (HEADER + "\nA,aime2024,0,0,1000,stop,7,7,1\nA,aime2024,0,1,lots,stop,7,7,1\n", "line 3"),
        (HEADER + "\nA,aime2024,0,0,1000,stop,7,7,maybe\n", "line 2"),
    ],
)
def test_bad_trace_files_fail_clearly(files, content: str, needle: str):
    files["traces"].write_text(content)
    proc = replay(files, "ff", "--json")
    assert proc.returncode == 2
    assert needle in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_unknown_policy_fails_clearly(files):
    files["nope"] = Path("no-such-policy")
    proc = replay(files, "nope")
    assert proc.returncode == 2 and "unknown policy" in proc.stderr and "Traceback" not in proc.stderr
