"""Typed errors of the proxy.

Every layer raises one of these; `api/errors.py` is the single place that turns them into the
OpenAI error envelope `{"error": {"message", "type", "param", "code"}}` with the right status.
Keeping the HTTP status on the exception (rather than mapping class names in the API layer)
lets lower layers stay ignorant of HTTP while still saying precisely what went wrong.
"""

from __future__ import annotations


class ProxyError(Exception):
    """Base class: an error with an HTTP status and an OpenAI error type."""

    status: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers = headers or {}

    def envelope(self) -> dict:
        """The OpenAI error body for this error."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class InvalidRequest(ProxyError):
    status = 400
    type = "invalid_request_error"


class AuthenticationFailed(ProxyError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class NotFound(ProxyError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class PayloadTooLarge(ProxyError):
    status = 413
    type = "invalid_request_error"
    code = "payload_too_large"


class UpstreamError(ProxyError):
    """The upstream failed (refused, 5xx, malformed, disconnected)."""

    status = 502
    type = "upstream_error"
    code = "upstream_error"
    #: short low-cardinality label for `pareto_upstream_errors_total{kind}`
    kind: str = "error"

    def __init__(self, message: str, *, kind: str | None = None, **kw) -> None:
        super().__init__(message, **kw)
        if kind is not None:
            self.kind = kind


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"
    kind = "timeout"


class UpstreamRejected(ProxyError):
    """The upstream refused the request as invalid (its 400/404/422): the client's fault."""

    status = 400
    type = "invalid_request_error"
    code = "upstream_rejected"
    kind = "rejected"


class ConfigError(Exception):
    """A bad configuration file or environment; the message names the field and the reason."""


class LedgerUnavailable(ProxyError):
    """The ledger (SQLite file or Redis) did not answer: requests are refused rather than served
    unbilled, since an unmetered request is exactly what budgets exist to prevent."""

    status = 503
    type = "server_error"
    code = "ledger_unavailable"
