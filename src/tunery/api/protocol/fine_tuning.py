"""Fine-tuning job objects (`/v1/fine_tuning/jobs`): jobs, events, checkpoints, the create request."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tunery.api.protocol.common import RequestModel

from tunery.store.jobs import Job, JobCheckpoint, JobEvent


class CreateFineTuningJobRequest(RequestModel):
    # Values are checked by `tunery.jobs.create` so every error names its exact `param`.
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    training_file: str = Field(min_length=1)
    validation_file: str | None = None
    suffix: Any = None
    seed: Any = None
    metadata: Any = None
    method: Any = None
    hyperparameters: Any = None
    integrations: list[dict] | None = None


class JobError(BaseModel):
    code: str
    message: str
    param: str | None = None


class FineTuningJob(BaseModel):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    error: JobError | None = None
    fine_tuned_model: str | None = None
    finished_at: int | None = None
    hyperparameters: dict[str, Any]
    model: str
    organization_id: str
    result_files: list[str]
    status: str
    trained_tokens: int | None = None
    training_file: str
    validation_file: str | None = None
    integrations: list[dict] | None = None
    seed: int
    estimated_finish: int | None = None
    method: dict[str, Any]
    metadata: dict[str, str] | None = None

    @classmethod
    def of(cls, job: Job) -> "FineTuningJob":
        return cls(
            id=job.id,
            created_at=job.created_at,
            error=JobError(**job.error) if job.error else None,
            fine_tuned_model=job.fine_tuned_model,
            finished_at=job.finished_at,
            hyperparameters=job.hyperparameters,
            model=job.model,
            organization_id=job.project_id,
            result_files=list(job.result_files or []),
            status=job.status,
            trained_tokens=job.trained_tokens,
            training_file=job.training_file,
            validation_file=job.validation_file,
            seed=job.seed,
            estimated_finish=job.estimated_finish,
            method=job.method,
            metadata=job.metadata_,
        )


class FineTuningJobEvent(BaseModel):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: Literal["info", "warn", "error"]
    message: str
    type: Literal["message", "metrics"]
    data: dict[str, Any]

    @classmethod
    def of(cls, event: JobEvent) -> "FineTuningJobEvent":
        return cls(id=event.id, created_at=event.created_at, level=event.level, message=event.message,
                   type=event.type, data=event.data or {})


class FineTuningJobCheckpoint(BaseModel):
    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    step_number: int
    metrics: dict[str, float]

    @classmethod
    def of(cls, ckpt: JobCheckpoint) -> "FineTuningJobCheckpoint":
        metrics = {"step": float(ckpt.step)}
        metrics.update({k: float(v) for k, v in (ckpt.metrics or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
        return cls(id=ckpt.id, created_at=ckpt.created_at, fine_tuned_model_checkpoint=ckpt.model_name or "",
                   fine_tuning_job_id=ckpt.job_id, step_number=ckpt.step, metrics=metrics)
