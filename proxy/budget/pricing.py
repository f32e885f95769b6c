"""Prices and capabilities of models, from the config or litellm's bundled price map.

The price map is read as a JSON file (`model_prices_and_context_window_backup.json`, shipped
inside the litellm package) without importing litellm, which would cost seconds and 170 MB at
start-up and may reach for the network.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """USD per million tokens; `source` says where the numbers came from (config, litellm, profile)."""

    input_usd_per_mtok: float
    output_usd_per_mtok: float
    source: str = "config"

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input_usd_per_mtok + completion_tokens * self.output_usd_per_mtok) / 1e6


@dataclass(frozen=True, slots=True)
class ModelCapabilities:
    tools: bool | None = None
    json_mode: bool | None = None
    context_tokens: int | None = None


@lru_cache(maxsize=1)
def litellm_price_map() -> dict:
    """litellm's bundled map, or {} when litellm is not installed (prices must then be configured)."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or spec.origin is None:
        return {}
    path = Path(spec.origin).parent / "model_prices_and_context_window_backup.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _entry(provider: str, model_id: str) -> dict | None:
    m = litellm_price_map()
    for key in (model_id, f"{provider}/{model_id}", model_id.split("/", 1)[-1]):
        e = m.get(key)
        if isinstance(e, dict) and "input_cost_per_token" in e:
            return e
    return None


def lookup_price(provider: str, model_id: str) -> ModelPrice | None:
    e = _entry(provider, model_id)
    if e is None:
        return None
    return ModelPrice(
        float(e.get("input_cost_per_token") or 0) * 1e6,
        float(e.get("output_cost_per_token") or 0) * 1e6,
        source=f"litellm:{model_id}",
    )


def lookup_capabilities(provider: str, model_id: str) -> ModelCapabilities:
    e = _entry(provider, model_id) or {}
    return ModelCapabilities(
        tools=e.get("supports_function_calling"),
        json_mode=e.get("supports_response_schema"),
        context_tokens=e.get("max_input_tokens"),
    )
