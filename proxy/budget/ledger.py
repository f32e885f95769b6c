"""The ledger: where money and rate counters live, shared by every worker and replica.

One small interface (like httpx's transports) with two backends: SQLite (one machine, any
number of worker processes) and Redis (any number of replicas). The request flow is::

    res = await ledger.reserve(["key:k_ab12", "team:team-a"], amount_usd=0.012, ttl_s=900,
                               rate=RateCheck("k_ab12", rpm=600, tpm=200_000))
    try:
        ...                                   # call the upstream
    finally:
        await ledger.commit(res, actual_usd=0.0071, tokens=5300)   # durable before the response ends

`reserve` is atomic across processes and replicas: for every hard budget of every scope,
``spent(window) + reserved(scope) + amount <= limit`` must hold, otherwise `BudgetExceeded`
with the smallest remaining amount; the rate check runs in the same atomic step. `commit`
adds the actual cost to the current window of every period of every scope (spend is recorded
for day, month and total windows whether or not a budget exists, so a budget set later sees
it) and drops the reservation. A reservation not committed or released within its TTL stops
counting (a crashed replica cannot hold budget). `commit` of an expired or unknown reservation
still records the spend: spend is never lost.

The invariant (tested): committed spend in a window never exceeds a hard limit by more than
the overrun of requests already admitted, i.e. ``sum(max(0, actual_i - reserved_i))``.

Amounts are USD floats at this interface; backends store integer nano-dollars so that
concurrent increments never drift.

Windows are calendar-aligned UTC: ``day`` is ``2026-11-23``, ``month`` is ``2026-11``,
``total`` never resets. The clock is injectable (``clock=lambda: t``) for tests of resets.
"""

from __future__ import annotations

import itertools
import os
import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from proxy.errors import ProxyError

__all__ = [
    "PERIODS", "Period", "BudgetExceeded", "RateLimited", "RateCheck", "Reservation", "BudgetState",
    "KeyRecord", "CommitResult", "Ledger", "window_id", "window_start", "team_scope", "key_scope",
    "NANO", "open_ledger",
]

Period = Literal["day", "month", "total"]
PERIODS: tuple[Period, ...] = ("day", "month", "total")
NANO = 1_000_000_000  # nano-dollars per dollar: the backends' integer unit


def team_scope(team: str) -> str:
    return f"team:{team}"


def key_scope(key_id: str) -> str:
    return f"key:{key_id}"


def window_id(period: Period, now: float) -> str:
    """The window a timestamp falls in: ``d:2026-11-23``, ``m:2026-11`` or ``t``."""
    if period == "total":
        return "t"
    tm = time.gmtime(now)
    return f"d:{tm.tm_year:04d}-{tm.tm_mon:02d}-{tm.tm_mday:02d}" if period == "day" else f"m:{tm.tm_year:04d}-{tm.tm_mon:02d}"


def window_start(period: Period, now: float) -> str | None:
    """ISO start of the window (None for ``total``): what `budgets show` prints."""
    if period == "total":
        return None
    tm = time.gmtime(now)
    return (f"{tm.tm_year:04d}-{tm.tm_mon:02d}-{tm.tm_mday:02d}T00:00:00Z" if period == "day"
            else f"{tm.tm_year:04d}-{tm.tm_mon:02d}-01T00:00:00Z")


class BudgetExceeded(ProxyError):
    """429: a hard budget has no room for the request's reservation."""

    status = 429
    type = "insufficient_quota"
    code = "budget_exceeded"

    def __init__(self, scope: str, period: Period, remaining_usd: float, needed_usd: float) -> None:
        self.scope, self.period = scope, period
        self.remaining_usd = max(0.0, remaining_usd)
        self.needed_usd = needed_usd
        super().__init__(
            f"Budget exceeded for {scope} ({period} window): ${self.remaining_usd:.6f} remaining, "
            f"this request needs up to ${needed_usd:.6f}. Raise the budget (pareto-proxy budgets set) "
            f"or wait for the window to reset.",
            headers={"x-should-retry": "false", "x-pareto-budget-remaining-usd": f"{self.remaining_usd:.6f}"},
        )


class RateLimited(ProxyError):
    """429: the key's requests or tokens per minute are used up; retry after `retry_after_s`."""

    status = 429
    type = "rate_limit_error"
    code = "rate_limited"

    def __init__(self, key_id: str, what: Literal["requests", "tokens"], limit: int, retry_after_s: float) -> None:
        self.retry_after_s = max(1, int(retry_after_s + 0.999))
        super().__init__(
            f"Rate limit reached for key {key_id}: {limit} {what} per minute. Retry after {self.retry_after_s} s.",
            headers={"retry-after": str(self.retry_after_s)},
        )


@dataclass(frozen=True, slots=True)
class RateCheck:
    """A key's per-minute limits, checked (and the request counted) inside `reserve`.

    Requests: at most `rpm` admitted per minute. Tokens: a request is refused while the tokens
    committed in the last minute have reached `tpm` (tokens are known only at commit)."""

    key_id: str
    rpm: int | None = None
    tpm: int | None = None


@dataclass(frozen=True, slots=True)
class Reservation:
    """What `reserve` hands back; pass it whole to `commit`/`release` (it carries the scopes, so
    a reservation that expired meanwhile still commits its spend to the right scopes)."""

    id: str
    scopes: tuple[str, ...]
    amount_usd: float
    #: smallest `limit - spent - reserved` over the hard budgets after this reservation (None: no budget)
    remaining_usd: float | None = None
    rate_key: str | None = None


