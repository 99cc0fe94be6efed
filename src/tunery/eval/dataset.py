"""Evaluation examples from a JSONL file: the prompt a model sees and the reference it should give.

Chat records (`messages`): the prompt is every message before the final assistant message, which
is the reference. Legacy records: the prompt is `prompt`, the reference `completion`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

CHAT, COMPLETION = "chat", "completion"


class EvalError(ValueError):
    """Bad input for an evaluation: the message names the file, line and field."""


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


def parse_example(data, where: str, line: int = 0) -> Example:
    if not isinstance(data, dict):
        raise EvalError(f"{where}: expected a JSON object")
    if "messages" in data:
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
    if "prompt" in data or "completion" in data:
        prompt, completion = data.get("prompt"), data.get("completion")
        if not isinstance(prompt, str):
            raise EvalError(f"{where}: 'prompt' must be a string")
        if not isinstance(completion, str):
            raise EvalError(f"{where}: 'completion' must be a string (the reference answer)")
        return Example(line, COMPLETION, prompt, completion)
    raise EvalError(f"{where}: expected 'messages' (chat) or 'prompt'/'completion' (legacy)")


def load_examples(path: str | Path, limit: int | None = None) -> list[Example]:
    """The examples of a JSONL file (the first `limit`), all of one format."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise EvalError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalError(f"{path}: cannot read: {exc}") from None
    return parse_lines(lines, str(path), limit)


def parse_lines(lines: Iterable[str], name: str, limit: int | None = None) -> list[Example]:
    """Examples from JSONL lines; errors say `name, line N: ...`."""
    examples: list[Example] = []
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        if limit is not None and len(examples) >= limit:
            break
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise EvalError(f"{name}, line {number}: not valid JSON ({exc.msg})") from None
        example = parse_example(data, f"{name}, line {number}", number)
        if examples and example.kind != examples[0].kind:
            raise EvalError(f"{name}, line {number}: a {example.kind} record in a file of {examples[0].kind} records (line {examples[0].line})")
        examples.append(example)
    if not examples:
        raise EvalError(f"{name}: the file has no examples")
    return examples
