"""What `score_model` and `label_model` share: their `input` messages (OpenAI's `EvalItem`),
their `sampling_params`, and one `Judge` call for a whole batch of rows.

Prompting: each row's conversation is the grader's `input` with its templates rendered; the
answer format (a JSON object, with the range or the labels) is told to the model in a system
message put first (merged into the grader's own leading system/developer message). The judge also
gets a `response_format` json_schema: an engine that can constrain decoding may enforce it; one
that cannot (Tunery's own) is helped by the instruction, and the answer is parsed leniently
(`first_json_object`).

Sampling handed to the judge: `temperature` (0, greedy, unless the grader says otherwise),
`top_p` (1), `seed` (None) and `max_completion_tokens` (the spec's `max_completions_tokens` or
the run schema's `max_completion_tokens`; None lets the judge pick its default).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from tunery.graders.checks import check_type, optional, require
from tunery.graders.judge import Judge, JudgeReply
from tunery.graders.result import GradeResult, GraderError
from tunery.graders.template import MissingVariable, render

ROLES = ("user", "system", "developer", "assistant")
TEXT_PARTS = ("input_text", "output_text")
NUMBER = (int, float)
# sampling_params fields: (type, lowest allowed, highest allowed); None means no bound.
SAMPLING = {
    "seed": (int, None, None), "top_p": (NUMBER, 0.0, 1.0), "temperature": (NUMBER, 0.0, 2.0),
    "max_completions_tokens": (int, 1, None), "max_completion_tokens": (int, 1, None),
    "reasoning_effort": (str, None, None),
}


def validate_common(grader: dict, param: str) -> None:
    require(grader, "name", str, param)
    if not require(grader, "model", str, param).strip():
        raise GraderError(f"Invalid value for '{param}.model': expected a model name.", f"{param}.model")
    messages = require(grader, "input", list, param)
    if not messages:
        raise GraderError(f"Invalid value for '{param}.input': expected at least one message.", f"{param}.input")
    for i, message in enumerate(messages):
        _check_message(message, f"{param}.input[{i}]")
    _check_sampling(grader, param)
    optional(grader, "pass_threshold", NUMBER, param)  # any number: an Evals criterion compares the reward with it


def _check_message(message: Any, where: str) -> None:
    check_type(message, dict, where)
    role = require(message, "role", str, where)
    if role not in ROLES:
        raise GraderError(f"Invalid value for '{where}.role': expected one of {', '.join(ROLES)}; got {role!r}.", f"{where}.role")
    if message.get("type") not in (None, "message"):
        raise GraderError(f"Invalid value for '{where}.type': expected 'message'.", f"{where}.type")
    if "content" not in message:
        raise GraderError(f"Missing required parameter: '{where}.content'.", f"{where}.content")
    content = check_type(message["content"], (str, dict, list), f"{where}.content")
    if isinstance(content, dict):
        _check_part(content, f"{where}.content")
    elif isinstance(content, list):
        for j, part in enumerate(content):
            if not isinstance(part, str):
                _check_part(part, f"{where}.content[{j}]")


def _check_part(part: Any, where: str) -> None:
    check_type(part, dict, where)
    kind = require(part, "type", str, where)
    if kind not in TEXT_PARTS:
        # The served models read text only: an image or audio part would be silently dropped.
        raise GraderError(f"Invalid value for '{where}.type': {kind!r} content is not supported by this server's "
                          f"models (text only); expected one of {', '.join(TEXT_PARTS)}.", f"{where}.type")
    require(part, "text", str, where)


def _check_sampling(grader: dict, param: str) -> None:
    sp = optional(grader, "sampling_params", dict, param, {})
    where = f"{param}.sampling_params"
    for key, value in sp.items():
        if key not in SAMPLING:
            raise GraderError(f"Unrecognized parameter '{where}.{key}'; expected one of {', '.join(SAMPLING)}.", f"{where}.{key}")
        if value is None:
            continue
        kind, low, high = SAMPLING[key]
        check_type(value, kind, f"{where}.{key}")
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = f"at least {low}" if high is None else f"between {low} and {high}"
            raise GraderError(f"Invalid value for '{where}.{key}': expected a number {bounds}; got {value}.", f"{where}.{key}")
    if sp.get("reasoning_effort") is not None:
        # As OpenAI answers for non-reasoning judges: none of the models served here reasons.
        raise GraderError(f"Invalid value for '{where}.reasoning_effort': reasoning_effort is not supported by this "
                          "server's models (none is a reasoning model).", f"{where}.reasoning_effort")


def judge_sampling(grader: dict) -> dict[str, Any]:
    sp = grader.get("sampling_params") or {}
    pick = lambda key, default: default if sp.get(key) is None else sp[key]  # noqa: E731
    return {
        "temperature": float(pick("temperature", 0.0)), "top_p": float(pick("top_p", 1.0)), "seed": sp.get("seed"),
        "max_completion_tokens": pick("max_completions_tokens", sp.get("max_completion_tokens")),
    }


def content_text(content: str | dict | list) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return content["text"]
    return "".join(p if isinstance(p, str) else p["text"] for p in content)


def conversation(messages: list[dict], namespaces: dict, instruction: str) -> list[dict]:
    """The rendered messages with `instruction` in the leading system message (MissingVariable
    when a template names what the row lacks)."""
    out = [{"role": m["role"], "content": render(content_text(m["content"]), namespaces)} for m in messages]
    if out[0]["role"] in ("system", "developer"):
        out[0] = {"role": out[0]["role"], "content": f"{out[0]['content']}\n\n{instruction}"}
    else:
        out.insert(0, {"role": "system", "content": instruction})
    return out


def first_json_object(text: str) -> dict | None:
    """The first JSON object anywhere in `text` (models wrap JSON in prose or code fences)."""
    decoder = json.JSONDecoder()
    for m in re.finditer(r"\{", text):
        try:
            value, _ = decoder.raw_decode(text, m.start())
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def ask(grader: dict, pairs: list[tuple[dict, dict]], judge: Judge | None, instruction: str,
        response_format: dict, read: Callable[[GradeResult, str], None]) -> list[GradeResult]:
    """One result per pair: the rows whose templates render go to `judge` in one call; `read(result,
    text)` sets the reward from each answer. Usage and the judge's answer are recorded per row."""
    kind, model, sampling = grader["type"], grader["model"], judge_sampling(grader)
    results = [GradeResult(reward=0.0, name=grader["name"], type=kind) for _ in pairs]
    asked: list[tuple[GradeResult, list[dict]]] = []
    for result, (sample, item) in zip(results, pairs):
        try:
            asked.append((result, conversation(grader["input"], {"sample": sample, "item": item}, instruction)))
        except MissingVariable:
            result.errors["invalid_variable_error"] = True
    if not asked:
        return results
    replies = _call(judge, model, [c for _, c in asked], sampling, response_format)
    for (result, conv), reply in zip(asked, replies):
        usage = {k: int(reply.usage.get(k, 0)) for k in ("prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens")}
        if reply.usage:
            result.token_usage[model] = usage
        result.sample = {
            "input": conv, "output": [{"role": "assistant", "content": reply.text}], "model": model, "usage": usage,
            "error": reply.error, "seed": sampling["seed"], "temperature": sampling["temperature"], "top_p": sampling["top_p"],
            "max_completions_tokens": sampling["max_completion_tokens"],
        }
        if reply.error is not None:
            result.errors["model_grader_server_error"] = True
            result.errors["model_grader_server_error_details"] = reply.error
        else:
            read(result, reply.text)
    return results


def _call(judge: Judge | None, model: str, conversations: list, sampling: dict, response_format: dict) -> list[JudgeReply]:
    """The judge's replies; its failure (or a wrong count) becomes each row's server error."""
    if judge is None:
        return [JudgeReply("", error="no judge model is available to this grading") for _ in conversations]
    try:
        replies = list(judge(model, conversations, sampling, response_format))
    except Exception as exc:  # a broken judge fails its rows, never the grading
        return [JudgeReply("", error=f"the judge failed: {type(exc).__name__}: {exc}") for _ in conversations]
    if len(replies) != len(conversations):
        return [JudgeReply("", error=f"the judge answered {len(replies)} of {len(conversations)} conversations") for _ in conversations]
    return replies
