"""The floor of pareto-proxy's stack: a bare Starlette handler forwarding the body over aiohttp.

No auth, no validation, no metrics, no traces: what uvicorn + Starlette + aiohttp cost on this
machine by themselves. The passthrough benchmark runs it as a reference leg so the proxy's own
overhead can be read as the gap between the two.

    python bench/bare_forwarder.py UPSTREAM_URL PORT
"""

from __future__ import annotations

import sys

import aiohttp
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def make_app(upstream: str) -> Starlette:
    sessions: list[aiohttp.ClientSession] = []
    url = f"{upstream}/v1/chat/completions"
    headers = {"Content-Type": "application/json"}

    async def forward(request: Request) -> Response:
        if not sessions:
            sessions.append(aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)))
        body = await request.body()
        async with sessions[0].post(url, data=body, headers=headers) as r:
            raw = await r.read()
            status = r.status
        return Response(raw, status_code=status, media_type="application/json")

    async def healthz(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    return Starlette(routes=[Route("/v1/chat/completions", forward, methods=["POST"]),
                             Route("/healthz", healthz, methods=["GET"])])


if __name__ == "__main__":
    uvicorn.run(make_app(sys.argv[1]), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning",
                access_log=False, loop="uvloop", http="httptools")
