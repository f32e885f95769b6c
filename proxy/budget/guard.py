"""The request path's view of the ledger: reserve before a call, settle after, report events.

`BudgetGuard` turns a key into its scopes (the key and its team) and rate check, counts
rejections, commits or releases exactly once per reservation, and handles what a commit reports:
a crossed soft limit becomes a metric, a structured log event and (if configured) a webhook
POST. It also runs the two background loops every replica needs: the key cache refresh (so a
revocation reaches every replica within a second) and the budget gauges, which are read from the
ledger so a restart or a second replica never shows a partial number.

It knows money and keys, nothing about routing: re-planning under a smaller budget is the
caller's job (`api/serving.py`), using `BudgetExceeded.remaining_usd`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

import aiohttp
import orjson

from proxy.budget.keys import KeyInfo, KeyStore
from proxy.budget.ledger import BudgetExceeded, BudgetState, Ledger, RateCheck, RateLimited, Reservation, key_scope, team_scope
from proxy.errors import LedgerUnavailable, ProxyError
from proxy.telemetry.metrics import Metrics

log = logging.getLogger("proxy.budget")

#: seconds between polls of the ledger's key version (revocations reach replicas within this)
KEY_POLL_S = 0.5
#: attempts to record spend before giving up and logging the unrecorded amount
SETTLE_ATTEMPTS = 4


class BudgetGuard:
    def __init__(self, ledger: Ledger, metrics: Metrics, ttl_s: float, webhook_url: str | None = None,
                 poll_s: float = 2.0) -> None:
        self.ledger = ledger
        self.metrics = metrics
        self.ttl_s = ttl_s
        self.webhook_url = webhook_url
        self.poll_s = poll_s
        self._tasks: list[asyncio.Task] = []
        self._last_refresh = 0.0
        self._refresh_lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None

    @staticmethod
    def scopes(key: KeyInfo) -> tuple[str, str]:
        return key_scope(key.key_id), team_scope(key.team)

    async def reserve(self, key: KeyInfo, amount_usd: float) -> Reservation:
        """Hold `amount_usd` on the key and its team; `BudgetExceeded` / `RateLimited` when refused."""
        rate = RateCheck(key.key_id, key.rpm, key.tpm) if key.rpm or key.tpm else None
        try:
            return await self.ledger.reserve(self.scopes(key), amount_usd, self.ttl_s, rate)
        except BudgetExceeded:
            self.metrics.child(self.metrics.budget_rejections, key.team).inc()
            raise
        except RateLimited:
            self.metrics.child(self.metrics.rate_limited, key.team).inc()
            raise
        except ProxyError:
            raise
        except Exception as e:  # the backend is down or broken: refuse rather than serve unbilled
            log.error("ledger reserve failed", extra={"error": repr(e), "team": key.team})
            raise LedgerUnavailable("The budget ledger is not answering; the request was not sent upstream. "
                                    "Retry shortly; if it persists, check the ledger backend (SQLite file or Redis).") from None

    async def settle(self, res: Reservation, key: KeyInfo, actual_usd: float, tokens: int) -> None:
        """Commit what the request consumed (or release a hold that bought nothing). Never raises:
        it runs in `finally` blocks; spend that cannot be recorded is logged with its amount."""
        delay = 0.05
        for attempt in range(1, SETTLE_ATTEMPTS + 1):
            try:
                if actual_usd > 0 or tokens > 0:
                    result = await self.ledger.commit(res, actual_usd, tokens)
                    for state in result.soft_crossed:
                        self._soft_limit(state, key)
                else:
                    await self.ledger.release(res)
                return
            except Exception as e:
                if attempt == SETTLE_ATTEMPTS:
                    log.error("spend not recorded: the ledger failed", extra={
                        "reservation": res.id, "scopes": list(res.scopes), "cost_usd": actual_usd, "tokens": tokens,
                        "error": repr(e)})
                    return
                await asyncio.sleep(delay * (1 + random.random()))
                delay *= 4

    # ---- soft limits ------------------------------------------------------------------

    def _soft_limit(self, state: BudgetState, key: KeyInfo) -> None:
        kind = state.scope.partition(":")[0]
        self.metrics.child(self.metrics.budget_soft_events, key.team, kind).inc()
        event = {"event": "budget_soft_limit", **state.to_dict()}
        log.warning("budget soft limit reached", extra=event)
        if self.webhook_url:
            self._tasks.append(asyncio.ensure_future(self._post(event)))
            self._tasks = [t for t in self._tasks if not t.done()]

    async def _post(self, event: dict) -> None:
        assert self.webhook_url is not None
        try:
            if self._session is None:
                self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
            async with self._session.post(self.webhook_url, data=orjson.dumps(event),
                                          headers={"content-type": "application/json"}) as r:
                if r.status >= 300:
                    log.warning("budget webhook refused the event", extra={"status": r.status, "url": self.webhook_url})
        except Exception as e:  # a webhook is a notification: its failure never touches a request
            log.warning("budget webhook failed", extra={"error": repr(e), "url": self.webhook_url})

    # ---- background loops -------------------------------------------------------------

    def start(self, keys: KeyStore) -> None:
        self._tasks += [asyncio.ensure_future(self._keys_loop(keys)), asyncio.ensure_future(self._gauges_loop())]

    async def refresh_keys(self, keys: KeyStore) -> None:
        self._last_refresh = time.monotonic()
        version = await self.ledger.keys_version()
        if version != keys.version:
            keys.refresh(await self.ledger.keys(), version)

    async def refresh_on_miss(self, keys: KeyStore) -> bool:
        """After an unknown key: make sure the key cache is at least as new as this request, then
        say whether to look again. Concurrent misses share one refresh (a lock, and a refresh that
        started after a request arrived counts for it), so a flood of bad keys costs one cheap
        version read at a time."""
        since = time.monotonic()
        async with self._refresh_lock:
            if self._last_refresh >= since:
                return True
            try:
                await self.refresh_keys(keys)
            except Exception:
                return False
            return True

    async def _keys_loop(self, keys: KeyStore) -> None:
        while True:
            try:
                await self.refresh_keys(keys)
            except Exception as e:
                log.warning("key refresh from the ledger failed; serving the cached keys", extra={"error": repr(e)})
            await asyncio.sleep(KEY_POLL_S)

    async def update_gauges(self) -> None:
        """Per team, the budget closest to running out: its spend and limit."""
        tightest: dict[str, BudgetState] = {}
        for b in await self.ledger.budgets():
            kind, _, team = b.scope.partition(":")
            if kind != "team" or b.limit_usd is None:
                continue
            cur = tightest.get(team)
            if cur is None or (b.remaining_usd or 0.0) < (cur.remaining_usd or 0.0):
                tightest[team] = b
        m = self.metrics
        for team, b in tightest.items():
            m.child(m.budget_spent, team).set(b.spent_usd)
            m.child(m.budget_limit, team).set(b.limit_usd or 0.0)

    async def _gauges_loop(self) -> None:
        while True:
            try:
                await self.update_gauges()
            except Exception as e:
                log.warning("budget gauges could not be read from the ledger", extra={"error": repr(e)})
            await asyncio.sleep(self.poll_s)

    async def close(self) -> None:
        """Stop the loops, release this replica's open holds (a draining replica must not keep
        budget from the others until the TTL), close the ledger."""
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            released = await self.ledger.release_all()
            if released:
                log.info("released open reservations at shutdown", extra={"count": released})
        except Exception as e:
            log.warning("could not release reservations at shutdown; they expire by TTL", extra={"error": repr(e)})
        if self._session is not None:
            await self._session.close()
        await self.ledger.close()
