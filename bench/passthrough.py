#!/usr/bin/env python3
"""Passthrough benchmark: direct nginx vs pareto-proxy vs LiteLLM's proxy.

One run, on this machine, single worker, non-streaming, against a static upstream (nginx
returning a fixed `chat.completion`). For each target and each concurrency it runs wrk
(POST with a small chat body) and reports throughput, p50/p99 latency, errors, and the RSS of
each server after warm-up.

    .venv/bin/python bench/passthrough.py [--duration 10] [--connections 1,16,64]
        [--skip-litellm] [--litellm-venv /tmp/litellm-venv] [--json]
        [--warmup 3] [--wait-quiet 60] [--timeout 10] [--skip-proxy] [--keep-tmp]

Only the standard library is used, so the script runs under any Python >= 3.9. Progress and
diagnostics go to stderr; the table (or with --json one JSON object) goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import pwd
import grp
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
WRK = shutil.which("wrk") or "/usr/bin/wrk"

PROXY_KEY = "sk-bench-1"
UPSTREAM_KEY = "sk-up"
PROXY_ADMIN_KEY = "sk-bench-admin"
LITELLM_MASTER_KEY = "sk-master"
MODEL = "bench-model"
REQUEST_BODY = '{"model":"bench-model","messages":[{"role":"user","content":"hi"}]}'

# The fixed upstream answer: a schema-valid OpenAI chat.completion with usage.
# It goes into nginx's config inside single quotes: keep it free of ' $ and backslashes.
COMPLETION = {
    "id": "chatcmpl-bench0000000000000000000000",
    "object": "chat.completion",
    "created": 1700000000,
    "model": MODEL,
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello! This is a fixed benchmark reply.",
                        "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 9, "completion_tokens": 9, "total_tokens": 18},
    "system_fingerprint": "fp_bench",
}
MODELS = {"object": "list",
          "data": [{"id": MODEL, "object": "model", "created": 1700000000, "owned_by": "bench"}]}
NOT_FOUND = {"error": {"message": "not found", "type": "invalid_request_error", "param": None,
                       "code": "not_found"}}

TARGETS = ("direct", "bare-forwarder", "pareto-proxy", "litellm")
#: the proxy with a team budget and a key rate limit on each ledger backend (--budget-legs)
BUDGET_TARGETS = ("pareto-budget-sqlite", "pareto-budget-redis")
#: the proxy at another commit (--compare-commit), filled in at run time
COMPARE_TARGETS: list[str] = []
OTHER_LOAD_WARN_PCT = 15  # foreign CPU use (% of one core) above which a point is flagged

# ---------------------------------------------------------------------------------------------
# small helpers


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path, n: int = 30) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in lines[-n:]) or "    (empty log)"


def http(method: str, url: str, body: str | None = None, key: str | None = None,
         timeout: float = 5.0) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url, data=body.encode() if body is not None else None,
                                 headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def read_cmd(cmd: list[str], **kw) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=60, **kw)
        return (p.stdout + p.stderr).strip()
    except (OSError, subprocess.SubprocessError) as e:
        return f"(failed: {e})"


# ---------------------------------------------------------------------------------------------
# processes: every server runs in its own session (process group) so one killpg ends it and its
# children; everything we start is ended on exit, on Ctrl-C, on SIGTERM and on errors.


class Procs:
    def __init__(self) -> None:
        self.live: dict[str, subprocess.Popen] = {}

    def start(self, name: str, cmd: list[str], log_path: Path, env: dict | None = None,
              cwd: str | Path | None = None) -> subprocess.Popen:
        logf = open(log_path, "ab")
        try:
            p = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env=env, cwd=cwd, start_new_session=True)
        finally:
            logf.close()
        self.live[name] = p
        return p

    def stop(self, name: str, grace: float = 8.0) -> None:
        p = self.live.pop(name, None)
        if p is None:
            return
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        # whatever is left of its group (children that outlived the leader, or a hung leader)
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            p.wait(2)
        except subprocess.TimeoutExpired:
            pass

    def stop_all(self) -> None:
        for name in list(self.live):
            self.stop(name, grace=5.0)


def tree_pids(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def rss_mb(root: int) -> tuple[float | None, int]:
    """VmRSS of a process and all its descendants, in MB (MiB), and the process count."""
    total, n = 0, 0
    for pid in tree_pids(root):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    n += 1
                    break
        except OSError:
            continue
    return (round(total / 1024, 1) if n else None), n


_TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu_s(root: int) -> float:
    """user+system CPU seconds of a process and its live descendants."""
    total = 0
    for pid in tree_pids(root):
        try:
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(f[11]) + int(f[12])  # utime, stime (fields 14 and 15)
    return total / _TICK


def all_procs_cpu_s() -> dict[tuple[int, int], tuple[str, float]]:
    """(pid, start time) -> (name, CPU seconds) for every process on the machine."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            head, rest = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)
        except OSError:
            continue
        f = rest.split()
        out[(int(d), int(f[19]))] = (head.split("(", 1)[1], (int(f[11]) + int(f[12])) / _TICK)
    return out


