"""The simulator as its own OpenAI-compatible HTTP server (`pareto-proxy sim`).

Benchmarks and fault tests need an upstream on a real socket: the proxy's HTTP client, its
connection pool, timeouts and disconnect handling only get exercised over TCP. aiohttp.web is
used rather than FastAPI because it is several times faster per request (the simulator must
never be the bottleneck of a proxy benchmark) and because it lets a fault close the transport
abruptly, mid-stream, exactly the way a crashing upstream does.

Faults per request (rates from the model's `simulator.faults`): `error` answers that HTTP
status with an OpenAI envelope; `disconnect` closes the socket after about half the stream's
chunks (before the response, for non-streaming) with no `[DONE]`; `hang` never answers until
the client goes away. `GET /sim/stats` counts what clients actually received, so a test can
check that a cancelled request stopped costing tokens: totals, `streams_open`, and one record per
recent request (`connections`: id, model, script, tokens written, closed_early, done).

Scripted samples (`sim_script` in the body, see `script.py`) are counted per server process,
across all its models, in arrival order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from proxy.config import Settings, SimulatorSettings
from proxy.errors import ConfigError, ProxyError
from proxy.routing.profiles import Profiles
from proxy.upstream.simulator import default_sim_name
from proxy.upstream.simulator.engine import FaultDecision, ResponsePlan, SimEngine, paced, simulatable_rows
from proxy.upstream.simulator.script import ScriptBook
from proxy.upstream.simulator.stats import ConnectionStats, SimStats

__all__ = ["ConnectionStats", "SimStats", "build_sim_models", "create_sim_app", "run_sim_server"]

log = logging.getLogger("proxy.simulator")

#: configured name -> (profile model it imitates, its simulator settings)
SimModels = dict[str, tuple[str, SimulatorSettings]]


@dataclass
class _SimState:
    engines: dict[str, tuple[str, SimEngine]]
    stats: SimStats = field(default_factory=SimStats)
    created: int = field(default_factory=lambda: int(time.time()))


_STATE = web.AppKey("pareto_sim_state", _SimState)


def build_sim_models(settings: Settings, profiles: Profiles) -> SimModels:
    """The config's `provider: simulated` models by name; with none, every profiled model that
    has a length distribution (fitted rows; published tables may lack one) under both its
    profile name (`R1`) and `default_sim_name` (`sim-r1`), with default settings.

    Raises `ConfigError` for a simulated model whose profile has no such rows: a typo in
    `profile` should fail at start, not as a 502 on the first request.
    """
    known = {m for m in profiles.model_names() if simulatable_rows(profiles, m)}
    configured = [m for m in settings.models if m.provider == "simulated"]
    if configured:
        out: SimModels = {}
        for m in configured:
            profile = m.profile or m.name
            if profile not in known:
                raise ConfigError(
                    f"model {m.name!r}: profile {profile!r} has no rows in {settings.profiles} "
                    f"(profiled models: {', '.join(sorted(known)) or 'none'})"
                )
            out[m.name] = (profile, m.simulator or SimulatorSettings())
        return out
    out = {}
    for profile in sorted(known):
        sim = SimulatorSettings()
        out[profile] = (profile, sim)
        out[default_sim_name(profile)] = (profile, sim)
    return out


def create_sim_app(models: SimModels, profiles: Profiles, *, max_body_bytes: int = 32 * 1024 * 1024) -> web.Application:
    """An aiohttp app serving `models`. Names that share one settings object share one engine
    (and so one RNG stream), which keeps `R1` and `sim-r1` a single simulated model."""
    engines: dict[tuple[str, int], SimEngine] = {}
    by_name: dict[str, tuple[str, SimEngine]] = {}
    scripts = ScriptBook()  # one count per process, across models: escalations get the next sample
    for name, (profile, sim) in models.items():
        engine = engines.setdefault((profile, id(sim)), SimEngine(profiles, sim, scripts))
        by_name[name] = (profile, engine)
    app = web.Application(client_max_size=max_body_bytes, middlewares=[_envelopes])
    app[_STATE] = _SimState(engines=by_name)
    app.router.add_post("/v1/chat/completions", _chat)
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/sim/stats", _stats)
    return app


def run_sim_server(settings: Settings, profiles: Profiles, host: str, port: int) -> None:
    """Serve until SIGINT/SIGTERM (blocking). Handler cancellation is on, so a client that goes
    away stops its generation at once and is counted in `connections_closed_early`."""
    models = build_sim_models(settings, profiles)
    app = create_sim_app(models, profiles, max_body_bytes=settings.max_body_bytes)
    log.info("simulator serving %d model names on http://%s:%d: %s", len(models), host, port, ", ".join(models))
    web.run_app(app, host=host, port=port, handler_cancellation=True, access_log=None, print=None)


# -- handlers ----------------------------------------------------------------------------------


def _json(data: dict, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _error(status: int, message: str, *, type_: str | None = None, param: str | None = None,
           code: str | None = None) -> web.Response:
    if type_ is None:
        type_ = "server_error" if status >= 500 else "rate_limit_error" if status == 429 else "invalid_request_error"
    return _json({"error": {"message": message, "type": type_, "param": param, "code": code}}, status)


@web.middleware
async def _envelopes(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves as an OpenAI envelope, never aiohttp's text pages or a traceback."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = "not_found" if exc.status == 404 else None
        return _error(exc.status, f"{request.method} {request.path}: {exc.reason}", code=code)
    except (asyncio.CancelledError, ConnectionError):
        raise
    except Exception:
        log.exception("simulator handler failed")
        return _error(500, "internal error in the simulator")


async def _models(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    data = [{"id": n, "object": "model", "created": state.created, "owned_by": "pareto-sim"} for n in state.engines]
    return _json({"object": "list", "data": data})


async def _stats(request: web.Request) -> web.Response:
    return _json(request.app[_STATE].stats.to_dict())


async def _chat(request: web.Request) -> web.StreamResponse:
    state = request.app[_STATE]
    stats = state.stats
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        stats.open_connection("", stream=False).done = True
        return _error(400, "We could not parse the JSON body of your request.", code="invalid_json")
    if not isinstance(body, dict):
        stats.open_connection("", stream=False).done = True
        return _error(400, "The request body must be a JSON object.", code="invalid_json")
    name = body.get("model")
    conn = stats.open_connection(name if isinstance(name, str) else "", stream=bool(body.get("stream")))
    try:
        return await _answer(request, state, body, conn)
    finally:
        if conn.open:  # cancelled (client gone) or dropped without being marked
            stats.closed_early(conn)


async def _answer(request: web.Request, state: _SimState, body: dict, conn: ConnectionStats) -> web.StreamResponse:
    stats = state.stats
    name = conn.model
    entry = state.engines.get(name)
    if entry is None:
        conn.done = True
        return _error(404, f"The model {name!r} does not exist.", param="model", code="model_not_found")
    profile, engine = entry
    try:
        fault, plan = engine.prepare(body, model=name, profile_model=profile)
    except ProxyError as exc:
        conn.done = True
        return _error(exc.status, exc.message, type_=exc.type, param=exc.param, code="invalid_value")
    conn.script, conn.script_index = plan.script, plan.script_index
    if fault.latency_s > 0:
        await asyncio.sleep(fault.latency_s)
    if fault.kind == "error":
        stats.errors_injected += 1
        conn.done = True
        return _error(fault.status, f"simulated upstream fault: HTTP {fault.status}", code="simulated_fault")
    if fault.kind == "hang":
        stats.hangs_injected += 1
        try:
            await _until_client_leaves(request)
        finally:
            stats.closed_early(conn)
        return web.Response()  # never reaches anyone: the client is gone
    if body.get("stream"):
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        return await _stream(request, plan, fault, include_usage, stats, conn)
    await asyncio.sleep(plan.generation_s)
    if fault.kind == "disconnect":
        stats.disconnects_injected += 1
        stats.closed_early(conn)
        _drop(request)
        return web.Response()
    resp = _json(plan.response())
    sent = 0
    try:
        await resp.prepare(request)
        # counted before the body is handed over, so a client that has read it sees it counted
        sent = plan.completion_tokens
        stats.sent(conn, sent)
        await resp.write_eof()
        conn.done = True
    except ConnectionError:
        stats.sent(conn, -sent)
        stats.closed_early(conn)
    return resp


async def _stream(request: web.Request, plan: ResponsePlan, fault: FaultDecision, include_usage: bool,
                  stats: SimStats, conn: ConnectionStats) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    half = plan.n_events(include_usage) // 2
    sent = 0
    try:
        await resp.prepare(request)
        async for event in paced(plan.events(include_usage)):
            if fault.drops_before(sent, conn.tokens, half):
                stats.disconnects_injected += 1
                stats.closed_early(conn)
                _drop(request)
                return resp
            await resp.write(b"data: " + orjson.dumps(event.chunk) + b"\n\n")
            stats.sent(conn, event.tokens)
            sent += 1
        await resp.write(b"data: [DONE]\n\n")
        conn.done = True
    except ConnectionError:
        stats.closed_early(conn)
    except asyncio.CancelledError:
        stats.closed_early(conn)
        raise
    return resp


def _drop(request: web.Request) -> None:
    """Close the socket under the response: what the client sees of a crashed upstream."""
    transport = request.transport
    if transport is not None:
        transport.close()


async def _until_client_leaves(request: web.Request) -> None:
    """Hang. Polls the transport so a hung handler ends even without handler cancellation."""
    while request.transport is not None and not request.transport.is_closing():
        await asyncio.sleep(0.1)
