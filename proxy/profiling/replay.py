"""`pareto-proxy replay`: a policy's accuracy and cost on recorded traces, before it spends money.

One request per problem of the trace file. The policy's planner chooses a plan for it exactly
as online (from the profiles, with the task from the dataset mapping and the difficulty unknown,
since a live request does not come with a pass rate), and `proxy.profiling.simulate` executes
the plan on that problem's recorded samples. Every number is averaged over seeded
permutations of the draw order.

Next to the policy, the same problems are replayed under every *static* configuration (each
model x the strategy grid of `grid.DEFAULT_GRID`): the single-sample and majority@8 ones
are the baselines, and the configurations no other is both cheaper and more accurate than form
the cost/accuracy frontier a policy has to reach. Static and policy runs share the same
permutations (common random numbers), so their differences are not draw noise.

Honesty checks: profiles fitted on the very file being replayed make every policy look better
than it will be on new problems, so that case is detected (by the file's sha256 in the
profile's provenance) and reported loudly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from proxy.budget.pricing import ModelPrice
from proxy.errors import ConfigError
from proxy.profiling.grid import (
    DEFAULT_GRID,
    GridConfig,
    group_problems,
    run_config,
)
from proxy.profiling.simulate import (
    Outcome,
    ProblemSamples,
    Verifier,
)
from proxy.profiling.tracedata import TraceDataError, read_prices, read_traces
from proxy.routing.planner import Candidate, Planner, PlanRequest
from proxy.routing.policies import Policy
from proxy.routing.profiles import Profiles

__all__ = ["BASELINE_MAJORITY_K", "Measured", "ReplayReport", "pareto_frontier", "plot_report", "replay"]

#: the majority@k baseline per model (all 8 recorded samples: the study's self-consistency number)
BASELINE_MAJORITY_K = 8
#: best-of-n configurations added to the static grid when a verifier (the oracle) can pick
_ORACLE_GRID = tuple(GridConfig("parallel", k=k, aggregator="best_of_n") for k in (2, 4, 8))

Progress = Callable[[int], None]


@dataclass(frozen=True)
class Measured:
    """Accuracy and cost of one configuration (or the policy) over every problem and seed.

    Means are over all (permutation, problem) requests; `p95_cost_usd` is the 95th percentile of
    the per-request cost over the same pooled requests (what a budget reservation must cover).
    """

    name: str
    accuracy: float
    cost_usd_per_request: float
    tokens_per_request: float
    p95_cost_usd: float
    model: str | None = None
    config: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.model is not None:
            out["model"] = self.model
        if self.config is not None:
            out["config"] = self.config
        out.update(accuracy=round(self.accuracy, 4), cost_usd_per_request=_usd(self.cost_usd_per_request),
                   tokens_per_request=round(self.tokens_per_request, 1), p95_cost_usd=_usd(self.p95_cost_usd))
        return out


@dataclass
class ReplayReport:
    """Everything `replay` measured; `to_dict()` is the `--json` object (DESIGN.md, Command line)."""

    policy: str
    requests: int
    permutations: int
    seed: int
    verifier: str
    result: Measured
    plans: dict[str, dict[str, Any]]
    baselines: list[Measured]
    frontier: list[Measured]
    static: list[Measured]
    warnings: list[str] = field(default_factory=list)
    fitted_on_replayed_file: bool = False
    restarts_per_request: float = 0.0
    cuts_per_request: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        r = self.result
        return {
            "policy": self.policy,
            "requests": self.requests,
            "accuracy": round(r.accuracy, 4),
            "cost_usd_per_request": _usd(r.cost_usd_per_request),
            "tokens_per_request": round(r.tokens_per_request, 1),
            "p95_cost_usd": _usd(r.p95_cost_usd),
            "baselines": [{"name": b.name, "accuracy": round(b.accuracy, 4),
                           "cost_usd_per_request": _usd(b.cost_usd_per_request)} for b in self.baselines],
            "frontier": [f.to_dict() for f in self.frontier],
            # extensions beyond the contract
            "permutations": self.permutations,
            "seed": self.seed,
            "verifier": self.verifier,
            "restarts_per_request": round(self.restarts_per_request, 4),
            "cuts_per_request": round(self.cuts_per_request, 4),
            "plans": self.plans,
            "fitted_on_replayed_file": self.fitted_on_replayed_file,
            "warnings": self.warnings,
        }


def _usd(x: float) -> float:
    return float(f"{x:.8g}")


# -- inputs --------------------------------------------------------------------------------------


def _prices(profiles: Profiles, prices_csv: str | None, models: Sequence[str]) -> dict[str, ModelPrice]:
    """USD prices per trace model: the `--prices` CSV when given, else the profile's."""
    if prices_csv is not None:
        table = read_prices(prices_csv)
        return {m: ModelPrice(table[m].input_usd_per_mtok, table[m].output_usd_per_mtok, f"prices:{Path(prices_csv).name}")
                for m in models if m in table}
    return {m: ModelPrice(profiles.models[m].input_usd_per_mtok, profiles.models[m].output_usd_per_mtok, "profile")
            for m in models if m in profiles.models}


