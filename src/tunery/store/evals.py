"""Tables of the Evals API: evals, their runs and the runs' output items.

Everything a run produces is a row here (an output item per data-source row, the run's counts
and usage), so a server restart loses nothing: the worker (`tunery.eval.run_worker`) resumes a
run that was `in_progress` from the first row that has no output item yet. Inline `file_content`
rows live in the run's `data_source` (they are echoed back anyway); `file_id` rows are read from
the file's blob when the run executes. Deleting an eval deletes its runs and their items
(ON DELETE CASCADE, and explicitly in `delete_eval` for databases without foreign keys).
"""

from __future__ import annotations

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, delete, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from tunery.store.db import Base, now

QUEUED, IN_PROGRESS, COMPLETED, FAILED, CANCELED = "queued", "in_progress", "completed", "failed", "canceled"
RUN_STATUSES = (QUEUED, IN_PROGRESS, COMPLETED, FAILED, CANCELED)
FINISHED = (COMPLETED, FAILED, CANCELED)


class EvalRecord(Base):
    __tablename__ = "evals"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    name: Mapped[str] = mapped_column(Text, default="")
    metadata_: Mapped[dict | None] = mapped_column("metadata", JSON, nullable=True)
    data_source_config: Mapped[dict] = mapped_column(JSON)  # as stored: {type: custom, schema}
    testing_criteria: Mapped[list] = mapped_column(JSON)  # normalized, each with its id
    created_at: Mapped[int] = mapped_column(Integer, default=now, index=True)
    updated_at: Mapped[int] = mapped_column(Integer, default=now, index=True)


class EvalRunRecord(Base):
    __tablename__ = "eval_runs"
    __table_args__ = (Index("ix_eval_runs_status_seq", "status", "seq"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    eval_id: Mapped[str] = mapped_column(ForeignKey("evals.id", ondelete="CASCADE"), index=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    name: Mapped[str] = mapped_column(Text, default="")
    model: Mapped[str | None] = mapped_column(String(512), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default=QUEUED)
    metadata_: Mapped[dict | None] = mapped_column("metadata", JSON, nullable=True)
    data_source: Mapped[dict] = mapped_column(JSON)
    error: Mapped[dict | None] = mapped_column(JSON, nullable=True)  # {code, message}
    result_counts: Mapped[dict] = mapped_column(JSON, default=lambda: {"total": 0, "errored": 0, "failed": 0, "passed": 0})
    per_model_usage: Mapped[list | None] = mapped_column(JSON, nullable=True)
    per_testing_criteria_results: Mapped[list | None] = mapped_column(JSON, nullable=True)
    report: Mapped[dict | None] = mapped_column(JSON, nullable=True)  # extra report sections (classification metrics)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # starts by a worker; > 1 means resumed
    created_at: Mapped[int] = mapped_column(Integer, default=now)
    updated_at: Mapped[int] = mapped_column(Integer, default=now)


class EvalOutputItemRecord(Base):
    __tablename__ = "eval_output_items"
    # One item per row of a run: a resumed run never writes a row twice.
    __table_args__ = (Index("ux_eval_output_items_run_row", "run_id", "datasource_item_id", unique=True),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("eval_runs.id", ondelete="CASCADE"), index=True)
    eval_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(8))  # pass | fail
    errored: Mapped[bool] = mapped_column(default=False)
    datasource_item_id: Mapped[int] = mapped_column(Integer)
    datasource_item: Mapped[dict] = mapped_column(JSON)
    results: Mapped[list] = mapped_column(JSON)
    sample: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[int] = mapped_column(Integer, default=now)


def get_eval(session: Session, project_id: str, eval_id: str) -> EvalRecord | None:
    return session.scalar(select(EvalRecord).where(EvalRecord.id == eval_id, EvalRecord.project_id == project_id))


def get_run(session: Session, project_id: str, eval_id: str, run_id: str) -> EvalRunRecord | None:
    return session.scalar(select(EvalRunRecord).where(
        EvalRunRecord.id == run_id, EvalRunRecord.eval_id == eval_id, EvalRunRecord.project_id == project_id))


def get_item(session: Session, run_id: str, item_id: str) -> EvalOutputItemRecord | None:
    return session.scalar(select(EvalOutputItemRecord).where(EvalOutputItemRecord.id == item_id, EvalOutputItemRecord.run_id == run_id))


def run_items(session: Session, run_id: str) -> list[EvalOutputItemRecord]:
    return list(session.scalars(select(EvalOutputItemRecord).where(EvalOutputItemRecord.run_id == run_id).order_by(EvalOutputItemRecord.datasource_item_id)))


def done_rows(session: Session, run_id: str) -> set[int]:
    return set(session.scalars(select(EvalOutputItemRecord.datasource_item_id).where(EvalOutputItemRecord.run_id == run_id)))


def delete_run(session: Session, run: EvalRunRecord) -> None:
    session.execute(delete(EvalOutputItemRecord).where(EvalOutputItemRecord.run_id == run.id))
    session.delete(run)


def delete_eval(session: Session, record: EvalRecord) -> None:
    for run in session.scalars(select(EvalRunRecord).where(EvalRunRecord.eval_id == record.id)):
        delete_run(session, run)
    session.delete(record)


# `report.executor` of a run that a process other than the server executes (`tunery eval` runs its own
# runs synchronously in the local home's database): the server's worker leaves those alone.
CLI_EXECUTOR = "cli"


def runs_to_work(session: Session) -> list[EvalRunRecord]:
    """Queued and interrupted runs, oldest first (first come, first served), but not the CLI's own."""
    stmt = select(EvalRunRecord).where(EvalRunRecord.status.in_((QUEUED, IN_PROGRESS))).order_by(EvalRunRecord.seq)
    return [r for r in session.scalars(stmt) if (r.report or {}).get("executor") != CLI_EXECUTOR]
