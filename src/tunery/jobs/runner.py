"""Run one training job as a subprocess of the training engine and watch it.

The engine's contract (`python -m tunery.train --config CONFIG.json`): it appends JSON lines to
`OUT/events.jsonl` as it trains, writes `OUT/result.json` last on success, or `OUT/error.json`
(`{code, message, param}`) and exits 1. SIGTERM cancels (exit 130), SIGUSR1 checkpoints and
pauses (exit 75). This module knows nothing of HTTP or the database: the worker passes callbacks
that forward records and say which signal the job's current status asks for.

A subprocess, not a thread, so that a crash or an out-of-memory kill takes the job down and never
the server. A full disk fails the run with `disk_full` and a message that names no path, whether
it stopped the start (config.json), the trainer (a checkpoint, its events, its error report) or
only this side's bookkeeping (the events offset, which then just stays behind); the leftovers of
a checkpoint the trainer could not finish are removed, to give the space back.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from tunery.store.blobs import is_disk_full

log = logging.getLogger("tunery.jobs")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_PAUSED = 75
EXIT_CANCELLED = 130

# How long a signalled trainer gets to checkpoint/clean up before it is killed.
DEFAULT_GRACE_S = 60.0

DISK_FULL_ERROR = {
    "code": "disk_full",
    "message": "Training stopped because the disk holding Tunery's data folder is full (no space left on device). "
    "Free space, then create the job again.",
    "param": None,
}
# What a trainer that hit ENOSPC leaves in its report or log (torch's own writer says only
# "file write failed", so the free space is checked as well).
_FULL_MARKERS = ("No space left on device", "[Errno 28]", "Errno 122", "StorageFull", "database or disk is full")
_NEARLY_FULL_BYTES = 64 * 1024  # less than this left after a failed run: it filled the disk


@dataclass
class Outcome:
    """How a training run ended: `succeeded`, `failed`, `cancelled` or `paused`."""

    status: str
    returncode: int | None
    result: dict | None = None
    error: dict | None = None


@dataclass
class EventTail:
    """Reads complete new JSON lines from a growing `events.jsonl` (a partial last line waits)."""

    path: Path
    offset: int = 0
    bad_lines: list[str] = field(default_factory=list)

    def read(self, final: bool = False) -> list[dict]:
        """New records; `final` also takes an unterminated last line (the writer has exited)."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return []
        end = len(chunk) - 1 if final else chunk.rfind(b"\n")
        if end < 0:
            return []
        self.offset += end + 1
        records = []
        for line in chunk[: end + 1].splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                self.bad_lines.append(line.decode("utf-8", "replace")[:200])
                continue
            if isinstance(record, dict):
                records.append(record)
        return records


def _die_with_parent() -> None:
    # A worker killed outright (SIGKILL, power loss of its process) must not leave an orphan
    # trainer writing into a job folder that the next worker will resume from.
    os.setsid()  # a terminal's Ctrl-C reaches the server only; it decides to pause the job.
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass


