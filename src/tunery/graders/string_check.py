"""`string_check`: compare a rendered input with a rendered reference (`eq`, `ne` and the guide's
`neq`, `like` = contains, `ilike` = contains ignoring case). Reward 1 or 0."""

from __future__ import annotations

from tunery.graders.checks import require
from tunery.graders.result import GradeResult, GraderError
from tunery.graders.template import MissingVariable, render

OPERATIONS = ("eq", "ne", "neq", "like", "ilike")


def validate(grader: dict, param: str, context: str) -> None:
    require(grader, "name", str, param)
    require(grader, "input", str, param)
    require(grader, "reference", str, param)
    op = require(grader, "operation", str, param)
    if op not in OPERATIONS:
        raise GraderError(f"Invalid value for '{param}.operation': expected one of eq, ne, like, ilike; got {op!r}.",
                          f"{param}.operation")


def _one(grader: dict, sample: dict, item: dict) -> GradeResult:
    result = GradeResult(reward=0.0, name=grader["name"], type="string_check")
    namespaces = {"sample": sample, "item": item}
    try:
        got, ref = render(grader["input"], namespaces), render(grader["reference"], namespaces)
    except MissingVariable:
        result.errors["invalid_variable_error"] = True
        return result
    ok = {
        "eq": got == ref, "ne": got != ref, "neq": got != ref,
        "like": ref in got, "ilike": ref.lower() in got.lower(),
    }[grader["operation"]]
    result.reward = 1.0 if ok else 0.0
    return result


def grade(grader: dict, pairs: list[tuple[dict, dict]], judge=None) -> list[GradeResult]:
    return [_one(grader, sample, item) for sample, item in pairs]
