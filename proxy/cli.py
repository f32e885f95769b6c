"""`pareto-proxy`: the command line (DESIGN.md, "Command line").

Every command takes `--config FILE` so the server and the admin commands share one config.
Errors in the config or arguments print one clear message and exit with status 2, never a
traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

from proxy.errors import ConfigError

EPILOG = """examples:
  pareto-proxy serve                          # embedded defaults: simulated models, dev key printed
  pareto-proxy serve --config pareto.yaml --port 8000
  pareto-proxy sim --port 9100                # the simulated upstream as its own OpenAI-compatible server
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pareto-proxy",
        description="A cost-aware, OpenAI-compatible inference routing proxy.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--config", metavar="FILE", default=os.environ.get("PARETO_CONFIG"),
                        help="YAML config file (default: $PARETO_CONFIG, else the embedded defaults)")

    s = sub.add_parser("serve", help="run the proxy", description=(
        "Run the proxy. Without --config it runs the embedded defaults: one simulated model per profiled "
        "model, SQLite and traces under .pareto/, and a development key printed at start-up."))
    common(s)
    s.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    s.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    s.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")

    m = sub.add_parser("sim", help="run the simulated upstream as its own server", description=(
        "Serve the built-in simulator as an OpenAI-compatible server: the config's simulated models, or "
        "every profiled model (as its profile name and as sim-<name>). GET /sim/stats reports tokens sent "
        "and connections closed."))
    common(m)
    m.add_argument("--host", default="127.0.0.1")
    m.add_argument("--port", type=int, default=9100, help="port (default 9100)")
    return p


def _banner(state, host: str, port: int) -> None:
    url = f"http://{host}:{port}/v1"
    print(f"pareto-proxy on {url}  models: {', '.join(state.catalog.entries)}", flush=True)
    if state.dev_key:
        print(f"development key (embedded mode): {state.dev_key}\n"
              f"  from openai import OpenAI\n"
              f"  client = OpenAI(base_url=\"{url}\", api_key=\"{state.dev_key}\")", flush=True)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from proxy.app import create_app
    from proxy.config import load_settings
    from proxy.telemetry.logs import configure_logging, log_config

    if args.workers < 1:
        raise ConfigError("--workers must be at least 1")
    settings = load_settings(args.config)
    configure_logging(settings.log_level)
    common = dict(host=args.host, port=args.port, log_config=log_config(settings.log_level), access_log=False,
                  timeout_graceful_shutdown=settings.drain_timeout_s, loop="uvloop", http="httptools",
                  proxy_headers=False, server_header=False)
    if args.workers == 1:
        app = create_app(settings)  # built here so config errors surface before binding
        _banner(app.state.pareto, args.host, args.port)
        uvicorn.run(app, **common)
        return 0
    # several workers: each process builds its own app from the environment
    if args.config:
        os.environ["PARETO_CONFIG"] = os.path.abspath(args.config)
    if settings.embedded and not os.environ.get("PARETO_DEV_KEY"):
        import secrets

        os.environ["PARETO_DEV_KEY"] = f"sk-pareto-dev-{secrets.token_urlsafe(18)}"
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="pareto-prom-"))
    from proxy.app import build_state

    _banner(build_state(settings), args.host, args.port)
    uvicorn.run("proxy.app:app_from_env", factory=True, workers=args.workers, **common)
    return 0


def cmd_sim(args: argparse.Namespace) -> int:
    from proxy.config import load_settings
    from proxy.routing.profiles import Profiles
    from proxy.telemetry.logs import configure_logging
    from proxy.upstream.simulator.server import run_sim_server

    settings = load_settings(args.config)
    configure_logging(settings.log_level)
    run_sim_server(settings, Profiles.load(settings.profiles), args.host, args.port)
    return 0


COMMANDS = {"serve": cmd_serve, "sim": cmd_sim}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except ConfigError as e:
        print(f"pareto-proxy {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
