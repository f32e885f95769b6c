"""The admin API (admin key only): keys and budgets. Reload lives with the other routes.

Thin on purpose: bodies are validated and acted on by `budget/admin.py`, which the `keys` and
`budgets` commands share, so the HTTP and CLI surfaces behave the same.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from proxy.api.errors import envelope_errors
from proxy.api.protocol import parse_json_body
from proxy.budget import admin

if TYPE_CHECKING:
    from proxy.app import AppState

JSON = "application/json"


def _json(obj: object, status: int = 200) -> Response:
    return Response(orjson.dumps(obj), status_code=status, media_type=JSON)


class AdminApi:
    def __init__(self, state: "AppState", read_body) -> None:  # type: ignore[no-untyped-def]
        self.s = state
        self._read_body = read_body

    async def _body(self, request: Request) -> object:
        self.s.keys.authenticate_admin(request.headers.get("authorization"))
        return parse_json_body(await self._read_body(request, self.s.settings.max_body_bytes))

    @envelope_errors
    async def create_key(self, request: Request) -> Response:
        spec = admin.parse(admin.KeyCreate, await self._body(request))
        record, key = await admin.create_key(self.s.ledger, spec)
        await self.s.guard.refresh_keys(self.s.keys)  # usable on this replica at once
        return _json({**record.to_public(), "key": key}, status=201)

    @envelope_errors
    async def list_keys(self, request: Request) -> Response:
        self.s.keys.authenticate_admin(request.headers.get("authorization"))
        return _json({"object": "list", "data": [r.to_public() for r in await self.s.ledger.keys()]})

    @envelope_errors
    async def revoke_key(self, request: Request) -> Response:
        self.s.keys.authenticate_admin(request.headers.get("authorization"))
        key_id = request.path_params["key_id"]
        await admin.revoke_key(self.s.ledger, key_id)
        await self.s.guard.refresh_keys(self.s.keys)
        return _json({"id": key_id, "revoked": True})

    @envelope_errors
    async def show_budgets(self, request: Request) -> Response:
        self.s.keys.authenticate_admin(request.headers.get("authorization"))
        return _json({"object": "list", "data": [b.to_dict() for b in await self.s.ledger.budgets()]})

    @envelope_errors
    async def set_budget(self, request: Request) -> Response:
        spec = admin.parse(admin.BudgetSet, await self._body(request))
        states = await admin.set_budget(self.s.ledger, spec, self.s.keys.static_ids())
        await self.s.guard.update_gauges()
        return _json({"object": "list", "data": [b.to_dict() for b in states]})

    @envelope_errors
    async def remove_budget(self, request: Request) -> Response:
        """`DELETE /admin/budgets?team=T&period=month` (or `key_id=`): the query names the budget."""
        self.s.keys.authenticate_admin(request.headers.get("authorization"))
        ref = admin.parse(admin.BudgetRef, dict(request.query_params))
        await admin.remove_budget(self.s.ledger, ref)
        await self.s.guard.update_gauges()
        return _json({"scope": ref.scope, "period": ref.period, "removed": True})

    def routes(self) -> list[Route]:
        return [
            Route("/admin/keys", self.create_key, methods=["POST"]),
            Route("/admin/keys", self.list_keys, methods=["GET"]),
            Route("/admin/keys/{key_id}", self.revoke_key, methods=["DELETE"]),
            Route("/admin/budgets", self.show_budgets, methods=["GET"]),
            Route("/admin/budgets", self.set_budget, methods=["PUT"]),
            Route("/admin/budgets", self.remove_budget, methods=["DELETE"]),
        ]
