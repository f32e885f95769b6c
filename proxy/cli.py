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
  pareto-proxy keys create --team team-a --budget-usd 50 --period month
  pareto-proxy budgets set --team team-a --usd 500 --period month --soft-usd 400
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
    d = sub.add_parser("demo", help="run a workload of generated tasks through a live proxy", description=(
        "Send generated tasks with known answers (arithmetic, multiple choice) through a proxy with the openai "
        "client, once per policy alias and once per fixed model; print accuracy, cost per request, p95 cost and "
        "wasted-token share, and write a PNG. Without --url it starts its own proxy on the embedded defaults."))
    common(d)
    d.add_argument("--url", help="a running proxy's base URL, e.g. http://127.0.0.1:8000/v1 (default: start one)")
    d.add_argument("--key", default=os.environ.get("PARETO_KEY"), help="virtual key for --url (default $PARETO_KEY)")
    d.add_argument("--tasks", type=int, default=60, help="tasks per target (default 60)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--concurrency", type=int, default=8)
    d.add_argument("--policies", default="accurate,balanced,cheap,predictable",
                   help="comma-separated policies to run as auto/<policy>")
    d.add_argument("--models", help="comma-separated fixed models (default: every configured model)")
    d.add_argument("--png", default="demo.png", help="where to write the plot (default demo.png)")
    d.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    _fit_parser(sub, common)
    _replay_parser(sub, common)
    from proxy.cli_admin import add_parsers

    add_parsers(sub, common)
    return p


def cmd_demo(args: argparse.Namespace) -> int:
    from proxy import demo

    if args.url and not args.key:
        raise ConfigError("--url needs --key (or $PARETO_KEY): the virtual key to call the proxy with")
    if args.tasks < 1:
        raise ConfigError("--tasks must be at least 1")
    return demo.main(args.url, args.key, args.tasks, args.seed, args.concurrency,
                     [p for p in args.policies.split(",") if p],
                     [m for m in args.models.split(",") if m] if args.models else None, args.png, args.json)


def _banner(models: list[str], dev_key: str | None, host: str, port: int) -> None:
    url = f"http://{host}:{port}/v1"
    print(f"pareto-proxy on {url}  models: {', '.join(models)}", flush=True)
    if dev_key:
        print(f"development key (embedded mode): {dev_key}\n"
              f"  from openai import OpenAI\n"
              f"  client = OpenAI(base_url=\"{url}\", api_key=\"{dev_key}\")", flush=True)


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
        state = app.state.pareto
        _banner(list(state.catalog.entries), state.dev_key, args.host, args.port)
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

    state = build_state(settings)  # built once here so config errors surface before any worker starts
    _banner(list(state.catalog.entries), state.dev_key, args.host, args.port)
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


def _fit_parser(sub, common) -> None:  # type: ignore[no-untyped-def]
    f = sub.add_parser("fit", help="fit a profile table from trace files", description=(
        "Fit profiles (accuracy, token statistics, failure curves with thresholds and bootstrap intervals, "
        "replayed strategy rows) from per-sample trace CSVs (columns model, dataset, problem_id, sample_id, "
        "completion_tokens, finish_reason, pred, answer, correct) or the proxy's own JSONL traces. "
        "--holdout-fraction holds back that share of each dataset's problems (all their samples), writes "
        "them to --holdout-out in the same CSV format and fits on the rest."))
    common(f)
    f.add_argument("--traces", nargs="+", required=True, metavar="FILE", help="trace files (.csv or .jsonl)")
    f.add_argument("--out", required=True, metavar="PROFILE.json", help="where to write the profile")
    f.add_argument("--holdout-fraction", type=float, metavar="F", help="share of problems to hold out, in (0, 1)")
    f.add_argument("--holdout-out", metavar="FILE", help="CSV for the held-out samples (with --holdout-fraction)")
    f.add_argument("--seed", type=int, default=0, help="seeds the holdout split and the bootstrap (default 0)")
    f.add_argument("--prices", metavar="FILE",
                   help="price CSV (trace_model, input_usd_per_mtok, output_usd_per_mtok, reasoning)")
    f.add_argument("--eureka-dir", metavar="DIR",
                   help="directory with eureka_accuracy.csv and eureka_gpqa_tokens.csv: add the study's rows")
    f.add_argument("--no-strategies", action="store_true", help="skip the replayed strategy rows (faster)")


