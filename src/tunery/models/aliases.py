"""Model aliases and the OpenAI-name rule: which local model a base model name means.

Two operator settings decide it. The alias table maps names (any a team adds) to local model
specs: `$TUNERY_MODEL_ALIASES` (JSON text or a path to a JSON file), then a dict passed in (the
registered models of the Tunery home, see `tunery.models.registered`). A target may be another
alias, a local folder, a `.gguf` file, a Hugging Face id, or "default" (the packaged model).

OpenAI model names are not a fixed list: any name the `OpenAINames` rule's pattern matches (by
default every OpenAI chat or completion model name: `gpt-*`, `chatgpt-*`, `o1`, `o4-mini`, the
legacy `ada`/`babbage`/`curie`/`davinci` families) means the rule's target, the default local
model unless the operator says otherwise. An alias of the same name wins over the rule, so a team
can send `gpt-4o` to one model and every other OpenAI name to another.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from tunery.models.errors import TuneryModelError
from tunery.models.packaged import PACKAGED_NAME, PACKAGED_NAMES

ALIASES_ENV = "TUNERY_MODEL_ALIASES"
DEFAULT_TARGET = "default"

# Every OpenAI chat or completion model name, current and to come: no ':' (so never an `ft:` name),
# no '/' (so never a path or a Hugging Face id).
DEFAULT_OPENAI_PATTERN = r"(?:gpt-|chatgpt-)[A-Za-z0-9._-]+|o\d[A-Za-z0-9._-]*|(?:text-)?(?:ada|babbage|curie|davinci)(?:-[A-Za-z0-9._-]+)?"

# Shown in /v1/models so that clients can discover some names; the rule above accepts any other.
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


@dataclass(frozen=True)
class OpenAINames:
    """The rule for OpenAI model names: names matching `pattern` (whole name) mean `target`.
    An empty pattern turns the rule off (then only aliases and registered models are offered)."""

    pattern: str = DEFAULT_OPENAI_PATTERN
    target: str = DEFAULT_TARGET

    @cached_property
    def _regex(self) -> re.Pattern | None:
        if not self.pattern:
            return None
        try:
            return re.compile(self.pattern)
        except re.error as exc:
            raise TuneryModelError(f"the OpenAI model name pattern {self.pattern!r} is not a valid regular expression: {exc}") from None

    def matches(self, name: str) -> bool:
        return self._regex is not None and self._regex.fullmatch(name) is not None


def load_aliases(overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """The alias table in effect: `$TUNERY_MODEL_ALIASES`, then `overrides`."""
    table: dict[str, str] = {}
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


def base_target(name: str, aliases: Mapping[str, str], openai: OpenAINames = OpenAINames()) -> str | None:
    """The spec the base model `name` stands for (aliases followed, then the OpenAI rule), or None
    when `name` is none of: an alias, the packaged model, an OpenAI name the rule accepts.

    This is the whole answer for a remote client: it can only name what the operator offers; the
    spec returned may be a path, but only because the operator's configuration wrote it."""
    if name in aliases:
        target = resolve_alias(name, aliases)
    elif name in PACKAGED_NAMES:
        return name
    elif openai.matches(name):
        target = name
    else:
        return None
    if target not in aliases and openai.matches(target):  # an alias of an OpenAI name, or the name itself
        target = resolve_alias(openai.target, aliases)
    return target


def list_base_models(overrides: Mapping[str, str] | None = None, openai: OpenAINames = OpenAINames()) -> list[str]:
    """Base model names for `/v1/models`: the packaged model, some OpenAI names (when the rule is
    on and accepts them), then every alias (configured and registered), in table order."""
    names = [PACKAGED_NAME, *(n for n in OPENAI_BASE_MODELS if openai.matches(n))]
    for name in load_aliases(overrides):
        if name not in names:
            names.append(name)
    return names
