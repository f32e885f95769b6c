"""Redis ledger: any number of replicas share budgets, holds, spend, rate counters and keys.

Atomicity. reserve, commit and release are Lua scripts (registered once, called with EVALSHA,
re-sent on NOSCRIPT), so each runs as one atomic step on the server however many replicas call
it. Every key a script touches is passed in KEYS. All keys of one ledger share a prefix
(default ``pp:``); this targets a single Redis (optionally with replicas/Sentinel), not Redis
Cluster (the scopes of one reservation would live in different slots).

Data (integer nano-dollars, `ledger.NANO`, only ever changed with INCRBY/DECRBY so concurrent
increments never drift):

* ``b:{scope}`` hash: ``day:limit``, ``day:soft``, ``month:limit``... (and the set ``budgets``
  of scopes that have one);
* ``s:{scope}:{window}`` spend counter per window id (``d:2026-11-23`` expires after 40 days,
  ``m:2026-11`` after 400, ``t`` never);
* ``h:{scope}`` sorted set of holds, member ``{reservation id}:{amount}``, score = expiry time;
  ``ht:{scope}`` the running total of the holds in it. Every script first purges the members
  whose expiry is ``<= now`` and subtracts their amounts from the total, so an expired hold stops
  counting; commit/release subtract only if ZREM actually removed the member, so a late commit
  records its spend without subtracting twice;
* ``rq:{key}:{minute}`` / ``rt:{key}:{minute}`` requests and tokens per minute (expire after
  3 minutes), checked with the same sliding-window approximation as the SQLite backend
  (``current + previous * (1 - elapsed fraction)``);
* ``keys`` hash key id -> JSON record (the SHA-256 hash only), ``keys_version`` counter (INCR).

The clock: "now" comes from the injectable Python clock and is passed to the scripts as an
argument (not Redis TIME), so tests can move time, and replicas should run NTP.

Durability. `commit()` returns once Redis has acknowledged the script, i.e. the write is in
Redis's memory and (with AOF) in the AOF buffer. What survives a crash depends on the server:

* ``appendonly yes`` + ``appendfsync always``: the AOF is fsynced before the reply, so a
  Redis or machine crash loses nothing that was acknowledged (costs an fsync per write batch).
* ``appendonly yes`` + ``appendfsync everysec`` (recommended): a Redis process crash loses
  nothing (the OS has the data), a machine or power loss loses up to ~1 s (at worst 2 s) of
  acknowledged commits: spend under-counted by that much, never over-counted.
* ``appendonly no`` (RDB snapshots only or nothing): everything since the last snapshot.
  Not for budgets that matter.

Redis persistence is a server setting; this module does not change it (``CONFIG SET`` is often
disabled on managed Redis). For ``always`` guarantees on a replica set, also consider WAIT.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Sequence

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from proxy.budget.ledger import (
    NANO, PERIODS, BudgetExceeded, BudgetState, CommitResult, KeyRecord, Ledger, Period, RateCheck,
    RateLimited, Reservation, window_id, window_start,
)
from proxy.budget.sqlite_ledger import retry_after, to_nano

__all__ = ["RedisLedger"]

_KEYS_PER_SCOPE = 6  # b:, h:, ht:, s:day, s:month, s:total

# Shared Lua: purge a scope's expired holds. K = index of its budget hash in KEYS.
_PURGE = """
local function purge(k, now)
  local gone = redis.call('ZRANGEBYSCORE', KEYS[k+1], '-inf', now)
  if #gone > 0 then
    for _, m in ipairs(gone) do
      redis.call('DECRBY', KEYS[k+2], string.match(m, ':(%d+)$'))
    end
    redis.call('ZREMRANGEBYSCORE', KEYS[k+1], '-inf', now)
  end
