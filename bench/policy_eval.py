"""Honest evaluation of issue 3's goals: K folds, fit on one part of the problems, replay on the rest.

For each fold (a different seed of `fit`'s by-problem split of the shared traces) the profiles are
fitted on the training problems only (`fit_profiles`, exactly as `pareto-proxy fit
--holdout-fraction F --seed S`; the held-out CSV goes to a temp dir, never the repo), and on the
held-out problems this replays, with `replay`'s engine and draw scheme (`run_config`, seeded
permutations, common random numbers):

* the shipped policies (accurate, balanced, cheap, predictable), with cutoffs on and off;
* every static configuration (trace model x `grid.DEFAULT_GRID`, cut at the fold's learned
  task-level threshold), on the held-out *and* the training problems: the most accurate one on
  the training part is what a user could have picked, the best on the pooled held-out set is
  the (unreachable) hindsight reference;
* a sweep of `balanced` over lambda_usd, for the area under accuracy vs log10(cost);
* single-sample R1 / QwQ / R1DistilQwen on math with and without the fold's cutoff;
* planner prototypes (subclasses defined here; proxy/ is not modified) that correct the
  planner's optimism about plans measured on few problems.

Pooled numbers concatenate the held-out requests of all folds (weight by problems; a problem
held out in two folds counts twice). Standard errors are cluster-robust over problems (a
problem's permutations and repeated appearances are one cluster), i.e. they answer "how much
would this move on other problems from the same distribution", which is the question the
hidden AIME 2025-II / GPQA split will ask.

Run: `.venv/bin/python bench/policy_eval.py [--folds 5] [--holdout-fraction 0.4]
[--permutations 16] [--json] [--plot OUT.png]`. Progress goes to stderr, results to stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from proxy.budget.pricing import ModelPrice
from proxy.profiling.fit import fit_profiles, split_by_problem
from proxy.profiling.grid import (
    DEFAULT_GRID,
    GridConfig,
    group_problems,
    run_config,
)
from proxy.profiling.replay import Measured, pareto_frontier
from proxy.profiling.tracedata import read_prices, read_traces, select
from proxy.routing.cutoffs import cutoff_for_level
from proxy.routing.plan import Plan
from proxy.routing.planner import Candidate, Planner, PlanRequest, _Cell
from proxy.routing.policies import Policy, PolicySet
from proxy.routing.profiles import Profiles

DATA = Path("/work/shared/data")
TRACES = DATA / "reasoning_traces.csv"
PRICES = DATA / "trace_model_prices.csv"
SHIPPED = ("accurate", "balanced", "cheap", "predictable")
THRESHOLD_MODELS = ("R1", "QwQ", "R1DistilQwen")
SWEEP_LAMBDAS = tuple(float(x) for x in np.logspace(0, 6, 15))
#: the prototype sensitivity grid (accurate only): gain-shrinkage prior (problems) x tolerance z
SENS_PRIORS = (0.0, 10.0, 30.0, 100.0)
SENS_Z = (0.0, 0.5, 1.0, 2.0)


# -- per-request outcomes ------------------------------------------------------------------------


@dataclass
class Runs:
    """Per-request outcomes of one configuration: arrays [permutation, problem], plus each
    problem's key and task (so folds concatenate and tasks slice)."""

    correct: np.ndarray
    tokens: np.ndarray
    cost: np.ndarray
    keys: np.ndarray
    tasks: np.ndarray

    @staticmethod
    def cat(parts: Sequence[Runs]) -> Runs:
        return Runs(*(np.concatenate([getattr(p, f) for p in parts], axis=0 if f in ("keys", "tasks") else 1)
                      for f in ("correct", "tokens", "cost", "keys", "tasks")))

    def task(self, task: str) -> Runs:
        m = self.tasks == task
        return Runs(self.correct[:, m], self.tokens[:, m], self.cost[:, m], self.keys[m], self.tasks[m])

    @property
    def acc(self) -> float:
        return float(self.correct.mean())

    @property
    def mean_cost(self) -> float:
        return float(self.cost.mean())

    def stats(self) -> dict[str, float]:
        return {"accuracy": self.acc, "accuracy_se": cluster_se(self.correct.mean(0), self.keys),
                "cost_usd_per_request": self.mean_cost, "p95_cost_usd": float(np.percentile(self.cost, 95)),
                "tokens_per_request": float(self.tokens.mean()), "p95_tokens": float(np.percentile(self.tokens, 95)),
                "requests": int(self.correct.shape[1])}


def cluster_se(values: np.ndarray, clusters: np.ndarray) -> float:
    """Standard error of mean(values) with problems as clusters (CR0 sandwich)."""
    n = values.size
    if n < 2:
        return float("nan")
    resid = values - values.mean()
    _, inv = np.unique(clusters, return_inverse=True)
    sums = np.bincount(inv.reshape(-1), weights=resid)
    g = sums.size
    return float(math.sqrt((sums ** 2).sum() * g / max(g - 1, 1)) / n)


def paired(a: Runs, b: Runs) -> tuple[float, float]:
    """(mean accuracy of a - b, its cluster-robust SE); same problems in the same order."""
    assert (a.keys == b.keys).all()
    d = a.correct.mean(0).astype(float) - b.correct.mean(0).astype(float)
    return float(d.mean()), cluster_se(d, a.keys)


def _fixed_k(name: str) -> bool:
    """A static configuration with a fixed sample count (single or majority@k, cut or not)."""
    cfg = name.split(" ", 1)[1]
    return cfg.startswith(("single", "majority@"))


def plan_key(p: Plan) -> tuple:
    return (p.model, p.strategy, p.k, p.aggregator, p.m, p.k_max, p.margin, p.cutoff_tokens, p.restart,
            p.max_restarts, p.fallback_model)


def describe(p: Plan) -> str:
    if p.strategy == "single":
        s = "single"
    elif p.aggregator == "consensus":
        s = f"consensus k={p.k} m{p.margin} max{p.k_max}"
    elif p.aggregator == "short_m":
        s = f"short_m@{p.k} m={p.m}"
    else:
        s = f"{p.aggregator}@{p.k}"
    if p.cutoff_tokens:
        s += f" cut{p.cutoff_tokens}/{p.restart}" + (f"x{p.max_restarts}" if p.max_restarts else "")
    return f"{p.model} {s}"


# -- a fold ------------------------------------------------------------------------------------


@dataclass
class Part:
    """The problems of one side of the split, grouped as `replay` groups them."""

    keys: list[str]
    tasks: list[str]
    problems: list[dict]
    width: int


