"""The `sample` namespace a grader sees, built from a model's answer."""

from __future__ import annotations

import json
from typing import Any


def make_sample(output_text: str, tool_calls: list[dict] | None = None, choices: list[dict] | None = None) -> dict[str, Any]:
    """`output_json` is the answer parsed as JSON when it is a JSON object or array, else None."""
    try:
        parsed = json.loads(output_text)
    except (TypeError, ValueError):
        parsed = None
    if choices is None:
        message: dict[str, Any] = {"role": "assistant", "content": output_text}
        if tool_calls:
            message["tool_calls"] = tool_calls
        choices = [{"index": 0, "message": message, "finish_reason": "tool_calls" if tool_calls else "stop"}]
    return {
        "output_text": output_text,
        "output_json": parsed if isinstance(parsed, (dict, list)) else None,
        "output_tools": list(tool_calls or []),
        "choices": choices,
    }
