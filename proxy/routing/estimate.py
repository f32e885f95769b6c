"""Predicting a request's cost before it runs (the number budgets will reserve).

Profiled models predict from their measured token distributions (p50 and p95 of completion
length for the task, or pooled over the model's tasks when the task is unknown). Other models
predict from their own recent completions (an exponentially weighted mean and a running
maximum-ish p95 proxy), capped by the request's `max_tokens`; never from a context window.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.routing.catalog import ModelEntry
from proxy.routing.profiles import Profiles

#: completion tokens assumed for an unprofiled model before it has answered anything
COLD_START_TOKENS = 512


@dataclass(slots=True)
class _Recent:
    mean: float
    high: float


class CostEstimator:
    def __init__(self, profiles: Profiles | None) -> None:
        self.profiles = profiles
        self._recent: dict[str, _Recent] = {}
        self._pooled: dict[str, tuple[float, float]] = {}

    def _profile_tokens(self, profile: str, task: str | None, difficulty: str | None) -> tuple[float, float] | None:
        if self.profiles is None:
            return None
        if task is not None:
            row = self.profiles.row(profile, task, difficulty)
            if row is not None and row.tokens.has_quantiles:
                return row.tokens.p50, row.tokens.p95  # type: ignore[return-value]
        pooled = self._pooled.get(profile)
        if pooled is None:
            rows = [r for r in self.profiles.rows_for(profile) if r.difficulty is None and r.tokens.has_quantiles]
            if not rows:
                return None
            pooled = (sum(r.tokens.p50 for r in rows) / len(rows), max(r.tokens.p95 for r in rows))
            self._pooled[profile] = pooled
        return pooled

    def predict(
        self, entry: ModelEntry, prompt_tokens: int, cap: int | None, n: int = 1,
        task: str | None = None, difficulty: str | None = None,
    ) -> tuple[float, float]:
        """(p50, p95) cost in USD of one request; 0 when the model has no price."""
        if entry.price is None:
            return 0.0, 0.0
        tokens = self._profile_tokens(entry.profile, task, difficulty) if entry.profiled else None
        if tokens is None:
            r = self._recent.get(entry.name)
            tokens = (r.mean, r.high) if r else (COLD_START_TOKENS, COLD_START_TOKENS * 4)
        p50, p95 = tokens
        if cap is not None:
            p50, p95 = min(p50, cap), min(p95, cap)
        return entry.price.cost(prompt_tokens * n, int(p50 * n)), entry.price.cost(prompt_tokens * n, int(p95 * n))

    def observe(self, model: str, completion_tokens: int) -> None:
        """Learn from an answered request of an unprofiled model."""
        r = self._recent.get(model)
        if r is None:
            self._recent[model] = _Recent(float(completion_tokens), float(completion_tokens) * 2)
            return
        r.mean += 0.05 * (completion_tokens - r.mean)
        # a slowly decaying high-water mark stands in for p95 without keeping a window
        r.high = max(float(completion_tokens), r.high * 0.999, r.mean)