end
local PERIODS = {'day', 'month', 'total'}
local function fmt(x) return string.format('%.0f', x) end
"""

# ARGV: nscopes, amount, now, expires, member, rpm (-1: none), tpm (-1: none), frac
# KEYS: 6 per scope, then rq:cur, rq:prev, rt:cur, rt:prev when a rate check is asked for.
_RESERVE = _PURGE + """
local n = tonumber(ARGV[1])
local amount = tonumber(ARGV[2])
local now = ARGV[3]
local rpm, tpm, frac = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local rk = n * 6
if rpm >= 0 then
  local cur = tonumber(redis.call('GET', KEYS[rk+1]) or '0')
  local prev = tonumber(redis.call('GET', KEYS[rk+2]) or '0')
  if cur + prev * (1 - frac) + 1 > rpm then return {'rate', 'requests', prev, cur} end
end
if tpm >= 0 then
  local cur = tonumber(redis.call('GET', KEYS[rk+3]) or '0')
  local prev = tonumber(redis.call('GET', KEYS[rk+4]) or '0')
  if cur + prev * (1 - frac) >= tpm then return {'rate', 'tokens', prev, cur} end
end
local worst_i, worst_p, worst_room = nil, nil, nil
local remaining = nil
for i = 1, n do
  local k = (i - 1) * 6 + 1
  purge(k, now)
  local b = redis.call('HGETALL', KEYS[k])
  if #b > 0 then
    local h = {}
    for j = 1, #b, 2 do h[b[j]] = b[j+1] end
    local held = tonumber(redis.call('GET', KEYS[k+2]) or '0')
    for p = 1, 3 do
      local lim = h[PERIODS[p] .. ':limit']
      if lim then
        local spent = tonumber(redis.call('GET', KEYS[k+2+p]) or '0')
        local room = tonumber(lim) - spent - held
        if room < amount and (worst_room == nil or room < worst_room) then
          worst_i, worst_p, worst_room = i, p, room
        end
        if remaining == nil or room - amount < remaining then remaining = room - amount end
      end
    end
  end
end
if worst_i then return {'budget', worst_i, worst_p, fmt(worst_room)} end
for i = 1, n do
  local k = (i - 1) * 6 + 1
  redis.call('ZADD', KEYS[k+1], ARGV[4], ARGV[5])
  redis.call('INCRBY', KEYS[k+2], ARGV[2])
end
if rpm >= 0 then
  redis.call('INCR', KEYS[rk+1])
  redis.call('EXPIRE', KEYS[rk+1], 180)
end
if remaining == nil then return {'ok', ''} end
return {'ok', fmt(remaining)}
"""

# ARGV: nscopes, member, actual, now, tokens, amount ; KEYS: 6 per scope, then rt:cur when tokens > 0
_COMMIT = _PURGE + """
local n = tonumber(ARGV[1])
local actual = tonumber(ARGV[3])
local now = ARGV[4]
local crossed = {}
for i = 1, n do
  local k = (i - 1) * 6 + 1
  if redis.call('ZREM', KEYS[k+1], ARGV[2]) == 1 then
    redis.call('DECRBY', KEYS[k+2], ARGV[6])
  end
  purge(k, now)
  if actual > 0 then
    local after = {}
    for p = 1, 3 do
      after[p] = redis.call('INCRBY', KEYS[k+2+p], ARGV[3])
    end
    redis.call('EXPIRE', KEYS[k+3], 3456000)
    redis.call('EXPIRE', KEYS[k+4], 34560000)
    local b = redis.call('HGETALL', KEYS[k])
    if #b > 0 then
      local h = {}
      for j = 1, #b, 2 do h[b[j]] = b[j+1] end
      for p = 1, 3 do
        local soft = h[PERIODS[p] .. ':soft']
        if soft then
          local s = tonumber(soft)
          if after[p] - actual < s and s <= after[p] then
            local held = redis.call('GET', KEYS[k+2]) or '0'
            table.insert(crossed, {i, p, fmt(after[p]), held, h[PERIODS[p] .. ':limit'] or '', soft})
          end
        end
      end
    end
  end
