"""Reading the proxy's own JSONL traces (DESIGN.md, "Traces") as a per-sample table for `fit`.

A request record lists its upstream samples; correctness arrives later as a feedback record
`{"kind": "feedback", "id", "correct"}` joined by id (the last one wins). What that lets us
label, and why the rest is dropped rather than guessed:

* The **selected** sample is the answer the client judged: it takes the feedback's `correct`.
* Another sample takes its own verdict when a verifier gave one (`verdict.passed`), else the
  feedback's label when its extracted `answer` equals the selected sample's answer. Otherwise
  its correctness is unknown and it is left out.
* **Cut or cancelled** samples are left out: their length is only a lower bound and they gave
  no answer, so counting them as wrong would bend the failure curve towards the cutoff that
  produced them. Feedback with only a `score` is not a correctness label and is not used.
* Requests that failed (`status` not 200) or carry no known task are skipped.

Each request is its own problem: dataset `PROXY_DATASET`, problem_id the request id, sample_id
the sample's index. Rows are named by the sample's `model` (the configured model name). With one
answer per problem there is no per-problem pass rate, so these samples feed task-level rows
only, never difficulty rows, and no replayed strategy rows (see `fit`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson

from proxy.config import TASKS
from proxy.profiling.tracedata import TraceDataError, TraceTable

__all__ = ["PROXY_DATASET", "read_proxy_traces"]

PROXY_DATASET = "proxy-traces"


def read_proxy_traces(path: str | Path) -> TraceTable:
    """The labelled samples of a JSONL trace file; `TraceDataError` naming the line for bad input."""
    source = str(path)
    requests: list[tuple[int, dict[str, Any]]] = []
    feedback: dict[str, bool] = {}
    try:
        handle = open(source, "rb")
    except OSError as exc:
        raise TraceDataError(f"{source}: cannot read: {exc}") from exc
    with handle:
        for line, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                record = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise TraceDataError(f"{source}: line {line}: not a JSON object: {exc}") from None
            if not isinstance(record, dict):
                raise TraceDataError(f"{source}: line {line}: not a JSON object")
            rid = record.get("id")
            if not isinstance(rid, str) or not rid:
                raise TraceDataError(f"{source}: line {line}, field 'id': missing or not a string")
            if record.get("kind") == "feedback":
                if isinstance(record.get("correct"), bool):
                    feedback[rid] = record["correct"]
                continue
            if record.get("kind") is None:
                requests.append((line, record))
    if not requests:
        raise TraceDataError(f"{source}: no request records")

    cols: dict[str, list] = {k: [] for k in ("model", "task", "problem_id", "sample_id", "completion_tokens",
                                             "finish_reason", "pred", "correct", "line")}
    for line, record in requests:
        task = record.get("task")
        if record.get("status", 200) != 200 or task not in TASKS:
            continue
        samples = record.get("samples")
        if not isinstance(samples, list) or not all(isinstance(s, dict) for s in samples):
            raise TraceDataError(f"{source}: line {line}, field 'samples': must be a list of objects")
        label = feedback.get(record["id"])
        chosen = next((s for s in samples if s.get("selected")), None)
        for index, sample in enumerate(samples):
            tokens = sample.get("completion_tokens")
            if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
                raise TraceDataError(
                    f"{source}: line {line}, field 'samples[{index}].completion_tokens': "
                    f"must be a non-negative integer, got {tokens!r}"
                )
            model = sample.get("model")
            if not isinstance(model, str) or not model:
                raise TraceDataError(f"{source}: line {line}, field 'samples[{index}].model': missing")
            if sample.get("cut") or sample.get("cancelled"):
                continue
            correct = _label(sample, chosen, label)
            if correct is None:
                continue
            cols["model"].append(model)
            cols["task"].append(task)
            cols["problem_id"].append(record["id"])
            cols["sample_id"].append(index)
            cols["completion_tokens"].append(tokens)
            cols["finish_reason"].append(str(sample.get("finish_reason") or ""))
            cols["pred"].append("" if sample.get("answer") is None else str(sample["answer"]))
            cols["correct"].append(correct)
            cols["line"].append(line)

    def strings(values: list) -> np.ndarray:
        return np.array(values, dtype=np.str_)

    count = len(cols["model"])
    return TraceTable(
        source=source,
        model=strings(cols["model"]),
        dataset=strings([PROXY_DATASET] * count),
        task=strings(cols["task"]),
        problem_id=strings(cols["problem_id"]),
        sample_id=np.array(cols["sample_id"], dtype=np.int64),
        completion_tokens=np.array(cols["completion_tokens"], dtype=np.int64),
        finish_reason=strings(cols["finish_reason"]),
        pred=strings(cols["pred"]),
        answer=strings([""] * count),
        correct=np.array(cols["correct"], dtype=bool),
        line=np.array(cols["line"], dtype=np.int64),
    )


def _label(sample: dict, chosen: dict | None, feedback: bool | None) -> bool | None:
    if sample is chosen and feedback is not None:
        return feedback
    verdict = sample.get("verdict")
    if isinstance(verdict, dict) and isinstance(verdict.get("passed"), bool):
        return verdict["passed"]
    if feedback is not None and chosen is not None:
        answer = sample.get("answer")
        if answer is not None and answer == chosen.get("answer"):
            return feedback
    return None
