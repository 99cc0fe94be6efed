"""Legacy `/v1/fine-tunes` (openai<1.0 `openai.FineTune`): create, list, retrieve, cancel, events.

The same jobs, queue and worker as `/v1/fine_tuning/jobs`, in the legacy shapes (see
`protocol/fine_tunes.py`) and with the legacy defaults: model `curie`, `n_epochs` 4,
`prompt_loss_weight` 0.01 (plus Tunery's `max_steps`). `GET …/events?stream=true` streams server-sent events, one per job
event as it happens, ending with `data: [DONE]` once the job has finished.
"""

from __future__ import annotations

import asyncio
import json

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from tunery.api.auth import current_project, get_store
from tunery.api.protocol.files import FileObject
from tunery.api.openapi import event_stream
from tunery.api.protocol.fine_tunes import CreateFineTuneRequest, FineTune, FineTuneEvent, FineTuneEventList, FineTuneList
from tunery.api.routes.fine_tuning import change_status, load_job, param_error
from tunery.jobs import queue, states
from tunery.jobs.create import JobParamError, check_hyperparameters, create_job
from tunery.store import files as files_repo
from tunery.store.context import Store
from tunery.store.jobs import Job
from tunery.store.keys import Project

router = APIRouter(tags=["fine-tunes (legacy)"])

STREAM_POLL_S = 0.5


def legacy_object(session, job: Job) -> FineTune:
    ids = [job.training_file, *([job.validation_file] if job.validation_file else []), *(job.result_files or [])]
    files = {}
    for fid in ids:
        record = files_repo.get_file(session, job.project_id, fid)
        if record is not None:
            files[fid] = FileObject.of(record)
    events = list(reversed(queue.list_events(session, job.id, limit=10_000)[0]))
    return FineTune.of(job, files, events)


def _prompt_loss_weight(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise JobParamError(f"Invalid value for 'prompt_loss_weight': expected a number between 0 and 1, got {value!r}.",
                            "prompt_loss_weight")
    return float(value)


def _classification(body: CreateFineTuneRequest) -> dict:
    """The legacy classification options as stored for the results step (`jobs.legacy_results`)."""
    if body.classification_n_classes is not None and body.classification_n_classes < 2:
        raise JobParamError(f"Invalid value for 'classification_n_classes': expected an integer of at least 2, got "
                            f"{body.classification_n_classes}.", "classification_n_classes")
    if body.classification_positive_class is not None and not body.classification_positive_class.strip():
        raise JobParamError("Invalid value for 'classification_positive_class': expected a non-blank label.",
                            "classification_positive_class")
    for beta in body.classification_betas or ():
        if not beta > 0:
            raise JobParamError(f"Invalid value for 'classification_betas': every beta must be greater than 0, got {beta}.",
                                "classification_betas")
    return {k: getattr(body, k) for k in ("compute_classification_metrics", "classification_n_classes", "classification_positive_class",
                                          "classification_betas") if getattr(body, k) not in (None, False)}


@router.post("/fine-tunes", response_model=FineTune)
def create(body: CreateFineTuneRequest, project: Project = Depends(current_project), store: Store = Depends(get_store)):
    try:
        given = {k: getattr(body, k) for k in ("n_epochs", "batch_size", "learning_rate_multiplier", "max_steps")
                 if getattr(body, k) is not None}
        hp = check_hyperparameters(given, "hyperparams")
        options = {
            "prompt_loss_weight": _prompt_loss_weight(0.01 if body.prompt_loss_weight is None else body.prompt_loss_weight),
            "classification": _classification(body),
        }
        with store.db.session_scope() as session:
            job = create_job(session, project.id, settings=store.settings, model="curie" if body.model is None else body.model, training_file=body.training_file,
                             validation_file=body.validation_file, suffix=body.suffix, hyperparameters=hp,
                             legacy=True, options=options, max_active_jobs=store.settings.max_active_jobs)
            return legacy_object(session, job)
    except JobParamError as exc:
        raise param_error(JobParamError(exc.message, exc.param.removeprefix("hyperparams.") if exc.param else None,
                                        exc.code, exc.status)) from None


@router.get("/fine-tunes", response_model=FineTuneList)
def list_fine_tunes(project: Project = Depends(current_project), store: Store = Depends(get_store)):
    with store.db.session_scope() as session:
        jobs, _ = queue.list_jobs(session, project.id, legacy=True, limit=10_000)
        data = [legacy_object(session, j) for j in reversed(jobs)]  # the legacy API listed oldest first
        return FineTuneList(data=data)


@router.get("/fine-tunes/{fine_tune_id}", response_model=FineTune)
def retrieve(fine_tune_id: str, project: Project = Depends(current_project), store: Store = Depends(get_store)):
    with store.db.session_scope() as session:
        return legacy_object(session, load_job(session, project, fine_tune_id, legacy=True))


@router.post("/fine-tunes/{fine_tune_id}/cancel", response_model=FineTune)
def cancel(fine_tune_id: str, project: Project = Depends(current_project), store: Store = Depends(get_store)):
    change_status(store, project, fine_tune_id, states.CANCELLED, "cancelled", legacy=True)
    with store.db.session_scope() as session:
        return legacy_object(session, load_job(session, project, fine_tune_id, legacy=True))


def _events_after(store: Store, job_id: str, seq: int) -> tuple[list, str | None]:
    with store.db.session_scope() as session:
        return queue.events_since(session, job_id, seq), queue.status_of(session, job_id)


@router.get("/fine-tunes/{fine_tune_id}/events", response_model=FineTuneEventList, responses={200: event_stream(FineTuneEvent)})
async def events(fine_tune_id: str, stream: bool = False, project: Project = Depends(current_project),
                 store: Store = Depends(get_store)):
    def load():
        with store.db.session_scope() as session:
            return load_job(session, project, fine_tune_id, legacy=True).id

    job_id = await run_in_threadpool(load)
    if not stream:
        rows, _ = await run_in_threadpool(_events_after, store, job_id, 0)
        return FineTuneEventList(data=[FineTuneEvent.of(e) for e in rows])

    async def sse():
        seq = 0
        while True:
            rows, status = await run_in_threadpool(_events_after, store, job_id, seq)
            for e in rows:
                seq = e.seq
                yield f"data: {json.dumps(FineTuneEvent.of(e).model_dump())}\n\n"
            if status is None or states.is_terminal(status):
                yield "data: [DONE]\n\n"
                return
            await asyncio.sleep(STREAM_POLL_S)

    return StreamingResponse(sse(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
