"""`python -m proxy.upstream.simulator --port P [--config FILE] [--host H]`: the simulator server.

The same server `pareto-proxy sim` runs; this entry point exists so tests and benchmarks can
start it without the CLI's other dependencies.
"""

from __future__ import annotations

import argparse
import logging
import sys

from proxy.config import load_settings
from proxy.errors import ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m proxy.upstream.simulator", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9100, help="TCP port (default 9100)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--config", default=None, help="config YAML; its simulated models are served")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from proxy.routing.profiles import Profiles
    from proxy.upstream.simulator.server import run_sim_server

    try:
        settings = load_settings(args.config)
        profiles = Profiles.load(settings.profiles)
        run_sim_server(settings, profiles, args.host, args.port)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
