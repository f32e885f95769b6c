"""HTTP routes: parse, authenticate, hand over to the service, shape the HTTP response.

The endpoints are plain Starlette endpoints (`Request -> Response`) rather than FastAPI
dependency-injected ones: validation is done by `protocol.py`, and FastAPI's dependency
resolution and middleware cost tens of microseconds per request for nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio
import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from proxy.api.admin import AdminApi
from proxy.api.errors import envelope_errors
from proxy.api.protocol import parse_chat_request, parse_json_body
from proxy.budget.keys import KeyInfo
from proxy.errors import AuthenticationFailed, ConfigError, InvalidRequest, NotFound, PayloadTooLarge, UpstreamError

if TYPE_CHECKING:
    from proxy.app import AppState

JSON = "application/json"
PASSTHROUGH_PATHS = ("/v1/embeddings", "/v1/completions", "/v1/responses")


def header(request: Request, name: bytes) -> str | None:
    """One request header, read straight from the ASGI scope (cheaper than building `Headers`)."""
    for k, v in request.scope["headers"]:
        if k == name:
            return v.decode("latin-1")
    return None


async def read_body(request: Request, max_bytes: int) -> bytes:
    """Read the body, refusing (413) as soon as it exceeds `max_bytes`, never buffering more.

    Reads ASGI `http.request` messages directly: Starlette's `Request.stream()` adds bookkeeping
    that showed up in profiles of the hot path.
    """
    declared = header(request, b"content-length")
    if declared is not None:
        if not declared.isdigit():
            raise InvalidRequest(f"Invalid Content-Length header: {declared!r}.")
        if int(declared) > max_bytes:
            raise PayloadTooLarge(f"The request body ({declared} bytes) exceeds the limit of {max_bytes} bytes.")
    parts: list[bytes] = []
    size = 0
    receive = request.receive
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise InvalidRequest("The client disconnected before sending the whole body.")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(f"The request body exceeds the limit of {max_bytes} bytes.")
        parts.append(chunk)
        if not message.get("more_body", False):
            break
    return parts[0] if len(parts) == 1 else b"".join(parts)


class ClosingStreamingResponse(StreamingResponse):
    """A streaming response that always closes its body iterator.

    Starlette cancels the sending task when the client disconnects, leaving the generator
    suspended at a `yield` until garbage collection; closing it here runs its `finally` at once,
    which cancels the upstream call and bills what was received, before the server can shut down.
    """

    async def __call__(self, scope, receive, send) -> None:  # type: ignore[override]
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                await self.body_iterator.aclose()  # type: ignore[attr-defined]


class FinishingResponse(Response):
    """A response that runs `after()` once it has been sent, or failed to be: bookkeeping that
    the client need not wait for, which still runs if the send is cancelled."""

    def __init__(self, content: bytes, headers: dict[str, str], after: Callable[[], None]) -> None:
        super().__init__(content, media_type=JSON, headers=headers)
        self.after = after

    async def __call__(self, scope, receive, send) -> None:  # type: ignore[override]
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.after()


def _json(obj: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(obj), status_code=status, media_type=JSON, headers=headers)


class Api:
    """The endpoints, bound to the app's wired state."""

    def __init__(self, state: "AppState") -> None:
        self.s = state

    async def _key(self, request: Request) -> KeyInfo:
        """The request's virtual key. An unknown key may have been created on another replica a
        moment ago: the key cache is refreshed (rate-limited) and the key checked once more."""
        authorization = header(request, b"authorization")
        try:
            return self.s.keys.authenticate(authorization)
        except AuthenticationFailed:
            if not await self.s.guard.refresh_on_miss(self.s.keys):
                raise
            return self.s.keys.authenticate(authorization)

    @envelope_errors
    async def chat_completions(self, request: Request) -> Response:
        key = await self._key(request)
        req = parse_chat_request(await read_body(request, self.s.settings.max_body_bytes))
        service = self.s.service
        if req.stream:
            body, headers = await service.stream(req, key)
            return ClosingStreamingResponse(body, media_type="text/event-stream",
                                     headers={**headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        resp, headers, call = await service.complete(req, key)
        return FinishingResponse(orjson.dumps(resp), headers, lambda: service.finish(call))

    @envelope_errors
    async def models(self, request: Request) -> Response:
        await self._key(request)
        now = self.s.started
        data = [{"id": e.name, "object": "model", "created": now, "owned_by": e.provider}
                for e in self.s.catalog.entries.values()]
        data.append({"id": "auto", "object": "model", "created": now, "owned_by": "pareto-proxy"})
        data += [{"id": f"auto/{p}", "object": "model", "created": now, "owned_by": "pareto-proxy"}
                 for p in self.s.router.policy_names()]
        return _json({"object": "list", "data": data})

    @envelope_errors
    async def feedback(self, request: Request) -> Response:
        key = await self._key(request)
        body = parse_json_body(await read_body(request, self.s.settings.max_body_bytes))
        rid = body.get("id")
        if not isinstance(rid, str) or not rid:
            raise InvalidRequest("Missing required parameter: 'id' (the response id to give feedback on).", param="id")
        unknown = set(body) - {"id", "correct", "score"}
        if unknown:
            raise InvalidRequest(f"Unknown field {sorted(unknown)[0]!r}; send 'id' with 'correct' or 'score'.",
                                 param=sorted(unknown)[0])
        has_correct, has_score = "correct" in body, "score" in body
        if has_correct == has_score:
            raise InvalidRequest("Send exactly one of 'correct' (boolean) or 'score' (number).", param="correct")
        if has_correct and not isinstance(body["correct"], bool):
            raise InvalidRequest("'correct' must be a boolean.", param="correct")
        score = body.get("score")
        if has_score and (not isinstance(score, (int, float)) or isinstance(score, bool)):
            raise InvalidRequest("'score' must be a number.", param="score")
        if await self.s.traces.team_of(rid) != key.team:  # another team's ids are as good as unknown
            raise NotFound(f"No request with id {rid!r} from your team is known to this proxy's traces.", param="id")
        record = {"kind": "feedback", "id": rid, "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "key_id": key.key_id, "team": key.team}
        record["correct" if has_correct else "score"] = body["correct"] if has_correct else float(score)
        self.s.traces.append(record)
        return _json({"id": rid, "object": "feedback", "recorded": True})

    @envelope_errors
    async def passthrough(self, request: Request) -> Response:
        await self._key(request)
        body = parse_json_body(await read_body(request, self.s.settings.max_body_bytes))
        model = body.get("model")
        if not isinstance(model, str):
            raise InvalidRequest("Missing required parameter: 'model'.", param="model")
        entry = self.s.catalog.resolve(model)
        if not entry.upstream.supports_passthrough:
            raise NotFound(f"{request.url.path} is not available for model {entry.name!r}: its upstream "
                           f"({entry.provider}) is not OpenAI-compatible.")
        status, raw = await entry.upstream.forward(request.url.path, body, timeout_s=entry.timeout_s)
        if status >= 500:
            raise UpstreamError(f"upstream {entry.name!r} answered {status} on {request.url.path}", kind="http_5xx")
        return Response(raw, status_code=status, media_type=JSON)

    @envelope_errors
    async def reload(self, request: Request) -> Response:
        """Reload profiles and policies without a restart; a bad file leaves the old ones serving."""
        self.s.keys.authenticate_admin(header(request, b"authorization"))
        try:
            summary = self.s.reload()
        except ConfigError as e:
            raise InvalidRequest(f"Reload refused, the previous profiles and policies keep serving: {e}",
                                 code="invalid_config") from None
        return _json({"reloaded": True, **summary})

    async def healthz(self, request: Request) -> Response:
        return _json({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        if not self.s.ready:
            return _json({"status": "starting"}, status=503)
        if not await self.s.ledger.ping():
            return _json({"status": "ledger unavailable"}, status=503)
        return _json({"status": "ready", "models": len(self.s.catalog.entries)})

    async def metrics(self, request: Request) -> Response:
        return Response(self.s.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    def routes(self) -> list[Route]:
        return [
            Route("/v1/chat/completions", self.chat_completions, methods=["POST"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/v1/feedback", self.feedback, methods=["POST"]),
            *(Route(path, self.passthrough, methods=["POST"]) for path in PASSTHROUGH_PATHS),
            Route("/admin/reload", self.reload, methods=["POST"]),
            *AdminApi(self.s, read_body).routes(),
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
            Route("/metrics", self.metrics, methods=["GET"]),
        ]
