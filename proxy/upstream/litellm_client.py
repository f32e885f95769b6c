"""Every other provider (Anthropic, Bedrock, Vertex, Azure, ...) through litellm.

litellm costs about 2.5 s and 170 MB at import, so it is imported on the first request to a
model that needs it, never at start-up for configurations that only use the fast OpenAI path.
Its parameter mapping is what turns our one reasoning control into each provider's own setting,
and `drop_params` drops what a provider does not support instead of failing the request.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

from proxy.errors import UpstreamError, UpstreamRejected, UpstreamTimeout
from proxy.upstream.base import Upstream


def import_litellm() -> Any:
    """Import litellm offline: its price map from the bundled file, no telemetry, quiet."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    litellm.drop_params = True
    return litellm


def _translate(exc: Exception, name: str) -> Exception:
    """Map litellm's exception zoo onto the proxy's three upstream errors."""
    kind = type(exc).__name__
    msg = f"upstream {name!r} failed: {kind}: {str(exc)[:300]}"
    if kind in ("Timeout", "APITimeoutError") or "Timeout" in kind:
        return UpstreamTimeout(msg)
    if kind in ("BadRequestError", "NotFoundError", "UnprocessableEntityError", "ContextWindowExceededError",
                "UnsupportedParamsError", "ContentPolicyViolationError"):
        return UpstreamRejected(msg)
    if kind == "RateLimitError":
        return UpstreamError(msg, kind="http_429")
    if kind == "APIConnectionError":
        return UpstreamError(msg, kind="connect")
    return UpstreamError(msg, kind="http_5xx" if "ServiceUnavailable" in kind or "InternalServer" in kind else "error")


class LiteLLMUpstream(Upstream):
    """A model served by any provider litellm knows, named by `provider` in the config."""

    def __init__(self, name: str, provider: str, model_id: str, api_base: str | None, api_key: str | None) -> None:
        self.name = name
        self.provider = provider
        self.model_id = model_id
        self.api_base = api_base
        self.api_key = api_key
        self._litellm: Any = None

    def _kwargs(self, body: dict) -> dict:
        if self._litellm is None:
            self._litellm = import_litellm()
        kw = {k: v for k, v in body.items() if k != "model"}
        kw.update(model=self.model_id, custom_llm_provider=self.provider, num_retries=0)
        if self.api_base:
            kw["api_base"] = self.api_base
        if self.api_key:
            kw["api_key"] = self.api_key
        return kw

    async def complete(self, body: dict, *, timeout_s: float) -> dict:
        kw = self._kwargs(body)
        kw["stream"] = False
        kw.pop("stream_options", None)
        try:
            resp = await self._litellm.acompletion(timeout=timeout_s, **kw)
        except Exception as e:  # litellm raises its own hierarchy; translate all of it
            raise _translate(e, self.name) from None
        return resp.model_dump(exclude_none=False)

    async def stream(self, body: dict, *, timeout_s: float) -> AsyncIterator[dict]:
        kw = self._kwargs(body)
        kw["stream"] = True
        kw["stream_options"] = {"include_usage": True}
        try:
            resp = await self._litellm.acompletion(timeout=timeout_s, **kw)
            async for chunk in resp:
                data = chunk.model_dump(exclude_none=False)
                # litellm attaches usage to stream chunks as an attribute, not always a field
                usage = getattr(chunk, "usage", None)
                if usage is not None and not data.get("usage"):
                    data["usage"] = usage.model_dump() if hasattr(usage, "model_dump") else dict(usage)
                yield data
        except UpstreamError:
            raise
        except Exception as e:
            raise _translate(e, self.name) from None
