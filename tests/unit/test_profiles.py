"""Profiles: the loader's contract, and the fitted numbers against facts recomputed from the CSV.

The fitted-number tests recompute every expected value here with the plain `csv` module, never
with `proxy.profiling`, so a bug in the fitting code cannot agree with itself.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import statistics
from collections import defaultdict
from pathlib import Path

import pytest

from proxy.errors import ConfigError
from proxy.profiling.fit import fit_profiles
from proxy.profiling.tracedata import TraceDataError, read_prices, read_traces, task_for_dataset
from proxy.routing.profiles import Profiles, TokenStats

SHARED = Path(__file__).parents[3] / "shared" / "data"
TRACES = SHARED / "reasoning_traces.csv"
PRICES = SHARED / "trace_model_prices.csv"
DEFAULT_PROFILE = Path(__file__).parents[2] / "profiles" / "default.json"
SCRIPT = Path(__file__).parents[2] / "scripts" / "build_default_profile.py"

HEADER = "model,dataset,problem_id,sample_id,completion_tokens,finish_reason,pred,answer,correct\n"


def _stats(mean: float) -> dict:
    return {"mean": mean, "std": mean / 2, "p50": mean, "p90": 2 * mean, "p95": 3 * mean, "p99": 4 * mean}


def small_profile() -> dict:
    """A hand-made document exercising every field the loader knows."""
    return {
        "version": "1",
        "provenance": [{"file": "hand.csv", "sha256": "00" * 32, "contributed": "rows"}],
        "models": {"M": {"price": {"input_usd_per_mtok": 0.25, "output_usd_per_mtok": 1.5}, "reasoning": True}},
        "rows": [
            {
                "model": "M",
                "task": "math",
                "difficulty": None,
                "n": 40,
                "accuracy": 0.6,
                "tokens": {**_stats(1000), "max": 5000},
                "tokens_correct_mean": 800,
                "tokens_wrong_mean": 1300,
                "tokens_correct": _stats(800),
                "tokens_wrong": _stats(1300),
                "failure_curve": [[100, 0.6], [900, 0.4], [2000, 0.05]],
                "failure_threshold_tokens": 2000,
                "threshold_ci": [1500, 2600],
                "sources": ["hand.csv"],
            },
            {
                "model": "M",
                "task": "math",
                "difficulty": "hard",
                "n": 16,
                "accuracy": 0.25,
                "tokens": _stats(2000),
                "tokens_wrong_mean": 2100,
                "failure_curve": [],
            },
            {
                "model": "M",
                "task": "math",
                "difficulty": None,
                "strategy": "parallel",
                "k": 4,
                "n": 40,
                "accuracy": 0.8,
                "tokens": _stats(4000),
                "failure_curve": [],
            },
            {"model": "Other", "task": "science", "difficulty": "easy", "n": 8, "accuracy": 1.0, "tokens": _stats(10)},
        ],
    }


# -- loader ----------------------------------------------------------------------------------


def test_round_trip_through_a_file(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps(small_profile()))
    loaded = Profiles.load(path)

    assert loaded.version == "1"
    assert loaded.models["M"].output_usd_per_mtok == 1.5 and loaded.models["M"].reasoning is True
    top = loaded.row("M", "math")
    assert top is not None
    assert top.n == 40 and top.accuracy == 0.6
    assert top.tokens == TokenStats(mean=1000, std=500, p50=1000, p90=2000, p95=3000, p99=4000, max=5000)
    assert top.tokens_correct is not None and top.tokens_correct.mean == 800
    assert top.failure_curve == [(100, 0.6), (900, 0.4), (2000, 0.05)]
    assert top.failure_threshold_tokens == 2000
    assert top.threshold_ci == (1500, 2600)
    hard = loaded.row("M", "math", "hard")
    assert hard is not None
    # absent statistics stay None, never defaulted
    assert hard.tokens_correct_mean is None and hard.tokens_correct is None and hard.tokens_wrong is None
    assert hard.failure_threshold_tokens is None and hard.threshold_ci is None and hard.tokens.max is None
    # the row without a failure_curve key gets an empty curve, not an invented one
    assert loaded.row("Other", "science", "easy").failure_curve == []  # type: ignore[union-attr]

    again = Profiles.from_dict(json.loads(json.dumps(loaded.to_dict())))
    assert again.rows == loaded.rows and again.models == loaded.models


def test_published_rows_may_carry_only_a_mean_or_no_tokens_and_no_n() -> None:
    """A published table gives accuracy, sometimes a mean token count, sometimes a question count:
    the loader takes what exists and leaves the rest None, never filled in."""
    doc = small_profile()
    doc["rows"] += [
        {"model": "pub", "task": "science", "difficulty": None, "n": 198, "accuracy": 0.767, "tokens": {"mean": 3520}},
        {"model": "pub", "task": "sat", "difficulty": None, "accuracy": 0.889},
    ]
    p = Profiles.from_dict(doc)
    science, sat = p.row("pub", "science"), p.row("pub", "sat")
    assert science is not None and sat is not None
    assert science.n == 198 and science.tokens == TokenStats(mean=3520)
    assert science.tokens.p95 is None and not science.tokens.has_quantiles
    assert sat.n is None and sat.tokens == TokenStats() and sat.failure_curve == []
    assert p.row("M", "math").tokens.has_quantiles  # type: ignore[union-attr]
    # absent stays absent on the way out
    assert sat.to_dict() == {"model": "pub", "task": "sat", "difficulty": None, "accuracy": 0.889, "failure_curve": []}
    assert science.to_dict()["tokens"] == {"mean": 3520}
    again = Profiles.from_dict(json.loads(json.dumps(p.to_dict())))
    assert again.rows == p.rows


def test_row_falls_back_from_difficulty_to_task_level() -> None:
    p = Profiles.from_dict(small_profile())
    assert p.row("M", "math", "hard").difficulty == "hard"  # type: ignore[union-attr]
    easy = p.row("M", "math", "easy")  # no easy row: the pooled task-level row
    assert easy is not None and easy.difficulty is None and easy.accuracy == 0.6
    assert p.row("M", "math", None).difficulty is None  # type: ignore[union-attr]
    assert p.row("M", "science") is None
    assert p.row("nobody", "math", "hard") is None
    # Other has only a difficulty row: nothing to fall back to for another difficulty
    assert p.row("Other", "science", "hard") is None
    assert p.row("Other", "science", "easy") is not None


def test_strategy_rows_stay_out_of_plain_lookups() -> None:
    p = Profiles.from_dict(small_profile())
    assert p.row("M", "math").strategy is None  # type: ignore[union-attr]
    assert [r.difficulty for r in p.rows_for("M")] == [None, "hard"]
    assert p.rows_for("nobody") == []
    assert any(r.strategy == "parallel" and r.k == 4 for r in p.rows)
    assert p.model_names() == ["M", "Other"]


def _broken(mutate) -> dict:
    doc = copy.deepcopy(small_profile())
    mutate(doc)
    return doc


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (_broken(lambda d: d.pop("rows")), "rows: missing"),
        (_broken(lambda d: d.update(rows={"a": 1})), "rows: must be a list"),
        (_broken(lambda d: d["rows"][1].pop("accuracy")), "rows[1].accuracy: missing"),
        (_broken(lambda d: d["rows"][0].update(accuracy=1.5)), "rows[0].accuracy: must be [0.0, 1.0]"),
        (_broken(lambda d: d["rows"][0].update(accuracy=-0.1)), "rows[0].accuracy"),
        (_broken(lambda d: d["rows"][0].update(accuracy="0.5")), "rows[0].accuracy: must be a finite number"),
        (_broken(lambda d: d["rows"][0]["tokens"].pop("p95")), "rows[0].tokens.p95: missing"),
        (_broken(lambda d: d["rows"][0]["tokens"].update(p50=None)), "rows[0].tokens.p50: missing"),
        (_broken(lambda d: d["rows"][0]["tokens"].update(mean="x")), "rows[0].tokens.mean: must be a finite number"),
        (_broken(lambda d: d["rows"][0].update(n=None, tokens={"mean": -3})), "rows[0].tokens.mean: must be >= 0"),
        (_broken(lambda d: d["rows"][0]["tokens"].update(p90=10)), "rows[0].tokens.p90: must be >= p50"),
        (_broken(lambda d: d["rows"][0].update(task="maths")), "rows[0].task: unknown task 'maths'"),
        (_broken(lambda d: d["rows"][0].update(difficulty="extreme")), "rows[0].difficulty"),
        (_broken(lambda d: d["rows"][0].update(n=0)), "rows[0].n: must be an integer >= 1"),
        (_broken(lambda d: d["rows"][0].update(n=2.5)), "rows[0].n"),
        (_broken(lambda d: d["rows"][0].pop("model")), "rows[0].model: missing"),
        (_broken(lambda d: d["rows"][0].update(failure_curve=[[5, 0.1], [5, 0.2]])), "rows[0].failure_curve[1]"),
        (_broken(lambda d: d["rows"][0].update(failure_curve=[[5, 1.2]])), "rows[0].failure_curve[0]"),
        (_broken(lambda d: d["rows"][0].update(threshold_ci=[9, 3])), "rows[0].threshold_ci"),
        (_broken(lambda d: d["rows"].append(copy.deepcopy(d["rows"][1]))), "rows[4]: duplicate of rows[1]"),
        (_broken(lambda d: d["models"]["M"].pop("reasoning")), "models['M'].reasoning"),
        (_broken(lambda d: d["models"]["M"]["price"].pop("input_usd_per_mtok")), "input_usd_per_mtok: missing"),
        (_broken(lambda d: d.pop("version")), "version: missing"),
        ([1, 2], "top level: must be a JSON object"),
    ],
)
def test_malformed_documents_raise_config_error_naming_the_field(doc: object, expected: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError) as err:
        Profiles.load(path)
    assert str(path) in str(err.value)
    assert expected in str(err.value)


def test_not_json_names_file_and_position(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"version": "1",\n "rows": [,]}')
    with pytest.raises(ConfigError, match=r"bad\.json: not valid JSON: .* line 2"):
        Profiles.load(path)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        Profiles.load(tmp_path / "nope.json")


# -- trace reading -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dataset", "task"),
    [
        ("aime2024", "math"),
        ("aime2025-i", "math"),
        ("omni-math", "math"),
        ("gpqa", "science"),
        ("gpqa_diamond", "science"),
        ("ba-calendar", "planning"),
        ("3sat", "sat"),
        ("tsp", "tsp"),
        ("maze", "spatial"),
        ("spatialmap", "spatial"),
        ("mmlu", None),
    ],
)
def test_dataset_to_task(dataset: str, task: str | None) -> None:
    assert task_for_dataset(dataset) == task


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("model,dataset,problem_id\nR1,gpqa,1\n", "line 1: missing column(s) sample_id, completion_tokens"),
        (HEADER + "R1,gpqa,0,0,100,,A,A,1\nR1,gpqa,0,1,lots,,A,A,1\n", "line 3, column 'completion_tokens'"),
        (HEADER + "R1,gpqa,0,0,-5,,A,A,1\n", "line 2, column 'completion_tokens'"),
        (HEADER + "R1,gpqa,0,0,100,,A,A,maybe\n", "line 2, column 'correct'"),
        (HEADER + "R1,mmlu,0,0,100,,A,A,1\n", "line 2, column 'dataset': unknown dataset 'mmlu'"),
        (HEADER + "R1,gpqa,0,0,100,,A,A,1\nR1,gpqa,0,0,120,,A,B,0\n", "line 3, column 'sample_id': duplicate"),
        (HEADER + "R1,gpqa,0,0,100,,A,A\n", "line 2: 8 fields"),
        ("", "empty file"),
    ],
)
def test_bad_trace_files_name_file_line_and_column(body: str, expected: str, tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text(body)
    with pytest.raises(TraceDataError) as err:
        read_traces(path)
    assert str(path) in str(err.value) and expected in str(err.value)


def test_read_traces_columns(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text(HEADER + "R1,aime2024,3,0,1500,stop,204,204,1\nR1,gpqa,3,0,90,,B,A,0\n")
    t = read_traces(path)
    assert len(t) == 2
    assert t.task.tolist() == ["math", "science"]
    assert t.completion_tokens.tolist() == [1500, 90] and t.correct.tolist() == [True, False]
    assert t.problem_keys().tolist() == ["aime2024/3", "gpqa/3"]  # same id, different problems
    assert [s.finish_reason for s in t.records()] == ["stop", ""]


def test_fit_refuses_a_sample_present_in_two_files(tmp_path: Path) -> None:
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text(HEADER + "R1,gpqa,0,0,100,,A,A,1\n")
    b.write_text(HEADER + "R1,gpqa,0,0,100,,A,A,1\n")
    with pytest.raises(ConfigError, match="a.csv .*b.csv"):
        fit_profiles([str(a), str(b)], None)


# -- fitted numbers against the CSV ------------------------------------------------------------


def _csv_samples() -> list[dict]:
    with open(TRACES, newline="") as handle:
        return [
            {
                "model": r["model"],
                "task": "math" if r["dataset"].startswith("aime") else "science",
                "problem": (r["dataset"], r["problem_id"]),
                "tokens": int(r["completion_tokens"]),
                "correct": r["correct"] == "1",
            }
            for r in csv.DictReader(handle)
        ]


@pytest.fixture(scope="module")
def samples() -> list[dict]:
    return _csv_samples()


@pytest.fixture(scope="module")
def fitted() -> dict:
    return fit_profiles([str(TRACES)], str(PRICES))


@pytest.fixture(scope="module")
def profiles(fitted: dict) -> Profiles:
    return Profiles.from_dict(json.loads(json.dumps(fitted)))


def _reasoning_models() -> set[str]:
    with open(PRICES, newline="") as handle:
        return {r["trace_model"] for r in csv.DictReader(handle) if r["reasoning"] == "yes"}


def test_r1_math_matches_the_csv_and_the_readme(samples: list[dict], profiles: Profiles) -> None:
    r1 = [s for s in samples if s["model"] == "R1" and s["task"] == "math"]
    right = [s["tokens"] for s in r1 if s["correct"]]
    wrong = [s["tokens"] for s in r1 if not s["correct"]]
    row = profiles.row("R1", "math")
    assert row is not None and row.difficulty is None
    assert row.n == len(r1) == 360
    assert row.accuracy == pytest.approx(len(right) / len(r1), abs=1e-4)
    assert row.tokens_correct_mean == pytest.approx(statistics.fmean(right), abs=0.5)
    assert row.tokens_wrong_mean == pytest.approx(statistics.fmean(wrong), abs=0.5)
    assert row.tokens.mean == pytest.approx(statistics.fmean(right + wrong), abs=0.5)
    assert row.tokens.max == max(right + wrong)
    assert row.tokens.std == pytest.approx(statistics.stdev(right + wrong), abs=0.5)
    # README: "DeepSeek-R1 on AIME averages about 7.0k tokens when right and 17.8k when wrong"
    assert row.tokens_correct_mean == pytest.approx(7000, abs=100)
    assert row.tokens_wrong_mean == pytest.approx(17800, abs=100)


def test_every_task_row_matches_the_csv(samples: list[dict], profiles: Profiles) -> None:
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for s in samples:
        groups[(s["model"], s["task"])].append(s)
    assert len(groups) == 16
    for (model, task), group in groups.items():
        row = profiles.row(model, task)
        assert row is not None, (model, task)
        assert row.n == len(group)
        assert row.accuracy == pytest.approx(sum(s["correct"] for s in group) / len(group), abs=1e-4)
        tokens = sorted(s["tokens"] for s in group)
        assert row.tokens.p50 == pytest.approx(statistics.median(tokens), abs=0.5)
        assert row.tokens.p50 <= row.tokens.p90 <= row.tokens.p95 <= row.tokens.p99 <= row.tokens.max


def test_correct_samples_are_shorter_for_every_reasoning_model(samples: list[dict], profiles: Profiles) -> None:
    checked = 0
    for model in sorted(_reasoning_models()):
        for task in ("math", "science"):
            group = [s for s in samples if s["model"] == model and s["task"] == task]
            right = [s["tokens"] for s in group if s["correct"]]
            wrong = [s["tokens"] for s in group if not s["correct"]]
            if len(right) < 20 or len(wrong) < 20:
                continue
            assert statistics.fmean(right) < statistics.fmean(wrong), (model, task)
            row = profiles.row(model, task)
            assert row is not None and row.tokens_correct_mean is not None and row.tokens_wrong_mean is not None
            assert row.tokens_correct_mean < row.tokens_wrong_mean, (model, task)
            assert row.tokens_correct is not None and row.tokens_wrong is not None
            assert row.tokens_correct.p90 < row.tokens_wrong.p90, (model, task)
            checked += 1
    assert checked == 12  # six reasoning models, two tasks each


def test_difficulty_is_pooled_over_models(samples: list[dict], profiles: Profiles) -> None:
    per_problem: dict[tuple[str, str], list[bool]] = defaultdict(list)
    for s in samples:
        per_problem[s["problem"]].append(s["correct"])

    def level(problem: tuple[str, str]) -> str:
        rate = sum(per_problem[problem]) / len(per_problem[problem])
        return "easy" if rate >= 0.75 else "hard" if rate < 0.35 else "medium"

    for model in ("R1", "Deepseek"):
        for task in ("math", "science"):
            total = 0
            for difficulty in ("easy", "medium", "hard"):
                group = [
                    s for s in samples
                    if s["model"] == model and s["task"] == task and level(s["problem"]) == difficulty
                ]  # fmt: skip
                row = profiles.row(model, task, difficulty)
                assert row is not None and row.difficulty == difficulty
                assert row.n == len(group)
                assert row.accuracy == pytest.approx(sum(s["correct"] for s in group) / len(group), abs=1e-4)
                total += row.n
            assert total == profiles.row(model, task).n  # type: ignore[union-attr]
    # the same problems are "hard" for every model, so hard rows have equal sizes
    assert len({profiles.row(m, "math", "hard").n for m in profiles.model_names()}) == 1  # type: ignore[union-attr]
    easy, hard = profiles.row("R1", "math", "easy"), profiles.row("R1", "math", "hard")
    assert easy.accuracy > 0.9 > 0.3 > hard.accuracy  # type: ignore[union-attr]


def test_r1_math_failure_curve_and_threshold(samples: list[dict], profiles: Profiles) -> None:
    r1 = [s for s in samples if s["model"] == "R1" and s["task"] == "math"]
    row = profiles.row("R1", "math")
    assert row is not None and len(row.failure_curve) >= 10
    lengths = [L for L, _ in row.failure_curve]
    assert lengths == sorted(set(lengths))
    ps = [p for _, p in row.failure_curve]
    assert all(a >= b for a, b in zip(ps, ps[1:]))  # isotonic: never rises with length
    for L, p in row.failure_curve:
        longer = [s for s in r1 if s["tokens"] > L]
        # the support rule: 30 samples from 5 problems longer than every point
        assert len(longer) >= 30 and len({s["problem"] for s in longer}) >= 5
        # the smoothed curve stays close to the raw P(correct | longer than L)
        assert p == pytest.approx(sum(s["correct"] for s in longer) / len(longer), abs=0.05)
    threshold = row.failure_threshold_tokens
    assert threshold is not None
    below = [L for L, p in row.failure_curve if p < 0.1]
    assert threshold == below[0]
    beyond = [s["correct"] for s in r1 if s["tokens"] > threshold]
    assert sum(beyond) / len(beyond) < 0.1
    # the README's knee: P(correct) collapses somewhere past ~11k tokens, well before 25k
    assert 11_000 <= threshold <= 25_000
    assert row.threshold_ci is not None and row.threshold_ci[0] <= threshold <= row.threshold_ci[1]


def test_no_threshold_where_the_model_never_succeeds(profiles: Profiles) -> None:
    row = profiles.row("Deepseek", "math", "hard")
    assert row is not None and row.accuracy == 0.0
    assert row.failure_threshold_tokens is None
    assert row.tokens_correct_mean is None and row.tokens_correct is None


def test_models_carry_prices_and_reasoning_flag(profiles: Profiles) -> None:
    prices = read_prices(PRICES)
    assert set(profiles.models) == set(profiles.model_names()) == set(prices)
    assert profiles.models["R1"].output_usd_per_mtok == 0.42 and profiles.models["R1"].reasoning
    assert profiles.models["Deepseek"].reasoning is False
    assert {m for m, info in profiles.models.items() if info.reasoning} == _reasoning_models()


def test_fit_is_deterministic(fitted: dict) -> None:
    assert fit_profiles([str(TRACES)], str(PRICES)) == fitted


def test_shipped_default_profile_is_current(fitted: dict) -> None:
    """profiles/default.json must be exactly what the build script makes from today's data."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_default_profile", SCRIPT)
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    eureka = str(SHARED) if script.SHIP_STUDY_ROWS else None
    built = fitted if eureka is None else script.build([str(TRACES)], str(PRICES), eureka)
    shipped = json.loads(DEFAULT_PROFILE.read_text())
    assert shipped == json.loads(json.dumps(built)), "rerun scripts/build_default_profile.py"
    trace_entry = next(p for p in shipped["provenance"] if p["file"] == "reasoning_traces.csv")
    assert trace_entry["sha256"] == hashlib.sha256(TRACES.read_bytes()).hexdigest()
    loaded = Profiles.load(DEFAULT_PROFILE)
    plain = [r for r in loaded.rows if r.strategy is None and r.sources == ("reasoning_traces.csv",)]
    assert len(plain) == 64
    assert any(r.strategy is not None for r in loaded.rows)  # replayed strategy rows ship too
    assert loaded.row("R1", "math", "hard").difficulty == "hard"  # type: ignore[union-attr]