def _translate(policy: Policy, aliases: Mapping[str, str], models: Sequence[str], warnings: list[str]) -> Policy:
    """The policy with its model names turned into trace model names.

    Policies name configured models (`sim-r1`, a config's `name`); the traces name the profiled
    models they imitate (`R1`). `aliases` maps the former to the latter.
    """

    def one(name: str | None) -> str | None:
        if name is None or name in models:
            return name
        return aliases.get(name)

    update: dict[str, Any] = {}
    if policy.models:
        mapped = [one(n) for n in policy.models]
        dropped = [n for n, m in zip(policy.models, mapped) if m is None]
        if dropped:
            warnings.append(f"policy {policy.name}: models without trace samples are left out: {', '.join(dropped)}")
        kept = list(dict.fromkeys(m for m in mapped if m is not None))
        if not kept:
            raise ConfigError(f"policy {policy.name}: none of its models ({', '.join(policy.models)}) has samples "
                              f"in the trace file; models with samples: {', '.join(models)}")
        update["models"] = kept
    for key in ("fallback_model", "default_model"):
        name = getattr(policy, key)
        if name is not None:
            update[key] = one(name)
            if update[key] is None:
                warnings.append(f"policy {policy.name}: {key} {name!r} has no trace samples; ignored")
    return policy.model_copy(update=update)


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# -- measuring -----------------------------------------------------------------------------------


@dataclass
class _Outcomes:
    """Per (seed, problem) results of one plan choice, as arrays for averaging."""

    correct: np.ndarray
    tokens: np.ndarray
    cost: np.ndarray
    restarts: np.ndarray
    cuts: np.ndarray

    def measured(self, name: str, model: str | None = None, config: str | None = None) -> Measured:
        return Measured(name, float(self.correct.mean()), float(self.cost.mean()), float(self.tokens.mean()),
                        float(np.percentile(self.cost, 95)), model, config)


def _collect(outcomes: list[list[Outcome]], prices: Mapping[str, ModelPrice], prompt_tokens: int) -> _Outcomes:
    flat = [o for row in outcomes for o in row]
    shape = (len(outcomes), len(outcomes[0]) if outcomes else 0)

    def cost(o: Outcome) -> float:
        usd = 0.0
        for m, t in o.tokens_by_model.items():
            p = prices.get(m)
            if p is not None:
                usd += p.cost(prompt_tokens * o.samples_by_model.get(m, 0), t)
        return usd

    return _Outcomes(
        correct=np.array([o.correct for o in flat], dtype=bool).reshape(shape),
        tokens=np.array([o.completion_tokens for o in flat], dtype=np.float64).reshape(shape),
        cost=np.array([cost(o) for o in flat], dtype=np.float64).reshape(shape),
        restarts=np.array([o.restarts for o in flat], dtype=np.float64).reshape(shape),
        cuts=np.array([o.cut for o in flat], dtype=np.float64).reshape(shape),
    )


def _merge(parts: list[tuple[np.ndarray, _Outcomes]], n: int, seeds: int) -> _Outcomes:
    """Reassemble per-group results (problem columns `idx`) into one [seed, problem] set."""
    out = _Outcomes(*(np.zeros((seeds, n), dtype=dt) for dt in (bool, float, float, float, float)))
    for idx, part in parts:
        for name in ("correct", "tokens", "cost", "restarts", "cuts"):
            getattr(out, name)[:, idx] = getattr(part, name)
    return out


def pareto_frontier(points: Sequence[Measured]) -> list[Measured]:
    """The points no other point beats on both cost (lower) and accuracy (higher), by cost."""
    frontier: list[Measured] = []
    for p in sorted(points, key=lambda p: (p.cost_usd_per_request, -p.accuracy, p.name)):
        if not frontier or p.accuracy > frontier[-1].accuracy:
            frontier.append(p)
    return frontier


