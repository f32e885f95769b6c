"""The configured models as the router sees them: upstream, price, capabilities, profile."""

from __future__ import annotations

from dataclasses import dataclass

from proxy.budget.pricing import ModelCapabilities, ModelPrice
from proxy.errors import ModelNotFound
from proxy.upstream.base import Upstream

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


class Catalog:
    def __init__(self, entries: list[ModelEntry]) -> None:
        self.entries = {e.name: e for e in entries}
        self.default = entries[0] if entries else None

    def get(self, name: str) -> ModelEntry | None:
        return self.entries.get(name)

    def resolve(self, model: str) -> ModelEntry:
        """A configured model by name, or the 404 that lists what exists."""
        entry = self.entries.get(model)
        if entry is None:
            raise ModelNotFound(
                f"The model {model!r} does not exist on this proxy. Use one of: "
                f"{', '.join(list(self.entries)[:20])}, 'auto' or 'auto/<policy>' (GET /v1/models lists them).",
                param="model",
            )
        return entry

    async def aclose(self) -> None:
        for e in self.entries.values():
            await e.upstream.aclose()
