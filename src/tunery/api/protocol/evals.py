"""Wire objects of the Evals API (`/v1/evals`), shaped as the spec's `Eval`, `EvalRun` and
`EvalRunOutputItem`. The request bodies are checked field by field in `tunery.eval.evals_config`
and `tunery.eval.runs` (their graders and data sources are open-ended unions), so they are taken
here as JSON objects."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel


class EvalListPage(BaseModel):
    object: Literal["list"] = "list"
    data: list[dict[str, Any]]
    first_id: str | None = None
    last_id: str | None = None
    has_more: bool = False


def eval_object(r) -> dict:
    return {"object": "eval", "id": r.id, "name": r.name, "data_source_config": r.data_source_config,
            "testing_criteria": r.testing_criteria, "created_at": r.created_at, "metadata": r.metadata_}


def run_object(r, report_url: str) -> dict:
    return {"object": "eval.run", "id": r.id, "eval_id": r.eval_id, "status": r.status, "model": r.model or "",
            "name": r.name, "created_at": r.created_at, "report_url": report_url, "metadata": r.metadata_, "error": r.error,
            "result_counts": r.result_counts, "per_model_usage": r.per_model_usage or [],
            "per_testing_criteria_results": r.per_testing_criteria_results or [], "data_source": r.data_source}


def item_object(r) -> dict:
    return {"object": "eval.run.output_item", "id": r.id, "run_id": r.run_id, "eval_id": r.eval_id, "created_at": r.created_at,
            "status": r.status, "datasource_item_id": r.datasource_item_id, "datasource_item": r.datasource_item,
            "results": r.results, "sample": r.sample}