def _part(table: Any) -> Part:
    grouped = group_problems(table)
    keys = list(grouped)
    problems = [grouped[k][1] for k in keys]
    width = max((len(s) for p in problems for s in p.values()), default=0)
    return Part(keys, [grouped[k][0] for k in keys], problems, width)


@dataclass
class Fold:
    seed: int
    profiles: Profiles
    held: Part
    train: Part
    prices: dict[str, ModelPrice]
    models: list[str]
    seeds: list[int]
    planner: Planner
    cache: dict[tuple, Runs] = field(default_factory=dict)

    @property
    def task_names(self) -> list[str]:
        return sorted(set(self.held.tasks))

    def threshold(self, model: str, task: str) -> int | None:
        row = self.profiles.row(model, task, None)
        return row.failure_threshold_tokens if row is not None else None

    def run(self, plan: Plan, task: str, part: str = "held") -> Runs:
        """Outcomes of `plan` on the fold's problems of `task` (memoised: plans repeat a lot)."""
        key = (part, task, plan_key(plan))
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        p = self.held if part == "held" else self.train
        idx = np.array([j for j, t in enumerate(p.tasks) if t == task])
        outs = run_config(plan.with_(predicted_accuracy=None), [p.problems[j] for j in idx], self.seeds, "none",
                          columns=idx, width=p.width)
        flat = [o for row in outs for o in row]
        shape = (len(outs), len(idx))

        def usd(o: Any) -> float:
            return sum(self.prices[m].cost(0, t) for m, t in o.tokens_by_model.items() if m in self.prices)

        runs = Runs(np.array([o.correct for o in flat], dtype=bool).reshape(shape),
                    np.array([o.completion_tokens for o in flat], dtype=float).reshape(shape),
                    np.array([usd(o) for o in flat], dtype=float).reshape(shape),
                    np.array([p.keys[j] for j in idx]), np.array([task] * len(idx)))
        self.cache[key] = runs
        return runs

    def run_plans(self, plans: dict[str, Plan], part: str = "held") -> Runs:
        return Runs.cat([self.run(plans[t], t, part) for t in self.task_names])

    def policy_plans(self, policy: Policy, planner: Planner | None = None) -> dict[str, Plan]:
        pl = planner or self.planner
        return {t: pl.plan(policy, PlanRequest(task=t)) for t in self.task_names}

    def static_plans(self, model: str, cfg: GridConfig) -> dict[str, Plan]:
        """The configuration's plan per task. Where the fold learned no threshold for (model, task)
        a cut configuration runs uncut (replay does the same per task, and skips the configuration
        when no task has one; here it is kept so that every configuration exists in every fold and
        can be pooled)."""
        return {t: cfg.plan(model, self.threshold(model, t)) for t in self.task_names}


def make_fold(table: Any, fraction: float, seed: int, prices_csv: Path, traces: Path, permutations: int,
              tmp: Path) -> Fold:
    """Fit on the training problems (the real `fit` code path) and group both sides."""
    held_csv = tmp / f"holdout_seed{seed}.csv"
    doc = fit_profiles([str(traces)], str(prices_csv), holdout_fraction=fraction, holdout_out=str(held_csv),
                       seed=seed)
    profiles = Profiles.from_dict(doc, source=f"fold seed {seed}")
    mask = split_by_problem(table, fraction, seed)
    held_table, train_table = read_traces(held_csv), select(table, ~mask)
    assert set(held_table.problem_keys().tolist()) == set(table.problem_keys()[mask].tolist())
    table_prices = read_prices(prices_csv)
    trace_models = sorted(set(table.model.tolist()))
    prices = {m: ModelPrice(table_prices[m].input_usd_per_mtok, table_prices[m].output_usd_per_mtok, "prices")
              for m in trace_models if m in table_prices}
    models = [m for m in trace_models if m in prices and profiles.rows_for(m)]
    cands = [Candidate(m, m, prices[m], reasoning=bool(profiles.models.get(m) and profiles.models[m].reasoning))
             for m in models]
    return Fold(seed, profiles, _part(held_table), _part(train_table), prices, models,
                list(range(permutations)), Planner(profiles, cands))


# -- planner prototypes (measured here, proposed for proxy/routing/planner.py) -------------------


class ProtoPlanner(Planner):
    """Prototype: treat predicted accuracies as estimates from few problems, not as facts.

    * `prior` > 0, **shrinkage of strategy gains**: a multi-sample (or cut) row's gain over its
      model's single-sample accuracy is shrunk toward 0 with a prior worth `prior` problems:
      acc' = single + (acc - single) * n / (n + prior), n = the row's problem count. A consensus
      row measured on 27 problems keeps 27 / (27 + prior) of its lead over single. (Only the
      ordering across models and strategies changes: rows of one task all rest on the same n.)
    * `z` > 0, **noise-scaled tolerance** (objective `accurate` only): an option counts as tied
      with the most accurate one when its deficit is within max(accuracy_tolerance, z * SE),
      SE = the paired standard error of (option - best) over the training problems, and the
      cheapest tied option wins. `train(plan, task)` gives the per-problem training accuracy of a
      plan; in the product, `fit` would store that vector (one float per problem) or the paired
      SE against the row's model-single row.
    """

    def __init__(self, profiles: Profiles, candidates: list[Candidate], *, prior: float = 0.0, z: float = 0.0,
                 train: Callable[[Plan, str], np.ndarray] | None = None) -> None:
        super().__init__(profiles, candidates)
        self.prior, self.z, self.train = prior, z, train

    def _cell(self, policy: Policy, req: PlanRequest) -> _Cell:
        key = (id(policy), req.task, req.difficulty, req.needs_tools, req.needs_json, req.only_model)
        if key in self._cells:
            return self._cells[key]
        cell = super()._cell(policy, req)
        if self.prior > 0 and req.task is not None:
            acc = cell.acc.copy()
            for i, p in enumerate(cell.plans):
                if p.strategy == "single" and p.cutoff_tokens is None:
                    continue
                base = self.profiles.row(p.model, req.task, req.difficulty)
                row = next((r for r in self.profiles.strategy_rows(p.model, req.task, req.difficulty) if _same(r, p)),
                           None)
                if base is None or row is None or not row.n:
                    continue
                acc[i] = base.accuracy + (acc[i] - base.accuracy) * row.n / (row.n + self.prior)
            cell.acc = acc
        return cell

    def plan(self, policy: Policy, request: PlanRequest) -> Plan:
        if policy.objective != "accurate" or self.z <= 0 or self.train is None or request.task is None:
            return super().plan(policy, request)
        cell = self._cell(policy, request)
        if not cell.plans:
            return super().plan(policy, request)
        mean, p50, p95 = self._costs(cell, request)
        b = int(cell.acc.argmax())
        vb = self.train(cell.plans[b], request.task)
        se = np.array([float(np.std(self.train(p, request.task) - vb, ddof=1) / math.sqrt(vb.size))
                       for p in cell.plans])
        tol = np.maximum(policy.accuracy_tolerance, self.z * se)
        near = cell.acc >= cell.acc[b] - tol
        i = int(np.where(near, mean, np.inf).argmin())
        why = (f"accurate (noise-scaled): best {describe(cell.plans[b])} {cell.acc[b]:.3f}; "
               f"{int(near.sum())} options within max(tol, {self.z:g} paired SE); cheapest wins")
        return self._predicted(cell, i, mean, p50, p95, why)


