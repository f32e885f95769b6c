"""The failure curve P(correct | the sample runs longer than L), its threshold and a bootstrap CI.

Method, and why:

* **Model**: p(t) = P(correct | completion length = t) is fitted with scikit-learn's
  `IsotonicRegression(increasing=False)` on the row's samples, and the curve is
  P(correct | T > L) = mean of the fitted p(t_i) over the samples with t_i > L.
  Isotonic rather than logistic regression on log-length, because the data show a *knee*, not
  a sigmoid: DeepSeek-R1 on AIME is right 0.99 of the time below 4k tokens, 0.90 at 4k-11k,
  then collapses to 0.07 beyond 20k, and rows that hit a generation cap pile up at one length.
  A two-parameter logistic is symmetric with asymptotes 0 and 1; it would be bent by the mass
  of short easy samples far from the knee and place the crossing where the sigmoid, not the
  data, puts it. Isotonic regression assumes only what a cutoff already presumes (a longer
  sample is not *more* likely right), so the knee lands where the data put it. It also keeps
  the data's own numbers: PAVA pools adjacent samples into blocks with their empirical mean, so
  wherever the data are already monotone the curve *is* the empirical P(correct | longer).
  And a non-increasing p(t) makes P(correct | T > L) non-increasing in L, so the threshold is
  a clean crossing: once below the level the curve stays below, and every longer cut qualifies.
* **Grid**: the row's own length quantiles at steps of `GRID_QUANTILE_STEP` (rounded to whole
  tokens, duplicates dropped): points sit where the samples are, as finely as they allow.
* **Support (the minimum sample size)**: a point is kept only while at least
  `MIN_LONGER_SAMPLES` samples from at least `MIN_LONGER_PROBLEMS` problems are longer than
  its L (`proxy.routing.cutoffs`); support only shrinks with L, so the curve is cut at the
  first point without it. No point, no threshold: thin tails never produce a claim.
* **Threshold**: `proxy.routing.cutoffs.threshold_from_curve` at the level (0.1 by default):
  the same function the planner uses for a policy's `failure_level`.
* **Confidence interval**: a cluster bootstrap over *problems* (samples of one problem share
  its difficulty, so resampling samples would pretend to have 8x the evidence):
  `BOOTSTRAP_RESAMPLES` resamples of the row's problems with replacement, each refitted on the
  same grid with the same support rule. The interval is the 2.5th-97.5th percentile of the
  thresholds of the resamples that find one (ends taken outward, so they are grid lengths);
  how many found one is kept with it, because a resample whose curve never drops below the
  level within its support is evidence that the threshold might not exist at all. Seeded from
  the row's identity, so a row's interval does not depend on which other rows were fitted.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from proxy.routing.cutoffs import (
    DEFAULT_FAILURE_LEVEL,
    MIN_LONGER_PROBLEMS,
    MIN_LONGER_SAMPLES,
    threshold_from_curve,
)

__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "CI_LEVEL",
    "GRID_QUANTILE_STEP",
    "CurveFit",
    "fit_failure_curve",
    "method_description",
]

GRID_QUANTILE_STEP = 0.01
BOOTSTRAP_RESAMPLES = 200
CI_LEVEL = 0.95
PROB_DECIMALS = 4


@dataclass(frozen=True)
class CurveFit:
    """A row's failure curve and what it supports; None/empty where the data support nothing."""

    curve: list[list[float]]
    threshold: int | None
    ci: tuple[int, int] | None
    #: {"resamples": B, "found": how many resamples found a threshold}; None without a threshold
    bootstrap: dict[str, int] | None


