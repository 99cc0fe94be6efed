"""`multi`: run several graders and combine their rewards with the `calculate_output` formula.

`graders` takes three forms (the SPEC and the guides disagree, reference §9.2):
- an object mapping key -> grader (G-GRADERS, G-RFT): the keys are the formula's variables;
- a single grader object (the SPEC schema's oneOf), told apart by its string `type`: keyed by its `name`;
- an array of graders (the SPEC example): each keyed by its `name`.
Keys must be identifiers, neither a formula function nor a Python keyword, so that the formula can
name them. `multi` cannot be nested and is not an Evals testing criterion.
"""

from __future__ import annotations

import keyword
import re
from typing import Any

from tunery.graders.checks import require
from tunery.graders.formula import FUNCTIONS, FormulaSyntaxError, FormulaValueError, compile_formula, evaluate
from tunery.graders.result import GradeResult, GraderError

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def sub_graders(grader: dict, param: str = "grader") -> dict[str, dict]:
    """`graders` in its map form, whichever form was sent; `GraderError` for a bad shape or key."""
    return {key: sub for key, (sub, _) in _named(grader, param).items()}


def _named(grader: dict, param: str) -> dict[str, tuple[dict, str]]:
    """key -> (sub-grader, its dotted path in the form `graders` was sent)."""
    where = f"{param}.graders"
    graders = require(grader, "graders", (dict, list), param)
    if isinstance(graders, dict) and isinstance(graders.get("type"), str):
        return {_name_key(graders, where): (graders, where)}
    named: dict[str, tuple[dict, str]] = {}
    if isinstance(graders, list):
        for i, sub in enumerate(graders):
            key = _name_key(sub, f"{where}[{i}]")
            if key in named:
                raise GraderError(f"Invalid value for '{where}[{i}].name': {key!r} is used by another grader; "
                                  "names key the formula's variables and must be unique.", f"{where}[{i}].name")
            named[key] = (sub, f"{where}[{i}]")
    else:
        for key, sub in graders.items():
            _check_key(key, f"{where}.{key}", what="key")
            named[key] = (sub, f"{where}.{key}")
    if not named:
        raise GraderError(f"Invalid value for '{where}': at least one grader is required.", where)
    return named


def _name_key(sub: Any, where: str) -> str:
    if not isinstance(sub, dict):
        raise GraderError(f"Invalid type for '{where}': expected an object.", where)
    name = require(sub, "name", str, where)
    _check_key(name, f"{where}.name", what="name")
    return name


def _check_key(key: str, where: str, what: str) -> None:
    if not _KEY.match(key) or keyword.iskeyword(key) or key in FUNCTIONS:
        raise GraderError(f"Invalid value for '{where}': the {what} {key!r} must be a formula variable: letters, "
                          "digits and underscores, not starting with a digit, and not a function name "
                          f"({', '.join(FUNCTIONS)}) or reserved word.", where)


def validate(grader: dict, param: str, context: str) -> None:
    from tunery.graders import grade  # grade imports this module for KINDS

    if context == "eval":
        raise GraderError(f"Invalid value for '{param}.type': 'multi' graders are for reinforcement fine-tuning "
                          "and graders/run, not Evals testing criteria.", f"{param}.type")
    require(grader, "name", str, param)
    subs = _named(grader, param)
    for sub, where in subs.values():
        if not isinstance(sub, dict):
            raise GraderError(f"Invalid type for '{where}': expected an object.", where)
        if sub.get("type") == "multi":
            raise GraderError(f"Invalid value for '{where}.type': a multi grader cannot contain another multi grader.",
                              f"{where}.type")
        grade.validate(sub, context=context, param=where, nested=True)
    formula = require(grader, "calculate_output", str, param)
    try:
        compile_formula(formula, set(subs))
    except FormulaSyntaxError as exc:
        raise GraderError(f"Invalid value for '{param}.calculate_output': {exc}.", f"{param}.calculate_output") from None


def grade(grader: dict, pairs: list[tuple[dict, dict]], judge=None) -> list[GradeResult]:
    """Each sub-grader grades the whole batch in one call (model graders batch their prompts); a
    label_model enters the formula as 1.0/0.0 by its passing_labels, the others as their reward."""
    from tunery.graders import grade as dispatch

    subs = sub_graders(grader)
    tree = compile_formula(grader["calculate_output"], set(subs))
    graded = {key: dispatch.grade_batch(sub, pairs, judge) for key, sub in subs.items()}
    out = []
    for row in range(len(pairs)):
        result = GradeResult(reward=0.0, name=grader["name"], type="multi")
        for key, sub in subs.items():
            part = graded[key][row]
            result.sub_rewards[key] = (1.0 if dispatch.passed(sub, part) else 0.0) \
                if sub["type"] == "label_model" else part.reward
            merge_into(result, part)
        try:
            result.reward = evaluate(tree, result.sub_rewards)
        except FormulaValueError:
            # The only formula flag in RunGraderResponse.metadata.errors; here it means the formula
            # has no finite value for these sub-rewards (division by zero, log(0), overflow).
            result.errors["formula_parse_error"] = True
        out.append(result)
    return out


def merge_into(result: GradeResult, part: GradeResult) -> None:
    """A sub-grader's error flags (OR-ed; the first detail string kept) and token usage (summed per model)."""
    for key, value in part.errors.items():
        if isinstance(value, bool):
            result.errors[key] = bool(result.errors.get(key)) or value
        else:  # a *_details / *_type string, or None
            result.errors[key] = result.errors.get(key) or value
    for model, usage in part.token_usage.items():
        total = result.token_usage.setdefault(model, {})
        for name, count in usage.items():
            total[name] = total.get(name, 0) + int(count)
