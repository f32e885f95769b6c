"""Profile tables: what the planner knows about each model, task and difficulty.

A profile file is JSON with the top level fixed by DESIGN.md ("Profiles"): `version`,
`provenance`, `models` and `rows`. It is written offline (`proxy.profiling.fit`,
`scripts/build_default_profile.py`) and read here, once, at start-up or on `/admin/reload`.

Two decisions shape this module:

* **Validate everything at load, nothing at lookup.** The planner calls `Profiles.row()` on
  every request, so lookups are single dict hits on indexes built in `__post_init__`. The
  price for that is paid here: a malformed file fails at load with a `ConfigError` that names
  the file, the row index and the field, never later as a `KeyError` in the middle of a request.
* **Absent means unknown.** A statistic the data could not support (a failure threshold on a
  row whose samples never get long, the stats of a class with too few samples) is absent in the
  file and `None` here. The loader never fills in defaults for statistics, because a made-up
  number would be indistinguishable from a measured one downstream.

Rows may name models that have no entry in `models` (a published table gives accuracy without
prices); consumers must not assume `models[row.model]` exists.

Example::

    profiles = Profiles.load("profiles/default.json")
    r = profiles.row("R1", "math", "hard")      # falls back to the task-level row
    if r is not None and r.failure_threshold_tokens is not None:
        cutoff = r.failure_threshold_tokens
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proxy.config import DIFFICULTIES, TASKS
from proxy.errors import ConfigError

__all__ = ["ModelInfo", "ProfileRow", "Profiles", "TokenStats"]

#: the quantile fields of a token-stats object, in the order they must not decrease
_QUANTILES = ("p50", "p90", "p95", "p99")
_STAT_FIELDS = ("mean", "std", *_QUANTILES)


@dataclass(frozen=True)
class TokenStats:
    """Distribution of completion tokens (reasoning included) over a row's samples.

    The quantiles, not the mean, are what budgets reserve: token use is heavy-tailed, so a
    reservation at the mean would be exceeded by a large share of requests.

    Fitted rows have every field. A published table may give less (the study's GPQA rows give
    only a mean; most of its rows give no token numbers at all): absent fields are None, never
    filled in. The quantiles come all together or not at all (`has_quantiles`).
    """

    mean: float | None = None
    std: float | None = None
    p50: float | None = None
    p90: float | None = None
    p95: float | None = None
    p99: float | None = None
    max: float | None = None

    @property
    def has_quantiles(self) -> bool:
        """True when p50..p99 are known (always for rows fitted from samples)."""
        return self.p50 is not None

    def to_dict(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in (*_STAT_FIELDS, "max") if getattr(self, name) is not None}


@dataclass(frozen=True)
class ProfileRow:
    """One measured (model, task, difficulty[, strategy, k]) cell.

    `difficulty is None` is the task-level row (all difficulties pooled); it is the fallback
    when the request's difficulty is unknown or has no row of its own. `failure_curve` holds
    `(L, P(correct | completion_tokens > L))` points with strictly increasing `L`: the data a
    length cutoff is chosen from. `sources` (an extension) names the provenance files whose
    samples this row was computed from.
    """

    model: str
    task: str
    difficulty: str | None
    #: samples (fitted rows) or questions (published rows); None when a published table omits it
    n: int | None
    accuracy: float
    #: all fields None when the source gives no token numbers (absent `tokens` in the file)
    tokens: TokenStats
    tokens_correct_mean: float | None
    tokens_wrong_mean: float | None
    tokens_correct: TokenStats | None
    tokens_wrong: TokenStats | None
    failure_curve: list[tuple[int, float]]
    failure_threshold_tokens: int | None
    threshold_ci: tuple[int, int] | None
    strategy: str | None = None
    k: int | None = None
    sources: tuple[str, ...] = ()
    #: strategy rows only (an extension): the rest of the measured configuration, e.g.
    #: {"aggregator": "consensus", "k_max": 8, "margin": 2, "cutoff_tokens": 15000, "restart": "same",
    #:  "max_restarts": 1}; `tokens` of a strategy row are the billed tokens per request
    plan: dict[str, Any] | None = None

    def config_key(self) -> tuple:
        """What makes a row unique: the cell and, for strategy rows, the whole configuration."""
        return (self.model, self.task, self.difficulty, self.strategy, self.k,
                tuple(sorted((self.plan or {}).items())))

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape of this row; absent statistics stay absent."""
        out: dict[str, Any] = {"model": self.model, "task": self.task, "difficulty": self.difficulty}
        if self.n is not None:
            out["n"] = self.n
        out["accuracy"] = self.accuracy
        if self.tokens.to_dict():
            out["tokens"] = self.tokens.to_dict()
        optional: dict[str, Any] = {
            "tokens_correct_mean": self.tokens_correct_mean,
            "tokens_wrong_mean": self.tokens_wrong_mean,
            "tokens_correct": self.tokens_correct.to_dict() if self.tokens_correct else None,
            "tokens_wrong": self.tokens_wrong.to_dict() if self.tokens_wrong else None,
            "failure_threshold_tokens": self.failure_threshold_tokens,
            "threshold_ci": list(self.threshold_ci) if self.threshold_ci else None,
            "strategy": self.strategy,
            "k": self.k,
            "plan": self.plan,
        }
        out.update({k: v for k, v in optional.items() if v is not None})
        out["failure_curve"] = [[L, p] for L, p in self.failure_curve]
        if self.sources:
            out["sources"] = list(self.sources)
        return out


