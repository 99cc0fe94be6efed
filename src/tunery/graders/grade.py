"""Validate and run grader objects. (Skeleton: string_check only; the other types follow.)"""

from __future__ import annotations

import time
from typing import Any

from tunery.graders.judge import Judge
from tunery.graders.result import GradeResult, GraderError
from tunery.graders.template import MissingVariable, render

STRING_CHECK_OPS = ("eq", "ne", "neq", "like", "ilike")


def _require(grader: dict, key: str, kind: type, param: str) -> Any:
    if key not in grader:
        raise GraderError(f"Missing required parameter: '{param}.{key}'.", f"{param}.{key}")
    value = grader[key]
    if not isinstance(value, kind):
        raise GraderError(f"Invalid type for '{param}.{key}': expected {kind.__name__}.", f"{param}.{key}")
    return value


def validate(grader: Any, *, context: str = "run", param: str = "grader") -> None:
    if not isinstance(grader, dict):
        raise GraderError(f"Invalid type for '{param}': expected an object.", param)
    kind = _require(grader, "type", str, param)
    if kind != "string_check":
        raise GraderError(f"Invalid value for '{param}.type': unsupported grader type {kind!r}.", f"{param}.type")
    _require(grader, "name", str, param)
    _require(grader, "input", str, param)
    _require(grader, "reference", str, param)
    op = _require(grader, "operation", str, param)
    if op not in STRING_CHECK_OPS:
        raise GraderError(f"Invalid value for '{param}.operation': expected one of eq, ne, like, ilike; got {op!r}.", f"{param}.operation")


def _string_check(grader: dict, sample: dict, item: dict) -> GradeResult:
    result = GradeResult(reward=0.0, name=grader["name"], type="string_check")
    namespaces = {"sample": sample, "item": item}
    try:
        got, ref = render(grader["input"], namespaces), render(grader["reference"], namespaces)
    except MissingVariable:
        result.errors["invalid_variable_error"] = True
        return result
    op = grader["operation"]
    ok = {
        "eq": got == ref, "ne": got != ref, "neq": got != ref,
        "like": ref in got, "ilike": ref.lower() in got.lower(),
    }[op]
    result.reward = 1.0 if ok else 0.0
    return result


def grade_batch(grader: dict, pairs: list[tuple[dict, dict]], judge: Judge | None = None) -> list[GradeResult]:
    out = []
    for sample, item in pairs:
        start = time.perf_counter()
        result = _string_check(grader, sample, item)
        result.execution_time = time.perf_counter() - start
        out.append(result)
    return out


def passed(grader: dict, result: GradeResult) -> bool:
    """The Evals pass rule: string_check at 1, label_model on passing_labels, others at pass_threshold."""
    if grader.get("type") == "label_model":
        return result.label is not None and result.label in grader.get("passing_labels", [])
    if grader.get("type") == "string_check":
        return result.reward >= 1.0
    return result.reward >= float(grader.get("pass_threshold", 1.0))
