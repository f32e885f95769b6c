"""The app factory: the only place that wires concrete classes together.

Everything a request needs is built here once (profiles, the model catalog with one upstream
client per model, keys, metrics, the trace writer, the service) and hung on `AppState`; the
lifespan starts the background trace flusher and, on shutdown (after uvicorn has drained
in-flight requests on SIGTERM), flushes traces and closes upstream connections.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from starlette.applications import Starlette

from proxy.api.errors import EXCEPTION_HANDLERS
from proxy.api.routes import Api
from proxy.api.serving import ChatService
from proxy.budget.guard import BudgetGuard
from proxy.budget.keys import KeyStore
from proxy.budget.ledger import Ledger, open_ledger
from proxy.budget.pricing import ModelCapabilities, ModelPrice, lookup_capabilities, lookup_price
from proxy.config import ModelConfig, Settings, load_settings
from proxy.errors import ConfigError, ProxyError
from proxy.routing.catalog import Catalog, ModelEntry
from proxy.routing.estimate import CostEstimator
from proxy.routing.policies import PolicySet
from proxy.routing.profiles import Profiles
from proxy.routing.router import KeyDefaultLabeller, Labeller, Router, RoutingTables, build_tables
from proxy.strategies.breaker import CircuitBreaker
from proxy.strategies.executor import Executor
from proxy.strategies.sampler import RetryPolicy
from proxy.verifiers.deps import VerifierDeps
from proxy.verifiers.registry import VerifierRegistry, default_registry
from proxy.telemetry.logs import configure_logging
from proxy.telemetry.metrics import Metrics
from proxy.telemetry.traces import TraceWriter
from proxy.upstream.base import Upstream
from proxy.upstream.simulator import default_sim_name

log = logging.getLogger("proxy.app")


@dataclass
class AppState:
    settings: Settings
    catalog: Catalog
    router: Router
    keys: KeyStore
    metrics: Metrics
    traces: TraceWriter
    service: ChatService
    ledger: Ledger
    guard: BudgetGuard
    dev_key: str | None
    started: int
    ready: bool = False

    def reload(self) -> dict:
        """Re-read profiles and policies and swap them in; raises ConfigError (the old ones keep
        serving) if either is bad."""
        tables = load_tables(self.settings, self.catalog, verifiers=self.service.executor.verifiers)
        self.router.reload(tables)
        return {"policies": tables.policies.names(),
                "profile_rows": len(tables.profiles.rows) if tables.profiles else 0}


def load_profiles(settings: Settings) -> Profiles | None:
    """The profiles file; required in embedded mode (the simulated models imitate it)."""
    path = settings.profiles
    if not os.path.exists(path):
        if settings.embedded or any(m.provider == "simulated" for m in settings.models):
            raise ConfigError(f"profiles: file {path} does not exist (simulated models need a profile)")
        log.warning("profiles file missing; cost prediction uses recent actuals only", extra={"path": path})
        return None
    return Profiles.load(path)


def embedded_models(profiles: Profiles) -> list[ModelConfig]:
    """One simulated model per profiled model: what `make serve` answers with, no keys needed."""
    return [ModelConfig(name=default_sim_name(p), provider="simulated", profile=p) for p in profiles.simulatable_models()]


def build_upstream(cfg: ModelConfig, profiles: Profiles | None) -> Upstream:
    if cfg.provider == "simulated":
        from proxy.upstream.simulator.inprocess import SimulatedUpstream

        assert profiles is not None and cfg.simulator is not None and cfg.profile is not None
        if cfg.profile not in profiles.simulatable_models():
            raise ConfigError(f"models: {cfg.name!r} imitates profile {cfg.profile!r}, which {profiles_path(profiles)} "
                              f"cannot simulate (it needs a price and a fitted length distribution); "
                              f"known: {', '.join(profiles.simulatable_models())}")
        return SimulatedUpstream(cfg.name, cfg.profile, profiles, cfg.simulator)
    if cfg.provider == "openai":
        from proxy.upstream.openai_compat import OpenAICompatUpstream

        assert cfg.api_base is not None and cfg.model is not None
        return OpenAICompatUpstream(cfg.name, cfg.model, cfg.api_base, cfg.api_key)
    from proxy.upstream.litellm_client import LiteLLMUpstream

    assert cfg.model is not None
    return LiteLLMUpstream(cfg.name, cfg.provider, cfg.model, cfg.api_base, cfg.api_key)


def profiles_path(profiles: Profiles) -> str:
    return getattr(profiles, "source", "the profiles file")


def build_entry(cfg: ModelConfig, profiles: Profiles | None) -> ModelEntry:
    assert cfg.model is not None and cfg.profile is not None
    info = profiles.models.get(cfg.profile) if profiles else None
    price: ModelPrice | None = None
    if cfg.price is not None:
        price = ModelPrice(cfg.price.input_usd_per_mtok, cfg.price.output_usd_per_mtok, "config")
    if price is None and cfg.provider != "simulated":
        price = lookup_price(cfg.provider, cfg.model)
    if price is None and info is not None:
        price = ModelPrice(info.input_usd_per_mtok, info.output_usd_per_mtok, f"profile:{cfg.profile}")
    if price is None:
        log.warning("no price for model; its cost is counted as 0: set models[].price",
                    extra={"model": cfg.name})
    caps = lookup_capabilities(cfg.provider, cfg.model)
    if cfg.capabilities is not None:
        c = cfg.capabilities
        caps = ModelCapabilities(
            tools=c.tools if c.tools is not None else caps.tools,
            json_mode=c.json_mode if c.json_mode is not None else caps.json_mode,
            context_tokens=c.context_tokens or caps.context_tokens,
        )
    return ModelEntry(
        name=cfg.name, provider=cfg.provider, profile=cfg.profile, upstream=build_upstream(cfg, profiles),
        price=price, capabilities=caps, timeout_s=cfg.timeout_s,
        reasoning=bool(info and info.reasoning), profiled=bool(profiles and profiles.rows_for(cfg.profile)),
    )


def load_tables(settings: Settings, catalog: Catalog, profiles: Profiles | None = None,
                verifiers: VerifierRegistry | None = None) -> RoutingTables:
    """Profiles, policies and the planner built from them: the reloadable part of routing. A
    policy's per-task verifiers are checked here, so a typo fails the start (or the reload)
    rather than every request of that task."""
    profiles = profiles if profiles is not None else load_profiles(settings)
    policies = PolicySet.load(settings.policies_dir)
    if settings.default_policy not in policies:
        raise ConfigError(f"default_policy: {settings.default_policy!r} is not a policy in {settings.policies_dir} "
                          f"(known: {', '.join(policies.names())})")
    for name in policies.names():
        p = policies.get(name)
        assert p is not None
        for field_name, model in (("fallback_model", p.fallback_model), ("default_model", p.default_model)):
            if model and catalog.get(model) is None:
                raise ConfigError(f"policy {name}: {field_name} {model!r} is not a configured model")
        for task, config in (p.verifiers.items() if verifiers is not None else ()):
            try:
                verifiers.validate(config, param=f"verifiers.{task}")  # type: ignore[union-attr]
            except ProxyError as e:
                raise ConfigError(f"policy {name}: {e.message}") from None
    return build_tables(catalog, profiles, policies)


def build_state(settings: Settings) -> AppState:
    profiles = load_profiles(settings)
    if settings.embedded and not settings.models:
        assert profiles is not None
        settings.models = embedded_models(profiles)
    catalog = Catalog([build_entry(m, profiles) for m in settings.models])
    metrics = Metrics()
    verifiers = default_registry(VerifierDeps(models=catalog.entries, observe=metrics.observe_verifier,
                                              webhook_hosts=settings.verifier_webhook_hosts))
    router = Router(catalog, load_tables(settings, catalog, profiles, verifiers), CostEstimator(profiles),
                    make_labeller(), settings.default_policy)
    keys, dev_key = KeyStore.from_settings(settings)
    traces = TraceWriter(settings.traces_dir)
    ledger = open_ledger(settings.ledger)
    guard = BudgetGuard(ledger, metrics, settings.reservation_ttl_s, settings.budget_webhook_url, settings.budget_poll_s)
    breaker, retry = CircuitBreaker(), RetryPolicy()
    executor = Executor(catalog.entries, breaker, verifiers, retry=retry)
    service = ChatService(settings, router, executor, breaker, retry, metrics, traces, guard)
    return AppState(settings, catalog, router, keys, metrics, traces, service, ledger, guard, dev_key, int(time.time()))


def make_labeller() -> Labeller:
    """The task classifier (explicit task > key default > classifier above its confidence
    floor); without its weights file, explicit task > the key's default."""
    from proxy.routing.classifier import TaskClassifier

    try:
        return TaskClassifier.load()
    except (ConfigError, OSError, ValueError, KeyError) as e:  # a missing or damaged weights file
        log.warning("task classifier unavailable; tasks come from routing.task or the key",
                    extra={"error": str(e)})
        return KeyDefaultLabeller()


