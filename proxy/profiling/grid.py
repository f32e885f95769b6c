"""Strategy rows: a grid of static plans replayed over every problem of the recorded traces.

`strategy_rows()` measures, per (model, task) and difficulty, what each configuration of
`DEFAULT_GRID` achieves on the recorded samples (accuracy, billed tokens per request), in the
profile's strategy-row format: the numbers the planner predicts from. `run_config()` and
`group_problems()` are shared with `replay` (its baselines and frontier) and the benchmarks.
Split from `simulate.py`, which executes one plan on one problem.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from proxy.config import DIFFICULTIES
from proxy.profiling.simulate import Outcome, ProblemSamples, Verifier, simulate
from proxy.routing.plan import Plan

#: seeded permutations a strategy row averages over: two stratified blocks of 8 (see `run_config`),
#: a few seconds for a whole fit of the study's traces
DEFAULT_SEEDS: tuple[int, ...] = tuple(range(16))
#: fewest problems a (model, task, difficulty) strategy row is computed from
MIN_ROW_PROBLEMS = 5
_PROB_DECIMALS = 4


@dataclass(frozen=True, slots=True)
class GridConfig:
    """A static plan shape replayed for strategy rows and the replay frontier.

    `cut` says whether the plan cuts at the (model, task) failure threshold; the threshold
    itself is filled in per model and task by `plan()`.
    """

    strategy: str
    k: int = 1
    aggregator: str | None = None
    m: int | None = None
    k_max: int | None = None
    margin: int | None = None
    cut: bool = False
    restart: str = "stop"
    max_restarts: int = 0

    @property
    def name(self) -> str:
        if self.strategy == "single":
            base = "single"
        elif self.aggregator == "short_m":
            base = f"short_m@{self.k} m={self.m}"
        elif self.aggregator == "consensus":
            base = f"consensus k={self.k} margin={self.margin} k_max={self.k_max}"
        else:
            base = f"{self.aggregator}@{self.k}"
        if self.cut:
            base += f" +cut/{self.restart}" + (f"x{self.max_restarts}" if self.max_restarts else "")
        return base

    def plan(self, model: str, cutoff: int | None) -> Plan:
        return Plan(
            model=model, strategy=self.strategy, k=self.k, aggregator=self.aggregator,  # type: ignore[arg-type]
            m=self.m, k_max=self.k_max, margin=self.margin,
            cutoff_tokens=cutoff if self.cut else None,
            restart=self.restart if self.cut else "stop",  # type: ignore[arg-type]
            max_restarts=self.max_restarts if self.cut else 0,
        )

    def row_plan(self, cutoff: int | None) -> dict[str, Any]:
        """The `plan` object of the profile's strategy row (the loader's and planner's format)."""
        p = self.plan("", cutoff)
        keys = ("aggregator", "m", "k_max", "margin", "cutoff_tokens", "restart", "max_restarts")
        return {key: getattr(p, key) for key in keys}


def _grid() -> tuple[GridConfig, ...]:
    # a cut in a multi-sample plan drops that sample ("stop"): the vote (or consensus, which then
    # adds another sample) goes on without it, so restarts there would only add cost
    single = (GridConfig("single"),
              GridConfig("single", cut=True, restart="same", max_restarts=1),
              GridConfig("single", cut=True, restart="stop"))
    multi = [GridConfig("parallel", k=k, aggregator="majority") for k in (3, 5, 8)]
    multi += [GridConfig("parallel", k=k, aggregator="first_finish") for k in (2, 4)]
    multi += [GridConfig("parallel", k=k, aggregator="short_m", m=m) for k, m in ((4, 2), (8, 3))]
    multi += [GridConfig("parallel", k=k, aggregator="consensus", margin=2, k_max=8) for k in (2, 3)]
    with_cut = [GridConfig(c.strategy, c.k, c.aggregator, c.m, c.k_max, c.margin, cut=True) for c in multi]
    return single + tuple(multi) + tuple(with_cut)


#: the static configurations replayed per (model, task): 21 plans
DEFAULT_GRID: tuple[GridConfig, ...] = _grid()


def group_problems(table: Any) -> dict[str, tuple[str, dict[str, ProblemSamples]]]:
    """{problem key: (task, {model: ProblemSamples})} from a `TraceTable`, in sorted key order.

    Samples are ordered by `sample_id` so a fixed `orders` means the same samples every time.
    """
    keys = table.problem_keys()
    order = np.lexsort((table.sample_id, table.model, keys))
    grouped: dict[str, tuple[str, dict[str, list[int]]]] = {}
    for i in order.tolist():
        key = str(keys[i])
        entry = grouped.get(key)
        if entry is None:
            entry = grouped[key] = (str(table.task[i]), {})
        entry[1].setdefault(str(table.model[i]), []).append(i)
    tokens, preds, correct = table.completion_tokens.tolist(), table.pred.tolist(), table.correct.tolist()
    return {
        key: (task, {m: ProblemSamples(tuple(tokens[i] for i in idx), tuple(preds[i] for i in idx),
                                       tuple(correct[i] for i in idx)) for m, idx in per_model.items()})
        for key, (task, per_model) in grouped.items()
    }


