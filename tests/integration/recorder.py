"""A tiny real OpenAI-compatible HTTP server that records what it receives.

It runs an aiohttp server on a free port in a background thread, so tests can check what the
proxy actually sent upstream (fields passed through untouched, the upstream key, the upstream
model id) — something a simulator answering by statistics cannot show.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time

from aiohttp import web

from tests.conftest import free_port


def completion(model: str, content: str = "recorded answer", n: int = 1) -> dict:
    return {
        "id": "chatcmpl-upstream", "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": i, "message": {"role": "assistant", "content": content, "refusal": None},
                     "logprobs": None, "finish_reason": "stop"} for i in range(n)],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7 * n, "total_tokens": 11 + 7 * n},
    }


class Recorder:
    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._runner: web.AppRunner | None = None

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append({"path": request.path, "headers": dict(request.headers), "body": body})
        model = body.get("model", "?")
        if not body.get("stream"):
            return web.json_response(completion(model, n=body.get("n") or 1))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        base = {"id": "chatcmpl-upstream", "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
        for delta, fin in (({"role": "assistant", "content": ""}, None), ({"content": "recorded "}, None),
                           ({"content": "answer"}, None), ({}, "stop")):
            chunk = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": fin}]}
            await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13}
            await resp.write(b"data: " + json.dumps({**base, "choices": [], "usage": usage}).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        return resp

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append({"path": request.path, "headers": dict(request.headers), "body": body})
        return web.json_response({"object": "list", "model": body.get("model"),
                                  "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2, 0.3]}],
                                  "usage": {"prompt_tokens": 3, "total_tokens": 3}})

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._embeddings)
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        self._loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
        self._ready.set()
        self._loop.run_forever()

    def start(self) -> "Recorder":
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            assert self._runner is not None
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
