"""The one place where errors become OpenAI error envelopes.

Endpoints are wrapped by `envelope_errors`, which catches the proxy's typed errors and anything
unexpected, so a client always gets `{"error": {...}}` with a meaningful status and never a
traceback; unexpected errors are logged (as JSON, with the traceback) and answered with a 500
envelope that carries the request id to quote in a bug report.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from proxy.errors import ProxyError

log = logging.getLogger("proxy.api")


def error_response(status: int, message: str, type_: str, code: str | None = None, param: str | None = None,
                   headers: dict[str, str] | None = None) -> Response:
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def proxy_error_response(e: ProxyError) -> Response:
    return Response(orjson.dumps(e.envelope()), status_code=e.status, media_type="application/json", headers=e.headers)


Endpoint = Callable[..., Awaitable[Response]]


def envelope_errors(fn: Endpoint) -> Endpoint:
    @functools.wraps(fn)
    async def wrapper(*args: object) -> Response:
        request: Request = args[-1]  # type: ignore[assignment]  # methods get (self, request)
        try:
            return await fn(*args)
        except ProxyError as e:
            return proxy_error_response(e)
        except Exception:
            log.exception("unhandled error", extra={"path": request.url.path})
            return error_response(500, "The proxy hit an internal error; it has been logged.", "server_error",
                                  code="internal_error")
    return wrapper


async def http_exception_handler(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 (unknown path, wrong method) in the OpenAI envelope."""
    status = getattr(exc, "status_code", 500)
    if status == 404:
        return error_response(404, f"Unknown path: {request.method} {request.url.path}.", "invalid_request_error",
                              code="not_found")
    if status == 405:
        return error_response(405, f"Method {request.method} is not allowed on {request.url.path}.",
                              "invalid_request_error", code="method_not_allowed")
    detail = getattr(exc, "detail", "error")
    return error_response(status, str(detail), "invalid_request_error")


async def unhandled_exception_handler(request: Request, exc: Exception) -> Response:
    log.error("unhandled error", exc_info=exc, extra={"path": request.url.path})
    return error_response(500, "The proxy hit an internal error; it has been logged.", "server_error", code="internal_error")


EXCEPTION_HANDLERS = {HTTPException: http_exception_handler, Exception: unhandled_exception_handler}
