"""Generated puzzles with a cheap exact check: planted 3-SAT, small TSP, meeting scheduling.

Each builder is a pure function of its `random.Random` and difficulty and returns (question,
truth, data): `data` is the instance (clauses, distance matrix, calendars) as tuples, which
`tasks.py` keeps on the `SimTask` so the task's own check and its verifier config need nothing
else. Sizes stay small enough that the truth is known exactly (TSP by brute force over at most
7! tours; SAT by construction: every clause is satisfied by the planted assignment).
"""

from __future__ import annotations

import itertools
import math
import random
import re

__all__ = ["calendar_build", "calendar_check", "calendar_verifier", "calendar_wrong", "sat_build", "sat_check",
           "sat_verifier", "sat_wrong", "tsp_build", "tsp_check", "tsp_verifier", "tsp_wrong"]

# -- planted 3-SAT (task: sat) -----------------------------------------------------------------

_SAT_SIZE = {"easy": (5, 15), "medium": (8, 32), "hard": (12, 50), None: (8, 32)}


def sat_build(rng: random.Random, difficulty: str | None) -> tuple[str, str, tuple]:
    n, m = _SAT_SIZE[difficulty]
    planted = {v: rng.random() < 0.5 for v in range(1, n + 1)}
    clauses: list[tuple[int, ...]] = []
    while len(clauses) < m:
        vs = rng.sample(range(1, n + 1), 3)
        clause = tuple(v if rng.random() < 0.5 else -v for v in vs)
        if any(planted[abs(lit)] == (lit > 0) for lit in clause):
            clauses.append(clause)
    dimacs = "\n".join(" ".join(map(str, c)) + " 0" for c in clauses)
    question = (
        f"Find an assignment of the variables 1..{n} that satisfies every clause of this 3-SAT formula "
        f"(DIMACS CNF: each line is a clause, a negative number is a negated variable).\n\n"
        f"p cnf {n} {m}\n{dimacs}\n\n"
        "End your reply with 'Assignment: ' followed by one signed literal per variable, e.g. Assignment: 1 -2 3."
    )
    truth = " ".join(str(v if planted[v] else -v) for v in range(1, n + 1))
    return question, truth, tuple(clauses)


def _literals(answer: str) -> dict[int, bool] | None:
    out: dict[int, bool] = {}
    for tok in re.findall(r"-?\d+", answer or ""):
        lit = int(tok)
        if lit == 0 or out.get(abs(lit), lit > 0) != (lit > 0):
            return None
        out[abs(lit)] = lit > 0
    return out


def sat_check(clauses: tuple, answer: str) -> bool:
    values = _literals(answer)
    if values is None:
        return False
    return all(any(values.get(abs(lit)) == (lit > 0) for lit in c) for c in clauses)


def sat_wrong(rng: random.Random, clauses: tuple, truth: str) -> str:
    """The planted assignment with variables flipped until some clause breaks."""
    values = _literals(truth) or {}
    order = list(values)
    rng.shuffle(order)
    for v in order:
        values[v] = not values[v]
        if not all(any(values.get(abs(lit)) == (lit > 0) for lit in c) for c in clauses):
            break
    else:  # every flip still satisfies (tiny formulas): falsify a clause outright
        for lit in clauses[0]:
            values[abs(lit)] = lit < 0
    return " ".join(str(v if values[v] else -v) for v in sorted(values))


def sat_verifier(clauses: tuple) -> dict:
    return {"name": "sat", "cnf": [list(c) for c in clauses]}


# -- TSP (task: tsp) ---------------------------------------------------------------------------

_TSP_SIZE = {"easy": 5, "medium": 6, "hard": 7, None: 6}


def _length(d: tuple, tour: tuple[int, ...]) -> int:
    return sum(d[a][b] for a, b in zip(tour, tour[1:] + tour[:1]))


def tsp_build(rng: random.Random, difficulty: str | None) -> tuple[str, str, tuple]:
    n = _TSP_SIZE[difficulty]
    pts = [(rng.randint(0, 100), rng.randint(0, 100)) for _ in range(n)]
    d = tuple(tuple(round(math.dist(p, q)) for q in pts) for p in pts)
    best = min(((0, *perm) for perm in itertools.permutations(range(1, n))), key=lambda t: (_length(d, t), t))
    rows = "\n".join(" ".join(f"{x:3d}" for x in row) for row in d)
    question = (
        f"A salesperson must visit each of {n} cities (numbered 0..{n - 1}) exactly once and return to the "
        f"start. The distance matrix (row i, column j is the distance from i to j) is:\n\n{rows}\n\n"
        "Find the shortest closed tour starting at city 0. End your reply with 'Tour: ' followed by the "
        "cities in visiting order, e.g. Tour: 0 2 1 3."
    )
    return question, " ".join(map(str, best)), (d, _length(d, best))


