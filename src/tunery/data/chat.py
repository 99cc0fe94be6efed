"""Checks for chat-format training examples (`{"messages": [...], "tools"?: [...]}`).

Every error of OpenAI's chat-data cookbook, plus the stricter checks a trainer needs. Each
finding names the line and the field (`messages[2].content`). Codes are stable:

Errors (the example cannot be trained on as it is):
  data_type                          the line is not a JSON object
  missing_messages_list              no `messages`, or it is not a list
  empty_messages                     `messages` is []
  message_data_type                  a message is not an object
  message_missing_key                a message has no `role` (or a `function` message no `name`)
  message_unrecognized_key           a key other than role, content, name, function_call,
                                     tool_calls, tool_call_id, weight
  unrecognized_role                  role not one of system, user, assistant, tool, function
  missing_content                    content absent or null (an assistant message with
                                     tool_calls or function_call may omit it)
  content_not_string                 content present but not a string
  name_not_string                    `name` is not a string
  invalid_weight                     `weight` is not 0 or 1
  weight_on_non_assistant            `weight` on a message that is not the assistant's
  invalid_tool_calls                 `tool_calls` is not a list of {id, type: "function",
                                     function: {name, arguments (a string)}} on an assistant
  invalid_function_call              `function_call` is not {name, arguments (a string)}
  missing_tool_call_id               a `tool` message without `tool_call_id`
  unknown_tool_call_id               a `tool` message answering no earlier call of the example
  invalid_tools                      `tools` is not a list of {type: "function",
                                     function: {name, description?, parameters? (an object)}}
  invalid_parallel_tool_calls        `parallel_tool_calls` is not true/false
  example_missing_assistant_message  no assistant message
  no_trainable_messages              every assistant message has weight 0

Warnings:
  empty_content                      content is "" (trains or conditions on nothing)
  example_unrecognized_key           a top-level key other than messages, tools, functions,
                                     parallel_tool_calls (ignored by training)

Dataset warnings from `ChatStats` (counts plus the first few lines):
  missing_system_message, missing_user_message; and the info `messages_per_example`.
"""

from __future__ import annotations

from typing import Any

from tunery.data.findings import Finding, Level
from tunery.data.tokens import Histogram

ALLOWED_MESSAGE_KEYS = frozenset({"role", "content", "name", "function_call", "tool_calls", "tool_call_id", "weight"})
ROLES = ("system", "user", "assistant", "tool", "function")
EXAMPLE_KEYS = frozenset({"messages", "tools", "functions", "parallel_tool_calls"})
FIRST_LINES = 5  # example lines kept per dataset warning


def _err(code: str, message: str, line: int, field: str | None) -> Finding:
    return Finding(code=code, level=Level.ERROR, message=message, line=line, field=field)


def _is_fn_call(value: Any) -> bool:
    """{name: str, arguments: str}: the shape of a call (arguments are JSON text, as the API sends them)."""
    return (
        isinstance(value, dict)
        and isinstance(value.get("name"), str)
        and bool(value["name"])
        and isinstance(value.get("arguments"), str)
    )


def _check_tool_calls(calls: Any, line: int, field: str, call_ids: set[str]) -> list[Finding]:
    if not isinstance(calls, list) or not calls:
        return [_err("invalid_tool_calls", "tool_calls must be a non-empty list of calls", line, field)]
    out = []
    for j, call in enumerate(calls):
        f = f"{field}[{j}]"
        if not isinstance(call, dict):
            out.append(_err("invalid_tool_calls", "a tool call must be an object", line, f))
        elif not isinstance(call.get("id"), str) or not call["id"]:
            out.append(_err("invalid_tool_calls", "a tool call needs a string id", line, f + ".id"))
        elif call.get("type") != "function":
            out.append(_err("invalid_tool_calls", 'a tool call\'s type must be "function"', line, f + ".type"))
        elif not _is_fn_call(call.get("function")):
            out.append(
                _err(
                    "invalid_tool_calls",
                    "a tool call's function must be {name, arguments} with arguments a JSON string",
                    line,
                    f + ".function",
                )
            )
        else:
            call_ids.add(call["id"])
    return out


