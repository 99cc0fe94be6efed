"""Run a python grader's `grade(sample, item)` over a batch in a child process, never in the server.

One child grades the whole batch (rows go in as one JSON document on stdin, results come back
one JSON line each), so a row costs a function call, not a process start. The child runs the
server's own interpreter with `-I` (no PYTHON* variables, no user site, no cwd on sys.path) but
with its installed packages, in an empty temporary directory, with a minimal environment,
resource limits, and, where `unshare` allows it, its own empty network namespace.

A row that hits the wall-clock limit, the memory limit or crashes the child gets a server error;
a fresh child then grades the rows after it, so one bad row does not zero the rest. A failure
before the source has loaded (module-level code) applies to every row, since a restart would
repeat it. See docs/graders.md `## python` for what this does and does not isolate.
"""

from __future__ import annotations

import functools
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHILD = str(Path(__file__).with_name("_sandbox_child.py"))
CPU_EXIT = 152  # _sandbox_child.CPU_EXIT (the child is run as a script, not imported)


@dataclass(frozen=True)
class Limits:
    timeout: float = 120.0  # wall-clock seconds per row, and for loading the source (OpenAI: 2 min)
    memory_bytes: int = 2 << 30  # RLIMIT_AS (OpenAI: 2 GB RAM)
    file_bytes: int = 100 << 20  # RLIMIT_FSIZE: the largest file the grader may write
    disk_bytes: int = 1 << 30  # the tmpfs work directory, with a mount namespace (OpenAI: 1 GB disk)
    open_files: int = 256  # RLIMIT_NOFILE
    processes: int = 32  # RLIMIT_NPROC, threads included; only applied inside a user namespace
    max_line_bytes: int = 64 << 10  # one result line; a longer one is an output_limit error
    use_namespaces: bool = True  # False forces the socket-patch fallback (tests use it)
    # Directories covered by an empty tmpfs in the child (with a mount namespace); None: Tunery's
    # home and data dir from the environment. Callers that know their settings should pass them.
    hidden_paths: tuple[str, ...] | None = None


@dataclass
class Outcome:
    value: float | None = None  # the returned number, unchecked beyond being a JSON number
    runtime_error: str | None = None  # the grader raised or returned a non-number: details
    server_error: str | None = None  # timeout, memory_limit, cpu_limit, crashed, ...


# Most isolation first. A user namespace (-r) works unprivileged where the kernel allows it and
# strips real-root capabilities when the server runs as root; a PID namespace (-p -f, with its own
# /proc) hides the server's processes, so the grader cannot signal them, and killing its pid 1
# kills every process the grader started; -n gives it no network but a down loopback.
_PID = ("--pid", "--fork", "--mount-proc", "--kill-child")
_NAMESPACE_FLAGS = (("-r", "-n", *_PID), ("-r", "-n"), ("-n", *_PID), ("-n",))


