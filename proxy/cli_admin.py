"""`pareto-proxy keys ...` and `pareto-proxy budgets ...`: the admin API's twins on the command line.

They open the ledger named by the config (`--config`, like `serve`), so on one machine the
commands and a running proxy share the SQLite file, and with Redis any replica sees a change
within a second. Validation and effects come from `budget/admin.py`, as for the HTTP API.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Awaitable, Callable

import orjson

from proxy.budget import admin
from proxy.budget.keys import hash_key, key_id_of
from proxy.budget.ledger import PERIODS, Ledger, open_ledger
from proxy.config import TASKS, Settings, load_settings
from proxy.errors import ConfigError, ProxyError


def add_parsers(sub, common) -> None:  # type: ignore[no-untyped-def]
    k = sub.add_parser("keys", help="create, list and revoke virtual keys", description=(
        "Manage ledger-backed virtual keys. Keys are stored hashed: `create` prints the key once. "
        "A revocation reaches every running replica within a second."))
    ks = k.add_subparsers(dest="action", metavar="ACTION")
    ks.required = True
    c = ks.add_parser("create", help="create a key for a team (prints it once)")
    common(c)
    c.add_argument("--team", required=True, help="the team the key's spend is charged to")
    c.add_argument("--budget-usd", type=float, metavar="X", help="a hard budget on this key")
    c.add_argument("--soft-usd", type=float, metavar="Y", help="a soft limit on this key (metric, log, webhook)")
    c.add_argument("--period", choices=PERIODS, default="month", help="budget window (default month, UTC calendar)")
    c.add_argument("--default-policy", metavar="NAME", help="policy for model 'auto' (default: the config's)")
    c.add_argument("--default-task", choices=TASKS, help="task when the request says none")
    c.add_argument("--rpm", type=int, help="requests per minute (across replicas)")
    c.add_argument("--tpm", type=int, help="tokens per minute (across replicas)")
    c.add_argument("--json", action="store_true", help='print {"id", "key", "team"}')
    ls = ks.add_parser("list", help="list keys (never the keys themselves)")
    common(ls)
    ls.add_argument("--json", action="store_true")
    r = ks.add_parser("revoke", help="revoke a key by id")
    common(r)
    r.add_argument("id", help="key id (k_...), from `keys list`")

    b = sub.add_parser("budgets", help="set, remove and show budgets", description=(
        "Budgets on teams or keys, per window: day and month (calendar, UTC) or total. A hard limit refuses "
        "requests (429 budget_exceeded) once reservations would pass it; a soft limit only reports (metric "
        "pareto_budget_soft_limit_events_total, a log event, the budget webhook)."))
    bs = b.add_subparsers(dest="action", metavar="ACTION")
    bs.required = True
    s = bs.add_parser("set", help="create or replace a budget")
    rm = bs.add_parser("remove", help="lift a budget (its spend stays recorded)")
    for p in (s, rm):
        common(p)
        who = p.add_mutually_exclusive_group(required=True)
        who.add_argument("--team", help="the team's budget")
        who.add_argument("--key-id", help="one key's budget (k_...)")
        p.add_argument("--period", choices=PERIODS, required=True)
    s.add_argument("--usd", type=float, metavar="X", help="hard limit in USD")
    s.add_argument("--soft-usd", type=float, metavar="Y", help="soft limit in USD")
    sh = bs.add_parser("show", help="limit, spent, reserved and window per key and team")
    common(sh)
    sh.add_argument("--json", action="store_true")


def _run(settings: Settings, fn: Callable[[Ledger], Awaitable[int]]) -> int:
    async def go() -> int:
        ledger = open_ledger(settings.ledger)
        try:
            return await fn(ledger)
        finally:
            await ledger.close()
    try:
        return asyncio.run(go())
    except ProxyError as e:  # validation and not-found errors, worded for the API: the same text here
        raise ConfigError(e.message) from None
    except (OSError, ConnectionError) as e:
        raise ConfigError(f"cannot reach the ledger {settings.ledger}: {e}") from None


def _static_ids(settings: Settings) -> set[str]:
    return {key_id_of(hash_key(v)) for k in settings.keys if (v := os.environ.get(k.key_env))}


def _money(x: float | None) -> str:
    return "-" if x is None else f"${x:,.6f}"


def cmd_keys(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)

    async def create(ledger: Ledger) -> int:
        spec = admin.parse(admin.KeyCreate, {k: v for k, v in {
            "team": args.team, "budget_usd": args.budget_usd, "soft_usd": args.soft_usd, "period": args.period,
            "default_policy": args.default_policy, "default_task": args.default_task, "rpm": args.rpm,
            "tpm": args.tpm}.items() if v is not None})
        record, key = await admin.create_key(ledger, spec)
        if args.json:
            print(orjson.dumps({"id": record.key_id, "key": key, "team": record.team}).decode())
        else:
            print(f"key {record.key_id} for team {record.team} (shown once, store it now):\n{key}")
        return 0

    async def list_(ledger: Ledger) -> int:
        records = await ledger.keys()
        if args.json:
            print(orjson.dumps([r.to_public() for r in records]).decode())
            return 0
        print(f"{'id':<16} {'team':<20} {'policy':<12} {'task':<9} {'rpm':>6} {'tpm':>9}  status")
        for r in records:
            print(f"{r.key_id:<16} {r.team:<20} {r.default_policy or '-':<12} {r.default_task or '-':<9} "
                  f"{r.rpm or '-':>6} {r.tpm or '-':>9}  {'revoked' if r.revoked else 'active'}")
        return 0

    async def revoke(ledger: Ledger) -> int:
        await admin.revoke_key(ledger, args.id)
        print(f"revoked {args.id}")
        return 0

    return _run(settings, {"create": create, "list": list_, "revoke": revoke}[args.action])


def cmd_budgets(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)

    async def set_(ledger: Ledger) -> int:
        spec = admin.parse(admin.BudgetSet, {k: v for k, v in {
            "team": args.team, "key_id": args.key_id, "usd": args.usd, "period": args.period,
            "soft_usd": args.soft_usd}.items() if v is not None})
        for b in await admin.set_budget(ledger, spec, _static_ids(settings)):
            if b.period == spec.period:
                print(f"{b.scope} {b.period}: limit {_money(b.limit_usd)}, soft {_money(b.soft_usd)}, "
                      f"spent {_money(b.spent_usd)}")
        return 0

    async def remove(ledger: Ledger) -> int:
        ref = admin.parse(admin.BudgetRef, {k: v for k, v in {
            "team": args.team, "key_id": args.key_id, "period": args.period}.items() if v is not None})
        await admin.remove_budget(ledger, ref)
        print(f"removed the {ref.period} budget of {ref.scope}")
        return 0

    async def show(ledger: Ledger) -> int:
        states = await ledger.budgets()
        if args.json:
            print(orjson.dumps([b.to_dict() for b in states]).decode())
            return 0
        if not states:
            print("no budgets (set one with: pareto-proxy budgets set --team T --usd X --period month)")
            return 0
        print(f"{'scope':<24} {'period':<6} {'limit':>14} {'soft':>14} {'spent':>14} {'reserved':>14} "
              f"{'remaining':>14}  window")
        for b in states:
            print(f"{b.scope:<24} {b.period:<6} {_money(b.limit_usd):>14} {_money(b.soft_usd):>14} "
                  f"{_money(b.spent_usd):>14} {_money(b.reserved_usd):>14} {_money(b.remaining_usd):>14}  "
                  f"{b.window or 'all time'}")
        return 0

    return _run(settings, {"set": set_, "remove": remove, "show": show}[args.action])
