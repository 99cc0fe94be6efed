"""What `POST /v1/evals` stores: the data-source config and the testing criteria, checked and
normalized the way OpenAI stores them (`openai-methods.md` §6.2). Pure functions, no web.

- `custom` → `{type: "custom", schema}` with `item_schema` wrapped as `{item: …[, sample: …]}`.
- `logs` and `stored_completions` need stored traffic, which Tunery does not log: a 400.
- Each criterion is checked by `tunery.graders.validate`, gets the id `"<name>-<uuid4>"`, and has
  its templates normalized (`{{ item.x }}` → `{{item.x}}`; a message `{role, content: "…"}` →
  `{type: "message", role, content: {type: "input_text", text}}`).
- A template naming `item.<path>` that `item_schema` does not declare is a 400 naming the field.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import jsonschema

from tunery.graders import GraderError, validate

# The namespace variables a template names (same syntax as tunery.graders' templates).
_VAR = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
_PATH_PART = re.compile(r"\.?([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")

# The `sample` namespace a generating run fills (tunery.graders.make_sample), as a schema.
SAMPLE_SCHEMA = {
    "type": "object",
    "properties": {
        "model": {"type": "string"},
        "choices": {"type": "array", "items": {"type": "object"}},
        "output_text": {"type": "string"},
        "output_json": {"type": ["object", "array", "null"]},
        "output_tools": {"type": "array", "items": {"type": "object"}},
    },
    "required": ["model", "choices", "output_text"],
}


class EvalInputError(ValueError):
    """A request the Evals API refuses (a 400); `param` names the field."""

    def __init__(self, message: str, param: str | None, code: str | None = None) -> None:
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


def stored_config(config: Any) -> dict:
    """`data_source_config` as stored and echoed (`{type, schema}`)."""
    if not isinstance(config, dict) or not isinstance(config.get("type"), str):
        raise EvalInputError("data_source_config must be an object with a 'type'.", "data_source_config")
    kind = config["type"]
    if kind in ("logs", "stored_completions"):
        raise EvalInputError(
            f"data_source_config type {kind!r} is not supported by this server: it needs stored completions "
            "and Tunery does not log traffic. Use type 'custom' with an item_schema.",
            "data_source_config.type", "unsupported_data_source")
    if kind != "custom":
        raise EvalInputError(f"Invalid value for 'data_source_config.type': {kind!r}; expected 'custom'.", "data_source_config.type")
    schema = config.get("item_schema")
    if not isinstance(schema, dict):
        raise EvalInputError("Missing required parameter: 'data_source_config.item_schema' (a JSON Schema object).", "data_source_config.item_schema")
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise EvalInputError(f"data_source_config.item_schema is not a valid JSON Schema: {exc.message}", "data_source_config.item_schema") from None
    with_sample = config.get("include_sample_schema", False)
    if not isinstance(with_sample, bool):
        raise EvalInputError("Invalid type for 'data_source_config.include_sample_schema': expected a boolean.", "data_source_config.include_sample_schema")
    wrapper: dict = {"type": "object", "properties": {"item": schema}, "required": ["item"]}
    if with_sample:
        wrapper["properties"]["sample"] = SAMPLE_SCHEMA
        wrapper["required"].append("sample")
    return {"type": "custom", "schema": wrapper}


def item_schema(stored: dict) -> dict:
    return stored["schema"]["properties"]["item"]


def has_sample_schema(stored: dict) -> bool:
    return "sample" in stored["schema"]["properties"]


def normalize_template(text: str) -> str:
    return _VAR.sub(lambda m: "{{" + m.group(1) + "}}", text)


def normalize_message(message: Any) -> Any:
    """A template message as OpenAI echoes it: typed, with `input_text` content."""
    if not isinstance(message, dict):
        return message
    out = dict(message)
    content = out.get("content")
    if isinstance(content, str):
        out["content"] = {"type": "input_text", "text": normalize_template(content)}
    elif isinstance(content, dict) and isinstance(content.get("text"), str):
        out["content"] = {**content, "text": normalize_template(content["text"])}
    elif isinstance(content, list):
        out["content"] = [{**p, "text": normalize_template(p["text"])} if isinstance(p, dict) and isinstance(p.get("text"), str)
                          else (normalize_template(p) if isinstance(p, str) else p) for p in content]
    if "role" in out:
        out = {"type": "message", **{k: v for k, v in out.items() if k != "type"}}
    return out


def _normalize_strings(value: Any) -> Any:
    if isinstance(value, str):
        return normalize_template(value)
    if isinstance(value, list):
        return [normalize_message(_normalize_strings(v)) if isinstance(v, dict) and "role" in v else _normalize_strings(v) for v in value]
    if isinstance(value, dict):
        return {k: _normalize_strings(v) for k, v in value.items()}
    return value


def template_strings(value: Any, param: str):
    """(param, string) for every string inside a grader or message list."""
    if isinstance(value, str):
        yield param, value
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from template_strings(v, f"{param}[{i}]")
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from template_strings(v, f"{param}.{k}")


def _schema_has(schema: dict, path: str) -> bool:
    """Whether `item.<path>` can exist under `schema`. A part of the schema that declares no
    `properties`/`items` (or allows additional properties) accepts any further path."""
    node = schema
    for m in _PATH_PART.finditer(path):
        key, index = m.group(1), m.group(2)
        if not isinstance(node, dict):
            return True
        if key is not None:
            props = node.get("properties")
            if props is None:
                return True
            if key in props:
                node = props[key]
            elif node.get("additionalProperties") not in (None, False):
                return True
            else:
                return False
        else:
            items = node.get("items")
            if items is None:
                return True
            node = items
    return True


def check_variables(value: Any, param: str, schema: dict, with_sample: bool | None) -> None:
    """Every `{{item.…}}` must be declared by the item schema; `{{sample.…}}` needs a sample
    (`with_sample=False` forbids it, None does not check)."""
    for where, text in template_strings(value, param):
        for var in _VAR.findall(text):
            head, _, rest = var.partition(".")
            head = head.split("[")[0]
            if head == "item":
                if not _schema_has(schema, rest):
                    raise EvalInputError(f"{where}: the template names {{{{{var}}}}}, which the eval's item_schema does not have.", where, "invalid_variable")
            elif head == "sample":
                if with_sample is False:
                    raise EvalInputError(f"{where}: the template names {{{{{var}}}}}, but this data source has no sample.", where, "invalid_variable")
            else:
                raise EvalInputError(f"{where}: unknown template namespace in {{{{{var}}}}}; only 'item' and 'sample' are supported.", where, "invalid_variable")


TEMPLATED = ("input", "reference")  # the grader fields rendered with {{item.…}} / {{sample.…}}


def stored_criteria(criteria: Any, stored: dict) -> list[dict]:
    if not isinstance(criteria, list) or not criteria:
        raise EvalInputError("testing_criteria must be a non-empty array of graders.", "testing_criteria")
    out = []
    for i, grader in enumerate(criteria):
        param = f"testing_criteria[{i}]"
        try:
            validate(grader, context="eval", param=param)  # also refuses `multi`, which is not a testing criterion
        except GraderError as exc:
            raise EvalInputError(exc.message, exc.param) from None
        threshold = grader.get("pass_threshold")
        if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))):
            raise EvalInputError(f"Invalid type for '{param}.pass_threshold': expected a number.", f"{param}.pass_threshold")
        # Only these fields are templates: a python grader's source is code, and `{{` in it is Python's.
        templated = {k: grader[k] for k in TEMPLATED if k in grader}
        # The sample namespace is checked per run (a jsonl run may bring its own samples).
        check_variables(templated, param, item_schema(stored), None)
        norm = {**grader, **_normalize_strings(templated)}
        if norm.get("type") == "label_model":
            norm.setdefault("sampling_params", None)
        norm["id"] = f"{grader['name']}-{uuid.uuid4()}"
        out.append(norm)
    return out


def check_metadata(metadata: Any, param: str = "metadata") -> dict | None:
    """OpenAI's Metadata: at most 16 string pairs, keys ≤ 64 chars, values ≤ 512."""
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise EvalInputError(f"Invalid type for '{param}': expected an object.", param)
    if len(metadata) > 16:
        raise EvalInputError(f"Invalid '{param}': at most 16 keys, got {len(metadata)}.", param)
    for k, v in metadata.items():
        if len(k) > 64:
            raise EvalInputError(f"Invalid '{param}': key {k[:64]!r}… is longer than 64 characters.", f"{param}.{k[:64]}")
        if not isinstance(v, str) or len(v) > 512:
            raise EvalInputError(f"Invalid '{param}.{k}': values must be strings of at most 512 characters.", f"{param}.{k}")
    return metadata
