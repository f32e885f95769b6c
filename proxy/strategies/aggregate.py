"""Combining finished samples into one: answer groups, votes, margins, verifier scores.

Pure functions over `Sample`s so that online execution and offline replay can share them.
Only samples that finished (`Sample.finished`) and stated an answer vote; answers are grouped
with `answers.equivalent`, so ``0.5`` and ``\\frac{1}{2}`` are one vote. Ties go to the group
that reached its count first (the finish time of its last member), which is the group a race
between the two would have crowned, and also the cheaper one to have waited for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from proxy.strategies.answers import group_answers, needs_cas, normalize
from proxy.strategies.sampler import Sample
from proxy.verifiers.base import Verdict

__all__ = ["AnswerGroup", "best_of_n", "best_so_far", "groups", "lead_margin", "majority", "voters"]


@dataclass(slots=True)
class AnswerGroup:
    """Samples that gave the same answer, in finish order."""

    samples: list[Sample]

    @property
    def votes(self) -> int:
        return len(self.samples)

    @property
    def answer(self) -> str | None:
        return self.samples[0].answer

    @property
    def reached_at(self) -> float:
        """When the group reached its current count: its last member's finish time."""
        return max(s.finished_at or 0.0 for s in self.samples)

    @property
    def first(self) -> Sample:
        return self.samples[0]


def voters(samples: Sequence[Sample]) -> list[Sample]:
    """Finished samples with an answer, in finish order."""
    return sorted((s for s in samples if s.finished and s.answer is not None), key=_finish_time)


def _finish_time(s: Sample) -> float:
    return s.finished_at if s.finished_at is not None else float("inf")


async def groups(samples: Sequence[Sample]) -> list[AnswerGroup]:
    """Answer groups of the voters, strongest first (most votes, then reached first).

    Grouping needs computer algebra only for answers that are not plain numbers or letters;
    then it runs in a thread so the event loop keeps serving other requests.
    """
    vs = voters(samples)
    answers = [s.answer or "" for s in vs]
    forms = list(dict.fromkeys(normalize(a) for a in answers))
    slow = any(needs_cas(a, b) for i, a in enumerate(forms) for b in forms[i + 1:])
    index_groups = await asyncio.to_thread(group_answers, answers) if slow else group_answers(answers)
    out = [AnswerGroup([vs[i] for i in sorted(g, key=lambda i: _finish_time(vs[i]))]) for g in index_groups]
    out.sort(key=lambda g: (-g.votes, g.reached_at))
    return out


def lead_margin(gs: Sequence[AnswerGroup]) -> int:
    """Votes by which the leading answer is ahead of the runner-up (0 without any votes)."""
    if not gs:
        return 0
    return gs[0].votes - (gs[1].votes if len(gs) > 1 else 0)


async def majority(samples: Sequence[Sample]) -> Sample | None:
    """The first-finished sample of the strongest answer group; without any answer to vote on
    (chat replies), the first finished sample."""
    gs = await groups(samples)
    if gs:
        return gs[0].first
    finished = sorted((s for s in samples if s.finished), key=_finish_time)
    return finished[0] if finished else None


async def best_of_n(samples: Sequence[Sample], verify: Callable[[Sample], Awaitable[Verdict | None]]) -> Sample | None:
    """The finished sample with the best verifier score (all verified concurrently); ties go to
    the larger answer group, then to the earlier finisher. Samples whose check itself failed
    (no verdict) rank below every scored one."""
    finished = sorted((s for s in samples if s.finished), key=_finish_time)
    if not finished:
        return None
    verdicts = await asyncio.gather(*(verify(s) for s in finished))
    gs = await groups(finished)
    votes = {id(s): g.votes for g in gs for s in g.samples}

    def rank(item: tuple[int, Sample]) -> tuple:
        i, s = item
        v = verdicts[i]
        return (v is not None, v.score if v else 0.0, v.passed if v else False, votes.get(id(s), 0), -i)

    return max(enumerate(finished), key=rank)[1]


def best_so_far(samples: Sequence[Sample]) -> Sample | None:
    """When nothing finished: the stop rule's pick. A sample with an answer, else one that was
    merely cut or truncated (not cancelled, not failed), earliest first."""
    alive = sorted((s for s in samples if s.error is None and not s.cancelled), key=_finish_time)
    with_answer = [s for s in alive if s.answer is not None]
    return (with_answer or alive or [None])[0]
