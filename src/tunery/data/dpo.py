"""Checks for DPO (preference) examples.

Shape: `{"input": {"messages": [...], "tools"?: [...], "parallel_tool_calls"?: bool},
"preferred_output": [assistant message], "non_preferred_output": [assistant message]}`. The older
names `preferred_completion` / `non_preferred_completion` (OpenAI's spec until 2025-07) are accepted
for the outputs; findings name the key the line actually uses.
The input messages and tools go through the chat checks (same codes, fields prefixed with
`input.`); on top of them, stable codes:

Errors:
  data_type                      the line is not a JSON object
  dpo_missing_key                no input, preferred_output or non_preferred_output
  dpo_duplicate_key              an output given under both its current and its older name
  dpo_invalid_input              input is not an object
  dpo_input_ends_with_assistant  the last input message is the assistant's: nothing to answer
  dpo_invalid_output             an output is not a list of exactly one message
  dpo_output_not_assistant       an output message's role is not assistant
  missing_content / content_not_string   an output message without string content

Warnings:
  dpo_identical_outputs          preferred and non-preferred outputs are the same message
  example_unrecognized_key       a top-level key other than the three above (ignored)
"""

from __future__ import annotations

from typing import Any

from tunery.data.chat import check_message, check_messages, check_tools
from tunery.data.findings import Finding, Level

OUTPUT_KEYS = ("preferred_output", "non_preferred_output")
OLD_OUTPUT_KEYS = {"preferred_output": "preferred_completion", "non_preferred_output": "non_preferred_completion"}
DPO_KEYS = ("input", *OUTPUT_KEYS)
KNOWN_KEYS = (*DPO_KEYS, *OLD_OUTPUT_KEYS.values())


def output_key(record: dict, key: str) -> str:
    """The name under which `record` holds output `key` (a name in OUTPUT_KEYS): the current one
    unless only the older spelling is there."""
    old = OLD_OUTPUT_KEYS[key]
    return old if key not in record and old in record else key


def preference_outputs(record: dict) -> tuple[dict, dict]:
    """(preferred, non-preferred) assistant message of a checked record, whichever spelling it uses."""
    return record[output_key(record, "preferred_output")][0], record[output_key(record, "non_preferred_output")][0]


def _err(code: str, message: str, line: int, field: str | None) -> Finding:
    return Finding(code=code, level=Level.ERROR, message=message, line=line, field=field)


def _check_input(value: Any, line: int) -> list[Finding]:
    if not isinstance(value, dict):
        return [_err("dpo_invalid_input", "input must be an object with a messages list", line, "input")]
    if "messages" not in value:
        return [_err("missing_messages_list", "input has no messages list", line, "input.messages")]
    out = check_messages(value["messages"], line, "input.messages")
    if "tools" in value:
        out.extend(check_tools(value["tools"], line, "input.tools"))
    if "parallel_tool_calls" in value and not isinstance(value["parallel_tool_calls"], bool):
        out.append(
            _err("invalid_parallel_tool_calls", "parallel_tool_calls must be true or false", line, "input.parallel_tool_calls")
        )
    messages = value["messages"]
    if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
        if messages[-1].get("role") == "assistant":
            out.append(
                _err(
                    "dpo_input_ends_with_assistant",
                    "the input must end with a message for the assistant to answer, not an assistant message",
                    line,
                    f"input.messages[{len(messages) - 1}].role",
                )
            )
    return out


def _check_output(value: Any, line: int, key: str) -> list[Finding]:
    if not isinstance(value, list) or len(value) != 1:
        return [_err("dpo_invalid_output", f"{key} must be a list of exactly one assistant message", line, key)]
    msg, field = value[0], f"{key}[0]"
    out = check_message(msg, line, field, set())
    if not isinstance(msg, dict):
        return out
    if "role" in msg and msg["role"] != "assistant":
        out.append(_err("dpo_output_not_assistant", f"the {key} message must be the assistant's", line, f"{field}.role"))
    if msg.get("content") is None and not any(f.code == "missing_content" for f in out):
        # Chat lets a tool-calling assistant omit content; a preference needs the text itself.
        out.append(_err("missing_content", f"the {key} message has no content", line, f"{field}.content"))
    return out


def check_dpo_record(record: Any, line: int) -> list[Finding]:
    """Every problem of one DPO example; [] when it is fine."""
    if not isinstance(record, dict):
        return [_err("data_type", f"the line must be a JSON object, not {type(record).__name__}", line, None)]
    out = []
    if "input" not in record:
        out.append(_err("dpo_missing_key", "the example has no input", line, "input"))
    for key in OUTPUT_KEYS:
        old = OLD_OUTPUT_KEYS[key]
        if key in record and old in record:
            # Which one would be trained is a guess: refuse rather than pick.
            out.append(_err("dpo_duplicate_key", f"the example has both {key} and its older name {old}; keep one", line, old))
        elif key not in record and old not in record:
            out.append(_err("dpo_missing_key", f"the example has no {key}", line, key))
    if "input" in record:
        out.extend(_check_input(record["input"], line))
    for key in OUTPUT_KEYS:
        name = output_key(record, key)
        if name in record:
            out.extend(_check_output(record[name], line, name))
    out.extend(
        Finding("example_unrecognized_key", Level.WARNING, f"unrecognized key {key!r} is ignored", line=line, field=key)
        for key in record
        if key not in KNOWN_KEYS
    )
    pref, nonpref = record.get(output_key(record, "preferred_output")), record.get(output_key(record, "non_preferred_output"))
    if isinstance(pref, list) and len(pref) == 1 and pref == nonpref:
        out.append(
            Finding(
                "dpo_identical_outputs",
                Level.WARNING,
                "preferred and non-preferred outputs are identical: the pair teaches nothing",
                line=line,
                field=output_key(record, "non_preferred_output"),
            )
        )
    return out
