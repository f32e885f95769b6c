"""Checkers for answers with a cheap exact test: `sat` (an assignment against a CNF) and `tsp`
(a tour over a distance matrix, scored by its length).

Checking these is far cheaper than solving them, which is what makes them good verifiers: a
planner can sample many candidate answers and keep the best one that checks out.

    registry.build({"name": "sat", "cnf": [[1, -2], [2, 3]]})          # or DIMACS text
    registry.build({"name": "tsp", "distances": [[0, 2, 9], [2, 0, 6], [9, 6, 0]]})

Answers are read from the final region of the reply (`parsing.final_region`): ``\\boxed{1 -2 3}``,
``Assignment: x1=true, x2=false``, ``Tour: 0 2 1 0``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from pydantic import Field, field_validator

from proxy.verifiers.base import Verdict, Verifier
from proxy.verifiers.basic import _Args
from proxy.verifiers.parsing import final_region

__all__ = ["SatArgs", "SatVerifier", "TspArgs", "TspVerifier", "parse_assignment", "parse_dimacs",
           "parse_tour", "tour_length"]

_MAX_CLAUSES = 100_000
_MAX_VARS = 100_000
_MAX_NODES = 1000

# -- SAT ---------------------------------------------------------------------------------------


def parse_dimacs(text: str) -> list[list[int]]:
    """Clauses from DIMACS CNF text (comments, the `p cnf` header, clauses ended by 0)."""
    clauses: list[list[int]] = []
    current: list[int] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "cp%":
            continue
        for tok in line.split():
            try:
                lit = int(tok)
            except ValueError:
                raise ValueError(f"not a DIMACS literal: {tok!r}") from None
            if lit == 0:
                if current:
                    clauses.append(current)
                current = []
            else:
                current.append(lit)
    if current:
        clauses.append(current)
    return clauses


def _check_clauses(clauses: list[list[int]]) -> list[list[int]]:
    if not clauses:
        raise ValueError("must contain at least one clause")
    if len(clauses) > _MAX_CLAUSES:
        raise ValueError(f"at most {_MAX_CLAUSES} clauses")
    for i, c in enumerate(clauses):
        if not c:
            raise ValueError(f"clause {i} is empty")
        if any(isinstance(lit, bool) or lit == 0 or abs(lit) > _MAX_VARS for lit in c):
            raise ValueError(f"clause {i}: literals are non-zero integers of magnitude at most {_MAX_VARS}")
    return clauses


class SatArgs(_Args):
    cnf: str | list[list[int]]

    @field_validator("cnf")
    @classmethod
    def _parse(cls, v: str | list[list[int]]) -> list[list[int]]:
        clauses = parse_dimacs(v) if isinstance(v, str) else [list(c) for c in v]
        return _check_clauses(clauses)


_NAMED = re.compile(r"\b[xv]?_?(\d+)\s*(?:=|:|->|is)\s*(true|false|t|f|1|0)\b", re.I)
_INT = re.compile(r"(?<![\w.])-?\d+(?![\w.])")


def parse_assignment(text: str, variables: int) -> dict[int, bool] | str:
    """{var: value} from the answer region, or why it cannot be read.

    Shapes: named values (``x1=true, x2=0``), signed literals (``1 -2 3`` or ``[1, -2, 3]``,
    DIMACS-style), or one 0/1 per variable in order (``1 0 1``, ``101``).
    """
    region = final_region(text, ("assignment", "answer", "solution"))
    if region is None:
        return "No assignment was given."
    named = _NAMED.findall(region)
    out: dict[int, bool] = {}
    if named:
        for var, val in named:
            value = val.lower() in ("true", "t", "1")
            if out.get(int(var), value) != value:
                return f"Variable {var} is given two values."
            out[int(var)] = value
        return out
    compact = re.sub(r"[\s,;\[\]()]", "", region)
    if compact and set(compact) <= {"0", "1"} and len(compact) == variables:
        return {i + 1: c == "1" for i, c in enumerate(compact)}
    literals = [int(t) for t in _INT.findall(region)]
    literals = [x for x in literals if x != 0]  # DIMACS terminator
    if not literals:
        return "No assignment was found in the final answer; give it as signed literals, e.g. 1 -2 3."
    for lit in literals:
        if out.get(abs(lit), lit > 0) != (lit > 0):
            return f"Variable {abs(lit)} is given two values."
        out[abs(lit)] = lit > 0
    return out


class SatVerifier(Verifier):
    """Passes when the assignment satisfies every clause (every variable of the formula must be
    assigned). Score: the share of clauses satisfied, so best-of-n prefers near misses."""

    name = "sat"

    def __init__(self, args: SatArgs) -> None:
        self.clauses: list[list[int]] = args.cnf  # type: ignore[assignment]  # parsed by the validator
        self.variables = max(abs(lit) for c in self.clauses for lit in c)

    async def verify(self, candidate: str, context: Mapping[str, Any]) -> Verdict:
        if re.search(r"\bunsat(isfiable)?\b", final_region(candidate, ()) or "", re.I):
            return Verdict(False, 0.0, "The answer claims the formula is unsatisfiable; give a satisfying assignment.")
        assignment = parse_assignment(candidate, self.variables)
        if isinstance(assignment, str):
            return Verdict(False, 0.0, assignment)
        used = {abs(lit) for c in self.clauses for lit in c}
        missing = sorted(used - set(assignment))
        if missing:
            shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
            return Verdict(False, 0.0, f"Variables {shown} are not assigned.")
        unsat = [i for i, c in enumerate(self.clauses) if not any(assignment[abs(lit)] == (lit > 0) for lit in c)]
        score = 1.0 - len(unsat) / len(self.clauses)
        if not unsat:
            return Verdict(True, 1.0, "")
        shown = "; ".join(f"clause {i + 1} ({' '.join(map(str, self.clauses[i]))})" for i in unsat[:5])
        return Verdict(False, score, f"{len(unsat)} of {len(self.clauses)} clauses are not satisfied: {shown}.")


# -- TSP ---------------------------------------------------------------------------------------


class TspArgs(_Args):
    distances: list[list[float | int]]
    #: optional: the tour must be at most this long to pass (e.g. the known optimum)
    max_length: float | int | None = Field(default=None, ge=0)

    @field_validator("distances")
    @classmethod
    def _square(cls, v: list[list[float]]) -> list[list[float]]:
        n = len(v)
        if n < 2 or n > _MAX_NODES:
            raise ValueError(f"must be a square matrix of 2 to {_MAX_NODES} nodes")
        for i, row in enumerate(v):
            if len(row) != n:
                raise ValueError(f"row {i} has {len(row)} entries; the matrix must be {n} x {n}")
            if any(not math.isfinite(x) or x < 0 for x in row):
                raise ValueError(f"row {i}: distances are finite and non-negative")
        return v


def tour_length(distances: list[list[float]], tour: list[int]) -> float:
    """The closed tour's length (back to the start)."""
    return sum(distances[a][b] for a, b in zip(tour, tour[1:] + tour[:1]))


