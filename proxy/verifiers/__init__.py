"""Checkers with one interface (`Verifier.verify -> Verdict`) and a registry that builds them by name."""

from proxy.verifiers.base import ModelCaller, Verdict, Verifier, VerifierUnavailable
from proxy.verifiers.deps import VerifierDeps
from proxy.verifiers.registry import VerifierRegistry, VerifierSpec, default_registry
from proxy.verifiers.sandbox import Sandbox, SandboxLimits, SandboxResult

__all__ = ["ModelCaller", "Sandbox", "SandboxLimits", "SandboxResult", "Verdict", "Verifier", "VerifierDeps",
           "VerifierRegistry", "VerifierSpec", "VerifierUnavailable", "default_registry"]