def system_cpu_s() -> tuple[float, float, float]:
    """(process time, irq+softirq, steal) CPU seconds of the machine since boot (/proc/stat).
    Loopback networking is largely softirq time, so it is kept apart from process time."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (f + [0] * 8)[:8]
    return (user + nice + system) / _TICK, (irq + softirq) / _TICK, steal / _TICK


def own_cpu_s() -> float:
    """CPU seconds of this script and its waited-for children (wrk)."""
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def wait_quiet(max_wait: float) -> float | None:
    """Wait (up to max_wait s) until the machine is quiet: under OTHER_LOAD_WARN_PCT of a core
    busy over one second (our idle servers included). Returns the last load seen, in %."""
    deadline = time.monotonic() + max_wait
    announced = False
    while True:
        a, b, _ = system_cpu_s()
        t = time.monotonic()
        time.sleep(1.0)
        a2, b2, _ = system_cpu_s()
        load = 100 * ((a2 - a) + (b2 - b)) / (time.monotonic() - t)
        if load < OTHER_LOAD_WARN_PCT or time.monotonic() >= deadline:
            if announced:
                log(f"machine load now {load:.0f}% of a core"
                    + ("" if load < OTHER_LOAD_WARN_PCT else "; going on anyway"))
            return round(load, 1)
        if not announced:
            log(f"machine busy ({load:.0f}% of a core used by others); waiting up to "
                f"{max_wait:.0f}s for it to go quiet")
            announced = True


class CpuMeter:
    """CPU use during a run, in % of one core: the server under test, the upstream, and the
    rest of the machine (other users' work), so a run disturbed by foreign load shows it."""

    def __init__(self, server: int | None, upstream: int | None) -> None:
        self.pids = {k: [v] for k, v in (("server", server), ("upstream", upstream)) if v}
        self.t0 = time.monotonic()
        self.sys0, self.irq0, self.steal0 = system_cpu_s()
        self.own0 = own_cpu_s()
        self.p0 = {k: sum(map(tree_cpu_s, v)) for k, v in self.pids.items()}
        self.all0 = all_procs_cpu_s()

    def stop(self) -> dict:
        wall = time.monotonic() - self.t0
        sys1, irq1, steal1 = system_cpu_s()
        own = own_cpu_s() - self.own0
        parts = {k: sum(map(tree_cpu_s, v)) - self.p0[k] for k, v in self.pids.items()}
        other = (sys1 - self.sys0) - own - sum(parts.values())
        pct = {f"{k}_pct": round(100 * v / wall, 1) for k, v in parts.items()}
        # who else ran: the biggest foreign consumers (processes alive at the end of the run)
        ours = {os.getpid()}
        for v in self.pids.values():
            for root in v:
                ours.update(tree_pids(root))
        top = []
        for key, (comm, cpu) in all_procs_cpu_s().items():
            if key[0] in ours:
                continue
            d = cpu - self.all0.get(key, (comm, 0.0))[1]
            if d / wall >= 0.02:
                top.append((round(100 * d / wall, 1), f"{comm}[{key[0]}]"))
        top.sort(reverse=True)
        pct["other_top"] = [f"{name} {p:g}%" for p, name in top[:4]]
        pct.update(bench_and_wrk_pct=round(100 * own / wall, 1),
                   other_pct=round(max(0.0, 100 * other / wall), 1),
                   irq_pct=round(100 * (irq1 - self.irq0) / wall, 1),
                   steal_pct=round(100 * (steal1 - self.steal0) / wall, 1))
        return pct


def wait_ready(p: subprocess.Popen, url: str, timeout: float, log_path: Path,
               expect: int = 200) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if p.poll() is not None:
            raise RuntimeError(f"exited with status {p.returncode} before {url} answered; log:\n"
                               + tail(log_path))
        try:
            status, _ = http("GET", url, timeout=2)
            if status == expect:
                return
            last = f"HTTP {status}"
        except (OSError, urllib.error.URLError) as e:
            last = str(e)
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout:.0f}s ({last}); log:\n" + tail(log_path))


def preflight(base: str, key: str | None) -> None:
    """One real request: the target must answer 200 with a chat.completion."""
    status, body = http("POST", f"{base}/v1/chat/completions", REQUEST_BODY, key, timeout=30)
    if status != 200:
        raise RuntimeError(f"preflight POST {base}/v1/chat/completions -> HTTP {status}: "
                           f"{body[:400].decode(errors='replace')}")
    data = json.loads(body)
    content = data["choices"][0]["message"]["content"]
    if content != COMPLETION["choices"][0]["message"]["content"]:
        raise RuntimeError(f"preflight: unexpected content {content!r}")


# ---------------------------------------------------------------------------------------------
# the upstream: nginx returning a fixed completion


