"""Reading per-sample trace tables (CSV) into numpy columns.

The format is the one of `../shared/data/reasoning_traces.csv` (DESIGN.md, "Traces"): one row
per generated sample with columns `model, dataset, problem_id, sample_id, completion_tokens,
finish_reason, pred, answer, correct`. Extra columns are ignored so richer exports still load.

Columns rather than row objects, because fitting and replay are group-bys and quantiles over
thousands of samples: numpy does those in one pass where a list of records would loop in
Python. `TraceTable.records()` gives row objects for the few callers that want them.

Bad input fails with `TraceDataError` naming the file, the line and the column, because a
profile fitted from a half-parsed file would be silently wrong and ship to every request.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from proxy.errors import ConfigError

__all__ = [
    "REQUIRED_COLUMNS",
    "PriceRow",
    "TraceDataError",
    "TraceSample",
    "TraceTable",
    "concat_tables",
    "read_prices",
    "read_traces",
    "select",
    "task_for_dataset",
    "write_traces",
]

REQUIRED_COLUMNS = (
    "model",
    "dataset",
    "problem_id",
    "sample_id",
    "completion_tokens",
    "finish_reason",
    "pred",
    "answer",
    "correct",
)

#: dataset prefixes that map to a task (DESIGN.md, "Vocabulary"): `aime2024`, `aime2025-i`, ...
_TASK_BY_PREFIX = (("aime", "math"), ("gpqa", "science"))
#: datasets whose whole name maps to a task
_TASK_BY_NAME = {
    "omni-math": "math",
    "ba-calendar": "planning",
    "3sat": "sat",
    "tsp": "tsp",
    "maze": "spatial",
    "spatialmap": "spatial",
}

_TRUE = {"1", "true", "yes"}
_FALSE = {"0", "false", "no"}


class TraceDataError(ConfigError):
    """A trace or price file that cannot be used; the message names file, line and column.

    A `ConfigError` so the command line reports it like any other bad input file.
    """


def task_for_dataset(dataset: str) -> str | None:
    """The product task a trace dataset measures, or None for a dataset the vocabulary lacks."""
    name = dataset.strip().lower()
    if name in _TASK_BY_NAME:
        return _TASK_BY_NAME[name]
    for prefix, task in _TASK_BY_PREFIX:
        if name.startswith(prefix):
            return task
    return None


@dataclass(frozen=True)
class TraceSample:
    """One generated sample, as a plain record."""

    model: str
    dataset: str
    task: str
    problem_id: str
    sample_id: int
    completion_tokens: int
    finish_reason: str
    pred: str
    answer: str
    correct: bool


@dataclass(frozen=True, eq=False)
class TraceTable:
    """Columns of a trace file, all of the same length; `source` is where they came from.

    `problem_id` stays a string: it is an identifier, and only `(dataset, problem_id)` together
    name a problem (`problem_keys()`). `finish_reason` is kept as the provider reported it,
    empty when it reported nothing.
    """

    source: str
    model: np.ndarray
    dataset: np.ndarray
    task: np.ndarray
    problem_id: np.ndarray
    sample_id: np.ndarray
    completion_tokens: np.ndarray
    finish_reason: np.ndarray
    pred: np.ndarray
    answer: np.ndarray
    correct: np.ndarray
    #: the file line of each sample, for error messages about it later (duplicates, ...)
    line: np.ndarray

    def __len__(self) -> int:
        return int(self.model.shape[0])

    def problem_keys(self) -> np.ndarray:
        """One string per sample naming its problem (`dataset/problem_id`)."""
        return np.char.add(np.char.add(self.dataset.astype(str), "/"), self.problem_id.astype(str))

    def records(self) -> Iterator[TraceSample]:
        """The samples as records, in file order."""
        for i in range(len(self)):
            yield TraceSample(
                model=str(self.model[i]),
                dataset=str(self.dataset[i]),
                task=str(self.task[i]),
                problem_id=str(self.problem_id[i]),
                sample_id=int(self.sample_id[i]),
                completion_tokens=int(self.completion_tokens[i]),
                finish_reason=str(self.finish_reason[i]),
                pred=str(self.pred[i]),
                answer=str(self.answer[i]),
                correct=bool(self.correct[i]),
            )


def read_traces(path: str | Path) -> TraceTable:
    """Read and validate a per-sample trace CSV.

    Raises `TraceDataError` for an unreadable file, a missing column, a row with the wrong
    number of fields, a non-integer or negative token count or sample id, a `correct` that is
    not 0/1, an unknown dataset, or a (model, dataset, problem_id, sample_id) seen twice (it
    would silently double-weight that sample).
    """
    source = str(path)
    cols: dict[str, list] = {name: [] for name in (*REQUIRED_COLUMNS, "task", "line")}
    seen: dict[tuple[str, str, str, int], int] = {}
    for line, row in _rows(source, REQUIRED_COLUMNS):

        def bad(column: str, message: str, _line: int = line) -> TraceDataError:
            return TraceDataError(f"{source}: line {_line}, column {column!r}: {message}")

        model, dataset, problem_id = row["model"].strip(), row["dataset"].strip(), row["problem_id"].strip()
        for column, value in (("model", model), ("dataset", dataset), ("problem_id", problem_id)):
            if not value:
                raise bad(column, "empty")
        task = task_for_dataset(dataset)
        if task is None:
            raise bad("dataset", f"unknown dataset {dataset!r}: no task maps to it (see DESIGN.md, Vocabulary)")
        sample_id = _parse_int(row["sample_id"])
        if sample_id is None or sample_id < 0:
            raise bad("sample_id", f"must be a non-negative integer, got {row['sample_id']!r}")
        tokens = _parse_int(row["completion_tokens"])
        if tokens is None or tokens < 0:
            raise bad("completion_tokens", f"must be a non-negative integer, got {row['completion_tokens']!r}")
        flag = row["correct"].strip().lower()
        if flag not in _TRUE and flag not in _FALSE:
            raise bad("correct", f"must be 0 or 1, got {row['correct']!r}")
        key = (model, dataset, problem_id, sample_id)
        if key in seen:
            raise bad("sample_id", f"duplicate sample {key} (first on line {seen[key]})")
        seen[key] = line

        cols["model"].append(model)
        cols["dataset"].append(dataset)
        cols["task"].append(task)
        cols["problem_id"].append(problem_id)
        cols["sample_id"].append(sample_id)
        cols["completion_tokens"].append(tokens)
        cols["finish_reason"].append(row["finish_reason"].strip())
        cols["pred"].append(row["pred"].strip())
        cols["answer"].append(row["answer"].strip())
        cols["correct"].append(flag in _TRUE)
        cols["line"].append(line)

    def strings(name: str) -> np.ndarray:
        return np.array(cols[name], dtype=np.str_)

    return TraceTable(
        source=source,
        model=strings("model"),
        dataset=strings("dataset"),
        task=strings("task"),
        problem_id=strings("problem_id"),
        sample_id=np.array(cols["sample_id"], dtype=np.int64),
        completion_tokens=np.array(cols["completion_tokens"], dtype=np.int64),
        finish_reason=strings("finish_reason"),
        pred=strings("pred"),
        answer=strings("answer"),
        correct=np.array(cols["correct"], dtype=bool),
        line=np.array(cols["line"], dtype=np.int64),
    )


_COLUMNS = (*REQUIRED_COLUMNS, "task", "line")


def select(table: TraceTable, mask: np.ndarray) -> TraceTable:
    """The samples of `table` where `mask` is true, in the same order (same `source`)."""
    return TraceTable(source=table.source, **{name: getattr(table, name)[mask] for name in _COLUMNS})


def concat_tables(tables: list[TraceTable]) -> TraceTable:
    """One table with the samples of all `tables`, in order; `source` lists theirs."""
    if len(tables) == 1:
        return tables[0]
    columns = {name: np.concatenate([getattr(t, name) for t in tables]) for name in _COLUMNS}
    return TraceTable(source=", ".join(t.source for t in tables), **columns)


def write_traces(table: TraceTable, path: str | Path) -> None:
    """Write `table` as a per-sample CSV in the format `read_traces` reads (the required columns).

    Raises `TraceDataError` when the file cannot be written.
    """
    try:
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(REQUIRED_COLUMNS)
            for i in range(len(table)):
                writer.writerow([
                    table.model[i], table.dataset[i], table.problem_id[i], int(table.sample_id[i]),
                    int(table.completion_tokens[i]), table.finish_reason[i], table.pred[i], table.answer[i],
                    1 if table.correct[i] else 0,
                ])
    except OSError as exc:
        raise TraceDataError(f"{path}: cannot write: {exc}") from exc


@dataclass(frozen=True)
class PriceRow:
    """A row of a price CSV; `reasoning` is None when the file has no `reasoning` column."""

    input_usd_per_mtok: float
    output_usd_per_mtok: float
    reasoning: bool | None


def read_prices(path: str | Path) -> dict[str, PriceRow]:
    """Read a price CSV (`trace_model, input_usd_per_mtok, output_usd_per_mtok[, reasoning]`).

    Other columns (`litellm_model`, ...) are ignored: the file documents where the prices came
    from, the product only needs the numbers. `reasoning` accepts yes/no, true/false, 1/0.
    """
    source = str(path)
    required = ("trace_model", "input_usd_per_mtok", "output_usd_per_mtok")
    prices: dict[str, PriceRow] = {}
    for line, row in _rows(source, required):

        def bad(column: str, message: str, _line: int = line) -> TraceDataError:
            return TraceDataError(f"{source}: line {_line}, column {column!r}: {message}")

        name = row["trace_model"].strip()
        if not name:
            raise bad("trace_model", "empty")
        if name in prices:
            raise bad("trace_model", f"model {name!r} listed twice")
        usd: dict[str, float] = {}
        for column in ("input_usd_per_mtok", "output_usd_per_mtok"):
            value = _parse_float(row[column])
            if value is None or value < 0:
                raise bad(column, f"must be a non-negative number, got {row[column]!r}")
            usd[column] = value
        reasoning: bool | None = None
        if row.get("reasoning") is not None:
            flag = row["reasoning"].strip().lower()
            if flag not in _TRUE and flag not in _FALSE:
                raise bad("reasoning", f"must be yes or no, got {row['reasoning']!r}")
            reasoning = flag in _TRUE
        prices[name] = PriceRow(reasoning=reasoning, **usd)
    return prices


def _rows(source: str, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, {column: value}) for each non-blank data row, after checking the header.

    Line numbers are the file's physical lines (1 is the header), so an editor jumps to them.
    """
    try:
        handle = open(source, newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise TraceDataError(f"{source}: cannot read: {exc}") from exc
    with handle:
        reader = csv.reader(handle)
        try:
            header = next(reader, None)
            if header is None:
                raise TraceDataError(f"{source}: empty file (expected a header row)")
            header = [h.strip() for h in header]
            missing = [c for c in required if c not in header]
            if missing:
                raise TraceDataError(
                    f"{source}: line 1: missing column(s) {', '.join(missing)} (header has: {', '.join(header)})"
                )
            for fields in reader:
                if not fields or all(not f.strip() for f in fields):
                    continue
                if len(fields) != len(header):
                    raise TraceDataError(
                        f"{source}: line {reader.line_num}: {len(fields)} fields, the header has {len(header)}"
                    )
                yield reader.line_num, dict(zip(header, fields))
        except (csv.Error, UnicodeDecodeError) as exc:
            raise TraceDataError(f"{source}: line {reader.line_num}: unreadable CSV: {exc}") from exc


def _parse_int(text: str) -> int | None:
    """An integer from `"123"` or an integral `"123.0"` (spreadsheets write those)."""
    value = _parse_float(text)
    if value is None or not value.is_integer():
        return None
    return int(value)


def _parse_float(text: str) -> float | None:
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if np.isfinite(value) else None
