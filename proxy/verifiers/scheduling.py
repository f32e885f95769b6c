"""`calendar`: a proposed meeting slot against participants' availability, busy times, the
meeting's duration and the buffer wanted around other meetings.

    registry.build({"name": "calendar", "duration_min": 30, "buffer_min": 10,
                    "day_start": "09:00", "day_end": "17:00",
                    "participants": [{"name": "Ana", "busy": [["09:00", "10:30"]]},
                                     {"name": "Bo", "available": [["10:00", "12:00"]]}]})

Times are ``HH:MM`` strings or minutes since midnight, on one day. The slot passes when it
lasts exactly `duration_min`, lies inside the working day and inside one of each participant's
`available` windows (when they list any), and keeps `buffer_min` away from each busy block.
The reply states the slot as ``10:40-11:10`` (or just the start time), in the final region.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from proxy.verifiers.base import Verdict, Verifier
from proxy.verifiers.basic import _Args
from proxy.verifiers.parsing import final_region

__all__ = ["CalendarArgs", "CalendarVerifier", "Participant", "fmt_time", "parse_slot"]

_DAY = 24 * 60
_TIME = re.compile(r"\b(\d{1,2})(?::(\d{2}))\s*([ap]\.?m\.?)?|\b(\d{1,2})\s*([ap]\.?m\.?)", re.I)


def _minutes(v: Any) -> int:
    if isinstance(v, bool):
        raise ValueError("a time is 'HH:MM' or minutes since midnight")
    if isinstance(v, int):
        m = v
    elif isinstance(v, str) and re.fullmatch(r"\d{1,2}:\d{2}", v.strip()):
        h, mm = v.strip().split(":")
        if int(mm) >= 60:
            raise ValueError(f"not a time: {v!r}")
        m = int(h) * 60 + int(mm)
    else:
        raise ValueError(f"not a time: {v!r} (use 'HH:MM' or minutes since midnight)")
    if not 0 <= m <= _DAY:
        raise ValueError(f"time out of the day: {v!r}")
    return m


def fmt_time(m: int) -> str:
    return f"{m // 60:02d}:{m % 60:02d}"


def _intervals(v: Any) -> list[tuple[int, int]]:
    if not isinstance(v, list):
        raise ValueError("must be a list of [start, end] pairs")
    out = []
    for pair in v:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise ValueError("each interval is a [start, end] pair")
        a, b = _minutes(pair[0]), _minutes(pair[1])
        if b <= a:
            raise ValueError(f"interval {pair!r} ends before it starts")
        out.append((a, b))
    return out


class Participant(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=200)
    busy: list[tuple[int, int]] = Field(default_factory=list)
    available: list[tuple[int, int]] | None = None

    @field_validator("busy", "available", mode="before")
    @classmethod
    def _times(cls, v: Any) -> Any:
        return None if v is None else _intervals(v)


class CalendarArgs(_Args):
    participants: list[Participant] = Field(min_length=1, max_length=500)
    duration_min: int = Field(gt=0, le=_DAY)
    buffer_min: int = Field(default=0, ge=0, le=_DAY)
    day_start: int = 0
    day_end: int = _DAY

    @field_validator("participants", mode="before")
    @classmethod
    def _lax(cls, v: Any) -> Any:
        # participants are nested objects: validate them laxly (tuples from lists), strictly above
        if isinstance(v, list):
            return [Participant.model_validate(p) if isinstance(p, dict) else p for p in v]
        return v

    @field_validator("day_start", "day_end", mode="before")
    @classmethod
    def _day(cls, v: Any) -> int:
        return _minutes(v)

    @model_validator(mode="after")
    def _fits(self) -> CalendarArgs:
        if self.day_end - self.day_start < self.duration_min:
            raise ValueError("the working day is shorter than the meeting")
        return self


def parse_slot(text: str, duration: int) -> tuple[int, int] | str:
    """(start, end) in minutes from the final region, or why none could be read."""
    region = final_region(text, ("slot", "meeting", "time", "answer", "schedule"))
    if region is None:
        return "No meeting time was given."
    times = []
    for m in _TIME.finditer(region):
        h = int(m.group(1) or m.group(4))
        mm = int(m.group(2) or 0)
        ampm = (m.group(3) or m.group(5) or "").lower().replace(".", "")
        if ampm == "pm" and h < 12:
            h += 12
        elif ampm == "am" and h == 12:
            h = 0
        if h > 24 or mm >= 60:
            continue
        times.append(h * 60 + mm)
    if not times:
        return "No meeting time was found in the final answer; state it as HH:MM-HH:MM."
    start = times[0]
    end = times[1] if len(times) > 1 else start + duration
    return start, end


class CalendarVerifier(Verifier):
    """Passes when the slot satisfies every constraint; the feedback names each conflict."""

    name = "calendar"

    def __init__(self, args: CalendarArgs) -> None:
        self.a = args

    async def verify(self, candidate: str, context: Mapping[str, Any]) -> Verdict:
        a = self.a
        slot = parse_slot(candidate, a.duration_min)
        if isinstance(slot, str):
            return Verdict(False, 0.0, slot)
        start, end = slot
        when = f"{fmt_time(start)}-{fmt_time(end)}"
        problems = []
        if end - start != a.duration_min:
            problems.append(f"the slot {when} lasts {end - start} min, the meeting needs {a.duration_min} min")
        if start < a.day_start or end > a.day_end:
            problems.append(f"the slot {when} is outside working hours {fmt_time(a.day_start)}-{fmt_time(a.day_end)}")
        for p in a.participants:
            if p.available is not None and not any(s <= start and end <= e for s, e in p.available):
                problems.append(f"{p.name} is not available for all of {when}")
            for s, e in p.busy:
                if start - a.buffer_min < e and s < end + a.buffer_min:
                    gap = f" (with a {a.buffer_min}-min buffer)" if a.buffer_min else ""
                    problems.append(f"{when} conflicts with {p.name}'s meeting {fmt_time(s)}-{fmt_time(e)}{gap}")
        if not problems:
            return Verdict(True, 1.0, "")
        shown = "; ".join(problems[:6]) + ("; ..." if len(problems) > 6 else "")
        return Verdict(False, 0.0, f"The proposed time does not work: {shown}.")
