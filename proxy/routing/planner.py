"""The planner: request -> Plan, from measured profiles, under a policy's objective.

It enumerates plans (model x strategy x cutoff and restart rule) whose accuracy and token use
were measured by replaying recorded samples (the profile's strategy rows, plus the plain
single-sample row), predicts each plan's cost for this request's prompt, drops what the request
cannot use (capabilities, `max_cost_usd`, the remaining budget) and picks by the objective.

Speed: the options of a (policy, task, difficulty, capabilities) cell are built once into numpy
arrays; a decision is then a few vector operations and one argmin, far inside the 200 us
budget per request.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import math

import numpy as np

from proxy.budget.pricing import ModelPrice
from proxy.routing.cutoffs import cutoff_for_level
from proxy.routing.plan import Plan, from_strategy
from proxy.routing.policies import Policy
from proxy.routing.profiles import ProfileRow, Profiles


@dataclass(frozen=True, slots=True)
class Candidate:
    """A model the planner may choose: its name for clients, its profile rows, price, capabilities."""

    name: str
    profile: str
    price: ModelPrice | None
    tools: bool | None = None
    json_mode: bool | None = None
    reasoning: bool = False


@dataclass(frozen=True, slots=True)
class PlanRequest:
    """What the planner needs to know about one request."""

    task: str | None
    difficulty: str | None = None
    prompt_tokens: int = 0
    accuracy_target: float | None = None
    max_cost_usd: float | None = None
    needs_tools: bool = False
    needs_json: bool = False
    budget_remaining_usd: float | None = None
    strategy: dict | None = None
    cutoff_tokens: int | None = None
    max_restarts: int | None = None
    #: keep the conversation on this model (stickiness): model choice is skipped, strategy is not
    only_model: str | None = None


def family(plan: Plan) -> str:
    """The policy-level strategy name of a plan: single, parallel, consensus or sequential."""
    if plan.aggregator == "consensus":
        return "consensus"
    return plan.strategy


@dataclass(slots=True)
class _Cell:
    """The options of one (policy, task, difficulty, capabilities) cell as parallel arrays."""

    plans: list[Plan]
    acc: np.ndarray
    se: np.ndarray
    tok_mean: np.ndarray
    tok_p50: np.ndarray
    tok_p95: np.ndarray
    samples: np.ndarray
    pin: np.ndarray
    pout: np.ndarray
    policy: Policy  # held so the cache key (its id) cannot be reused by another object


def _plan_from_row(row: ProfileRow, model: str) -> Plan:
    cfg = row.plan or {}
    return Plan(
        model=model, strategy=row.strategy or "single", k=row.k or 1, aggregator=cfg.get("aggregator"),
        m=cfg.get("m"), k_max=cfg.get("k_max"), margin=cfg.get("margin"), cutoff_tokens=cfg.get("cutoff_tokens"),
        restart=cfg.get("restart", "stop"), max_restarts=int(cfg.get("max_restarts", 0)),
    )


class Planner:
    def __init__(self, profiles: Profiles, candidates: list[Candidate],
                 executable: Callable[[Plan], bool] | frozenset[str] | None = None) -> None:
        """`executable` limits plans to what the serving side can run (labels like "single" or
        "parallel/majority", or a predicate); None allows every measured plan (offline replay)."""
        self.profiles = profiles
        self.candidates = {c.name: c for c in candidates}
        if isinstance(executable, frozenset):
            labels = executable
            self.executable: Callable[[Plan], bool] | None = lambda p: p.label() in labels
        else:
            self.executable = executable
        self._cells: dict[tuple, _Cell] = {}

    # ---- options ------------------------------------------------------------------------

    def _candidates(self, policy: Policy, req: PlanRequest) -> list[Candidate]:
        names = policy.models if policy.models else list(self.candidates)
        if req.only_model is not None:
            names = [req.only_model]
        out = []
        for n in names:
            c = self.candidates.get(n)
            if c is None or c.price is None:
                continue
            if (req.needs_tools and c.tools is False) or (req.needs_json and c.json_mode is False):
                continue
            out.append(c)
        return out

    def _allowed(self, plan: Plan, policy: Policy, req: PlanRequest, single_only: bool) -> bool:
        if single_only and plan.strategy != "single":
            return False
        if family(plan) not in policy.strategies or plan.max_samples > policy.max_k:
            return False
        if plan.cutoff_tokens is not None and not policy.cutoffs:
            return False
        if plan.restart == "escalate" and not policy.fallback_model:
            return False
        return self.executable is None or self.executable(plan)

    def _cell(self, policy: Policy, req: PlanRequest) -> _Cell:
        key = (id(policy), req.task, req.difficulty, req.needs_tools, req.needs_json, req.only_model)
        cell = self._cells.get(key)
        if cell is not None:
            return cell
        # answers that are tool calls or JSON cannot be majority-voted as text: single samples
        # unless the policy has a verifier that can judge them
        single_only = (req.needs_tools or req.needs_json) and not policy.verifiers.get(req.task or "")
        plans: list[Plan] = []
        stats: list[tuple[float, float, float, float, float, float, float, float]] = []
        for c in self._candidates(policy, req):
            base = self.profiles.row(c.profile, req.task, req.difficulty) if req.task else None
            if base is None:
                continue
            assert c.price is not None
            pin, pout = c.price.input_usd_per_mtok / 1e6, c.price.output_usd_per_mtok / 1e6
            srows = self.profiles.strategy_rows(c.profile, req.task, req.difficulty)
            # strategy rows count problems; the plain row counts samples (correlated per problem)
            problems = max((r.n for r in srows), default=base.n)
            # cut rows were measured at the task-level threshold of the fit's level: usable only
            # when this policy's failure level reads the same cut from the curve
            task_row = self.profiles.row(c.profile, req.task) or base
            cut = cutoff_for_level(task_row, policy.failure_level)
            rows: list[tuple[Plan, ProfileRow, float]] = [(Plan(model=c.name), base, 1.0)]
            for row in srows:
                p = _plan_from_row(row, c.name)
                if p.cutoff_tokens is not None and p.cutoff_tokens != cut:
                    continue  # measured at another failure level than this policy's
                if p.restart == "escalate":
                    p = p.with_(fallback_model=policy.fallback_model)
                rows.append((p, row, float((row.plan or {}).get("samples_mean", p.max_samples))))
            for p, row, samples in rows:
                if not self._allowed(p, policy, req, single_only):
                    continue
                t = row.tokens
                if t.mean is None:  # a published row with accuracy only: no cost can be predicted
                    continue
                n = row.n if row.strategy is not None else problems
                acc = row.accuracy
                if row.strategy is not None and policy.shrinkage_problems > 0:
                    acc = base.accuracy + (acc - base.accuracy) * n / (n + policy.shrinkage_problems)
                se = math.sqrt(max(acc * (1 - acc), 0.01) / max(n, 1))
                p50 = t.p50 if t.p50 is not None else t.mean
                p95 = t.p95 if t.p95 is not None else t.mean
                plans.append(p)
                stats.append((acc, se, t.mean, p50, p95, samples, pin, pout))
        arr = np.array(stats, dtype=float).reshape(-1, 8)
        cell = _Cell(plans, *(arr[:, i].copy() for i in range(8)), policy=policy)
        self._cells[key] = cell
        return cell

    def options(self, policy: Policy, request: PlanRequest) -> list[Plan]:
        """Every plan considered for this request, with its predictions (for explain and tests)."""
        cell = self._cell(policy, request)
        mean, p50, p95 = self._costs(cell, request)
        return [self._predicted(cell, i, mean, p50, p95, "") for i in range(len(cell.plans))]

    # ---- choice -------------------------------------------------------------------------

    @staticmethod
    def _costs(cell: _Cell, req: PlanRequest) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        prompt = req.prompt_tokens * cell.samples * cell.pin
        return prompt + cell.tok_mean * cell.pout, prompt + cell.tok_p50 * cell.pout, prompt + cell.tok_p95 * cell.pout

    @staticmethod
    def _predicted(cell: _Cell, i: int, mean: np.ndarray, p50: np.ndarray, p95: np.ndarray, reason: str) -> Plan:
        return cell.plans[i].with_(
            predicted_accuracy=float(cell.acc[i]), predicted_cost_p50=float(p50[i]), predicted_cost_p95=float(p95[i]),
            predicted_tokens_p50=float(cell.tok_p50[i]), predicted_tokens_p95=float(cell.tok_p95[i]), reason=reason,
            details={"predicted_cost_mean": float(mean[i]), "options": len(cell.plans),
                     "predicted_accuracy_se": float(cell.se[i])},
        )

    def plan(self, policy: Policy, request: PlanRequest) -> Plan:
        """The plan the policy's objective prefers for this request, with a short reason."""
        cell = self._cell(policy, request)
        if not cell.plans:
            return self._fallback(policy, request)
        mean, p50, p95 = self._costs(cell, request)
        n = len(cell.plans)
        notes: list[str] = []
        feasible = np.ones(n, dtype=bool)
        if request.strategy:
            feasible &= self._matches(cell, request.strategy)
            if not feasible.any():
                return self._forced(policy, request, cell, mean)
        limit = min(x for x in (request.max_cost_usd, request.budget_remaining_usd, float("inf")) if x is not None)
        if limit < float("inf"):
            fits = feasible & (p95 <= limit)
            if fits.any():
                feasible = fits
            else:
                notes.append(f"no plan's p95 cost fits ${limit:.6f}; taking the cheapest")
                i = int(np.where(feasible, p95, np.inf).argmin())
                return self._predicted(cell, i, mean, p50, p95, self._reason(policy, cell, i, mean, p95, notes))
        target = request.accuracy_target
        if target is None and policy.objective in ("cheap", "predictable"):
            target = policy.accuracy_target
        pool = feasible
        if target is not None:
            ok = feasible & (cell.acc >= target)
            if ok.any():
                pool = ok
            else:
                notes.append(f"no plan reaches accuracy {target:.2f}; taking the most accurate")
                i = int(np.where(feasible, cell.acc, -1).argmax())
                return self._predicted(cell, i, mean, p50, p95, self._reason(policy, cell, i, mean, p95, notes))
        obj = policy.objective
        if obj == "accurate":
            b = int(np.where(pool, cell.acc, -1).argmax())
            tol = max(policy.accuracy_tolerance, policy.accuracy_z * cell.se[b])
            near = pool & (cell.acc >= cell.acc[b] - tol)
            i = int(np.where(near, mean, np.inf).argmin())
            if i != b:
                notes.append(f"as accurate as the best ({cell.acc[b]:.3f}) within {tol:.3f} of measurement noise")
        elif obj == "balanced":
            score = 100.0 * cell.acc - policy.lambda_usd * mean
            i = int(np.where(pool, score, -np.inf).argmax())
        elif obj == "cheap":
            i = int(np.where(pool, mean, np.inf).argmin())
        else:  # predictable
            i = int(np.where(pool, p95, np.inf).argmin())
        return self._predicted(cell, i, mean, p50, p95, self._reason(policy, cell, i, mean, p95, notes))

    @staticmethod
    def _reason(policy: Policy, cell: _Cell, i: int, mean: np.ndarray, p95: np.ndarray, notes: list[str]) -> str:
        p = cell.plans[i]
        shape = p.label() + (f" k={p.k}" if p.k > 1 or p.aggregator else "")
        if p.cutoff_tokens:
            shape += f", cut at {p.cutoff_tokens} tokens ({p.restart})"
        text = (f"{policy.objective} ({policy.name}): {shape} on {p.model}; predicted accuracy {cell.acc[i]:.3f}, "
                f"mean cost ${mean[i]:.6f}, p95 ${p95[i]:.6f}; best of {len(cell.plans)} options")
        return "; ".join([text, *notes])

    @staticmethod
    def _matches(cell: _Cell, strategy: dict) -> np.ndarray:
        want = {"name": strategy.get("name")} | {k: v for k, v in strategy.items() if k != "name"}
        out = np.zeros(len(cell.plans), dtype=bool)
        for i, p in enumerate(cell.plans):
            ok = p.strategy == want["name"] and p.cutoff_tokens is None
            for k, v in want.items():
                if k != "name" and getattr(p, k, None) != v:
                    ok = False
            out[i] = ok
        return out

    def _forced(self, policy: Policy, req: PlanRequest, cell: _Cell, mean: np.ndarray) -> Plan:
        """The client asked for a strategy no measured row matches: run it as asked on the
        policy's preferred model, without predictions."""
        base = self.plan(policy, PlanRequest(**{**_fields(req), "strategy": None}))
        return from_strategy(base.model, req.strategy or {}, fallback_model=policy.fallback_model,
                             reason=f"strategy requested by the client; model {base.model} chosen by "
                                    f"{policy.objective}; no measured prediction for this configuration")

    def _fallback(self, policy: Policy, req: PlanRequest) -> Plan:
        """No profile rows for this task among the candidates: one sample on the fallback model."""
        names = [policy.fallback_model] if policy.fallback_model in self.candidates else []
        names += [n for n in (policy.models or self.candidates) if n in self.candidates]
        if not names:
            names = list(self.candidates)
        why = f"no profile rows for task {req.task!r}" if req.task else "task unknown"
        return Plan(model=names[0], reason=f"{why} among the candidates: one sample on {names[0]}")


def _fields(req: PlanRequest) -> dict:
    return {f: getattr(req, f) for f in PlanRequest.__slots__}  # type: ignore[attr-defined]
