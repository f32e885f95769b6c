"""`pareto-proxy demo` end to end: it starts its own proxy, grades answers, writes a PNG."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import _env


def test_demo_runs_policies_and_models(tmp_path):
    png = tmp_path / "demo.png"
    r = subprocess.run([sys.executable, "-m", "proxy", "demo", "--tasks", "4", "--json", "--png", str(png),
                        "--models", "sim-r1,sim-deepseek", "--policies", "accurate,cheap"],
                       capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout)
    rows = {row["target"]: row for row in out["rows"]}
    assert set(rows) == {"auto/accurate", "auto/cheap", "sim-r1", "sim-deepseek"}
    for row in rows.values():
        assert row["requests"] == 4 and row["errors"] == 0
        assert 0 <= row["accuracy"] <= 1 and row["cost_usd_per_request"] > 0
        assert row["p95_cost_usd"] >= row["cost_usd_per_request"] * 0.5
    assert rows["sim-r1"]["models"] == {"sim-r1": 4}
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_needs_a_key_with_url(tmp_path):
    r = subprocess.run([sys.executable, "-m", "proxy", "demo", "--url", "http://127.0.0.1:1/v1"],
                       capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=60)
    assert r.returncode == 2 and "--url needs --key" in r.stderr and "Traceback" not in r.stderr
