"""The built-in simulator: an upstream that imitates a profiled model, for demos, benchmarks and tests.

Correctness and lengths are drawn from the profiles, so the proxy's routing meets realistic
statistics without a GPU or a network. Three ways in: `SimulatedUpstream` (in process, what
embedded mode uses), `create_sim_app` / `run_sim_server` (its own OpenAI-compatible HTTP server,
`pareto-proxy sim`), and `tasks.generate` (prompts with known truth the simulator recognizes).
Tests script exact samples with a body's `sim_script` (`script.py`) and read what was served
from `SimStats` (`/sim/stats`, or `SimulatedUpstream.stats`).

The HTTP server (aiohttp) is not imported here, so the in-process path stays light.
"""

from __future__ import annotations

from proxy.upstream.simulator.engine import ResponsePlan, SimEngine
from proxy.upstream.simulator.inprocess import SimulatedUpstream
from proxy.upstream.simulator.script import ScriptBook
from proxy.upstream.simulator.stats import SimStats
from proxy.upstream.simulator.tasks import SimTask, generate, recognize

__all__ = ["ResponsePlan", "ScriptBook", "SimEngine", "SimStats", "SimTask", "SimulatedUpstream", "default_sim_name",
           "generate", "recognize"]


def default_sim_name(profile_model: str) -> str:
    """The name a profiled model is served under when no config names it: ``R1`` -> ``sim-r1``."""
    return "sim-" + profile_model.lower()