def parse_tour(text: str, n: int) -> list[int] | str:
    """The tour as 0-based node indices, or why it is not a valid tour of all `n` nodes.

    Accepts a closing return to the start (``0 2 1 0``) and 1-based tours (``1 3 2``) when the
    nodes are exactly 1..n.
    """
    region = final_region(text, ("tour", "route", "path", "answer"))
    if region is None:
        return "No tour was given."
    nodes = [int(t) for t in re.findall(r"-?\d+", region)]
    if len(nodes) == n + 1 and nodes[0] == nodes[-1]:
        nodes = nodes[:-1]
    if not nodes:
        return "No tour was found in the final answer; list the node indices in visiting order."
    if sorted(nodes) == list(range(1, n + 1)):
        nodes = [x - 1 for x in nodes]
    if sorted(nodes) != list(range(n)):
        seen, dup = set(), []
        for x in nodes:
            if x in seen:
                dup.append(x)
            seen.add(x)
        missing = sorted(set(range(n)) - seen)
        bad = sorted(x for x in seen if not 0 <= x < n)
        parts = [f"visits {len(nodes)} nodes, needs each of the {n} exactly once"]
        if dup:
            parts.append(f"repeats {sorted(set(dup))[:10]}")
        if missing:
            parts.append(f"misses {missing[:10]}")
        if bad:
            parts.append(f"has unknown nodes {bad[:10]}")
        return "The tour is not valid: " + ", ".join(parts) + "."
    return nodes


class TspVerifier(Verifier):
    """Passes when the reply is a tour visiting every node once (and, with `max_length`, no
    longer than it). Score: a lower bound over the length (each node's cheapest exit summed),
    or max_length / length when given; shorter tours always score higher."""

    name = "tsp"

    def __init__(self, args: TspArgs) -> None:
        self.d = [[float(x) for x in row] for row in args.distances]
        self.max_length = args.max_length
        n = len(self.d)
        self.bound = sum(min(self.d[i][j] for j in range(n) if j != i) for i in range(n))

    async def verify(self, candidate: str, context: Mapping[str, Any]) -> Verdict:
        tour = parse_tour(candidate, len(self.d))
        if isinstance(tour, str):
            return Verdict(False, 0.0, tour)
        length = tour_length(self.d, tour)
        ref = self.max_length if self.max_length is not None else self.bound
        score = 1.0 if length <= 0 else min(1.0, ref / length)
        text = f"The tour has length {length:g}."
        if self.max_length is not None and length > self.max_length + 1e-9:
            return Verdict(False, score, f"{text} It must be at most {self.max_length:g}; find a shorter tour.")
        return Verdict(True, score, text)
