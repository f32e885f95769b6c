"""Configuration: one YAML file, every field optional, `PARETO_*` environment variables on top.

The file's shape is a contract (DESIGN.md, "Config file"). Unknown fields are rejected so a typo
fails at start with its path instead of silently doing nothing; every error is turned into a
`ConfigError` that names the field and the reason, never a traceback.

Without a file the proxy runs in *embedded* mode: one simulated model per profiled model, so
`make serve` answers requests on a fresh machine with no keys and no network.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from proxy.errors import ConfigError

TASKS = ("math", "science", "code", "planning", "sat", "tsp", "spatial", "chat")
DIFFICULTIES = ("easy", "medium", "hard")
#: the repository root, where the shipped `profiles/` and `policies/` live
PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PROFILES = PROJECT_ROOT / "profiles" / "default.json"
DEFAULT_POLICIES = PROJECT_ROOT / "policies"


def _known_task(v: str) -> str:
    if v not in TASKS:
        raise ValueError(f"unknown task {v!r}; expected one of {', '.join(TASKS)}")
    return v


#: a task name of the vocabulary (DESIGN.md), validated wherever a config or API field takes one
Task = Annotated[str, AfterValidator(_known_task)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Price(_Strict):
    input_usd_per_mtok: float = Field(ge=0)
    output_usd_per_mtok: float = Field(ge=0)


class Capabilities(_Strict):
    tools: bool | None = None
    json_mode: bool | None = Field(default=None, alias="json")
    context_tokens: int | None = Field(default=None, gt=0)


class Faults(_Strict):
    """Fault injection for the simulator: probabilities per request, latency before first byte."""

    latency_ms: float = Field(default=0.0, ge=0)
    error_rate: float = Field(default=0.0, ge=0, le=1)
    error_status: int = Field(default=500, ge=400, le=599)
    disconnect_rate: float = Field(default=0.0, ge=0, le=1)
    hang_rate: float = Field(default=0.0, ge=0, le=1)


class SimulatorSettings(_Strict):
    tokens_per_second: float = Field(default=20000.0, gt=0)
    tokens_per_chunk: int = Field(default=16, ge=1)
    seed: int | None = 0
    faults: Faults = Field(default_factory=Faults)


class ModelConfig(_Strict):
    name: str = Field(min_length=1)
    provider: str = "openai"
    model: str | None = None
    api_base: str | None = None
    api_key_env: str | None = None
    profile: str | None = None
    price: Price | None = None
    capabilities: Capabilities | None = None
    timeout_s: float = Field(default=600.0, gt=0)
    simulator: SimulatorSettings | None = None

    @model_validator(mode="after")
    def _defaults(self) -> "ModelConfig":
        if self.name.startswith("auto"):
            raise ValueError(f"model name {self.name!r} is reserved: 'auto' and 'auto/<policy>' are router aliases")
        if self.model is None:
            self.model = self.name
        if self.profile is None:
            self.profile = self.name
        if self.provider == "simulated" and self.simulator is None:
            self.simulator = SimulatorSettings()
        if self.provider != "simulated" and self.simulator is not None:
            raise ValueError("'simulator' settings only apply to provider: simulated")
        if self.provider == "openai" and self.api_base is None:
            self.api_base = "https://api.openai.com/v1"
        if self.api_base is not None:
            self.api_base = self.api_base.rstrip("/")
        return self

    @property
    def api_key(self) -> str | None:
        """The upstream key, read from the named environment variable at use time."""
        return os.environ.get(self.api_key_env) if self.api_key_env else None


class KeyConfig(_Strict):
    key_env: str = Field(min_length=1)
    team: str = Field(min_length=1)
    default_policy: str | None = None
    default_task: Task | None = None
    # extensions: per-minute rate limits of this key, enforced across replicas through the ledger
    rpm: int | None = Field(default=None, gt=0, description="requests per minute")
    tpm: int | None = Field(default=None, gt=0, description="tokens per minute")


class Settings(BaseSettings):
    """The whole configuration. Field names and meanings follow DESIGN.md's contract."""

    model_config = SettingsConfigDict(env_prefix="PARETO_", env_nested_delimiter="__", extra="forbid")

    models: list[ModelConfig] = Field(default_factory=list)
    profiles: str = str(DEFAULT_PROFILES)
    policies_dir: str = str(DEFAULT_POLICIES)
    default_policy: str = "balanced"
    ledger: str = "sqlite:///.pareto/ledger.db"
    reservation_ttl_s: float = Field(default=900, gt=0)
    traces_dir: str = ".pareto/traces"
    store_text: bool = False
    max_body_bytes: int = Field(default=32 * 1024 * 1024, gt=0)
    admin_key_env: str = "PARETO_ADMIN_KEY"
    keys: list[KeyConfig] = Field(default_factory=list)
    # extensions beyond the contract
    drain_timeout_s: float = Field(default=30.0, ge=0, description="SIGTERM grace period for in-flight requests")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    budget_webhook_url: str | None = Field(default=None, description="POSTed a JSON event when a soft budget limit is crossed")
    verifier_webhook_hosts: list[str] | None = Field(
        default=None, description="when set, the only hosts a webhook verifier may call (else any host)")
    budget_poll_s: float = Field(default=2.0, gt=0, description="how often budget gauges are read from the ledger")
    #: set by the loader: True when no config file was given (simulated models, dev key)
    embedded: bool = False

    @model_validator(mode="after")
    def _unique_names(self) -> "Settings":
        seen: set[str] = set()
        for i, m in enumerate(self.models):
            if m.name in seen:
                raise ValueError(f"models.{i}.name: duplicate model name {m.name!r}")
            seen.add(m.name)
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # environment overrides the file (the file arrives as init kwargs)
        return (env_settings, init_settings)

    def model(self, name: str) -> ModelConfig | None:
        return next((m for m in self.models if m.name == name), None)


def _format_validation(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def _resolve(path: str, base: Path) -> str:
    p = Path(path)
    return str(p if p.is_absolute() else (base / p))


def load_settings(path: str | os.PathLike | None = None) -> Settings:
    """Load the config file (or the embedded default when `path` is None) plus `PARETO_*` env.

    Relative `profiles` and `policies_dir` paths in a file are resolved against the file's
    directory, so a config works from whatever directory the proxy starts in.
    Raises `ConfigError` with one line per bad field.
    """
    path = path or os.environ.get("PARETO_CONFIG") or None
    data: dict[str, Any] = {}
    source = "embedded defaults"
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ConfigError(f"config file {path} is not valid YAML{where}: {getattr(e, 'problem', e)}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must be a mapping of fields, got {type(loaded).__name__}")
        base = Path(path).resolve().parent
        for key in ("profiles", "policies_dir"):
            if isinstance(loaded.get(key), str):
                loaded[key] = _resolve(loaded[key], base)
        data = loaded
    try:
        settings = Settings(**data)
    except ValidationError as e:
        raise ConfigError(_format_validation(e, source)) from None
    settings.embedded = path is None
    return settings
