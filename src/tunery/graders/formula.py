"""The `multi` grader's `calculate_output`: a small arithmetic language, parsed with `ast` and
walked node by node (never `eval`), so a formula can only do arithmetic on its variables.

Grammar: numbers, variable names, `+ - * /`, `^` and `**` (power, right-associative, above unary
minus: `-2^2` is -4), unary `+`/`-`, parentheses, and the calls `min(a, ...)`, `max(a, ...)`,
`abs(x)`, `floor(x)`, `ceil(x)`, `exp(x)`, `sqrt(x)`, `log(x)` (natural) or `log(x, base)`.
All arithmetic is in floats, so `10^10^10` overflows at once instead of building a huge integer.
"""

from __future__ import annotations

import ast
import math
from typing import Callable

MAX_LENGTH = 4096  # bounds the parse; a grader formula is a line, not a program
MAX_DEPTH = 100  # bounds the tree walks' recursion (a sum of n terms is n deep)

# name -> (function, fewest arguments, most arguments or None for any)
FUNCTIONS: dict[str, tuple[Callable[..., float], int, int | None]] = {
    "min": (lambda *a: min(a), 1, None), "max": (lambda *a: max(a), 1, None),
    "abs": (abs, 1, 1), "floor": (math.floor, 1, 1), "ceil": (math.ceil, 1, 1),
    "exp": (math.exp, 1, 1), "sqrt": (math.sqrt, 1, 1), "log": (math.log, 1, 2),
}
_BINARY = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
           ast.Div: lambda a, b: a / b, ast.Pow: lambda a, b: a ** b}
_UNARY = {ast.USub: lambda a: -a, ast.UAdd: lambda a: a}


class FormulaSyntaxError(ValueError):
    """The formula is not in the grammar (raised while compiling, i.e. in `validate`)."""


class FormulaValueError(ValueError):
    """The formula has no finite value for these inputs (division by zero, log(0), overflow)."""


def compile_formula(text: str, variables: set[str]) -> ast.expr:
    """The checked expression tree; `FormulaSyntaxError` says what is wrong."""
    if not text.strip():
        raise FormulaSyntaxError("the formula is empty")
    if len(text) > MAX_LENGTH:
        raise FormulaSyntaxError(f"the formula is longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(text.replace("^", "**").strip(), mode="eval").body
    except SyntaxError:
        raise FormulaSyntaxError(f"cannot parse {text!r}") from None
    except RecursionError:  # CPython's parser gives up on very deep nesting
        raise FormulaSyntaxError(f"the formula is nested deeper than {MAX_DEPTH} levels") from None
    _check(tree, variables, 0)
    return tree


def _check(node: ast.AST, variables: set[str], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise FormulaSyntaxError(f"the formula is nested deeper than {MAX_DEPTH} levels")
    depth += 1
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise FormulaSyntaxError(f"{node.value!r} is not a number")
    elif isinstance(node, ast.Name):
        if node.id not in variables:
            known = ", ".join(sorted(variables)) or "none"
            raise FormulaSyntaxError(f"unknown variable {node.id!r} (the graders' keys are: {known})")
    elif isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        _check(node.left, variables, depth)
        _check(node.right, variables, depth)
    elif isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        _check(node.operand, variables, depth)
    elif isinstance(node, ast.Call):
        name = node.func.id if isinstance(node.func, ast.Name) else None
        if name not in FUNCTIONS or node.keywords:
            raise FormulaSyntaxError(f"unknown function in {ast.unparse(node)!r}; "
                                     f"allowed: {', '.join(FUNCTIONS)}")
        _, low, high = FUNCTIONS[name]
        if len(node.args) < low or (high is not None and len(node.args) > high) or any(
                isinstance(a, ast.Starred) for a in node.args):
            raise FormulaSyntaxError(f"wrong number of arguments in {ast.unparse(node)!r}")
        for arg in node.args:
            _check(arg, variables, depth)
    else:
        raise FormulaSyntaxError(f"{ast.unparse(node)!r} is not allowed; use numbers, the graders' keys, "
                                 "+ - * / ^, parentheses and " + ", ".join(FUNCTIONS))


def evaluate(tree: ast.expr, values: dict[str, float]) -> float:
    """The formula's value; `FormulaValueError` when it is not a finite number."""
    try:
        value = float(_eval(tree, values))
    except (ArithmeticError, ValueError) as exc:  # ZeroDivisionError, OverflowError, math domain
        raise FormulaValueError(str(exc)) from None
    if not math.isfinite(value):
        raise FormulaValueError(f"the result is {value}")
    return value


def _eval(node: ast.expr, values: dict[str, float]) -> float:
    # Only the node kinds `_check` admitted reach here.
    if isinstance(node, ast.Constant):
        return float(node.value)
    if isinstance(node, ast.Name):
        return float(values[node.id])
    if isinstance(node, ast.BinOp):
        out = _BINARY[type(node.op)](_eval(node.left, values), _eval(node.right, values))
        if isinstance(out, complex):  # (-8) ^ 0.5 in floats
            raise ValueError("complex result")
        return out
    if isinstance(node, ast.UnaryOp):
        return _UNARY[type(node.op)](_eval(node.operand, values))
    function = FUNCTIONS[node.func.id][0]
    return float(function(*(_eval(a, values) for a in node.args)))
