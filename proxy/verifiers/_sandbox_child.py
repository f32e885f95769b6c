"""The process that runs a candidate's code inside the sandbox (see `sandbox.py`).

Started as ``python -I -S _sandbox_child.py`` (isolated, no site-packages: stdlib only), usually
as pid 1 of fresh mount, network and pid namespaces made by `unshare`. It reads one JSON job on
stdin, locks itself down, then runs the candidate and the tests in-process and prints one line
per result, each prefixed with the job's nonce so that whatever the candidate prints cannot pass
for a result.

Locking down, in this order (each step needs the privilege the next one drops):

1. with root (real, or root of a user namespace) and namespaces: a private tmpfs over every
   world-writable directory (/tmp, /var/tmp, /dev/shm, /run/lock) and a fresh /proc, so files
   written "outside" vanish with the namespace and host processes are invisible; sealed empty
   mounts over the proxy's working directory, /root and /home (traces and config stay out of
   reach); the work directory is an empty directory on the private /tmp;
2. resource limits: address space, CPU seconds, processes, file size, open files, no core dumps;
3. drop to the job's unprivileged uid/gid (real root only; root ignores RLIMIT_NPROC), and
   PR_SET_NO_NEW_PRIVS so no setuid binary can climb back;
4. without a network namespace: an audit hook that refuses sockets (and ctypes, which could
   make the system calls directly). Audit hooks are not a security boundary, which is why the
   network namespace comes first whenever the machine allows it.

This file imports nothing from the proxy: it runs under a bare interpreter.
"""

import ctypes
import io
import json
import os
import resource
import sys
import traceback

_MAX_OUTPUT = 4000
_MAX_ERROR = 1500


class _Bounded(io.StringIO):
    """stdout/stderr of the candidate: keeps the last `_MAX_OUTPUT` characters only."""

    def write(self, s):  # noqa: D102
        n = super().write(s)
        if self.tell() > 4 * _MAX_OUTPUT:
            tail = self.getvalue()[-_MAX_OUTPUT:]
            self.seek(0)
            self.truncate()
            super().write(tail)
        return n


def _libc():
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _private_dirs(libc, job):
    """Private tmpfs mounts and /proc; returns the work directory (or None if mounting failed)."""
    size = "size=%dm,mode=1777" % job["tmpfs_mb"]
    ok = libc.mount(b"tmpfs", b"/tmp", b"tmpfs", 0, size.encode()) == 0
    if not ok:
        return None
    for d in (b"/var/tmp", b"/dev/shm", b"/run/lock"):
        if os.path.isdir(d):
            libc.mount(b"tmpfs", d, b"tmpfs", 0, b"size=1m,mode=1777")
    libc.mount(b"proc", b"/proc", b"proc", 0, None)  # host processes out of sight; best effort
    _expose_stdlib(libc)
    for path in job.get("hide") or ():  # the proxy's own files (traces, config): empty and sealed
        if os.path.isdir(path) and os.path.realpath(path) not in ("/", "/tmp"):
            libc.mount(b"tmpfs", os.fsencode(path), b"tmpfs", 0, b"size=1m,mode=000")
    work = "/tmp/work"
    os.mkdir(work, 0o700)
    return work


def _expose_stdlib(libc):
    """Bind the interpreter's prefix at /tmp/.python and point sys.path there: the uid we drop to
    may not traverse the real prefix (pyenv under /root is 0700), and candidates import stdlib."""
    prefix = sys.base_prefix
    target = "/tmp/.python"
    os.mkdir(target, 0o755)
    if libc.mount(prefix.encode(), target.encode(), None, 4096, None) != 0:  # MS_BIND
        return
    def moved(paths):
        return [target + p[len(prefix):] if p.startswith(prefix) else p for p in paths]

    sys.path[:] = moved(sys.path)
    for module in list(sys.modules.values()):  # packages already imported (encodings) find submodules there too
        path = getattr(module, "__path__", None)
        if isinstance(path, list):
            path[:] = moved(path)
    sys.path_importer_cache.clear()


#: imported before the privilege drop where the stdlib could not be exposed by a bind mount
_COMMON = ("math", "cmath", "itertools", "functools", "collections", "heapq", "bisect", "re", "string",
           "random", "json", "copy", "operator", "typing", "dataclasses", "fractions", "decimal",
           "statistics", "datetime", "unittest", "enum", "abc", "array", "struct", "textwrap", "socket",
           "encodings.idna")


def _preimport():
    for name in _COMMON:
        try:
            __import__(name)
        except ImportError:
            pass


