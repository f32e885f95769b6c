"""The one interface every model endpoint implements.

An `Upstream` is bound to one configured model: callers hand it an OpenAI chat-completion
request body (already stripped of the proxy's own `routing` field) and it returns OpenAI
response dicts, whatever the provider speaks underneath. The fast OpenAI-compatible client, the
litellm adapter and the built-in simulator are just three implementations, the way httpx's
mock and ASGI transports are just other transports::

    upstream = registry.upstream("sim-r1")
    body = await upstream.complete({"messages": [...]}, timeout_s=30)
    async for chunk in upstream.stream({"messages": [...], "stream": True}, timeout_s=30):
        ...

Cancellation: cancelling the task that iterates `stream()` (or closing the iterator) must stop
the upstream call and free its connection, so a client disconnect or a cutoff stops paying for
tokens at once.

Errors: implementations raise `proxy.errors.UpstreamError` (502), `UpstreamTimeout` (504) or
`UpstreamRejected` (the upstream's 4xx for a bad request), never a library's own exception.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator

from proxy.errors import NotFound


class Upstream(ABC):
    """A chat-completions endpoint for one configured model."""

    #: the configured model name (what clients call it); used for logs and metric labels
    name: str
    #: True when `forward()` can pass other OpenAI paths (`/v1/embeddings`, ...) through verbatim
    supports_passthrough: bool = False

    @abstractmethod
    async def complete(self, body: dict, *, timeout_s: float) -> dict:
        """Send a non-streaming request; return the OpenAI `chat.completion` body as a dict.

        The implementation sets the upstream's own model id in the body it sends.
        """

    @abstractmethod
    def stream(self, body: dict, *, timeout_s: float) -> AsyncIterator[dict]:
        """Send a streaming request; yield `chat.completion.chunk` dicts as they arrive.

        Implementations ask the provider for usage (`stream_options.include_usage`) whenever it
        can report it, so billing sees the provider's own count; the caller decides what the
        client gets. `timeout_s` bounds the wait for each chunk, not the whole stream.
        """

    async def forward(self, path: str, body: dict, *, timeout_s: float) -> tuple[int, bytes]:
        """Pass a JSON request for another OpenAI path (`/v1/embeddings`, ...) through: (status, body).

        The upstream's own model id replaces the client's model name; everything else is verbatim.
        """
        raise NotFound(f"{path} is not available for model {self.name!r}: its upstream is not OpenAI-compatible")

    async def aclose(self) -> None:
        """Release connections. Called once at shutdown."""
