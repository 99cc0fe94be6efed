"""Model aliases: OpenAI base model names (and any names a team adds) mapped to local model specs.

By default every OpenAI name maps to the packaged model, so SDK code written for OpenAI runs
unchanged. Overrides, weakest first: the built-in table, `$TUNERY_MODEL_ALIASES` (JSON text or a
path to a JSON file), then a dict passed in. A target may be another alias, a local folder, a
`.gguf` file, a Hugging Face id, or "default" (the packaged model).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from tunery.models.errors import TuneryModelError
from tunery.models.packaged import PACKAGED_NAME

ALIASES_ENV = "TUNERY_MODEL_ALIASES"
DEFAULT_TARGET = "default"

OPENAI_BASE_MODELS = (
    "gpt-4o-mini-2024-07-18",
    "gpt-4o-mini",
    "gpt-4o-2024-08-06",
    "gpt-4.1-mini-2025-04-14",
    "gpt-4.1-nano-2025-04-14",
    "gpt-4.1-2025-04-14",
    "gpt-3.5-turbo",
    "gpt-3.5-turbo-0125",
    "gpt-3.5-turbo-1106",
    "gpt-3.5-turbo-0613",
    "babbage-002",
    "davinci-002",
    # Legacy /v1/fine-tunes base models.
    "ada",
    "babbage",
    "curie",
    "davinci",
)

DEFAULT_ALIASES: Mapping[str, str] = {name: DEFAULT_TARGET for name in OPENAI_BASE_MODELS}


def load_aliases(overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """The alias table in effect: built-in, then `$TUNERY_MODEL_ALIASES`, then `overrides`."""
    table = dict(DEFAULT_ALIASES)
    raw = os.environ.get(ALIASES_ENV, "").strip()
    if raw:
        table.update(_parse_env(raw))
    if overrides:
        table.update(_checked(dict(overrides), "aliases passed in"))
    return table


def _parse_env(raw: str) -> dict[str, str]:
    if raw.startswith("{"):
        where, text = f"${ALIASES_ENV}", raw
    else:
        where = f"${ALIASES_ENV} file {raw}"
        try:
            text = Path(raw).expanduser().read_text()
        except OSError as exc:
            raise TuneryModelError(f"{where}: cannot read it ({exc.strerror}); set it to a JSON object or a JSON file's path") from exc
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise TuneryModelError(f"{where}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from exc
    return _checked(data, where)


def _checked(data: object, where: str) -> dict[str, str]:
    if not isinstance(data, dict):
        raise TuneryModelError(f"{where}: expected a JSON object mapping model names to specs, got {type(data).__name__}")
    for key, value in data.items():
        if not isinstance(value, str) or not value.strip() or not key.strip():
            raise TuneryModelError(f"{where}: alias {key!r} must map a non-empty name to a non-empty string spec, got {value!r}")
    return {key.strip(): value.strip() for key, value in data.items()}


def resolve_alias(spec: str, aliases: Mapping[str, str]) -> str:
    """Follow aliases from `spec` until a name that is not an alias; a cycle is an error."""
    seen = [spec]
    while spec in aliases and aliases[spec] != spec:
        spec = aliases[spec]
        if spec in seen:
            raise TuneryModelError(f"model alias cycle: {' -> '.join([*seen, spec])}")
        seen.append(spec)
    return spec


def list_base_models(overrides: Mapping[str, str] | None = None) -> list[str]:
    """Every base model name a client may ask for (for `/v1/models`): the packaged model first,
    then every alias (the OpenAI names and any configured extras), in table order."""
    names = [PACKAGED_NAME]
    for name in load_aliases(overrides):
        if name not in names:
            names.append(name)
    return names