def _same(row: Any, p: Plan) -> bool:
    cfg = row.plan or {}
    return ((row.strategy or "single") == p.strategy and (row.k or 1) == p.k and cfg.get("aggregator") == p.aggregator
            and cfg.get("m") == p.m and cfg.get("k_max") == p.k_max and cfg.get("margin") == p.margin
            and cfg.get("cutoff_tokens") == p.cutoff_tokens and cfg.get("restart", "stop") == p.restart
            and int(cfg.get("max_restarts", 0)) == p.max_restarts)


# -- curves ------------------------------------------------------------------------------------


def step_area(front: Sequence[Measured], lo: float, hi: float) -> float:
    """Integral over log10(cost) in [lo, hi] of the frontier's step function: the accuracy at cost
    c is that of the most accurate point costing <= c (right-continuous, 'post' steps: what a
    budget of c buys). In accuracy points x decades."""
    pts = sorted(front, key=lambda m: m.cost_usd_per_request)
    xs = [math.log10(m.cost_usd_per_request) for m in pts]
    a, b = math.log10(lo), math.log10(hi)
    area = 0.0
    for i, x in enumerate(xs):
        left = max(x, a)
        right = min(xs[i + 1] if i + 1 < len(xs) else math.inf, b)
        if right > left:
            area += (right - left) * 100 * pts[i].accuracy
    return area


def measured(name: str, r: Runs) -> Measured:
    return Measured(name, r.acc, r.mean_cost, float(r.tokens.mean()), float(np.percentile(r.cost, 95)))


# -- the evaluation ----------------------------------------------------------------------------


def evaluate(args: argparse.Namespace, progress: Callable[[str, float], None]) -> dict[str, Any]:
    table = read_traces(args.traces)
    policies = PolicySet.load(ROOT / "policies")
    shipped = {n: policies.get(n) for n in SHIPPED}
    sweep = {lam: shipped["balanced"].model_copy(update={"name": f"balanced@{lam:g}", "lambda_usd": lam})
             for lam in SWEEP_LAMBDAS}
    variants = {
        f"paired-SE tolerance z={args.z:g}": {"prior": 0.0, "z": args.z},
        f"gain shrinkage prior={args.prior:g}": {"prior": args.prior, "z": 0.0},
        "both": {"prior": args.prior, "z": args.z},
    }
    # shipped-policy changes (YAML only): fewer, adaptive strategies for `accurate`
    policy_variants = {
        "accurate, strategies [consensus]": shipped["accurate"].model_copy(update={"strategies": ["consensus"]}),
    }
    folds: list[Fold] = []
    res: dict[str, Any] = {"static": {}, "policies": {}, "policies_nocut": {}, "sweep": {}, "proto": {},
                           "proto_sweep": {}, "train_best": [], "train_best_fixed": [], "static_train": [], "sens": {}, "pvar": {}, "plans": [], "options": []}
    per_fold: list[dict[str, Any]] = []
    steps = args.folds * 5
    done = 0
    with tempfile.TemporaryDirectory(prefix="policy_eval_") as tmp:
        for f in range(args.folds):
            seed = args.seed + f
            progress(f"fold {f + 1}/{args.folds}: fit (seed {seed})", done / steps)
            fold = make_fold(table, args.holdout_fraction, seed, args.prices, args.traces, args.permutations, Path(tmp))
            folds.append(fold)
            done += 1
            progress(f"fold {f + 1}/{args.folds}: static grid, held-out", done / steps)
            static_held: dict[str, Runs] = {}
            static_train: dict[str, Runs] = {}
            for model in fold.models:
                for cfg in DEFAULT_GRID:
                    static_held[f"{model} {cfg.name}"] = fold.run_plans(fold.static_plans(model, cfg), "held")
            done += 1
            progress(f"fold {f + 1}/{args.folds}: static grid, training", done / steps)
            for model in fold.models:
                for cfg in DEFAULT_GRID:
                    static_train[f"{model} {cfg.name}"] = fold.run_plans(fold.static_plans(model, cfg), "train")
            done += 1
            progress(f"fold {f + 1}/{args.folds}: policies", done / steps)
            for ref, names in (("train_best", list(static_train)),
                               ("train_best_fixed", [n for n in static_train if _fixed_k(n)])):
                pick = max(names, key=lambda n: (static_train[n].acc, -static_train[n].mean_cost))
                res[ref].append({"fold": f, "seed": seed, "config": pick, "train_accuracy": static_train[pick].acc,
                                 "runs": static_held[pick]})
            for name, runs in static_held.items():
                res["static"].setdefault(name, []).append(runs)
            res["static_train"].append({n: (r.acc, r.mean_cost) for n, r in static_train.items()})
            fold_out: dict[str, Any] = {"seed": seed, "held_problems": len(fold.held.keys),
                                        "train_problems": len(fold.train.keys), "policies": {}}
            for name, pol in shipped.items():
                plans = fold.policy_plans(pol)
                runs = fold.run_plans(plans)
                res["policies"].setdefault(name, []).append(runs)
                nocut = pol.model_copy(update={"cutoffs": False})
                res["policies_nocut"].setdefault(name, []).append(fold.run_plans(fold.policy_plans(nocut)))
                fold_out["policies"][name] = runs.stats()
                for t, p in plans.items():
                    held = fold.run(p, t)
                    res["plans"].append({"fold": f, "policy": name, "task": t, "plan": describe(p),
                                         "predicted": p.predicted_accuracy, "held": held.acc,
                                         "held_se": cluster_se(held.correct.mean(0), held.keys),
                                         "problems": int(held.correct.shape[1])})
            for lam, pol in sweep.items():
                res["sweep"].setdefault(lam, []).append(fold.run_plans(fold.policy_plans(pol)))
            # predicted vs held-out for every option the accurate policy considers (winner's curse)
            for t in fold.task_names:
                opts = fold.planner.options(shipped["accurate"], PlanRequest(task=t))
                ranked = sorted(opts, key=lambda p: -(p.predicted_accuracy or 0))
                for rank, p in enumerate(ranked):
                    res["options"].append({"fold": f, "task": t, "rank": rank, "plan": describe(p),
                                           "predicted": p.predicted_accuracy, "held": fold.run(p, t).acc})
            done += 1
            progress(f"fold {f + 1}/{args.folds}: planner prototypes", done / steps)
            for vname, kw in variants.items():
                proto = ProtoPlanner(fold.profiles, list(fold.planner.candidates.values()), **kw,
                                     train=lambda p, t, fold=fold: fold.run(p, t, "train").correct.mean(0))
                for name, pol in shipped.items():
                    plans = fold.policy_plans(pol, proto)
                    res["proto"].setdefault((vname, name), []).append(fold.run_plans(plans))
                    for t, p in plans.items():
                        res["plans"].append({"fold": f, "policy": f"{name} [{vname}]", "task": t, "plan": describe(p),
                                             "predicted": p.predicted_accuracy, "held": fold.run(p, t).acc,
                                             "held_se": float("nan"), "problems": 0})
                for lam, pol in sweep.items():
                    res["proto_sweep"].setdefault((vname, lam), []).append(fold.run_plans(fold.policy_plans(pol, proto)))
            for vname, pol in policy_variants.items():
                plans = fold.policy_plans(pol)
                res["pvar"].setdefault(vname, []).append(fold.run_plans(plans))
                res["plans"] += [{"fold": f, "policy": vname, "task": t, "plan": describe(p)} for t, p in plans.items()]
            for prior in SENS_PRIORS:
                for z in SENS_Z:
                    proto = ProtoPlanner(fold.profiles, list(fold.planner.candidates.values()), prior=prior, z=z,
                                         train=lambda p, t, fold=fold: fold.run(p, t, "train").correct.mean(0))
                    res["sens"].setdefault((prior, z), []).append(
                        fold.run_plans(fold.policy_plans(shipped["accurate"], proto)))
            per_fold.append(fold_out)
            done += 1
    progress("summarising", 1.0)
    return summarise(args, folds, res, per_fold, shipped)


