"""The simulator as an `Upstream`: the same plans as the HTTP server, with no network at all.

Embedded mode and the test suite use this so the whole proxy runs on a laptop with no keys.
It behaves like a network client on purpose: faults surface as the same typed errors a real
upstream's failures would (`UpstreamError`, `UpstreamTimeout`, `UpstreamRejected`), `timeout_s`
is honoured the way a read timeout is, and cancelling the consumer stops generation at once
because nothing runs outside the consumer's own task.

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
from proxy.upstream.simulator.engine import FaultDecision, SimEngine, paced

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

    def __init__(self, name: str, profile_model: str, profiles: Profiles, settings: SimulatorSettings) -> None:
        if not profiles.rows_for(profile_model):
            raise ConfigError(
                f"model {name!r}: profile {profile_model!r} has no rows in the profiles "
                f"(profiled models: {', '.join(profiles.model_names()) or 'none'})"
            )
        self.name = name
        self.profile_model = profile_model
        self.engine = SimEngine(profiles, settings)

    async def complete(self, body: dict, *, timeout_s: float) -> dict:
        """Wait latency + generation time, then return the whole body (or the injected fault)."""
        fault = self.engine.fault(body)
        plan = self.engine.plan(body, model=self.name, profile_model=self.profile_model)
        await self._before_first_byte(fault, timeout_s)
        generation = plan.generation_s
        if fault.kind == "disconnect":
            # the connection drops half-way through the body
            await asyncio.sleep(min(generation / 2, max(timeout_s - fault.latency_s, 0.0)))
            raise UpstreamError("simulated upstream closed the connection mid-response", kind="disconnect")
        if fault.latency_s + generation > timeout_s:
            await asyncio.sleep(max(timeout_s - fault.latency_s, 0.0))
            raise UpstreamTimeout(f"simulated upstream took longer than {timeout_s:g} s")
        await asyncio.sleep(generation)
        return plan.response()

    async def stream(self, body: dict, *, timeout_s: float) -> AsyncIterator[dict]:
        """Yield chunks on the plan's schedule; usage is always reported (as base.py asks)."""
        fault = self.engine.fault(body)
        plan = self.engine.plan(body, model=self.name, profile_model=self.profile_model)
        await self._before_first_byte(fault, timeout_s)
        cut_after = plan.n_events(True) // 2 if fault.kind == "disconnect" else None
        sent = 0
        async for event in paced(plan.events(include_usage=True), max_gap_s=timeout_s):
            if sent == cut_after:
                raise UpstreamError("simulated upstream closed the connection mid-stream", kind="disconnect")
            yield event.chunk
            sent += 1

    async def _before_first_byte(self, fault: FaultDecision, timeout_s: float) -> None:
        """Latency, then an error or a hang; a wait beyond `timeout_s` becomes `UpstreamTimeout`."""
        if fault.kind == "hang" or fault.latency_s > timeout_s:
            await asyncio.sleep(timeout_s)
            raise UpstreamTimeout(f"no response from the simulated upstream within {timeout_s:g} s")
        if fault.latency_s > 0:
            await asyncio.sleep(fault.latency_s)
        if fault.kind == "error":
            raise fault_error(fault.status)
