"""Shared benchmark plumbing: baseline virtualenvs, measured subprocesses, Markdown tables."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "bench" / "work"
PYTHON = ROOT / ".venv" / "bin" / "python"
TUNERY = ROOT / ".venv" / "bin" / "tunery"
DATA = ROOT.parent / "shared" / "data"
BASE_PYTHON = os.environ.get("BENCH_PYTHON", "python3.11")


def ensure_venv(name: str, *requirement_groups: list[str]) -> Path:
    """Create bench/work/<name> and pip-install each group in order, once (a marker file says done).

    Groups are installed one after another so that, e.g., `torch==2.13.0` lands before anything
    that depends on torch and can only be satisfied by the pinned version afterwards.
    """
    venv = WORK / name
    marker = venv / ".bench-installed"
    wanted = repr(requirement_groups)
    if marker.exists() and marker.read_text() == wanted:
        return venv / "bin" / "python"
    WORK.mkdir(parents=True, exist_ok=True)
    if not (venv / "bin" / "python").exists():
        print(f"[bench] creating {venv}", flush=True)
        subprocess.run([BASE_PYTHON, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    for group in requirement_groups:
        print(f"[bench] {name}: pip install {' '.join(group)}", flush=True)
        subprocess.run(pip + group, check=True)
    marker.write_text(wanted)
    return venv / "bin" / "python"


@dataclass
class Measured:
    """One measured subprocess: wall seconds, peak RSS of its whole process tree, its output."""

    wall_s: float
    peak_rss_mb: float
    returncode: int
    stdout: str
    stderr: str

    def check(self, what: str) -> "Measured":
        if self.returncode != 0:
            raise RuntimeError(f"{what} exited {self.returncode}:\n{self.stderr[-4000:]}\n{self.stdout[-2000:]}")
        return self


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def measure(cmd: list[str], *, cwd: Path | None = None, env: dict | None = None,
            stdin: str | None = None, interval: float = 0.02) -> Measured:
    """Run `cmd` and poll the RSS of its process tree every `interval` s; report the peak.

    Polling (not getrusage of children) so that the peak is this run's alone and covers the sum
    over every process it starts, not just the largest one.
    """
    full_env = {**os.environ, **(env or {})}
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL, text=True)
    ps = psutil.Process(proc.pid)
    peak = 0
    out: dict[str, str] = {}

    def pump() -> None:  # communicate() in a thread so the pipes never fill while we poll
        out["stdout"], out["stderr"] = proc.communicate(stdin)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    while proc.poll() is None:
        try:
            peak = max(peak, _tree_rss(ps))
        except psutil.NoSuchProcess:
            break
        time.sleep(interval)
    reader.join()
    wall = time.perf_counter() - started
    return Measured(wall, peak / 2**20, proc.returncode, out.get("stdout", ""), out.get("stderr", ""))


def table(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def load_note() -> str:
    """One line on how busy the machine was while measuring (other helpers share these cores)."""
    one, five, _ = os.getloadavg()
    return f"Load average at the end of the run: {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} cores."


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)
