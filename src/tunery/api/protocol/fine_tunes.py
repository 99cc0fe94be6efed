"""Legacy fine-tune objects (`/v1/fine-tunes`, openai<1.0): `hyperparams`, whole File objects in
`training_files`/`validation_files`/`result_files`, and `fine-tune-event`s."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tunery.api.protocol.common import RequestModel
from tunery.api.protocol.files import FileObject
from tunery.jobs import states
from tunery.store.jobs import Job, JobEvent

# The legacy API had no `validating_files`/`queued`/`paused`: all of them read as "pending".
LEGACY_STATUS = {
    states.VALIDATING_FILES: "pending",
    states.QUEUED: "pending",
    states.PAUSED: "pending",
    states.RUNNING: "running",
    states.SUCCEEDED: "succeeded",
    states.FAILED: "failed",
    states.CANCELLED: "cancelled",
}


class CreateFineTuneRequest(RequestModel):
    model_config = ConfigDict(extra="forbid")

    training_file: str = Field(min_length=1)
    validation_file: str | None = None
    model: str | None = Field("curie", min_length=1)
    n_epochs: Any = 4
    batch_size: Any = None
    learning_rate_multiplier: Any = None
    prompt_loss_weight: Any = 0.01
    compute_classification_metrics: bool | None = False
    classification_n_classes: int | None = None
    classification_positive_class: str | None = None
    classification_betas: list[float] | None = None
    suffix: Any = None
    max_steps: Any = None  # Tunery extension: cap the run (quick checks), as in /v1/fine_tuning/jobs


class FineTuneEvent(BaseModel):
    object: Literal["fine-tune-event"] = "fine-tune-event"
    created_at: int
    level: str
    message: str

    @classmethod
    def of(cls, event: JobEvent) -> "FineTuneEvent":
        return cls(created_at=event.created_at, level=event.level, message=event.message)


class FineTuneEventList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FineTuneEvent]


class FineTune(BaseModel):
    id: str
    object: Literal["fine-tune"] = "fine-tune"
    created_at: int
    updated_at: int
    model: str
    fine_tuned_model: str | None
    organization_id: str
    status: str
    hyperparams: dict[str, Any]
    training_files: list[FileObject]
    validation_files: list[FileObject]
    result_files: list[FileObject]
    events: list[FineTuneEvent] | None = None

    @classmethod
    def of(cls, job: Job, files: dict[str, FileObject], events: list[JobEvent] | None = None) -> "FineTune":
        hp = job.hyperparameters or {}

        def number(name: str):
            value = hp.get(name)
            return None if value in (None, "auto") else value

        pick = lambda ids: [files[i] for i in ids if i in files]  # noqa: E731 (deleted files drop out)
        return cls(
            id=job.id,
            created_at=job.created_at,
            updated_at=job.updated_at,
            model=job.model,
            fine_tuned_model=job.fine_tuned_model,
            organization_id=job.project_id,
            status=LEGACY_STATUS.get(job.status, job.status),
            hyperparams={
                "batch_size": number("batch_size"),
                "learning_rate_multiplier": number("learning_rate_multiplier"),
                "n_epochs": number("n_epochs"),
                "prompt_loss_weight": (job.options or {}).get("prompt_loss_weight"),
            },
            training_files=pick([job.training_file]),
            validation_files=pick([job.validation_file] if job.validation_file else []),
            result_files=pick(job.result_files or []),
            events=[FineTuneEvent.of(e) for e in events] if events is not None else None,
        )


class FineTuneList(BaseModel):
    """The legacy list: oldest first, no paging."""

    object: Literal["list"] = "list"
    data: list[FineTune]
