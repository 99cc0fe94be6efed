"""A run's data source: checked and normalized at `POST /v1/evals/{id}/runs`, and read back as rows
by the worker. Pure apart from reading an uploaded file through the store.

Supported (`openai-methods.md` §6.4): `jsonl` (rows bring their own `sample`, or none) and
`completions` (Tunery generates the sample with `model`), each with a `file_content` or `file_id`
source. `stored_completions` sources and `responses` data sources query stored traffic, which
Tunery does not keep: a 400. Every row's `item` is validated against the eval's `item_schema`.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema

from tunery.eval.evals_config import EvalInputError, check_variables, normalize_message
from tunery.store import files as files_repo

DEFAULT_SAMPLING = {"temperature": 1.0, "top_p": 1.0, "seed": 42}  # the spec's defaults
MAX_ROWS = 100_000


def read_file_rows(store, project_id: str, file_id: str, param: str) -> list[dict]:
    """`{"item": {...}[, "sample": {...}]}` per line of an uploaded JSONL file."""
    with store.db.session_scope() as session:
        record = files_repo.get_file(session, project_id, file_id)
        key = record.blob_key if record is not None else None
    if key is None:
        raise EvalInputError(f"No such File object: {file_id}", param, "file_not_found")
    limit = store.settings.max_eval_bytes
    rows = []
    with store.blobs.open(key) as f:
        size = 0
        for n, raw in enumerate(f, start=1):
            size += len(raw)
            if size > limit:
                raise EvalInputError(f"{file_id} is larger than this server's limit of {limit} bytes for eval data.", param, "file_too_large")
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except ValueError as exc:
                raise EvalInputError(f"{file_id} line {n}: not valid JSON ({exc}).", param, "invalid_file") from None
            if not isinstance(row, dict) or not isinstance(row.get("item"), dict):
                raise EvalInputError(f"{file_id} line {n}: each line must be an object with an 'item' object.", param, "invalid_file")
            if "sample" in row and not isinstance(row["sample"], dict):
                raise EvalInputError(f"{file_id} line {n}: 'sample' must be an object.", param, "invalid_file")
            rows.append({"item": row["item"], **({"sample": row["sample"]} if "sample" in row else {})})
    return rows


def check_rows(rows: list[dict], schema: dict, param: str, where=lambda i: f"row {i}") -> None:
    validator = jsonschema.Draft202012Validator(schema)
    for i, row in enumerate(rows):
        error = jsonschema.exceptions.best_match(validator.iter_errors(row["item"]))
        if error is not None:
            path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
            raise EvalInputError(f"{where(i)}: item{path} does not match the eval's item_schema: {error.message}", param, "invalid_item")


def _inline_rows(source: dict, param: str) -> list[dict]:
    content = source.get("content")
    if not isinstance(content, list):
        raise EvalInputError(f"Missing required parameter: '{param}.content' (an array of rows).", f"{param}.content")
    rows = []
    for i, row in enumerate(content):
        if not isinstance(row, dict) or not isinstance(row.get("item"), dict):
            raise EvalInputError(f"{param}.content[{i}] must be an object with an 'item' object.", f"{param}.content[{i}].item")
        if row.get("sample") is not None and not isinstance(row["sample"], dict):
            raise EvalInputError(f"{param}.content[{i}].sample must be an object.", f"{param}.content[{i}].sample")
        rows.append({"item": row["item"], **({"sample": row["sample"]} if row.get("sample") is not None else {})})
    return rows


def source_rows(store, project_id: str, source: dict, param: str) -> list[dict]:
    if source.get("type") == "file_content":
        return _inline_rows(source, param)
    return read_file_rows(store, project_id, source["id"], f"{param}.id")


def _check_source(source: Any, param: str) -> dict:
    if not isinstance(source, dict) or not isinstance(source.get("type"), str):
        raise EvalInputError(f"Missing required parameter: '{param}' (an object with a 'type').", param)
    kind = source["type"]
    if kind in ("stored_completions", "responses"):
        raise EvalInputError(f"{param}.type {kind!r} is not supported by this server: it queries stored traffic, which Tunery does not log. "
                             "Use 'file_content' or 'file_id'.", f"{param}.type", "unsupported_data_source")
    if kind == "file_id":
        if not isinstance(source.get("id"), str):
            raise EvalInputError(f"Missing required parameter: '{param}.id'.", f"{param}.id")
        return {"type": "file_id", "id": source["id"]}
    if kind == "file_content":
        return {"type": "file_content", "content": source.get("content")}
    raise EvalInputError(f"Invalid value for '{param}.type': {kind!r}; expected 'file_content' or 'file_id'.", f"{param}.type")


def _sampling(params: Any, param: str) -> dict | None:
    if params is None:
        return None
    if not isinstance(params, dict):
        raise EvalInputError(f"Invalid type for '{param}': expected an object.", param)
    out = dict(params)
    if "max_completions_tokens" in out:  # the spelling several of OpenAI's examples use
        out.setdefault("max_completion_tokens", out.pop("max_completions_tokens"))
    for key, lo, hi in (("temperature", 0.0, 2.0), ("top_p", 0.0, 1.0)):
        v = out.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi):
            raise EvalInputError(f"Invalid '{param}.{key}': expected a number from {lo} to {hi}.", f"{param}.{key}")
    for key in ("max_completion_tokens", "seed"):
        v = out.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or (key == "max_completion_tokens" and v < 1)):
            raise EvalInputError(f"Invalid '{param}.{key}': expected {'a positive ' if key == 'max_completion_tokens' else 'an '}integer.", f"{param}.{key}")
    fmt = out.get("response_format")
    if fmt is not None and (not isinstance(fmt, dict) or fmt.get("type") != "text"):
        raise EvalInputError(f"{param}.response_format: only type 'text' is supported by this server (no guided decoding).", f"{param}.response_format")
    if out.get("tools"):
        raise EvalInputError(f"{param}.tools: tool calling is not supported in eval runs by this server.", f"{param}.tools")
    if out.get("reasoning_effort") is not None:
        raise EvalInputError(f"{param}.reasoning_effort: the models this server runs are not reasoning models.", f"{param}.reasoning_effort")
    return out


def _input_messages(value: Any, param: str) -> dict:
    if not isinstance(value, dict) or value.get("type") not in ("template", "item_reference"):
        raise EvalInputError(f"Missing required parameter: '{param}' of type 'template' or 'item_reference'.", param)
    if value["type"] == "item_reference":
        ref = value.get("item_reference")
        if not isinstance(ref, str) or not ref.startswith("item."):
            raise EvalInputError(f"Invalid '{param}.item_reference': expected a path like 'item.messages'.", f"{param}.item_reference")
        return {"type": "item_reference", "item_reference": ref}
    template = value.get("template")
    if not isinstance(template, list) or not template:
        raise EvalInputError(f"Missing required parameter: '{param}.template' (a non-empty array of messages).", f"{param}.template")
    for i, m in enumerate(template):
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant", "system", "developer"):
            raise EvalInputError(f"{param}.template[{i}].role must be one of user, assistant, system, developer.", f"{param}.template[{i}].role")
        if "content" not in m:
            raise EvalInputError(f"Missing required parameter: '{param}.template[{i}].content'.", f"{param}.template[{i}].content")
        message_text(m, f"{param}.template[{i}]")  # content types
    return {"type": "template", "template": [normalize_message(m) for m in template]}


def message_text(message: dict, where: str) -> str:
    """A template message's content as text (a string, an `input_text`/`output_text` part or a list of them)."""
    content = message.get("content")
    parts = content if isinstance(content, list) else [content]
    out = []
    for j, p in enumerate(parts):
        if isinstance(p, str):
            out.append(p)
        elif isinstance(p, dict) and p.get("type") in ("input_text", "output_text", "text", None) and isinstance(p.get("text"), str):
            out.append(p["text"])
        else:
            kind = p.get("type") if isinstance(p, dict) else type(p).__name__
            raise EvalInputError(f"{where}.content: only text content is supported by this server's models (got {kind!r}).", f"{where}.content")
    return "".join(out)


