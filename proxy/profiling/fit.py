"""Fitting profile tables from per-sample traces.

`fit_profiles()` turns trace CSVs (and optionally a price CSV) into the profile document that
`proxy.routing.profiles.Profiles` loads. It is an offline step: the shipped
`profiles/default.json` is produced once by `scripts/build_default_profile.py` and committed,
so the running proxy never reads the raw traces.

Method, and why:

* **Rows** per (model, task) and per (model, task, difficulty). A group needs at least
  `MIN_ROW_SAMPLES` samples (one problem's worth in the study's data); below that a quantile is
  just one sample.
* **Difficulty** is a property of the *problem*, not of the model: each problem (dataset,
  problem_id) is binned by its pass rate pooled over every sample of every model in the fitted
  files: easy >= 0.75, hard < 0.35, medium in between. Pooling keeps the bins comparable across
  models (a "hard" row means the same problems for R1 and for QwQ). It is an *offline* signal:
  it needs many answers to the same problem with known correctness, which a live request does
  not have; at run time difficulty comes from the client or a classifier and these rows tell
  the planner what to expect once it is known.
* **Token statistics** are over `completion_tokens` (reasoning included): mean, sample
  standard deviation (ddof=1), p50/p90/p95/p99 (numpy's linear interpolation) and max. The
  same stats for correct and for wrong samples separately, when that class has at least
  `MIN_CLASS_SAMPLES` samples; their means whenever the class is non-empty.
* **Failure curve**: on a grid of lengths L (the row's own length quantiles at steps of
  `CURVE_QUANTILE_STEP`), the empirical P(correct | completion_tokens > L), kept only where at
  least `MIN_LONGER_SAMPLES` samples are longer than L, so every point rests on real support.
* **Failure threshold**: the smallest L on the curve where P(correct | longer) is below
  `FAILURE_LEVEL`. Absent when the curve never drops below it, and also when its very first
  point is already below it: a row that almost never succeeds at any length has no length
  beyond which failure is *more* likely, so a cutoff learned from it would only cut everything.
* No `threshold_ci` yet (bootstrap intervals come later); absent, never made up.

Deterministic: no randomness, rows in a fixed order, numbers rounded the same way each run
(tokens to integers, probabilities to 4 decimals), so rebuilding the shipped file from the same
inputs gives the same bytes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from proxy.config import DIFFICULTIES
from proxy.errors import ConfigError
from proxy.profiling.tracedata import TraceTable, read_prices, read_traces

__all__ = ["FORMAT_VERSION", "difficulty_of_pass_rate", "fit_profiles", "to_json_text"]

FORMAT_VERSION = "1"
#: pass-rate bin edges for difficulty (pooled over all models): easy >= 0.75, hard < 0.35
EASY_MIN_PASS_RATE = 0.75
HARD_BELOW_PASS_RATE = 0.35
MIN_ROW_SAMPLES = 8
MIN_CLASS_SAMPLES = 5
MIN_LONGER_SAMPLES = 20
CURVE_QUANTILE_STEP = 0.025
FAILURE_LEVEL = 0.1
_PROB_DECIMALS = 4


def difficulty_of_pass_rate(rate: float) -> str:
    """The difficulty bin of a problem with this pooled pass rate (see module docstring)."""
    if rate >= EASY_MIN_PASS_RATE:
        return "easy"
    if rate < HARD_BELOW_PASS_RATE:
        return "hard"
    return "medium"


def fit_profiles(csv_paths: list[str], prices_csv: str | None) -> dict:
    """Fit the profile document (DESIGN.md, "Profiles") from trace CSVs and a price CSV.

    `prices_csv` supplies `models` (price and the reasoning flag) for the models that have
    rows; without it `models` is empty rather than guessed. Raises `ConfigError` (a
    `TraceDataError` for bad files) when there are no samples, a sample appears in two files, or
    a priced model lacks its reasoning flag.
    """
    if not csv_paths:
        raise ConfigError("fit: no trace files given")
    tables = [read_traces(p) for p in csv_paths]
    _check_no_cross_file_duplicates(tables)
    table = _concat(tables)
    if len(table) == 0:
        raise ConfigError(f"fit: no samples in {', '.join(map(str, csv_paths))}")

    difficulty = _difficulty_per_sample(table)
    file_of_sample = np.concatenate([np.full(len(t), Path(t.source).name) for t in tables])
    rows: list[dict[str, Any]] = []
    for model in sorted(set(table.model.tolist())):
        in_model = table.model == model
        for task in sorted(set(table.task[in_model].tolist())):
            in_task = in_model & (table.task == task)
            for level in (None, *DIFFICULTIES):
                mask = in_task if level is None else in_task & (difficulty == level)
                if int(mask.sum()) < MIN_ROW_SAMPLES:
                    continue
                row = _row(model, task, level, table.completion_tokens[mask], table.correct[mask])
                row["sources"] = sorted(set(file_of_sample[mask].tolist()))
                rows.append(row)

    profiled = sorted({r["model"] for r in rows})
    models: dict[str, Any] = {}
    provenance: list[dict[str, Any]] = [_trace_provenance(t) for t in tables]
    if prices_csv is not None:
        prices = read_prices(prices_csv)
        for name in profiled:
            price = prices.get(name)
            if price is None:
                continue  # unpriced: absent, the planner falls back to the config's price
            if price.reasoning is None:
                raise ConfigError(f"fit: {prices_csv}: no 'reasoning' column, needed for model {name!r}")
            models[name] = {
                "price": {
                    "input_usd_per_mtok": price.input_usd_per_mtok,
                    "output_usd_per_mtok": price.output_usd_per_mtok,
                },
                "reasoning": price.reasoning,
            }
        provenance.append(
            {
                "file": Path(prices_csv).name,
                "sha256": _sha256(prices_csv),
                "kind": "prices",
                "contributed": "models: price per million input/output tokens and the reasoning flag",
                "models": sorted(models),
            }
        )
    return {"version": FORMAT_VERSION, "provenance": provenance, "models": models, "rows": rows}


def to_json_text(profile: dict) -> str:
    """The profile as JSON text with one row per line: readable, and diffs show whole rows."""
    head = {k: v for k, v in profile.items() if k != "rows"}
    lines = ["{"]
    for key, value in head.items():
        nested = json.dumps(value, indent=1).replace("\n", "\n ")
        lines.append(f" {json.dumps(key)}: {nested},")
    rows = ["  " + json.dumps(r, separators=(",", ":")) for r in profile.get("rows", [])]
    lines.append(' "rows": [')
    if rows:
        lines.append(",\n".join(rows))
    lines.append(" ]")
    lines.append("}")
    return "\n".join(lines) + "\n"


# -- statistics --------------------------------------------------------------------------------


def _row(
    model: str, task: str, difficulty: str | None, tokens: np.ndarray, correct: np.ndarray
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "model": model,
        "task": task,
        "difficulty": difficulty,
        "n": int(tokens.size),
        "accuracy": round(float(correct.mean()), _PROB_DECIMALS),
        "tokens": _token_stats(tokens),
    }
    for label, cls in (("correct", tokens[correct]), ("wrong", tokens[~correct])):
        if cls.size >= 1:
            row[f"tokens_{label}_mean"] = int(round(float(cls.mean())))
        if cls.size >= MIN_CLASS_SAMPLES:
            row[f"tokens_{label}"] = _token_stats(cls)
    curve = _failure_curve(tokens, correct)
    row["failure_curve"] = curve
    threshold = _failure_threshold(curve)
    if threshold is not None:
        row["failure_threshold_tokens"] = threshold
    return row


def _token_stats(tokens: np.ndarray) -> dict[str, int]:
    values = tokens.astype(np.float64)
    p50, p90, p95, p99 = np.percentile(values, [50, 90, 95, 99])
    std = float(values.std(ddof=1)) if values.size > 1 else 0.0
    return {
        "mean": int(round(float(values.mean()))),
        "std": int(round(std)),
        "p50": int(round(float(p50))),
        "p90": int(round(float(p90))),
        "p95": int(round(float(p95))),
        "p99": int(round(float(p99))),
        "max": int(values.max()),
    }


def _failure_curve(tokens: np.ndarray, correct: np.ndarray) -> list[list[float]]:
    """[[L, P(correct | tokens > L)], ...] on the row's length quantiles, with enough support."""
    qs = np.arange(0.0, 1.0, CURVE_QUANTILE_STEP)
    grid = sorted({int(round(float(x))) for x in np.quantile(tokens.astype(np.float64), qs)})
    curve: list[list[float]] = []
    for length in grid:
        longer = tokens > length
        count = int(longer.sum())
        if count < MIN_LONGER_SAMPLES:
            break  # the grid is increasing, so support only shrinks from here
        curve.append([length, round(float(correct[longer].mean()), _PROB_DECIMALS)])
    return curve