def start_nginx(procs: Procs, tmp: Path) -> tuple[str, int]:
    d = tmp / "nginx"
    d.mkdir()
    port = free_port()
    user_line = ""
    if os.geteuid() == 0:  # workers otherwise drop to `nobody`; stay the current user
        user_line = (f"user {pwd.getpwuid(os.geteuid()).pw_name} "
                     f"{grp.getgrgid(os.getegid()).gr_name};")

    def js(o) -> str:
        s = json.dumps(o, separators=(",", ":"))
        assert "'" not in s and "$" not in s and "\\" not in s
        return s

    conf = f"""
{user_line}
worker_processes 1;
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    server {{
        listen 127.0.0.1:{port};
        location = /v1/chat/completions {{
            default_type application/json;
            return 200 '{js(COMPLETION)}';
        }}
        location = /v1/models {{
            default_type application/json;
            return 200 '{js(MODELS)}';
        }}
        location / {{
            default_type application/json;
            return 404 '{js(NOT_FOUND)}';
        }}
    }}
}}
"""
    (d / "nginx.conf").write_text(conf)
    log_path = d / "stdout.log"
    p = procs.start("nginx", [NGINX, "-p", str(d), "-c", str(d / "nginx.conf"),
                              "-e", str(d / "error.log")], log_path)
    wait_ready(p, f"http://127.0.0.1:{port}/v1/models", 15, d / "error.log")
    return f"http://127.0.0.1:{port}", p.pid


# ---------------------------------------------------------------------------------------------
# pareto-proxy


def start_redis(procs: Procs, tmp: Path) -> str:
    """A private redis-server (AOF everysec, the persistence the README asks for) for the Redis leg."""
    exe = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not os.path.exists(exe):
        raise FileNotFoundError(f"{exe} not found (apt-get install redis-server)")
    d = tmp / "redis"
    d.mkdir()
    port = free_port()
    procs.start("redis", [exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(d), "--save", "",
                          "--appendonly", "yes", "--appendfsync", "everysec"], d / "server.log", cwd=d)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


