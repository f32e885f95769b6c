"""What the planner decides for one request, and what strategies execute.

A `Plan` is plain data so it can be logged, traced, compared in tests and replayed offline on
recorded samples with the same meaning it has online.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

Strategy = Literal["single", "parallel", "sequential"]
Aggregator = Literal["majority", "best_of_n", "first_finish", "short_m", "consensus"]
Restart = Literal["same", "escalate", "force_answer", "stop"]


@dataclass(frozen=True, slots=True)
class Plan:
    """One request's execution: which model, how many samples, how they are combined, where
    generations are cut and what happens after a cut.

    - single: one sample (`k` = 1).
    - parallel + majority / best_of_n: `k` samples, vote (or verifier score) over their answers.
    - parallel + first_finish: `k` samples, the first to finish wins, the rest are cancelled.
    - parallel + short_m: `k` samples, stop when `m` have finished, majority among them.
    - parallel + consensus: start `k`, add samples one at a time until the leading answer is
      `margin` votes ahead of the runner-up or `k_max` samples exist.
    - sequential: up to `rounds` of critic feedback, stopping when the verifier passes.
    A sample longer than `cutoff_tokens` is cut; `restart` says what follows (a new sample of the
    same model, the `fallback_model`, a forced answer from the partial reasoning, or stop), at
    most `max_restarts` times per sample slot.
    """

    model: str
    strategy: Strategy = "single"
    k: int = 1
    aggregator: Aggregator | None = None
    m: int | None = None
    k_max: int | None = None
    margin: int | None = None
    rounds: int | None = None
    cutoff_tokens: int | None = None
    max_restarts: int = 0
    restart: Restart = "stop"
    fallback_model: str | None = None
    critic_model: str | None = None
    verifier: dict[str, Any] | None = None
    predicted_cost_p50: float | None = None
    predicted_cost_p95: float | None = None
    predicted_accuracy: float | None = None
    predicted_tokens_p50: float | None = None
    predicted_tokens_p95: float | None = None
    reason: str = ""
    #: extra facts for `routing.explain` (the alternatives considered, the objective's value)
    details: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def max_samples(self) -> int:
        """Upper bound on samples started, not counting restarts."""
        if self.aggregator == "consensus":
            return max(self.k, self.k_max or self.k)
        return self.k

    def label(self) -> str:
        """Short low-cardinality name for metrics: `single`, `parallel/majority`, ..."""
        return self.strategy if self.aggregator is None else f"{self.strategy}/{self.aggregator}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("details", None)
        return {k: v for k, v in d.items() if v is not None}

    def with_(self, **changes: Any) -> "Plan":
        return replace(self, **changes)


def from_strategy(model: str, strategy: dict[str, Any], **fields: Any) -> Plan:
    """The plan a client asked for with `routing.strategy` (`{"name", "k", "aggregator", ...}`).

    Defaults: parallel without an aggregator votes (majority) over 4 samples; consensus without
    `k_max`/`margin` grows to 8 samples or a 2-vote lead; sequential runs 1 round.
    """
    name = strategy.get("name", "single")
    aggregator = strategy.get("aggregator") or ("majority" if name == "parallel" else None)
    k = strategy.get("k", 1 if name != "parallel" else 4)
    return Plan(
        model=model, strategy=name, k=k, aggregator=aggregator, m=strategy.get("m"),
        k_max=strategy.get("k_max", 8 if aggregator == "consensus" else None),
        margin=strategy.get("margin", 2 if aggregator == "consensus" else None),
        rounds=strategy.get("rounds", 1 if name == "sequential" else None), **fields,
    )
