"""The fast path: any OpenAI-compatible server, over aiohttp.

Chosen by measurement (DESIGN.md, "The hot path"): on this 2-core machine a bare forwarding
handler does about 900 req/s with an httpx client and about 5,300 with aiohttp, so the proxy's
most common upstream speaks aiohttp directly, with one pooled session per upstream base URL and
orjson for every body.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from functools import lru_cache

import aiohttp
import orjson

from proxy.errors import UpstreamError, UpstreamRejected, UpstreamTimeout
from proxy.upstream.base import Upstream

_JSON = {"Content-Type": "application/json"}
#: upstream statuses that mean "the request itself is bad": the client gets a 400, not a 502
_CLIENT_FAULT = {400, 404, 413, 422}


@lru_cache(maxsize=64)
def _total_timeout(seconds: float) -> aiohttp.ClientTimeout:
    # ClientTimeout is immutable; building one per request showed up in profiles
    return aiohttp.ClientTimeout(total=seconds)


@lru_cache(maxsize=64)
def _stream_timeout(seconds: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=None, sock_connect=seconds, sock_read=seconds)


def _error_message(status: int, raw: bytes) -> str:
    try:
        err = orjson.loads(raw)["error"]
        msg = err["message"] if isinstance(err, dict) else str(err)
    except Exception:
        msg = raw[:200].decode("utf-8", "replace")
    return f"upstream answered {status}: {msg}"


def raise_for_status(status: int, raw: bytes) -> None:
    """Turn an upstream error status into the proxy's typed error."""
    if status < 400:
        return
    message = _error_message(status, raw)
    if status in _CLIENT_FAULT:
        raise UpstreamRejected(message)
    kind = "http_429" if status == 429 else ("http_5xx" if status >= 500 else "http_4xx")
    raise UpstreamError(message, kind=kind)


class OpenAICompatUpstream(Upstream):
    """An OpenAI-compatible `/v1` endpoint (OpenAI, vLLM, SGLang, a gateway, `pareto-proxy sim`)."""

    supports_passthrough = True

    def __init__(self, name: str, model_id: str, api_base: str, api_key: str | None) -> None:
        self.name = name
        self.model_id = model_id
        self.api_base = api_base
        self._headers = dict(_JSON)
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # created lazily so it binds to the running loop (uvicorn's, or a test's)
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=60)
            self._session = aiohttp.ClientSession(
                connector=connector, json_serialize=lambda o: orjson.dumps(o).decode(), auto_decompress=True
            )
        return self._session

    def _payload(self, body: dict) -> bytes:
        body["model"] = self.model_id
        return orjson.dumps(body)

    async def complete(self, body: dict, *, timeout_s: float) -> dict:
        url = f"{self.api_base}/chat/completions"
        timeout = _total_timeout(timeout_s)
        try:
            async with self._client().post(url, data=self._payload(body), headers=self._headers, timeout=timeout) as r:
                raw = await r.read()
                status = r.status
        except asyncio.TimeoutError:
            raise UpstreamTimeout(f"upstream {self.name!r} did not answer within {timeout_s:g} s") from None
        except aiohttp.ClientError as e:
            raise UpstreamError(f"upstream {self.name!r} failed: {type(e).__name__}: {e}", kind="connect") from None
        raise_for_status(status, raw)
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UpstreamError(f"upstream {self.name!r} sent a body that is not JSON", kind="malformed") from None
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
            raise UpstreamError(f"upstream {self.name!r} sent a body without 'choices'", kind="malformed")
        return data

    async def stream(self, body: dict, *, timeout_s: float) -> AsyncIterator[dict]:
        url = f"{self.api_base}/chat/completions"
        body["stream"] = True
        opts = body.get("stream_options")
        body["stream_options"] = {**(opts if isinstance(opts, dict) else {}), "include_usage": True}
        timeout = _stream_timeout(timeout_s)
        done = False
        try:
            async with self._client().post(url, data=self._payload(body), headers=self._headers, timeout=timeout) as r:
                if r.status >= 400:
                    raise_for_status(r.status, await r.read())
                async for line in r.content:
                    if not line.startswith(b"data:"):
                        continue
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        done = True
                        break
                    try:
                        chunk = orjson.loads(data)
                    except orjson.JSONDecodeError:
                        raise UpstreamError(f"upstream {self.name!r} sent a chunk that is not JSON", kind="malformed") from None
                    if isinstance(chunk, dict) and "error" in chunk:
                        raise UpstreamError(_error_message(502, data), kind="stream_error")
                    yield chunk
        except asyncio.TimeoutError:
            raise UpstreamTimeout(f"upstream {self.name!r} sent nothing for {timeout_s:g} s") from None
        except aiohttp.ClientError as e:
            raise UpstreamError(f"upstream {self.name!r} failed mid-stream: {type(e).__name__}", kind="disconnect") from None
        if not done:
            raise UpstreamError(f"upstream {self.name!r} closed the stream before [DONE]", kind="disconnect")

    async def forward(self, path: str, body: dict, *, timeout_s: float) -> tuple[int, bytes]:
        url = f"{self.api_base}/{path.removeprefix('/v1/')}"
        timeout = _total_timeout(timeout_s)
        try:
            async with self._client().post(url, data=self._payload(body), headers=self._headers, timeout=timeout) as r:
                return r.status, await r.read()
        except asyncio.TimeoutError:
            raise UpstreamTimeout(f"upstream {self.name!r} did not answer within {timeout_s:g} s") from None
        except aiohttp.ClientError as e:
            raise UpstreamError(f"upstream {self.name!r} failed: {type(e).__name__}: {e}", kind="connect") from None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
