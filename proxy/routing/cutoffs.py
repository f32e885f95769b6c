"""Length cutoffs read from a profile row's failure curve.

A row's `failure_curve` holds points `(L, P(correct | the sample runs longer than L))` with
increasing `L`, fitted offline (`proxy.profiling.curves`). A policy with `failure_level: a`
cuts a generation at the smallest `L` where that probability is below `a`: past that length
the sample is almost never right, so the tokens still to come are mostly waste.

Why the rule lives here and not in the fitting code: the fitted `failure_threshold_tokens` is
this same rule applied at the default level (`DEFAULT_FAILURE_LEVEL`), and the planner reads
other levels from the curve at run time. One function for both means a policy at level 0.1
always gets exactly the shipped threshold, never a second opinion computed differently.

What the curve already guarantees (the fitting code keeps only such points): every point rests
on at least `MIN_LONGER_SAMPLES` samples longer than `L`, drawn from at least
`MIN_LONGER_PROBLEMS` distinct problems. So a cut read here never rests on fewer than 30
samples; and since fewer than a share `a` of them are (smoothed) correct, that is at least
~27 wrong samples at a = 0.1. That is the minimum sample size below which no threshold is
claimed. Beyond the last point the data are too thin, so no cut is read there.

Example::

    row = profiles.row("R1", "math")
    cut = cutoff_for_level(row, policy.failure_level) if row is not None else None
"""

from __future__ import annotations

from collections.abc import Sequence

from proxy.routing.profiles import ProfileRow

__all__ = [
    "DEFAULT_FAILURE_LEVEL",
    "MIN_LONGER_PROBLEMS",
    "MIN_LONGER_SAMPLES",
    "cutoff_for_level",
    "threshold_from_curve",
]

#: the level of the shipped `failure_threshold_tokens` (DESIGN.md, "Profiles")
DEFAULT_FAILURE_LEVEL = 0.1
#: a curve point needs this many samples longer than its L ...
MIN_LONGER_SAMPLES = 30
#: ... coming from at least this many distinct problems (samples of one problem are correlated)
MIN_LONGER_PROBLEMS = 5


def threshold_from_curve(curve: Sequence[Sequence[float]], level: float) -> int | None:
    """The smallest L on `curve` with P(correct | longer than L) < `level`, or None.

    None as well when the curve's first point is already below `level`: a row that is almost
    never right at any length has no length past which failure becomes likely, and a cut
    learned from it would cut every sample (the model is simply bad at the task; that is the
    planner's accuracy problem, not a cutoff's).
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"failure level must be in (0, 1), got {level!r}")
    if not curve or curve[0][1] < level:
        return None
    for length, p in curve:
        if p < level:
            return int(length)
    return None


def cutoff_for_level(row: ProfileRow, level: float) -> int | None:
    """The cutoff (tokens) a policy with `failure_level = level` applies on `row`, or None.

    Pure and cheap (a scan of at most ~100 points); None when the row has no curve (published
    tables, strategy rows) or the curve never drops below `level` where it has support.
    """
    return threshold_from_curve(row.failure_curve, level)