def start_pareto(procs: Procs, tmp: Path, upstream: str, name: str = "pareto",
                 ledger: str | None = None, code: Path | None = None) -> tuple[str, int, str]:
    """The proxy with auth, metrics and traces. With `ledger`, the bench key's team also gets a
    (never reached) monthly budget and the key a rate limit, so every request takes the full
    budget path: a rate check and a reservation before the upstream call, a durable commit after."""
    exe = REPO / ".venv" / "bin" / "pareto-proxy"
    if not exe.exists():
        raise RuntimeError(f"{exe} does not exist (is the package installed in {REPO}/.venv?)")
    d = tmp / name
    d.mkdir()
    port = free_port()
    cfg = d / "proxy.yaml"
    limits = "\n    rpm: 100000000\n    tpm: 100000000000" if ledger else ""
    cfg.write_text(f"""ledger: {ledger or f"sqlite:///{d}/.pareto/ledger.db"}
models:
  - name: {MODEL}
    provider: openai
    api_base: {upstream}/v1
    api_key_env: BENCH_UPSTREAM_KEY
    price: {{input_usd_per_mtok: 0.15, output_usd_per_mtok: 0.6}}
keys:
  - key_env: BENCH_PROXY_KEY
    team: bench{limits}
traces_dir: {d}/traces
""")
    env = dict(os.environ)
    env.update(BENCH_PROXY_KEY=PROXY_KEY, BENCH_UPSTREAM_KEY=UPSTREAM_KEY,
               PARETO_ADMIN_KEY=PROXY_ADMIN_KEY, LITELLM_LOCAL_MODEL_COST_MAP="True")
    tok = _litellm_tokenizers(REPO / ".venv")
    if tok and "TIKTOKEN_CACHE_DIR" not in env:
        env["TIKTOKEN_CACHE_DIR"] = str(tok)
    launcher = [str(exe)]
    if code is not None:  # another commit's code (--compare-commit), with this venv's packages
        launcher = [str(REPO / ".venv" / "bin" / "python"), "-c",
                    f"import sys; sys.path.insert(0, {str(code)!r}); from proxy.cli import main; sys.exit(main())"]
    cmd = [*launcher, "serve", "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port)]
    # single worker: pass --workers 1 when the command knows the flag (contract), else default
    helptext = read_cmd([*launcher, "serve", "--help"], env=env, cwd=d)
    if "--workers" in helptext:
        cmd += ["--workers", "1"]
    log_path = d / "server.log"
    # cwd = the temp dir, so the default ledger (.pareto/ledger.db) lands there too
    p = procs.start(name, cmd, log_path, env=env, cwd=d)
    wait_ready(p, f"http://127.0.0.1:{port}/healthz", 90, log_path)
    if ledger:
        status, body = http("PUT", f"http://127.0.0.1:{port}/admin/budgets", json.dumps(
            {"team": "bench", "usd": 1e9, "period": "month"}), key=PROXY_ADMIN_KEY)
        if status != 200:
            raise RuntimeError(f"setting the bench budget failed: {status} {body[:300]!r}")
    return f"http://127.0.0.1:{port}", p.pid, " ".join(cmd)


def start_bare(procs: Procs, tmp: Path, upstream: str) -> tuple[str, int, str]:
    """The reference floor: Starlette + aiohttp forwarding with nothing else (bench/bare_forwarder.py)."""
    d = tmp / "bare"
    d.mkdir()
    port = free_port()
    cmd = [str(REPO / ".venv" / "bin" / "python"), str(REPO / "bench" / "bare_forwarder.py"), upstream, str(port)]
    log_path = d / "server.log"
    p = procs.start("bare-forwarder", cmd, log_path, cwd=d)
    wait_ready(p, f"http://127.0.0.1:{port}/healthz", 60, log_path)
    return f"http://127.0.0.1:{port}", p.pid, " ".join(cmd)


def _litellm_tokenizers(venv: Path) -> Path | None:
    for p in sorted(venv.glob("lib/python*/site-packages/litellm/litellm_core_utils/tokenizers")):
        return p
    return None


# ---------------------------------------------------------------------------------------------
# LiteLLM's proxy, from its own venv


def litellm_missing_help(venv: Path) -> str:
    return (f"LiteLLM venv not found at {venv}. Create it once with:\n"
            f"    python3 -m venv {venv} && {venv}/bin/pip install 'litellm[proxy]'")


def start_litellm(procs: Procs, tmp: Path, upstream: str, venv: Path) -> tuple[str, int, str]:
    exe = venv / "bin" / "litellm"
    if not exe.exists():
        raise FileNotFoundError(litellm_missing_help(venv))
    d = tmp / "litellm"
    d.mkdir()
    port = free_port()
    cfg = d / "config.yaml"
    # Lean: no database (no DATABASE_URL), so no spend/error logs are written; spend logs and
    # error logs also switched off explicitly; no callbacks; no verbose logging.
    cfg.write_text(f"""model_list:
  - model_name: {MODEL}
    litellm_params:
      model: openai/{MODEL}
      api_base: {upstream}/v1
      api_key: {UPSTREAM_KEY}
litellm_settings:
  set_verbose: false
  json_logs: false
  drop_params: true
  callbacks: []
  success_callback: []
  failure_callback: []
general_settings:
  master_key: os.environ/LITELLM_MASTER_KEY
  disable_spend_logs: true
  disable_error_logs: true
""")
    env = dict(os.environ)
    for var in ("DATABASE_URL", "DIRECT_URL", "DATABASE_URL_READ_REPLICA", "REDIS_HOST",
                "REDIS_URL", "STORE_MODEL_IN_DB"):
        env.pop(var, None)
    env.update(LITELLM_MASTER_KEY=LITELLM_MASTER_KEY, LITELLM_LOCAL_MODEL_COST_MAP="True",
               LITELLM_LOG="ERROR", LITELLM_MODE="PRODUCTION", DISABLE_ADMIN_UI="True",
               LITELLM_DONT_SHOW_FEEDBACK_BOX="True", NUM_WORKERS="1")
    tok = _litellm_tokenizers(venv)
    if tok:
        env["TIKTOKEN_CACHE_DIR"] = str(tok)
    cmd = [str(exe), "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port),
           "--num_workers", "1"]
    log_path = d / "server.log"
    p = procs.start("litellm", cmd, log_path, env=env, cwd=d)
    wait_ready(p, f"http://127.0.0.1:{port}/health/liveliness", 240, log_path)
    return f"http://127.0.0.1:{port}", p.pid, " ".join(cmd)


# ---------------------------------------------------------------------------------------------
# wrk

LUA = r"""
wrk.method = "POST"
wrk.body = '__BODY__'
wrk.headers["Content-Type"] = "application/json"
__AUTH__
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCHJSON {\"requests\":%d,\"duration_us\":%d,\"bytes\":%d,\"p50_us\":%d,\"p90_us\":%d," ..
    "\"p99_us\":%d,\"mean_us\":%.1f,\"max_us\":%d,\"connect\":%d,\"read\":%d,\"write\":%d," ..
    "\"status\":%d,\"timeout\":%d}\n",
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
"""

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    return float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")


def write_lua(tmp: Path, name: str, key: str | None) -> Path:
    auth = f'wrk.headers["Authorization"] = "Bearer {key}"' if key else ""
    path = tmp / f"wrk-{name}.lua"
    path.write_text(LUA.replace("__BODY__", REQUEST_BODY).replace("__AUTH__", auth))
    return path


def run_wrk(url: str, lua: Path, connections: int, duration: float, timeout_s: int,
            server: int | None = None, upstream: int | None = None) -> dict:
    threads = max(1, min(connections, 2))
    cmd = [WRK, "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(duration))}s",
           "--timeout", f"{timeout_s}s", "--latency", "-s", str(lua), f"{url}/v1/chat/completions"]
    meter = CpuMeter(server, upstream)
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = p.communicate(timeout=duration + timeout_s + 30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    res = parse_wrk(out, connections, threads)
    res["cpu"] = meter.stop()
    if res.get("requests"):
        cpu_s = res["cpu"]["server_pct"] / 100 * res.get("duration_s", duration)
        res["server_cpu_us_per_req"] = round(1e6 * cpu_s / res["requests"], 1)
    return res


def parse_wrk(out: str, connections: int, threads: int) -> dict:
    res: dict = {"connections": connections, "threads": threads}
    m = re.search(r"^BENCHJSON (\{.*\})$", out, re.M)
    if m:
        s = json.loads(m.group(1))
        dur = s["duration_us"] / 1e6
        res.update(requests=s["requests"], duration_s=round(dur, 3),
                   rps=round(s["requests"] / dur, 1) if dur else 0.0,
                   p50_ms=round(s["p50_us"] / 1e3, 3), p90_ms=round(s["p90_us"] / 1e3, 3),
                   p99_ms=round(s["p99_us"] / 1e3, 3), mean_ms=round(s["mean_us"] / 1e3, 3),
                   max_ms=round(s["max_us"] / 1e3, 3), non2xx=s["status"],
                   socket_errors={k: s[k] for k in ("connect", "read", "write", "timeout")})
    else:  # fall back to wrk's text report
        rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
        p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
        p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
        n = re.search(r"(\d+) requests in", out)
        non2 = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
        sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
        if not rps:
            res.update(error="could not parse wrk output", raw=out[-2000:])
            return res
        res.update(requests=int(n.group(1)) if n else None, rps=float(rps.group(1)),
                   p50_ms=_ms(p50.group(1)) if p50 else None,
                   p99_ms=_ms(p99.group(1)) if p99 else None,
                   non2xx=int(non2.group(1)) if non2 else 0,
                   socket_errors=dict(zip(("connect", "read", "write", "timeout"),
                                          map(int, sock.groups()))) if sock else
                   {"connect": 0, "read": 0, "write": 0, "timeout": 0})
    res["errors"] = res["non2xx"] + sum(res["socket_errors"].values())
    res["ok"] = res["errors"] == 0 and bool(res.get("requests"))
    return res


# ---------------------------------------------------------------------------------------------
# one target


def bench_target(name: str, base: str, pid: int, key: str | None, args, tmp: Path,
                 upstream_pid: int | None = None) -> dict:
    lua = write_lua(tmp, name, key)
    preflight(base, key)
    warm_c = max(args.connections)
    log(f"{name}: warm-up {args.warmup:g}s at c={warm_c}")
    warm = run_wrk(base, lua, warm_c, args.warmup, args.timeout, pid, upstream_pid)
    rss_warm, nproc_ = rss_mb(pid)
    out: dict = {"url": base, "pid": pid, "processes": nproc_, "rss_mb_after_warmup": rss_warm,
                 "warmup": {"rps": warm.get("rps"), "errors": warm.get("errors")}, "runs": []}
    for c in args.connections:
        if args.wait_quiet > 0:
            wait_quiet(args.wait_quiet)
        log(f"{name}: c={c} for {args.duration:g}s")
        r = run_wrk(base, lua, c, args.duration, args.timeout, pid, upstream_pid)
        out["runs"].append(r)
        log(f"{name}: c={c}: " + (f"{r['rps']:.0f} req/s p50 {r['p50_ms']:.2f} ms "
                                  f"p99 {r['p99_ms']:.2f} ms errors {r['errors']} "
                                  f"server CPU {r['cpu']['server_pct']:.0f}% "
                                  f"other load {r['cpu']['other_pct']:.0f}%"
                                  if "rps" in r else r.get("error", "?")))
    out["rss_mb_after_runs"], _ = rss_mb(pid)
    return out


# ---------------------------------------------------------------------------------------------
# report


def machine_info(args) -> dict:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "nproc": os.cpu_count(),
        "nproc_cmd": read_cmd(["nproc"]),
        "cpu_model": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "nginx": read_cmd([NGINX, "-v"]).replace("nginx version: ", ""),
        "wrk": read_cmd([WRK, "--version"]).splitlines()[0].split(" Copyright")[0],
        "repo_commit": read_cmd(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]),
    }
    try:
        from importlib.metadata import version
        info["pareto_proxy"] = version("pareto-proxy")
    except Exception:  # noqa: BLE001 - informational only
        info["pareto_proxy"] = None
    lpy = args.litellm_venv / "bin" / "python"
    if not args.skip_litellm and lpy.exists():
        info["litellm"] = read_cmd([str(lpy), "-c", "from importlib.metadata import version;"
                                    "print(version('litellm'))"])
        info["litellm_python"] = read_cmd([str(lpy), "-c", "import platform;"
                                           "print(platform.python_version())"])
    return info


