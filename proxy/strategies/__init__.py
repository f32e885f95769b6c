"""Executing a Plan: single, parallel and sequential strategies, cutoffs, answers, billing.

Public names are re-exported lazily: `answers` is imported by the verifiers, which the executor
imports in turn, so importing everything here eagerly would be circular (and slower).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "Executor": "proxy.strategies.executor",
    "Outcome": "proxy.strategies.executor",
    "RunContext": "proxy.strategies.executor",
    "Sample": "proxy.strategies.sampler",
    "Sampler": "proxy.strategies.sampler",
    "RetryPolicy": "proxy.strategies.sampler",
    "CircuitBreaker": "proxy.strategies.breaker",
    "equivalent": "proxy.strategies.answers",
    "extract_answer": "proxy.strategies.answers",
}

__all__ = ["CircuitBreaker", "Executor", "Outcome", "RetryPolicy", "RunContext", "Sample", "Sampler",
           "equivalent", "extract_answer"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'proxy.strategies' has no attribute {name!r}")
    return getattr(import_module(module), name)