@dataclass(frozen=True, slots=True)
class BudgetState:
    """One budget as `GET /admin/budgets` and `budgets show` report it."""

    scope: str
    period: Period
    limit_usd: float | None
    soft_usd: float | None
    spent_usd: float
    reserved_usd: float
    window: str | None  # ISO start of the current window, None for total

    @property
    def remaining_usd(self) -> float | None:
        return None if self.limit_usd is None else self.limit_usd - self.spent_usd - self.reserved_usd

    def to_dict(self) -> dict:
        kind, _, ident = self.scope.partition(":")
        return {"scope": kind, kind: ident, "period": self.period, "limit_usd": self.limit_usd,
                "soft_limit_usd": self.soft_usd, "spent_usd": self.spent_usd, "reserved_usd": self.reserved_usd,
                "remaining_usd": self.remaining_usd, "window_start": self.window}


@dataclass(frozen=True, slots=True)
class CommitResult:
    """Soft limits this commit crossed (spent went from below to at-or-above `soft_usd`): each
    crossing is reported by exactly one commit, so the caller logs and webhooks it once."""

    soft_crossed: list[BudgetState] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A ledger-backed virtual key. Only the SHA-256 hash of the key is ever stored."""

    key_id: str
    key_hash: str
    team: str
    default_policy: str | None = None
    default_task: str | None = None
    rpm: int | None = None
    tpm: int | None = None
    created: float = 0.0
    revoked: bool = False

    def to_public(self) -> dict:
        return {"id": self.key_id, "team": self.team, "default_policy": self.default_policy,
                "default_task": self.default_task, "rpm": self.rpm, "tpm": self.tpm,
                "created": int(self.created), "revoked": self.revoked}


class Ledger(ABC):
    """Budgets, reservations, spend, rate counters and keys. Every method is safe to call from
    many coroutines, worker processes and (Redis) replicas at once."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._nonce = secrets.token_hex(4)
        self._ids = itertools.count()

    def new_id(self) -> str:
        """A reservation id unique across processes and replicas (pid, a random nonce per ledger
        object, a counter): a tenth of uuid4's cost on the hot path."""
        return f"{os.getpid():x}-{self._nonce}-{next(self._ids):x}"

    # ---- money ------------------------------------------------------------------------

    @abstractmethod
    async def reserve(self, scopes: Sequence[str], amount_usd: float, ttl_s: float,
                      rate: RateCheck | None = None) -> Reservation:
        """Atomically check rate limits and every hard budget of `scopes`, then hold `amount_usd`.
        Raises `RateLimited` or `BudgetExceeded`; nothing is held or counted when it raises."""

    @abstractmethod
    async def commit(self, reservation: Reservation, actual_usd: float, tokens: int = 0) -> CommitResult:
        """Record the actual spend (and `tokens` for the key's per-minute token count), drop the
        hold. Durable when it returns (SQLite: group-committed with fsync)."""

    @abstractmethod
    async def release(self, reservation: Reservation) -> None:
        """Drop the hold without spending (the request failed before any token was billed)."""

    @abstractmethod
    async def release_all(self) -> int:
        """Release every reservation this ledger object still holds (a draining replica); returns how many."""

    @abstractmethod
    async def spent(self, scope: str, period: Period) -> float:
        """Committed spend of `scope` in the current window of `period`."""

    @abstractmethod
    async def set_budget(self, scope: str, period: Period, limit_usd: float | None, soft_usd: float | None) -> None:
        """Create or replace the budget of `scope` for `period` (limit None = soft-only)."""

    @abstractmethod
    async def budgets(self, scopes: Sequence[str] | None = None) -> list[BudgetState]:
        """Every budget (or those of `scopes`) with its current window's spend and holds."""

    # ---- keys -------------------------------------------------------------------------

    @abstractmethod
    async def add_key(self, record: KeyRecord) -> None: ...

    @abstractmethod
    async def keys(self) -> list[KeyRecord]:
        """All keys, revoked included (callers filter)."""

    @abstractmethod
    async def revoke_key(self, key_id: str) -> bool:
        """Mark revoked; False if no such key."""

    @abstractmethod
    async def keys_version(self) -> int:
        """A counter bumped by every key change: replicas poll it (cheaply) to refresh their cache."""

    # ---- lifecycle --------------------------------------------------------------------

    async def ping(self) -> bool:
        """Whether the backend answers (`/readyz`)."""
        try:
            await self.keys_version()
            return True
        except Exception:
            return False

    @abstractmethod
    async def close(self) -> None: ...


def open_ledger(url: str, clock: Callable[[], float] = time.time) -> Ledger:
    """The backend named by the config's `ledger` URL: ``sqlite:///path`` or ``redis://host:port/db``."""
    from proxy.errors import ConfigError

    if url.startswith("sqlite://"):
        from proxy.budget.sqlite_ledger import SQLiteLedger

        path = url.removeprefix("sqlite://").removeprefix("/") if url.startswith("sqlite:///") else None
        if not path:
            raise ConfigError(f"ledger: {url!r}: expected sqlite:///relative/path.db or sqlite:////absolute/path.db")
        return SQLiteLedger(path, clock=clock)
    if url.startswith(("redis://", "rediss://", "unix://")):
        from proxy.budget.redis_ledger import RedisLedger

        return RedisLedger(url, clock=clock)
    raise ConfigError(f"ledger: {url!r} is not a supported ledger URL (sqlite:///path.db or redis://host:port/db)")