def create_app(settings: Settings | None = None) -> Starlette:
    """Build the app. Without settings, load them from `PARETO_CONFIG` (or the embedded default)."""
    settings = settings if settings is not None else load_settings(None)
    state = build_state(settings)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state.traces.start()
        await state.guard.refresh_keys(state.keys)  # ledger keys authenticate from the first request
        state.guard.start(state.keys)
        state.ready = True
        log.info("proxy ready", extra={"models": list(state.catalog.entries), "embedded": settings.embedded,
                                        "pid": os.getpid()})
        try:
            yield
        finally:
            state.ready = False
            await state.guard.close()  # in-flight requests have settled; release what is still held
            await state.traces.close()
            await state.catalog.aclose()
            log.info("proxy stopped", extra={"pid": os.getpid()})

    # Starlette rather than Starlette: the routes use none of Starlette's features, and its extra
    # middleware (telemetry, body limit, exit stack) measured about 15% of the CPU per request.
    app = Starlette(routes=Api(state).routes(), lifespan=lifespan, exception_handlers=EXCEPTION_HANDLERS)
    app.state.pareto = state
    return app


def app_from_env() -> Starlette:
    """Factory for uvicorn workers (`--workers N`): each worker loads config from the environment."""
    settings = load_settings(os.environ.get("PARETO_CONFIG") or None)
    configure_logging(settings.log_level)
    return create_app(settings)
