"""The child side of the python-grader sandbox: run as a script by `tunery.graders.sandbox`,
never imported by the server. Stdlib only, because `-I` keeps the server's packages importable
but this file must not depend on Tunery being importable in the child.

Protocol: stdin is one JSON object `{"source", "limits", "pairs": [[sample, item], ...]}`; the
results go, one JSON line each, to a private duplicate of fd 1. The grader's own stdout and
stderr are pointed at /dev/null so a `print` cannot forge or corrupt a result line.
"""

import ctypes
import json
import linecache
import numbers
import os
import resource
import signal
import sys
import traceback

FILENAME = "<grader>"
MAX_DETAILS = 2000
CPU_EXIT = 152  # the exit status that says "CPU limit"; sandbox.py maps it back


def _cpu_exceeded(signum, frame):
    # A handler, because as pid 1 of a PID namespace the child ignores a default-action SIGXCPU.
    os._exit(CPU_EXIT)


def _limit(name, value):
    resource.setrlimit(getattr(resource, name), (value, value))


def _set_limits(limits):
    # Set here rather than in a `preexec_fn`: the server has threads, and Python documents
    # preexec_fn as unsafe (it can deadlock) in a threaded parent. This code runs before any
    # grader code, and the hard limits are lowered too, so the grader cannot raise them.
    _limit("RLIMIT_AS", limits["memory_bytes"])
    # SIGXCPU at the soft limit, SIGKILL one second later at the hard one (if the grader ignores it).
    resource.setrlimit(resource.RLIMIT_CPU, (limits["cpu_seconds"], limits["cpu_seconds"] + 1))
    signal.signal(signal.SIGXCPU, _cpu_exceeded)
    _limit("RLIMIT_FSIZE", limits["file_bytes"])
    _limit("RLIMIT_CORE", 0)
    _limit("RLIMIT_NOFILE", limits["open_files"])
    if limits.get("processes"):
        # Only in a fresh user namespace, where the kernel counts the processes of that
        # namespace; outside one, RLIMIT_NPROC counts every process and thread of the server's
        # user, so a small number would refuse the sandbox's own threads at random.
        _limit("RLIMIT_NPROC", limits["processes"])


# <sys/mount.h> and <sched.h>
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_BIND = 1, 2, 4, 8, 32, 4096
_KEPT = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC, "noatime": 1024,
         "nodiratime": 2048, "relatime": 1 << 21, "strictatime": 1 << 24}
CLONE_NEWNS, CLONE_NEWUSER = 0x00020000, 0x10000000


def _unescape(path):
    # mountinfo writes space, tab, newline and backslash in octal (\040 ...)
    return path.encode().decode("unicode_escape").encode("latin-1")


def _readonly_filesystem(work, disk_bytes, hidden):
    """In the child's own mount namespace (user namespace root): every mount read-only, an empty
    read-only tmpfs over each `hidden` directory, an empty tmpfs of `disk_bytes` as the work
    directory, then a nested user + mount namespace, in which the kernel locks those mounts, so
    the grader can neither remount them writable nor unmount what hides the server's data."""
    libc = ctypes.CDLL(None, use_errno=True)

    def call(rc, what):
        if rc != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")

    with open("/proc/self/mountinfo") as f:
        mounts = [(line.split()[4], line.split()[5].split(",")) for line in f]
    for point, options in mounts:
        if point == "/proc" or point.startswith("/proc/"):
            continue  # the namespace's own /proc, needed below for the id maps; sysctls stay root-only
        flags = MS_BIND | MS_REMOUNT | MS_RDONLY | sum(_KEPT[o] for o in options if o in _KEPT)
        call(libc.mount(None, _unescape(point), None, flags, None), f"read-only {point}")
    sealed = MS_NOSUID | MS_NODEV | MS_NOEXEC
    for path in hidden:
        if not os.path.isdir(path):
            continue
        call(libc.mount(b"tmpfs", path.encode(), b"tmpfs", sealed, b"size=65536,mode=0755"), f"hide {path}")
        if work.startswith(path.rstrip("/") + "/"):
            os.makedirs(work, mode=0o700, exist_ok=True)  # the work dir's mount point, inside the cover
        call(libc.mount(None, path.encode(), None, MS_REMOUNT | MS_RDONLY | sealed, None), f"seal {path}")
    size = f"size={disk_bytes},mode=0700".encode()
    call(libc.mount(b"tmpfs", work.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, size), "tmpfs work dir")
    os.chdir(work)
    call(libc.unshare(CLONE_NEWUSER | CLONE_NEWNS), "nested namespace")
    for name, text in (("setgroups", "deny"), ("uid_map", "0 0 1"), ("gid_map", "0 0 1")):
        with open(f"/proc/self/{name}", "w") as f:
            f.write(text)


