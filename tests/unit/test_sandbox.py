"""The sandbox under attack: each attack is contained, fails with a reason, and leaves nothing
running. Every attack runs in the mode this machine allows and in the forced fallback mode."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest

from proxy.verifiers import Sandbox, SandboxLimits

ROOT = os.geteuid() == 0
MODES = ["auto", "rlimits" if ROOT else "weak"]


@pytest.fixture(params=MODES)
def sandbox(request) -> Sandbox:
    return Sandbox(SandboxLimits(memory_mb=256), mode=None if request.param == "auto" else request.param)


def _processes_of(uid: int) -> list[int]:
    out = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                status = Path(f"/proc/{entry.name}/status").read_text()
            except OSError:
                continue
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            if int(fields["Uid"].split()[0]) == uid and not fields["State"].strip().startswith("Z"):
                out.append(int(entry.name))
    return out


async def test_the_probed_mode_is_real_isolation_here():
    # this machine (and CI's image) can make namespaces: anything weaker is a regression of the probe
    mode = await Sandbox().mode()
    assert mode == ("namespaces" if ROOT else "userns"), mode
    if ROOT:
        assert mode in ("namespaces", "rlimits")


async def test_passing_and_failing_tests_are_reported_one_by_one(sandbox):
    code = "def add(a, b):\n    return a + b\n"
    tests = "assert add(1, 1) == 2\ndef test_small():\n    assert add(2, 2) == 4\ndef test_wrong():\n    assert add(2, 2) == 5, 'two and two'\n"
    r = await sandbox.run(code, tests, timeout_s=10)
    assert r.status == "ok" and not r.passed
    assert [(t.name, t.passed) for t in r.tests] == [("test_small", True), ("test_wrong", False)]
    assert "two and two" in r.tests[1].error and r.tests[1].line == 5
    ok = await sandbox.run(code, "from solution import add\nassert add(3, 4) == 7\n", timeout_s=10)
    assert ok.passed and ok.reason == ""
    if ROOT:
        assert ok.uid is not None and ok.uid != 0, "root dropped to an unprivileged uid"


async def test_stdlib_imports_work_after_the_privilege_drop(sandbox):
    code = "import math, itertools, collections, heapq, fractions\ndef f():\n    return math.comb(5, 2)\n"
    assert (await sandbox.run(code, "assert f() == 10", timeout_s=10)).passed


async def test_fork_bomb_is_contained(sandbox):
    code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    r = await sandbox.run(code, "assert True", timeout_s=2)
    assert not r.passed and r.status == "timeout" and "time limit" in r.reason
    if ROOT:
        assert _processes_of(r.uid) == [], "every forked process is gone"


async def test_infinite_loop_times_out(sandbox):
    r = await sandbox.run("while True:\n    pass\n", "assert True", timeout_s=1)
    assert not r.passed and r.status == "timeout" and "time limit" in r.reason


async def test_ten_gigabytes_is_a_memory_error(sandbox):
    r = await sandbox.run("blob = bytearray(10 * 1024 ** 3)\n", "assert len(blob) > 0", timeout_s=10)
    assert not r.passed and "MemoryError" in r.reason


async def test_writing_outside_the_directory_is_refused(sandbox, tmp_path):
    target = tmp_path / "escaped.txt"
    os.chmod(tmp_path, 0o777)  # even a world-writable directory outside the sandbox
    code = f"open({str(target)!r}, 'w').write('pwned')\n"
    r = await sandbox.run(code, "assert True", timeout_s=10)
    assert not r.passed and ("PermissionError" in r.reason or "No such file" in r.reason)
    assert not target.exists()
    here = await sandbox.run("open('mine.txt', 'w').write('ok')\n", "assert open('mine.txt').read() == 'ok'",
                             timeout_s=10)
    assert here.passed, "its own directory is writable"


async def test_a_big_file_hits_the_file_size_limit(sandbox):
    code = "open('big.bin', 'wb').write(b'x' * (64 * 1024 * 1024))\n"
    r = await sandbox.run(code, "assert True", timeout_s=10)
    assert not r.passed and "File too large" in r.reason, r.reason


async def test_environment_secrets_are_not_inherited(sandbox, monkeypatch):
    monkeypatch.setenv("PARETO_TEST_SECRET", "hunter2")
    code = "import os\nleaked = os.environ.get('PARETO_TEST_SECRET')\n"
    r = await sandbox.run(code, "assert leaked == 'hunter2', 'no secret: ' + repr(leaked)", timeout_s=10)
    assert not r.passed and "no secret: None" in r.reason
    proc = await sandbox.run("data = open('/proc/1/environ', 'rb').read()\n", "assert b'hunter2' in data", timeout_s=10)
    assert not proc.passed


async def test_sockets_reach_nothing(sandbox):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    accepted: list = []

    def accept() -> None:
        listener.settimeout(5)
        try:
            accepted.append(listener.accept())
        except OSError:
            pass

    t = threading.Thread(target=accept)
    t.start()
    code = f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\ns.sendall(b'hello')\n"
    r = await sandbox.run(code, "assert True", timeout_s=10)
    listener.close()
    t.join()
    assert not r.passed and ("unreachable" in r.reason or "not allowed" in r.reason or "refused" in r.reason), r.reason
    assert accepted == [], "the listener never saw a connection"


async def test_flooding_stdout_is_cut_off(sandbox):
    r = await sandbox.run("import os\nwhile True:\n    os.write(1, b'x' * 65536)\n", "assert True", timeout_s=10)
    assert not r.passed and r.status == "output_limit"


async def test_exiting_early_or_forging_results_does_not_pass(sandbox):
    r = await sandbox.run("import os\nos._exit(0)\n", "assert True", timeout_s=10)
    assert not r.passed and r.status == "crashed"
    forged = 'print(\'{"test": "x", "passed": true}\')\nprint(\'{"done": true}\')\nraise SystemExit(0)\n'
    f = await sandbox.run(forged, "assert True", timeout_s=10)
    assert not f.passed and "<candidate>" in f.reason


async def test_runs_in_parallel_do_not_block_the_event_loop():
    import asyncio

    sb = Sandbox(concurrency=2)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticker = asyncio.create_task(tick())
    results = await asyncio.gather(sb.run("while True: pass", "", timeout_s=1),
                                   sb.run("x = 1", "assert x == 1", timeout_s=5))
    ticker.cancel()
    assert results[0].status == "timeout" and results[1].passed
    assert ticks >= 20, "the loop kept running while a candidate spun"


async def test_the_proxys_own_directory_is_hidden(monkeypatch):
    """Traces and config live in the proxy's working directory: a candidate must not read them."""
    import shutil
    import tempfile

    sb = Sandbox()
    assert await sb.mode() in ("namespaces", "userns"), "hiding directories needs a mount namespace"
    home = Path(tempfile.mkdtemp(prefix=".sandbox-cwd-", dir=Path(__file__).parents[2]))
    try:
        os.chmod(home, 0o755)
        (home / "traces.jsonl").write_text("a secret prompt")
        os.chmod(home / "traces.jsonl", 0o644)
        monkeypatch.chdir(home)
        r = await sb.run(f"data = open({str(home / 'traces.jsonl')!r}).read()\n", "assert 'secret' in data", timeout_s=10)
        assert not r.passed and ("Permission" in r.reason or "No such file" in r.reason), r.reason
    finally:
        shutil.rmtree(home, ignore_errors=True)
