"""Executing a `Plan` offline on one problem's recorded samples, and the strategy rows of a profile.

The per-sample trace table records, per model and problem, a handful of independent samples
(8 in the study's data): their lengths, extracted answers and correctness. `simulate()` runs a
plan on them exactly as the proxy would run it online, with two substitutions: "generate a
sample" becomes "draw one of the problem's recorded samples, without replacement", and time is
measured in tokens (every sample streams at the same rate, so the sample that finishes first is
the shortest one). `strategy_rows()` runs a grid of static plans over every problem of a
(model, task[, difficulty]) cell and turns the outcomes into the profile's strategy rows, which
is where the planner's predictions for multi-sample plans and cutoffs come from.

Semantics (they match `proxy.routing.plan.Plan` and the online executor,
`proxy.strategies.executor`):

* A sample longer than `cutoff_tokens` is *cut*: it bills the cutoff and gives no answer. Then
  `restart` decides, at most `max_restarts` times per sample slot (0: a cut ends the slot
  whatever the rule): `same` draws another sample of the same model (which can be cut too),
  `escalate` draws one from `fallback_model`, uncut (the cutoff was learned for the plan's
  model; with no fallback the slot keeps what it has), `stop` ends the slot.
* `force_answer` cannot be replayed honestly: the traces do not say what a model forced to
  answer from its partial reasoning would have said. It is replayed as the second call it is
  online (`FORCE_ANSWER_TOKENS` billed, one more call and restart) whose answer counts as
  wrong. That under-states its accuracy (a forced answer is sometimes right): the conservative
  side for a cost tool.
* Only samples that finished (not cut) vote, on their extracted answer (`pred`; an empty one
  does not vote). Ties go to the answer that reached its count first (its last voter's finish
  time), as online, then to the smaller string, so nothing depends on dict order.
* `first_finish`: k samples; the first to finish (restarts included in its time) wins and the
  others are cancelled at that moment, so each pays what it generated until then (k x the
  winner's length when nothing was cut).
* `short_m`: k samples; stop when `m` have finished, every sample pays min(its own length, the
  m-th finish time), majority among those m.
* `consensus`: start k; after each finish, stop once the leader is `margin` votes ahead of the
  runner-up (samples still running are cancelled then); when none is running and fewer than
  `k_max` exist, start one more at that moment.
* `best_of_n`: with `verifier="oracle"` the `correct` column is a perfect verifier, so the
  request is right when any finished sample is right (the study's best-of-n bound); with
  `verifier="none"` there is nothing to score samples with, and it is a majority vote.
* `sequential` (critic rounds) needs critic feedback the traces do not contain: `NotReplayable`.
* A plan that needs more samples than the problem has recorded stops with what it has: slots
  that cannot draw a sample are not run, and a restart with nothing left to draw ends its slot.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from proxy.errors import ConfigError
from proxy.routing.plan import Plan

__all__ = [
    "FORCE_ANSWER_TOKENS",
    "NotReplayable",
    "Outcome",
    "ProblemSamples",
    "Verifier",
    "simulate",
]

Verifier = Literal["none", "oracle"]

#: tokens billed for the forced answer after a `force_answer` cut (the online cap is of this order)
FORCE_ANSWER_TOKENS = 64
#: consensus margin when a plan leaves it unset
DEFAULT_MARGIN = 2
_INF = math.inf


class NotReplayable(ConfigError):
    """The plan needs data the traces do not have (a critic's feedback for `sequential`)."""


@dataclass(frozen=True, slots=True)
class ProblemSamples:
    """One model's recorded samples of one problem, as plain tuples (fast to index in Python)."""

    tokens: tuple[int, ...]
    preds: tuple[str, ...]
    correct: tuple[bool, ...]

    def __len__(self) -> int:
        return len(self.tokens)

    @classmethod
    def of(cls, tokens: Iterable[int], preds: Iterable[str], correct: Iterable[bool]) -> ProblemSamples:
        t, p, c = tuple(int(x) for x in tokens), tuple(str(x) for x in preds), tuple(bool(x) for x in correct)
        if not len(t) == len(p) == len(c):
            raise ValueError("tokens, preds and correct must have the same length")
        return cls(t, p, c)


@dataclass(frozen=True, slots=True)
class Outcome:
    """One request's replayed result.

    `completion_tokens` is every billed token: cut, cancelled and forced-answer tokens included.
    `samples_used` counts the upstream calls started (restarts included): each one sends the
    prompt once, so it multiplies the prompt's cost. The per-model splits price escalations.
    """

    correct: bool
    completion_tokens: int
    samples_used: int
    restarts: int
    cut: int
    answer: str | None = None
    tokens_by_model: dict[str, int] = field(default_factory=dict)
    samples_by_model: dict[str, int] = field(default_factory=dict)


# -- the engine ---------------------------------------------------------------------------------
#
# Two ways to produce sample slots, one way to aggregate them: `_Run` keeps a token timeline per
# slot (restarts, escalations, forced answers), `_no_restarts` is a shortcut for plans that never
# restart (most of the grid: one slot is one sample). Both fill a `_Book` and call `_decide`, so
# the rules of every aggregator live in one place; a test checks the two producers agree.


class _Book:
    """What aggregation needs of the started slots, in start order: when each started and ended,
    whether it finished with a sample, and that sample's answer and correctness."""

    __slots__ = ("ans", "end", "fin", "ok", "start")

    def __init__(self) -> None:
        self.start: list[int] = []
        self.end: list[int] = []
        self.fin: list[bool] = []
        self.ans: list[str | None] = []
        self.ok: list[bool] = []


def _vote(book: _Book, members: Iterable[int]) -> tuple[str | None, bool, list[int]]:
    """(winning answer, its correctness, vote counts in descending order) among `members`.

    Ties go to the answer that reached its count first (its last voter's finish time), as online
    (`proxy.strategies.aggregate.groups`), then to the smaller string."""
    tally: dict[str, list[Any]] = {}
    for i in members:
        a = book.ans[i]
        if a is None:
            continue
        t = tally.get(a)
        if t is None:
            tally[a] = [1, book.end[i], book.ok[i]]
        else:
            t[0] += 1
            t[1] = max(t[1], book.end[i])
            t[2] = t[2] or book.ok[i]
    if not tally:
        return None, False, []
    best = min(tally.items(), key=lambda kv: (-kv[1][0], kv[1][1], kv[0]))
    return best[0], bool(best[1][2]), sorted((t[0] for t in tally.values()), reverse=True)


def _decide(plan: Plan, aggregator: str | None, k: int, verifier: Verifier, book: _Book,
            more: Callable[[int], bool]) -> tuple[str | None, bool, float]:
    """(answer, correct, the time the request stopped: inf when nothing was cancelled).

    `more(at)` starts one more slot at time `at` (consensus) and says whether there was a
    sample to draw.
    """
    if aggregator is None:
        if book.end and book.fin[0] and book.ans[0] is not None:
            return book.ans[0], book.ok[0], _INF
        return None, False, _INF
    if aggregator == "consensus":
        return _consensus(plan, k, book, more)
    done = [i for i in range(len(book.end)) if book.fin[i]]
    if aggregator == "first_finish":
        if not done:
            return None, False, _INF
        w = min(done, key=book.end.__getitem__)  # min() keeps the first slot on ties
        return book.ans[w], book.ans[w] is not None and book.ok[w], book.end[w]
    if aggregator == "short_m":
        m = min(max(1, plan.m or (k + 1) // 2), k)
        ranked = sorted(done, key=book.end.__getitem__)  # stable: slot order on ties
        until = _INF
        if len(ranked) >= m:
            ranked, until = ranked[:m], book.end[ranked[m - 1]]
        answer, correct, _ = _vote(book, ranked)
        return answer, correct, until
    if aggregator == "best_of_n" and verifier == "oracle":
        hit = next((i for i in done if book.ans[i] is not None and book.ok[i]), None)
        if hit is not None:
            return book.ans[hit], True, _INF
        return _vote(book, done)[0], False, _INF
    answer, correct, _ = _vote(book, done)  # majority, or best_of_n with nothing to score
    return answer, correct, _INF


def _consensus(plan: Plan, k: int, book: _Book, more: Callable[[int], bool]) -> tuple[str | None, bool, float]:
    """Event by event, as online: after each finish, stop (cancelling what is in flight) once the
    leader is `margin` votes ahead; when nothing is in flight and fewer than `k_max` slots
    exist, start one more at that moment."""
    margin = plan.margin or DEFAULT_MARGIN
    k_max = max(k, plan.k_max or k)
    flying = sorted(range(len(book.end)), key=book.end.__getitem__)
    ended: list[int] = []
    while True:
        if not flying:
            now = max((book.end[i] for i in ended), default=0)
            if len(book.end) >= k_max or not more(now):
                answer, correct, _ = _vote(book, ended)
                return answer, correct, _INF
            flying = [len(book.end) - 1]
        now = book.end[flying[0]]
        ended += [i for i in flying if book.end[i] == now]  # simultaneous finishes count together
        flying = [i for i in flying if book.end[i] != now]
        answer, correct, counts = _vote(book, ended)
        if counts and counts[0] - (counts[1] if len(counts) > 1 else 0) >= margin:
            return answer, correct, (now if flying else _INF)


class _Draws:
    """Per-model pools of sample indices, drawn without replacement in a random order.

    A model's order is fixed the first time the model is drawn from, so a plan that never
    escalates never consumes random numbers for the fallback (keeping the primary's draws
    identical across plans: common random numbers make plan comparisons less noisy).
    """

    __slots__ = ("orders", "pos", "rng", "samples")

    def __init__(self, samples: Mapping[str, ProblemSamples], rng: np.random.Generator | None,
                 orders: dict[str, Sequence[int]] | None = None) -> None:
        self.samples = samples
        self.rng = rng
        self.orders: dict[str, Sequence[int]] = dict(orders or {})
        self.pos: dict[str, int] = {}

    def draw(self, model: str) -> int | None:
        ps = self.samples.get(model)
        if ps is None:
            return None
        order = self.orders.get(model)
        if order is None:
            order = _order(ps, self.rng)
            self.orders[model] = order
        i = self.pos.get(model, 0)
        if i >= len(order):
            return None
        self.pos[model] = i + 1
        return order[i]


def _order(ps: ProblemSamples, rng: np.random.Generator | None) -> Sequence[int]:
    return rng.permutation(len(ps.tokens)).tolist() if rng is not None else range(len(ps.tokens))


class _Slot:
    """One sample slot on the token timeline: its segments (one per upstream call)."""

    __slots__ = ("answer", "correct", "end", "restarts", "segments", "start", "state")

    def __init__(self, start: int) -> None:
        #: (model, start, billed length if not cancelled, time of the cut or -1)
        self.segments: list[tuple[str, int, int, int]] = []
        self.start = self.end = start
        self.state = "done"  # done: finished with a sample; cut: may restart; over: ended without one
        self.answer: str | None = None
        self.correct = False
        self.restarts = 0


class _Run:
    """A plan with restarts being executed on one problem's samples."""

    __slots__ = ("allowed", "book", "draws", "plan", "samples", "slots")

    def __init__(self, plan: Plan, samples: Mapping[str, ProblemSamples], draws: _Draws) -> None:
        self.plan = plan
        self.samples = samples
        self.draws = draws
        self.allowed = plan.max_restarts if plan.restart != "stop" else 0
        self.slots: list[_Slot] = []
        self.book = _Book()

    def place(self, slot: _Slot, model: str, idx: int, cutoff: int | None) -> None:
        ps = self.samples[model]
        length, start = ps.tokens[idx], slot.end
        if cutoff is not None and length > cutoff:
            slot.segments.append((model, start, cutoff, start + cutoff))
            slot.end, slot.state = start + cutoff, "cut"
            return
        slot.segments.append((model, start, length, -1))
        slot.end, slot.state = start + length, "done"
        slot.answer, slot.correct = ps.preds[idx] or None, ps.correct[idx]

    def start(self, n: int, at: int = 0) -> int:
        """Start up to `n` slots at time `at`, resolve their restarts, book them; how many started."""
        new: list[_Slot] = []
        for _ in range(n):
            idx = self.draws.draw(self.plan.model)
            if idx is None:
                break
            slot = _Slot(at)
            self.place(slot, self.plan.model, idx, self.plan.cutoff_tokens)
            new.append(slot)
        self.restarts(new)
        for s in new:
            done = s.state == "done"
            self.book.start.append(s.start)
            self.book.end.append(s.end)
            self.book.fin.append(done)
            self.book.ans.append(s.answer if done else None)
            self.book.ok.append(done and s.correct)
        self.slots += new
        return len(new)

    def restarts(self, slots: list[_Slot]) -> None:
        """Resolve cuts round by round: every restart of round r starts at the same time (r+1 cuts
        in), so drawing in rounds and slot order draws the pool in time order."""
        plan = self.plan
        pending = [s for s in slots if s.state == "cut"]
        while pending:
            nxt: list[_Slot] = []
            for s in pending:
                if s.restarts >= self.allowed:
                    s.state = "over"
                    continue
                if plan.restart == "force_answer":  # a second call; what it answers is not recorded
                    s.restarts += 1
                    s.segments.append((plan.model, s.end, FORCE_ANSWER_TOKENS, -1))
                    s.end, s.state = s.end + FORCE_ANSWER_TOKENS, "over"
                    continue
                model = plan.model if plan.restart == "same" else plan.fallback_model
                idx = self.draws.draw(model) if model is not None else None
                if idx is None:
                    s.state = "over"  # nowhere to restart: keep what there is
                    continue
                s.restarts += 1
                # an escalated sample is not cut: the cutoff was learned for the plan's model
                self.place(s, model, idx, plan.cutoff_tokens if plan.restart == "same" else None)  # type: ignore[arg-type]
                if s.state == "cut":
                    nxt.append(s)
            pending = nxt

    def outcome(self, answer: str | None, correct: bool, until: float) -> Outcome:
        """Bill every segment up to `until` (the moment the request stopped; inf = no cancel)."""
        total = used = restarts = cut = 0
        by_model: dict[str, int] = {}
        calls: dict[str, int] = {}
        for s in self.slots:
            for j, (model, start, length, cut_at) in enumerate(s.segments):
                if j and start >= until:
                    break  # this restart would have started after the request was over
                billed = length if until >= start + length else max(0, int(until) - start)
                total += billed
                used += 1
                restarts += j > 0
                cut += 0 <= cut_at <= until
                by_model[model] = by_model.get(model, 0) + billed
                calls[model] = calls.get(model, 0) + 1
        return Outcome(correct, total, used, restarts, cut, answer, by_model, calls)


def _no_restarts(plan: Plan, ps: ProblemSamples, order: Sequence[int], verifier: Verifier,
                 aggregator: str | None, k: int) -> Outcome:
    """`_Run` for plans that never restart, on plain lists (about twice as fast)."""
    cutoff = plan.cutoff_tokens
    tokens, preds, right = ps.tokens, ps.preds, ps.correct
    book = _Book()
    first = order[:k]  # the first batch in bulk: this function is the hot loop of a fit
    pos = len(first)
    book.start = [0] * pos
    if cutoff is None:
        book.end = [tokens[i] for i in first]
        book.fin = [True] * pos
        book.ans = [preds[i] or None for i in first]
        book.ok = [right[i] for i in first]
    else:
        book.end = [min(tokens[i], cutoff) for i in first]
        book.fin = [tokens[i] <= cutoff for i in first]
        book.ans = [preds[i] or None if tokens[i] <= cutoff else None for i in first]
        book.ok = [right[i] and tokens[i] <= cutoff for i in first]

    def more(at: int = 0) -> bool:
        nonlocal pos
        if pos >= len(order):
            return False
        idx = order[pos]
        pos += 1
        length = tokens[idx]
        cut = cutoff is not None and length > cutoff
        book.start.append(at)
        book.end.append(at + (cutoff if cut else length))  # type: ignore[operator]
        book.fin.append(not cut)
        book.ans.append(None if cut else preds[idx] or None)
        book.ok.append(not cut and right[idx])
        return True

    answer, correct, until = _decide(plan, aggregator, k, verifier, book, more)
    starts, ends, n = book.start, book.end, len(book.end)
    if until == _INF:
        total = sum(ends) - sum(starts)
        cuts = book.fin.count(False)
    else:
        total = sum(max(0, min(e, int(until)) - s) for s, e in zip(starts, ends))
        cuts = sum(1 for i in range(n) if not book.fin[i] and ends[i] <= until)
    return Outcome(correct, total, n, 0, cuts, answer, {plan.model: total}, {plan.model: n})


def simulate(plan: Plan, samples: Mapping[str, ProblemSamples], rng: np.random.Generator | None,
             verifier: Verifier = "none", *, orders: dict[str, Sequence[int]] | None = None,
             _fast: bool = True) -> Outcome:
    """Execute `plan` on one problem's recorded samples (see the module docstring for the rules).

    `samples` maps a model name to this problem's samples of that model: the plan's model, and
    its `fallback_model` when the plan escalates. `rng` fixes the draw order (a permutation per
    model); `orders` may give it instead (a list of sample indices per model), which is how tests
    pin a scenario and how `run_config` pre-draws permutations in bulk. A model without samples
    (or not in `samples`) contributes nothing: the plan stops with what it has. Raises
    `NotReplayable` for sequential plans.
    """
    if plan.strategy == "sequential":
        raise NotReplayable(
            f"plan on {plan.model}: 'sequential' (critic rounds) cannot be replayed from per-sample traces: "
            "they record no critic feedback"
        )
    if verifier not in ("none", "oracle"):
        raise ValueError(f"verifier must be 'none' or 'oracle', got {verifier!r}")
    if plan.strategy == "single":
        aggregator, k = None, 1
    else:
        aggregator, k = plan.aggregator or "majority", max(1, plan.k)
    if aggregator not in (None, "majority", "best_of_n", "first_finish", "short_m", "consensus"):
        raise ConfigError(f"plan on {plan.model}: unknown aggregator {aggregator!r}")
    if _fast and (plan.cutoff_tokens is None or plan.max_restarts == 0 or plan.restart == "stop"):
        ps = samples.get(plan.model)
        if ps is None:
            return Outcome(False, 0, 0, 0, 0)
        order = (orders or {}).get(plan.model)
        return _no_restarts(plan, ps, _order(ps, rng) if order is None else order, verifier, aggregator, k)
    run = _Run(plan, samples, _Draws(samples, rng, orders))
    run.start(k)
    answer, correct, until = _decide(plan, aggregator, k, verifier, run.book, lambda at: run.start(1, at) == 1)
    return run.outcome(answer, correct, until)