def _block_network():
    """Best effort only, used where no network namespace could be made: grader code can still
    reach the `_socket` C module, ctypes or a subprocess. This is not isolation."""
    import socket

    def refused(*args, **kwargs):
        raise OSError("network access is disabled in the python grader")

    for name in ("socket", "create_connection", "create_server", "getaddrinfo", "socketpair", "fromfd"):
        setattr(socket, name, refused)


def _details(exc):
    """The traceback's last lines, with only the grader's own frames (no server paths)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == FILENAME]
    lines = traceback.format_list(frames[-3:]) + traceback.format_exception_only(type(exc), exc)
    text = "".join(lines).rstrip()
    return text[-MAX_DETAILS:]


def _value(result):
    """The JSON for a returned value; the server checks it again (this side is not trusted)."""
    if isinstance(result, bool) or not isinstance(result, numbers.Real):
        kind = type(result).__name__
        return {"bad": f"grade must return a float, got {kind}: {repr(result)[:200]}"}
    try:
        return {"value": float(result)}
    except (OverflowError, ValueError, TypeError) as exc:
        return {"bad": f"grade returned a number that is not a float: {exc}"[:MAX_DETAILS]}


def main():
    proto = os.fdopen(os.dup(1), "w", encoding="utf-8")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)

    def emit(obj):
        proto.write(json.dumps(obj) + "\n")
        proto.flush()

    job = json.load(sys.stdin)
    sys.dont_write_bytecode = True  # imports must not write __pycache__ into the server's tree
    if job["limits"].get("readonly_fs"):
        try:
            limits = job["limits"]
            _readonly_filesystem(os.getcwd(), limits["disk_bytes"], limits["hidden_paths"])
        except OSError as exc:  # loud, not a silently weaker sandbox
            emit({"load_server": f"sandbox_setup_failed: {exc.strerror}"[:MAX_DETAILS]})
            return
    _set_limits(job["limits"])
    if job["limits"].get("block_socket"):
        _block_network()
    source = job["source"]
    linecache.cache[FILENAME] = (len(source), None, source.splitlines(True), FILENAME)
    namespace = {"__name__": "grader", "__builtins__": __builtins__}
    try:
        exec(compile(source, FILENAME, "exec"), namespace)
        grade = namespace["grade"]
    except MemoryError:
        emit({"load_server": "memory_limit"})
        return
    except BaseException as exc:  # the grader's module code may raise anything, SystemExit too
        emit({"load_error": _details(exc)})
        return
    emit({"ready": True})
    for i, (sample, item) in enumerate(job["pairs"]):
        try:
            out = _value(grade(sample, item))
        except MemoryError:
            # The interpreter may be in a bad state: report and stop; the server restarts a
            # fresh child for the rows after this one.
            emit({"i": i, "server": "memory_limit"})
            os._exit(3)
        except BaseException as exc:
            out = {"runtime": _details(exc)}
        out["i"] = i
        emit(out)


if __name__ == "__main__":
    main()