def summarise(args: argparse.Namespace, folds: list[Fold], res: dict[str, Any], per_fold: list[dict[str, Any]],
              shipped: dict[str, Policy]) -> dict[str, Any]:
    k = len(folds)
    out: dict[str, Any] = {"folds": k, "holdout_fraction": args.holdout_fraction, "permutations": args.permutations,
                           "seeds": [f.seed for f in folds], "per_fold": per_fold}
    pooled_static = {n: Runs.cat(r) for n, r in res["static"].items() if len(r) == k}
    pol = {n: Runs.cat(r) for n, r in res["policies"].items()}
    nocut = {n: Runs.cat(r) for n, r in res["policies_nocut"].items()}
    out["policies"] = {n: r.stats() for n, r in pol.items()}

    # most accurate static configuration: chosen on training (per fold) and in hindsight (pooled)
    refs: dict[str, Runs] = {}
    for ref, key, names in (("train_chosen", "train_best", list(pooled_static)),
                            ("train_chosen_fixed_k", "train_best_fixed", [n for n in pooled_static if _fixed_k(n)])):
        chosen = Runs.cat([b["runs"] for b in res[key]])
        hind_name = max(names, key=lambda n: (pooled_static[n].acc, -pooled_static[n].mean_cost))
        hind = pooled_static[hind_name]
        suffix = ref.removeprefix("train_chosen")
        refs[ref], refs["hindsight" + suffix] = chosen, hind
        out["static_best_train" + suffix] = {
            "per_fold": [{"seed": b["seed"], "config": b["config"], "train_accuracy": b["train_accuracy"],
                          "held_accuracy": b["runs"].acc, "held_cost": b["runs"].mean_cost} for b in res[key]],
            **chosen.stats()}
        out["static_best_hindsight" + suffix] = {"config": hind_name, **hind.stats()}
    hind = refs["hindsight"]
    # the best any per-task choice of static configurations could do, in hindsight: is the goal
    # reachable at all with the measured plan shapes?
    tasks = sorted(set(hind.tasks.tolist()))
    per_task = {t: {n: (r.task(t).acc, r.task(t).mean_cost) for n, r in pooled_static.items()} for t in tasks}
    weight = {t: int((hind.tasks == t).sum()) for t in tasks}
    names = list(pooled_static)
    acc_t = {t: np.array([per_task[t][n][0] for n in names]) for t in tasks}
    cost_t = {t: np.array([per_task[t][n][1] for n in names]) for t in tasks}
    if len(tasks) == 2:
        a, b = tasks
        tot = weight[a] + weight[b]
        acc2 = (weight[a] * acc_t[a][:, None] + weight[b] * acc_t[b][None, :]) / tot
        cost2 = (weight[a] * cost_t[a][:, None] + weight[b] * cost_t[b][None, :]) / tot
        budget = 0.5 * hind.mean_cost
        ok = cost2 <= budget
        i, j = np.unravel_index(np.where(ok, acc2, -1).argmax(), acc2.shape)
        reach = acc2 >= hind.acc - 0.01
        i2, j2 = np.unravel_index(np.where(reach, cost2, np.inf).argmin(), cost2.shape)
        out["per_task_oracle"] = {
            "budget_usd": budget,
            "best_within_budget": {"plans": {a: names[i], b: names[j]}, "accuracy": float(acc2[i, j]),
                                   "cost_usd_per_request": float(cost2[i, j])},
            "cheapest_within_1pt": {"plans": {a: names[i2], b: names[j2]}, "accuracy": float(acc2[i2, j2]),
                                    "cost_usd_per_request": float(cost2[i2, j2])},
            "per_task_best": {t: {"config": names[int(acc_t[t].argmax())], "accuracy": float(acc_t[t].max()),
                                  "cost_usd_per_request": float(cost_t[t][int(acc_t[t].argmax())])} for t in tasks},
        }
    out["static_frontier"] = [m.to_dict() for m in pareto_frontier([measured(n, r) for n, r in pooled_static.items()])]

    # goal: accurate
    def goal_accurate(runs: Runs) -> dict[str, Any]:
        g: dict[str, Any] = {}
        for ref_name, ref in refs.items():
            gap, se = paired(runs, ref)
            ratio = runs.mean_cost / ref.mean_cost
            g[ref_name] = {"accuracy_gap_points": 100 * gap, "gap_se_points": 100 * se, "cost_ratio": ratio,
                           "pass": bool(gap >= -0.01 and ratio <= 0.5)}
        return g

    out["goal_accurate"] = goal_accurate(pol["accurate"])

    # goal: balanced sweep vs static frontier
    # the static frontier a user could actually pick: per fold and budget c, the configuration
    # most accurate on the TRAINING problems among those whose training cost is <= c, measured
    # on the held-out problems and pooled over folds
    costs = [c for ft in res["static_train"] for _, c in ft.values() if c > 0]
    chosen_pts: list[Measured] = []
    for c in np.logspace(math.log10(min(costs)), math.log10(max(costs)), 40):
        picks = []
        for fi, ft in enumerate(res["static_train"]):
            ok = [n for n, (a, cc) in ft.items() if cc <= c * (1 + 1e-12)]
            if not ok:
                break
            picks.append(res["static"][max(ok, key=lambda n: (ft[n][0], -ft[n][1]))][fi])
        if len(picks) == k:
            chosen_pts.append(measured(f"budget {c:.5f}", Runs.cat(picks)))
    fronts = {"hindsight": pareto_frontier([measured(n, r) for n, r in pooled_static.items()]),
              "train_chosen": pareto_frontier(chosen_pts)}
    out["static_frontier_train_chosen"] = [m.to_dict() for m in fronts["train_chosen"]]

    def sweep_area(points: dict[float, Runs]) -> dict[str, Any]:
        pts = [measured(f"lambda={lam:g}", r) for lam, r in points.items()]
        wf = pareto_frontier(pts)
        d: dict[str, Any] = {"points": [{"lambda_usd": lam, "accuracy": r.acc, "cost_usd_per_request": r.mean_cost}
                                        for lam, r in points.items()]}
        for ref, sf in fronts.items():
            lo = max(sf[0].cost_usd_per_request, wf[0].cost_usd_per_request)
            hi = min(sf[-1].cost_usd_per_request, wf[-1].cost_usd_per_request)
            e: dict[str, Any] = {"range_usd": [lo, hi]}
            if hi > lo:
                a_sw, a_st = step_area(wf, lo, hi), step_area(sf, lo, hi)
                width = math.log10(hi) - math.log10(lo)
                e.update(area_sweep=a_sw, area_static=a_st, ratio=a_sw / a_st, decades=width,
                         mean_acc_sweep=a_sw / width, mean_acc_static=a_st / width)
            d["vs_" + ref] = e
        return d

    out["goal_sweep"] = sweep_area({lam: Runs.cat(r) for lam, r in res["sweep"].items()})

    # goal: cutoffs
    cut: dict[str, Any] = {}
    for n in SHIPPED:
        on, off = pol[n], nocut[n]
        gap, se = paired(on, off)
        p95_on, p95_off = float(np.percentile(on.tokens, 95)), float(np.percentile(off.tokens, 95))
        cut[n] = {"p95_tokens_on": p95_on, "p95_tokens_off": p95_off, "p95_reduction": 1 - p95_on / p95_off,
                  "mean_tokens_on": float(on.tokens.mean()), "mean_tokens_off": float(off.tokens.mean()),
                  "accuracy_change_points": 100 * gap, "se_points": 100 * se,
                  "same_plans": bool((on.tokens == off.tokens).all() and (on.correct == off.correct).all())}
    single: dict[str, Any] = {}
    for m in THRESHOLD_MODELS:
        base = Runs.cat([r.task("math") for r in res["static"][f"{m} single"]])
        thr = [f.threshold(m, "math") for f in folds]
        entry: dict[str, Any] = {"thresholds": thr, "single": _tok(base)}
        for variant in ("single +cut/samex1", "single +cut/stop"):
            r = Runs.cat([x.task("math") for x in res["static"][f"{m} {variant}"]])
            gap, se = paired(r, base)
            entry[variant] = _tok(r) | {"p95_reduction": 1 - np.percentile(r.tokens, 95) / np.percentile(base.tokens, 95),
                                        "accuracy_change_points": 100 * gap, "se_points": 100 * se}
        # a stricter level read from the same fitted curve (what `failure_level: 0.05` would mean)
        thr05 = [cutoff_for_level(row, 0.05) if (row := f.profiles.row(m, "math")) is not None else None for f in folds]
        r = Runs.cat([f.run(Plan(model=m, cutoff_tokens=t, restart="stop") if t else Plan(model=m), "math")
                      for f, t in zip(folds, thr05)])
        gap, se = paired(r, base)
        entry["thresholds_level_0.05"] = thr05
        entry["single +cut/stop level 0.05"] = _tok(r) | {
            "p95_reduction": 1 - np.percentile(r.tokens, 95) / np.percentile(base.tokens, 95),
            "accuracy_change_points": 100 * gap, "se_points": 100 * se}
        single[m] = entry
    pairs: list[dict[str, Any]] = []
    for n, r in pooled_static.items():
        cfg = n.split(" ", 1)[1]
        if "+cut" in cfg or cfg == "single":
            continue
        c = pooled_static.get(f"{n} +cut/stop")
        if c is None or (c.tokens == r.tokens).all():
            continue  # no threshold for this model in any fold: nothing was cut
        gap, se = paired(c, r)
        p_on, p_off = float(np.percentile(c.tokens, 95)), float(np.percentile(r.tokens, 95))
        pairs.append({"config": n, "p95_reduction": 1 - p_on / p_off, "accuracy_change_points": 100 * gap,
                      "se_points": 100 * se, "mean_reduction": 1 - float(c.tokens.mean() / r.tokens.mean())})
    out["goal_cutoffs"] = {"policies": cut, "single_math": single, "config_pairs": pairs}

    # learned thresholds (full-data shipped profile) and per-fold
    shipped_prof = json.loads((ROOT / "profiles" / "default.json").read_text())
    th: list[dict[str, Any]] = []
    for row in shipped_prof["rows"]:
        if row.get("strategy") is None and row["task"] == "math" and row["model"] in THRESHOLD_MODELS:
            th.append({k2: row.get(k2) for k2 in ("model", "difficulty", "n", "accuracy", "failure_threshold_tokens",
                                                   "threshold_ci", "threshold_bootstrap")})
    out["thresholds"] = th

    # diagnostics
    out["plans"] = res["plans"]
    opts = res["options"]
    diag: dict[str, Any] = {}
    for t in folds[0].task_names:
        o = [x for x in opts if x["task"] == t]
        top = [x for x in o if x["rank"] == 0]
        top5 = [x for x in o if x["rank"] < 5]
        diag[t] = {"options_per_fold": len(o) // k,
                   "top1_predicted": float(np.mean([x["predicted"] for x in top])),
                   "top1_held": float(np.mean([x["held"] for x in top])),
                   "top5_predicted": float(np.mean([x["predicted"] for x in top5])),
                   "top5_held": float(np.mean([x["held"] for x in top5])),
                   "all_predicted": float(np.mean([x["predicted"] for x in o])),
                   "all_held": float(np.mean([x["held"] for x in o])),
                   "rank_corr": float(np.corrcoef([x["predicted"] for x in o], [x["held"] for x in o])[0, 1])}
        d = diag[t]
        d["selection_bias_top1"] = (d["top1_predicted"] - d["top1_held"]) - (d["all_predicted"] - d["all_held"])
    out["optimism"] = diag

    # prototypes
    proto: dict[str, Any] = {}
    for (vname, n), r in res["proto"].items():
        proto.setdefault(vname, {})[n] = Runs.cat(r).stats()
    for vname in {v for v, _ in res["proto"]}:
        proto[vname]["goal_accurate"] = goal_accurate(Runs.cat(res["proto"][(vname, "accurate")]))
        proto[vname]["goal_sweep"] = sweep_area({lam: Runs.cat(r) for (v, lam), r in res["proto_sweep"].items()
                                                 if v == vname})
    out["prototypes"] = proto
    sens = []
    for (prior, z), runs in res["sens"].items():
        r = Runs.cat(runs)
        g = goal_accurate(r)
        d_acc, d_se = paired(r, pol["accurate"])
        sens.append({"prior": prior, "z": z, **r.stats(), "vs_shipped_points": 100 * d_acc, "vs_shipped_se": 100 * d_se,
                     "cost_vs_shipped": r.mean_cost / pol["accurate"].mean_cost, "vs_train_chosen": g["train_chosen"],
                     "vs_train_chosen_fixed_k": g["train_chosen_fixed_k"], "vs_hindsight": g["hindsight"]})
    out["sensitivity_accurate"] = sens
    pv = {}
    for vname, runs in res["pvar"].items():
        r = Runs.cat(runs)
        d_acc, d_se = paired(r, pol["accurate"])
        pv[vname] = {**r.stats(), "vs_shipped_points": 100 * d_acc, "vs_shipped_se": 100 * d_se,
                     "cost_vs_shipped": r.mean_cost / pol["accurate"].mean_cost, "goal": goal_accurate(r)}
    out["policy_variants"] = pv
    out["_pooled"] = {"static": pooled_static, "policies": pol, "sweep": {lam: Runs.cat(r) for lam, r in res["sweep"].items()}}
    return out