class TrainingProcess:
    """One run of the training engine in `workdir` (config.json, train.log) writing into `out_dir`."""

    def __init__(
        self, workdir: Path, out_dir: Path, config: dict, command: Iterable[str] | None = None, env: dict[str, str] | None = None
    ):
        self.workdir = Path(workdir)
        self.out_dir = Path(out_dir)
        self.config = config
        self.command = list(command) if command is not None else [sys.executable, "-m", "tunery.train"]
        self.env = env  # extra environment (e.g. CUDA_VISIBLE_DEVICES of the job's GPU)
        self.config_path = self.workdir / "config.json"
        self.log_path = self.workdir / "train.log"
        self.offset_path = self.workdir / "events.offset"  # bytes of events.jsonl already forwarded
        self.events = EventTail(self.out_dir / "events.jsonl")
        self.proc: subprocess.Popen | None = None
        self.sent: int | None = None  # the last control signal sent
        self.sent_at = 0.0
        self.start_error: dict | None = None  # why the trainer could not even be started

    def start(self) -> None:
        """Start the trainer; on a full disk, record `disk_full` instead (`outcome()` reports it)."""
        try:
            self._start()
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            self.start_error = dict(DISK_FULL_ERROR)

    def _start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        # A resumed run appends to the same events file: skip what was already forwarded — and only
        # that: after a crash, lines the dead run wrote but nobody forwarded are still sent.
        try:
            self.events.offset = int(self.offset_path.read_text())
        except (FileNotFoundError, ValueError):
            self.events.offset = 0
        for stale in ("result.json", "error.json"):
            (self.out_dir / stale).unlink(missing_ok=True)
        self.config_path.write_text(json.dumps(self.config, indent=2))
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(
                [*self.command, "--config", str(self.config_path)],
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **self.env} if self.env else None,
                preexec_fn=_die_with_parent,
            )
        finally:
            log.close()
        try:
            (self.workdir / "train.pid").write_text(f"{self.proc.pid}\n")  # for operators (and tests) to find it
        except OSError as exc:
            if not is_disk_full(exc):
                raise

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def forwarded(self) -> None:
        """Record that every record read so far has been stored (call after forwarding them)."""
        tmp = self.offset_path.with_suffix(".tmp")
        try:
            tmp.write_text(str(self.events.offset))
            os.replace(tmp, self.offset_path)
        except OSError as exc:  # a full disk: the offset stays behind, so a resume re-sends, never loses
            if not is_disk_full(exc):
                raise
            tmp.unlink(missing_ok=True)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def send(self, sig: int) -> None:
        """Send a control signal once (SIGTERM cancel, SIGUSR1 pause); repeats are ignored."""
        if not self.alive() or self.sent == sig:
            return
        self.sent, self.sent_at = sig, time.monotonic()
        try:
            self.proc.send_signal(sig)
        except ProcessLookupError:
            pass

    def enforce_grace(self, grace_s: float) -> None:
        """Kill a trainer that ignored its control signal for longer than `grace_s`."""
        if self.sent is not None and self.alive() and time.monotonic() - self.sent_at > grace_s:
            self.proc.kill()

    def log_tail(self, n: int = 5) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except FileNotFoundError:
            return ""
        return " | ".join(line.strip() for line in lines[-n:] if line.strip())

    def outcome(self) -> Outcome:
        """Classify a finished run from its exit code and marker files."""
        if self.start_error is not None:
            return Outcome("failed", None, error=dict(self.start_error))
        rc = self.proc.returncode if self.proc else None
        result_path, error_path = self.out_dir / "result.json", self.out_dir / "error.json"
        if rc == EXIT_OK and result_path.exists():
            return Outcome("succeeded", rc, result=_read_json(result_path))
        if rc == EXIT_CANCELLED or (rc == -signal.SIGTERM and self.sent == signal.SIGTERM):
            return Outcome("cancelled", rc)
        # Paused, or signalled to pause before it had installed its handler (still loading): it
        # then resumes from its previous checkpoint, or from the start.
        if rc == EXIT_PAUSED or (rc == -signal.SIGUSR1 and self.sent == signal.SIGUSR1):
            return Outcome("paused", rc)
        error = _read_json(error_path) if error_path.exists() else None
        if self._ran_out_of_space(error):
            self._remove_partial_checkpoints()
            return Outcome("failed", rc, error=dict(DISK_FULL_ERROR))
        if error is not None or error_path.exists():
            error = error or {}
            return Outcome("failed", rc, error={
                "code": str(error.get("code") or "training_error"),
                "message": str(error.get("message") or "Training failed."),
                "param": error.get("param"),
            })
        return Outcome("failed", rc, error={"code": "training_process_died", "message": self._death_message(rc), "param": None})

    def _ran_out_of_space(self, error: dict | None) -> bool:
        """A failed run stopped by a full disk: its report or log says so, or hardly any space is left."""
        if self.proc is not None and self.proc.returncode is not None and self.proc.returncode < 0:
            return False  # killed by a signal (an operator, the OOM killer): not a write that failed
        if (error or {}).get("code") == "disk_full":
            return True
        text = f"{(error or {}).get('message', '')} {self.log_tail(20)}"
        if any(marker in text for marker in _FULL_MARKERS):
            return True
        try:
            return shutil.disk_usage(self.out_dir).free < _NEARLY_FULL_BYTES
        except OSError:
            return False

    def _remove_partial_checkpoints(self) -> None:
        # The trainer writes a checkpoint into `.tmp-*` and renames it when whole: what is left
        # is a write the disk could not take, and it holds the space the next job needs.
        for folder in (self.out_dir, self.out_dir / "checkpoints"):
            for partial in folder.glob(".tmp-*") if folder.is_dir() else ():
                shutil.rmtree(partial, ignore_errors=True)

    def _death_message(self, rc: int | None) -> str:
        if rc is not None and rc < 0:
            try:
                name = signal.Signals(-rc).name
            except ValueError:
                name = f"signal {-rc}"
            why = " (out of memory, or killed by an operator)" if -rc == signal.SIGKILL else ""
            msg = f"The training process was killed by {name}{why} before it finished."
        elif rc == EXIT_OK:
            msg = "The training process exited without writing its result."
        else:
            msg = f"The training process exited with code {rc} without an error report."
        # The log's last lines are the operator's (they name server paths and code): the server
        # log gets them, the job's error only says where they are.
        tail = self.log_tail(3)
        if tail:
            log.warning("training process in %s ended without a report: %s", self.workdir, tail)
            msg += " Its output is in the job's train.log on the server."
        return msg


def _read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


def watch(
    process: TrainingProcess,
    on_records: Callable[[list[dict]], None],
    wanted_signal: Callable[[], int | None],
    poll_s: float = 0.5,
    grace_s: float = DEFAULT_GRACE_S,
) -> Outcome:
    """Forward new event records while the process runs; send the signals the job's status asks
    for (checked every `poll_s`); return how it ended once every record has been forwarded."""
    while process.alive():
        records = process.events.read()
        if records:
            on_records(records)
            process.forwarded()
        sig = wanted_signal()
        if sig is not None:
            process.send(sig)
        process.enforce_grace(grace_s)
        try:
            process.proc.wait(timeout=poll_s)
        except subprocess.TimeoutExpired:
            pass
    records = process.events.read(final=True)
    if records:
        on_records(records)
        process.forwarded()
    return process.outcome()
