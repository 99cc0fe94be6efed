"""Which weights a model name means: the one answer for the API, the job worker, evaluation,
export and the CLI, always within one project.

A name is, in this order:
- a fine-tuned model or checkpoint of the project (`ft:…`, `…:ckpt-step-N`, legacy `base:ft-…`),
  found by an indexed query on the name (never by listing the project's models);
- a base model the operator offers: an alias (`$TUNERY_MODEL_ALIASES`), a registered model
  (`tunery models add`, `$TUNERY_HOME/models.json`), the packaged model, or an OpenAI model name
  (the `openai_models_pattern` rule maps it to `openai_models_target`).

That is all a remote client can name (`remote=True`, the default): never a filesystem path, a
Hugging Face cache id or a .gguf file, and every other name is the same `ModelNotAvailable`,
whether or not such a path exists. The operator's own commands (`remote=False`: `tunery eval`,
`tunery export`) may also name anything `tunery.models.resolve_model` accepts.

Error messages of `ModelNotAvailable` and `ModelUnusable` are safe to send to a client: they name
only the model as asked; the server-side details (paths, the reason) go to the log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from tunery.models.aliases import OpenAINames, base_target, list_base_models, load_aliases
from tunery.models.errors import ModelNotFoundError, TuneryModelError
from tunery.models.naming import parse_model_name
from tunery.models.registered import load_registered
from tunery.models.weights import find_weights
from tunery.store.jobs import Job, JobCheckpoint
from tunery.store.settings import Settings

log = logging.getLogger("tunery.models")

SUCCEEDED = "succeeded"  # tunery.jobs.states.SUCCEEDED (the store sits below jobs)


class ModelNotAvailable(LookupError):
    """The name means no model this caller may use (the API answers 404 model_not_found)."""

    def __init__(self, name: str) -> None:
        super().__init__(not_found_message(name))
        self.name = name


class ModelUnusable(RuntimeError):
    """The name is offered but its weights cannot be used here (base gone, conversion failed)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"The model `{name}` cannot be used on this server right now; the server log says why.")
        self.name = name


def not_found_message(name: str) -> str:
    """OpenAI's words for a model that does not exist or that the caller may not use."""
    shown = name if len(name) <= 256 else name[:256] + "…"
    return f"The model `{shown}` does not exist or you do not have access to it."


@dataclass(frozen=True)
class FineTunedModel:
    id: str  # the model name: ft:… or ft:…:ckpt-step-N (legacy: base:ft-org-…)
    created: int
    owned_by: str  # the project id
    base_model: str  # what the job was asked to fine-tune (an alias, or the ft: model it continued)
    weights_path: str  # a peft adapter folder or a full model folder
    job_id: str
    step: int | None = None  # set for checkpoints


@dataclass(frozen=True)
class ModelWeights:
    """What a name means: `kind` "base" (path: a model folder), "adapter" (path: PEFT folder on
    `base_path`) or "full" (path: a full fine-tune). `fine_tuned` is set for fine-tuned names."""

    name: str
    kind: str
    path: Path
    base_path: Path | None = None
    context_length: int | None = None
    fine_tuned: FineTunedModel | None = None
    base_spec: str | None = None  # base models: the local spec the name stands for


def is_fine_tuned_name(name: str) -> bool:
    return name.startswith("ft:") or parse_model_name(name) is not None


def job_query(project_id: str, name: str):
    """The project's jobs whose fine-tuned model is `name` (index `ix_fine_tuning_jobs_model_project`;
    status and deletion are checked on the row: with them in the WHERE clause SQLite would pick the
    status index and scan every succeeded job)."""
    return select(Job).where(Job.fine_tuned_model == name, Job.project_id == project_id)


def checkpoint_query(project_id: str, name: str):
    """The checkpoints whose model name is `name`, with their job (index on the name)."""
    return (select(JobCheckpoint, Job).join(Job, Job.id == JobCheckpoint.job_id)
            .where(JobCheckpoint.model_name == name, Job.project_id == project_id))


