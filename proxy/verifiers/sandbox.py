"""Running untrusted candidate code: its own process, its own namespaces, hard limits.

`python_tests` runs code a model wrote against tests a client sent. Both are untrusted, and the
proxy may run as root, so nothing here trusts the child to behave::

    sandbox = Sandbox()
    result = await sandbox.run("def add(a, b): return a + b", "assert add(2, 2) == 4", timeout_s=5)
    result.passed, [t.name for t in result.tests], result.reason

How, and why each piece (the strongest mechanism the machine allows, probed once per instance):

* **Its own process**, started as an asyncio subprocess in a new session, so a hang or a crash
  never touches the proxy's event loop, and a wall-clock timeout kills the whole group.
* **Namespaces** (mode ``namespaces`` as root, ``userns`` otherwise): `unshare --mount --net
  --pid --fork --kill-child` (plus `--user --map-root-user` without root). The network
  namespace has only a downed loopback, so no socket reaches anything, in any language or
  system call; the pid namespace makes the child pid 1, so killing it kills every process it
  spawned, even ones that left the session; the mount namespace gets private tmpfs mounts over
  every world-writable directory, its own /proc, and sealed empty mounts over the proxy's
  working directory, /root and /home, so traces and config are out of reach (see
  `_sandbox_child.py`; `hide_paths` adds more, e.g. a traces directory elsewhere).
* **An unprivileged uid** (as root): root ignores RLIMIT_NPROC, so the child drops to a uid of
  its own (`uid_base + slot`, one per concurrent run, so runs cannot count against or signal
  each other) after setting its limits. Without root there is nobody to drop to: in ``userns``
  mode the process limit is then counted on the proxy's own user, and the candidate may write
  wherever that user may (outside the private /tmp).
* **Resource limits**: RLIMIT_AS (memory), RLIMIT_CPU, RLIMIT_NPROC, RLIMIT_FSIZE,
  RLIMIT_NOFILE, no core files; stdout is read up to a cap and the run is killed past it.
* **A scrubbed environment** (PATH, LANG, HOME only), so no secret of the proxy's is inherited,
  and an empty work directory as the current directory.
* Fallback (mode ``rlimits`` as root, ``weak`` otherwise) where `unshare` is missing or refused
  (a container without CAP_SYS_ADMIN, seccomp'd user namespaces): uid drop and limits as above,
  a fresh temporary directory made by the parent, and a Python audit hook that refuses sockets
  and ctypes. Audit hooks are not a security boundary; the mode is reported in every result and
  logged once, so an operator can see which isolation a deployment actually has.

seccomp filters would be the next layer; they are not available to plain Python here.
A candidate written to fool the grader in-process (reach into the runner's frames for the
nonce) is out of scope: the sandbox contains code, it does not referee adversarial tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

__all__ = ["Sandbox", "SandboxLimits", "SandboxResult", "TestResult"]

log = logging.getLogger("proxy.verifiers")

Mode = Literal["namespaces", "userns", "rlimits", "weak"]
_CHILD = Path(__file__).with_name("_sandbox_child.py")
_NS_FLAGS = ("--mount", "--net", "--pid", "--fork", "--kill-child")
_USER_FLAGS = ("--user", "--map-root-user")
#: the only variables the child sees
_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0"}


@dataclass(frozen=True, slots=True)
class SandboxLimits:
    """Per-run limits. `cpu_s` defaults to the wall-clock timeout rounded up, plus one."""

    memory_mb: int = 512
    processes: int = 32
    file_mb: int = 16
    open_files: int = 64
    tmpfs_mb: int = 64
    output_bytes: int = 256 * 1024


@dataclass(frozen=True, slots=True)
class TestResult:
    name: str
    passed: bool
    error: str | None = None
    line: int | None = None


@dataclass(slots=True)
class SandboxResult:
    """What one run did. `status`: ok (the runner finished), timeout, output_limit, crashed
    (exited without finishing: os._exit, a signal, the CPU limit), error (could not start)."""

    status: str
    tests: list[TestResult] = field(default_factory=list)
    mode: str = ""
    exit_code: int | None = None
    output: str = ""
    stderr: str = ""
    duration_s: float = 0.0
    uid: int | None = None

    @property
    def passed(self) -> bool:
        return self.status == "ok" and bool(self.tests) and all(t.passed for t in self.tests)

    @property
    def reason(self) -> str:
        """One line for a human or a model: why this run did not pass ("" if it did)."""
        if self.passed:
            return ""
        if self.status == "timeout":
            return f"the program did not finish within the time limit ({self.duration_s:.1f} s)"
        if self.status == "output_limit":
            return "the program wrote more output than allowed"
        if self.status == "error":
            return f"the sandbox could not run the program: {self.stderr[-300:]}"
        if self.status == "crashed":
            how = _signal_name(self.exit_code)
            return f"the program exited before the tests completed ({how})"
        failed = [t for t in self.tests if not t.passed]
        if not self.tests:
            return "no tests ran"
        first = failed[0]
        return f"{len(failed)} of {len(self.tests)} tests failed; {first.name}: {first.error}"


def _signal_name(code: int | None) -> str:
    if code is None:
        return "unknown exit"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    if code > 128:  # unshare reports a signalled child as 128 + signal
        try:
            return f"killed by {signal.Signals(code - 128).name}"
        except ValueError:
            pass
    return f"exit code {code}"


class Sandbox:
    """Runs code under the strongest isolation available (see the module docstring).

    One instance per app (it remembers the probed mode and hands out uid slots); `concurrency`
    runs at once, the rest wait. `mode` forces a mode (tests use it to attack the fallback too).
    """

    def __init__(self, limits: SandboxLimits | None = None, *, concurrency: int | None = None,
                 uid_base: int = 64000, mode: Mode | None = None, python: str | None = None,
                 hide_paths: tuple[str, ...] = ()) -> None:
        self.limits = limits or SandboxLimits()
        self.concurrency = concurrency or max(2, os.cpu_count() or 2)
        self.uid_base = uid_base
        self.python = python or sys.executable
        self.hide_paths = hide_paths
        self._mode: Mode | None = mode
        self._probe_lock: asyncio.Lock | None = None
        self._slots: asyncio.Queue[int] | None = None

    # -- mode ----------------------------------------------------------------------------------

    async def mode(self) -> Mode:
        """The isolation this machine allows, probed once (a trial `unshare ... true`)."""
        if self._mode is not None:
            return self._mode
        if self._probe_lock is None:
            self._probe_lock = asyncio.Lock()
        async with self._probe_lock:
            if self._mode is None:
                root = os.geteuid() == 0
                flags = _NS_FLAGS if root else (*_USER_FLAGS, *_NS_FLAGS)
                ok = await _try(["unshare", *flags, "true"]) if shutil.which("unshare") else False
                self._mode = ("namespaces" if root else "userns") if ok else ("rlimits" if root else "weak")
                level = logging.INFO if ok else logging.WARNING
                log.log(level, "sandbox isolation mode", extra={"mode": self._mode})
        return self._mode

    # -- running -------------------------------------------------------------------------------

    async def run(self, code: str, tests: str, *, timeout_s: float = 10.0) -> SandboxResult:
        """Run `code`, then `tests` (top-level asserts and `test_*` functions) against it."""
        mode = await self.mode()
        if self._slots is None:
            self._slots = asyncio.Queue()
            for i in range(self.concurrency):
                self._slots.put_nowait(i)
        slot = await self._slots.get()
        try:
            return await self._run(mode, slot, code, tests, timeout_s)
        finally:
            self._slots.put_nowait(slot)

    async def _run(self, mode: Mode, slot: int, code: str, tests: str, timeout_s: float) -> SandboxResult:
        root = os.geteuid() == 0
        uid = self.uid_base + slot if root else None
        lim = self.limits
        processes = lim.processes if root else _own_processes() + lim.processes
        workdir = None
        if mode in ("rlimits", "weak"):
            workdir = tempfile.mkdtemp(prefix="pareto-sandbox-")
            if uid is not None:
                os.chown(workdir, uid, uid)
        job = {
            "nonce": secrets.token_hex(16), "code": code, "tests": tests, "mode": mode,
            "network_isolated": mode in ("namespaces", "userns"), "workdir": workdir,
            "uid": uid, "gid": uid, "tmpfs_mb": lim.tmpfs_mb,
            "hide": [p for p in dict.fromkeys([os.getcwd(), "/root", "/home", *self.hide_paths])
                     if not _is_system(p)],
            "limits": {"memory_mb": lim.memory_mb, "cpu_s": math.ceil(timeout_s) + 1, "file_mb": lim.file_mb,
                       "open_files": lim.open_files, "processes": processes},
        }
        prefix: list[str] = []
        if mode == "namespaces":
            prefix = ["unshare", *_NS_FLAGS]
        elif mode == "userns":
            prefix = ["unshare", *_USER_FLAGS, *_NS_FLAGS]
        env = {**_ENV, "HOME": workdir or "/tmp"}
        start = time.monotonic()
        result = SandboxResult("error", mode=mode, uid=uid)
        try:
            proc = await asyncio.create_subprocess_exec(
                *prefix, self.python, "-I", "-S", str(_CHILD), stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd="/",
                start_new_session=True)
        except OSError as e:
            result.stderr = str(e)
            _cleanup(workdir)
            return result
        try:
            await self._drive(proc, job, timeout_s, result)
        finally:
            _kill_group(proc.pid)
            with contextlib.suppress(ProcessLookupError):
                await proc.wait()
            if uid is not None:
                await asyncio.to_thread(_kill_uid, uid)
            _cleanup(workdir)
            result.duration_s = time.monotonic() - start
        if result.status == "error" and proc.returncode is not None:
            result.exit_code = proc.returncode
        return result

    async def _drive(self, proc: asyncio.subprocess.Process, job: dict, timeout_s: float,
                     result: SandboxResult) -> None:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        nonce = job["nonce"]
        cap = self.limits.output_bytes
        state = {"done": False, "ready": False, "over": False}

        async def feed() -> None:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                proc.stdin.write(json.dumps(job).encode())
                await proc.stdin.drain()
                proc.stdin.close()

        async def read_out() -> None:
            seen = 0
            while True:
                try:
                    line = await proc.stdout.readuntil(b"\n")
                except asyncio.IncompleteReadError:
                    return
                except asyncio.LimitOverrunError:
                    state["over"] = True
                    return
                seen += len(line)
                if seen > cap:
                    state["over"] = True
                    return
                text = line.decode("utf-8", "replace")
                if not text.startswith(nonce + " "):
                    continue  # the candidate writing to fd 1 directly: not a result
                try:
                    msg = json.loads(text[len(nonce) + 1:])
                except ValueError:
                    continue
                if msg.get("ready"):
                    state["ready"] = True
                    result.uid = msg.get("uid", result.uid)
                elif msg.get("done"):
                    state["done"] = True
                    result.output = str(msg.get("output") or "")
                    return
                elif "test" in msg:
                    result.tests.append(TestResult(str(msg["test"]), bool(msg.get("passed")),
                                                   msg.get("error"), msg.get("line")))

        async def read_err() -> None:
            buf = b""
            while chunk := await proc.stderr.read(4096):
                buf = (buf + chunk)[-4096:]
            result.stderr = buf.decode("utf-8", "replace")

        err_task = asyncio.create_task(read_err())
        try:
            await asyncio.wait_for(asyncio.gather(feed(), read_out()), timeout_s)
        except TimeoutError:
            result.status = "timeout"
            return
        finally:
            if not state["done"]:
                _kill_group(proc.pid)
            # asyncio's wait() also waits for the pipes to close: drain what is left, discarding it
            drain = asyncio.create_task(_discard(proc.stdout))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 5)
            for t in (drain, err_task):
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await t
        if state["over"]:
            result.status = "output_limit"
        elif state["done"]:
            result.status = "ok"
        elif state["ready"]:
            result.status = "crashed"
            result.exit_code = proc.returncode
        else:
            result.status = "error"
            result.exit_code = proc.returncode


async def _discard(stream: asyncio.StreamReader) -> None:
    while await stream.read(65536):
        pass


async def _try(cmd: list[str]) -> bool:
    try:
        p = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.DEVNULL,
                                                 stderr=asyncio.subprocess.DEVNULL)
        return await asyncio.wait_for(p.wait(), 10) == 0
    except (OSError, TimeoutError):
        return False


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _kill_uid(uid: int) -> None:
    """Kill every process of the run's own uid: whatever escaped the process group (setsid)."""
    for _ in range(50):
        found = False
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/status", "rb") as f:
                    status = f.read()
            except OSError:
                continue
            if b"\nState:\tZ" in status:
                continue  # a zombie holds nothing and dies with its reaper
            for line in status.splitlines():
                if line.startswith(b"Uid:"):
                    if int(line.split()[1]) == uid:
                        found = True
                        with contextlib.suppress(ProcessLookupError, PermissionError):
                            os.kill(int(entry.name), signal.SIGKILL)
                    break
        if not found:
            return
        time.sleep(0.01)


def _own_processes() -> int:
    """Processes (and threads) of our uid: RLIMIT_NPROC counts them all, so a non-root limit
    must sit above what the proxy's user already runs."""
    me, count = os.getuid(), 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == me:
                    count += len(os.listdir(f"/proc/{entry.name}/task"))
            except OSError:
                continue
    return count


def _is_system(path: str) -> bool:
    """Directories never hidden: the root, /tmp (already private) and what programs run from."""
    real = os.path.realpath(path)
    system = ("/", "/tmp", "/usr", "/bin", "/sbin", "/lib", "/lib64", "/etc", "/proc", "/dev", "/sys", "/run", "/var")
    return real in system or os.path.realpath(sys.base_prefix).startswith(real.rstrip("/") + "/") and real != "/root"


def _cleanup(workdir: str | None) -> None:
    if workdir:
        shutil.rmtree(workdir, ignore_errors=True)
