"""Base models the operator registered by name (`tunery models add NAME SPEC`).

A JSON object `{name: spec}` in a file of the Tunery home (`$TUNERY_HOME/models.json`, which an
operator may also edit by hand); the server reads it on each lookup, so a model added while it
runs is offered at once. A spec is anything `resolve_model` accepts (a folder, a .gguf file, a
cached Hugging Face id, an alias): the operator names weights on their own machine; clients only
ever name the registered NAME.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

from tunery.models.errors import TuneryModelError

# Names become the base part of `ft:{base}:{org}:…` names: no ':' or spaces; not path-like.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(?:/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
NAME_MAX = 128


def check_name(name: str) -> str:
    """`name` if it can name a registered model, else `TuneryModelError` saying why."""
    if not isinstance(name, str) or len(name) > NAME_MAX or not _NAME.match(name) or ".." in name:
        raise TuneryModelError(
            f"invalid model name {name!r}: use letters, digits, '.', '_', '-' (and at most one '/'), "
            f"starting with a letter or digit, at most {NAME_MAX} characters"
        )
    return name


def load_registered(path: Path) -> dict[str, str]:
    """The registered models in `path` ({} when the file does not exist)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise TuneryModelError(f"{path}: cannot read it ({exc.strerror})") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise TuneryModelError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) and v.strip() for v in data.values()):
        raise TuneryModelError(f"{path}: expected a JSON object mapping model names to non-empty specs")
    for name in data:
        check_name(name)
    return {name: spec.strip() for name, spec in data.items()}


def save_registered(path: Path, table: dict[str, str]) -> None:
    """Write the table atomically (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(table, f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
