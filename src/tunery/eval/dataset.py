"""Evaluation examples from a JSONL file: the prompt a model sees and the reference it should give.

Chat records (`messages`): the prompt is every message before the final assistant message, which
is the reference. Legacy records: the prompt is `prompt`, the reference `completion`. Which is
which is `tunery.data.formats`' rule, the one prepare, uploads and the trainer use.

Files are read a line at a time, and the examples an evaluation keeps are bounded: past
`max_bytes` of example lines (`TUNERY_MAX_EVAL_BYTES` for the API) reading stops with
`EvalTooLarge`, so a 512 MB upload never sits in memory; `limit` evaluates the first examples.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tunery.data.formats import CHAT, COMPLETION, DPO, FileFormat, FormatError, record_format

MAX_LINE_BYTES = 64 * 1024 * 1024  # one line is read whole: bound it too


class EvalError(ValueError):
    """Bad input for an evaluation: the message names the file, line and field."""


class EvalTooLarge(EvalError):
    """The examples to evaluate exceed the bytes an evaluation may hold."""


@dataclass(frozen=True)
class Example:
    line: int  # 1-based line in the file
    kind: str  # CHAT | COMPLETION
    prompt: list[dict] | str  # the messages before the reference, or the legacy prompt text
    reference: str

    def as_record(self) -> dict:
        """The example as a training record (prompt + reference), for scoring the reference."""
        if self.kind == CHAT:
            return {"messages": [*self.prompt, {"role": "assistant", "content": self.reference}]}
        return {"prompt": self.prompt, "completion": self.reference}


def _content(value, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(p, dict) and isinstance(p.get("text"), str) for p in value):
        return "".join(p["text"] for p in value)
    raise EvalError(f"{where}: 'content' must be a string or a list of text parts")


def parse_example(data, where: str, line: int = 0, file_format: FileFormat | None = None) -> Example:
    """One record as an example; `file_format` (when given) also requires the file's format."""
    try:
        fmt = file_format.check(data, line) if file_format is not None else record_format(data)
    except FormatError as exc:
        raise EvalError(f"{where}: {exc.message}") from None
    if fmt == DPO:
        raise EvalError(f"{where}: preference (DPO) records cannot be evaluated: use chat or prompt/completion records")
    if fmt == CHAT:
        messages = data["messages"]
        if not isinstance(messages, list) or not messages:
            raise EvalError(f"{where}: 'messages' must be a non-empty list")
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                raise EvalError(f"{where}: messages[{i}] needs a 'role'")
        last = messages[-1]
        if last["role"] != "assistant":
            raise EvalError(f"{where}: messages[{len(messages) - 1}]: the last message must be the assistant's reference answer (role 'assistant', got {last['role']!r})")
        if len(messages) < 2:
            raise EvalError(f"{where}: 'messages' has no prompt before the assistant's answer")
        reference = _content(last.get("content"), f"{where}: messages[{len(messages) - 1}]")
        prompt = [{**m, "content": _content(m.get("content", ""), f"{where}: messages[{i}]")} for i, m in enumerate(messages[:-1])]
        return Example(line, CHAT, prompt, reference)
    prompt, completion = data.get("prompt"), data.get("completion")
    if not isinstance(prompt, str):
        raise EvalError(f"{where}: 'prompt' must be a string")
    if not isinstance(completion, str):
        raise EvalError(f"{where}: 'completion' must be a string (the reference answer)")
    return Example(line, COMPLETION, prompt, completion)


def load_examples(path: str | Path, limit: int | None = None, max_bytes: int | None = None) -> list[Example]:
    """The examples of a JSONL file (the first `limit`), all of one format, read line by line."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return read_examples(f, str(path), limit, max_bytes)
    except FileNotFoundError:
        raise EvalError(f"{path}: file not found") from None
    except OSError as exc:
        raise EvalError(f"{path}: cannot read: {exc.strerror or type(exc).__name__}") from None


def read_examples(f, name: str, limit: int | None = None, max_bytes: int | None = None) -> list[Example]:
    """Examples from a binary JSONL stream, one line in memory at a time; errors say `name, line N: ...`.

    Raises `EvalTooLarge` once the example lines kept pass `max_bytes` (None: no bound).
    """

    def lines():
        for number, raw in enumerate(iter(lambda: f.readline(MAX_LINE_BYTES + 1), b""), start=1):
            if len(raw) > MAX_LINE_BYTES:
                raise EvalError(f"{name}, line {number}: longer than {MAX_LINE_BYTES:,} bytes")
            try:
                yield raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise EvalError(f"{name}, line {number}: not valid UTF-8 (byte {exc.start + 1} of the line)") from None

    return parse_lines(lines(), name, limit, max_bytes)


def parse_lines(lines: Iterable[str], name: str, limit: int | None = None, max_bytes: int | None = None) -> list[Example]:
    """Examples from JSONL lines (consumed lazily: reading stops at `limit`); errors say `name, line N: ...`."""
    examples: list[Example] = []
    file_format = FileFormat()
    held = 0
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        if limit is not None and len(examples) >= limit:
            break
        held += len(text.encode("utf-8"))
        if max_bytes is not None and held > max_bytes:
            raise EvalTooLarge(
                f"{name}: the examples to evaluate hold more than {max_bytes:,} bytes (the most an evaluation may hold); "
                f"evaluate the first ones with `limit` (line {number} is past the bound)"
            )
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise EvalError(f"{name}, line {number}: not valid JSON ({exc.msg})") from None
        examples.append(parse_example(data, f"{name}, line {number}", number, file_format))
    if not examples:
        raise EvalError(f"{name}: the file has no examples")
    return examples