def _tok(r: Runs) -> dict[str, float]:
    return {"accuracy": r.acc, "mean_tokens": float(r.tokens.mean()), "p95_tokens": float(np.percentile(r.tokens, 95)),
            "cost_usd_per_request": r.mean_cost}


# -- output ------------------------------------------------------------------------------------


def pct(x: float) -> str:
    return f"{100 * x:6.2f}%"


def render(out: dict[str, Any], args: argparse.Namespace, elapsed: float) -> str:
    L: list[str] = []
    w = L.append
    k = out["folds"]
    w(f"policy_eval: {k} folds (split seeds {out['seeds']}), holdout fraction {out['holdout_fraction']}, "
      f"{out['permutations']} permutations per request; {elapsed:.0f} s")
    w("Held-out problems per fold: " + ", ".join(f"{p['held_problems']}" for p in out["per_fold"])
      + f" (training {out['per_fold'][0]['train_problems']}); pooled requests = problems x folds, "
      "SE = cluster-robust over problems")
    w("")
    w("1. Policies on held-out problems (accuracy, USD/request, p95 USD/request)")
    hdr = "   policy        " + "".join(f"  fold{f['seed']:<2}                      " for f in out["per_fold"])
    w(hdr.rstrip() + "   pooled (+-SE)")
    for n in SHIPPED:
        cells = "".join(f"  {pct(f['policies'][n]['accuracy'])} {f['policies'][n]['cost_usd_per_request']:.5f} "
                        f"{f['policies'][n]['p95_cost_usd']:.5f}" for f in out["per_fold"])
        s = out["policies"][n]
        w(f"   {n:<13}{cells}   {pct(s['accuracy'])} (+-{100 * s['accuracy_se']:.1f}) ${s['cost_usd_per_request']:.5f} "
          f"p95 ${s['p95_cost_usd']:.5f}")
    w("")
    for suffix, what in (("", "any grid configuration"), ("_fixed_k", "fixed-k only: single or majority@k")):
        tb = out["static_best_train" + suffix]
        w(f"   most accurate static configuration ({what}), chosen on each fold's TRAINING problems:")
        for b in tb["per_fold"]:
            w(f"     seed {b['seed']}: {b['config']:<42} train {pct(b['train_accuracy'])}  held-out "
              f"{pct(b['held_accuracy'])} ${b['held_cost']:.5f}")
        w(f"     pooled held-out: {pct(tb['accuracy'])} (+-{100 * tb['accuracy_se']:.1f}) ${tb['cost_usd_per_request']:.5f} "
          f"p95 ${tb['p95_cost_usd']:.5f}")
        hb = out["static_best_hindsight" + suffix]
        w(f"   best in hindsight on the pooled held-out set ({what}): {hb['config']}: {pct(hb['accuracy'])} "
          f"(+-{100 * hb['accuracy_se']:.1f}) ${hb['cost_usd_per_request']:.5f} p95 ${hb['p95_cost_usd']:.5f}")
    w("   pooled static frontier: " + "; ".join(f"{m['name']} {100 * m['accuracy']:.1f}% ${m['cost_usd_per_request']:.5f}"
                                                 for m in out["static_frontier"]))
    w("")
    w("2. Goal 'accurate': within 1 point of the most accurate static configuration at <= 50% of its cost (pooled)")
    _goal_lines(w, out["goal_accurate"], "   ")
    o = out.get("per_task_oracle")
    if o:
        w("   reachable at all? one static configuration per task, chosen in HINDSIGHT on the pooled held-out set:")
        b = o["best_within_budget"]
        w(f"     best at <= 50% of the hindsight reference (${o['budget_usd']:.5f}): {pct(b['accuracy'])} "
          f"${b['cost_usd_per_request']:.5f} with " + "; ".join(f"{t}: {n}" for t, n in b["plans"].items()))
        c = o["cheapest_within_1pt"]
        w(f"     cheapest within 1 point of it: {pct(c['accuracy'])} ${c['cost_usd_per_request']:.5f} with "
          + "; ".join(f"{t}: {n}" for t, n in c["plans"].items()))
        w("     most accurate per task: " + "; ".join(f"{t}: {d['config']} {pct(d['accuracy'])} ${d['cost_usd_per_request']:.5f}"
                                                     for t, d in o["per_task_best"].items()))
    w("")
    g = out["goal_sweep"]
    w(f"3. Goal 'balanced sweep': lambda_usd in {SWEEP_LAMBDAS[0]:g} .. {SWEEP_LAMBDAS[-1]:g} ({len(SWEEP_LAMBDAS)} log-spaced "
      "values), pooled")
    w("   " + "; ".join(f"{p['lambda_usd']:.3g}: {100 * p['accuracy']:.1f}% ${p['cost_usd_per_request']:.5f}"
                        for p in g["points"]))
    w("   areas under accuracy (points) vs log10(cost), each curve a step function (post: at cost c, the most accurate "
      "point costing <= c), over the overlap of the two curves' cost ranges:")
    _sweep_lines(w, g, "   ")
    w("   'hindsight' = the Pareto frontier of all static configurations on the pooled held-out set (replay's frontier);")
    w("   'train_chosen' = per fold and budget, the configuration most accurate on TRAINING within the budget, measured "
      "held-out: " + "; ".join(f"{m['name'].split(' ')[1]}: {100 * m['accuracy']:.1f}% ${m['cost_usd_per_request']:.5f}"
                                for m in out["static_frontier_train_chosen"]))
    w("")
    w("4. Goal cutoffs: cutoffs on vs off (same policy, `cutoffs: false`), pooled")
    for n, c in out["goal_cutoffs"]["policies"].items():
        same = "  (same plans either way)" if c["same_plans"] else ""
        w(f"   {n:<12} p95 tokens {c['p95_tokens_off']:8.0f} -> {c['p95_tokens_on']:8.0f} ({-100 * c['p95_reduction']:+.1f}%), "
          f"mean {c['mean_tokens_off']:7.0f} -> {c['mean_tokens_on']:7.0f}, accuracy {c['accuracy_change_points']:+.2f} pts "
          f"(+-{c['se_points']:.2f}){same}")
    pairs = out["goal_cutoffs"]["config_pairs"]
    if pairs:
        red = np.array([p["p95_reduction"] for p in pairs])
        loss = np.array([p["accuracy_change_points"] for p in pairs])
        w(f"   the same static configuration with vs without '+cut/stop' ({len(pairs)} multi-sample model x config pairs, "
          f"whole held-out set): median p95-token reduction {100 * np.median(red):.1f}%, median accuracy change "
          f"{np.median(loss):+.2f} pts, {int((loss >= -1).sum())}/{len(pairs)} lose <= 1 pt")
        for p in pairs:
            if p["config"].split(" ")[0] in ("R1", "Qwen3", "GPT-OSS-120B"):
                w(f"     {p['config']:<40} p95 tokens {-100 * p['p95_reduction']:+.1f}%, mean {-100 * p['mean_reduction']:+.1f}%, "
                  f"accuracy {p['accuracy_change_points']:+.2f} +- {p['se_points']:.2f} pts")
    w("   single sample on math, the fold's learned threshold (level 0.1; a fold without one runs uncut):")
    for m, e in out["goal_cutoffs"]["single_math"].items():
        s = e["single"]
        w(f"   {m:<13} thresholds per fold {e['thresholds']}; uncut: {pct(s['accuracy'])}, p95 {s['p95_tokens']:.0f} tokens, "
          f"mean {s['mean_tokens']:.0f}")
        for v in ("single +cut/samex1", "single +cut/stop", "single +cut/stop level 0.05"):
            r = e[v]
            if v.endswith("0.05"):
                w(f"     (level 0.05 thresholds per fold: {e['thresholds_level_0.05']})")
            w(f"     {v:<27} {pct(r['accuracy'])} ({r['accuracy_change_points']:+.2f} +- {r['se_points']:.2f} pts), "
              f"p95 {r['p95_tokens']:.0f} tokens ({-100 * r['p95_reduction']:+.1f}%), mean {r['mean_tokens']:.0f}")
    w("")
    w("5. Learned thresholds on math, full-data profile profiles/default.json (level 0.1, 95% cluster-bootstrap CI)")
    for t in out["thresholds"]:
        b = t.get("threshold_bootstrap") or {}
        thr = t["failure_threshold_tokens"]
        found = f", {b.get('found')}/{b.get('resamples')} resamples found one" if b else ""
        w(f"   {t['model']:<13} {t['difficulty'] or 'all'!s:<7} n={t['n']:<4} acc {pct(t['accuracy'])}  "
          f"threshold {thr if thr is not None else 'none':>6}  CI {t['threshold_ci'] or '-'}{found}")
    w("")
    w("6. Diagnostics")
    w("   plans the policies pick (per fold: plan, predicted accuracy from training rows -> held-out accuracy +- SE):")
    for n in SHIPPED:
        for t in sorted({p["task"] for p in out["plans"]}):
            rows = [p for p in out["plans"] if p["policy"] == n and p["task"] == t]
            w(f"   {n}/{t}:")
            for p in rows:
                w(f"     seed {out['seeds'][p['fold']]}: {p['plan']:<44} {pct(p['predicted'])} -> {pct(p['held'])} "
                  f"(+-{100 * p['held_se']:.1f}, {p['problems']} problems)")
    w("   optimism of the training estimates (mean over folds; 'top-1' = the option with the highest predicted accuracy):")
    for t, d in out["optimism"].items():
        w(f"   {t:<8} {d['options_per_fold']} options/fold; top-1 predicted {pct(d['top1_predicted'])} held-out "
          f"{pct(d['top1_held'])}; top-5 {pct(d['top5_predicted'])} -> {pct(d['top5_held'])}; all "
          f"{pct(d['all_predicted'])} -> {pct(d['all_held'])}; corr(predicted, held-out) {d['rank_corr']:.2f}; "
          f"selection bias of the top-1 (its drop minus the average drop) {100 * d['selection_bias_top1']:+.2f} pts")
    w("")
    w(f"7. Planner prototypes (bench-only subclass; prior={args.prior:g} problems, z={args.z:g})")
    for vname, d in out["prototypes"].items():
        w(f"   [{vname}]")
        for n in SHIPPED:
            s = d[n]
            w(f"     {n:<12} {pct(s['accuracy'])} (+-{100 * s['accuracy_se']:.1f}) ${s['cost_usd_per_request']:.5f} "
              f"p95 ${s['p95_cost_usd']:.5f}")
        _goal_lines(w, d["goal_accurate"], "     accurate goal: ")
        _sweep_lines(w, d["goal_sweep"], "     sweep: ")
        for n in SHIPPED:
            picks = Counter(p["plan"] for p in out["plans"] if p["policy"] == f"{n} [{vname}]")
            w(f"     {n} picks: " + "; ".join(f"{c}x {p}" for p, c in picks.most_common()))
    w("   shipped-policy variants (policies/accurate.yaml `strategies:` only; planner unchanged):")
    for vname, d in out["policy_variants"].items():
        picks = Counter(p["plan"] for p in out["plans"] if p["policy"] == vname)
        w(f"   [{vname}] {pct(d['accuracy'])} ${d['cost_usd_per_request']:.5f} p95 ${d['p95_cost_usd']:.5f}; vs shipped "
          f"accurate {d['vs_shipped_points']:+.2f} +- {d['vs_shipped_se']:.2f} pts at x{d['cost_vs_shipped']:.2f} cost")
        _goal_lines(w, d["goal"], "     accurate goal: ")
        w("     picks: " + "; ".join(f"{c}x {p}" for p, c in picks.most_common()))
    w("   sensitivity of 'accurate' to the two knobs (gain-shrinkage prior in problems x tolerance z), pooled held-out:")
    w("     prior    z   accuracy   USD/req   vs shipped accurate (paired pts, cost)   vs train-chosen (gap, cost ratio)"
      "   vs train-chosen fixed-k   vs hindsight")
    for r in out["sensitivity_accurate"]:
        a, b, c = r["vs_train_chosen"], r["vs_train_chosen_fixed_k"], r["vs_hindsight"]
        w(f"     {r['prior']:5g} {r['z']:4g}   {pct(r['accuracy'])}  {r['cost_usd_per_request']:.5f}   "
          f"{r['vs_shipped_points']:+5.2f} +-{r['vs_shipped_se']:.2f}, x{r['cost_vs_shipped']:.2f}              "
          f"{a['accuracy_gap_points']:+5.2f} {a['cost_ratio']:.2f} {'PASS' if a['pass'] else 'fail'}"
          f"                  {b['accuracy_gap_points']:+5.2f} {b['cost_ratio']:.2f} {'PASS' if b['pass'] else 'fail'}"
          f"          {c['accuracy_gap_points']:+5.2f} {c['cost_ratio']:.2f} {'PASS' if c['pass'] else 'fail'}")
    return "\n".join(L)