def find_fine_tuned(session: Session, project_id: str, name: str) -> FineTunedModel | None:
    """The project's fine-tuned model or checkpoint called `name`, or None."""
    for job in session.scalars(job_query(project_id, name)):
        if job.status == SUCCEEDED and not job.model_deleted:
            return FineTunedModel(name, job.finished_at or job.created_at, job.project_id, job.model, job.weights_path or "", job.id)
    for ckpt, job in session.execute(checkpoint_query(project_id, name)):
        if not ckpt.deleted:
            return FineTunedModel(name, ckpt.created_at, job.project_id, job.model, ckpt.path, job.id, ckpt.step)
    return None


def _rule(settings: Settings) -> OpenAINames:
    pattern = settings.openai_models_pattern
    return OpenAINames(target=settings.openai_models_target) if pattern is None else OpenAINames(pattern, settings.openai_models_target)


def _table(settings: Settings) -> dict[str, str]:
    """Aliases, then registered models (`TuneryModelError` when the operator's table is broken)."""
    return load_aliases(load_registered(settings.models_file))


def base_spec(settings: Settings, name: str) -> str | None:
    """The local spec a base model name stands for, or None when the operator offers no such name;
    `ModelUnusable` when the operator's table is broken (the reason is logged)."""
    if not name or is_fine_tuned_name(name):
        return None
    try:
        return base_target(name, _table(settings), _rule(settings))
    except TuneryModelError as exc:  # a bad models.json, an alias cycle, a bad pattern
        log.error("model %r: %s", name, exc)
        raise ModelUnusable(name) from None


def base_names(settings: Settings) -> list[str]:
    """Base model names for `/v1/models`: packaged, some OpenAI names, aliases, registered models."""
    try:
        return list_base_models(load_registered(settings.models_file), _rule(settings))
    except TuneryModelError as exc:
        log.error("model table: %s", exc)
        return list_base_models(None, _rule(settings))


def resolve(session: Session, settings: Settings, project_id: str, name: str, *, remote: bool = True,
            on_convert: Callable[[str], None] | None = None) -> ModelWeights:
    """What `name` means for the project: `ModelNotAvailable` when nothing the caller may use;
    remotely `ModelUnusable` when it is offered but broken (logged). Locally (`remote=False`) the
    `TuneryModelError` with the details is raised instead, for the operator to read."""
    if not isinstance(name, str) or not name.strip():
        raise ModelNotAvailable(name or "")
    try:
        if is_fine_tuned_name(name):
            return _fine_tuned(session, project_id, name)
        return _base(settings, name, remote, on_convert)
    except ModelNotFoundError as exc:
        if not remote:
            raise
        log.warning("model %r is configured but not found: %s", name, exc)
        raise ModelNotAvailable(name) from None
    except TuneryModelError as exc:
        if not remote:
            raise
        log.error("model %r cannot be used: %s", name, exc)
        raise ModelUnusable(name) from None


def _base(settings: Settings, name: str, remote: bool, on_convert) -> ModelWeights:
    from tunery.models.resolve import resolve_model

    table, rule = _table(settings), _rule(settings)
    spec = base_target(name, table, rule)
    if spec is None:
        if remote:
            raise ModelNotAvailable(name)
        spec = name  # the operator's own command: a folder, a .gguf file, a cached HF id
    resolved = resolve_model(spec, aliases=table, openai=rule, on_convert=on_convert)
    return ModelWeights(name, "base", resolved.path, context_length=resolved.context_length, base_spec=spec)


def _fine_tuned(session: Session, project_id: str, name: str) -> ModelWeights:
    found = find_fine_tuned(session, project_id, name)
    if found is None or not found.weights_path:
        raise ModelNotAvailable(name)
    weights = find_weights(Path(found.weights_path))  # BaseModelMissing: a TuneryModelError
    if weights is None:  # weights removed from disk: the model is gone
        log.warning("model %r: no weights left in %s", name, found.weights_path)
        raise ModelNotAvailable(name)
    return ModelWeights(name, weights.kind, weights.path, weights.base_path, fine_tuned=found)