def check_message(msg: Any, line: int, field: str, call_ids: set[str]) -> list[Finding]:
    """One message; `call_ids` collects the tool-call ids seen so far in the example."""
    if not isinstance(msg, dict):
        return [_err("message_data_type", "a message must be a JSON object", line, field)]
    out = []
    for key in msg:
        if key not in ALLOWED_MESSAGE_KEYS:
            out.append(_err("message_unrecognized_key", f"unrecognized message key {key!r}", line, f"{field}.{key}"))
    role = msg.get("role")
    if "role" not in msg:
        out.append(_err("message_missing_key", "the message has no role", line, f"{field}.role"))
    elif role not in ROLES:
        out.append(
            _err("unrecognized_role", f"unrecognized role {role!r} (expected one of {', '.join(ROLES)})", line, f"{field}.role")
        )
    is_assistant = role == "assistant"

    if "tool_calls" in msg:
        if not is_assistant:
            out.append(_err("invalid_tool_calls", "only assistant messages may have tool_calls", line, f"{field}.tool_calls"))
        else:
            out.extend(_check_tool_calls(msg["tool_calls"], line, f"{field}.tool_calls", call_ids))
    if "function_call" in msg and not (is_assistant and _is_fn_call(msg["function_call"])):
        out.append(
            _err(
                "invalid_function_call",
                "function_call must be {name, arguments} with arguments a JSON string, on an assistant message",
                line,
                f"{field}.function_call",
            )
        )

    content = msg.get("content")
    calls = is_assistant and (msg.get("tool_calls") or msg.get("function_call"))
    if content is None:
        if not calls:
            out.append(_err("missing_content", "the message has no content", line, f"{field}.content"))
    elif not isinstance(content, str):
        out.append(
            _err("content_not_string", f"content must be a string, not {type(content).__name__}", line, f"{field}.content")
        )
    elif content == "" and not calls:
        out.append(
            Finding("empty_content", Level.WARNING, "the message content is empty", line=line, field=f"{field}.content")
        )

    if "name" in msg and not isinstance(msg["name"], str):
        out.append(_err("name_not_string", "name must be a string", line, f"{field}.name"))

    if "weight" in msg:
        weight = msg["weight"]
        if isinstance(weight, bool) or weight not in (0, 1):
            out.append(_err("invalid_weight", f"weight must be 0 or 1, not {weight!r}", line, f"{field}.weight"))
        elif not is_assistant:
            out.append(
                _err("weight_on_non_assistant", "weight is only allowed on assistant messages", line, f"{field}.weight")
            )

    if role == "function" and not isinstance(msg.get("name"), str):
        out.append(_err("message_missing_key", "a function message needs the function's name", line, f"{field}.name"))
    if role == "tool":
        call_id = msg.get("tool_call_id")
        if call_id is None:
            out.append(_err("missing_tool_call_id", "a tool message needs tool_call_id", line, f"{field}.tool_call_id"))
        elif call_id not in call_ids:
            out.append(
                _err(
                    "unknown_tool_call_id",
                    f"tool_call_id {call_id!r} answers no earlier tool call in this example",
                    line,
                    f"{field}.tool_call_id",
                )
            )
    return out


def check_messages(messages: Any, line: int, field: str = "messages") -> list[Finding]:
    """The list and every message in it (shared by the chat and DPO checks)."""
    if not isinstance(messages, list):
        return [_err("missing_messages_list", f"{field} must be a list of messages", line, field)]
    if not messages:
        return [_err("empty_messages", f"{field} is empty", line, field)]
    call_ids: set[str] = set()
    out = []
    for i, msg in enumerate(messages):
        out.extend(check_message(msg, line, f"{field}[{i}]", call_ids))
    return out


