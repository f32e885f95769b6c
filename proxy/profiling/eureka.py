"""Profile rows for the API models of Microsoft Research's inference-time scaling study.

"Inference-Time Scaling for Complex Tasks: Where We Stand and What Lies Ahead" (arXiv
2504.00294) publishes average pass@1 accuracy (5 runs) of nine models on its benchmarks
(`eureka_accuracy.csv`) and GPQA-Diamond's per-domain average output tokens
(`eureka_gpqa_tokens.csv`). These are published aggregates, not samples, so the rows carry
only what the study gives:

* **accuracy** per (model, task), as a fraction. Benchmarks map to tasks as DESIGN.md's
  Vocabulary says. Where several benchmarks map to one task (math: AIME 2025 and Omni-MATH;
  spatial: Maze and SpatialMap) the row's accuracy is their unweighted mean, and each
  benchmark's own number is kept in the row's `benchmarks`. A benchmark enters the mean only
  if the study reports it for every model it reports that task for (AIME 1983-2024 is given
  for three models only; mixing it into those three would make their math rows incomparable
  with the other six), so it stays in `benchmarks` but not in `accuracy`.
* **tokens**: only `mean`, and only for science, where the study gives per-domain averages:
  the question-weighted mean over the domains. No quantiles, no std: the study does not give
  them, and a guess would look exactly like a measurement downstream. Rows of other tasks have
  no `tokens` at all.
* **n**: the number of questions, where the study gives it (GPQA-Diamond's per-domain counts,
  198 in all); absent elsewhere. The study averaged 5 runs per question.
* **certainty** of every number, as the data file records it (`text`, `figure`,
  `figure+derived`, `figure-uncertain`); derived numbers say so.
* **models**: prices from litellm's bundled price map (read as a file, not imported) under
  one public provider's id per model, listed below, and `reasoning` as the study classes the
  models (it compares "conventional" and "reasoning" models, and capped the conventional ones
  at 4,096 output tokens). Models without an entry in the map get no `models` entry, and the
  provenance says so.
"""

from __future__ import annotations

import csv
import hashlib
from collections import defaultdict
from pathlib import Path
from typing import Any

from proxy.budget.pricing import litellm_price_map
from proxy.profiling.tracedata import TraceDataError, task_for_dataset

__all__ = ["ACCURACY_FILE", "TOKENS_FILE", "eureka_rows"]

ACCURACY_FILE = "eureka_accuracy.csv"
TOKENS_FILE = "eureka_gpqa_tokens.csv"
STUDY = (
    "Microsoft Research, 'Inference-Time Scaling for Complex Tasks: Where We Stand and What Lies Ahead' "
    "(arXiv 2504.00294)"
)
_CERTAINTIES = {"text", "figure", "figure+derived", "figure-uncertain"}

#: the study's model name -> (litellm price-map key, reasoning model per the study)
STUDY_MODELS: dict[str, tuple[str | None, bool]] = {
    "o1": ("o1", True),
    "o3-mini-high": ("o3-mini", True),  # "high" is a reasoning-effort setting, same price
    "deepseek-r1": ("deepseek/deepseek-reasoner", True),  # as the traces' R1
    "claude-3.7-sonnet-thinking": ("anthropic.claude-3-7-sonnet-20250219-v1:0", True),
    "gemini-2-flash-thinking": (None, True),  # experimental; not in litellm's map
    "gpt-4o": ("gpt-4o", False),
    "claude-3.5-sonnet": ("anthropic.claude-3-5-sonnet-20241022-v2:0", False),
    "gemini-2.0-pro": (None, False),  # experimental; not in litellm's map
    "llama-3.1-405b": ("meta.llama3-1-405b-instruct-v1:0", False),
}


