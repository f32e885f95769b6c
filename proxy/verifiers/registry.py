"""Building verifiers by name from `{"name": ..., **arguments}` (a request's `routing.verifier`,
or a policy's per-task verifier).

Each entry is a name, a pydantic model of its arguments and a factory, so adding a checker
(`json_schema`, `python_tests`, `webhook`, ...) is one `register` call or one more entry in
`default_registry`, and every checker gets the same precise 400s for free: an unknown name lists
the known ones, a bad argument names its own param (``routing.verifier.pattern``) and says what
was expected.

Example::

    registry = default_registry()
    verifier = registry.build({"name": "math_answer", "reference": "42"})
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from proxy.errors import InvalidRequest
from proxy.verifiers.base import Verdict, Verifier
from proxy.verifiers.basic import MathAnswerArgs, MathAnswerVerifier, RegexArgs, RegexVerifier
from proxy.verifiers.code import PythonTestsArgs, PythonTestsVerifier
from proxy.verifiers.deps import Observe, VerifierDeps
from proxy.verifiers.puzzles import SatArgs, SatVerifier, TspArgs, TspVerifier
from proxy.verifiers.remote import LlmJudgeArgs, LlmJudgeVerifier, WebhookArgs, WebhookVerifier
from proxy.verifiers.scheduling import CalendarArgs, CalendarVerifier
from proxy.verifiers.schema import JsonSchemaArgs, JsonSchemaVerifier

__all__ = ["VerifierRegistry", "VerifierSpec", "default_registry"]


@dataclass(frozen=True, slots=True)
class VerifierSpec:
    """One registry entry: `factory(args)` builds the checker from its validated arguments."""

    name: str
    args: type[BaseModel]
    factory: Callable[[Any], Verifier]
    description: str = ""
    #: a check that needs the app (a judge model must be configured): (argument, message) or None
    check: Callable[[Any], tuple[str, str] | None] | None = None

    def arguments(self) -> str:
        """`pattern (required), must_match`: for error messages."""
        parts = [f"{f.alias or n} (required)" if f.is_required() else (f.alias or n)
                 for n, f in self.args.model_fields.items()]
        return ", ".join(parts) or "no arguments"


def _fail(param: str, message: str) -> InvalidRequest:
    # the same wording and code as the API's other routing checks (api/protocol.py)
    return InvalidRequest(f"Invalid value for '{param}': {message}", param=param, code="invalid_value")


def _describe(exc: ValidationError, param: str, spec: VerifierSpec) -> tuple[str, str]:
    """(param, message) for the first bad argument. A union field fails once per branch
    (``reference.str``, ``reference.int``): those become one message on the field itself."""
    errors = exc.errors()
    loc = errors[0]["loc"]
    path = [str(loc[0])] + [str(p) for p in loc[1:] if isinstance(p, int)] if loc else []
    same = [e for e in errors if e["loc"][:1] == loc[:1]]
    if errors[0]["type"] == "extra_forbidden":
        what = "unknown argument"
    else:
        msgs = list(dict.fromkeys(e["msg"].removeprefix("Value error, ") for e in same))
        what = "; or ".join(msgs)
    where = ".".join([param, *path])
    return where, f"{what} (verifier {spec.name!r} takes: {spec.arguments()})."


class VerifierRegistry:
    """Named verifier specs; an instance per app (never module-level), so tests can add their own."""

    def __init__(self, specs: Iterable[VerifierSpec] = (), *, observe: Observe | None = None) -> None:
        self._specs: dict[str, VerifierSpec] = {}
        self.observe = observe
        for spec in specs:
            self.register(spec)

    def register(self, spec: VerifierSpec) -> None:
        if spec.name in self._specs:
            raise ValueError(f"verifier {spec.name!r} is already registered")
        self._specs[spec.name] = spec

    def names(self) -> list[str]:
        return sorted(self._specs)

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def validate(self, config: Any, *, param: str = "routing.verifier") -> tuple[VerifierSpec, BaseModel]:
        """Check `config` without building: (spec, validated arguments), or `InvalidRequest`."""
        if isinstance(config, str):
            config = {"name": config}
        if not isinstance(config, Mapping):
            raise _fail(param, "expected an object with a 'name' and the verifier's arguments.")
        name = config.get("name")
        spec = self._specs.get(name) if isinstance(name, str) else None
        if spec is None:
            raise _fail(f"{param}.name", f"expected one of {', '.join(self.names())}, got {name!r}.")
        raw = {k: v for k, v in config.items() if k != "name"}
        try:
            args = spec.args.model_validate(raw)
        except ValidationError as exc:
            raise _fail(*_describe(exc, param, spec)) from None
        problem = spec.check(args) if spec.check is not None else None
        if problem is not None:
            raise _fail(f"{param}.{problem[0]}", f"{problem[1]} (verifier {spec.name!r} takes: {spec.arguments()}).")
        return spec, args

    def build(self, config: Any, *, param: str = "routing.verifier") -> Verifier:
        """A ready verifier from `{"name": ..., **arguments}` (a bare name works for arg-less ones).
        With an `observe` hook, every check it makes is timed and reported."""
        spec, args = self.validate(config, param=param)
        verifier = spec.factory(args)
        return verifier if self.observe is None else _Observed(verifier, self.observe)


class _Observed(Verifier):
    """A verifier whose every check is timed and reported (pass, fail or error) to `observe`."""

    def __init__(self, inner: Verifier, observe: Observe) -> None:
        self.inner, self._observe = inner, observe
        self.name = inner.name

    async def verify(self, candidate: str, context: Mapping[str, Any]) -> Verdict:
        start = time.perf_counter()
        result = "error"
        try:
            verdict = await self.inner.verify(candidate, context)
            result = "pass" if verdict.passed else "fail"
            return verdict
        finally:
            self._observe(self.name, time.perf_counter() - start, result)


def default_registry(deps: VerifierDeps | None = None) -> VerifierRegistry:
    """The built-ins, wired to the app's `deps` (a fresh default set without them). Later
    checkers are one more `VerifierSpec` here."""
    deps = deps if deps is not None else VerifierDeps()

    def judge_model(args: LlmJudgeArgs) -> tuple[str, str] | None:
        if deps.models is not None and args.model not in deps.models:
            known = ", ".join(sorted(deps.models)[:20])
            return "model", f"the judge model {args.model!r} is not configured (known: {known})"
        return None

    return VerifierRegistry([
        VerifierSpec("regex", RegexArgs, RegexVerifier, "the reply matches (or avoids) a regular expression"),
        VerifierSpec("math_answer", MathAnswerArgs, MathAnswerVerifier,
                     "the final answer equals a reference, or a final answer is stated at all"),
        VerifierSpec("json_schema", JsonSchemaArgs, JsonSchemaVerifier,
                     "the reply is JSON valid against a schema (or the request's response_format)"),
        VerifierSpec("python_tests", PythonTestsArgs, lambda a: PythonTestsVerifier(a, deps.sandbox),
                     "the reply's last code block passes the given tests, run in a sandbox"),
        VerifierSpec("sat", SatArgs, SatVerifier, "the reply's assignment satisfies a CNF formula"),
        VerifierSpec("tsp", TspArgs, TspVerifier, "the reply is a valid tour; shorter scores higher"),
        VerifierSpec("calendar", CalendarArgs, CalendarVerifier,
                     "the proposed meeting slot fits every participant and constraint"),
        VerifierSpec("llm_judge", LlmJudgeArgs, LlmJudgeVerifier, "a configured model grades against a rubric",
                     check=judge_model),
        VerifierSpec("webhook", WebhookArgs, lambda a: WebhookVerifier(a, deps.webhook_hosts),
                     "an HTTP endpoint of your own decides"),
    ], observe=deps.observe)