@functools.cache
def _namespace_prefix() -> tuple[str, ...] | None:
    """The first `unshare` command line in `_NAMESPACE_FLAGS` that starts the interpreter here, or
    None. Probed once per process, by actually starting it."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    for flags in _NAMESPACE_FLAGS:
        try:
            probe = subprocess.run([unshare, *flags, sys.executable, "-I", "-c", "pass"],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, timeout=20)
        except (OSError, subprocess.SubprocessError):
            continue
        if probe.returncode == 0:
            return (unshare, *flags)
    return None


def namespaces(limits: "Limits | None" = None) -> tuple[str, ...]:
    """The `unshare` flags the child runs under (empty: none, the socket patch applies)."""
    if limits is not None and not limits.use_namespaces:
        return ()
    prefix = _namespace_prefix()
    return prefix[1:] if prefix else ()


def network_isolation(limits: Limits = Limits()) -> str:
    """"namespace" (no network interface but a down loopback) or "socket_patch" (best effort)."""
    return "namespace" if namespaces(limits) else "socket_patch"


# Where unix sockets live (a socket can be connected through a read-only mount: a database's
# peer-authenticated socket, a container daemon's), and well-known credential directories.
_SOCKET_DIRS = ("/run", "/var/run", "/tmp", "/var/tmp")
_CREDENTIAL_DIRS = ("~/.ssh", "~/.aws", "~/.config", "~/.docker", "~/.cache/huggingface")


def default_hidden_paths() -> tuple[str, ...]:
    """TUNERY_HOME (or ~/.tunery) and TUNERY_DATA_DIR (the database, keys, files, models), the
    socket and credential directories above. A denylist, not exhaustive. Tunery's paths are read
    from the environment because graders may not import the settings module."""
    home = os.environ.get("TUNERY_HOME") or "~/.tunery"
    paths = [home, os.environ.get("TUNERY_DATA_DIR") or "", *_SOCKET_DIRS, *_CREDENTIAL_DIRS]
    unique = dict.fromkeys(os.path.realpath(os.path.expanduser(p)) for p in paths if p)
    return tuple(unique)


@functools.cache
def _environment_paths() -> tuple[str, ...]:
    """The directories the grader's Python itself needs: its prefixes, every directory on
    sys.path (site-packages, an editable install's source) and this package (the child script)."""
    paths = [sys.prefix, sys.base_prefix, sys.exec_prefix, str(Path(__file__).resolve().parent),
             *(p for p in sys.path if p and os.path.isdir(p))]
    return tuple(dict.fromkeys(os.path.realpath(p) for p in paths))


def hidden_paths(limits: Limits = Limits()) -> tuple[list[str], list[str]]:
    """(hidden, kept visible): a path to hide that holds the Python environment (a checkout or
    virtualenv under /tmp, say) stays visible, read-only, or the grader could not even import
    the standard library's site-packages; the caller logs what was kept."""
    wanted = default_hidden_paths() if limits.hidden_paths is None else limits.hidden_paths
    hidden, kept = [], []
    for path in dict.fromkeys(os.path.realpath(os.path.expanduser(p)) for p in wanted):
        inside = path.rstrip("/") + "/"
        needed = any(env == path or env.startswith(inside) for env in _environment_paths())
        (kept if needed else hidden).append(path)
    if kept:
        _warn_kept(tuple(kept))
    return hidden, kept


@functools.cache
def _warn_kept(kept: tuple[str, ...]) -> None:
    import logging

    logging.getLogger("tunery.graders").warning(
        "python graders: %s not hidden from graders because Tunery's Python environment is inside; "
        "install Tunery elsewhere to hide it", ", ".join(kept))


def readonly_filesystem(limits: Limits = Limits()) -> bool:
    """Whether the child sees every mount read-only, with a tmpfs work directory (see the child)."""
    flags = namespaces(limits)
    return "-r" in flags and "--mount-proc" in flags


def run_batch(source: str, pairs: list[tuple[Any, Any]], limits: Limits = Limits()) -> list[Outcome]:
    outcomes: list[Outcome] = []
    while len(outcomes) < len(pairs):
        outcomes.extend(_run_child(source, pairs[len(outcomes):], limits))
    return outcomes


def _env(work: str) -> dict[str, str]:
    # Nothing inherited: no TUNERY_*/OPENAI_* secrets, no HOME with config files. One BLAS
    # thread, so numpy stays within the process limit and does not take every core.
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": work, "TMPDIR": work,
            "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _run_child(source: str, pairs: list, limits: Limits) -> list[Outcome]:
    """Outcomes for a prefix of `pairs`, at least one; the caller restarts for the rest."""
    prefix = _namespace_prefix() if limits.use_namespaces else None
    cpu = int(limits.timeout * (len(pairs) + 1)) + 1  # a backstop: the wall clock is the real limit
    job = {"source": source, "pairs": [list(p) for p in pairs], "limits": {
        "memory_bytes": limits.memory_bytes, "cpu_seconds": cpu, "file_bytes": limits.file_bytes,
        "open_files": limits.open_files, "block_socket": prefix is None,
        # Needs a mount namespace owned by a user namespace: with real root the grader could undo it.
        "readonly_fs": readonly_filesystem(limits),
        "disk_bytes": limits.disk_bytes,
        "hidden_paths": hidden_paths(limits)[0],
        # RLIMIT_NPROC is only meaningful in a fresh user namespace (see the child).
        "processes": limits.processes if prefix and "-r" in prefix else None}}
    with tempfile.TemporaryDirectory(prefix="tunery-pygrader-", ignore_cleanup_errors=True) as work, \
            tempfile.TemporaryFile() as stdin:
        # An unlinked file, not a pipe: no deadlock on a large batch, and not visible in the cwd.
        stdin.write(json.dumps(job, default=str).encode())  # rows come from JSON; anything else as text
        stdin.seek(0)
        proc = subprocess.Popen([*(prefix or ()), sys.executable, "-I", CHILD], stdin=stdin,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=work,
                                env=_env(work), close_fds=True, start_new_session=True)
        try:
            return _collect(proc, len(pairs), limits)
        finally:
            _stop(proc, grace=0.0)
            proc.stdout.close()


def _collect(proc: subprocess.Popen, n: int, limits: Limits) -> list[Outcome]:
    lines = _LineReader(proc.stdout.fileno(), limits.max_line_bytes)
    out: list[Outcome] = []
    ready = False
    while len(out) < n:
        line, failure = lines.next(time.monotonic() + limits.timeout)
        msg = _parse(line) if line is not None else None
        if msg is None:
            kind = failure or ("protocol_error" if line is not None else _exit_kind(proc))
            if not ready:
                return [Outcome(server_error=kind) for _ in range(n)]
            return out + [Outcome(server_error=kind)]
        if not ready:
            if "load_error" in msg:
                return [Outcome(runtime_error=str(msg["load_error"])) for _ in range(n)]
            if "load_server" in msg:
                return [Outcome(server_error=str(msg["load_server"])) for _ in range(n)]
            ready = msg.get("ready") is True
            if not ready:
                return [Outcome(server_error="protocol_error") for _ in range(n)]
            continue
        if msg.get("i") != len(out):
            return out + [Outcome(server_error="protocol_error")]
        if "server" in msg:
            return out + [Outcome(server_error=str(msg["server"]))]
        if "value" in msg:
            out.append(Outcome(value=msg["value"]))
        else:
            out.append(Outcome(runtime_error=str(msg.get("runtime") or msg.get("bad") or "no result")))
    return out


def _parse(line: bytes) -> dict | None:
    try:
        msg = json.loads(line)
    except ValueError:
        return None
    return msg if isinstance(msg, dict) else None


def _exit_kind(proc: subprocess.Popen) -> str:
    """Why the child closed its output early, from how it ended."""
    rc = _stop(proc, grace=2.0)
    if rc == CPU_EXIT:
        return "cpu_limit"
    if rc is None or rc >= 0:
        return "crashed"
    return {signal.SIGXCPU: "cpu_limit", signal.SIGXFSZ: "file_size_limit",
            # SIGKILL that we did not send: the kernel's OOM killer is the usual sender.
            signal.SIGKILL: "memory_limit"}.get(-rc, "crashed")


def _stop(proc: subprocess.Popen, grace: float) -> int | None:
    """Kill the child's whole process group (its own children too) and reap it. The exit status,
    or None when it had not ended by itself within `grace` seconds."""
    if proc.returncode is not None:  # reaped already: its group id may belong to someone else now
        return proc.returncode
    end = time.monotonic() + grace
    ended = False
    while True:
        try:
            ended = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:  # already reaped
            ended = True
        if ended or time.monotonic() >= end:
            break
        time.sleep(0.01)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the leader is unreaped, so its group id is still ours
    except (ProcessLookupError, PermissionError):
        pass
    rc = proc.wait()
    return rc if ended else None


class _LineReader:
    """Lines from a pipe under a deadline and a length cap, without a thread."""

    def __init__(self, fd: int, max_line: int) -> None:
        self.fd, self.max_line, self.buf, self.eof = fd, max_line, b"", False

    def next(self, deadline: float) -> tuple[bytes | None, str | None]:
        """(line, None), or (None, "timeout" | "output_limit" | None at end of output)."""
        while b"\n" not in self.buf:
            if len(self.buf) > self.max_line:
                return None, "output_limit"
            if self.eof:
                return None, None
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                return None, "timeout"
            chunk = os.read(self.fd, 65536)
            self.eof = not chunk
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        if len(line) > self.max_line:
            return None, "output_limit"
        return line, None
