"""Trace records: one JSON object per request, appended to a JSONL file per day and process.

Writing happens off the event loop in small batches: the request path only appends a dict to a
list, and a background task flushes the list every `flush_interval_s` in a worker thread. That
keeps file I/O out of the hot path (DESIGN.md, "The hot path") at the price of losing at most one
interval of traces on a hard crash; a graceful stop flushes everything.

Feedback (`POST /v1/feedback`) is appended as its own record `{"kind": "feedback", "id", ...}`
rather than rewriting the request's line, so files stay append-only; `fit` joins them by id.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections import OrderedDict
from pathlib import Path

import orjson

log = logging.getLogger("proxy.traces")


class TraceWriter:
    """Buffers records and appends them to `<dir>/traces-<day>-<host>-<pid>.jsonl`."""

    def __init__(self, directory: str, flush_interval_s: float = 0.2, recent_ids: int = 100_000) -> None:
        self.dir = Path(directory)
        self.flush_interval_s = flush_interval_s
        self._buf: list[dict] = []
        self._task: asyncio.Task | None = None
        self._lock = asyncio.Lock()
        self._recent: OrderedDict[str, str | None] = OrderedDict()  # request id -> team
        self._recent_max = recent_ids
        self._tag = f"{socket.gethostname()}-{os.getpid()}"

    def path_for(self, day: str) -> Path:
        return self.dir / f"traces-{day}-{self._tag}.jsonl"

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._task = asyncio.get_running_loop().create_task(self._run())

    def append(self, record: dict) -> None:
        """Queue a record; never blocks."""
        self._buf.append(record)
        rid = record.get("id")
        if rid and record.get("kind") is None:
            self._recent[rid] = record.get("team")
            if len(self._recent) > self._recent_max:
                self._recent.popitem(last=False)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval_s)
            try:
                await self.flush()
            except Exception:  # a full disk must not kill the flusher; keep the records for the next try
                log.exception("trace flush failed")

    async def flush(self) -> None:
        async with self._lock:
            if not self._buf:
                return
            batch, self._buf = self._buf, []
            try:
                await asyncio.to_thread(self._write, batch)
            except Exception:
                self._buf[:0] = batch
                raise

    def _write(self, batch: list[dict]) -> None:
        day = time.strftime("%Y-%m-%d", time.gmtime())
        data = b"".join(orjson.dumps(r) + b"\n" for r in batch)
        with open(self.path_for(day), "ab") as f:
            f.write(data)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await self.flush()

    async def team_of(self, request_id: str) -> str | None:
        """The team of a traced request (by this process or any other writing here), else None."""
        if request_id in self._recent:
            return self._recent[request_id]
        needle = orjson.dumps(request_id)

        def scan() -> str | None:
            for p in sorted(self.dir.glob("traces-*.jsonl"), reverse=True):
                with open(p, "rb") as f:
                    for line in f:
                        if needle in line:
                            rec = orjson.loads(line)
                            if rec.get("id") == request_id and rec.get("kind") is None:
                                return rec.get("team")
            return None

        return await asyncio.to_thread(scan)