def _run(report: dict, target: str, c: int) -> dict | None:
    t = report["targets"].get(target)
    if not t or "runs" not in t:
        return None
    for r in t["runs"]:
        if r["connections"] == c:
            return r
    return None


def _ok(r: dict | None) -> bool:
    return bool(r and r.get("ok"))


def summarize(report: dict, connections: list[int]) -> None:
    ratios = []
    for c in connections:
        d, b, p, l = (_run(report, t, c) for t in TARGETS)
        row = {
            "connections": c,
            "proxy_over_bare": round(p["rps"] / b["rps"], 3) if _ok(p) and _ok(b) else None,
            "proxy_over_direct": round(p["rps"] / d["rps"], 3) if _ok(p) and _ok(d) else None,
            "proxy_over_litellm": round(p["rps"] / l["rps"], 2) if _ok(p) and _ok(l) else None,
        }
        for name in BUDGET_TARGETS:
            x = _run(report, name, c)
            row[f"{name}_over_bare"] = round(x["rps"] / b["rps"], 3) if _ok(x) and _ok(b) else None
            for ref in COMPARE_TARGETS:
                y = _run(report, ref, c)
                row[f"{name}_over_{ref}"] = round(x["rps"] / y["rps"], 3) if _ok(x) and _ok(y) else None
        for ref in COMPARE_TARGETS:
            y = _run(report, ref, c)
            row[f"proxy_over_{ref}"] = round(p["rps"] / y["rps"], 3) if _ok(p) and _ok(y) else None
        ratios.append(row)
    report["ratios"] = ratios
    d1, p1 = _run(report, "direct", 1), _run(report, "pareto-proxy", 1)
    added = round(p1["p50_ms"] - d1["p50_ms"], 3) if _ok(d1) and _ok(p1) else None
    report["added_p50_ms_at_c1"] = added
    b1 = _run(report, "bare-forwarder", 1)
    report["bare_added_p50_ms_at_c1"] = round(b1["p50_ms"] - d1["p50_ms"], 3) if _ok(d1) and _ok(b1) else None
    p16 = _run(report, "pareto-proxy", 16)
    prx = report["targets"].get("pareto-proxy", {})
    rss = prx.get("rss_mb_after_warmup")
    report["noisy_points"] = [
        f"{n} c={r['connections']} (other {r['cpu']['other_pct']:.0f}%, "
        f"steal {r['cpu']['steal_pct']:.0f}%)"
        for n, t in report["targets"].items() for r in t.get("runs", [])
        if max(r.get("cpu", {}).get("other_pct", 0), r.get("cpu", {}).get("steal_pct", 0))
        >= OTHER_LOAD_WARN_PCT]
    report["targets_check"] = {
        "rps_at_c16_ge_2500": (p16["rps"] >= 2500) if _ok(p16) else None,
        "added_p50_at_c1_le_0.5ms": (added <= 0.5) if added is not None else None,
        "rss_le_150mb": (rss <= 150) if rss is not None else None,
    }


def fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def print_table(report: dict, args) -> None:
    m = report["machine"]
    print(f"Machine: nproc={m['nproc_cmd']}  CPU: {m['cpu_model']}  kernel {m['kernel']}")
    print(f"Python {m['python']} ({m['python_executable']}); nginx {m['nginx']}; {m['wrk']}"
          + (f"; litellm {m['litellm']} (Python {m.get('litellm_python')})" if m.get("litellm") else "")
          + (f"; pareto-proxy {m['pareto_proxy']} @ {m['repo_commit']}" if m.get("pareto_proxy") else ""))
    print(f"Run: {args.duration:g}s per point after a {args.warmup:g}s warm-up; wrk threads = "
          f"min(connections, 2); POST {len(REQUEST_BODY)}-byte chat body; non-streaming; "
          f"single worker each.")
    print()
    hdr = (f"{'target':<22}{'conns':>6}{'req/s':>11}{'p50 ms':>10}{'p99 ms':>10}{'errors':>9}"
           f"{'srv CPU%':>10}{'us CPU/req':>12}{'other%':>8}{'steal%':>8}  note")
    print(hdr)
    print("-" * len(hdr))
    for name in TARGETS + BUDGET_TARGETS + tuple(COMPARE_TARGETS):
        t = report["targets"].get(name)
        if t is None:
            continue
        if "runs" not in t:
            print(f"{name:<22}{'-':>6}{'-':>11}{'-':>10}{'-':>10}{'-':>9}  {t.get('status')}: "
                  f"{t.get('reason', '').splitlines()[0] if t.get('reason') else ''}")
            continue
        for r in t["runs"]:
            if "rps" not in r:
                print(f"{name:<22}{r['connections']:>6}{'-':>11}{'-':>10}{'-':>10}{'-':>9}  "
                      f"{r.get('error')}")
            elif r["ok"]:
                cpu = r.get("cpu", {})
                notes = []
                if cpu.get("other_pct", 0) >= OTHER_LOAD_WARN_PCT:
                    notes.append("noisy: " + (", ".join(cpu.get("other_top", [])[:2])
                                              or "short-lived processes"))
                if cpu.get("steal_pct", 0) >= OTHER_LOAD_WARN_PCT:
                    notes.append("hypervisor steal")
                print(f"{name:<22}{r['connections']:>6}{r['rps']:>11.1f}{r['p50_ms']:>10.3f}"
                      f"{r['p99_ms']:>10.3f}{r['errors']:>9}{fmt(cpu.get('server_pct'), '.0f'):>10}"
                      f"{fmt(r.get('server_cpu_us_per_req'), '.0f'):>12}"
                      f"{fmt(cpu.get('other_pct'), '.0f'):>8}{fmt(cpu.get('steal_pct'), '.0f'):>8}"
                      + ("  " + "; ".join(notes) if notes else ""))
            else:
                se = r["socket_errors"]
                print(f"{name:<22}{r['connections']:>6}{'ERRORS':>11}{'-':>10}{'-':>10}"
                      f"{r['errors']:>9}  non-2xx {r['non2xx']}, socket connect/read/write/"
                      f"timeout {se['connect']}/{se['read']}/{se['write']}/{se['timeout']} "
                      f"of {r.get('requests')} requests")
    print()
    print(f"{'conns':>6}{'proxy/direct':>15}{'proxy/bare':>13}{'proxy/litellm':>15}   (req/s ratios)")
    for r in report["ratios"]:
        print(f"{r['connections']:>6}{fmt(r['proxy_over_direct'], '.3f'):>15}{fmt(r['proxy_over_bare'], '.3f'):>13}"
              f"{fmt(r['proxy_over_litellm'], '.2f'):>15}")
    for ref in COMPARE_TARGETS:
        cols = ["proxy"] + [n for n in BUDGET_TARGETS if any(r.get(f"{n}_over_{ref}") for r in report["ratios"])]
        print(f"{'conns':>6}" + "".join(f"{c + '/' + ref:>44}" for c in cols) + "   (req/s ratios)")
        for r in report["ratios"]:
            print(f"{r['connections']:>6}" + "".join(f"{fmt(r.get(c + '_over_' + ref), '.3f'):>44}" for c in cols))
    if any(r.get(f"{n}_over_bare") for r in report["ratios"] for n in BUDGET_TARGETS):
        print(f"{'conns':>6}" + "".join(f"{n + '/bare':>28}" for n in BUDGET_TARGETS) + "   (req/s ratios; target >= 0.70)")
        for r in report["ratios"]:
            print(f"{r['connections']:>6}" + "".join(f"{fmt(r.get(n + '_over_bare'), '.3f'):>28}" for n in BUDGET_TARGETS))
    print()
    a = report["added_p50_ms_at_c1"]
    print(f"Added p50 latency at c=1 (pareto-proxy p50 - direct p50): "
          f"{fmt(a, '.3f')}{' ms' if a is not None else ''}")
    ab = report["bare_added_p50_ms_at_c1"]
    print(f"  the floor of the stack, bare Starlette+aiohttp forwarder p50 - direct p50: "
          f"{fmt(ab, '.3f')}{' ms' if ab is not None else ''}")
    print("RSS after warm-up (VmRSS, process and children):")
    for name in TARGETS:
        t = report["targets"].get(name)
        if t and "rss_mb_after_warmup" in t:
            print(f"  {name:<14}{t['rss_mb_after_warmup']:>8.1f} MB  ({t['processes']} process"
                  f"{'es' if t['processes'] != 1 else ''}; {fmt(t.get('rss_mb_after_runs'), '.1f')}"
                  f" MB after all runs)")
    noisy = report["noisy_points"]
    if noisy:
        print(f"WARNING: other processes or the hypervisor (steal) took >= {OTHER_LOAD_WARN_PCT}% "
              "of a core during: " + ", ".join(noisy) + "; those points are less reliable.")
    ck = report["targets_check"]
    word = {True: "PASS", False: "FAIL", None: "n/a"}
    print("Targets for pareto-proxy: "
          f">= 2,500 req/s at c=16: {word[ck['rps_at_c16_ge_2500']]}; "
          f"added p50 <= 0.5 ms at c=1: {word[ck['added_p50_at_c1_le_0.5ms']]}; "
          f"RSS <= 150 MB: {word[ck['rss_le_150mb']]}")
    for name in TARGETS:
        t = report["targets"].get(name)
        if t and t.get("status") not in (None, "ok") and not t.get("reason", "").startswith("--"):
            print(f"\n{name}: {t['status']}: {t.get('reason')}")


