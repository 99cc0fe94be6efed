"""Validate and run grader objects: one module per grader type, each with
`validate(grader, param, context)` and `grade(grader, pairs, judge) -> list[GradeResult]`.

Types not listed in `KINDS` are refused by `validate` with the field named, never half-run.
"""

from __future__ import annotations

import time
from typing import Any

from tunery.graders import label_model, multi, python_grader, score_model, string_check, text_similarity
from tunery.graders.checks import require
from tunery.graders.judge import Judge
from tunery.graders.result import GradeResult, GraderError

KINDS = {
    "string_check": string_check,
    "text_similarity": text_similarity,
    "python": python_grader,
    "score_model": score_model,
    "label_model": label_model,
    "multi": multi,
}
# The spec's RunGraderRequest (graders/run, validate, RFT) lists no label_model at the top level;
# it is allowed as an Evals testing criterion and inside a multi grader (openai-methods.md §4.2).
TOP_LEVEL_REFUSED = {"run": ("label_model",), "rft": ("label_model",), "eval": ()}
CONTEXTS = ("eval", "run", "rft")


def validate(grader: Any, *, context: str = "run", param: str = "grader", nested: bool = False) -> None:
    """`nested` is True for a multi grader's sub-graders, where every type but multi is allowed."""
    if context not in CONTEXTS:
        raise ValueError(f"context must be one of {CONTEXTS}, got {context!r}")
    if not isinstance(grader, dict):
        raise GraderError(f"Invalid type for '{param}': expected an object.", param)
    kind = require(grader, "type", str, param)
    if kind not in KINDS:
        raise GraderError(f"Invalid value for '{param}.type': unsupported grader type {kind!r}; expected one of "
                          f"{', '.join(KINDS)}.", f"{param}.type")
    if not nested and kind in TOP_LEVEL_REFUSED[context]:
        raise GraderError(f"Invalid value for '{param}.type': a {kind} grader is allowed as an Evals testing "
                          "criterion or inside a multi grader, not as a top-level grader here; use score_model.",
                          f"{param}.type")
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