def eureka_rows(directory: str | Path) -> tuple[list[dict[str, Any]], dict[str, Any], list[dict[str, Any]]]:
    """(rows, models, provenance entries) from the study's two CSV files in `directory`.

    Raises `TraceDataError` (a `ConfigError`) naming file, line and column for a bad file, or a
    model the study table has that `STUDY_MODELS` does not know (its reasoning flag would be a
    guess).
    """
    base = Path(directory)
    acc_path, tok_path = base / ACCURACY_FILE, base / TOKENS_FILE
    accuracy = _read_accuracy(acc_path)
    gpqa = _read_gpqa_tokens(tok_path)

    # which benchmarks the study reports per task, and for which models
    per_task: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for model, bench in accuracy:
        per_task[_task(bench)][bench].add(model)
    models_of_task = {task: set().union(*benches.values()) for task, benches in per_task.items()}
    pooled = {
        task: sorted(b for b, ms in benches.items() if ms == models_of_task[task])
        for task, benches in per_task.items()
    }

    rows: list[dict[str, Any]] = []
    for model in sorted({m for m, _ in accuracy}):
        for task in sorted(per_task):
            benches = {b: accuracy[(model, b)] for b in sorted(per_task[task]) if (model, b) in accuracy}
            used = [b for b in pooled[task] if b in benches]
            if not used:
                continue
            mean = sum(benches[b][0] for b in used) / len(used) / 100.0
            row: dict[str, Any] = {"model": model, "task": task, "difficulty": None, "accuracy": round(mean, 4)}
            certainty: dict[str, str] = {
                "accuracy": benches[used[0]][1] if len(used) == 1 else "derived: mean of " + ", ".join(
                    f"{b} ({benches[b][1]})" for b in used)
            }
            if task == "science" and model in gpqa:
                domains = gpqa[model]
                questions = sum(q for q, _ in domains.values())
                row["n"] = questions
                mean_tokens = sum(q * t for q, t in domains.values()) / questions
                row["tokens"] = {"mean": int(round(mean_tokens))}
                certainty["n"] = f"derived: sum of the questions per domain in {TOKENS_FILE}"
                certainty["tokens.mean"] = (
                    f"derived: question-weighted mean of the per-domain averages in {TOKENS_FILE}"
                )
            row["benchmarks"] = {
                b: {"accuracy": round(v / 100.0, 4), "certainty": c, "in_accuracy": b in used}
                for b, (v, c) in benches.items()
            }
            row["certainty"] = certainty
            row["sources"] = [ACCURACY_FILE] + ([TOKENS_FILE] if "tokens" in row else [])
            rows.append(row)

    prices = litellm_price_map()
    models: dict[str, Any] = {}
    unpriced: list[str] = []
    price_keys: dict[str, str] = {}
    for name in sorted({r["model"] for r in rows}):
        if name not in STUDY_MODELS:
            raise TraceDataError(
                f"{acc_path}: model {name!r} is not one of the study's models this build knows "
                f"({', '.join(sorted(STUDY_MODELS))}); add it to STUDY_MODELS with its reasoning flag"
            )
        key, reasoning = STUDY_MODELS[name]
        entry = prices.get(key) if key else None
        if not isinstance(entry, dict) or entry.get("input_cost_per_token") is None:
            unpriced.append(name)
            continue
        price_keys[name] = key  # type: ignore[assignment]
        models[name] = {
            "price": {
                "input_usd_per_mtok": _per_mtok(entry["input_cost_per_token"]),
                "output_usd_per_mtok": _per_mtok(entry.get("output_cost_per_token") or 0.0),
            },
            "reasoning": reasoning,
        }

    provenance = [
        {
            "file": ACCURACY_FILE,
            "sha256": _sha256(acc_path),
            "kind": "published table",
            "source": STUDY + ": average pass@1 accuracy over 5 runs, per model and benchmark",
            "contributed": "rows (study models): accuracy as a fraction; per-benchmark numbers in 'benchmarks'",
            "method": {
                "task_mapping": "DESIGN.md Vocabulary (aime*/omni-math -> math, gpqa* -> science, ...)",
                "pooled_benchmarks": pooled,
                "pooling": "unweighted mean of the benchmarks the study reports for every model of that task",
                "certainty": "per number, in each row's 'certainty' and 'benchmarks' (text, figure, "
                "figure+derived, figure-uncertain)",
                "absent": "n (question counts are not given) and tokens except for science",
            },
        },
        {
            "file": TOKENS_FILE,
            "sha256": _sha256(tok_path),
            "kind": "published table",
            "source": STUDY + ": GPQA-Diamond average output tokens and questions per domain",
            "contributed": "science rows of the study models: n (questions) and tokens.mean "
            "(question-weighted over domains); no quantiles or std (not published)",
        },
        {
            "kind": "prices",
            "source": "litellm's bundled model_prices_and_context_window_backup.json",
            "contributed": "models (study models): price per million input/output tokens; reasoning "
            "flag as the study classes each model",
            "price_map_keys": price_keys,
            "unpriced": {
                name: "no entry in litellm's price map: rows kept, no 'models' entry" for name in unpriced
            },
        },
    ]
    return rows, models, provenance


