"""The SQLite ledger's hot path, one batch at a time: many reserves and commits, few statements.

Under load the writer thread drains dozens of reserves and commits per transaction, most of
them for the same few scopes (a team, its keys). Running each as its own handful of
statements made SQL the dominant cost (~90 µs per request here); this module does the same
work per *scope* instead of per operation:

- settles (commits and releases) first: one `executemany` deletes their holds, one multi-row
  upsert adds the batch's spend per (scope, window), one upsert per key adds tokens; soft-limit
  crossings are found by replaying the commits in order over the scope's spend before the
  batch, so exactly one commit reports each crossing, as before;
- then reserves: the limits, holds and current spend of each scope are read once, every
  reserve is checked in order against running totals (so the batch admits exactly what
  one-at-a-time admission would), and the admitted holds and request counts are written with
  one statement each.

Settling before reserving is a legal order: the operations of one batch were concurrent, and
freeing budget first can only admit more of what fits. Holds are written only for scopes with
a hard limit: no other scope ever reads them.

`SQLiteLedger` keeps its per-operation functions as the fallback when a batch hits an
unexpected error, so a failure stays with the operation that caused it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from proxy.budget.ledger import (
    NANO, PERIODS, BudgetExceeded, BudgetState, CommitResult, RateCheck, RateLimited, Reservation, window_id,
    window_start,
)

__all__ = ["settle_batch", "reserve_batch", "rate_estimate", "retry_after"]

#: rows per multi-row statement (3 bound parameters a row, well under SQLite's limit)
_CHUNK = 300
BudgetRows = Callable[[str], list[tuple[str, int | None, int | None]]]


def rate_estimate(prev: int, cur: int, frac: float) -> float:
    """Sliding-window estimate of the last 60 s: this minute plus the overlapping part of the last."""
    return cur + prev * (1.0 - frac)


def retry_after(prev: int, cur: int, limit: int, frac: float, need: int) -> float:
    """Seconds until the request fits, assuming no further traffic: requests need
    ``estimate + 1 <= rpm`` (need=1), tokens need ``estimate < tpm`` (need=0). `frac` is the
    elapsed fraction of the current minute."""
    target = limit - 1
    if target < 0:
        return (1.0 - frac) * 60.0 + 60.0
    if cur <= target:
        # fits later this minute, once the previous minute's weight has decayed enough
        if prev <= 0:
            return 1.0
        f2 = 1.0 - (target - cur) / prev
        return max(1.0, (f2 - frac) * 60.0)
    # only next minute, when this minute's count becomes the decaying previous one
    return (1.0 - frac) * 60.0 + max(0.0, 1.0 - target / cur) * 60.0


def _usd(n: int | None) -> float | None:
    return None if n is None else n / NANO


def _held(con: sqlite3.Connection, scope: str, now: float) -> int:
    return con.execute("SELECT COALESCE(SUM(amount_n), 0) FROM holds WHERE scope = ? AND expires > ?",
                       (scope, now)).fetchone()[0]


def settle_batch(con: sqlite3.Connection, now: float, settles: Sequence[tuple[str, tuple]],
                 budget_rows: BudgetRows) -> list[Any]:
    """`settles`: ("commit", (reservation, actual_n, tokens)) or ("release", (reservation,)).
    Returns a `CommitResult` per commit and None per release, in order."""
    con.executemany("DELETE FROM holds WHERE id = ?", [(args[0].id,) for _, args in settles])
    wins = {period: window_id(period, now) for period in PERIODS}
    inc: dict[tuple[str, str], int] = {}
    tokens_by_key: dict[str, int] = {}
    commits: list[tuple[int, Reservation, int]] = []
    for i, (kind, args) in enumerate(settles):
        if kind != "commit":
            continue
        res, actual_n, tokens = args
        if tokens and res.rate_key:
            tokens_by_key[res.rate_key] = tokens_by_key.get(res.rate_key, 0) + tokens
        if actual_n and res.scopes:
            commits.append((i, res, actual_n))
            for scope in res.scopes:
                for win in wins.values():
                    inc[(scope, win)] = inc.get((scope, win), 0) + actual_n
    after: dict[tuple[str, str], int] = {}
    rows = list(inc.items())
    for start in range(0, len(rows), _CHUNK):
        part = rows[start:start + _CHUNK]
        after.update({(s, w): a for s, w, a in con.execute(
            "INSERT INTO spend (scope, win, amount_n) VALUES " + ",".join(["(?, ?, ?)"] * len(part))
            + " ON CONFLICT (scope, win) DO UPDATE SET amount_n = amount_n + excluded.amount_n "
              "RETURNING scope, win, amount_n", [x for (s, w), n in part for x in (s, w, n)])})
    minute = int(now // 60)
    for key_id, tokens in tokens_by_key.items():
        con.execute("INSERT INTO rate (key_id, minute, tokens) VALUES (?, ?, ?) ON CONFLICT (key_id, minute) "
                    "DO UPDATE SET tokens = tokens + excluded.tokens", (key_id, minute, tokens))
    crossed: dict[int, list[BudgetState]] = {}
    for scope in {s for _, res, _ in commits for s in res.scopes}:
        for period, limit_n, soft_n in budget_rows(scope):
            if soft_n is None:
                continue
            key = (scope, wins[period])
            running = after[key] - inc[key]  # the spend before this batch
            for i, res, actual_n in commits:
                if scope not in res.scopes:
                    continue
                before, running = running, running + actual_n
                if before < soft_n <= running:
                    crossed.setdefault(i, []).append(BudgetState(
                        scope, period, _usd(limit_n), soft_n / NANO, running / NANO, _held(con, scope, now) / NANO,
                        window_start(period, now)))  # type: ignore[arg-type]
    return [CommitResult(crossed.get(i, [])) if kind == "commit" else None for i, (kind, _) in enumerate(settles)]


def reserve_batch(con: sqlite3.Connection, now: float, reserves: Sequence[tuple], budget_rows: BudgetRows
                  ) -> list[tuple[Reservation | None, BaseException | None]]:
    """`reserves`: (scopes, amount_n, ttl_s, rate, rid) each. Checked in order against running
    totals; refused ones get `RateLimited` / `BudgetExceeded` and hold and count nothing."""
    minute, frac = int(now // 60), (now % 60) / 60.0
    limits: dict[str, list[tuple[str, int]]] = {}
    held: dict[str, int] = {}
    spent: dict[tuple[str, str], int] = {}
    for scope in {s for scopes, *_ in reserves for s in scopes}:
        lim = [(period, limit_n) for period, limit_n, _ in budget_rows(scope) if limit_n is not None]
        if not lim:
            continue
        limits[scope] = lim
        held[scope] = _held(con, scope, now)
        for period, _ in lim:
            row = con.execute("SELECT amount_n FROM spend WHERE scope = ? AND win = ?",
                              (scope, window_id(period, now))).fetchone()  # type: ignore[arg-type]
            spent[(scope, period)] = row[0] if row else 0
    counts: dict[str, list[int]] = {}  # key -> [prev requests, cur requests, prev tokens, cur tokens]
    for _, _, _, rate, _ in reserves:
        if rate is not None and (rate.rpm is not None or rate.tpm is not None) and rate.key_id not in counts:
            rows = {m: (rq, tk) for m, rq, tk in con.execute(
                "SELECT minute, requests, tokens FROM rate WHERE key_id = ? AND minute IN (?, ?)",
                (rate.key_id, minute, minute - 1))}
            (prq, ptk), (crq, ctk) = rows.get(minute - 1, (0, 0)), rows.get(minute, (0, 0))
            counts[rate.key_id] = [prq, crq, ptk, ctk]
    out: list[tuple[Reservation | None, BaseException | None]] = []
    holds: list[tuple[str, str, int, float]] = []
    admitted_requests: dict[str, int] = {}
    for scopes, amount_n, ttl_s, rate, rid in reserves:
        err = _rate_refusal(rate, counts, frac) if rate is not None else None
        remaining: int | None = None
        if err is None:
            worst: tuple[int, str, str] | None = None
            for scope in scopes:
                for period, limit_n in limits.get(scope, ()):
                    room = limit_n - spent[(scope, period)] - held[scope]
                    if room < amount_n and (worst is None or room < worst[0]):
                        worst = (room, scope, period)
                    after = room - amount_n
                    remaining = after if remaining is None else min(remaining, after)
            if worst is not None:
                err = BudgetExceeded(worst[1], worst[2], worst[0] / NANO, amount_n / NANO)  # type: ignore[arg-type]
        if err is not None:
            out.append((None, err))
            continue
        expires = now + ttl_s
        for scope in scopes:
            if scope in limits:
                holds.append((rid, scope, amount_n, expires))
                held[scope] += amount_n
        if rate is not None and rate.rpm is not None:
            counts[rate.key_id][1] += 1
            admitted_requests[rate.key_id] = admitted_requests.get(rate.key_id, 0) + 1
        out.append((Reservation(rid, tuple(scopes), amount_n / NANO, None if remaining is None else remaining / NANO,
                                rate.key_id if rate is not None else None), None))
    if holds:
        con.executemany("INSERT OR REPLACE INTO holds (id, scope, amount_n, expires) VALUES (?, ?, ?, ?)", holds)
    for key_id, n in admitted_requests.items():
        con.execute("INSERT INTO rate (key_id, minute, requests) VALUES (?, ?, ?) ON CONFLICT (key_id, minute) "
                    "DO UPDATE SET requests = requests + excluded.requests", (key_id, minute, n))
    return out


def _rate_refusal(rate: RateCheck, counts: dict[str, list[int]], frac: float) -> RateLimited | None:
    c = counts.get(rate.key_id)
    if c is None:
        return None
    prq, crq, ptk, ctk = c
    if rate.rpm is not None and rate_estimate(prq, crq, frac) + 1 > rate.rpm:
        return RateLimited(rate.key_id, "requests", rate.rpm, retry_after(prq, crq, rate.rpm, frac, 1))
    if rate.tpm is not None and rate_estimate(ptk, ctk, frac) >= rate.tpm:
        return RateLimited(rate.key_id, "tokens", rate.tpm, retry_after(ptk, ctk, rate.tpm, frac, 0))
    return None
