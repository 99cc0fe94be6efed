"""`{{ item.a.b[0] }}` / `{{ sample.output_text }}` templates (a JSON-path subset)."""

from __future__ import annotations

import json
import re
from typing import Any

_VAR = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
_PART = re.compile(r"\.?([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")


class MissingVariable(KeyError):
    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


def lookup(path: str, namespaces: dict[str, Any]) -> Any:
    pos, value, first = 0, None, True
    while pos < len(path):
        m = _PART.match(path, pos)
        if not m or (first and m.group(1) is None):
            raise MissingVariable(path)
        key, index = m.group(1), m.group(2)
        if first:
            if key not in ("item", "sample") or key not in namespaces:
                raise MissingVariable(path)
            value, first = namespaces[key], False
        elif key is not None:
            if not isinstance(value, dict) or key not in value:
                raise MissingVariable(path)
            value = value[key]
        else:
            i = int(index)
            if not isinstance(value, list) or i >= len(value):
                raise MissingVariable(path)
            value = value[i]
        pos = m.end()
    if first:
        raise MissingVariable(path)
    return value


def render(template: str, namespaces: dict[str, Any]) -> str:
    """Strings are inserted as they are; other values as JSON."""
    def one(m: re.Match) -> str:
        value = lookup(m.group(1), namespaces)
        return value if isinstance(value, str) else json.dumps(value)
    return _VAR.sub(one, template)


def variables(template: str) -> list[str]:
    return [m.group(1) for m in _VAR.finditer(template)]
