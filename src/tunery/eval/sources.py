"""What a MODEL argument of `tunery eval` names, as a serving `ModelSource`.

A folder written by `tunery train` (or a job folder, or an adapter/model folder itself), else what
`tunery.store.catalog` says the name means in one project of the local Tunery home: a fine-tuned
model or checkpoint of that project (`ft:…`), or a base model (alias, registered or packaged
model, OpenAI name, and, this being the operator's own command, a local folder, .gguf file or
cached Hugging Face id).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tunery.eval.dataset import EvalError
from tunery.models.errors import TuneryModelError
from tunery.models.weights import find_weights
from tunery.serve.registry import ModelSource

DEFAULT_PROJECT = "default"


@dataclass(frozen=True)
class EvalModel:
    name: str  # as given on the command line
    source: ModelSource
    metrics_csv: Path | None = None  # the training curves of the job or run that made it

    @property
    def fine_tuned(self) -> bool:
        return self.source.kind != "base"


def weights_source(name: str, folder: Path, *, fine_tune: bool = False) -> ModelSource | None:
    """A run's or checkpoint's folder as a source: a PEFT adapter or full weights (`model/`); None
    when `folder` holds neither. A model folder itself is a base model unless `fine_tune` (the
    folder is known to be a fine-tune's weights, e.g. a job's `model/`)."""
    try:
        weights = find_weights(folder, full_at_top=fine_tune)
    except TuneryModelError as exc:
        raise EvalError(f"{name}: {exc}") from None
    return None if weights is None else ModelSource(name, weights.kind, weights.path, base_path=weights.base_path)


def metrics_csv_for(weights: Path) -> Path | None:
    """The training curves next to a run's weights (`tunery train` and job folders keep metrics.csv)."""
    for folder in (weights, weights.parent):
        if (folder / "metrics.csv").is_file():
            return folder / "metrics.csv"
    return None


def resolve_eval_model(spec: str, project: str = DEFAULT_PROJECT, settings=None) -> EvalModel:
    """`spec` as an `EvalModel`, fine-tuned names looked up in `project` (a project name) of the
    local home; an `EvalError` names what was not found."""
    path = Path(spec).expanduser()
    if path.is_dir():
        source = weights_source(spec, path)
        if source is not None:
            return EvalModel(spec, source, metrics_csv_for(source.path))
    from tunery.store import catalog

    try:
        if catalog.is_fine_tuned_name(spec):
            found = _in_project(spec, project, settings)
        else:  # a base model: no database needed
            found = catalog.resolve(None, _settings(settings), "", spec, remote=False)
    except catalog.ModelNotAvailable:
        raise EvalError(f"{spec}: no such fine-tuned model in the local Tunery home's project {project!r} "
                        f"(see `tunery models list`; --project picks another project)") from None
    except TuneryModelError as exc:
        raise EvalError(f"{spec}: {exc}") from None
    source = ModelSource(spec, found.kind, found.path, base_path=found.base_path, context_length=found.context_length)
    return EvalModel(spec, source, metrics_csv_for(found.path) if found.fine_tuned else None)


def _settings(settings):
    from tunery.store.settings import load_settings

    return settings or load_settings()


def _in_project(spec: str, project: str, settings):
    from sqlalchemy import select

    from tunery.store import catalog
    from tunery.store.context import open_store
    from tunery.store.keys import Project

    try:
        store = open_store(_settings(settings))
    except Exception as exc:  # a bad config or an unreachable database: say so in one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EvalError(f"{spec}: cannot open the local Tunery home to look it up: {first}") from None
    try:
        with store.db.session_scope() as session:
            project_id = session.scalar(select(Project.id).where(Project.name == project))
            if project_id is None:
                raise catalog.ModelNotAvailable(spec)
            return catalog.resolve(session, store.settings, project_id, spec, remote=False)
    finally:
        store.close()
