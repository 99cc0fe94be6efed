"""`score_model`: a model reads the rendered `input` and answers a number, the reward.

The judge is asked for `{"result": <number>, "steps": [{"description", "conclusion"}]}` (OpenAI's
structured response). Parsing, for engines that cannot constrain decoding: the first JSON object
of the answer that has `result` decides (a number or a numeric string, else a parse error);
without one, the first number in the text. The value is clamped to `range` (default [0, 1]);
no value, or a non-finite one, is `model_grader_parse_error` with reward 0.
"""

from __future__ import annotations

import math
import re

from tunery.graders.checks import check_type, optional
from tunery.graders.model_grader import NUMBER, ask, first_json_object, validate_common
from tunery.graders.result import GradeResult, GraderError

_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")


def validate(grader: dict, param: str, context: str) -> None:
    validate_common(grader, param)
    bounds = optional(grader, "range", list, param)
    if bounds is not None:
        if len(bounds) != 2:  # the spec's min/max items sit where they have no effect (§9.14)
            raise GraderError(f"Invalid value for '{param}.range': expected [min, max], two numbers.", f"{param}.range")
        low, high = (check_type(v, NUMBER, f"{param}.range[{i}]") for i, v in enumerate(bounds))
        if not low < high:
            raise GraderError(f"Invalid value for '{param}.range': the minimum ({low}) must be below the maximum ({high}).",
                              f"{param}.range")


def score_range(grader: dict) -> tuple[float, float]:
    low, high = grader.get("range") or (0, 1)
    return float(low), float(high)


def parse_score(text: str) -> float | None:
    """The number an answer gives, or None (see the module's docstring)."""
    found = first_json_object(text)
    if found is not None and "result" in found:
        value = found["result"]
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            return None
        try:
            number = float(value)
        except ValueError:
            return None
    else:
        m = _NUMBER.search(text)
        if m is None:
            return None
        number = float(m.group())
    return number if math.isfinite(number) else None


def instruction(low: float, high: float) -> str:
    return ("Grade as asked above. Answer with only a JSON object, no other text: "
            f'{{"result": <a number from {low:g} to {high:g}>, "steps": [{{"description": "<what you checked>", '
            '"conclusion": "<what you found>"}]}')


def _format(low: float, high: float) -> dict:
    step = {"type": "object", "properties": {"description": {"type": "string"}, "conclusion": {"type": "string"}},
            "required": ["description", "conclusion"], "additionalProperties": False}
    schema = {"type": "object", "properties": {"result": {"type": "number", "minimum": low, "maximum": high},
                                               "steps": {"type": "array", "items": step}},
              "required": ["result", "steps"], "additionalProperties": False}
    return {"type": "json_schema", "json_schema": {"name": "score_model_result", "strict": True, "schema": schema}}


def grade(grader: dict, pairs: list[tuple[dict, dict]], judge=None) -> list[GradeResult]:
    low, high = score_range(grader)

    def read(result: GradeResult, text: str) -> None:
        value = parse_score(text)
        if value is None:
            result.errors["model_grader_parse_error"] = True
        else:
            result.reward = min(max(value, low), high)

    return ask(grader, pairs, judge, instruction(low, high), _format(low, high), read)