def cmd_fit(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from proxy.profiling.fit import fit_profiles, write_profile

    if (args.holdout_fraction is None) != (args.holdout_out is None):
        raise ConfigError("--holdout-fraction and --holdout-out go together")
    console = Console(stderr=True)
    bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=False)
    tasks: dict[str, object] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bars.add_task(stage, total=total)
        bars.update(tasks[stage], completed=done, total=total)  # type: ignore[arg-type]

    with bars:
        profile = fit_profiles(
            args.traces, args.prices, eureka_dir=args.eureka_dir, holdout_fraction=args.holdout_fraction,
            holdout_out=args.holdout_out, seed=args.seed, strategies=not args.no_strategies, progress=progress,
        )
    write_profile(profile, args.out)
    rows = profile["rows"]
    thresholds = sum(1 for r in rows if r.get("failure_threshold_tokens") is not None)
    console.print(f"wrote {args.out}: {len(rows)} rows ({thresholds} with a failure threshold), "
                  f"{len(profile['models'])} priced models"
                  + (f"; held-out samples in {args.holdout_out}" if args.holdout_out else ""))
    return 0


COMMANDS = {"serve": cmd_serve, "sim": cmd_sim, "demo": cmd_demo}
COMMANDS["fit"] = cmd_fit


def _replay_parser(sub, common) -> None:  # type: ignore[no-untyped-def]
    r = sub.add_parser("replay", help="replay a policy offline on recorded traces", description=(
        "Replay a policy on a per-sample trace CSV: one request per problem, the planner's plan executed on "
        "that problem's recorded samples (drawn without replacement, averaged over seeded permutations), "
        "next to every model's single-sample and majority baselines and the static cost/accuracy frontier. "
        "Warns when the profiles were fitted on the replayed file."))
    common(r)
    r.add_argument("--traces", required=True, metavar="FILE", help="per-sample trace CSV")
    r.add_argument("--policy", required=True, metavar="NAME|FILE", help="a policy name in policies_dir, or a YAML file")
    r.add_argument("--profiles", metavar="FILE", help="profile JSON (default: the config's profiles)")
    r.add_argument("--prices", metavar="FILE",
                   help="price CSV (trace_model, input_usd_per_mtok, output_usd_per_mtok); default: the profile's prices")
    r.add_argument("--verifier", choices=("none", "oracle"), default="none",
                   help="oracle: the correct column is a perfect verifier for best-of-n (default none)")
    r.add_argument("--seed", type=int, default=0, help="seeds the permutations (default 0)")
    r.add_argument("--permutations", type=int, default=16, metavar="N", help="seeded permutations (default 16)")
    r.add_argument("--prompt-tokens", type=int, default=0, metavar="N",
                   help="prompt tokens charged per upstream call (the traces record none; default 0)")
    r.add_argument("--difficulty", choices=("unknown", "oracle"), default="unknown",
                   help="oracle: tell the planner each problem's pass-rate bin (offline upper bound; default unknown)")
    r.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    r.add_argument("--plot", metavar="OUT.png", help="write a PNG: frontier, baselines, the policy point")


def cmd_replay(args: argparse.Namespace) -> int:
    from proxy.profiling.replay import run_replay_command

    return run_replay_command(args)


COMMANDS["replay"] = cmd_replay


def cmd_keys(args: argparse.Namespace) -> int:
    from proxy.cli_admin import cmd_keys as run

    return run(args)


def cmd_budgets(args: argparse.Namespace) -> int:
    from proxy.cli_admin import cmd_budgets as run

    return run(args)


COMMANDS["keys"] = cmd_keys
COMMANDS["budgets"] = cmd_budgets


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