def run_config(plan: Plan, problems: Sequence[Mapping[str, ProblemSamples]], seeds: Sequence[int],
               verifier: Verifier = "none", *, columns: Sequence[int] | np.ndarray | None = None,
               width: int | None = None) -> list[list[Outcome]]:
    """Outcomes of one plan on every problem under every seed: `[seed][problem]`.

    Draw orders are stratified: each block of `width` consecutive seeds rotates one random
    permutation per problem (drawn from the block's first seed), so over a block every recorded
    sample is drawn first exactly once. Each order is still a uniformly random permutation, but
    single-sample results come out exact rather than estimated and k-sample draws are balanced,
    which cuts the noise of strategy rows several-fold at the same cost.

    The orders depend only on the seeds, the problem's column and `width`, so every plan run on
    the same columns sees the same draws: common random numbers, which keep comparisons between
    plans free of permutation noise. `columns` gives each problem's position in a larger list
    (default: its index here) and `width` the largest sample count of that list, so that a
    subset of problems replays with the draws it has in the whole.
    """
    out: list[list[Outcome]] = []
    model = plan.model
    cols = np.arange(len(problems)) if columns is None else np.asarray(columns, dtype=np.int64)
    sizes = [len(p[model]) if model in p else 0 for p in problems]
    width = max(max(sizes, default=0), width or 0, 1)
    rows = int(cols.max()) + 1 if cols.size else 0
    base: list[list[int]] = []
    for i, seed in enumerate(seeds):
        block, shift = divmod(i, width)
        if shift == 0:  # a new block: one random permutation per problem, drawn in one numpy call
            keys = np.random.default_rng(seeds[block * width]).random((rows, width))
            base = np.argsort(keys, axis=1)[cols].tolist() if rows else []
        rng = np.random.default_rng(seed)  # for the fallback model's draws (escalation)
        row: list[Outcome] = []
        for j, samples in enumerate(problems):
            n = sizes[j]
            perm = base[j]
            order = perm[shift:] + perm[:shift]
            if n < width:
                order = [x for x in order if x < n]
            row.append(simulate(plan, samples, rng, verifier, orders={model: order}))
        out.append(row)
    return out


def strategy_rows(
    trace_records: Any,
    prices: Mapping[str, Any] | None = None,
    grid: Sequence[GridConfig] = DEFAULT_GRID,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    *,
    thresholds: Mapping[tuple[str, str], int | None] | None = None,
    rows: Sequence[Mapping[str, Any]] | None = None,
    difficulty: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """Profile strategy rows measured by replaying `grid` on a `TraceTable`.

    For each (model, task) and each difficulty bin (plus the task level, difficulty None), every
    grid configuration runs on all the cell's problems under every seed; a row holds `n`
    (problems), `accuracy`, `tokens` (billed completion tokens per request: mean, std, p50, p90,
    p95, p99, max), `strategy`, `k` and `plan` (the rest of the configuration plus
    `samples_mean`, the mean upstream calls per request, which multiplies the prompt's cost).

    The cutoff of the `cut` configurations is the (model, task) failure threshold of the
    task-level fitted curve: from `thresholds`, else read from the fitted `rows` (the strategy-less
    task-level rows fit just built), else computed with fit's own curve code. No threshold, no
    cut rows. `difficulty` (one label per sample) defaults to fit's pooled pass-rate binning.
    `prices` is accepted for fit's call but unused: rows are in tokens, and the planner prices
    them with the deployment's prices, which need not be the fit's.
    """
    from proxy.profiling import fit  # lazy: fit imports this module

    del prices
    table = trace_records
    if len(table) == 0:
        return []
    labels = difficulty if difficulty is not None else fit._difficulty_per_sample(table)
    level_of: dict[str, str] = dict(zip(table.problem_keys().tolist(), (str(x) for x in labels)))
    cut_at = dict(thresholds) if thresholds is not None else _thresholds(table, rows, fit)
    grouped = group_problems(table)
    out: list[dict[str, Any]] = []
    models = sorted(set(table.model.tolist()))
    tasks = sorted(set(table.task.tolist()))
    for model in models:
        for task in tasks:
            keys = [k for k, (t, per) in grouped.items() if t == task and model in per]
            if not keys:
                continue
            problems = [grouped[k][1] for k in keys]
            levels = np.array([level_of[k] for k in keys])
            cutoff = cut_at.get((model, task))
            for cfg in grid:
                if cfg.cut and cutoff is None:
                    continue
                res = run_config(cfg.plan(model, cutoff), problems, seeds)
                correct = np.array([[o.correct for o in r] for r in res], dtype=bool)  # [seed, problem]
                tokens = np.array([[o.completion_tokens for o in r] for r in res], dtype=np.float64)
                calls = np.array([[o.samples_used for o in r] for r in res], dtype=np.float64)
                for level in (None, *DIFFICULTIES):
                    cols = np.ones(len(keys), dtype=bool) if level is None else levels == level
                    n = int(cols.sum())
                    if n < MIN_ROW_PROBLEMS:
                        continue
                    plan = cfg.row_plan(cutoff)
                    plan["samples_mean"] = round(float(calls[:, cols].mean()), 3)
                    out.append({
                        "model": model, "task": task, "difficulty": level, "n": n,
                        "accuracy": round(float(correct[:, cols].mean()), _PROB_DECIMALS),
                        "tokens": fit._token_stats(tokens[:, cols].ravel()),
                        "strategy": cfg.strategy, "k": cfg.k, "plan": plan,
                    })
    return out


def _thresholds(table: Any, rows: Sequence[Mapping[str, Any]] | None, fit: Any) -> dict[tuple[str, str], int | None]:
    """(model, task) -> the task-level failure threshold: from fit's rows, else fitted here."""
    if rows is not None:
        return {(r["model"], r["task"]): r.get("failure_threshold_tokens") for r in rows
                if r.get("difficulty") is None and r.get("strategy") is None}
    out: dict[tuple[str, str], int | None] = {}
    for model in sorted(set(table.model.tolist())):
        for task in sorted(set(table.task.tolist())):
            mask = (table.model == model) & (table.task == task)
            if mask.any():
                row = fit._row(model, task, None, table.completion_tokens[mask], table.correct[mask])
                out[(model, task)] = row.get("failure_threshold_tokens")
    return out