def check_tools(tools: Any, line: int, field: str = "tools") -> list[Finding]:
    """`tools`: a list of function specs."""
    if not isinstance(tools, list):
        return [_err("invalid_tools", "tools must be a list of function specs", line, field)]
    out = []
    for j, tool in enumerate(tools):
        f = f"{field}[{j}]"
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function":
            out.append(_err("invalid_tools", 'a tool must be {"type": "function", "function": {...}}', line, f))
        elif not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            out.append(_err("invalid_tools", "a tool's function needs a name", line, f + ".function.name"))
        elif "parameters" in fn and not isinstance(fn["parameters"], dict):
            out.append(_err("invalid_tools", "a tool's parameters must be a JSON schema object", line, f + ".function.parameters"))
        elif "description" in fn and not isinstance(fn["description"], str):
            out.append(_err("invalid_tools", "a tool's description must be a string", line, f + ".function.description"))
    return out


def check_chat_record(record: Any, line: int) -> list[Finding]:
    """Every problem of one chat example; [] when it is fine."""
    if not isinstance(record, dict):
        return [_err("data_type", f"the line must be a JSON object, not {type(record).__name__}", line, None)]
    out = [
        Finding("example_unrecognized_key", Level.WARNING, f"unrecognized key {key!r} is ignored", line=line, field=key)
        for key in record
        if key not in EXAMPLE_KEYS
    ]
    if "messages" not in record:
        return [_err("missing_messages_list", "the example has no messages list", line, "messages")] + out
    out = check_messages(record["messages"], line) + out
    if "tools" in record:
        out.extend(check_tools(record["tools"], line))
    if "parallel_tool_calls" in record and not isinstance(record["parallel_tool_calls"], bool):
        out.append(_err("invalid_parallel_tool_calls", "parallel_tool_calls must be true or false", line, "parallel_tool_calls"))
    messages = record["messages"]
    if isinstance(messages, list) and messages:
        assistants = [m for m in messages if isinstance(m, dict) and m.get("role") == "assistant"]
        if not assistants:
            out.append(_err("example_missing_assistant_message", "the example has no assistant message", line, "messages"))
        elif all(m.get("weight", 1) == 0 for m in assistants):
            out.append(
                _err("no_trainable_messages", "every assistant message has weight 0: nothing to train on", line, "messages")
            )
    return out


class ChatStats:
    """Dataset-level warnings and the messages-per-example distribution, in bounded memory."""

    def __init__(self) -> None:
        self.examples = 0
        self.no_system = 0
        self.no_user = 0
        self.no_system_lines: list[int] = []
        self.no_user_lines: list[int] = []
        self.messages_per_example = Histogram()

    def add(self, record: Any, line: int) -> None:
        """Count one example (call it for the examples that passed `check_chat_record`)."""
        messages = record.get("messages") if isinstance(record, dict) else None
        if not isinstance(messages, list):
            return
        self.examples += 1
        self.messages_per_example.add(len(messages))
        roles = {m.get("role") for m in messages if isinstance(m, dict)}
        if "system" not in roles:
            self.no_system += 1
            if len(self.no_system_lines) < FIRST_LINES:
                self.no_system_lines.append(line)
        if "user" not in roles:
            self.no_user += 1
            if len(self.no_user_lines) < FIRST_LINES:
                self.no_user_lines.append(line)

    def findings(self) -> list[Finding]:
        out = []
        for code, n, lines, role in (
            ("missing_system_message", self.no_system, self.no_system_lines, "system"),
            ("missing_user_message", self.no_user, self.no_user_lines, "user"),
        ):
            if n:
                out.append(
                    Finding(
                        code,
                        Level.WARNING,
                        f"{n} of {self.examples} examples have no {role} message",
                        line=lines[0],
                        count=n,
                        lines=list(lines),
                    )
                )
        if self.examples:
            s = self.messages_per_example.summary()
            out.append(
                Finding(
                    "messages_per_example",
                    Level.INFO,
                    f"messages per example: min {s['min']}, median {s['median']}, p95 {s['p95']}, max {s['max']}",
                    data=s,
                )
            )
        return out