def normalize_data_source(store, project_id: str, data_source: Any, schema: dict, criteria: list[dict]) -> tuple[dict, int]:
    """The data source as stored and echoed, and its number of rows (all checked against `schema`)."""
    param = "data_source"
    if not isinstance(data_source, dict) or not isinstance(data_source.get("type"), str):
        raise EvalInputError("Missing required parameter: 'data_source' (an object with a 'type').", param)
    kind = data_source["type"]
    if kind == "responses":
        raise EvalInputError("data_source.type 'responses' is not supported by this server; use 'completions' (generated by Tunery's models) or 'jsonl'.",
                             "data_source.type", "unsupported_data_source")
    if kind not in ("jsonl", "completions"):
        raise EvalInputError(f"Invalid value for 'data_source.type': {kind!r}; expected 'jsonl' or 'completions'.", "data_source.type")
    source = _check_source(data_source.get("source"), f"{param}.source")
    rows = source_rows(store, project_id, source, f"{param}.source")
    if not rows:
        raise EvalInputError("The data source has no rows.", f"{param}.source")
    if len(rows) > MAX_ROWS:
        raise EvalInputError(f"The data source has {len(rows)} rows; this server takes at most {MAX_ROWS} per run.", f"{param}.source")
    where = (lambda i: f"data_source.source.content[{i}]") if source["type"] == "file_content" else (lambda i: f"{source['id']} line {i + 1}")
    check_rows(rows, schema, f"{param}.source", where)
    if source["type"] == "file_content":
        source = {"type": "file_content", "content": rows}  # echoed as read: a `sample: null` row has no sample
    out: dict = {"type": kind, "source": source}
    if kind == "completions":
        model = data_source.get("model")
        if not isinstance(model, str) or not model.strip():
            raise EvalInputError("Missing required parameter: 'data_source.model' (the model that generates the samples).", "data_source.model")
        messages = _input_messages(data_source.get("input_messages"), f"{param}.input_messages")
        if messages["type"] == "template":
            check_variables(messages["template"], f"{param}.input_messages.template", schema, False)
        out.update(model=model, input_messages=messages, sampling_params=_sampling(data_source.get("sampling_params"), f"{param}.sampling_params"))
    elif needs_sample(criteria):
        missing = next((i for i, r in enumerate(rows) if "sample" not in r), None)
        if missing is not None:
            raise EvalInputError(f"{where(missing)}: the testing criteria read the sample namespace, but this jsonl row has no 'sample' "
                                 "(give one per row, or use a 'completions' data source).", f"{param}.source", "missing_sample")
    return out, len(rows)


def needs_sample(criteria: list[dict]) -> bool:
    from tunery.eval.evals_config import template_strings

    return any("{{sample." in text for c in criteria for _, text in template_strings(c, ""))
