"""Shared fixtures: real processes on free ports, and OpenAI's own schemas to validate against."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SCHEMAS = SHARED / "reference" / "openai-chat-schemas.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def openai_schemas() -> dict:
    return json.loads(SCHEMAS.read_text())


@pytest.fixture(scope="session")
def validate(openai_schemas):
    """validate(body, "CreateChatCompletionResponse") -> raises with every schema error listed."""
    cache: dict[str, jsonschema.Draft202012Validator] = {}

    def check(body: object, name: str) -> None:
        v = cache.get(name)
        if v is None:
            v = cache[name] = jsonschema.Draft202012Validator(
                {"$ref": f"#/components/schemas/{name}", "components": openai_schemas["components"]}
            )
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in v.iter_errors(body)]
        assert not errors, f"{name} schema violations:\n" + "\n".join(errors) + f"\nbody: {json.dumps(body)[:800]}"

    return check


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before ready:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready after {timeout}s:\n{log.read_text()[-3000:]}")


@dataclass
class Proc:
    """A running server process of ours."""

    proc: subprocess.Popen
    port: int
    log: Path
    tmp: Path
    env: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


#: the admin key every test proxy starts with
ADMIN_KEY = "sk-test-admin-key"


def _env(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARETO_")}
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    env["PARETO_ADMIN_KEY"] = ADMIN_KEY  # outside embedded mode the proxy refuses to start without one
    env.update(extra or {})
    return env


def start_proxy(tmp: Path, config: dict | None, env: dict | None = None, args: list[str] | None = None) -> Proc:
    port = free_port()
    cmd = [sys.executable, "-m", "proxy", "serve", "--port", str(port)] + (args or [])
    if config is not None:
        cfg = tmp / f"proxy-{port}.yaml"
        config = {"traces_dir": str(tmp / "traces"), **config}
        cfg.write_text(yaml.safe_dump(config))
        cmd += ["--config", str(cfg)]
    log = tmp / f"proxy-{port}.log"
    env = _env(env)
    proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    p = Proc(proc, port, log, tmp, env)
    try:
        wait_http(f"{p.url}/readyz", proc, log)
    except Exception:
        p.stop(signal.SIGKILL)
        raise
    return p


def start_sim(tmp: Path, config: dict | None = None) -> Proc:
    port = free_port()
    cmd = [sys.executable, "-m", "proxy", "sim", "--port", str(port)]
    if config is not None:
        cfg = tmp / f"sim-{port}.yaml"
        cfg.write_text(yaml.safe_dump(config))
        cmd += ["--config", str(cfg)]
    log = tmp / f"sim-{port}.log"
    proc = subprocess.Popen(cmd, cwd=tmp, env=_env(), stdout=log.open("wb"), stderr=subprocess.STDOUT)
    p = Proc(proc, port, log, tmp)
    try:
        wait_http(f"{p.url}/v1/models", proc, log)
    except Exception:
        p.stop(signal.SIGKILL)
        raise
    return p


def read_traces(directory: Path) -> list[dict]:
    out = []
    for f in sorted(directory.glob("traces-*.jsonl")):
        out += [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    return out


def wait_traces(directory: Path, count: int, timeout: float = 10.0) -> list[dict]:
    """Traces are flushed in the background; wait until `count` request records are on disk."""
    deadline = time.monotonic() + timeout
    recs: list[dict] = []
    while time.monotonic() < deadline:
        recs = [r for r in read_traces(directory) if r.get("kind") is None] if directory.exists() else []
        if len(recs) >= count:
            return recs
        time.sleep(0.05)
    raise AssertionError(f"expected {count} trace records in {directory}, found {len(recs)}")


def wait_trace(directory: Path, request_id: str, timeout: float = 10.0) -> dict:
    """The trace record of one request, once the background writer has flushed it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for r in read_traces(directory) if directory.exists() else []:
            if r.get("id") == request_id and r.get("kind") is None:
                return r
        time.sleep(0.05)
    raise AssertionError(f"no trace record for {request_id} in {directory}")


# ---- Redis: a real redis-server per test (the ledger's shared backend) ----------------------

REDIS_SERVER = "/usr/bin/redis-server"


def start_redis(tmp: Path, aof: bool = False, appendfsync: str = "everysec",
                port: int | None = None) -> tuple[subprocess.Popen, str]:
    """Start a real redis-server on a free port; returns (proc, "redis://127.0.0.1:port/0").

    No RDB snapshots; AOF off unless `aof` (then `appendonly yes` with `appendfsync`), data in
    `tmp/redis-<port>/`. Restarting on the same `tmp` and `port` with `aof=True` reloads the AOF.
    The caller kills it (`proc.kill(); proc.wait()`), or uses the `redis_url` fixture."""
    port = port or free_port()
    d = tmp / f"redis-{port}"
    d.mkdir(parents=True, exist_ok=True)
    cmd = [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(d), "--save", "",
           "--appendonly", "yes" if aof else "no", "--appendfsync", appendfsync,
           "--protected-mode", "no", "--daemonize", "no", "--logfile", str(d / "redis.log")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 15.0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log = d / "redis.log"
            raise RuntimeError(f"redis-server exited with {proc.returncode}:\n"
                               f"{log.read_text()[-2000:] if log.exists() else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(64).startswith(b"+PONG"):
                    return proc, f"redis://127.0.0.1:{port}/0"
        except OSError:
            pass
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"redis-server on port {port} not ready after 15 s")


def stop_redis(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.fixture
def redis_url(tmp_path):
    """A fresh real redis-server for one test (no persistence); killed afterwards."""
    assert Path(REDIS_SERVER).exists(), "redis-server is not installed (apt-get install redis-server; .ci/run does)"
    proc, url = start_redis(tmp_path)
    try:
        yield url
    finally:
        stop_redis(proc)
