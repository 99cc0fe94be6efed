"""Tables of fine-tuning jobs, their events and their checkpoints.

Legacy `/v1/fine-tunes` jobs are rows of the same table (`legacy=True`, ids `ft-…`): one queue,
one worker, two wire shapes. Each table has an integer `seq` primary key (portable
autoincrement on SQLite and PostgreSQL) that gives a total order: queue order (first come, first
served), newest-first listings and cursors. Public ids are unique strings beside it.
"""

from __future__ import annotations

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from tunery.store.db import Base, now


class Job(Base):
    __tablename__ = "fine_tuning_jobs"
    # A model name is looked up within its project on every request that names it
    # (`tunery.store.catalog`); `Database.create_all` adds this index to existing databases too.
    __table_args__ = (Index("ix_fine_tuning_jobs_model_project", "fine_tuned_model", "project_id"),)

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    legacy: Mapped[bool] = mapped_column(Boolean, default=False)
    model: Mapped[str] = mapped_column(String(256))  # as the client named it ("gpt-4o-mini", "curie")
    training_file: Mapped[str] = mapped_column(String(64))
    validation_file: Mapped[str | None] = mapped_column(String(64), nullable=True)
    suffix: Mapped[str | None] = mapped_column(String(64), nullable=True)
    seed: Mapped[int] = mapped_column(Integer)
    metadata_: Mapped[dict | None] = mapped_column("metadata", JSON, nullable=True)
    method: Mapped[dict] = mapped_column(JSON)  # {"type": "supervised", "supervised": {"hyperparameters": {...}}}
    hyperparameters: Mapped[dict] = mapped_column(JSON)  # requested, then resolved once training starts
    options: Mapped[dict] = mapped_column(JSON, default=dict)  # prompt_loss_weight, max_steps, legacy extras
    status: Mapped[str] = mapped_column(String(32), index=True)
    error: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    fine_tuned_model: Mapped[str | None] = mapped_column(String(512), nullable=True, index=True)
    model_deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    weights_path: Mapped[str | None] = mapped_column(Text, nullable=True)  # adapter/ or model/ folder
    base_model_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    result_files: Mapped[list] = mapped_column(JSON, default=list)
    trained_tokens: Mapped[int | None] = mapped_column(Integer, nullable=True)
    n_examples: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[int] = mapped_column(Integer, default=now)
    updated_at: Mapped[int] = mapped_column(Integer, default=now)
    started_at: Mapped[int | None] = mapped_column(Integer, nullable=True)
    finished_at: Mapped[int | None] = mapped_column(Integer, nullable=True)
    estimated_finish: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Worker bookkeeping: who runs it, when it last said so, and whether the next run resumes.
    worker_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    heartbeat_at: Mapped[int | None] = mapped_column(Integer, nullable=True)
    resume: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)


class JobEvent(Base):
    __tablename__ = "fine_tuning_job_events"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("fine_tuning_jobs.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[int] = mapped_column(Integer, default=now)
    level: Mapped[str] = mapped_column(String(8), default="info")
    type: Mapped[str] = mapped_column(String(16), default="message")
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict] = mapped_column(JSON, default=dict)


class JobCheckpoint(Base):
    __tablename__ = "fine_tuning_job_checkpoints"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("fine_tuning_jobs.id", ondelete="CASCADE"), index=True)
    step: Mapped[int] = mapped_column(Integer)
    epoch: Mapped[int | None] = mapped_column(Integer, nullable=True)
    path: Mapped[str] = mapped_column(Text)  # absolute path of the checkpoint folder
    metrics: Mapped[dict] = mapped_column(JSON, default=dict)
    model_name: Mapped[str | None] = mapped_column(String(512), nullable=True, index=True)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[int] = mapped_column(Integer, default=now)
