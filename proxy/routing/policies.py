"""Named policies: what a team wants the planner to optimise, as YAML files in `policies/`.

A policy is data, validated with a schema so a typo in a file fails the start (or the reload)
with the file, the field and the reason. The set is reloadable: `PolicySet.load` builds a new
immutable set and the app swaps it in one assignment, so a request sees either the old set or
the new one, never half of each.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from proxy.errors import ConfigError

STRATEGY_NAMES = ("single", "parallel", "consensus", "sequential")


class Policy(BaseModel):
    """One policy. Objectives:

    - `accurate`: the highest predicted accuracy; among plans within `accuracy_tolerance` of it,
      the cheapest (so an adaptive plan that matches the best static one at a fraction of the
      cost wins over paying for the last tenth of a point).
    - `balanced`: maximise `100 * accuracy - lambda_usd * mean cost`, i.e. `lambda_usd` accuracy
      points are worth one dollar per request.
    - `cheap`: the lowest mean cost with accuracy >= `accuracy_target`.
    - `predictable`: the lowest p95 cost with accuracy >= `accuracy_target`.
    When no plan reaches the target, cheap and predictable take the most accurate plan and say so.

    Measured accuracies are noisy (a strategy row rests on tens of problems, and the best of a
    hundred noisy options overstates itself). Two knobs, off by default because neither helped
    on held-out problems of the shipped traces (bench/RESULTS.md): `shrinkage_problems` shrinks
    each strategy's gain over the model's single sample by `n / (n + shrinkage_problems)` for a
    row measured on `n` problems; `accuracy_z` makes `accurate` treat as tied every plan within
    that many (unpaired) standard errors of the best, or `accuracy_tolerance` if wider.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    objective: Literal["accurate", "balanced", "cheap", "predictable"]
    lambda_usd: float = Field(default=20.0, ge=0)
    accuracy_target: float = Field(default=0.7, ge=0, le=1)
    accuracy_tolerance: float = Field(default=0.01, ge=0, le=1)
    accuracy_z: float = Field(default=0.0, ge=0, le=5)
    shrinkage_problems: float = Field(default=0.0, ge=0)
    failure_level: float = Field(default=0.1, gt=0, lt=1)
    cutoffs: bool = True
    models: list[str] | None = None
    strategies: list[Literal["single", "parallel", "consensus", "sequential"]] = Field(
        default_factory=lambda: ["single", "parallel", "consensus"])
    max_k: int = Field(default=8, ge=1, le=64)
    fallback_model: str | None = None
    verifiers: dict[str, dict] = Field(default_factory=dict)
    shadow: bool = False
    default_model: str | None = None

    @model_validator(mode="after")
    def _check(self) -> "Policy":
        if not self.strategies:
            raise ValueError("strategies: must list at least one of " + ", ".join(STRATEGY_NAMES))
        if self.shadow and not self.default_model:
            raise ValueError("default_model: required in shadow mode (the model that actually serves)")
        for task, v in self.verifiers.items():
            if not isinstance(v, dict) or not isinstance(v.get("name"), str):
                raise ValueError(f"verifiers.{task}: expected an object with a 'name'")
        return self


def _errors(e: ValidationError, source: str) -> str:
    lines = [f"invalid policy {source}:"]
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        lines.append(f"  {loc}: {err['msg'].removeprefix('Value error, ')}")
    return "\n".join(lines)


def parse_policy(path: Path) -> Policy:
    """Read one policy file; the `name` defaults to the file's stem and must match it if given."""
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ConfigError(f"cannot read policy file {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"policy file {path} is not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"policy file {path} must be a mapping of fields")
    data.setdefault("name", path.stem)
    try:
        return Policy(**data)
    except ValidationError as e:
        raise ConfigError(_errors(e, str(path))) from None


class PolicySet:
    """Every policy of a directory, by name. Immutable once built."""

    def __init__(self, policies: dict[str, Policy], source: str) -> None:
        self._policies = dict(policies)
        self.source = source

    @classmethod
    def load(cls, directory: str | Path) -> "PolicySet":
        d = Path(directory)
        if not d.is_dir():
            raise ConfigError(f"policies_dir: {d} is not a directory")
        policies: dict[str, Policy] = {}
        for path in sorted(d.glob("*.y*ml")):
            p = parse_policy(path)
            if p.name in policies:
                raise ConfigError(f"policy {p.name!r} is defined twice in {d}")
            policies[p.name] = p
        if not policies:
            raise ConfigError(f"policies_dir: {d} holds no *.yaml policy files")
        return cls(policies, str(d))

    def get(self, name: str) -> Policy | None:
        return self._policies.get(name)

    def names(self) -> list[str]:
        return list(self._policies)

    def __contains__(self, name: str) -> bool:
        return name in self._policies


def load_policy(name_or_path: str, policies_dir: str | Path) -> Policy:
    """A policy by name from the directory, or from a YAML file path (for `replay --policy`)."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.is_file():
        return parse_policy(p)
    policies = PolicySet.load(policies_dir)
    policy = policies.get(name_or_path)
    if policy is None:
        raise ConfigError(f"unknown policy {name_or_path!r}; known: {', '.join(policies.names())} (or give a YAML file)")
    return policy
