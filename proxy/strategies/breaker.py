"""A circuit breaker per model: stop sending traffic to an upstream that keeps failing.

Retries help with a blip; they make an outage worse (every request waits out its backoff and
its timeouts before the fallback model gets a chance). So after `failure_threshold`
consecutive failures a model's circuit opens and calls are refused at once, which sends plans
straight to their fallback; after `cooldown_s` one trial call is let through (half-open): its
success closes the circuit, its failure opens it for another cooldown.

The clock is injectable so tests can step through cooldowns without sleeping. State lives in
the instance (one per app): with several replicas each keeps its own view, which is the
usual trade-off; a shared (Redis) breaker can implement the same four methods.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

__all__ = ["BreakerState", "CircuitBreaker"]

BreakerState = Literal["closed", "open", "half_open"]


@dataclass(slots=True)
class _Circuit:
    failures: int = 0
    opened_at: float | None = None
    trial_in_flight: bool = False


class CircuitBreaker:
    """Per-model circuits: `allow` before a call, then exactly one of `record_success`,
    `record_failure` or `release` (the call ended without telling us anything: cancelled by us,
    or refused as the client's fault)."""

    def __init__(self, failure_threshold: int = 5, cooldown_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self.clock = clock
        self._circuits: dict[str, _Circuit] = {}

    def _get(self, model: str) -> _Circuit:
        c = self._circuits.get(model)
        if c is None:
            c = self._circuits[model] = _Circuit()
        return c

    def state(self, model: str) -> BreakerState:
        c = self._circuits.get(model)
        if c is None or c.opened_at is None:
            return "closed"
        if c.trial_in_flight or self.clock() - c.opened_at >= self.cooldown_s:
            return "half_open"
        return "open"

    def allow(self, model: str) -> bool:
        """May a call to `model` go out now? While half-open, only the first caller gets True."""
        c = self._get(model)
        if c.opened_at is None:
            return True
        if c.trial_in_flight or self.clock() - c.opened_at < self.cooldown_s:
            return False
        c.trial_in_flight = True
        return True

    def record_success(self, model: str) -> None:
        c = self._get(model)
        c.failures, c.opened_at, c.trial_in_flight = 0, None, False

    def record_failure(self, model: str) -> None:
        c = self._get(model)
        c.failures += 1
        if c.trial_in_flight or c.failures >= self.failure_threshold:
            c.opened_at = self.clock()  # a failed trial re-opens for a whole new cooldown
        c.trial_in_flight = False

    def release(self, model: str) -> None:
        """The call ended with no verdict on the upstream's health: free the half-open trial."""
        c = self._get(model)
        c.trial_in_flight = False

    def retry_after(self, model: str) -> float:
        """Seconds until a trial call will be allowed (0 when calls are allowed now)."""
        c = self._circuits.get(model)
        if c is None or c.opened_at is None:
            return 0.0
        return max(0.0, c.opened_at + self.cooldown_s - self.clock())
