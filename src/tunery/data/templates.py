"""Build training records from table rows: `--prompt`/`--completion` templates and `--where` filters.

Templates use Python format fields over column names (`"{review_title}\\n\\n{review_body}"`);
backslash escapes typed on a shell command line (`\\n`, `\\t`, `\\\\`) are understood. `--where`
is a small, safe expression language parsed with `ast` and evaluated by walking a whitelist of
nodes (never `eval`): comparisons (`==`, `!=`, `<`, `<=`, `>`, `>=`, `in`, `not in`) between
columns and literals, lists of literals, and `and`/`or`/`not`.
"""

from __future__ import annotations

import ast
import re
import string
from operator import itemgetter
from collections.abc import Callable, Iterable
from typing import Any

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}
_ESCAPE_RE = re.compile(r"\\([ntr\\])")


class TemplateError(ValueError):
    """A template or filter that cannot be used (a usage error)."""


def unescape(text: str) -> str:
    """Turn the two characters `\\n` typed on a command line into a newline (also `\\t`, `\\r`, `\\\\`)."""
    return _ESCAPE_RE.sub(lambda m: _ESCAPES[m.group(1)], text)


class Template:
    """A format-style template over a row's columns."""

    def __init__(self, text: str, option: str = "template"):
        self.text = unescape(text)
        self.option = option
        try:
            parsed = list(string.Formatter().parse(self.text))
        except ValueError as exc:
            raise TemplateError(f"{option} {text!r}: {exc} (write {{{{ and }}}} for literal braces)") from None
        self.fields: list[str] = []
        for _, name, spec, conversion in parsed:
            if name is None:
                continue
            if name == "" or name.isdigit():
                raise TemplateError(f"{option} {text!r}: fields must name a column, e.g. {{review_body}}")
            if "." in name or "[" in name:
                raise TemplateError(f"{option} {text!r}: field {{{name}}} must be a plain column name")
            self.fields.append(name)

    def check_columns(self, columns: Iterable[str]) -> None:
        columns = list(columns)
        for name in self.fields:
            if name not in columns:
                raise TemplateError(
                    f"{self.option}: unknown column '{name}'; the columns are: {', '.join(columns) or '(none)'}"
                )

    def render(self, row: dict[str, Any]) -> str:
        return self.text.format_map(row if isinstance(row, _Row) else _Row.of(row))

    def row_renderer(self, columns: list[str]) -> Callable[[list[str]], str]:
        """`render` for rows given as lists of strings in `columns` order (CSV rows).

        A template that is one bare field is just that cell: `"{x}".format_map(row)` of a string
        is the string itself; the last column of a repeated name wins, as in `dict(zip(...))`.
        """
        parsed = list(string.Formatter().parse(self.text))
        if len(parsed) == 1 and parsed[0][0] == "" and parsed[0][2] == "" and parsed[0][3] is None:
            name = parsed[0][1]
            if name in columns:
                return itemgetter(len(columns) - 1 - columns[::-1].index(name))
        text = self.text
        return lambda row: text.format_map(_Row(zip(columns, row)))


class _Row(dict):
    """A row for `format_map`: missing columns and None render as empty strings, like empty cells."""

    def __missing__(self, key: str) -> str:
        return ""

    @classmethod
    def of(cls, row: dict[str, Any]) -> _Row:
        wrapped = cls(row)
        if None in wrapped.values():
            for key, value in row.items():
                if value is None:
                    wrapped[key] = ""
        return wrapped


# -- --where --------------------------------------------------------------------------------

_COMPARE: dict[type, Callable[[Any, Any], bool]] = {
    ast.Eq: lambda a, b: a == b,
    ast.NotEq: lambda a, b: a != b,
    ast.Lt: lambda a, b: a < b,
    ast.LtE: lambda a, b: a <= b,
    ast.Gt: lambda a, b: a > b,
    ast.GtE: lambda a, b: a >= b,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}


