"""Validate and run grader objects: one module per grader type, each with
`validate(grader, param, context)` and `grade(grader, pairs, judge) -> list[GradeResult]`.

Types not listed in `KINDS` are refused by `validate` with the field named, never half-run.
"""

from __future__ import annotations

import time
from typing import Any

from tunery.graders import label_model, score_model, string_check
from tunery.graders.checks import require
from tunery.graders.judge import Judge
from tunery.graders.result import GradeResult, GraderError

KINDS = {
    "string_check": string_check,
    "score_model": score_model,
    "label_model": label_model,
}
CONTEXTS = ("eval", "run", "rft")


def validate(grader: Any, *, context: str = "run", param: str = "grader") -> None:
    if context not in CONTEXTS:
        raise ValueError(f"context must be one of {CONTEXTS}, got {context!r}")
    if not isinstance(grader, dict):
        raise GraderError(f"Invalid type for '{param}': expected an object.", param)
    kind = require(grader, "type", str, param)
    if kind not in KINDS:
        raise GraderError(f"Invalid value for '{param}.type': unsupported grader type {kind!r}; expected one of "
                          f"{', '.join(KINDS)}.", f"{param}.type")
    KINDS[kind].validate(grader, param, context)


def grade_batch(grader: dict, pairs: list[tuple[dict, dict]], judge: Judge | None = None) -> list[GradeResult]:
    """One result per `(sample, item)` pair, in order; `grader` must have passed `validate`.
    `execution_time` is the batch's time shared evenly (a model grader's prompts run together)."""
    if not pairs:
        return []
    start = time.perf_counter()
    out = KINDS[grader["type"]].grade(grader, pairs, judge)
    each = (time.perf_counter() - start) / len(pairs)
    for result in out:
        result.execution_time = each
    return out


def passed(grader: dict, result: GradeResult) -> bool:
    """The Evals pass rule: string_check at 1, label_model on passing_labels, others at pass_threshold."""
    if grader.get("type") == "label_model":
        return result.label is not None and result.label in grader.get("passing_labels", [])
    if grader.get("type") == "string_check":
        return result.reward >= 1.0
    return result.reward >= float(grader.get("pass_threshold", 1.0))
