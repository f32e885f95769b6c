"""Rebuild the shipped `profiles/default.json` from the study's traces in `../shared/data/`.

Run once when the traces or the fitting method change, and commit the result: the proxy reads
only the committed JSON at run time, never `../shared`.

    .venv/bin/python scripts/build_default_profile.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

from proxy.profiling.fit import fit_profiles, to_json_text

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", nargs="+", default=[str(SHARED_DATA / "reasoning_traces.csv")])
    parser.add_argument("--prices", default=str(SHARED_DATA / "trace_model_prices.csv"))
    parser.add_argument("--out", default=str(ROOT / "profiles" / "default.json"))
    args = parser.parse_args(argv)

    profile = fit_profiles(args.traces, args.prices)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(to_json_text(profile), encoding="utf-8")
    print(f"wrote {out}: {len(profile['rows'])} rows, {len(profile['models'])} priced models")


if __name__ == "__main__":
    main()
