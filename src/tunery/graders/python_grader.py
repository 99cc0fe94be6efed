"""`python`: the user's `grade(sample, item) -> float`, run in a child process (`sandbox`).

`validate` only parses the source (it never runs it): it must compile and define a top-level
`def grade` callable with two positional arguments. The reward is the returned number as it is,
unclamped; bools, NaN, infinities and non-numbers are runtime errors with reward 0.
"""

from __future__ import annotations

import ast
import math
from typing import Any

from tunery.graders import sandbox
from tunery.graders.checks import optional, require
from tunery.graders.result import GradeResult, GraderError

MAX_SOURCE_BYTES = 256 * 1024  # OpenAI: "source < 256 kB"


def validate(grader: dict, param: str, context: str) -> None:
    require(grader, "name", str, param)
    source = require(grader, "source", str, param)
    # Any tag is accepted and none selects anything: the grader runs in Tunery's own Python.
    optional(grader, "image_tag", str, param)
    threshold = optional(grader, "pass_threshold", (int, float), param)
    if threshold is not None and not math.isfinite(threshold):
        raise GraderError(f"Invalid value for '{param}.pass_threshold': must be a finite number.",
                          f"{param}.pass_threshold")
    _check_source(source, f"{param}.source")


def _check_source(source: str, param: str) -> None:
    size = len(source.encode("utf-8", "surrogatepass"))
    if size > MAX_SOURCE_BYTES:
        raise GraderError(f"Invalid value for '{param}': {size} bytes, the limit is {MAX_SOURCE_BYTES}.", param)
    try:
        tree = ast.parse(source, filename="<grader>")
        compile(tree, "<grader>", "exec")  # catches what ast accepts but the compiler does not
    except SyntaxError as exc:
        raise GraderError(f"Invalid value for '{param}': syntax error on line {exc.lineno}: {exc.msg}.", param) from None
    except ValueError as exc:  # a NUL byte in the source
        raise GraderError(f"Invalid value for '{param}': {exc}.", param) from None
    defs = [node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.name == "grade"]
    if not defs:
        raise GraderError(f"Invalid value for '{param}': must define a top-level function "
                          f"'def grade(sample, item)'.", param)
    func = defs[-1]  # the last definition is the one bound when the module has run
    if isinstance(func, ast.AsyncFunctionDef):
        raise GraderError(f"Invalid value for '{param}': 'grade' must not be async.", param)
    if not _takes_two_positional(func.args):
        raise GraderError(f"Invalid value for '{param}': 'grade' (line {func.lineno}) must take exactly two "
                          f"positional arguments, grade(sample, item).", param)


def _takes_two_positional(args: ast.arguments) -> bool:
    """Callable as `grade(sample, item)`: two positional slots (or *args), at most two without
    defaults, and no keyword-only argument without a default."""
    positional = len(args.posonlyargs) + len(args.args)
    required = positional - len(args.defaults)
    kw_required = any(default is None for default in args.kw_defaults)
    return required <= 2 and (positional >= 2 or args.vararg is not None) and not kw_required


def grade(grader: dict, pairs: list[tuple[dict, dict]], judge=None,
          limits: sandbox.Limits | None = None) -> list[GradeResult]:
    try:
        outcomes = sandbox.run_batch(grader["source"], pairs, limits or sandbox.Limits())
    except OSError as exc:  # the child could not be started at all (no memory, no processes)
        outcomes = [sandbox.Outcome(server_error=f"spawn_failed: {exc.strerror or exc}")] * len(pairs)
    return [_result(grader, outcome) for outcome in outcomes]


def _result(grader: dict, outcome: sandbox.Outcome) -> GradeResult:
    result = GradeResult(reward=0.0, name=grader["name"], type="python")
    if outcome.server_error is not None:
        result.errors["python_grader_server_error"] = True
        result.errors["python_grader_server_error_type"] = outcome.server_error
        return result
    problem = outcome.runtime_error if outcome.runtime_error is not None else _bad_value(outcome.value)
    if problem is not None:
        result.errors["python_grader_runtime_error"] = True
        result.errors["python_grader_runtime_error_details"] = problem
        return result
    result.reward = float(outcome.value)
    return result


def _bad_value(value: Any) -> str | None:
    # The child checked the type already, but its output is not trusted: check again here.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"grade must return a float, got {type(value).__name__}"
    if not math.isfinite(value):
        return f"grade returned {value}, not a finite number"
    return None
