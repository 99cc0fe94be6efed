"""`POST /v1/fine_tuning/alpha/graders/run` and `/validate`: run one grader on one sample, or
check one. Thin: the checks and the scoring are `tunery.graders`; a model grader's judge is the
caller's project's (`tunery.serve.judge`), served by the registry chat completions use.

Both take the graders OpenAI allows there (context "run": no top-level `label_model`); a bad
grader is a 400 whose `param` is the dotted field (`grader.input[0].role`). `validate` echoes the
grader with its templates and messages normalized as the Evals API stores testing criteria.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request

from tunery.api import inference
from tunery.api.auth import current_project, get_store
from tunery.api.errors import APIError
from tunery.api.protocol.graders import RunGraderRequest, RunGraderResponse, ValidateGraderRequest, ValidateGraderResponse
from tunery.eval import evals_config
from tunery.graders import GraderError, grade_batch, make_sample, validate
from tunery.serve.judge import ServeJudge

router = APIRouter(tags=["fine-tuning"])


def _checked(grader: dict) -> dict:
    try:
        validate(grader, context="run", param="grader")
    except GraderError as exc:
        raise APIError(400, exc.message, param=exc.param) from None
    return grader


@router.post("/fine_tuning/alpha/graders/run", response_model=RunGraderResponse)
async def run_grader(body: RunGraderRequest, request: Request, project=Depends(current_project), store=Depends(get_store)):
    grader = _checked(body.grader)
    judge = ServeJudge(store, inference.registry(request.app), project.id)
    pair = (make_sample(body.model_sample), body.item or {})
    # Off the event loop: a model grader waits for its generations.
    (result,) = await asyncio.to_thread(grade_batch, grader, [pair], judge)
    return result.to_run_response()


@router.post("/fine_tuning/alpha/graders/validate", response_model=ValidateGraderResponse)
def validate_grader(body: ValidateGraderRequest, project=Depends(current_project)):
    grader = _checked(body.grader)
    # The Evals API's normalization (private there; the one place it is written).
    return ValidateGraderResponse(grader=evals_config._normalize_strings(grader))
