"""The verifier registry: precise 400s for bad configs, built-in checks, and adding a checker."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict

from proxy.errors import InvalidRequest
from proxy.verifiers import Verdict, Verifier, VerifierRegistry, VerifierSpec, default_registry


@pytest.fixture
def registry() -> VerifierRegistry:
    return default_registry()


@pytest.mark.parametrize("config, param, fragment", [
    ({"name": "nope"}, "routing.verifier.name", "expected one of calendar, json_schema, llm_judge, math_answer, python_tests, regex, sat, tsp, webhook, got 'nope'"),
    ({"pattern": "x"}, "routing.verifier.name", "expected one of"),
    (5, "routing.verifier", "expected an object with a 'name'"),
    ({"name": "regex"}, "routing.verifier.pattern", "Field required"),
    ({"name": "regex", "pattern": "("}, "routing.verifier.pattern", "not a valid regular expression"),
    ({"name": "regex", "pattern": ""}, "routing.verifier.pattern", "at least 1 character"),
    ({"name": "regex", "pattern": "a", "must_match": "yes"}, "routing.verifier.must_match", "valid boolean"),
    ({"name": "regex", "pattern": "a", "flags": "i"}, "routing.verifier.flags", "unknown argument"),
    ({"name": "math_answer", "reference": [1]}, "routing.verifier.reference", "valid string"),
    ({"name": "math_answer", "reference": "  "}, "routing.verifier.reference", "must not be empty"),
])
def test_bad_configs_are_400s_naming_the_argument(registry, config, param, fragment):
    with pytest.raises(InvalidRequest) as info:
        registry.build(config)
    err = info.value
    assert err.status == 400 and err.param == param and err.code == "invalid_value"
    assert fragment in err.message and f"'{param}'" in err.message
    if param.count(".") == 2 and not param.endswith(".name"):
        assert "takes:" in err.message  # the message lists what the verifier does take


def test_the_param_prefix_follows_where_the_config_came_from(registry):
    with pytest.raises(InvalidRequest) as info:
        registry.build({"name": "regex"}, param="policies.balanced.verifiers.code")
    assert info.value.param == "policies.balanced.verifiers.code.pattern"


async def test_regex(registry):
    must = registry.build({"name": "regex", "pattern": r"\bAnswer: [A-D]\b"})
    ok = await must.verify("so... Answer: B", {})
    assert ok == Verdict(True, 1.0, "") and must.name == "regex"
    bad = await must.verify("I think B", {})
    assert not bad.passed and bad.score == 0.0 and "must match" in bad.feedback
    avoid = registry.build({"name": "regex", "pattern": "(?i)as an ai", "must_match": False})
    assert (await avoid.verify("Sure: 4", {})).passed
    assert "must not match" in (await avoid.verify("As an AI, 4", {})).feedback


async def test_math_answer_with_a_reference(registry):
    v = registry.build({"name": "math_answer", "reference": "1/2"})
    assert (await v.verify("thus \\boxed{0.5}", {})).passed
    assert (await v.verify("thus \\boxed{\\frac{2}{4}}", {})).passed  # algebra, off the loop
    wrong = await v.verify("thus \\boxed{2}", {})
    assert not wrong.passed and "1/2" not in wrong.feedback and "0.5" not in wrong.feedback  # never leaks
    assert not (await v.verify("no answer at all", {})).passed
    numeric = registry.build({"name": "math_answer", "reference": 42})
    assert (await numeric.verify("Final answer: 42.", {})).passed


async def test_math_answer_without_a_reference_wants_a_well_formed_answer(registry):
    v = registry.build("math_answer")
    assert (await v.verify("so \\boxed{17}", {})).passed
    assert (await v.verify("Answer: C", {})).passed
    missing = await v.verify("it might be 17", {})
    assert not missing.passed and "\\boxed" in missing.feedback


async def test_adding_a_verifier_is_one_registry_entry(registry):
    class LengthArgs(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        max_chars: int

    class Short(Verifier):
        name = "short"

        def __init__(self, args: LengthArgs) -> None:
            self.max_chars = args.max_chars

        async def verify(self, candidate, context):
            ok = len(candidate) <= self.max_chars
            return Verdict(ok, 1.0 if ok else 0.0, "" if ok else f"Keep it under {self.max_chars} characters.")

    registry.register(VerifierSpec("short", LengthArgs, Short))
    assert "short" in registry and registry.names() == sorted(
        ["calendar", "json_schema", "llm_judge", "math_answer", "python_tests", "regex", "sat", "short", "tsp", "webhook"])
    assert (await registry.build({"name": "short", "max_chars": 3}).verify("abc", {})).passed
    with pytest.raises(InvalidRequest) as info:
        registry.build({"name": "short", "max_chars": "3"})
    assert info.value.param == "routing.verifier.max_chars"
    with pytest.raises(ValueError):
        registry.register(VerifierSpec("short", LengthArgs, Short))
    assert "short" not in default_registry()  # registries are instances, not shared state
