"""Field checks shared by the grader types' `validate`: errors name the dotted field path."""

from __future__ import annotations

from typing import Any

from tunery.graders.result import GraderError

_TYPE_NAMES = {str: "string", dict: "object", list: "array", bool: "boolean", int: "integer", float: "number"}


def require(grader: dict, key: str, kind: type | tuple[type, ...], param: str) -> Any:
    """`grader[key]`, which must be present and of `kind` (bool is never a number)."""
    if key not in grader:
        raise GraderError(f"Missing required parameter: '{param}.{key}'.", f"{param}.{key}")
    return check_type(grader[key], kind, f"{param}.{key}")


def optional(grader: dict, key: str, kind: type | tuple[type, ...], param: str, default: Any = None) -> Any:
    if grader.get(key) is None:
        return default
    return check_type(grader[key], kind, f"{param}.{key}")


def check_type(value: Any, kind: type | tuple[type, ...], param: str) -> Any:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    is_bool_as_number = isinstance(value, bool) and bool not in kinds
    if not isinstance(value, kinds) or is_bool_as_number:
        names = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)
        raise GraderError(f"Invalid type for '{param}': expected {names}.", param)
    return value
