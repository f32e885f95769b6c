"""Length distributions the simulator draws from, built from profile rows.

Kept apart from the engine so the engine stays about requests and responses: this is the
statistics (clipped lognormals per outcome class, pooled mixtures for chat) that make simulated
lengths look like the traces. See `engine.py`'s docstring for the choices made.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from proxy.routing.profiles import ProfileRow, Profiles

__all__ = ["Behaviour", "LengthModel", "pooled_behaviour", "row_behaviour", "simulatable_rows"]

_Z90 = 1.2815515655446004  # standard normal 90th percentile
_SHIFT_RIGHT, _SHIFT_WRONG = 0.8, 1.25  # used only when a row has no per-class statistics


@dataclass(frozen=True)
class LengthModel:
    """A clipped lognormal over completion tokens."""

    median: float
    sigma: float
    hi: int

    @classmethod
    def from_quantiles(cls, p50: float, p90: float, hi: float) -> "LengthModel":
        sigma = math.log(p90 / p50) / _Z90 if p50 > 0 and p90 > p50 else 0.05
        return cls(max(p50, 1.0), max(sigma, 0.05), int(hi))

    def scaled(self, factor: float) -> "LengthModel":
        return LengthModel(max(self.median * factor, 1.0), self.sigma, self.hi)

    def draw(self, rng: random.Random, lo: int) -> int:
        x = rng.lognormvariate(math.log(self.median), self.sigma)
        return int(min(max(round(x), lo), max(self.hi, lo)))


@dataclass(frozen=True)
class Behaviour:
    """What the simulator knows for one (profile model, task, difficulty)."""

    accuracy: float
    right: LengthModel
    wrong: LengthModel
    pooled: LengthModel


def simulatable_rows(profiles: Profiles, model: str) -> list[ProfileRow]:
    """`model`'s rows with a length distribution (fitted ones; published tables may lack it)."""
    return [r for r in profiles.rows_for(model) if r.tokens.p50 is not None and r.tokens.p90 is not None]


def row_behaviour(row: ProfileRow) -> Behaviour:
    t = row.tokens
    hi = t.max if t.max is not None else t.p99
    overall = LengthModel.from_quantiles(t.p50, t.p90, hi)

    def per_class(stats: Any, mean: float | None, shift: float) -> LengthModel:
        if stats is not None:
            return LengthModel.from_quantiles(stats.p50, stats.p90, stats.max if stats.max is not None else hi)
        if mean is not None and t.mean > 0:
            return overall.scaled(mean / t.mean)
        return overall.scaled(shift)

    return Behaviour(
        accuracy=row.accuracy,
        right=per_class(row.tokens_correct, row.tokens_correct_mean, _SHIFT_RIGHT),
        wrong=per_class(row.tokens_wrong, row.tokens_wrong_mean, _SHIFT_WRONG),
        pooled=overall,
    )


def pooled_behaviour(rows: list[ProfileRow]) -> Behaviour:
    base = [r for r in rows if r.difficulty is None] or rows
    weight = sum(r.n for r in base)
    parts = [(r.n / weight, LengthModel.from_quantiles(r.tokens.p50, r.tokens.p90, 1)) for r in base]
    mu = sum(w * math.log(m.median) for w, m in parts)
    var = sum(w * (m.sigma**2 + (math.log(m.median) - mu) ** 2) for w, m in parts)
    hi = max(r.tokens.max if r.tokens.max is not None else r.tokens.p99 for r in base)
    pooled = LengthModel(math.exp(mu), math.sqrt(var), int(hi))
    accuracy = sum(r.n * r.accuracy for r in base) / weight
    return Behaviour(accuracy, pooled.scaled(_SHIFT_RIGHT), pooled.scaled(_SHIFT_WRONG), pooled)
