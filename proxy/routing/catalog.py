"""The configured models as the router sees them: upstream, price, capabilities, profile.

Router aliases resolve here too. Until the planner lands, `auto` and `auto/<policy>` map to a
fixed default model (the first configured one); the policy name is still recorded, so metrics
and traces already carry it.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.budget.pricing import ModelCapabilities, ModelPrice
from proxy.errors import ModelNotFound
from proxy.upstream.base import Upstream

BUILTIN_POLICIES = ("balanced", "accurate", "cheap", "predictable")


@dataclass(slots=True)
class ModelEntry:
    name: str
    provider: str
    profile: str
    upstream: Upstream
    price: ModelPrice | None
    capabilities: ModelCapabilities
    timeout_s: float
    reasoning: bool = False
    profiled: bool = False


@dataclass(frozen=True, slots=True)
class Resolution:
    entry: ModelEntry
    #: the policy named by `auto/<policy>` or `routing.policy`, else None (the key's or the default)
    policy: str | None
    routed: bool


class Catalog:
    def __init__(self, entries: list[ModelEntry], policies: tuple[str, ...] = BUILTIN_POLICIES) -> None:
        self.entries = {e.name: e for e in entries}
        self.policies = policies
        self.default = entries[0] if entries else None

    def get(self, name: str) -> ModelEntry | None:
        return self.entries.get(name)

    def resolve(self, model: str) -> Resolution:
        entry = self.entries.get(model)
        if entry is not None:
            return Resolution(entry, None, routed=False)
        if model == "auto" or model.startswith("auto/"):
            policy = model[5:] or None
            if policy is not None and policy not in self.policies:
                raise ModelNotFound(
                    f"Unknown routing policy {policy!r} in model {model!r}; known policies: {', '.join(self.policies)}.",
                    param="model",
                )
            if self.default is None:
                raise ModelNotFound("No models are configured, so 'auto' has nothing to route to.", param="model")
            return Resolution(self.default, policy, routed=True)
        raise ModelNotFound(
            f"The model {model!r} does not exist on this proxy. Use one of: "
            f"{', '.join(list(self.entries)[:20])}, 'auto' or 'auto/<policy>' (GET /v1/models lists them).",
            param="model",
        )

    async def aclose(self) -> None:
        for e in self.entries.values():
            await e.upstream.aclose()