def replay(
    traces: str,
    policy: Policy,
    profiles: Profiles,
    *,
    prices_csv: str | None = None,
    verifier: Verifier = "none",
    seed: int = 0,
    permutations: int = 16,
    prompt_tokens: int = 0,
    aliases: Mapping[str, str] | None = None,
    difficulty: str = "unknown",
    grid: Sequence[GridConfig] = DEFAULT_GRID,
    progress: Callable[[int, int], None] | None = None,
) -> ReplayReport:
    """Replay `policy` on the trace file `traces` (see the module docstring).

    `prompt_tokens` is charged per upstream call at the input price (the traces do not record
    prompts; 0 counts completion tokens only, which is where reasoning models spend). `aliases`
    maps configured model names to the trace models they imitate. `difficulty="oracle"` hands
    the planner each problem's pass-rate bin (an offline-only upper bound on what a difficulty
    classifier could give). `progress(done, total)` is called after each replayed configuration.
    Raises `ConfigError` (a `TraceDataError` for a bad file) with a message for the user.
    """
    if permutations < 1:
        raise ConfigError("--permutations must be at least 1")
    if verifier not in ("none", "oracle"):
        raise ConfigError(f"--verifier must be none or oracle, got {verifier!r}")
    table = read_traces(traces)
    if len(table) == 0:
        raise TraceDataError(f"{traces}: no samples (the file has a header and no data rows)")
    warnings: list[str] = []
    digest = _sha256(traces)
    fitted_here = any(p.get("kind") == "traces" and p.get("sha256") == digest for p in profiles.provenance)
    if fitted_here:
        warnings.append(f"the profiles were fitted on {Path(traces).name} itself (same sha256): the planner "
                        "has seen these problems, so accuracy here overstates what it will do on new ones; "
                        "fit with --holdout-fraction and replay the holdout file")

    grouped = group_problems(table)
    keys = list(grouped)
    problems = [grouped[k][1] for k in keys]
    tasks = [grouped[k][0] for k in keys]
    trace_models = sorted(set(table.model.tolist()))
    prices = _prices(profiles, prices_csv, trace_models)
    unpriced = [m for m in trace_models if m not in prices]
    if unpriced:
        warnings.append(f"no price for {', '.join(unpriced)} (not in the {'--prices file' if prices_csv else 'profile'}): "
                        "left out of the candidates, baselines and frontier")
    priced = [m for m in trace_models if m in prices]
    profiled = [m for m in priced if profiles.rows_for(m)]
    if not profiled:
        raise ConfigError(f"no model of {traces} ({', '.join(trace_models)}) has both a price and profile rows")
    incomplete = [m for m in priced if any(m not in p for p in problems)]
    if incomplete:
        warnings.append(f"{', '.join(incomplete)}: no samples for some problems; a plan on them stops with nothing there")
    if not any(r.strategy for m in profiled for r in profiles.rows if r.model == m):
        warnings.append("the profiles have no strategy rows for these models: the planner can only choose "
                        "single-sample plans (refit with `pareto-proxy fit` to measure the others)")

    policy = _translate(policy, aliases or {}, trace_models, warnings)
    candidates = [Candidate(m, m, prices[m], reasoning=bool(profiles.models.get(m) and profiles.models[m].reasoning))
                  for m in profiled]
    planner = Planner(profiles, candidates)
    levels: list[str | None] = [None] * len(keys)
    if difficulty == "oracle":
        from proxy.profiling.fit import _difficulty_per_sample

        per_sample = dict(zip(table.problem_keys().tolist(), _difficulty_per_sample(table).tolist()))
        levels = [per_sample[k] for k in keys]

    seeds = [seed * 1_000_003 + i for i in range(permutations)]
    static_cfgs = list(grid) + (list(_ORACLE_GRID) if verifier == "oracle" else [])
    total = 1 + len(priced) * len(static_cfgs)
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    # the policy: one plan per (task, difficulty) cell, each run on its problems
    cells: dict[tuple[str, str | None], list[int]] = {}
    for j, (task, level) in enumerate(zip(tasks, levels)):
        cells.setdefault((task, level), []).append(j)
    plans: dict[str, dict[str, Any]] = {}
    parts: list[tuple[np.ndarray, _Outcomes]] = []
    for (task, level), idx in sorted(cells.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        plan = planner.plan(policy, PlanRequest(task=task, difficulty=level, prompt_tokens=prompt_tokens))
        if plan.strategy == "sequential":
            raise ConfigError(f"policy {policy.name} chose a sequential plan for {task}: critic rounds cannot be "
                              "replayed from per-sample traces (they record no critic feedback); "
                              "drop 'sequential' from the policy's strategies to replay it")
        plans[task if level is None else f"{task}/{level}"] = plan.to_dict() | {"problems": len(idx)}
        cols = np.array(idx)
        outs = run_config(plan, [problems[j] for j in idx], seeds, verifier, columns=cols, width=_width(problems))
        parts.append((cols, _collect(outs, prices, prompt_tokens)))
    merged = _merge(parts, len(keys), len(seeds))
    tick()

    # static configurations: every priced model x the grid, cut at each task's learned threshold
    static: list[Measured] = []
    for model in priced:
        cutoffs = {t: _threshold(profiles, model, t) for t in set(tasks)}
        for cfg in static_cfgs:
            if cfg.cut and all(c is None for c in cutoffs.values()):
                tick()
                continue
            by_task: list[tuple[np.ndarray, _Outcomes]] = []
            for task in sorted(set(tasks)):
                idx = np.array([j for j, t in enumerate(tasks) if t == task])
                plan = cfg.plan(model, cutoffs[task])
                outs = run_config(plan, [problems[j] for j in idx], seeds, verifier, columns=idx, width=_width(problems))
                by_task.append((idx, _collect(outs, prices, prompt_tokens)))
            static.append(_merge(by_task, len(keys), len(seeds)).measured(f"{model} {cfg.name}", model, cfg.name))
            tick()

    names = {"single", f"majority@{BASELINE_MAJORITY_K}"}
    baselines = [m for m in static if m.config in names]
    return ReplayReport(
        policy=policy.name, requests=len(keys), permutations=permutations, seed=seed, verifier=verifier,
        result=merged.measured(policy.name), plans=plans, baselines=baselines,
        frontier=pareto_frontier(static), static=static, warnings=warnings, fitted_on_replayed_file=fitted_here,
        restarts_per_request=float(merged.restarts.mean()), cuts_per_request=float(merged.cuts.mean()),
    )


def _width(problems: Sequence[Mapping[str, ProblemSamples]]) -> int:
    return max((len(s) for p in problems for s in p.values()), default=0)


def _threshold(profiles: Profiles, model: str, task: str) -> int | None:
    row = profiles.row(model, task, None)
    return row.failure_threshold_tokens if row is not None else None


# -- output --------------------------------------------------------------------------------------


def plot_report(report: ReplayReport, out: str) -> None:
    """A PNG: every static configuration, the frontier line, the baselines and the policy point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 6), dpi=120)
    pos = [m for m in report.static if m.cost_usd_per_request > 0]
    ax.scatter([m.cost_usd_per_request for m in pos], [100 * m.accuracy for m in pos], s=10, color="0.75",
               label="static configurations", zorder=1)
    front = [m for m in report.frontier if m.cost_usd_per_request > 0]
    ax.step([m.cost_usd_per_request for m in front], [100 * m.accuracy for m in front], where="post",
            color="tab:blue", lw=1.8, label="static frontier", zorder=2)
    ax.scatter([m.cost_usd_per_request for m in front], [100 * m.accuracy for m in front], s=18,
               color="tab:blue", zorder=3)
    markers = {"single": "o", f"majority@{BASELINE_MAJORITY_K}": "s"}
    for cfg, marker in markers.items():
        pts = [m for m in report.baselines if m.config == cfg and m.cost_usd_per_request > 0]
        ax.scatter([m.cost_usd_per_request for m in pts], [100 * m.accuracy for m in pts], marker=marker, s=40,
                   facecolors="none", edgecolors="tab:green", label=f"baseline: {cfg}", zorder=4)
        for m in pts:
            ax.annotate(m.model or m.name, (m.cost_usd_per_request, 100 * m.accuracy), fontsize=6,
                        xytext=(3, 2), textcoords="offset points", color="tab:green")
    r = report.result
    ax.scatter([max(r.cost_usd_per_request, 1e-9)], [100 * r.accuracy], marker="*", s=260, color="tab:red",
               edgecolors="black", zorder=5, label=f"policy {report.policy}")
    ax.set_xscale("log")
    ax.set_xlabel("mean cost per request (USD, log scale)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"replay: {report.requests} requests x {report.permutations} permutations, verifier {report.verifier}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def render_table(report: ReplayReport, console: Any) -> None:
    """The human-readable report (rich tables) on `console`."""
    from rich.table import Table

    r = report.result
    head = Table(title=f"policy {report.policy}: {report.requests} requests x {report.permutations} permutations "
                       f"(seed {report.seed}, verifier {report.verifier})")
    for col in ("accuracy", "USD/request", "tokens/request", "p95 USD", "restarts/req", "cuts/req"):
        head.add_column(col, justify="right")
    head.add_row(f"{100 * r.accuracy:.2f}%", f"{r.cost_usd_per_request:.6f}", f"{r.tokens_per_request:,.0f}",
                 f"{r.p95_cost_usd:.6f}", f"{report.restarts_per_request:.3f}", f"{report.cuts_per_request:.3f}")
    console.print(head)
    plans = Table(title="plans chosen")
    for col in ("cell", "problems", "plan", "predicted accuracy"):
        plans.add_column(col)
    for cell, p in report.plans.items():
        shape = f"{p['model']} {p.get('strategy')}" + (f"/{p['aggregator']}" if p.get("aggregator") else "")
        shape += f" k={p.get('k', 1)}"
        for key in ("m", "k_max", "margin"):
            if p.get(key) is not None:
                shape += f" {key}={p[key]}"
        if p.get("cutoff_tokens"):
            shape += f" cut@{p['cutoff_tokens']} {p.get('restart')}x{p.get('max_restarts', 0)}"
        acc = p.get("predicted_accuracy")
        plans.add_row(cell, str(p["problems"]), shape, f"{100 * acc:.1f}%" if acc is not None else "-")
    console.print(plans)
    for title, items in (("baselines", report.baselines), ("static cost/accuracy frontier", report.frontier)):
        t = Table(title=title)
        for col in ("configuration", "accuracy", "USD/request", "tokens/request", "p95 USD"):
            t.add_column(col, justify="right" if col != "configuration" else "left")
        for m in items:
            t.add_row(m.name, f"{100 * m.accuracy:.2f}%", f"{m.cost_usd_per_request:.6f}",
                      f"{m.tokens_per_request:,.0f}", f"{m.p95_cost_usd:.6f}")
        console.print(t)


def run_replay_command(args: Any) -> int:
    """`pareto-proxy replay` (DESIGN.md, Command line): load inputs, replay, print, plot.

    Output goes to stdout (tables, or one JSON object with `--json`); warnings and the progress
    bar go to stderr, so `--json` output stays machine-readable.
    """
    import json
    import sys

    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from proxy.config import load_settings
    from proxy.routing.policies import load_policy
    from proxy.upstream.simulator import default_sim_name

    settings = load_settings(args.config)
    profiles = Profiles.load(args.profiles or settings.profiles)
    policy = load_policy(args.policy, settings.policies_dir)
    aliases = {default_sim_name(m): m for m in profiles.model_names()}
    aliases.update({m.name: m.profile for m in settings.models if m.profile})
    err = Console(stderr=True)
    bars = Progress(TextColumn("replay {task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err, transient=True, disable=not err.is_terminal)
    with bars:
        job = bars.add_task(policy.name, total=None)
        report = replay(
            args.traces, policy, profiles, prices_csv=args.prices, verifier=args.verifier, seed=args.seed,
            permutations=args.permutations, prompt_tokens=args.prompt_tokens, aliases=aliases,
            difficulty=args.difficulty, progress=lambda done, total: bars.update(job, completed=done, total=total),
        )
    for w in report.warnings:
        loud = w.startswith("the profiles were fitted on")
        err.print(f"[bold red]WARNING:[/] {w}" if loud else f"[yellow]warning:[/] {w}", highlight=False)
    sys.stderr.flush()
    if args.plot:
        try:
            plot_report(report, args.plot)
        except OSError as e:
            raise ConfigError(f"--plot: cannot write {args.plot}: {e.strerror or e}") from None
    if args.json:
        sys.stdout.write(json.dumps(report.to_dict()) + "\n")
    else:
        render_table(report, Console())
        if args.plot:
            Console().print(f"wrote {args.plot}")
    return 0
