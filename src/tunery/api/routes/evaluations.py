"""`/v1/evaluations`: evaluate models of the project on an uploaded file, in the background.

The models answer through the same serving registry and engines as `/v1/chat/completions`.
Shape (see `tunery.api.protocol.evaluations`): `POST /evaluations` → an `evaluation` (queued),
`GET /evaluations` (newest first), `GET /evaluations/{id}`, `GET /evaluations/{id}/report` (HTML).
"""

from __future__ import annotations

import asyncio
import threading

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from tunery.api import inference as inf
from tunery.api.auth import current_project, get_store
from tunery.api.errors import APIError, invalid_request, not_found
from tunery.api.openapi import error_response
from tunery.api.protocol.common import ErrorBody, ListPage
from tunery.api.protocol.evaluations import Evaluation, EvaluationProgress, EvaluationRequest, EvaluationRun
from tunery.eval.dataset import EvalError, EvalTooLarge, read_examples
from tunery.eval.evaluate import make_plan
from tunery.eval.report import render_report
from tunery.eval.service import EvalState, EvaluationService
from tunery.eval.sources import EvalModel, metrics_csv_for
from tunery.store import files as files_repo

router = APIRouter(tags=["evaluations"])
_service_lock = threading.Lock()


def service(app) -> EvaluationService:
    with _service_lock:
        svc = getattr(app.state, "evaluations", None)
        if svc is None:
            svc = app.state.evaluations = EvaluationService(inf.registry(app))
        return svc


def _read_file(store, project_id: str, fid: str, param: str, limit: int | None = None):
    with store.db.session_scope() as session:
        record = files_repo.get_file(session, project_id, fid)
        key = record.blob_key if record is not None else None
    if key is None:
        raise not_found("file", fid, param=param)
    try:  # streamed, and bounded: never the whole upload in memory
        with store.blobs.open(key) as f:
            return read_examples(f, fid, limit, store.settings.max_eval_bytes)
    except OSError:
        raise invalid_request(f"{fid}: the file cannot be read", param=param) from None
    except EvalTooLarge as exc:
        raise invalid_request(str(exc), param=param, code="file_too_large") from None
    except EvalError as exc:
        raise invalid_request(str(exc), param=param, code="invalid_file") from None


def _model(store, project_id: str, name: str) -> EvalModel:
    source = inf.find_source(store, project_id, name)
    return EvalModel(name, source, metrics_csv_for(source.path) if source.kind != "base" else None)


def _view(state: EvalState) -> Evaluation:
    r = state.request
    return Evaluation(
        id=state.id, created_at=state.created_at, finished_at=state.finished_at, status=state.status,
        models=r["models"], file=r["file"], few_shot=state.plan.few_shot, few_shot_file=r.get("few_shot_file"),
        task=state.plan.task.name, labels=state.plan.task.labels, n=len(state.plan.examples),
        progress=EvaluationProgress(completed=state.completed, total=state.total),
        results=[EvaluationRun(**{k: v for k, v in run.items() if k not in ("name", "metrics_csv")}) for run in state.results],
        error=ErrorBody(message=state.error, type="server_error", code="evaluation_failed") if state.error else None,
    )


@router.post("/evaluations", response_model=Evaluation)
async def create_evaluation(body: EvaluationRequest, request: Request, project=Depends(current_project), store=Depends(get_store)):
    if any(k < 0 for k in body.few_shot):
        raise invalid_request("few_shot values must be 0 or more", param="few_shot")
    examples = await asyncio.to_thread(_read_file, store, project.id, body.file, "file", body.limit)
    pool = await asyncio.to_thread(_read_file, store, project.id, body.few_shot_file, "few_shot_file") if body.few_shot_file else []
    models = []
    for i, name in enumerate(body.models):
        try:
            models.append(await asyncio.to_thread(_model, store, project.id, name))
        except APIError as err:
            err.param = f"models[{i}]"
            raise
    try:
        plan = make_plan(models, examples, body.task, body.labels, body.few_shot, pool, seed=body.seed,
                         max_tokens=body.max_tokens, temperature=body.temperature, with_loss=body.compute_loss)
    except EvalError as exc:
        raise invalid_request(str(exc), param="few_shot" if "few-shot" in str(exc) else None) from None
    state = service(request.app).submit(project.id, plan, body.model_dump())
    return _view(state)


@router.get("/evaluations", response_model=ListPage[Evaluation])
async def list_evaluations(request: Request, project=Depends(current_project)):
    return ListPage[Evaluation](data=[_view(s) for s in service(request.app).list(project.id)])


def _state(request: Request, project, eval_id: str) -> EvalState:
    state = service(request.app).get(project.id, eval_id)
    if state is None:
        raise not_found("evaluation", eval_id, param="evaluation_id")
    return state


@router.get("/evaluations/{evaluation_id}", response_model=Evaluation)
async def retrieve_evaluation(evaluation_id: str, request: Request, project=Depends(current_project)):
    return _view(_state(request, project, evaluation_id))


@router.get("/evaluations/{evaluation_id}/report", response_class=HTMLResponse,
            responses={409: error_response("The evaluation has not succeeded (yet).")})
async def evaluation_report(evaluation_id: str, request: Request, project=Depends(current_project)):
    state = _state(request, project, evaluation_id)
    if state.status != "succeeded":
        raise APIError(409, f"Evaluation {evaluation_id} has no report: its status is {state.status}.", param="evaluation_id", code="evaluation_not_finished")
    return HTMLResponse(render_report(state.results, title=f"Tunery evaluation {state.id}", data=state.request["file"]))
