"""`label_model`: a model picks one of `labels`; reward 1 when it is one of `passing_labels`.

Where it is allowed is decided in `grade.validate` (an Evals criterion, or inside a `multi`).

Parsing: the first JSON object with a string `result`, matched to a label ignoring case and
surrounding space; without one, the whole answer so matched (quotes and a final period dropped),
else the label that appears first in the answer as a whole word (the longest at a tie). No label
is `model_grader_parse_error` with reward 0 and no `label`.
"""

from __future__ import annotations

import json
import re

from tunery.graders.checks import check_type, require
from tunery.graders.model_grader import ask, first_json_object, validate_common
from tunery.graders.result import GradeResult, GraderError


def validate(grader: dict, param: str, context: str) -> None:
    validate_common(grader, param)
    labels = require(grader, "labels", list, param)
    if not labels:
        raise GraderError(f"Invalid value for '{param}.labels': expected at least one label.", f"{param}.labels")
    for i, label in enumerate(labels):
        check_type(label, str, f"{param}.labels[{i}]")
    passing = require(grader, "passing_labels", list, param)
    for i, label in enumerate(passing):
        if check_type(label, str, f"{param}.passing_labels[{i}]") not in labels:
            raise GraderError(f"Invalid value for '{param}.passing_labels[{i}]': {label!r} is not one of the labels "
                              "(passing_labels must be a subset of labels).", f"{param}.passing_labels[{i}]")


def parse_label(text: str, labels: list[str]) -> str | None:
    by_folded = {}
    for label in labels:
        by_folded.setdefault(label.strip().casefold(), label)
    found = first_json_object(text)
    if found is not None and isinstance(found.get("result"), str):
        return by_folded.get(found["result"].strip().casefold())
    whole = text.strip().strip("\"'`").rstrip(".").strip().casefold()
    if whole in by_folded:
        return by_folded[whole]
    best = None  # (position, -length, label)
    for label in labels:
        if not label.strip():
            continue
        m = re.search(rf"(?<!\w){re.escape(label.strip())}(?!\w)", text, re.IGNORECASE)
        if m and (best is None or (m.start(), -len(label)) < best[:2]):
            best = (m.start(), -len(label), label)
    return best[2] if best else None


def grade(grader: dict, pairs: list[tuple[dict, dict]], judge=None) -> list[GradeResult]:
    labels, passing = grader["labels"], grader["passing_labels"]
    instruction = ("Answer as asked above with only a JSON object, no other text: "
                   f'{{"result": "<label>"}}, where <label> is one of {", ".join(json.dumps(x) for x in labels)}.')
    response_format = {"type": "json_schema", "json_schema": {"name": "label_model_result", "strict": True, "schema": {
        "type": "object", "properties": {"result": {"type": "string", "enum": list(labels)}},
        "required": ["result"], "additionalProperties": False}}}

    def read(result: GradeResult, text: str) -> None:
        label = parse_label(text, labels)
        if label is None:
            result.errors["model_grader_parse_error"] = True
            return
        result.label = label
        result.reward = 1.0 if label in passing else 0.0

    return ask(grader, pairs, judge, instruction, response_format, read)
