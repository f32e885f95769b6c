"""Draw the Grafana dashboard's key panels as one PNG with matplotlib, from a recorded workload.

No Grafana server runs in CI or here, so the README's picture is drawn from the same PromQL the
dashboard holds (deploy/grafana/dashboards/pareto-proxy.json), evaluated by a real Prometheus
that scraped a real proxy. Two steps:

    # 1. record: every target of the dashboard's panels as a range query, to a JSON file
    python deploy/render_dashboard.py record --prometheus http://127.0.0.1:9090 \
        --start 1700000000 --end 1700000300 --out docs/dashboard-recording.json
    # 2. render: the key panels of a recording, to a PNG
    python deploy/render_dashboard.py render docs/dashboard-recording.json docs/dashboard.png

tests/e2e/test_prometheus.py records its mixed workload (passthrough, routed, parallel with
cutoffs) this way and renders it; with PARETO_DASHBOARD_DOCS=1 it writes docs/dashboard.png.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

DASHBOARD = Path(__file__).resolve().parent / "grafana" / "dashboards" / "pareto-proxy.json"

#: the panels the README shows, in reading order
KEY_PANELS = (
    "Spend rate by team and model",
    "Cost per request",
    "Predicted vs actual cost (actual / predicted)",
    "Tokens by type",
    "Cutoffs and restarts",
    "Routing mix (model x strategy)",
    "Verifier pass rate",
    "Proxy overhead",
    "Budget remaining",
)


def substitute(expr: str, variables: dict[str, str]) -> str:
    """Grafana's template variables as Prometheus sees them (`$__rate_interval`, `$team`, ...)."""
    for name in sorted(variables, key=len, reverse=True):  # $__range before $__r..., $team before $t
        expr = expr.replace(f"${{{name}}}", variables[name]).replace(f"${name}", variables[name])
    return expr


def default_variables(rate_interval: str = "1m", range_: str = "10m") -> dict[str, str]:
    return {"__rate_interval": rate_interval, "__interval": "15s", "__range": range_, "team": ".*",
            "model": ".*", "datasource": "prometheus"}


def panels(dashboard: dict) -> list[dict]:
    return [p for p in dashboard["panels"] if p.get("type") != "row"]


def record(prometheus: str, start: float, end: float, step: float = 2.0, dashboard_path: Path = DASHBOARD,
           variables: dict[str, str] | None = None) -> dict[str, Any]:
    """Every target of every panel as a range query over [start, end]."""
    import httpx

    dash = json.loads(Path(dashboard_path).read_text())
    variables = variables or default_variables()
    out: dict[str, Any] = {"start": start, "end": end, "step": step, "variables": variables, "panels": []}
    with httpx.Client(base_url=prometheus, timeout=30) as http:
        for p in panels(dash):
            entry = {"title": p["title"], "type": p["type"],
                     "unit": p.get("fieldConfig", {}).get("defaults", {}).get("unit", "short"), "targets": []}
            for t in p.get("targets", []):
                expr = substitute(t["expr"], variables)
                r = http.get("/api/v1/query_range", params={"query": expr, "start": start, "end": end, "step": step})
                body = r.json()
                series = body.get("data", {}).get("result", []) if body.get("status") == "success" else []
                entry["targets"].append({"expr": expr, "legend": t.get("legendFormat", ""),
                                         "error": body.get("error"),
                                         "series": [{"labels": s["metric"], "values": s["values"]} for s in series]})
            out["panels"].append(entry)
    return out


def legend(fmt: str, labels: dict[str, str]) -> str:
    text = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt or "")
    return text.strip() or ", ".join(f"{k}={v}" for k, v in labels.items() if k != "__name__") or "value"


def _fmt_unit(unit: str) -> str:
    return {"currencyUSD": "USD", "percentunit": "fraction", "s": "seconds", "reqps": "per second",
            "none": "ratio"}.get(unit, "")


def render(recording: dict[str, Any], out: str | Path, titles: tuple[str, ...] = KEY_PANELS) -> Path:
    """The key panels of a recording in a 3-column grid, Grafana's dark theme."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_title = {p["title"]: p for p in recording["panels"]}
    chosen = [by_title[t] for t in titles if t in by_title]
    cols = 3
    rows = math.ceil(len(chosen) / cols)
    bg, panel_bg, fg = "#111217", "#181b1f", "#ccccdc"
    fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, 3.4 * rows), facecolor=bg, squeeze=False)
    t0 = recording["start"]
    for ax, p in zip(axes.flat, chosen):
        ax.set_facecolor(panel_bg)
        ax.set_title(p["title"], color=fg, loc="left", fontsize=11)
        ax.tick_params(colors=fg, labelsize=8)
        for s in ax.spines.values():
            s.set_color("#2c3235")
        ax.grid(color="#2c3235", linewidth=0.6)
        drawn = 0
        if p["type"] in ("bargauge", "stat"):
            names, values = [], []
            for t in p["targets"]:
                for s in t["series"]:
                    vals = [float(v) for _, v in s["values"] if v not in ("NaN", "+Inf", "-Inf")]
                    if vals:
                        names.append(legend(t["legend"], s["labels"]))
                        values.append(vals[-1])
            if names:
                ax.barh(names, values, color="#73bf69")
                ax.set_xlabel(_fmt_unit(p["unit"]), color=fg, fontsize=8)
                drawn = len(names)
        else:
            for t in p["targets"]:
                for s in t["series"]:
                    pts = [(float(ts) - t0, float(v)) for ts, v in s["values"] if v not in ("NaN", "+Inf", "-Inf")]
                    if not pts:
                        continue
                    xs, ys = zip(*pts)
                    ax.plot(xs, ys, linewidth=1.4, label=legend(t["legend"], s["labels"]))
                    drawn += 1
            if drawn:
                ax.legend(fontsize=7, facecolor=panel_bg, edgecolor="#2c3235", labelcolor=fg, loc="upper left",
                          ncol=2 if drawn > 4 else 1)
            ax.set_xlabel("seconds into the workload", color=fg, fontsize=8)
            ax.set_ylabel(_fmt_unit(p["unit"]), color=fg, fontsize=8)
        if not drawn:
            ax.text(0.5, 0.5, "no data in this workload", color="#8e8e8e", ha="center", va="center",
                    transform=ax.transAxes)
    for ax in list(axes.flat)[len(chosen):]:
        ax.set_visible(False)
    fig.suptitle("pareto-proxy: cost and routing (recorded workload, rendered from the dashboard's PromQL)",
                 color=fg, fontsize=13, x=0.01, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90, facecolor=bg)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    rec = sub.add_parser("record", help="range-query every dashboard target into a JSON file")
    rec.add_argument("--prometheus", required=True)
    rec.add_argument("--start", type=float, required=True)
    rec.add_argument("--end", type=float, required=True)
    rec.add_argument("--step", type=float, default=2.0)
    rec.add_argument("--rate-interval", default="1m")
    rec.add_argument("--out", required=True)
    ren = sub.add_parser("render", help="draw the key panels of a recording")
    ren.add_argument("recording")
    ren.add_argument("png")
    a = ap.parse_args(argv)
    if a.cmd == "record":
        data = record(a.prometheus, a.start, a.end, a.step,
                      variables=default_variables(a.rate_interval, f"{int(a.end - a.start)}s"))
        Path(a.out).write_text(json.dumps(data))
    else:
        render(json.loads(Path(a.recording).read_text()), a.png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
