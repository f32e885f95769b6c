"""Routing one request: which policy, which task, which plan, on which configured model.

The router holds the reloadable parts (profiles, policies, the planner) behind one reference:
`reload()` builds a complete new `RoutingTables` and swaps it in a single assignment, so a
request in flight keeps the tables it started with.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

import orjson

from proxy.errors import InvalidRequest, ModelNotFound
from proxy.routing.catalog import Catalog, ModelEntry
from proxy.routing.estimate import CostEstimator
from proxy.routing.plan import Plan, from_strategy
from proxy.routing.planner import Candidate, Planner, PlanRequest
from proxy.routing.policies import Policy, PolicySet
from proxy.routing.profiles import Profiles


@dataclass(frozen=True, slots=True)
class TaskLabel:
    task: str | None
    difficulty: str | None
    source: str | None  # "explicit" | "key" | "classifier" | None


class Labeller(Protocol):
    def label(self, messages: list[dict], explicit: str | None, key_default: str | None) -> TaskLabel: ...


class KeyDefaultLabeller:
    """Explicit task, else the key's default: what labelling does without a classifier."""

    def label(self, messages: list[dict], explicit: str | None, key_default: str | None) -> TaskLabel:
        if explicit:
            return TaskLabel(explicit, None, "explicit")
        return TaskLabel(key_default, None, "key" if key_default else None)


@dataclass(frozen=True, slots=True)
class RoutingTables:
    profiles: Profiles | None
    policies: PolicySet
    planner: Planner | None


@dataclass(frozen=True, slots=True)
class Decision:
    entry: ModelEntry
    plan: Plan
    policy: str
    label: TaskLabel
    routed: bool
    #: shadow mode: what the planner would have done (recorded, not served)
    shadow: Plan | None = None


def candidates(catalog: Catalog) -> list[Candidate]:
    return [Candidate(e.name, e.profile, e.price, e.capabilities.tools, e.capabilities.json_mode, e.reasoning)
            for e in catalog.entries.values() if e.profiled]


def build_tables(catalog: Catalog, profiles: Profiles | None, policies: PolicySet) -> RoutingTables:
    planner = Planner(profiles, candidates(catalog)) if profiles else None
    return RoutingTables(profiles, policies, planner)


def conversation_key(routing: dict, body: dict) -> tuple[str, bool]:
    """(key, continues): which conversation a request belongs to — `routing.session`, else the
    hash of (user, system prompt, first user turn), which every later turn repeats — and whether
    it continues one (a session id, or an assistant turn already in the messages)."""
    if routing.get("session"):
        return "s:" + routing["session"], True
    messages = body["messages"]
    first_user = next((m.get("content") for m in messages if m.get("role") == "user"), None)
    system = next((m.get("content") for m in messages if m.get("role") in ("system", "developer")), None)
    raw = orjson.dumps([body.get("user"), system, first_user])
    continues = any(m.get("role") == "assistant" for m in messages)
    return "c:" + hashlib.blake2b(raw, digest_size=16).hexdigest(), continues