end
if tonumber(ARGV[5]) > 0 then
  local tk = KEYS[n * 6 + 1]
  redis.call('INCRBY', tk, ARGV[5])
  redis.call('EXPIRE', tk, 180)
end
return crossed
"""

# ARGV: nscopes, member, amount, now ; KEYS: 6 per scope
_RELEASE = _PURGE + """
local n = tonumber(ARGV[1])
local c = 0
for i = 1, n do
  local k = (i - 1) * 6 + 1
  if redis.call('ZREM', KEYS[k+1], ARGV[2]) == 1 then
    redis.call('DECRBY', KEYS[k+2], ARGV[3])
    c = 1
  end
  purge(k, ARGV[4])
end
return c
"""


def _num(x: float) -> str:
    return repr(float(x))


class RedisLedger(Ledger):
    def __init__(self, url: str, clock: Callable[[], float] = time.time, prefix: str = "pp:",
                 client: aioredis.Redis | None = None) -> None:
        super().__init__(clock)
        self.url = url
        self.prefix = prefix
        self.r: aioredis.Redis = client or aioredis.from_url(url, decode_responses=True)
        self._reserve = self.r.register_script(_RESERVE)
        self._commit = self.r.register_script(_COMMIT)
        self._release = self.r.register_script(_RELEASE)
        self._held: dict[str, Reservation] = {}
        self._pid = os.getpid()
        self._pending: list[tuple] = []
        self._flushing: set[asyncio.Task] = set()

    # ---- batching: the scripts of one loop iteration go in one pipeline -----------------

    async def _run(self, script: AsyncScript, keys: list, args: list,
                   orphan: Callable[[object], None] | None = None) -> object:
        """EVALSHA `script`, pipelined with every other script call made in the same loop
        iteration: one connection checkout, one write and one read per batch instead of per call
        (measured ~3x less client CPU per call at concurrency 16). Each call stays its own atomic
        script; a script Redis lost (restart, SCRIPT FLUSH) is reloaded and retried alone.
        `orphan(result)` runs if the caller was cancelled but the script ran anyway."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush_soon)
        self._pending.append((script, keys, args, fut, orphan))
        return await fut

    def _flush_soon(self) -> None:
        batch, self._pending = self._pending, []
        if batch:
            task = asyncio.ensure_future(self._flush(batch))
            self._flushing.add(task)
            task.add_done_callback(self._flushing.discard)

    async def _flush(self, batch: list[tuple]) -> None:
        try:
            pipe = self.r.pipeline(transaction=False)
            for script, keys, args, *_ in batch:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            results = await pipe.execute(raise_on_error=False)
        except BaseException as e:  # the connection failed: every call of the batch fails alike
            for *_, fut, _ in batch:
                if not fut.done():
                    fut.set_exception(e)
            if not isinstance(e, Exception):
                raise
            return
        for (script, keys, args, fut, orphan), res in zip(batch, results):
            if isinstance(res, NoScriptError):
                try:
                    res = await script(keys=keys, args=args)  # loads the script, then runs it
                except Exception as e:  # noqa: BLE001 - handed to the caller
                    res = e
            if fut.done():
                if fut.cancelled() and orphan is not None and not isinstance(res, BaseException):
                    orphan(res)
                continue
            if isinstance(res, BaseException):
                fut.set_exception(res)
            else:
                fut.set_result(res)

    def _scope_keys(self, scope: str, now: float) -> list[str]:
        p = self.prefix
        return [f"{p}b:{scope}", f"{p}h:{scope}", f"{p}ht:{scope}",
                *(f"{p}s:{scope}:{window_id(per, now)}" for per in PERIODS)]

    def _keys(self, scopes: Sequence[str], now: float) -> list[str]:
        out: list[str] = []
        for s in scopes:
            out += self._scope_keys(s, now)
        return out

    @staticmethod
    def _member(res: Reservation) -> tuple[str, int]:
        amount = to_nano(res.amount_usd)
        return f"{res.id}:{amount}", amount

    # ---- money ------------------------------------------------------------------------

    async def reserve(self, scopes: Sequence[str], amount_usd: float, ttl_s: float,
                      rate: RateCheck | None = None) -> Reservation:
        scopes = tuple(scopes)
        now = self.clock()
        amount = to_nano(amount_usd)
        rid = self.new_id()
        keys = self._keys(scopes, now)
        minute, frac = int(now // 60), (now % 60) / 60.0
        rpm = tpm = -1
        if rate is not None and (rate.rpm is not None or rate.tpm is not None):
            p = self.prefix
            keys += [f"{p}rq:{rate.key_id}:{minute}", f"{p}rq:{rate.key_id}:{minute - 1}",
                     f"{p}rt:{rate.key_id}:{minute}", f"{p}rt:{rate.key_id}:{minute - 1}"]
            rpm = rate.rpm if rate.rpm is not None else -1
            tpm = rate.tpm if rate.tpm is not None else -1
        def orphan(result: object) -> None:
            # the caller gave up while the script took the hold: give it back now, not at its TTL
            if result[0] == "ok":  # type: ignore[index]
                task = asyncio.ensure_future(self.release(Reservation(rid, scopes, amount / NANO)))
                self._flushing.add(task)
                task.add_done_callback(self._flushing.discard)

        out = await self._run(self._reserve, keys, [len(scopes), amount, _num(now), _num(now + ttl_s),
                                                     f"{rid}:{amount}", rpm, tpm, _num(frac)], orphan)
        kind = out[0]
        if kind == "rate":
            prev, cur = int(out[2]), int(out[3])
            assert rate is not None
            if out[1] == "requests":
                raise RateLimited(rate.key_id, "requests", rpm, retry_after(prev, cur, rpm, frac, 1))
            raise RateLimited(rate.key_id, "tokens", tpm, retry_after(prev, cur, tpm, frac, 0))
        if kind == "budget":
            raise BudgetExceeded(scopes[int(out[1]) - 1], PERIODS[int(out[2]) - 1], int(out[3]) / NANO, amount / NANO)
        remaining = None if out[1] == "" else int(out[1]) / NANO
        res = Reservation(rid, scopes, amount / NANO, remaining, rate.key_id if rate is not None else None)
        self._held[rid] = res
        return res

    async def commit(self, reservation: Reservation, actual_usd: float, tokens: int = 0) -> CommitResult:
        now = self.clock()
        member, amount = self._member(reservation)
        actual = to_nano(max(0.0, actual_usd))
        keys = self._keys(reservation.scopes, now)
        tokens = int(tokens or 0) if reservation.rate_key else 0
        if tokens > 0:
            keys.append(f"{self.prefix}rt:{reservation.rate_key}:{int(now // 60)}")
        out = await self._run(self._commit, keys, [len(reservation.scopes), member, actual, _num(now), tokens, amount])
        self._held.pop(reservation.id, None)
        crossed = []
        for i, p, after, held, limit, soft in out:
            period = PERIODS[int(p) - 1]
            crossed.append(BudgetState(reservation.scopes[int(i) - 1], period, int(limit) / NANO if limit != "" else None,
                                       int(soft) / NANO, int(after) / NANO, int(held) / NANO, window_start(period, now)))
        return CommitResult(crossed)

    async def release(self, reservation: Reservation) -> None:
        now = self.clock()
        member, amount = self._member(reservation)
        await self._run(self._release, self._keys(reservation.scopes, now),
                        [len(reservation.scopes), member, amount, _num(now)])
        self._held.pop(reservation.id, None)

    async def release_all(self) -> int:
        if self._pid != os.getpid():
            return 0
        items = list(self._held.values())
        await asyncio.gather(*(self.release(res) for res in items))  # one pipeline for all of them
        return len(items)

    async def spent(self, scope: str, period: Period) -> float:
        v = await self.r.get(f"{self.prefix}s:{scope}:{window_id(period, self.clock())}")
        return int(v or 0) / NANO

    async def set_budget(self, scope: str, period: Period, limit_usd: float | None, soft_usd: float | None) -> None:
        if period not in PERIODS:
            raise ValueError(f"period must be one of {PERIODS}, not {period!r}")
        key = f"{self.prefix}b:{scope}"
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.hdel(key, f"{period}:limit", f"{period}:soft")
            fields = {}
            if limit_usd is not None:
                fields[f"{period}:limit"] = to_nano(limit_usd)
            if soft_usd is not None:
                fields[f"{period}:soft"] = to_nano(soft_usd)
            if fields:
                pipe.hset(key, mapping=fields)
                pipe.sadd(f"{self.prefix}budgets", scope)
            await pipe.execute()
        if not fields and not await self.r.exists(key):
            await self.r.srem(f"{self.prefix}budgets", scope)

    async def budgets(self, scopes: Sequence[str] | None = None) -> list[BudgetState]:
        now = self.clock()
        if scopes is None:
            scopes = sorted(await self.r.smembers(f"{self.prefix}budgets"))
        scopes = list(scopes)
        if not scopes:
            return []
        p = self.prefix
        async with self.r.pipeline(transaction=True) as pipe:
            for s in scopes:
                pipe.hgetall(f"{p}b:{s}")
                pipe.zrangebyscore(f"{p}h:{s}", f"({now!r}", "+inf")  # live holds only
                for per in PERIODS:
                    pipe.get(f"{p}s:{s}:{window_id(per, now)}")
            rows = await pipe.execute()
        out = []
        for i, s in enumerate(scopes):
            h, live, *spends = rows[i * 5:(i + 1) * 5]
            held = sum(int(m.rsplit(":", 1)[1]) for m in live)
            for per, sp in zip(PERIODS, spends):
                lim, soft = h.get(f"{per}:limit"), h.get(f"{per}:soft")
                if lim is None and soft is None:
                    continue
                out.append(BudgetState(s, per, None if lim is None else int(lim) / NANO,
                                       None if soft is None else int(soft) / NANO, int(sp or 0) / NANO,
                                       held / NANO, window_start(per, now)))
        return out

    # ---- keys -------------------------------------------------------------------------

    async def add_key(self, record: KeyRecord) -> None:
        data = {"key_id": record.key_id, "key_hash": record.key_hash, "team": record.team,
                "default_policy": record.default_policy, "default_task": record.default_task,
                "rpm": record.rpm, "tpm": record.tpm, "created": record.created or self.clock(),
                "revoked": record.revoked}
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.hset(f"{self.prefix}keys", record.key_id, json.dumps(data))
            pipe.incr(f"{self.prefix}keys_version")
            await pipe.execute()

    async def keys(self) -> list[KeyRecord]:
        raw = await self.r.hgetall(f"{self.prefix}keys")
        recs = [KeyRecord(**json.loads(v)) for v in raw.values()]
        return sorted(recs, key=lambda r: (r.created, r.key_id))

    async def revoke_key(self, key_id: str) -> bool:
        key = f"{self.prefix}keys"
        async with self.r.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    raw = await pipe.hget(key, key_id)
                    if raw is None:
                        await pipe.unwatch()
                        return False
                    data = json.loads(raw)
                    data["revoked"] = True
                    pipe.multi()
                    pipe.hset(key, key_id, json.dumps(data))
                    pipe.incr(f"{self.prefix}keys_version")
                    await pipe.execute()
                    return True
                except aioredis.WatchError:
                    continue

    async def keys_version(self) -> int:
        return int(await self.r.get(f"{self.prefix}keys_version") or 0)

    async def close(self) -> None:
        await self.r.aclose()
