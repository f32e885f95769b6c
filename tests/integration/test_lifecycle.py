"""Starting and stopping: embedded mode, config errors, graceful drain on SIGTERM."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
from openai import OpenAI

from tests.conftest import _env, start_proxy, wait_traces

MSG = [{"role": "user", "content": "What is 17 * 23?"}]


def test_embedded_mode_prints_a_working_dev_key(tmp_path):
    p = start_proxy(tmp_path, None)
    try:
        banner = p.log.read_text()
        m = re.search(r"development key \(embedded mode\): (sk-pareto-dev-\S+)", banner)
        assert m, banner
        client = OpenAI(base_url=p.base_url, api_key=m.group(1), max_retries=0)
        ids = {x.id for x in client.models.list().data}
        assert {"sim-r1", "sim-qwq", "sim-gpt-oss-120b", "auto"} <= ids
        r = client.chat.completions.create(model="sim-qwq", messages=MSG, max_tokens=64)
        assert r.usage.completion_tokens <= 64
        assert (tmp_path / ".pareto").is_dir(), "embedded state lives under .pareto/"
    finally:
        # uvicorn re-raises the SIGTERM it handled after a clean shutdown
        assert p.stop() in (0, -signal.SIGTERM)
    assert '"proxy stopped"' in p.log.read_text(), "a graceful stop, not a kill"
    logged = p.log.read_text().split("development key", 1)[1].split("\n", 3)[-1]
    assert m.group(1) not in logged, "the key is printed once in the banner, never logged"


def _serve(tmp_path, text: str) -> subprocess.CompletedProcess:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    return subprocess.run([sys.executable, "-m", "proxy", "serve", "--config", str(cfg), "--port", "1"],
                          capture_output=True, text=True, env=_env(), timeout=60)


@pytest.mark.parametrize("text,expect", [
    ("models: [\n  - name: a\n", "not valid YAML at line"),
    ("models:\n  - name: a\n    price: {input_usd_per_mtok: -1, output_usd_per_mtok: 1}\n",
     "models.0.price.input_usd_per_mtok: Input should be greater than or equal to 0"),
    ("max_body_bytes: lots\n", "max_body_bytes: Input should be a valid integer"),
    ("modles: []\n", "modles: Extra inputs are not permitted"),
    ("keys:\n  - key_env: NOT_SET_ANYWHERE_X\n    team: t\n", "keys.0.key_env: environment variable NOT_SET_ANYWHERE_X is not set"),
    ("models:\n  - {name: s, provider: simulated, profile: GPT-9}\n", "imitates profile 'GPT-9'"),
    ("keys:\n  - {key_env: K, team: t, default_task: poetry}\n", "keys.0.default_task: unknown task 'poetry'"),
])
def test_bad_config_fails_with_field_and_reason(tmp_path, text, expect):
    r = _serve(tmp_path, text)
    assert r.returncode == 2
    assert expect in r.stderr, r.stderr
    assert "Traceback" not in r.stderr + r.stdout


def test_env_overrides_file(tmp_path):
    p = start_proxy(tmp_path, {"max_body_bytes": 10_000_000, "keys": [{"key_env": "K", "team": "t"}]},
                    env={"K": "sk-k", "PARETO_MAX_BODY_BYTES": "300"})
    try:
        r = httpx.post(f"{p.base_url}/chat/completions", headers={"Authorization": "Bearer sk-k"},
                       json={"model": "x", "messages": [{"role": "user", "content": "y" * 400}]})
        assert r.status_code == 413
    finally:
        p.stop()


def test_sigterm_drains_in_flight_stream(tmp_path):
    config = {
        "models": [{"name": "slow", "provider": "simulated", "profile": "R1",
                    "simulator": {"tokens_per_second": 2000, "tokens_per_chunk": 20}}],
        "keys": [{"key_env": "K", "team": "t"}],
    }
    p = start_proxy(tmp_path, config, env={"K": "sk-k"})
    client = OpenAI(base_url=p.base_url, api_key="sk-k", max_retries=0, timeout=30)
    got: dict = {}
    first = threading.Event()

    def consume() -> None:
        chunks = []
        try:
            for c in client.chat.completions.create(model="slow", messages=MSG, stream=True, max_tokens=3000,
                                                    stream_options={"include_usage": True}):
                chunks.append(c)
                first.set()
        except Exception as e:  # recorded for the assertion below
            got["error"] = e
        got["chunks"] = chunks

    t = threading.Thread(target=consume)
    t.start()
    assert first.wait(20)
    p.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    with pytest.raises(httpx.HTTPError):  # no new connections while draining
        httpx.get(f"{p.url}/healthz", timeout=2)
    t.join(30)
    assert "error" not in got, got.get("error")
    assert got["chunks"][-1].usage.completion_tokens == 3000, "the in-flight stream finished"
    assert p.proc.wait(30) in (0, -signal.SIGTERM)
    assert '"proxy stopped"' in p.log.read_text()
    recs = wait_traces(tmp_path / "traces", 1)
    assert recs[-1]["status"] == 200 and recs[-1]["samples"][0]["completion_tokens"] == 3000