class Where:
    """A compiled `--where` filter: `Where("language == 'en' and stars >= 4")(row) -> bool`."""

    def __init__(self, expr: str):
        self.expr = expr
        try:
            tree = ast.parse(expr.strip(), mode="eval")
        except SyntaxError as exc:
            raise TemplateError(f"--where {expr!r}: invalid expression ({exc.msg})") from None
        self.columns: list[str] = []
        self._fn = self._compile(tree.body)

    def check_columns(self, columns: Iterable[str]) -> None:
        columns = list(columns)
        for name in self.columns:
            if name not in columns:
                raise TemplateError(f"--where: unknown column '{name}'; the columns are: {', '.join(columns) or '(none)'}")

    def __call__(self, row: dict[str, Any]) -> bool:
        return bool(self._fn(row))

    def _compile(self, node: ast.AST) -> Callable[[dict], Any]:
        if isinstance(node, ast.BoolOp):
            parts = [self._compile(v) for v in node.values]
            if isinstance(node.op, ast.And):
                return lambda row: all(p(row) for p in parts)
            return lambda row: any(p(row) for p in parts)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            inner = self._compile(node.operand)
            return lambda row: not inner(row)
        if isinstance(node, ast.Compare):
            operands = [self._value(node.left)] + [self._value(c) for c in node.comparators]
            ops = []
            for op in node.ops:
                if type(op) not in _COMPARE:
                    raise TemplateError(f"--where {self.expr!r}: operator {type(op).__name__} is not allowed")
                ops.append(_COMPARE[type(op)])

            def compare(row: dict) -> bool:
                values = [v(row) for v in operands]
                return all(_apply(op, values[i], values[i + 1]) for i, op in enumerate(ops))

            return compare
        if isinstance(node, ast.Name):  # a bare column: true when the cell is not empty
            value = self._value(node)
            return lambda row: value(row) not in ("", None)
        raise TemplateError(
            f"--where {self.expr!r}: {type(node).__name__} is not allowed "
            "(use comparisons such as language == 'en', stars >= 4, label in ['a', 'b'], with and/or/not)"
        )

    def _value(self, node: ast.AST) -> Callable[[dict], Any]:
        if isinstance(node, ast.Name):
            name = node.id
            self.columns.append(name)
            return lambda row: row.get(name)
        if isinstance(node, ast.Constant) and isinstance(node.value, (str, int, float, bool, type(None))):
            constant = node.value
            return lambda row: constant
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
            if isinstance(node.operand.value, (int, float)) and not isinstance(node.operand.value, bool):
                negative = -node.operand.value
                return lambda row: negative
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            items = [self._value(e) for e in node.elts]
            if any(not isinstance(e, ast.Constant) for e in node.elts):
                raise TemplateError(f"--where {self.expr!r}: lists may only hold literal values")
            constant_list = [i({}) for i in items]
            return lambda row: constant_list
        raise TemplateError(f"--where {self.expr!r}: {type(node).__name__} is not allowed in a comparison")


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _apply(op: Callable[[Any, Any], bool], a: Any, b: Any) -> bool:
    """Compare with table semantics: a number against a cell compares numerically ("5" == 5)."""
    if isinstance(b, list):
        found = any(_apply(_COMPARE[ast.Eq], a, x) for x in b)
        if op is _COMPARE[ast.In]:
            return found
        if op is _COMPARE[ast.NotIn]:
            return not found
        return False
    a_num, b_num = isinstance(a, (int, float)) and not isinstance(a, bool), isinstance(b, (int, float)) and not isinstance(b, bool)
    if a_num or b_num:
        na, nb = _number(a), _number(b)
        if na is None or nb is None:
            return op is _COMPARE[ast.NotEq]
        return op(na, nb)
    if a is None:
        a = ""
    if b is None:
        b = ""
    try:
        return op(a, b)
    except TypeError:
        return op(str(a), str(b))


def build_record(
    row: dict[str, Any], prompt: Template | None, completion: Template, system: str | None, to: str
) -> dict[str, Any]:
    """One output record from a row: `{"prompt","completion"}` or chat `{"messages": [...]}`."""
    row = _Row.of(row)
    p = prompt.render(row) if prompt is not None else ""
    c = completion.render(row)
    if to == "chat":
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": p})
        messages.append({"role": "assistant", "content": c})
        return {"messages": messages}
    return {"prompt": p, "completion": c}