class Router:
    def __init__(self, catalog: Catalog, tables: RoutingTables, estimator: CostEstimator, labeller: Labeller,
                 default_policy: str, sessions: int = 100_000) -> None:
        self.catalog = catalog
        self.tables = tables
        self.estimator = estimator
        self.labeller = labeller
        self.default_policy = default_policy
        #: conversation key -> the model that answered it (bounded, oldest dropped first)
        self._sessions: OrderedDict[str, str] = OrderedDict()
        self._sessions_max = sessions

    def reload(self, tables: RoutingTables) -> None:
        self.tables = tables  # one assignment: requests see the old tables or the new, never a mix

    def policy_names(self) -> list[str]:
        return self.tables.policies.names()

    def _policy(self, name: str, param: str) -> Policy:
        policy = self.tables.policies.get(name)
        if policy is None:
            known = ", ".join(self.tables.policies.names())
            if param == "model":
                raise ModelNotFound(f"Unknown routing policy {name!r} in model 'auto/{name}'; known policies: {known}.",
                                    param="model")
            raise InvalidRequest(f"Unknown policy {name!r}; known policies: {known}.", param=param, code="invalid_value")
        return policy

    def decide(self, model: str, routing: dict, body: dict, key_policy: str | None, key_task: str | None,
               prompt_tokens: int, budget_remaining_usd: float | None = None) -> Decision:
        """The plan for one request. `budget_remaining_usd` (per requested choice) makes the
        planner prefer plans whose p95 cost fits what the key's and team's budgets have left."""
        tables = self.tables
        entry = self.catalog.get(model)
        alias = None
        if entry is None:
            if model != "auto" and not model.startswith("auto/"):
                self.catalog.resolve(model)  # raises the 404 with the list of models
            alias = model[5:] or None
        if alias is not None:
            policy = self._policy(alias, "model")
        elif routing.get("policy"):
            policy = self._policy(routing["policy"], "routing.policy")
        else:
            policy = self._policy(key_policy or self.default_policy, "routing.policy")
        label = self.labeller.label(body["messages"], routing.get("task"), key_task)
        difficulty = routing.get("difficulty")
        label = TaskLabel(label.task, difficulty, label.source)
        if entry is not None:
            reason = f"concrete model {entry.name!r} requested"
            strategy = _strategy(routing.get("strategy"))
            plan = (from_strategy(entry.name, strategy, reason=reason + "; strategy requested by the client")
                    if strategy else Plan(model=entry.name, reason=reason))
            plan = self._estimated(entry, self._overrides(plan, routing, policy, label), body, label, prompt_tokens)
            return Decision(entry, plan, policy.name, label, routed=False)
        rf = body.get("response_format")
        convo, continues = conversation_key(routing, body)
        sticky = self._sessions.get(convo) if continues else None
        if sticky is not None and self.catalog.get(sticky) is None:
            sticky = None
        request = PlanRequest(
            task=label.task, difficulty=difficulty, prompt_tokens=prompt_tokens,
            accuracy_target=routing.get("accuracy_target"), max_cost_usd=routing.get("max_cost_usd"),
            needs_tools=bool(body.get("tools")),
            needs_json=isinstance(rf, dict) and rf.get("type") in ("json_object", "json_schema"),
            strategy=_strategy(routing.get("strategy")), cutoff_tokens=routing.get("cutoff_tokens"),
            only_model=sticky, budget_remaining_usd=budget_remaining_usd,
        )
        if tables.planner is None:
            plan = Plan(model=policy.fallback_model or self.catalog.default.name,  # type: ignore[union-attr]
                        reason="no profiles loaded: the fallback model serves")
        else:
            plan = tables.planner.plan(policy, request)
        plan = self._overrides(plan, routing, policy, label)
        shadow = None
        if policy.shadow:
            shadow, plan = plan, Plan(model=policy.default_model or plan.model,
                                      reason=f"shadow mode: {policy.default_model} serves; the planner's choice is recorded")
        chosen = self.catalog.get(plan.model)
        if chosen is None:
            raise ModelNotFound(f"Policy {policy.name!r} chose model {plan.model!r}, which is not configured.",
                                param="model")
        if plan.predicted_cost_p50 is None:
            plan = self._estimated(chosen, plan, body, label, prompt_tokens)
        if sticky is not None:
            plan = plan.with_(reason=f"conversation stays on {sticky}; " + plan.reason)
        self._remember(convo, plan.model)
        return Decision(chosen, plan, policy.name, label, routed=True, shadow=shadow)

    @staticmethod
    def _overrides(plan: Plan, routing: dict, policy: Policy, label: TaskLabel) -> Plan:
        """The request's explicit cutoff, restarts and verifier, and the policy's fallback model
        and per-task verifier, applied to whatever plan was chosen."""
        changes: dict = {}
        if routing.get("cutoff_tokens") is not None:
            changes["cutoff_tokens"] = routing["cutoff_tokens"]
        if routing.get("max_restarts") is not None:
            changes["max_restarts"] = routing["max_restarts"]
            if routing["max_restarts"] > 0 and plan.restart == "stop":
                changes["restart"] = "same"
        verifier = routing.get("verifier") or (policy.verifiers.get(label.task) if label.task else None)
        if verifier is not None:
            changes["verifier"] = verifier
        if policy.fallback_model and not plan.fallback_model and policy.fallback_model != plan.model:
            changes["fallback_model"] = policy.fallback_model
        return plan.with_(**changes) if changes else plan

    def _remember(self, key: str, model: str) -> None:
        self._sessions[key] = model
        self._sessions.move_to_end(key)
        if len(self._sessions) > self._sessions_max:
            self._sessions.popitem(last=False)

    def _estimated(self, entry: ModelEntry, plan: Plan, body: dict, label: TaskLabel, prompt_tokens: int) -> Plan:
        """Cost of a plan the planner did not price (a concrete model, an explicit strategy): one
        sample's cost, capped at the cutoff, times the samples the plan starts; the p95 (what
        budgets reserve) also covers every restart the plan allows, since each is one more
        sample."""
        cap = body.get("max_completion_tokens") or body.get("max_tokens")
        if plan.cutoff_tokens is not None:
            cap = min(cap, plan.cutoff_tokens) if cap else plan.cutoff_tokens
        p50, p95 = self.estimator.predict(entry, prompt_tokens, cap, 1, label.task, label.difficulty)
        samples = plan.max_samples + (plan.rounds or 0) * (2 if plan.critic_model else 1)
        restarts = plan.max_restarts * plan.max_samples if plan.restart != "stop" else 0
        return plan.with_(predicted_cost_p50=p50 * samples, predicted_cost_p95=p95 * (samples + restarts))


def _strategy(value: object) -> dict | None:
    if value is None:
        return None
    return {"name": value} if isinstance(value, str) else dict(value)  # type: ignore[call-overload]
