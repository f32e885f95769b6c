"""The simulator as an `Upstream`: the same plans as the HTTP server, with no network at all.

Embedded mode and the test suite use this so the whole proxy runs on a laptop with no keys.
It behaves like a network client on purpose: faults surface as the same typed errors a real
upstream's failures would (`UpstreamError`, `UpstreamTimeout`, `UpstreamRejected`), `timeout_s`
is honoured the way a read timeout is, and cancelling the consumer stops generation at once
because nothing runs outside the consumer's own task.

Scripted samples (`sim_script` in the body, see `script.py`) work here as in the server; hand
several upstreams one `ScriptBook` to count a script's requests across models (an escalation
test wants the fallback model to get the script's next sample). `stats` records what each call
actually yielded, the way `/sim/stats` does for the server.

Example::

    up = SimulatedUpstream("sim-r1", "R1", profiles, SimulatorSettings(tokens_per_second=1e6))
    body = await up.complete({"messages": [{"role": "user", "content": "hi"}]}, timeout_s=30)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from proxy.config import SimulatorSettings
from proxy.errors import ConfigError, UpstreamError, UpstreamRejected, UpstreamTimeout
from proxy.routing.profiles import Profiles
from proxy.upstream.base import Upstream
from proxy.upstream.simulator.engine import FaultDecision, SimEngine, paced, simulatable_rows
from proxy.upstream.simulator.script import ScriptBook
from proxy.upstream.simulator.stats import ConnectionStats, SimStats

__all__ = ["SimulatedUpstream", "fault_error"]

_REJECTED = (400, 404, 422)


def fault_error(status: int) -> UpstreamError | UpstreamRejected:
    """The typed error a real client raises for an upstream answering `status`."""
    message = f"simulated upstream fault: HTTP {status}"
    if status in _REJECTED:
        return UpstreamRejected(message)
    kind = "http_5xx" if status >= 500 else "http_429" if status == 429 else "http_4xx"
    return UpstreamError(message, kind=kind)


class SimulatedUpstream(Upstream):
    """A configured model served by the built-in simulator, imitating `profile_model`."""

    def __init__(self, name: str, profile_model: str, profiles: Profiles, settings: SimulatorSettings,
                 *, scripts: ScriptBook | None = None) -> None:
        if not simulatable_rows(profiles, profile_model):
            raise ConfigError(
                f"model {name!r}: profile {profile_model!r} has no rows in the profiles "
                f"(profiled models: {', '.join(profiles.model_names()) or 'none'})"
            )
        self.name = name
        self.profile_model = profile_model
        self.engine = SimEngine(profiles, settings, scripts)
        self.stats = SimStats()

    async def complete(self, body: dict, *, timeout_s: float) -> dict:
        """Wait latency + generation time, then return the whole body (or the injected fault)."""
        fault, plan = self.engine.prepare(body, model=self.name, profile_model=self.profile_model)
        conn = self.stats.open_connection(self.name, stream=False)
        conn.script, conn.script_index = plan.script, plan.script_index
        try:
            await self._before_first_byte(fault, timeout_s, conn)
            generation = plan.generation_s
            if fault.kind == "disconnect":
                # the connection drops half-way through the body
                await asyncio.sleep(min(generation / 2, max(timeout_s - fault.latency_s, 0.0)))
                self.stats.disconnects_injected += 1
                raise UpstreamError("simulated upstream closed the connection mid-response", kind="disconnect")
            if fault.latency_s + generation > timeout_s:
                await asyncio.sleep(max(timeout_s - fault.latency_s, 0.0))
                raise UpstreamTimeout(f"simulated upstream took longer than {timeout_s:g} s")
            await asyncio.sleep(generation)
        except BaseException:
            if not conn.done:
                self.stats.closed_early(conn)
            raise
        self.stats.sent(conn, plan.completion_tokens)
        conn.done = True
        return plan.response()

    async def stream(self, body: dict, *, timeout_s: float) -> AsyncIterator[dict]:
        """Yield chunks on the plan's schedule; usage is always reported (as base.py asks)."""
        fault, plan = self.engine.prepare(body, model=self.name, profile_model=self.profile_model)
        conn = self.stats.open_connection(self.name, stream=True)
        conn.script, conn.script_index = plan.script, plan.script_index
        half = plan.n_events(True) // 2
        sent = 0
        try:
            await self._before_first_byte(fault, timeout_s, conn)
            async for event in paced(plan.events(include_usage=True), max_gap_s=timeout_s):
                if fault.drops_before(sent, conn.tokens, half):
                    self.stats.disconnects_injected += 1
                    raise UpstreamError("simulated upstream closed the connection mid-stream", kind="disconnect")
                # counted before the consumer sees it: a consumer that got the chunk sees it counted
                self.stats.sent(conn, event.tokens)
                sent += 1
                yield event.chunk
            conn.done = True
        finally:
            # cancelled, closed by the consumer (a cutoff), timed out or dropped: ended early
            if not conn.done:
                self.stats.closed_early(conn)

    async def _before_first_byte(self, fault: FaultDecision, timeout_s: float, conn: ConnectionStats) -> None:
        """Latency, then an error or a hang; a wait beyond `timeout_s` becomes `UpstreamTimeout`.

        An error answer is a delivered response (`done`); a hang or timeout is a connection the
        client gave up on (closed early)."""
        if fault.kind == "hang":
            self.stats.hangs_injected += 1
        if fault.kind == "hang" or fault.latency_s > timeout_s:
            await asyncio.sleep(timeout_s)
            raise UpstreamTimeout(f"no response from the simulated upstream within {timeout_s:g} s")
        if fault.latency_s > 0:
            await asyncio.sleep(fault.latency_s)
        if fault.kind == "error":
            self.stats.errors_injected += 1
            conn.done = True
            raise fault_error(fault.status)
