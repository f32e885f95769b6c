"""Rebuild the shipped `profiles/default.json` from the study data in `../shared/data/`.

Run once when the traces or the fitting method change, and commit the result: the proxy reads
only the committed JSON at run time, never `../shared`. It runs the same code path as
`pareto-proxy fit` (`proxy.profiling.fit.fit_profiles`), on the *full* trace file: the product
ships what all the data say; holdout splits are for evaluating policies, not for shipping.

    .venv/bin/python scripts/build_default_profile.py

is the same as

    pareto-proxy fit --traces ../shared/data/reasoning_traces.csv --out profiles/default.json \\
        --prices ../shared/data/trace_model_prices.csv

The Microsoft study's rows (`--eureka-dir ../shared/data`) are NOT in the shipped file yet
(`SHIP_STUDY_ROWS`): they have no token quantiles (most have no token numbers at all) and two of
their models have no price, and today's consumers assume both: embedded mode makes a simulated
model for every profiled model and refuses one without a `models` entry, and the planner,
estimator and simulator read `tokens.p50`/`p95` of every row. Flip `SHIP_STUDY_ROWS` once they
skip such rows and models.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from proxy.profiling.fit import fit_profiles, write_profile

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
#: include the study's rows (see the module docstring for why not yet)
SHIP_STUDY_ROWS = True


def build(traces: list[str], prices: str | None, eureka_dir: str | None, seed: int = 0) -> dict:
    """The shipped profile document (tests compare the committed file with this)."""
    return fit_profiles(traces, prices, eureka_dir=eureka_dir, seed=seed)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", nargs="+", default=[str(SHARED_DATA / "reasoning_traces.csv")])
    parser.add_argument("--prices", default=str(SHARED_DATA / "trace_model_prices.csv"))
    parser.add_argument("--eureka-dir", default=str(SHARED_DATA) if SHIP_STUDY_ROWS else None,
                        help="add the Microsoft study's rows from this directory")
    parser.add_argument("--out", default=str(ROOT / "profiles" / "default.json"))
    args = parser.parse_args(argv)

    profile = build(args.traces, args.prices, args.eureka_dir)
    write_profile(profile, args.out)
    print(f"wrote {args.out}: {len(profile['rows'])} rows, {len(profile['models'])} priced models")


if __name__ == "__main__":
    main()
