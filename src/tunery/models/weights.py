"""What a fine-tune's folder holds: a PEFT adapter (on a base model folder) or full weights.

One answer for every reader of a job's, checkpoint's or `tunery train` run's folder (serving,
evaluation, export): the folder itself, else its `adapter/`, else its `model/` subfolder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tunery.models.errors import TuneryModelError


class BaseModelMissing(TuneryModelError):
    """An adapter whose base model folder (adapter_config.json's base_model_name_or_path) is gone."""


@dataclass(frozen=True)
class Weights:
    kind: str  # "adapter" (path: PEFT folder, base_path: its base model folder) | "full" (path: model folder)
    path: Path
    base_path: Path | None = None


def find_weights(folder: Path, *, full_at_top: bool = True) -> Weights | None:
    """The weights in `folder`, or None when it holds neither an adapter nor a model.

    `full_at_top=False` treats a model folder given itself (config.json at the top) as no
    fine-tune, for callers to which such a folder is a base model (`tunery eval FOLDER`)."""
    folder = Path(folder)
    for candidate in (folder, folder / "adapter", folder / "model"):
        if (candidate / "adapter_config.json").is_file():
            return Weights("adapter", candidate, adapter_base(candidate))
        if (candidate / "config.json").is_file() and (full_at_top or candidate != folder):
            return Weights("full", candidate)
    return None


def adapter_base(adapter: Path) -> Path:
    """The base model folder a PEFT adapter was trained on; `BaseModelMissing` when it is gone."""
    config = Path(adapter) / "adapter_config.json"
    try:
        base = json.loads(config.read_text()).get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError) as exc:
        raise TuneryModelError(f"{config}: unreadable adapter config: {exc}") from None
    if not base or not (Path(base) / "config.json").is_file():
        raise BaseModelMissing(f"the base model of the adapter {adapter} is missing ({base})")
    return Path(base)