def _failure_threshold(curve: list[list[float]]) -> int | None:
    if not curve or curve[0][1] < FAILURE_LEVEL:
        return None
    for length, p in curve:
        if p < FAILURE_LEVEL:
            return int(length)
    return None


def _difficulty_per_sample(table: TraceTable) -> np.ndarray:
    """Each sample's problem difficulty, from the problem's pass rate over all models."""
    _, inverse = np.unique(table.problem_keys(), return_inverse=True)
    inverse = inverse.reshape(-1)
    passes = np.bincount(inverse, weights=table.correct.astype(np.float64))
    counts = np.bincount(inverse)
    labels = np.array([difficulty_of_pass_rate(float(r)) for r in passes / counts], dtype=np.str_)
    return labels[inverse]


# -- files -------------------------------------------------------------------------------------


def _concat(tables: list[TraceTable]) -> TraceTable:
    if len(tables) == 1:
        return tables[0]
    names = [
        "model", "dataset", "task", "problem_id", "sample_id", "completion_tokens",
        "finish_reason", "pred", "answer", "correct", "line",
    ]  # fmt: skip
    columns = {n: np.concatenate([getattr(t, n) for t in tables]) for n in names}
    return TraceTable(source=", ".join(t.source for t in tables), **columns)


def _check_no_cross_file_duplicates(tables: list[TraceTable]) -> None:
    """A sample in two files would count twice; refuse rather than guess which copy is right."""
    seen: dict[tuple[str, str, str, int], tuple[str, int]] = {}
    for t in tables:
        for i in range(len(t)):
            key = (str(t.model[i]), str(t.dataset[i]), str(t.problem_id[i]), int(t.sample_id[i]))
            first = seen.get(key)
            if first is not None and first[0] != t.source:
                raise ConfigError(
                    f"fit: sample {key} is in {first[0]} (line {first[1]}) and {t.source} (line {int(t.line[i])})"
                )
            seen.setdefault(key, (t.source, int(t.line[i])))


def _trace_provenance(table: TraceTable) -> dict[str, Any]:
    return {
        "file": Path(table.source).name,
        "sha256": _sha256(table.source),
        "kind": "traces",
        "contributed": (
            "rows: accuracy, token statistics, failure curves and thresholds; "
            "difficulty bins from per-problem pass rates pooled over all models"
        ),
        "samples": len(table),
        "models": sorted(set(table.model.tolist())),
        "datasets": sorted(set(table.dataset.tolist())),
        "method": {
            "difficulty": {
                "pooled_over": "all models in the fitted files",
                "easy_min_pass_rate": EASY_MIN_PASS_RATE,
                "hard_below_pass_rate": HARD_BELOW_PASS_RATE,
            },
            "min_row_samples": MIN_ROW_SAMPLES,
            "min_class_samples": MIN_CLASS_SAMPLES,
            "failure_curve": {
                "grid": f"row length quantiles at steps of {CURVE_QUANTILE_STEP}",
                "min_longer_samples": MIN_LONGER_SAMPLES,
            },
            "failure_level": FAILURE_LEVEL,
            "std_ddof": 1,
        },
    }


def _sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise ConfigError(f"fit: cannot read {path}: {exc}") from exc
    return digest.hexdigest()