def fit_failure_curve(
    tokens: np.ndarray,
    correct: np.ndarray,
    problems: np.ndarray,
    *,
    level: float = DEFAULT_FAILURE_LEVEL,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
    key: str = "",
) -> CurveFit:
    """Fit the curve of one row (see the module docstring).

    `problems` names each sample's problem (any hashable strings); `key` identifies the row and
    seeds its bootstrap together with `seed`. The bootstrap runs only when there is a threshold
    to put an interval on.
    """
    x = tokens.astype(np.float64)
    y = correct.astype(np.float64)
    if x.size == 0:
        return CurveFit([], None, None, None)
    grid = _grid(x)
    _, pid = np.unique(problems, return_inverse=True)
    pid = pid.reshape(-1)
    curve = _curve(x, y, pid, grid)
    threshold = threshold_from_curve(curve, level)
    if threshold is None or resamples <= 0:
        return CurveFit(curve, threshold, None, None)

    rng = np.random.default_rng([int(seed), zlib.crc32(key.encode("utf-8"))])
    order = np.argsort(pid, kind="stable")
    bounds = np.searchsorted(pid[order], np.arange(pid.max() + 2))
    members = [order[bounds[i] : bounds[i + 1]] for i in range(pid.max() + 1)]
    found: list[int] = []
    for _ in range(resamples):
        pick = rng.integers(0, len(members), len(members))
        index = np.concatenate([members[i] for i in pick])
        # a problem drawn twice counts as two problems, as the bootstrap world has it
        draw = np.repeat(np.arange(len(pick)), [members[i].size for i in pick])
        t = threshold_from_curve(_curve(x[index], y[index], draw, grid), level)
        if t is not None:
            found.append(t)
    ci: tuple[int, int] | None = None
    if found:
        tail = (1.0 - CI_LEVEL) / 2
        values = np.array(found, dtype=np.float64)
        lo = int(np.quantile(values, tail, method="lower"))
        hi = int(np.quantile(values, 1.0 - tail, method="higher"))
        ci = (lo, hi)
    return CurveFit(curve, threshold, ci, {"resamples": resamples, "found": len(found)})


def method_description(level: float = DEFAULT_FAILURE_LEVEL, seed: int = 0) -> dict[str, Any]:
    """How curves, thresholds and intervals were made, for the profile's provenance."""
    return {
        "model": "p(t) = P(correct | length t) by sklearn IsotonicRegression(increasing=False); "
        "curve = mean of p over samples longer than L",
        "grid": f"row length quantiles at steps of {GRID_QUANTILE_STEP}",
        "min_longer_samples": MIN_LONGER_SAMPLES,
        "min_longer_problems": MIN_LONGER_PROBLEMS,
        "failure_level": level,
        "threshold": "smallest L on the curve with P < failure_level; none if the first point is already below",
        "threshold_ci": {
            "bootstrap": "resampling problems with replacement",
            "resamples": BOOTSTRAP_RESAMPLES,
            "level": CI_LEVEL,
            "over": "resamples that find a threshold (threshold_bootstrap.found of them)",
            "seed": seed,
        },
    }


def _grid(x: np.ndarray) -> np.ndarray:
    qs = np.arange(0.0, 1.0, GRID_QUANTILE_STEP)
    return np.unique(np.round(np.quantile(x, qs))).astype(np.float64)


def _curve(x: np.ndarray, y: np.ndarray, pid: np.ndarray, grid: np.ndarray) -> list[list[float]]:
    """[[L, P(correct | longer than L)], ...] on `grid` while the support rule holds."""
    from sklearn.isotonic import IsotonicRegression  # heavy: only when fitting

    fitted = IsotonicRegression(increasing=False, out_of_bounds="clip").fit(x, y).predict(x)
    order = np.argsort(x, kind="stable")
    xs, fs = x[order], fitted[order]
    suffix = np.concatenate([np.cumsum(fs[::-1])[::-1], [0.0]])
    at = np.searchsorted(xs, grid, side="right")
    longer = x.size - at
    # a problem has a sample longer than L iff its longest sample is
    longest = np.full(int(pid.max()) + 1, -np.inf)
    np.maximum.at(longest, pid, x)
    longest.sort()
    problems_longer = longest.size - np.searchsorted(longest, grid, side="right")
    supported = (longer >= MIN_LONGER_SAMPLES) & (problems_longer >= MIN_LONGER_PROBLEMS)
    stop = int(np.argmin(supported)) if not supported.all() else supported.size
    curve: list[list[float]] = []
    for j in range(stop):
        p = float(suffix[at[j]] / longer[j])
        curve.append([int(grid[j]), round(min(max(p, 0.0), 1.0), PROB_DECIMALS)])
    return curve
