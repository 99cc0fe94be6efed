"""`/v1/fine_tuning/jobs`: create, list, retrieve, cancel, pause, resume, events, checkpoints.

Thin: parameters are checked by `tunery.jobs.create`, statuses move through `tunery.jobs.queue`
(conditional updates), and the worker does the rest. Pause and cancel only change the status; the
worker sees it within a second and signals the training subprocess.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request

from tunery.api.auth import current_project, get_store
from tunery.api.errors import APIError, not_found, quota_exceeded
from tunery.api.protocol.common import CursorPage, ListPage
from tunery.api.protocol.fine_tuning import (
    CreateFineTuningJobRequest,
    FineTuningJob,
    FineTuningJobCheckpoint,
    FineTuningJobEvent,
)
from tunery.jobs import queue, states
from tunery.jobs.create import JobParamError, create_job
from tunery.store.context import Store
from tunery.store.jobs import Job
from tunery.store.keys import Project

router = APIRouter(tags=["fine-tuning"])


def param_error(exc: JobParamError) -> APIError:
    if exc.code == "insufficient_quota":
        return quota_exceeded(exc.message)
    return APIError(exc.status, exc.message, param=exc.param, code=exc.code)


def load_job(session, project: Project, job_id: str, legacy: bool = False) -> Job:
    job = queue.get_job(session, project.id, job_id, legacy)
    if job is None:
        raise not_found("fine-tune job" if legacy else "fine-tuning job", job_id, "fine_tune_id" if legacy else "fine_tuning_job_id")
    return job


def metadata_filter(request: Request) -> dict[str, str]:
    """`metadata[key]=value` query parameters (the SDK's `metadata={...}` list filter)."""
    out = {}
    for key, value in request.query_params.multi_items():
        if key.startswith("metadata[") and key.endswith("]"):
            out[key[len("metadata["):-1]] = value
    return out


@router.post("/fine_tuning/jobs", response_model=FineTuningJob)
def create(body: CreateFineTuningJobRequest, project: Project = Depends(current_project), store: Store = Depends(get_store)):
    if body.integrations:
        raise APIError(400, "Integrations (wandb) are not supported by this server.", param="integrations", code="unsupported_integration")
    try:
        with store.db.session_scope() as session:
            job = create_job(session, project.id, settings=store.settings, **body.model_dump(exclude={"integrations"}),
                             max_active_jobs=store.settings.max_active_jobs)
            return FineTuningJob.of(job)
    except JobParamError as exc:
        raise param_error(exc) from None


@router.get("/fine_tuning/jobs", response_model=ListPage[FineTuningJob])
def list_jobs(
    request: Request,
    after: str | None = None,
    starting_after: str | None = None,  # openai 0.28.1 FineTuningJob.list sends this
    limit: int = Query(20, ge=1, le=100),
    project: Project = Depends(current_project),
    store: Store = Depends(get_store),
):
    with store.db.session_scope() as session:
        jobs, more = queue.list_jobs(session, project.id, after=after or starting_after, limit=limit, metadata=metadata_filter(request))
        return ListPage[FineTuningJob](data=[FineTuningJob.of(j) for j in jobs], has_more=more)


@router.get("/fine_tuning/jobs/{fine_tuning_job_id}", response_model=FineTuningJob)
def retrieve(fine_tuning_job_id: str, project: Project = Depends(current_project), store: Store = Depends(get_store)):
    with store.db.session_scope() as session:
        return FineTuningJob.of(load_job(session, project, fine_tuning_job_id))


def change_status(store: Store, project: Project, job_id: str, dst: str, verb: str, legacy: bool = False,
                  src: tuple[str, ...] | None = None, **values) -> Job:
    """Move a job to `dst` (from `src`, default any status allowed) or answer 400 naming its status."""
    with store.db.session_scope() as session:
        job = load_job(session, project, job_id, legacy)
        if not queue.transition(session, job.id, dst, src, **values):
            current = queue.status_of(session, job.id)
            raise APIError(400, f"Job {job.id} cannot be {verb}: its status is '{current}'.", param="fine_tuning_job_id",
                           code="invalid_job_status")
        queue.add_event(session, job.id, {
            states.CANCELLED: "Fine-tuning job cancelled.",
            states.PAUSED: "Fine-tuning job pause requested: checkpointing",
            states.QUEUED: "Fine-tuning job resume requested: queued to continue from its checkpoint",
        }[dst])
    with store.db.session_scope() as session:
        return load_job(session, project, job_id, legacy)


@router.post("/fine_tuning/jobs/{fine_tuning_job_id}/cancel", response_model=FineTuningJob)
def cancel(fine_tuning_job_id: str, project: Project = Depends(current_project), store: Store = Depends(get_store)):
    return FineTuningJob.of(change_status(store, project, fine_tuning_job_id, states.CANCELLED, "cancelled"))


@router.post("/fine_tuning/jobs/{fine_tuning_job_id}/pause", response_model=FineTuningJob)
def pause(fine_tuning_job_id: str, project: Project = Depends(current_project), store: Store = Depends(get_store)):
    return FineTuningJob.of(change_status(store, project, fine_tuning_job_id, states.PAUSED, "paused"))


@router.post("/fine_tuning/jobs/{fine_tuning_job_id}/resume", response_model=FineTuningJob)
def resume(fine_tuning_job_id: str, project: Project = Depends(current_project), store: Store = Depends(get_store)):
    return FineTuningJob.of(change_status(store, project, fine_tuning_job_id, states.QUEUED, "resumed", src=(states.PAUSED,), resume=True,
                                          finished_at=None))


@router.get("/fine_tuning/jobs/{fine_tuning_job_id}/events", response_model=ListPage[FineTuningJobEvent])
def events(
    fine_tuning_job_id: str,
    after: str | None = None,
    limit: int = Query(20, ge=1, le=1000),
    project: Project = Depends(current_project),
    store: Store = Depends(get_store),
):
    with store.db.session_scope() as session:
        job = load_job(session, project, fine_tuning_job_id)
        rows, more = queue.list_events(session, job.id, after=after, limit=limit)
        return ListPage[FineTuningJobEvent](data=[FineTuningJobEvent.of(e) for e in rows], has_more=more)


@router.get("/fine_tuning/jobs/{fine_tuning_job_id}/checkpoints", response_model=CursorPage[FineTuningJobCheckpoint])
def checkpoints(
    fine_tuning_job_id: str,
    after: str | None = None,
    limit: int = Query(10, ge=1, le=100),
    project: Project = Depends(current_project),
    store: Store = Depends(get_store),
):
    with store.db.session_scope() as session:
        job = load_job(session, project, fine_tuning_job_id)
        rows, more = queue.list_checkpoints(session, job.id, after=after, limit=limit)
        return CursorPage[FineTuningJobCheckpoint].of([FineTuningJobCheckpoint.of(c) for c in rows], more)
