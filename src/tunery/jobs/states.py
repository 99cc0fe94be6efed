"""The fine-tuning job state machine: statuses and the transitions allowed between them.

    validating_files -> queued -> running -> succeeded | failed | cancelled
                                   running <-> paused (pause checkpoints and stops; resume re-queues)

A running job can also go back to `queued` when its worker stops (graceful shutdown checkpoints
it; a dead worker's job is found on the next start) so that it resumes from its last checkpoint.
"""

from __future__ import annotations

VALIDATING_FILES = "validating_files"
QUEUED = "queued"
RUNNING = "running"
PAUSED = "paused"
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "cancelled"

STATUSES = (VALIDATING_FILES, QUEUED, RUNNING, PAUSED, SUCCEEDED, FAILED, CANCELLED)
TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED})

TRANSITIONS: dict[str, frozenset[str]] = {
    VALIDATING_FILES: frozenset({QUEUED, FAILED, CANCELLED}),
    QUEUED: frozenset({RUNNING, CANCELLED, FAILED}),
    RUNNING: frozenset({SUCCEEDED, FAILED, CANCELLED, PAUSED, QUEUED}),
    # A run can finish (or fail) before the pause signal reaches it: the outcome wins.
    PAUSED: frozenset({QUEUED, CANCELLED, SUCCEEDED, FAILED}),
    SUCCEEDED: frozenset(),
    FAILED: frozenset(),
    CANCELLED: frozenset(),
}


def can_transition(src: str, dst: str) -> bool:
    return dst in TRANSITIONS.get(src, frozenset())


def sources_of(dst: str) -> frozenset[str]:
    """Every status from which `dst` may be reached."""
    return frozenset(src for src, dsts in TRANSITIONS.items() if dst in dsts)


def is_terminal(status: str) -> bool:
    return status in TERMINAL
