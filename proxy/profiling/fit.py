"""Fitting profile tables from per-sample traces (and the published study tables).

`fit_profiles()` turns trace files (and optionally a price CSV and the Microsoft study's
tables) into the profile document that `proxy.routing.profiles.Profiles` loads. It is an
offline step, the one behind `pareto-proxy fit` and `scripts/build_default_profile.py`: the
shipped `profiles/default.json` is produced once and committed, so the running proxy never
reads the raw traces.

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
  the planner what to expect once it is known (unknown difficulty: the task-level row).
* **Token statistics** are over `completion_tokens` (reasoning included): mean, sample
  standard deviation (ddof=1), p50/p90/p95/p99 (numpy's linear interpolation) and max. The
  same stats for correct and for wrong samples separately, when that class has at least
  `MIN_CLASS_SAMPLES` samples; their means whenever the class is non-empty.
* **Failure curve, threshold, confidence interval, minimum sample size**: see
  `proxy.profiling.curves` (isotonic regression, a cluster bootstrap over problems) and
  `proxy.routing.cutoffs` (the threshold rule the planner shares).
* **Holdout**: `holdout_fraction` holds back that share of the *problems* of each dataset
  (never some samples of a problem: its samples are correlated, and a problem seen in fitting
  would flatter any evaluation on it), chosen with a seeded generator per dataset, written as a
  trace CSV for `replay`, and left out of every statistic. The provenance lists the held-out
  problems.
* **Strategy rows** come from replaying recorded samples (`proxy.profiling.simulate`).
* **Study rows** (`eureka_dir`): `proxy.profiling.eureka`.

Deterministic: seeded randomness only, rows in a fixed order, numbers rounded the same way each
run (tokens to integers, probabilities to 4 decimals), so rebuilding the shipped file from the
same inputs gives the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from proxy.config import DIFFICULTIES
from proxy.errors import ConfigError
from proxy.profiling.curves import fit_failure_curve, method_description
from proxy.profiling.proxytraces import PROXY_DATASET
from proxy.profiling.tracedata import (
    TraceTable,
    concat_tables,
    read_prices,
    read_traces,
    select,
    write_traces,
)
from proxy.routing.cutoffs import DEFAULT_FAILURE_LEVEL

__all__ = [
    "FORMAT_VERSION",
    "Progress",
    "difficulty_of_pass_rate",
    "fit_profiles",
    "split_by_problem",
    "to_json_text",
    "write_profile",
]

FORMAT_VERSION = "1"
#: pass-rate bin edges for difficulty (pooled over all models): easy >= 0.75, hard < 0.35
EASY_MIN_PASS_RATE = 0.75
HARD_BELOW_PASS_RATE = 0.35
MIN_ROW_SAMPLES = 8
MIN_CLASS_SAMPLES = 5
FAILURE_LEVEL = DEFAULT_FAILURE_LEVEL
_PROB_DECIMALS = 4

#: progress(stage, done, total): called as work advances (the CLI draws a bar from it)
Progress = Callable[[str, int, int], None]


def difficulty_of_pass_rate(rate: float) -> str:
    """The difficulty bin of a problem with this pooled pass rate (see module docstring)."""
    if rate >= EASY_MIN_PASS_RATE:
        return "easy"
    if rate < HARD_BELOW_PASS_RATE:
        return "hard"
    return "medium"


def fit_profiles(
    csv_paths: list[str],
    prices_csv: str | None = None,
    *,
    eureka_dir: str | None = None,
    holdout_fraction: float | None = None,
    holdout_out: str | None = None,
    seed: int = 0,
    strategies: bool = True,
    progress: Progress | None = None,
) -> dict:
    """Fit the profile document (DESIGN.md, "Profiles").

    `csv_paths`: per-sample trace CSVs or the proxy's own JSONL traces (`*.jsonl`, see
    `proxy.profiling.proxytraces`). `prices_csv` supplies `models` (price and the reasoning flag)
    for the trace models; without it they get no `models` entry rather than a guessed one.
    `eureka_dir` adds the study's rows and models. `holdout_fraction` (with `holdout_out`) holds
    problems back (see the module docstring); `seed` seeds that split and the bootstrap.
    `strategies` adds the replayed strategy rows.

    Raises `ConfigError` (a `TraceDataError` for bad files, naming file, line and column) when
    there are no samples, a sample appears in two files, a priced model lacks its reasoning flag,
    the holdout arguments do not make sense, or two sources claim the same row.
    """
    report = progress or (lambda stage, done, total: None)
    if not csv_paths:
        raise ConfigError("fit: no trace files given")
    tables = [_read_any(p) for p in csv_paths]
    _check_no_cross_file_duplicates(tables)
    table = concat_tables(tables)
    if len(table) == 0:
        raise ConfigError(f"fit: no samples in {', '.join(map(str, csv_paths))}")
    file_of_sample = np.concatenate([np.full(len(t), Path(t.source).name) for t in tables])

    provenance: list[dict[str, Any]] = []
    held_entry: dict[str, Any] | None = None
    if holdout_fraction is not None or holdout_out is not None:
        if holdout_fraction is None or holdout_out is None:
            raise ConfigError("fit: --holdout-fraction and --holdout-out go together")
        if (table.dataset == PROXY_DATASET).any():
            raise ConfigError("fit: --holdout-fraction needs per-sample CSV traces; JSONL traces cannot be "
                              "written back as a trace CSV (their requests map to no dataset)")
        held = split_by_problem(table, holdout_fraction, seed)
        write_traces(select(table, held), holdout_out)
        held_entry = _holdout_provenance(table, held, holdout_fraction, holdout_out, seed)
        table, file_of_sample = select(table, ~held), file_of_sample[~held]

    difficulty = _difficulty_per_sample(table)
    problems = table.problem_keys()
    cells = [
        (model, task)
        for model in sorted(set(table.model.tolist()))
        for task in sorted(set(table.task[table.model == model].tolist()))
    ]
    rows: list[dict[str, Any]] = []
    for done, (model, task) in enumerate(cells):
        report("rows", done, len(cells))
        in_task = (table.model == model) & (table.task == task)
        for level in (None, *DIFFICULTIES):
            mask = in_task if level is None else in_task & (difficulty == level)
            if int(mask.sum()) < MIN_ROW_SAMPLES:
                continue
            row = _row(model, task, level, table.completion_tokens[mask], table.correct[mask],
                       problems[mask], seed=seed)
            row["sources"] = sorted(set(file_of_sample[mask].tolist()))
            rows.append(row)
    report("rows", len(cells), len(cells))

    profiled = sorted({r["model"] for r in rows})
    models: dict[str, Any] = {}
    provenance += [_trace_provenance(t, table, seed) for t in tables]
    if held_entry is not None:
        provenance.append(held_entry)
    prices = read_prices(prices_csv) if prices_csv is not None else {}
    if prices_csv is not None:
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

    replayable = table.dataset != PROXY_DATASET  # one answer per live request: nothing to replay
    if strategies and replayable.any():
        report("strategy rows (replay)", 0, 1)
        added, entry = _strategy_rows(select(table, replayable), prices, rows, difficulty[replayable],
                                      file_of_sample[replayable])
        rows += added
        if entry is not None:
            provenance.append(entry)
        report("strategy rows (replay)", 1, 1)

    if eureka_dir is not None:
        from proxy.profiling.eureka import eureka_rows

        report("study tables", 0, 1)
        study_rows, study_models, study_provenance = eureka_rows(eureka_dir)
        clash = sorted({r["model"] for r in study_rows} & (set(profiled) | set(models)))
        if clash:
            raise ConfigError(
                f"fit: model name(s) {', '.join(clash)} appear both in the traces and in the study tables; "
                "rename one source's models so rows stay unambiguous"
            )
        rows += study_rows
        models.update(study_models)
        provenance += study_provenance
        report("study tables", 1, 1)
    return {"version": FORMAT_VERSION, "provenance": provenance, "models": models, "rows": rows}


def split_by_problem(table: TraceTable, fraction: float, seed: int) -> np.ndarray:
    """A mask of the held-out samples: `fraction` of each dataset's problems, all their samples.

    Deterministic: each dataset's problems are sorted and permuted by a generator seeded with
    (`seed`, the dataset's name), so one dataset's split does not change when another file is
    added. Raises `ConfigError` for a fraction outside (0, 1) or one that holds out nothing or
    everything.
    """
    if not (0.0 < fraction < 1.0):
        raise ConfigError(f"fit: --holdout-fraction must be between 0 and 1 (exclusive), got {fraction}")
    held = np.zeros(len(table), dtype=bool)
    for dataset in sorted(set(table.dataset.tolist())):
        in_set = table.dataset == dataset
        ids = sorted(set(table.problem_id[in_set].tolist()), key=_natural)
        count = int(round(fraction * len(ids)))
        rng = np.random.default_rng([int(seed), zlib.crc32(dataset.encode("utf-8"))])
        chosen = {ids[i] for i in rng.permutation(len(ids))[:count]}
        held |= in_set & np.isin(table.problem_id, list(chosen))
    if not held.any() or held.all():
        kept = "nothing" if not held.any() else "every problem"
        raise ConfigError(f"fit: --holdout-fraction {fraction} holds out {kept}; choose another fraction")
    return held


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


def write_profile(profile: dict, path: str | Path) -> None:
    """Write `profile` as JSON text (`to_json_text`); `ConfigError` if the file cannot be written."""
    out = Path(path)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(to_json_text(profile), encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"fit: cannot write {out}: {exc}") from exc


# -- statistics --------------------------------------------------------------------------------


def _row(
    model: str,
    task: str,
    difficulty: str | None,
    tokens: np.ndarray,
    correct: np.ndarray,
    problems: np.ndarray | None = None,
    *,
    seed: int = 0,
) -> dict[str, Any]:
    """One strategy-less row. `problems` (each sample's problem) drives the support rule and the
    bootstrap; without it every sample counts as its own problem."""
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
    if problems is None:
        problems = np.arange(tokens.size).astype(str)
    fitted = fit_failure_curve(tokens, correct, problems, level=FAILURE_LEVEL, seed=seed,
                               key=f"{model}/{task}/{difficulty}")
    row["failure_curve"] = fitted.curve
    if fitted.threshold is not None:
        row["failure_threshold_tokens"] = fitted.threshold
        if fitted.ci is not None:
            row["threshold_ci"] = list(fitted.ci)
        row["threshold_bootstrap"] = fitted.bootstrap
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


def _difficulty_per_sample(table: TraceTable) -> np.ndarray:
    """Each sample's problem difficulty, from the problem's pass rate over all models.

    Samples of the proxy's own traces get "" (no bin): one answer per request is no pass rate,
    so they count in task-level rows only.
    """
    if len(table) == 0:
        return np.array([], dtype=np.str_)
    _, inverse = np.unique(table.problem_keys(), return_inverse=True)
    inverse = inverse.reshape(-1)
    passes = np.bincount(inverse, weights=table.correct.astype(np.float64))
    counts = np.bincount(inverse)
    labels = np.array([difficulty_of_pass_rate(float(r)) for r in passes / counts], dtype="<U6")
    out = labels[inverse]
    out[table.dataset == PROXY_DATASET] = ""
    return out


def _strategy_rows(
    table: TraceTable, prices: dict, rows: list[dict[str, Any]], difficulty: np.ndarray, files: np.ndarray
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Strategy rows replayed from the fitted samples (`proxy.profiling.simulate`).

    The cut configurations cut at the task-level thresholds just fitted (`rows`), and the
    difficulty bins are the ones of this fit, so strategy rows and plain rows agree.
    """
    from proxy.profiling.grid import DEFAULT_GRID, DEFAULT_SEEDS, strategy_rows

    added = strategy_rows(table, prices, rows=rows, difficulty=difficulty)
    for row in added:
        mask = (table.model == row["model"]) & (table.task == row["task"])
        row["sources"] = sorted(set(files[mask].tolist()))
    if not added:
        return [], None
    entry = {
        "kind": "replay",
        "contributed": "strategy rows: accuracy and billed tokens per request of static plans, measured by "
        "replaying the fitted samples (proxy.profiling.simulate)",
        "configurations": [c.name for c in DEFAULT_GRID],
        "seeds": len(DEFAULT_SEEDS),
        "verifier": "none",
        "cutoff": "the task-level failure_threshold_tokens of the same fit",
        "n": "problems",
    }
    return added, entry


# -- files -------------------------------------------------------------------------------------


def _read_any(path: str) -> TraceTable:
    if str(path).endswith(".jsonl"):
        from proxy.profiling.proxytraces import read_proxy_traces

        return read_proxy_traces(path)
    return read_traces(path)


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


def _natural(problem_id: str) -> tuple[int, int | str]:
    """Numeric ids in numeric order, others after them in string order."""
    return (0, int(problem_id)) if problem_id.isdigit() else (1, problem_id)


def _holdout_provenance(
    table: TraceTable, held: np.ndarray, fraction: float, out: str, seed: int
) -> dict[str, Any]:
    keys = sorted(set(table.problem_keys()[held].tolist()))
    per_dataset: dict[str, list[str]] = {}
    for key in keys:
        dataset, _, pid = key.partition("/")
        per_dataset.setdefault(dataset, []).append(pid)
    return {
        "file": Path(out).name,
        "sha256": _sha256(out),
        "kind": "holdout",
        "contributed": "nothing: these problems were held out of every row, for evaluation (replay)",
        "split": "by problem (dataset, problem_id), per dataset, seeded",
        "fraction": fraction,
        "seed": seed,
        "samples": int(held.sum()),
        "problems": len(keys),
        "held_out": {d: sorted(ids, key=_natural) for d, ids in sorted(per_dataset.items())},
    }


def _trace_provenance(source: TraceTable, fitted: TraceTable, seed: int) -> dict[str, Any]:
    return {
        "file": Path(source.source).name,
        "sha256": _sha256(source.source),
        "kind": "traces",
        "contributed": (
            "rows: accuracy, token statistics, failure curves, thresholds with bootstrap intervals; "
            "difficulty bins from per-problem pass rates pooled over all models"
        ),
        "samples": _count_from(source, fitted),
        "models": sorted(set(source.model.tolist())),
        "datasets": sorted(set(source.dataset.tolist())),
        "method": {
            "difficulty": {
                "pooled_over": "all models in the fitted files",
                "easy_min_pass_rate": EASY_MIN_PASS_RATE,
                "hard_below_pass_rate": HARD_BELOW_PASS_RATE,
            },
            "min_row_samples": MIN_ROW_SAMPLES,
            "min_class_samples": MIN_CLASS_SAMPLES,
            "failure_curve": method_description(FAILURE_LEVEL, seed),
            "std_ddof": 1,
        },
    }


def _count_from(source: TraceTable, fitted: TraceTable) -> int:
    """How many samples of `source` were fitted (all, unless held out): matched by identity, which
    `_check_no_cross_file_duplicates` made unique across files."""
    ident = np.char.add(np.char.add(fitted.model, "|"), np.char.add(fitted.problem_keys(), "|"))
    ident = np.char.add(ident, fitted.sample_id.astype(str))
    mine = np.char.add(np.char.add(source.model, "|"), np.char.add(source.problem_keys(), "|"))
    mine = np.char.add(mine, source.sample_id.astype(str))
    return int(np.isin(mine, ident).sum())


def _sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise ConfigError(f"fit: cannot read {path}: {exc}") from exc
    return digest.hexdigest()