def _tour(answer: str, n: int) -> tuple[int, ...] | None:
    nodes = [int(t) for t in re.findall(r"\d+", answer or "")]
    if len(nodes) == n + 1 and nodes[0] == nodes[-1]:
        nodes = nodes[:-1]
    return tuple(nodes) if sorted(nodes) == list(range(n)) else None


def tsp_check(data: tuple, answer: str) -> bool:
    d, optimum = data
    tour = _tour(answer, len(d))
    return tour is not None and _length(d, tour) <= optimum


def tsp_wrong(rng: random.Random, data: tuple, truth: str) -> str:
    """A valid but longer tour (a worse permutation), else an invalid one."""
    d, optimum = data
    n = len(d)
    for _ in range(50):
        rest = list(range(1, n))
        rng.shuffle(rest)
        if _length(d, (0, *rest)) > optimum:
            return " ".join(map(str, (0, *rest)))
    return " ".join(map(str, (0, *range(1, n - 1))))  # misses the last city


def tsp_verifier(data: tuple) -> dict:
    d, optimum = data
    return {"name": "tsp", "distances": [list(r) for r in d], "max_length": optimum}


# -- meeting scheduling (task: planning) -------------------------------------------------------

_NAMES = ("Ana", "Bo", "Chen", "Dara", "Eli", "Fay")
_CAL_SIZE = {"easy": (2, 2), "medium": (3, 3), "hard": (4, 4), None: (3, 3)}
_DAY_START, _DAY_END, _STEP = 9 * 60, 17 * 60, 15


def _hhmm(m: int) -> str:
    return f"{m // 60:02d}:{m % 60:02d}"


def _feasible(start: int, duration: int, buffer: int, busy: tuple) -> bool:
    end = start + duration
    if start < _DAY_START or end > _DAY_END:
        return False
    return all(not (start - buffer < e and s < end + buffer) for blocks in busy for s, e in blocks)


def calendar_build(rng: random.Random, difficulty: str | None) -> tuple[str, str, tuple]:
    people, blocks = _CAL_SIZE[difficulty]
    while True:  # redraw until some slot works (almost always the first draw)
        duration = rng.choice((30, 45, 60))
        buffer = rng.choice((0, 10, 15))
        busy = []
        for _ in range(people):
            mine = []
            for _ in range(rng.randint(1, blocks)):
                s = _DAY_START + _STEP * rng.randrange((_DAY_END - _DAY_START) // _STEP - 2)
                mine.append((s, min(_DAY_END, s + rng.choice((30, 60, 90)))))
            busy.append(tuple(sorted(mine)))
        busy_t = tuple(busy)
        starts = [t for t in range(_DAY_START, _DAY_END, 5) if _feasible(t, duration, buffer, busy_t)]
        if starts:
            break
    names = _NAMES[:people]
    lines = "\n".join(f"- {name}: busy " + ", ".join(f"{_hhmm(s)}-{_hhmm(e)}" for s, e in b)
                      for name, b in zip(names, busy_t))
    gap = f"Leave at least {buffer} minutes between this meeting and anyone's other meetings. " if buffer else ""
    question = (
        f"Schedule a {duration}-minute meeting for {', '.join(names)} between {_hhmm(_DAY_START)} and "
        f"{_hhmm(_DAY_END)}. Their existing meetings today:\n{lines}\n\n{gap}"
        "End your reply with 'Slot: HH:MM-HH:MM'."
    )
    first = starts[0]
    return question, f"{_hhmm(first)}-{_hhmm(first + duration)}", (duration, buffer, tuple(names), busy_t)


def _slot(answer: str) -> tuple[int, int] | None:
    m = re.search(r"(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})", answer or "")
    if m is None:
        return None
    a, b, c, d = map(int, m.groups())
    return a * 60 + b, c * 60 + d


def calendar_check(data: tuple, answer: str) -> bool:
    duration, buffer, _, busy = data
    slot = _slot(answer)
    return slot is not None and slot[1] - slot[0] == duration and _feasible(slot[0], duration, buffer, busy)


def calendar_wrong(rng: random.Random, data: tuple, truth: str) -> str:
    """A slot of the right length that collides with someone's meeting."""
    duration, buffer, _, busy = data
    s, _ = rng.choice([b for blocks in busy for b in blocks])
    start = max(_DAY_START, min(s, _DAY_END - duration))
    if _feasible(start, duration, buffer, busy):  # cannot happen for a busy start, but be sure
        start = _DAY_END - duration + 5
    return f"{_hhmm(start)}-{_hhmm(start + duration)}"


def calendar_verifier(data: tuple) -> dict:
    duration, buffer, names, busy = data
    return {"name": "calendar", "duration_min": duration, "buffer_min": buffer,
            "day_start": _hhmm(_DAY_START), "day_end": _hhmm(_DAY_END),
            "participants": [{"name": n, "busy": [[_hhmm(s), _hhmm(e)] for s, e in b]} for n, b in zip(names, busy)]}
