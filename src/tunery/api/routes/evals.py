"""`/v1/evals`: evals, their runs and output items (OpenAI's Evals API). Thin: the checks live in
`tunery.eval.evals_config` / `tunery.eval.runs`, execution in `tunery.eval.run_worker`, rows in
`tunery.store.evals`, the HTML report in `tunery.eval.run_report`."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, Literal

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select

from tunery.api import inference as inf
from tunery.api.auth import current_project, get_store
from tunery.api.errors import APIError, invalid_request, not_found
from tunery.api.protocol.evals import EvalListPage, eval_object, item_object, run_object
from tunery.eval import evals_config as cfg
from tunery.eval.run_metrics import run_metrics, task_from
from tunery.eval.run_report import render_run_report
from tunery.eval.runs import normalize_data_source
from tunery.eval.tasks import MAX_CLASSES as MAX_LABELS
from tunery.eval.labels import numeric_labels
from tunery.eval.tasks import Task
from tunery.store import evals as repo
from tunery.store.db import keyset_page, now

router = APIRouter(tags=["evals"])


def _bad(exc: cfg.EvalInputError) -> APIError:
    return APIError(400, exc.message, param=exc.param, code=exc.code)


def _page(session, stmt, model, after_id, limit, order, key="created_at"):
    if not 1 <= limit <= 100:
        raise APIError(400, "limit must be between 1 and 100", param="limit")
    after = None
    if after_id is not None:
        after = session.scalar(select(model).where(model.id == after_id))
        if after is None:
            raise APIError(400, f"No such object for 'after': {after_id}", param="after")
    cols = [getattr(model, key), model.seq]
    return keyset_page(session, stmt, cols, after, limit, order == "desc")


def _list(data, has_more):
    return EvalListPage(data=data, has_more=has_more, first_id=data[0]["id"] if data else None, last_id=data[-1]["id"] if data else None)


def _eval(session, project_id, eval_id):
    record = repo.get_eval(session, project_id, eval_id)
    if record is None:
        raise not_found("eval", eval_id, param="eval_id")
    return record


def _run(session, project_id, eval_id, run_id):
    _eval(session, project_id, eval_id)
    run = repo.get_run(session, project_id, eval_id, run_id)
    if run is None:
        raise not_found("eval run", run_id, param="run_id")
    return run


def _report_url(request: Request, run) -> str:
    return str(request.base_url).rstrip("/") + f"/v1/evals/{run.eval_id}/runs/{run.id}/report"


@router.post("/evals", status_code=201)
def create_eval(request: Request, body: dict[str, Any] = Body(...), project=Depends(current_project), store=Depends(get_store)):
    try:
        name = body.get("name") or ""
        if not isinstance(name, str):
            raise cfg.EvalInputError("Invalid type for 'name': expected a string.", "name")
        metadata = cfg.check_metadata(body.get("metadata"))
        config = cfg.stored_config(body.get("data_source_config"))
        criteria = cfg.stored_criteria(body.get("testing_criteria"), config)
    except cfg.EvalInputError as exc:
        raise _bad(exc) from None
    with store.db.session_scope() as s:
        record = repo.EvalRecord(id=f"eval_{uuid.uuid4().hex}", project_id=project.id, name=name, metadata_=metadata,
                                 data_source_config=config, testing_criteria=criteria)
        s.add(record)
    return eval_object(record)


@router.get("/evals", response_model=EvalListPage)
def list_evals(after: str | None = None, limit: int = 20, order: Literal["asc", "desc"] = "asc",
               order_by: Literal["created_at", "updated_at"] = "created_at", project=Depends(current_project), store=Depends(get_store)):
    with store.db.session_scope() as s:
        rows, more = _page(s, select(repo.EvalRecord).where(repo.EvalRecord.project_id == project.id), repo.EvalRecord, after, limit, order, order_by)
        return _list([eval_object(r) for r in rows], more)


@router.get("/evals/{eval_id}")
def retrieve_eval(eval_id: str, project=Depends(current_project), store=Depends(get_store)):
    with store.db.session_scope() as s:
        return eval_object(_eval(s, project.id, eval_id))


@router.post("/evals/{eval_id}")
def update_eval(eval_id: str, body: dict[str, Any] = Body(...), project=Depends(current_project), store=Depends(get_store)):
    unknown = set(body) - {"name", "metadata"}
    if unknown:
        raise APIError(400, f"Unrecognized request argument supplied: {sorted(unknown)[0]} (only name and metadata can be updated)", param=sorted(unknown)[0])
    try:
        metadata = cfg.check_metadata(body.get("metadata"))
    except cfg.EvalInputError as exc:
        raise _bad(exc) from None
    if "name" in body and not isinstance(body["name"], str):
        raise APIError(400, "Invalid type for 'name': expected a string.", param="name")
    with store.db.session_scope() as s:
        record = _eval(s, project.id, eval_id)
        if "name" in body:
            record.name = body["name"]
        if "metadata" in body:
            record.metadata_ = metadata
        record.updated_at = now()
        return eval_object(record)


@router.delete("/evals/{eval_id}")
def delete_eval(eval_id: str, project=Depends(current_project), store=Depends(get_store)):
    with store.db.session_scope() as s:
        repo.delete_eval(s, _eval(s, project.id, eval_id))
    return {"object": "eval.deleted", "deleted": True, "eval_id": eval_id}


@router.post("/evals/{eval_id}/runs", status_code=201)
async def create_run(eval_id: str, request: Request, body: dict[str, Any] = Body(...), project=Depends(current_project), store=Depends(get_store)):
    def prepare():
        with store.db.session_scope() as s:
            record = _eval(s, project.id, eval_id)
            config, criteria = record.data_source_config, record.testing_criteria
        try:
            metadata = cfg.check_metadata(body.get("metadata"))
            ds, _ = normalize_data_source(store, project.id, body.get("data_source"), cfg.item_schema(config), criteria)
        except cfg.EvalInputError as exc:
            raise _bad(exc) from None
        if ds["type"] == "completions":
            try:
                inf.find_source(store, project.id, ds["model"])  # a 404 now rather than a failed run later
            except APIError as err:
                err.param = "data_source.model"
                raise
        return ds, metadata

    ds, metadata = await asyncio.to_thread(prepare)
    name = body.get("name")
    if name is not None and not isinstance(name, str):
        raise APIError(400, "Invalid type for 'name': expected a string.", param="name")
    with store.db.session_scope() as s:
        run = repo.EvalRunRecord(id=f"evalrun_{uuid.uuid4().hex}", eval_id=eval_id, project_id=project.id,
                                 name=name or f"{ds['type']}-run", model=ds.get("model"), metadata_=metadata, data_source=ds)
        s.add(run)
    request.app.state.eval_runs.wake()
    return run_object(run, _report_url(request, run))


@router.get("/evals/{eval_id}/runs", response_model=EvalListPage)
def list_runs(eval_id: str, request: Request, after: str | None = None, limit: int = 20, order: Literal["asc", "desc"] = "asc",
              status: Literal["queued", "in_progress", "completed", "canceled", "failed"] | None = None,
              project=Depends(current_project), store=Depends(get_store)):
    with store.db.session_scope() as s:
        _eval(s, project.id, eval_id)
        stmt = select(repo.EvalRunRecord).where(repo.EvalRunRecord.eval_id == eval_id, repo.EvalRunRecord.project_id == project.id)
        if status:
            stmt = stmt.where(repo.EvalRunRecord.status == status)
        rows, more = _page(s, stmt, repo.EvalRunRecord, after, limit, order)
        return _list([run_object(r, _report_url(request, r)) for r in rows], more)


@router.get("/evals/{eval_id}/runs/{run_id}")
def retrieve_run(eval_id: str, run_id: str, request: Request, project=Depends(current_project), store=Depends(get_store)):
    with store.db.session_scope() as s:
        return run_object(_run(s, project.id, eval_id, run_id), _report_url(request, _run(s, project.id, eval_id, run_id)))


# The spec cancels with POST .../runs/{run_id}; the current SDK posts to .../runs/{run_id}/cancel.
@router.post("/evals/{eval_id}/runs/{run_id}")
@router.post("/evals/{eval_id}/runs/{run_id}/cancel")
def cancel_run(eval_id: str, run_id: str, request: Request, project=Depends(current_project), store=Depends(get_store)):
    with store.db.session_scope() as s:
        run = _run(s, project.id, eval_id, run_id)
        if run.status in repo.FINISHED:
            raise APIError(409, f"Run {run_id} is already {run.status} and cannot be canceled.", param="run_id", code="run_finished")
        run.status, run.updated_at = repo.CANCELED, now()
        return run_object(run, _report_url(request, run))


@router.delete("/evals/{eval_id}/runs/{run_id}")
def delete_run(eval_id: str, run_id: str, project=Depends(current_project), store=Depends(get_store)):
    with store.db.session_scope() as s:
        repo.delete_run(s, _run(s, project.id, eval_id, run_id))
    return {"object": "eval.run.deleted", "deleted": True, "run_id": run_id}


@router.get("/evals/{eval_id}/runs/{run_id}/output_items", response_model=EvalListPage)
def list_items(eval_id: str, run_id: str, after: str | None = None, limit: int = 20, order: Literal["asc", "desc"] = "asc",
               status: Literal["pass", "fail"] | None = Query(None), project=Depends(current_project), store=Depends(get_store)):
    with store.db.session_scope() as s:
        _run(s, project.id, eval_id, run_id)
        stmt = select(repo.EvalOutputItemRecord).where(repo.EvalOutputItemRecord.run_id == run_id)
        if status:
            stmt = stmt.where(repo.EvalOutputItemRecord.status == status)
        rows, more = _page(s, stmt, repo.EvalOutputItemRecord, after, limit, order, "datasource_item_id")
        return _list([item_object(r) for r in rows], more)


@router.get("/evals/{eval_id}/runs/{run_id}/output_items/{output_item_id}")
def retrieve_item(eval_id: str, run_id: str, output_item_id: str, project=Depends(current_project), store=Depends(get_store)):
    with store.db.session_scope() as s:
        _run(s, project.id, eval_id, run_id)
        item = repo.get_item(s, run_id, output_item_id)
        if item is None:
            raise not_found("output item", output_item_id, param="output_item_id")
        return item_object(item)


@router.get("/evals/{eval_id}/runs/{run_id}/report", response_class=HTMLResponse)
def run_report(eval_id: str, run_id: str, project=Depends(current_project), store=Depends(get_store)):
    with store.db.session_scope() as s:
        run = _run(s, project.id, eval_id, run_id)
        record = _eval(s, project.id, eval_id)
        return HTMLResponse(render_run_report(record, run, repo.run_items(s, run_id)))


@router.get("/evals/{eval_id}/runs/{run_id}/metrics")
def run_metrics_view(eval_id: str, run_id: str, labels: str | None = None, project=Depends(current_project),
                     store=Depends(get_store)):
    """Tunery extension: the run's task metrics (`tunery.eval.run_metrics`) as JSON, the numbers
    the report page shows; `metrics` is null when no criterion names a reference. `labels`
    (comma-separated) fixes the classes, for a sample whose references do not show every class."""
    fixed = None
    if labels is not None:
        names = list(dict.fromkeys(x.strip() for x in labels.split(",") if x.strip()))
        if not names or len(names) > MAX_LABELS:
            raise invalid_request(f"Invalid value for 'labels': expected 1 to {MAX_LABELS} comma-separated labels.", "labels")
        fixed = Task("classification", names, numeric_labels(names) is not None)
    with store.db.session_scope() as s:
        run = _run(s, project.id, eval_id, run_id)
        record = _eval(s, project.id, eval_id)
        metrics = run_metrics(record.testing_criteria, repo.run_items(s, run_id), fixed or task_from((run.report or {}).get("task")))
        if metrics is not None:
            metrics.pop("predictions", None)
            if fixed is not None and metrics.get("labels") != fixed.labels:
                raise invalid_request("Invalid value for 'labels': some references of this run are not among the labels.", "labels")
        return {"object": "eval.run.metrics", "eval_id": eval_id, "run_id": run_id, "status": run.status, "metrics": metrics}