def _goal_lines(w: Callable[[str], None], g: dict[str, Any], pre: str) -> None:
    for ref, d in g.items():
        w(f"{pre}vs {ref:<12}: accuracy {d['accuracy_gap_points']:+.2f} pts (+-{d['gap_se_points']:.2f}, need >= -1.00), "
          f"cost ratio {d['cost_ratio']:.3f} (need <= 0.500): {'PASS' if d['pass'] else 'FAIL'}")


def _sweep_lines(w: Callable[[str], None], g: dict[str, Any], pre: str) -> None:
    for ref in ("hindsight", "train_chosen"):
        e = g["vs_" + ref]
        lo, hi = e["range_usd"]
        if "ratio" not in e:
            w(f"{pre}vs {ref} static frontier: no overlapping cost range")
            continue
        w(f"{pre}vs {ref + ' static frontier':<29}: overlap ${lo:.5f}..${hi:.5f} ({e['decades']:.2f} decades): "
          f"area sweep {e['area_sweep']:.2f}, static {e['area_static']:.2f} (points x decades), ratio {e['ratio']:.3f}; "
          f"mean accuracy over the range {e['mean_acc_sweep']:.2f}% vs {e['mean_acc_static']:.2f}%")


def plot(out: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pooled = out["_pooled"]
    fig, ax = plt.subplots(figsize=(9, 6), dpi=120)
    st = [measured(n, r) for n, r in pooled["static"].items()]
    ax.scatter([m.cost_usd_per_request for m in st], [100 * m.accuracy for m in st], s=8, color="0.75",
               label="static configurations")
    front = pareto_frontier(st)
    ax.step([m.cost_usd_per_request for m in front], [100 * m.accuracy for m in front], where="post", color="tab:blue",
            label="static frontier")
    sw = [measured(f"{lam:g}", r) for lam, r in pooled["sweep"].items()]
    sf = pareto_frontier(sw)
    ax.step([m.cost_usd_per_request for m in sf], [100 * m.accuracy for m in sf], where="post", color="tab:orange",
            label="balanced sweep (frontier)")
    ax.scatter([m.cost_usd_per_request for m in sw], [100 * m.accuracy for m in sw], s=14, color="tab:orange")
    tc = out["static_frontier_train_chosen"]
    ax.step([m["cost_usd_per_request"] for m in tc], [100 * m["accuracy"] for m in tc], where="post", color="tab:blue",
            ls="--", alpha=0.7, label="static, chosen on training per budget")
    for n, r in pooled["policies"].items():
        ax.scatter([r.mean_cost], [100 * r.acc], marker="*", s=160, edgecolors="black", zorder=5, label=n)
    ax.set_xscale("log")
    ax.set_xlabel("mean cost per request (USD, log)")
    ax.set_ylabel("held-out accuracy (%), pooled over folds")
    ax.set_title(f"policy_eval: {out['folds']} folds, holdout {out['holdout_fraction']}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items() if k != "_pooled"}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--holdout-fraction", type=float, default=0.4)
    ap.add_argument("--permutations", type=int, default=16)
    ap.add_argument("--seed", type=int, default=1, help="split seed of the first fold (folds use seed, seed+1, ...)")
    ap.add_argument("--traces", type=Path, default=TRACES)
    ap.add_argument("--prices", type=Path, default=PRICES)
    ap.add_argument("--prior", type=float, default=30.0, help="prototype: shrinkage prior, in problems")
    ap.add_argument("--z", type=float, default=1.0, help="prototype: accurate's tolerance in standard errors")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--plot", metavar="OUT.png")
    args = ap.parse_args()

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    err = Console(stderr=True)
    t0 = time.perf_counter()
    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=err,
                  transient=True) as bar:
        job = bar.add_task("starting", total=1.0)
        out = evaluate(args, lambda text, frac: bar.update(job, description=text, completed=frac))
    elapsed = time.perf_counter() - t0
    if args.plot:
        plot(out, args.plot)
        err.print(f"wrote {args.plot}")
    if args.json:
        sys.stdout.write(json.dumps(_jsonable(out | {"elapsed_s": elapsed})) + "\n")
    else:
        sys.stdout.write(render(out, args, elapsed) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