# ---------------------------------------------------------------------------------------------


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per measured point")
    ap.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds per target")
    ap.add_argument("--connections", default="1,16,64", help="comma-separated concurrencies")
    ap.add_argument("--timeout", type=int, default=10, help="wrk per-request timeout, seconds")
    ap.add_argument("--wait-quiet", type=float, default=60.0, metavar="S",
                    help="before each point, wait up to S seconds for other load to stop (0: off)")
    ap.add_argument("--skip-litellm", action="store_true")
    ap.add_argument("--compare-commit", metavar="REV",
                    help="also run the proxy's code at git revision REV (a worktree in the temp dir) for before/after ratios")
    ap.add_argument("--budget-legs", action="store_true",
                    help="also run the proxy with a team budget and key rate limit on the SQLite and the Redis ledger")
    ap.add_argument("--skip-proxy", action="store_true", help="skip the pareto-proxy leg")
    ap.add_argument("--litellm-venv", type=Path, default=Path("/tmp/litellm-venv"))
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs, logs)")
    args = ap.parse_args(argv)
    args.connections = [int(c) for c in args.connections.split(",") if c.strip()]
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    for tool in (NGINX, WRK):
        if not os.path.exists(tool):
            print(f"error: {tool} not found (apt-get install nginx wrk)", file=sys.stderr)
            return 2

    procs = Procs()

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    # explicit, also for SIGINT: a shell starts background jobs with SIGINT ignored
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    tmp = Path(tempfile.mkdtemp(prefix="pareto-bench-"))
    report: dict = {"machine": machine_info(args),
                    "settings": {"duration_s": args.duration, "warmup_s": args.warmup,
                                 "connections": args.connections, "wrk_timeout_s": args.timeout,
                                 "wait_quiet_s": args.wait_quiet,
                                 "body": REQUEST_BODY, "stream": False, "workers": 1},
                    "targets": {}}
    rc = 0
    try:
        log(f"temp dir {tmp}")
        upstream, nginx_pid = start_nginx(procs, tmp)
        log(f"nginx upstream on {upstream}")
        try:
            report["targets"]["direct"] = bench_target("direct", upstream, nginx_pid, None, args, tmp)
            report["targets"]["direct"]["status"] = "ok"
        except Exception as e:  # noqa: BLE001 - without the upstream nothing else means anything
            raise RuntimeError(f"direct leg failed: {e}") from e

        legs = [("bare-forwarder", lambda: start_bare(procs, tmp, upstream), None)]
        if not args.skip_proxy:
            legs.append(("pareto-proxy", lambda: start_pareto(procs, tmp, upstream), PROXY_KEY))
        if args.compare_commit:
            base = tmp / "compare-src"
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-f", str(base),
                            args.compare_commit], check=True, capture_output=True)
            name = f"pareto@{args.compare_commit[:10]}"
            COMPARE_TARGETS.append(name)
            legs.append((name, lambda: start_pareto(procs, tmp, upstream, "pareto-compare", code=base), PROXY_KEY))
        if args.budget_legs:
            legs.append(("pareto-budget-sqlite", lambda: start_pareto(
                procs, tmp, upstream, "pareto-budget-sqlite", f"sqlite:///{tmp}/budget-sqlite/ledger.db"), PROXY_KEY))
            legs.append(("pareto-budget-redis", lambda: start_pareto(
                procs, tmp, upstream, "pareto-budget-redis", start_redis(procs, tmp)), PROXY_KEY))
        else:
            report["targets"]["pareto-proxy"] = {"status": "skipped", "reason": "--skip-proxy"}
        if not args.skip_litellm:
            legs.append(("litellm", lambda: start_litellm(procs, tmp, upstream, args.litellm_venv),
                         LITELLM_MASTER_KEY))
        else:
            report["targets"]["litellm"] = {"status": "skipped", "reason": "--skip-litellm"}
        for name, starter, key in legs:
            log(f"{name}: starting")
            t0 = time.monotonic()
            try:
                base, pid, cmd = starter()
            except FileNotFoundError as e:
                log(f"{name}: SKIPPED: {e}")
                report["targets"][name] = {"status": "skipped", "reason": str(e)}
                procs.stop(name)
                continue
            except Exception as e:  # noqa: BLE001 - report the leg as failed, run the others
                log(f"{name}: FAILED to start: {e}")
                report["targets"][name] = {"status": "failed to start", "reason": str(e)}
                procs.stop(name)
                continue
            startup = round(time.monotonic() - t0, 1)
            log(f"{name}: ready on {base} after {startup}s ({cmd})")
            try:
                res = bench_target(name, base, pid, key, args, tmp, upstream_pid=nginx_pid)
                res.update(status="ok", command=cmd, startup_s=startup)
                report["targets"][name] = res
            except Exception as e:  # noqa: BLE001
                log(f"{name}: FAILED: {e}")
                logdir = {"pareto-proxy": "pareto", "bare-forwarder": "bare"}.get(name, name)
                report["targets"][name] = {"status": "failed", "reason": str(e), "command": cmd,
                                           "log_tail": tail(tmp / logdir / "server.log")}
            finally:
                procs.stop(name)
        # was the upstream healthy throughout?
        if procs.live.get("nginx") is None or procs.live["nginx"].poll() is not None:
            raise RuntimeError("nginx died during the run; log:\n" + tail(tmp / "nginx" / "error.log"))
        summarize(report, args.connections)
        if args.json:
            print(json.dumps(report, indent=2))
        else:
            print_table(report, args)
        if any(t.get("status") not in ("ok", "skipped") for t in report["targets"].values()):
            rc = 1
    except KeyboardInterrupt as e:
        log(f"interrupted ({e}); cleaning up")
        rc = 130
    except Exception as e:  # noqa: BLE001
        log(f"error: {e}")
        rc = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip the cleanup
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        procs.stop_all()
        if (tmp / "compare-src").exists():
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tmp / "compare-src")],
                           capture_output=True)
        if args.keep_tmp:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
