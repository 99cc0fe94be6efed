"""Jobs in the database: create, look up, list, move between statuses, claim, record events.

Every status change is one conditional UPDATE (`... WHERE id = :id AND status IN (...)`): the
row count says whether this caller won, so two workers (threads or `tunery worker` processes on
other machines sharing the database) never claim the same job and a cancel never races a finish
into an impossible state. Plain SQL, no dialect tricks: SQLite and PostgreSQL run it the same.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tunery.jobs import states
from tunery.jobs.redact import hide_paths, hide_paths_in
from tunery.store.db import now
from tunery.store.ids import new_id
from tunery.store.jobs import Job, JobCheckpoint, JobEvent

MAX_ATTEMPTS = 3  # runs interrupted by dead workers before a job is failed instead of resumed


def new_job_id(legacy: bool = False) -> str:
    return new_id("ft-" if legacy else "ftjob-")


def get_job(session: Session, project_id: str, job_id: str, legacy: bool | None = None) -> Job | None:
    stmt = select(Job).where(Job.id == job_id, Job.project_id == project_id)
    if legacy is not None:
        stmt = stmt.where(Job.legacy.is_(legacy))
    return session.scalar(stmt)


def list_jobs(
    session: Session,
    project_id: str,
    *,
    legacy: bool = False,
    after: str | None = None,
    limit: int = 20,
    metadata: dict[str, str] | None = None,
) -> tuple[list[Job], bool]:
    """Newest first; `after` is the id of the last job of the previous page."""
    stmt = select(Job).where(Job.project_id == project_id, Job.legacy.is_(legacy))
    if after:
        cursor = get_job(session, project_id, after, legacy)
        if cursor is None:
            return [], False
        stmt = stmt.where(Job.seq < cursor.seq)
    stmt = stmt.order_by(Job.seq.desc())
    if not metadata:
        rows = list(session.scalars(stmt.limit(limit + 1)))
        return rows[:limit], len(rows) > limit
    # JSON containment is dialect-specific SQL; filtering the (small, per-project) rows here is not.
    rows = []
    for job in session.scalars(stmt.execution_options(yield_per=200)):
        if all((job.metadata_ or {}).get(k) == v for k, v in metadata.items()):
            rows.append(job)
            if len(rows) > limit:
                break
    return rows[:limit], len(rows) > limit


def transition(session: Session, job_id: str, dst: str, src: Iterable[str] | None = None, **values) -> bool:
    """Move `job_id` to `dst` if its status is one of `src` (default: every status allowed to
    reach `dst`); returns whether this call made the change."""
    sources = tuple(src) if src is not None else tuple(states.sources_of(dst))
    assert all(states.can_transition(s, dst) or s == dst for s in sources), (sources, dst)
    if dst in states.TERMINAL:
        values.setdefault("finished_at", now())
    _public_error(values)
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_(sources))
        .values(status=dst, updated_at=now(), **values)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def _public_error(values: dict) -> None:
    """`job.error` is served to clients: no server path in it (`tunery.jobs.redact`)."""
    if isinstance(values.get("error"), dict):
        values["error"] = hide_paths_in(values["error"])


def status_of(session: Session, job_id: str) -> str | None:
    return session.scalar(select(Job.status).where(Job.id == job_id))


def update_job(session: Session, job_id: str, **values) -> None:
    _public_error(values)
    session.execute(
        update(Job).where(Job.id == job_id).values(updated_at=now(), **values).execution_options(synchronize_session=False)
    )


def add_event(
    session: Session,
    job_id: str,
    message: str,
    *,
    level: str = "info",
    type: str = "message",
    data: dict | None = None,
    created_at: int | None = None,
) -> JobEvent:
    event = JobEvent(
        id=new_id("ftevent-"),
        job_id=job_id,
        created_at=created_at or now(),
        level=level,
        type=type,
        message=hide_paths(message),  # events are served to clients: no server path (`tunery.jobs.redact`)
        data=hide_paths_in(data or {}),
    )
    session.add(event)
    session.flush()
    return event


def list_events(session: Session, job_id: str, *, after: str | None = None, limit: int = 20) -> tuple[list[JobEvent], bool]:
    """Newest first; `after` is the id of the last event of the previous page."""
    stmt = select(JobEvent).where(JobEvent.job_id == job_id)
    if after:
        cursor = session.scalar(select(JobEvent.seq).where(JobEvent.id == after, JobEvent.job_id == job_id))
        if cursor is None:
            return [], False
        stmt = stmt.where(JobEvent.seq < cursor)
    rows = list(session.scalars(stmt.order_by(JobEvent.seq.desc()).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def events_since(session: Session, job_id: str, seq: int) -> list[JobEvent]:
    """Oldest first, every event after `seq` (for streaming)."""
    return list(session.scalars(select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.seq > seq).order_by(JobEvent.seq)))


def add_checkpoint(
    session: Session, job: Job, step: int, path: str, metrics: dict, epoch: int | None, model_name: str | None
) -> JobCheckpoint:
    existing = session.scalar(select(JobCheckpoint).where(JobCheckpoint.job_id == job.id, JobCheckpoint.step == step))
    if existing is not None:  # a resumed run may announce the checkpoint it resumed from again
        return existing
    checkpoint = JobCheckpoint(
        id=new_id("ftckpt_"),
        job_id=job.id,
        step=step,
        epoch=epoch,
        path=path,
        metrics=metrics,
        model_name=model_name,
        created_at=now(),
    )
    session.add(checkpoint)
    session.flush()
    return checkpoint


def forget_missing_checkpoints(session: Session, job_id: str) -> None:
    """Mark checkpoints whose folder the trainer has rotated away as deleted."""
    from pathlib import Path

    for ckpt in session.scalars(select(JobCheckpoint).where(JobCheckpoint.job_id == job_id, JobCheckpoint.deleted.is_(False))):
        if not Path(ckpt.path).exists():
            ckpt.deleted = True


def list_checkpoints(session: Session, job_id: str, *, after: str | None = None, limit: int = 10) -> tuple[list[JobCheckpoint], bool]:
    """Newest first, only checkpoints whose weights still exist."""
    stmt = select(JobCheckpoint).where(JobCheckpoint.job_id == job_id, JobCheckpoint.deleted.is_(False))
    if after:
        cursor = session.scalar(select(JobCheckpoint.seq).where(JobCheckpoint.id == after, JobCheckpoint.job_id == job_id))
        if cursor is None:
            return [], False
        stmt = stmt.where(JobCheckpoint.seq < cursor)
    rows = list(session.scalars(stmt.order_by(JobCheckpoint.seq.desc()).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


# --- the worker's side -------------------------------------------------------------------------


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{new_id('', 6)}"


def claim_next(session: Session, worker_id: str) -> Job | None:
    """Atomically take the oldest queued job nobody holds (first come, first served)."""
    candidates = session.scalars(
        select(Job.id).where(Job.status == states.QUEUED, Job.worker_id.is_(None)).order_by(Job.seq).limit(8)
    ).all()
    for job_id in candidates:
        won = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == states.QUEUED, Job.worker_id.is_(None))
            .values(
                status=states.RUNNING,
                worker_id=worker_id,
                heartbeat_at=now(),
                started_at=now(),
                updated_at=now(),
                attempts=Job.attempts + 1,
            )
            .execution_options(synchronize_session=False)
        ).rowcount
        if won == 1:
            session.flush()
            return session.scalar(select(Job).where(Job.id == job_id).execution_options(populate_existing=True))
    return None


def heartbeat(session: Session, job_id: str, worker_id: str) -> None:
    session.execute(
        update(Job).where(Job.id == job_id, Job.worker_id == worker_id).values(heartbeat_at=now())
        .execution_options(synchronize_session=False)
    )


def _worker_is_dead(worker_id: str | None, heartbeat_at: int | None, stale_after_s: int) -> bool:
    if heartbeat_at is None or now() - heartbeat_at > stale_after_s:
        return True
    host, _, rest = (worker_id or "").partition(":")
    pid = rest.partition(":")[0]
    if host == socket.gethostname() and pid.isdigit() and int(pid) != os.getpid():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True  # same machine, process gone: no need to wait for the heartbeat to age
        except PermissionError:
            return False
    return False


def recover_orphans(session: Session, stale_after_s: int) -> list[tuple[str, str]]:
    """Jobs held by dead workers: re-queue them to resume from their last checkpoint, or fail
    them after MAX_ATTEMPTS interrupted runs. Returns [(job_id, new status)]."""
    held = session.execute(
        select(Job.id, Job.status, Job.worker_id, Job.heartbeat_at, Job.attempts).where(
            Job.worker_id.is_not(None), Job.status.in_((states.RUNNING, states.PAUSED, states.CANCELLED, states.QUEUED))
        )
    ).all()
    out = []
    for job_id, status, worker_id, beat, attempts in held:
        if not _worker_is_dead(worker_id, beat, stale_after_s):
            continue
        if status != states.RUNNING:  # paused/cancelled/resumed while its worker died: just release it
            session.execute(
                update(Job).where(Job.id == job_id, Job.worker_id == worker_id).values(worker_id=None, resume=True)
                .execution_options(synchronize_session=False)
            )
            continue
        if attempts >= MAX_ATTEMPTS:
            message = f"The job's worker stopped {attempts} times while training it; giving up instead of resuming again."
            if transition(session, job_id, states.FAILED, [states.RUNNING], worker_id=None,
                          error={"code": "worker_lost", "message": message, "param": None}):
                add_event(session, job_id, message, level="error")
                out.append((job_id, states.FAILED))
        elif transition(session, job_id, states.QUEUED, [states.RUNNING], worker_id=None, resume=True):
            add_event(session, job_id, "The worker running this job stopped; the job is queued to resume from its last checkpoint.",
                      level="warn")
            out.append((job_id, states.QUEUED))
    return out