def _limits(job):
    lim = job["limits"]
    mb = 1024 * 1024
    pairs = [
        (resource.RLIMIT_AS, lim["memory_mb"] * mb),
        (resource.RLIMIT_CPU, lim["cpu_s"]),
        (resource.RLIMIT_FSIZE, lim["file_mb"] * mb),
        (resource.RLIMIT_NOFILE, lim["open_files"]),
        (resource.RLIMIT_CORE, 0),
        (resource.RLIMIT_NPROC, lim["processes"]),
    ]
    for which, value in pairs:
        soft, hard = resource.getrlimit(which)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        cpu_hard = value + 1 if which == resource.RLIMIT_CPU else value  # SIGXCPU first, then SIGKILL
        resource.setrlimit(which, (value, cpu_hard))


def _drop(job, workdir):
    uid, gid = job.get("uid"), job.get("gid")
    if os.geteuid() == 0 and uid is not None:
        os.chown(workdir, uid, gid)
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)


def _no_new_privs(libc):
    if libc is not None:
        libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS


def _refuse_network(workdir):
    """The fallback's guard: no sockets, no ctypes, no writing outside the work directory."""
    blocked = ("socket.", "ctypes.")
    inside = os.path.realpath(workdir) + os.sep

    def hook(event, args):
        if event.startswith(blocked):
            raise PermissionError("network access is not allowed in the sandbox (%s)" % event)
        if event == "open" and args and isinstance(args[0], (str, bytes)):
            mode, flags = args[1], args[2] if len(args) > 2 else 0
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (flags or 0) & 3
            path = os.fsdecode(args[0])
            if writing and not os.path.realpath(path).startswith(inside):
                raise PermissionError("writing outside the sandbox directory is not allowed: %s" % path)

    sys.addaudithook(hook)


def _short(exc):
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return text[:_MAX_ERROR]


def _where(exc, filename):
    """The line of `filename` (<tests> or <candidate>) where `exc` was raised, for feedback."""
    tb = exc.__traceback__
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def main():
    job = json.loads(sys.stdin.buffer.read())
    nonce = job["nonce"]
    out = os.fdopen(os.dup(1), "w", buffering=1)

    def emit(obj):
        out.write(nonce + " " + json.dumps(obj) + "\n")
        out.flush()

    libc = _libc()
    workdir = None
    if job["mode"] in ("namespaces", "userns") and libc is not None:
        workdir = _private_dirs(libc, job)
    if workdir is None:
        workdir = job["workdir"]
        _preimport()
    _limits(job)
    _drop(job, workdir)
    _no_new_privs(libc)
    os.chdir(workdir)
    os.umask(0o077)
    if not job["network_isolated"]:
        _refuse_network(workdir)
    emit({"ready": True, "uid": os.getuid(), "cwd": os.getcwd()})

    captured = _Bounded()
    sys.stdout = sys.stderr = captured
    sys.stdin = io.StringIO("")
    module = type(sys)("solution")
    module.__dict__["__name__"] = "solution"
    for alias in ("solution", "candidate"):
        sys.modules[alias] = module
    ns = module.__dict__
    try:
        exec(compile(job["code"], "<candidate>", "exec"), ns)
    except BaseException as exc:  # SystemExit, MemoryError, KeyboardInterrupt: all a failed candidate
        emit({"test": "<candidate>", "passed": False, "error": _short(exc), "line": _where(exc, "<candidate>")})
        emit({"done": True, "output": captured.getvalue()[-_MAX_OUTPUT:]})
        return
    before = set(ns)
    try:
        exec(compile(job["tests"], "<tests>", "exec"), ns)
        module_ok, module_error = True, None
    except BaseException as exc:
        module_ok, module_error = False, exc
    tests = [(name, fn) for name, fn in list(ns.items())
             if name.startswith("test") and callable(fn) and (name not in before or ns.get(name) is not fn)
             and getattr(getattr(fn, "__code__", None), "co_filename", None) == "<tests>"]
    if not module_ok:
        emit({"test": "<module>", "passed": False, "error": _short(module_error),
              "line": _where(module_error, "<tests>")})
    elif not tests:
        emit({"test": "<module>", "passed": True})  # assert-only tests: they all ran at import
    for name, fn in tests if module_ok else ():
        try:
            fn()
            emit({"test": name, "passed": True})
        except BaseException as exc:
            emit({"test": name, "passed": False, "error": _short(exc), "line": _where(exc, "<tests>")})
    emit({"done": True, "output": captured.getvalue()[-_MAX_OUTPUT:]})


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown: candidate atexit handlers and threads do not get a say
