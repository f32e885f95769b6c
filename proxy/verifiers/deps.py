"""What verifiers need from the app, handed to the registry once rather than found in globals.

`app.py` builds one `VerifierDeps` and passes it to `default_registry`; tests build their own.
Verifiers that only read the candidate need none of it.

- `models`: the configured models, so `llm_judge` can refuse an unknown judge with a 400 before
  any call (the call itself goes through the executor, which bills it; see `base.ModelCaller`);
- `sandbox`: the one `Sandbox` of the app (it probes the machine once and hands out uid slots);
- `observe(verifier, seconds, result)`: called after every check (result pass, fail or error),
  for `pareto_verifier_seconds` and the error count;
- `webhook_hosts`: when set, the only hosts a `webhook` verifier may call. A request-supplied
  URL lets any key holder make the proxy POST to internal addresses; deployments that expose
  the proxy to untrusted keys should set it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from proxy.verifiers.sandbox import Sandbox

__all__ = ["Observe", "VerifierDeps"]

Observe = Callable[[str, float, str], None]


@dataclass(slots=True)
class VerifierDeps:
    models: Mapping[str, Any] | None = None
    sandbox: Sandbox = field(default_factory=Sandbox)
    observe: Observe | None = None
    webhook_hosts: Collection[str] | None = None
