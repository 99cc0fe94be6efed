"""Chat messages → prompt tokens, with the model's own chat template.

The template is the one saved with the tokenizer next to the weights, i.e. the one the model was
trained with (the training engine saves it beside the adapter). Content given as OpenAI's list of
parts is flattened to text; other part types are refused, since these models read text only.
"""

from __future__ import annotations


class ChatError(ValueError):
    """A conversation the template cannot render; `param` names the offending field."""

    def __init__(self, message: str, param: str = "messages"):
        super().__init__(message)
        self.param = param


def content_text(content, where: str) -> str:
    """OpenAI content (a string, a list of text parts, or null) as plain text."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind != "text" or not isinstance(part.get("text"), str):
            raise ChatError(f"{where}.content[{j}]: only text parts are supported by this model (got type {kind!r})", f"{where}.content[{j}]")
        parts.append(part["text"])
    return "".join(parts)


def template_messages(messages: list[dict]) -> list[dict]:
    """Normalize wire messages into what Hugging Face chat templates expect."""
    out = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        role = "system" if m["role"] == "developer" else m["role"]
        msg = {"role": role, "content": content_text(m.get("content"), where)}
        for key in ("name", "tool_calls", "tool_call_id"):
            if m.get(key) is not None:
                msg[key] = m[key]
        out.append(msg)
    return out


def render_chat(tokenizer, messages: list[dict], tools: list[dict] | None = None) -> list[int]:
    """Prompt token ids for `messages`, ending with the assistant turn's opening."""
    if not getattr(tokenizer, "chat_template", None):
        raise ChatError("this model has no chat template; use /v1/completions with a plain prompt", "model")
    kwargs = {"tools": tools} if tools else {}
    try:
        text = tokenizer.apply_chat_template(template_messages(messages), add_generation_prompt=True, tokenize=False, **kwargs)
    except ChatError:
        raise
    except Exception as exc:  # templates raise their own errors ("roles must alternate ...")
        raise ChatError(f"the model's chat template rejected these messages: {exc}") from exc
    return tokenizer(text, add_special_tokens=False)["input_ids"]
