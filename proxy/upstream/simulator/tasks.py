"""Generated tasks with known truth, so a simulated answer can be right or wrong for real.

A demo or benchmark sends prompts made here; the simulator recognizes them by their visible
tag (``[pareto-task arithmetic medium 12345]``), regenerates the task from the tag alone and so
knows the truth without any shared state. That lets the whole stack (verifiers, majority
voting, replay, accuracy metrics) be exercised end to end with answers whose correctness is
decided by the imitated model's profile rather than by a real model.

Everything is a pure function of (kind, difficulty, seed): generators use their own
`random.Random(seed)`, never a global RNG. Adding a kind is one `TaskKind` entry in `KINDS`.
Kinds: arithmetic (math), multiple_choice (science), sat, tsp, calendar (planning); the last
three come from `puzzles.py`, where any satisfying assignment, any optimal tour and any slot
that fits count as right, and each task carries the verifier config that checks it
(`SimTask.verifier`), so the demo and tests run verifiers end to end on generated work.

Example::

    task = generate("arithmetic", seed=7, difficulty="hard")
    reply = "Let me see. " + task.render(task.answer)
    assert recognize(task.prompt) == task and task.is_correct(reply)
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from proxy.upstream.simulator import puzzles

__all__ = ["KINDS", "SimTask", "TaskKind", "generate", "recognize"]

_TAG = re.compile(r"\[pareto-task ([a-z_]+) (easy|medium|hard|any) (\d+)\]")


@dataclass(frozen=True)
class TaskKind:
    """How one family of tasks is made, answered and checked.

    `build(rng, difficulty)` returns (question text, truth) or (question, truth, instance data);
    `render` turns an answer into the sentence a model ends its reply with; `pattern` extracts
    the last such answer from a reply; `wrong(rng, truth)` gives a plausible different answer
    (what a failing sample says). Kinds with several right answers add `check(data, answer)`
    and `wrong_for(rng, data, truth)`; `verifier(task)` is the verifier config that checks it.
    """

    name: str
    task: str
    build: Callable[[random.Random, str | None], tuple]
    render: Callable[[str], str]
    pattern: re.Pattern[str]
    wrong: Callable[[random.Random, str], str] | None = None
    check: Callable[[Any, str], bool] | None = None
    wrong_for: Callable[[random.Random, Any, str], str] | None = None
    verifier: Callable[[SimTask], dict] | None = None


@dataclass(frozen=True)
class SimTask:
    """One generated task: its prompt (tag included) and the truth."""

    kind: str
    task: str
    difficulty: str | None
    seed: int
    prompt: str
    answer: str
    #: the instance (clauses, distances, calendars) for kinds whose answers are checked, not matched
    data: Any = None

    @property
    def spec(self) -> TaskKind:
        return KINDS[self.kind]

    def render(self, answer: str) -> str:
        """The closing sentence that states `answer` the way the prompt asked (``... \\boxed{42}.``)."""
        return self.spec.render(answer)

    def extract(self, text: str) -> str | None:
        """The last answer stated in `text` in the asked format, or None."""
        found = self.spec.pattern.findall(text or "")
        return found[-1] if found else None

    def is_correct(self, text: str) -> bool:
        found = self.extract(text)
        if found is not None and self.spec.check is not None:
            return self.spec.check(self.data, found)
        return found == self.answer

    def wrong_answer(self, rng: random.Random) -> str:
        """A plausible answer that is not right."""
        if self.spec.wrong_for is not None:
            return self.spec.wrong_for(rng, self.data, self.answer)
        assert self.spec.wrong is not None
        return self.spec.wrong(rng, self.answer)

    @property
    def verifier(self) -> dict | None:
        """The `routing.verifier` config that checks this task (with its known solution)."""
        return self.spec.verifier(self) if self.spec.verifier is not None else None


def generate(kind: str, seed: int, difficulty: str | None = None) -> SimTask:
    """Make task `kind` number `seed` at `difficulty` (None: medium-sized, profiled task-level).

    Raises KeyError for an unknown kind and ValueError for a bad difficulty or seed.
    """
    spec = KINDS[kind]
    if difficulty not in (None, "easy", "medium", "hard"):
        raise ValueError(f"unknown difficulty {difficulty!r}")
    if seed < 0:
        raise ValueError("seed must be a non-negative integer")
    built = spec.build(random.Random(f"{kind}:{difficulty}:{seed}"), difficulty)
    question, truth = built[0], built[1]
    tag = f"[pareto-task {kind} {difficulty or 'any'} {seed}]"
    return SimTask(kind, spec.task, difficulty, seed, f"{question}\n\n{tag}", truth, built[2] if len(built) > 2 else None)


def recognize(text: str | None) -> SimTask | None:
    """The generated task whose tag appears in `text`, regenerated from the tag; else None."""
    if not text or "[pareto-task " not in text:
        return None
    m = _TAG.search(text)
    if m is None or m.group(1) not in KINDS:
        return None
    difficulty = None if m.group(2) == "any" else m.group(2)
    return generate(m.group(1), int(m.group(3)), difficulty)


# -- arithmetic (task: math) ---------------------------------------------------------------

#: operand count and largest operand per difficulty: bigger expressions are harder
_ARITH_SIZE = {"easy": (3, 20), "medium": (5, 50), "hard": (8, 99), None: (5, 50)}


def _expression(rng: random.Random, operands: int, top: int) -> tuple[str, int, bool]:
    """A random expression tree over `operands` integers: (text, value, is_leaf).

    Multiplication is only allowed when one side is a single number, so values stay readable.
    """
    if operands == 1:
        v = rng.randint(1, top)
        return str(v), v, True
    left_n = rng.randint(1, operands - 1)
    lt, lv, lleaf = _expression(rng, left_n, top)
    rt, rv, rleaf = _expression(rng, operands - left_n, top)
    op = rng.choice("+-*" if (lleaf or rleaf) else "+-")
    value = lv + rv if op == "+" else lv - rv if op == "-" else lv * rv
    lt = lt if lleaf else f"({lt})"
    rt = rt if rleaf else f"({rt})"
    return f"{lt} {op} {rt}", value, False


def _arith_build(rng: random.Random, difficulty: str | None) -> tuple[str, str]:
    operands, top = _ARITH_SIZE[difficulty]
    text, value, _ = _expression(rng, operands, top)
    return (
        f"Compute the value of the following expression. Give the final answer as \\boxed{{N}}.\n\n{text}",
        str(value),
    )


def _arith_wrong(rng: random.Random, truth: str) -> str:
    delta = rng.choice((1, 2, 3, 5, 7, 9, 10, 11, 20, 100)) * rng.choice((-1, 1))
    return str(int(truth) + delta)


# -- multiple choice (task: science) -------------------------------------------------------


def _kinematics(rng: random.Random) -> tuple[str, int, list[int]]:
    v, t = rng.randint(2, 40), rng.randint(2, 30)
    q = f"A cart moves in a straight line at a constant {v} m/s for {t} s. How far does it travel, in metres?"
    return q, v * t, [v + t, v * t * 2, v * (t + 1)]


def _kinetic_energy(rng: random.Random) -> tuple[str, int, list[int]]:
    m, v = 2 * rng.randint(1, 25), rng.randint(2, 30)
    q = f"A body of mass {m} kg moves at {v} m/s. What is its kinetic energy, in joules?"
    return q, m * v * v // 2, [m * v * v, m * v // 2, m * v * v // 4]


def _series_power(rng: random.Random) -> tuple[str, int, list[int]]:
    r1, r2, i = rng.randint(2, 60), rng.randint(2, 60), rng.randint(1, 9)
    volts = i * (r1 + r2)
    q = (
        f"Two resistors of {r1} ohm and {r2} ohm are connected in series across an ideal {volts} V "
        "source. What power does the circuit dissipate, in watts?"
    )
    parallel_r = r1 * r2 / (r1 + r2)
    return q, i * i * (r1 + r2), [volts * volts // r1, round(volts * volts / parallel_r), i * (r1 + r2) * 2]


_MC_TEMPLATES = {
    "easy": (_kinematics,),
    "medium": (_kinetic_energy, _kinematics),
    "hard": (_series_power, _kinetic_energy),
    None: (_kinematics, _kinetic_energy, _series_power),
}
_LETTERS = "ABCD"


def _mc_build(rng: random.Random, difficulty: str | None) -> tuple[str, str]:
    question, truth, mistakes = rng.choice(_MC_TEMPLATES[difficulty])(rng)
    options = [truth]
    for value in [*mistakes, *(truth + rng.randint(1, 9) * rng.choice((-1, 1)) for _ in range(20))]:
        if len(options) == 4:
            break
        if value > 0 and value not in options:
            options.append(value)
    while len(options) < 4:  # tiny truths: the fallbacks above may collide, so count upwards
        options.append(max(options) + len(options))
    rng.shuffle(options)
    letter = _LETTERS[options.index(truth)]
    lines = "\n".join(f"{_LETTERS[i]}) {v}" for i, v in enumerate(options))
    prompt = f"{question}\n\n{lines}\n\nEnd your reply with 'Answer: X', where X is the letter of the correct option."
    return prompt, letter


def _mc_wrong(rng: random.Random, truth: str) -> str:
    return rng.choice([c for c in _LETTERS if c != truth])


#: every task family the simulator knows; read-only so no caller can change it at run time
KINDS: Mapping[str, TaskKind] = MappingProxyType(
    {
        "arithmetic": TaskKind(
            name="arithmetic",
            task="math",
            build=_arith_build,
            render=lambda a: f"So the final answer is \\boxed{{{a}}}.",
            pattern=re.compile(r"\\boxed\{\s*(-?\d+)\s*\}"),
            wrong=_arith_wrong,
            verifier=lambda t: {"name": "math_answer", "reference": t.answer},
        ),
        "multiple_choice": TaskKind(
            name="multiple_choice",
            task="science",
            build=_mc_build,
            render=lambda a: f"So the best option is {a}. Answer: {a}",
            pattern=re.compile(r"Answer:\s*\(?([A-D])\b"),
            wrong=_mc_wrong,
            verifier=lambda t: {"name": "regex", "pattern": rf"Answer:\s*\(?{t.answer}\b(?![\s\S]*Answer:)"},
        ),
        "sat": TaskKind(
            name="sat",
            task="sat",
            build=puzzles.sat_build,
            render=lambda a: f"Assignment: {a}",
            pattern=re.compile(r"Assignment:\s*(-?\d+(?:[ \t,]+-?\d+)*)"),
            check=puzzles.sat_check,
            wrong_for=puzzles.sat_wrong,
            verifier=lambda t: puzzles.sat_verifier(t.data),
        ),
        "tsp": TaskKind(
            name="tsp",
            task="tsp",
            build=puzzles.tsp_build,
            render=lambda a: f"Tour: {a}",
            pattern=re.compile(r"Tour:\s*(\d+(?:[ \t,>-]+\d+)*)"),
            check=puzzles.tsp_check,
            wrong_for=puzzles.tsp_wrong,
            verifier=lambda t: puzzles.tsp_verifier(t.data),
        ),
        "calendar": TaskKind(
            name="calendar",
            task="planning",
            build=puzzles.calendar_build,
            render=lambda a: f"Slot: {a}",
            pattern=re.compile(r"Slot:\s*(\d{1,2}:\d{2}\s*-\s*\d{1,2}:\d{2})"),
            check=puzzles.calendar_check,
            wrong_for=puzzles.calendar_wrong,
            verifier=lambda t: puzzles.calendar_verifier(t.data),
        ),
    }
)
