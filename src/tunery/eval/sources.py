"""What a MODEL argument of `tunery eval` names, as a serving `ModelSource`.

A folder written by `tunery train` (or a job folder, or an adapter/model folder itself), an `ft:`
name known to the local Tunery home (every project's fine-tuned models and checkpoints), or a
base model (alias, packaged name, local folder, .gguf file, cached Hugging Face id).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tunery.eval.dataset import EvalError
from tunery.serve.registry import ModelSource


@dataclass(frozen=True)
class EvalModel:
    name: str  # as given on the command line
    source: ModelSource
    metrics_csv: Path | None = None  # the training curves of the job or run that made it

    @property
    def fine_tuned(self) -> bool:
        return self.source.kind != "base"


def weights_source(name: str, folder: Path) -> ModelSource | None:
    """A run's or checkpoint's folder: a PEFT adapter (possibly in `adapter/`) or full weights
    (`model/`); None when `folder` holds neither."""
    for candidate in (folder / "adapter", folder / "model", folder):
        config = candidate / "adapter_config.json"
        if config.is_file():
            try:
                base = json.loads(config.read_text()).get("base_model_name_or_path")
            except (OSError, ValueError) as exc:
                raise EvalError(f"{config}: unreadable adapter config: {exc}") from None
            if not base or not (Path(base) / "config.json").is_file():
                raise EvalError(f"{name}: the base model of this adapter is missing ({base})")
            return ModelSource(name, "adapter", candidate, base_path=Path(base))
        if candidate != folder and (candidate / "config.json").is_file():
            return ModelSource(name, "full", candidate)
    return None


def metrics_csv_for(weights: Path) -> Path | None:
    """The training curves next to a run's weights (`tunery train` and job folders keep metrics.csv)."""
    for folder in (weights, weights.parent):
        if (folder / "metrics.csv").is_file():
            return folder / "metrics.csv"
    return None


def _find_fine_tuned(name: str, settings=None):
    """The `FineTunedModel` called `name` in any project of the local home, or None."""
    from sqlalchemy import select

    from tunery.jobs.models import find_fine_tuned
    from tunery.store.context import open_store
    from tunery.store.keys import Project
    from tunery.store.settings import load_settings

    try:
        store = open_store(settings or load_settings())
    except Exception as exc:  # a bad config or an unreachable database: say so in one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EvalError(f"{name}: cannot open the local Tunery home to look it up: {first}") from None
    try:
        with store.db.session_scope() as session:
            for project_id in session.scalars(select(Project.id)).all():
                found = find_fine_tuned(session, project_id, name)
                if found is not None:
                    return found
    finally:
        store.close()
    return None


def resolve_eval_model(spec: str, settings=None) -> EvalModel:
    """`spec` as an `EvalModel`; an `EvalError` names what was not found."""
    path = Path(spec).expanduser()
    if path.is_dir():
        source = weights_source(spec, path)
        if source is not None:
            return EvalModel(spec, source, metrics_csv_for(source.path))
    if spec.startswith("ft:") or ":ft-" in spec:
        found = _find_fine_tuned(spec, settings)
        if found is None or not found.weights_path:
            raise EvalError(f"{spec}: no such fine-tuned model in the local Tunery home (see `tunery serve`'s /v1/models)")
        weights = Path(found.weights_path)
        source = weights_source(spec, weights) if weights.is_dir() else None
        if source is None:
            raise EvalError(f"{spec}: its weights are gone from {weights}")
        return EvalModel(spec, source, metrics_csv_for(weights))
    from tunery.models.errors import TuneryModelError
    from tunery.models.resolve import resolve_model

    try:
        resolved = resolve_model(spec)
    except TuneryModelError as exc:
        raise EvalError(f"{spec}: {exc}") from None
    return EvalModel(spec, ModelSource(spec, "base", resolved.path, context_length=resolved.context_length))
