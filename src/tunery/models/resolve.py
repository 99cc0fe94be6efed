"""Turn a model spec (alias, OpenAI name, packaged name, folder, .gguf file, Hugging Face id) into a local folder.

This accepts paths and cached Hugging Face ids: it is for the operator's own commands and for specs
the operator configured. What a remote client may name is decided by `tunery.store.catalog`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from tunery.models.aliases import DEFAULT_TARGET, OpenAINames, base_target, load_aliases
from tunery.models.convert import cache_root, ensure_converted
from tunery.models.errors import ModelNotFoundError, TuneryModelError
from tunery.models.packaged import PACKAGED_NAME, PACKAGED_NAMES, packaged_gguf

_HF_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
# Quantization tags at the end of a GGUF file's stem: "Model.Q4_1", "Model-q8_0", "Model.F16".
_QUANT_TAG = re.compile(r"[.\-_](?:[IT]?Q\d[\w]*|F16|F32|BF16)$", re.IGNORECASE)
_WEIGHTS = ("*.safetensors", "*.bin")


@dataclass(frozen=True)
class ResolvedModel:
    """A base model available locally as a Hugging Face folder."""

    name: str  # canonical base name, used in `ft:` names and /v1/models
    path: Path  # folder with config.json, weights, tokenizer files, chat template
    source: str  # "packaged" | "folder" | "gguf" | "hf-cache"
    context_length: int | None  # max positions from config.json (None if it has none)
    spec: str = ""  # what was asked for, before aliases


def resolve_model(
    spec: str | None = None,
    *,
    aliases: Mapping[str, str] | None = None,
    openai: OpenAINames = OpenAINames(),
    on_convert: Callable[[str], None] | None = None,
) -> ResolvedModel:
    """Resolve `spec` to a local model folder, never touching the network.

    Aliases and the OpenAI-name rule are applied first. A GGUF (packaged or given) is converted once into
    `$TUNERY_CACHE/models/`; `on_convert` is told when that slow step starts.
    """
    asked = (spec or "").strip()
    asked_or_default = asked or DEFAULT_TARGET
    target = base_target(asked_or_default, load_aliases(aliases), openai) or asked_or_default
    if target == DEFAULT_TARGET or target in PACKAGED_NAMES:
        folder = ensure_converted(packaged_gguf(), _models_dir() / PACKAGED_NAME, on_convert)
        return _resolved(PACKAGED_NAME, folder, "packaged", asked)

    path = Path(target).expanduser()
    if target.lower().endswith(".gguf"):
        if not path.is_file():
            raise ModelNotFoundError(f"GGUF file {target} does not exist")
        return _from_gguf(path, asked, on_convert)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFoundError(f"folder {path} is not a Hugging Face model folder: it has no config.json")
        return _resolved(_safe_name(path.resolve().name), path.resolve(), "folder", asked)
    if _HF_ID.match(target):
        return _resolved(_safe_name(target.split("/")[1]), _hf_cached(target), "hf-cache", asked)
    via = f" (alias of {asked!r})" if target != asked else ""
    raise ModelNotFoundError(
        f"unknown model {target!r}{via}: not an alias, packaged model, local folder, .gguf file "
        f"or Hugging Face id (org/name); add an alias via $TUNERY_MODEL_ALIASES or pass a local path"
    )


def _models_dir() -> Path:
    return cache_root() / "models"


def _from_gguf(gguf: Path, asked: str, on_convert) -> ResolvedModel:
    gguf = gguf.resolve()
    try:
        packaged = packaged_gguf()
    except ModelNotFoundError:
        packaged = None
    if packaged is not None and packaged.resolve() == gguf:  # the same file: share the packaged cache
        folder = ensure_converted(gguf, _models_dir() / PACKAGED_NAME, on_convert)
        return _resolved(PACKAGED_NAME, folder, "gguf", asked)
    name = _safe_name(_QUANT_TAG.sub("", gguf.stem)) or "model"
    # Keyed by file stem + size so that two quantizations or copies never share a folder;
    # the marker inside also checks mtime, so an edited file is reconverted in place.
    folder = _models_dir() / "gguf" / f"{_safe_name(gguf.stem)}-{gguf.stat().st_size}"
    return _resolved(name, ensure_converted(gguf, folder, on_convert), "gguf", asked)


def _hf_cached(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    hint = (
        f"Tunery never downloads: on a machine with internet run `hf download {repo_id}` "
        f"(HF cache) or save the model to a folder and pass its path"
    )
    try:
        folder = Path(snapshot_download(repo_id, local_files_only=True))
    except (LocalEntryNotFoundError, HFValidationError, OSError) as exc:
        raise ModelNotFoundError(f"model {repo_id!r} is not in the local Hugging Face cache; {hint}") from exc
    if not (folder / "config.json").is_file() or not any(next(folder.glob(p), None) for p in _WEIGHTS):
        raise ModelNotFoundError(f"model {repo_id!r} is only partly in the local Hugging Face cache ({folder}); {hint}")
    return folder


def _resolved(name: str, folder: Path, source: str, asked: str) -> ResolvedModel:
    return ResolvedModel(name=name, path=folder, source=source, context_length=_context_length(folder), spec=asked)


def _context_length(folder: Path) -> int | None:
    try:
        config = json.loads((folder / "config.json").read_text())
    except ValueError as exc:
        raise TuneryModelError(f"{folder / 'config.json'}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from exc
    if not isinstance(config, dict):
        raise TuneryModelError(f"{folder / 'config.json'}: expected a JSON object")
    for section in (config, config.get("text_config") or {}):
        for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx"):
            if isinstance(section.get(key), int):
                return section[key]
    return None


def _safe_name(name: str) -> str:
    """A name usable inside `ft:base:org:suffix:id` (no colons or spaces)."""
    return re.sub(r"[\s:/]+", "-", name).strip("-")