@dataclass(frozen=True)
class ModelInfo:
    """Price and kind of a profiled model, as recorded when the profile was fitted."""

    input_usd_per_mtok: float
    output_usd_per_mtok: float
    reasoning: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "price": {
                "input_usd_per_mtok": self.input_usd_per_mtok,
                "output_usd_per_mtok": self.output_usd_per_mtok,
            },
            "reasoning": self.reasoning,
        }


_Key = tuple[str, str, str | None]


@dataclass(frozen=True, eq=False)
class Profiles:
    """A loaded, validated profile table with O(1) lookups for the request path."""

    version: str
    provenance: list[dict]
    models: dict[str, ModelInfo]
    rows: list[ProfileRow]
    _by_key: dict[_Key, ProfileRow] = field(init=False, repr=False)
    _by_model: dict[str, list[ProfileRow]] = field(init=False, repr=False)
    _strategies: dict[tuple[str, str, str | None], list[ProfileRow]] = field(init=False, repr=False)
    _model_names: list[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        by_key: dict[_Key, ProfileRow] = {}
        by_model: dict[str, list[ProfileRow]] = {}
        strategies: dict[tuple[str, str, str | None], list[ProfileRow]] = {}
        for row in self.rows:
            if row.strategy is not None:
                strategies.setdefault((row.model, row.task, row.difficulty), []).append(row)
                continue
            by_key[(row.model, row.task, row.difficulty)] = row
            by_model.setdefault(row.model, []).append(row)
        # frozen: indexes are set once here and never change afterwards
        object.__setattr__(self, "_by_key", by_key)
        object.__setattr__(self, "_by_model", by_model)
        object.__setattr__(self, "_strategies", strategies)
        object.__setattr__(self, "_model_names", sorted({r.model for r in self.rows}))

    # -- loading -------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path) -> "Profiles":
        """Read and validate a profile file; every failure is a `ConfigError` naming the file."""
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"profiles file {source}: cannot read: {exc}") from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"profiles file {source}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            ) from exc
        return cls.from_dict(data, source=source)

    @classmethod
    def from_dict(cls, data: dict, source: str = "<dict>") -> "Profiles":
        """Validate an already-parsed profile document (see `load`)."""
        return _Parser(source).document(data)

    # -- lookups (hot path) ----------------------------------------------------------------

    def row(self, model: str, task: str, difficulty: str | None = None) -> ProfileRow | None:
        """The strategy-less row for (model, task, difficulty), else the task-level row, else None.

        Falling back to the task-level row (rather than to a neighbouring difficulty) is the
        honest choice: the pooled row is what we know when the difficulty has no data.
        """
        if difficulty is not None:
            hit = self._by_key.get((model, task, difficulty))
            if hit is not None:
                return hit
        return self._by_key.get((model, task, None))

    def strategy_rows(self, model: str, task: str, difficulty: str | None = None) -> list[ProfileRow]:
        """Strategy rows (measured by replaying recorded samples) of (model, task, difficulty),
        falling back to the task-level ones when that difficulty has none."""
        rows = self._strategies.get((model, task, difficulty))
        if rows is None and difficulty is not None:
            rows = self._strategies.get((model, task, None))
        return rows or []

    def rows_for(self, model: str) -> list[ProfileRow]:
        """Strategy-less rows of `model`, in file order (a copy: callers may not mutate ours)."""
        return list(self._by_model.get(model, ()))

    def simulatable_models(self) -> list[str]:
        """Models the simulator can imitate: a price, and a row with a full length distribution
        (fitted from samples; the study's published rows lack one)."""
        return [m for m in self._model_names if m in self.models
                and any(r.tokens.has_quantiles for r in self._by_model.get(m, ()))]

    def model_names(self) -> list[str]:
        """Sorted names of the models that have at least one row (the profiled models)."""
        return list(self._model_names)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document this table was loaded from (up to fields the loader ignores)."""
        return {
            "version": self.version,
            "provenance": [dict(p) for p in self.provenance],
            "models": {name: info.to_dict() for name, info in self.models.items()},
            "rows": [r.to_dict() for r in self.rows],
        }


# -- validation ------------------------------------------------------------------------------


class _Parser:
    """Turns a parsed JSON document into `Profiles`, failing with the path of the bad field.

    Unknown keys are ignored on purpose: the format grows by adding fields (strategy rows,
    confidence intervals), and an older proxy must still load a newer file.
    """

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, message: str) -> ConfigError:
        return ConfigError(f"profiles file {self.source}: {where}: {message}")

    def document(self, data: Any) -> Profiles:
        if not isinstance(data, dict):
            raise self.fail("top level", f"must be a JSON object, got {_kind(data)}")
        for key in ("version", "provenance", "models", "rows"):
            if key not in data:
                raise self.fail(key, "missing (required top-level field)")
        version = data["version"]
        if not isinstance(version, str) or not version:
            raise self.fail("version", f"must be a non-empty string, got {version!r}")
        provenance = data["provenance"]
        if not isinstance(provenance, list):
            raise self.fail("provenance", f"must be a list, got {_kind(provenance)}")
        for i, entry in enumerate(provenance):
            if not isinstance(entry, dict):
                raise self.fail(f"provenance[{i}]", f"must be an object, got {_kind(entry)}")
        models_raw = data["models"]
        if not isinstance(models_raw, dict):
            raise self.fail("models", f"must be an object, got {_kind(models_raw)}")
        models = {str(name): self.model_info(f"models[{name!r}]", info) for name, info in models_raw.items()}
        rows_raw = data["rows"]
        if not isinstance(rows_raw, list):
            raise self.fail("rows", f"must be a list, got {_kind(rows_raw)}")
        rows = [self.row(f"rows[{i}]", raw) for i, raw in enumerate(rows_raw)]
        seen: dict[tuple, int] = {}
        for i, r in enumerate(rows):
            key = r.config_key()
            if key in seen:
                raise self.fail(
                    f"rows[{i}]",
                    f"duplicate of rows[{seen[key]}] (same model, task, difficulty and strategy configuration)",
                )
            seen[key] = i
        return Profiles(version=version, provenance=list(provenance), models=models, rows=rows)

    def model_info(self, where: str, info: Any) -> ModelInfo:
        if not isinstance(info, dict):
            raise self.fail(where, f"must be an object, got {_kind(info)}")
        price = info.get("price")
        if not isinstance(price, dict):
            raise self.fail(f"{where}.price", "missing or not an object")
        reasoning = info.get("reasoning")
        if not isinstance(reasoning, bool):
            raise self.fail(f"{where}.reasoning", f"must be true or false, got {reasoning!r}")
        return ModelInfo(
            input_usd_per_mtok=self.number(f"{where}.price", price, "input_usd_per_mtok", lo=0.0),
            output_usd_per_mtok=self.number(f"{where}.price", price, "output_usd_per_mtok", lo=0.0),
            reasoning=reasoning,
        )

    def row(self, where: str, raw: Any) -> ProfileRow:
        if not isinstance(raw, dict):
            raise self.fail(where, f"must be an object, got {_kind(raw)}")
        model = self.string(where, raw, "model")
        task = self.string(where, raw, "task")
        if task not in TASKS:
            raise self.fail(f"{where}.task", f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
        difficulty = raw.get("difficulty")
        if difficulty is not None and difficulty not in DIFFICULTIES:
            raise self.fail(
                f"{where}.difficulty",
                f"must be null or one of {', '.join(DIFFICULTIES)}, got {difficulty!r}",
            )
        strategy = raw.get("strategy")
        if strategy is not None and (not isinstance(strategy, str) or not strategy):
            raise self.fail(f"{where}.strategy", f"must be a non-empty string, got {strategy!r}")
        k = self.integer(where, raw, "k", lo=1, required=False)
        plan = raw.get("plan")
        if plan is not None and (not isinstance(plan, dict) or strategy is None):
            raise self.fail(f"{where}.plan", "must be an object, and only on a strategy row")
        tokens_raw = raw.get("tokens")
        # absent for published rows without token numbers: all fields None, never made up
        tokens = self.token_stats(f"{where}.tokens", tokens_raw, required=False) or TokenStats()
        ci = self.threshold_ci(where, raw.get("threshold_ci"))
        sources = raw.get("sources", [])
        if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
            raise self.fail(f"{where}.sources", "must be a list of strings")
        return ProfileRow(
            model=model,
            task=task,
            difficulty=difficulty,
            n=self.integer(where, raw, "n", lo=1, required=False),
            accuracy=self.number(where, raw, "accuracy", lo=0.0, hi=1.0),
            tokens=tokens,
            tokens_correct_mean=self.number(where, raw, "tokens_correct_mean", lo=0.0, required=False),
            tokens_wrong_mean=self.number(where, raw, "tokens_wrong_mean", lo=0.0, required=False),
            tokens_correct=self.token_stats(f"{where}.tokens_correct", raw.get("tokens_correct"), required=False),
            tokens_wrong=self.token_stats(f"{where}.tokens_wrong", raw.get("tokens_wrong"), required=False),
            failure_curve=self.failure_curve(f"{where}.failure_curve", raw.get("failure_curve", [])),
            failure_threshold_tokens=self.integer(where, raw, "failure_threshold_tokens", lo=0, required=False),
            threshold_ci=ci,
            strategy=strategy,
            k=k,
            sources=tuple(sources),
            plan=plan,
        )

    def token_stats(self, where: str, raw: Any, required: bool = True) -> TokenStats | None:
        if raw is None:
            if required:
                raise self.fail(where, "missing (required)")
            return None
        if not isinstance(raw, dict):
            raise self.fail(where, f"must be an object, got {_kind(raw)}")
        values = {name: self.number(where, raw, name, lo=0.0, required=False) for name in _STAT_FIELDS}
        given = [name for name in _QUANTILES if values[name] is not None]
        if given and len(given) < len(_QUANTILES):
            absent = next(name for name in _QUANTILES if values[name] is None)
            raise self.fail(f"{where}.{absent}", f"missing (the quantiles {', '.join(_QUANTILES)} come together)")
        top = self.number(where, raw, "max", lo=0.0, required=False)
        chain = [(name, values[name]) for name in given] + ([("max", top)] if top is not None else [])
        for (a, va), (b, vb) in zip(chain, chain[1:]):
            if va > vb:  # type: ignore[operator]
                raise self.fail(f"{where}.{b}", f"must be >= {a} ({va}), got {vb}")
        return TokenStats(max=top, **values)  # type: ignore[arg-type]

    def failure_curve(self, where: str, raw: Any) -> list[tuple[int, float]]:
        if not isinstance(raw, list):
            raise self.fail(where, f"must be a list of [tokens, p_correct_if_longer] pairs, got {_kind(raw)}")
        curve: list[tuple[int, float]] = []
        for j, point in enumerate(raw):
            at = f"{where}[{j}]"
            if not isinstance(point, (list, tuple)) or len(point) != 2:
                raise self.fail(at, f"must be a [tokens, p_correct_if_longer] pair, got {point!r}")
            length = _as_int(point[0])
            if length is None or length < 0:
                raise self.fail(at, f"tokens must be a non-negative integer, got {point[0]!r}")
            p = _as_float(point[1])
            if p is None or not 0.0 <= p <= 1.0:
                raise self.fail(at, f"p_correct_if_longer must be a number in [0, 1], got {point[1]!r}")
            if curve and length <= curve[-1][0]:
                raise self.fail(at, f"tokens must increase along the curve ({length} after {curve[-1][0]})")
            curve.append((length, p))
        return curve

    def threshold_ci(self, where: str, raw: Any) -> tuple[int, int] | None:
        if raw is None:
            return None
        at = f"{where}.threshold_ci"
        if not isinstance(raw, (list, tuple)) or len(raw) != 2:
            raise self.fail(at, f"must be a [low, high] pair of token counts, got {raw!r}")
        lo, hi = _as_int(raw[0]), _as_int(raw[1])
        if lo is None or hi is None or lo < 0 or lo > hi:
            raise self.fail(at, f"must be [low, high] non-negative integers with low <= high, got {raw!r}")
        return (lo, hi)

    def string(self, where: str, raw: dict, key: str) -> str:
        value = raw.get(key)
        if not isinstance(value, str) or not value:
            state = "missing (required)" if key not in raw else f"must be a non-empty string, got {value!r}"
            raise self.fail(f"{where}.{key}", state)
        return value

    def number(
        self,
        where: str,
        raw: dict,
        key: str,
        lo: float | None = None,
        hi: float | None = None,
        required: bool = True,
    ) -> float | None:
        value = raw.get(key)
        if value is None:
            if required:
                raise self.fail(f"{where}.{key}", "missing (required)")
            return None
        number = _as_float(value)
        if number is None:
            raise self.fail(f"{where}.{key}", f"must be a finite number, got {value!r}")
        if (lo is not None and number < lo) or (hi is not None and number > hi):
            bounds = f"[{lo}, {hi}]" if hi is not None else f">= {lo}"
            raise self.fail(f"{where}.{key}", f"must be {bounds}, got {value!r}")
        return number

    def integer(self, where: str, raw: dict, key: str, lo: int, required: bool = True) -> int | None:
        value = raw.get(key)
        if value is None:
            if required:
                raise self.fail(f"{where}.{key}", "missing (required)")
            return None
        number = _as_int(value)
        if number is None or number < lo:
            raise self.fail(f"{where}.{key}", f"must be an integer >= {lo}, got {value!r}")
        return number


def _as_float(value: Any) -> float | None:
    """A finite float from a JSON number; None for bools, strings, NaN and infinities."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _as_int(value: Any) -> int | None:
    """An int from a JSON integer or an integral float (some writers emit 7000.0)."""
    number = _as_float(value)
    if number is None or not number.is_integer():
        return None
    return int(number)


def _kind(value: Any) -> str:
    return type(value).__name__
