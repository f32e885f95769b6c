"""Checkers with one interface (`Verifier.verify -> Verdict`) and a registry that builds them by name."""

from proxy.verifiers.base import Verdict, Verifier
from proxy.verifiers.registry import VerifierRegistry, VerifierSpec, default_registry

__all__ = ["Verdict", "Verifier", "VerifierRegistry", "VerifierSpec", "default_registry"]