def _task(benchmark: str) -> str:
    task = task_for_dataset(benchmark)
    assert task is not None  # checked while reading
    return task


def _per_mtok(per_token: float) -> float:
    return round(float(per_token) * 1e6, 6)


def _read_accuracy(path: Path) -> dict[tuple[str, str], tuple[float, str]]:
    out: dict[tuple[str, str], tuple[float, str]] = {}
    for line, row in _csv_rows(path, ("model", "benchmark", "accuracy_pct", "certainty")):
        model, bench, certainty = row["model"].strip(), row["benchmark"].strip(), row["certainty"].strip()
        if not model:
            raise TraceDataError(f"{path}: line {line}, column 'model': empty")
        if task_for_dataset(bench) is None:
            raise TraceDataError(f"{path}: line {line}, column 'benchmark': no task maps to {bench!r}")
        if certainty not in _CERTAINTIES:
            raise TraceDataError(
                f"{path}: line {line}, column 'certainty': {certainty!r}, expected one of {', '.join(sorted(_CERTAINTIES))}"
            )
        value = _number(path, line, "accuracy_pct", row["accuracy_pct"], hi=100.0)
        if (model, bench) in out:
            raise TraceDataError(f"{path}: line {line}: ({model}, {bench}) listed twice")
        out[(model, bench)] = (value, certainty)
    if not out:
        raise TraceDataError(f"{path}: no rows")
    return out


def _read_gpqa_tokens(path: Path) -> dict[str, dict[str, tuple[int, float]]]:
    out: dict[str, dict[str, tuple[int, float]]] = defaultdict(dict)
    for line, row in _csv_rows(path, ("model", "domain", "questions", "avg_output_tokens")):
        model, domain = row["model"].strip(), row["domain"].strip()
        if not model or not domain:
            raise TraceDataError(f"{path}: line {line}: empty model or domain")
        questions = _number(path, line, "questions", row["questions"])
        if not questions.is_integer() or questions < 1:
            raise TraceDataError(f"{path}: line {line}, column 'questions': must be a positive integer")
        tokens = _number(path, line, "avg_output_tokens", row["avg_output_tokens"])
        if domain in out[model]:
            raise TraceDataError(f"{path}: line {line}: ({model}, {domain}) listed twice")
        out[model][domain] = (int(questions), tokens)
    return dict(out)


def _csv_rows(path: Path, required: tuple[str, ...]):
    try:
        handle = open(path, newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise TraceDataError(f"{path}: cannot read: {exc}") from exc
    with handle:
        reader = csv.DictReader(handle)
        header = [h.strip() for h in reader.fieldnames or []]
        if not header:
            raise TraceDataError(f"{path}: empty file (expected a header row)")
        missing = [c for c in required if c not in header]
        if missing:
            raise TraceDataError(f"{path}: line 1: missing column(s) {', '.join(missing)}")
        reader.fieldnames = header
        for row in reader:
            if any(v is None for v in row.values()) or None in row:
                raise TraceDataError(f"{path}: line {reader.line_num}: wrong number of fields")
            yield reader.line_num, row


def _number(path: Path, line: int, column: str, text: str, hi: float | None = None) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise TraceDataError(f"{path}: line {line}, column {column!r}: not a number: {text!r}") from None
    if not (value >= 0.0) or value == float("inf") or (hi is not None and value > hi):
        bound = f"[0, {hi}]" if hi is not None else ">= 0"
        raise TraceDataError(f"{path}: line {line}, column {column!r}: must be in {bound}, got {text!r}")
    return value


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
