"""Records -> token ids with a per-token loss weight, using the base model's own chat template.

What is trained is what OpenAI trains: every assistant message of a chat (multi-turn), except those
with `weight: 0`; for legacy prompt/completion records the completion, with the prompt's tokens
weighted `prompt_loss_weight`. The assistant's end-of-turn token is part of its span (so the model
learns to stop); when the template does not close the turn with a special token, the tokenizer's
EOS is appended. Examples longer than `max_length` lose tokens from the end (as OpenAI does) and
are counted.

How spans are found: the conversation is rendered as text once; each assistant message's span is
`render(messages[:i], add_generation_prompt=True)` .. `render(messages[:i+1])` (character offsets,
checked to be prefixes of the full text; otherwise the message content is located in the text).
The full text is tokenized once with offsets, and a token is trained when its last character lies
in a trained span. This works for any template, with or without `{% generation %}` markers.
"""

from __future__ import annotations

import json
import os
import tempfile
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import TrainError
from .records import CHAT, COMPLETION, PREFERENCE, Record

_PROBE_TOOL = "tunery_probe_tool"


@dataclass
class Example:
    """One tokenized example. `weights[j]` is the loss weight of predicting token j (j >= 1)."""

    input_ids: list[int]
    weights: list[float]
    line: int = 0
    truncated: bool = False

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def trained_tokens(self) -> int:
        return sum(1 for w in self.weights[1:] if w > 0)


class TokenStore(Sequence[Example]):
    """A file's examples, kept in an unnamed temporary file rather than in memory: a Python list of
    token ids costs ~36 bytes a token (a big training file would not fit), the file 12 (int32 ids,
    float64 weights: read back, an example is exactly what the tokenizer made, so training is
    bit-identical). In memory: 17 bytes per example (offset, length, line, truncated). `store[i]`
    reads one example back; a step reads only its batch."""

    def __init__(self, folder: str | Path | None = None):
        self._file = tempfile.TemporaryFile(dir=folder, prefix=".tmp-tokens-")  # gone with the process, even on kill -9
        self._offsets, self.lengths, self._lines = array("q"), array("i"), array("i")
        self._truncated = bytearray()
        self._end = 0

    def append(self, example: Example) -> None:
        n = len(example.input_ids)
        data = np.asarray(example.input_ids, dtype=np.int32).tobytes() + np.asarray(example.weights, dtype=np.float64).tobytes()
        self._file.write(data)
        self._offsets.append(self._end)
        self._end += len(data)
        self.lengths.append(n)
        self._lines.append(example.line)
        self._truncated.append(example.truncated)

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i: int) -> Example:  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = self.lengths[i]
        self._file.flush()  # pread reads the file, not the write buffer
        data = os.pread(self._file.fileno(), 12 * n, self._offsets[i])
        ids, weights = np.frombuffer(data, np.int32, n), np.frombuffer(data, np.float64, n, 4 * n)
        return Example(ids.tolist(), weights.tolist(), self._lines[i], bool(self._truncated[i]))

    def close(self) -> None:
        self._file.close()


@dataclass
class TokenizedFile:
    examples: TokenStore
    truncated: int = 0  # examples cut to max_length
    dropped: list[int] = field(default_factory=list)  # lines with nothing left to train on
    trained_tokens: int = 0  # tokens with a loss weight > 0, over every example

    @property
    def tokens(self) -> int:
        return sum(self.examples.lengths)


# -- chat -------------------------------------------------------------------------------------


def _text(content: Any) -> str | None:
    """OpenAI content: a string, or a list of parts of which the text parts are kept."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type", "text") == "text")
    return str(content)


def _tool_calls_for_template(calls: list[dict]) -> list[dict]:
    """OpenAI tool calls carry `arguments` as a JSON string; HF templates expect a mapping."""
    out = []
    for call in calls:
        function = dict(call.get("function") or {})
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            try:
                function["arguments"] = json.loads(arguments)
            except json.JSONDecodeError:
                pass
        out.append({**call, "type": call.get("type", "function"), "function": function})
    return out


def _tool_calls_as_text(calls: list[dict]) -> str:
    """Hermes/Qwen-style text for templates that ignore `tool_calls`."""
    parts = []
    for call in _tool_calls_for_template(calls):
        fn = call["function"]
        parts.append("<tool_call>\n" + json.dumps({"name": fn.get("name"), "arguments": fn.get("arguments")}, ensure_ascii=False) + "\n</tool_call>")
    return "\n".join(parts)


class ChatRenderer:
    """Renders conversations with a tokenizer's chat template, adapting tools to what it supports."""

    def __init__(self, tokenizer):
        if not getattr(tokenizer, "chat_template", None):
            raise TrainError("invalid_model", "The base model's tokenizer has no chat template; chat records need one", "model")
        self.tokenizer = tokenizer
        self.renders_tool_calls = self._probe_tool_calls()
        self.renders_tools = self._probe_tools()

    def render(self, messages: list[dict], tools: list | None = None, generation_prompt: bool = False) -> str:
        return self.tokenizer.apply_chat_template(
            messages, tools=tools or None, tokenize=False, add_generation_prompt=generation_prompt
        )

    def _probe_tool_calls(self) -> bool:
        call = {"id": "c1", "type": "function", "function": {"name": _PROBE_TOOL, "arguments": {}}}
        try:
            text = self.render([{"role": "user", "content": "x"}, {"role": "assistant", "content": "", "tool_calls": [call]}])
        except Exception:
            return False
        return _PROBE_TOOL in text

    def _probe_tools(self) -> bool:
        tool = {"type": "function", "function": {"name": _PROBE_TOOL, "description": "", "parameters": {"type": "object", "properties": {}}}}
        try:
            return _PROBE_TOOL in self.render([{"role": "user", "content": "x"}], tools=[tool])
        except Exception:
            return False

    def prepare(self, messages: list[dict], tools: list | None) -> tuple[list[dict], list | None, list[float | None]]:
        """Messages as the template wants them, the tools to pass, and each message's weight."""
        out, weights = [], []
        for m in messages:
            role = "tool" if m.get("role") == "function" else m.get("role")
            msg = {"role": role, "content": _text(m.get("content"))}
            calls = m.get("tool_calls") or ([{"type": "function", "function": m["function_call"]}] if m.get("function_call") else None)
            if calls:
                if self.renders_tool_calls:
                    msg["tool_calls"] = _tool_calls_for_template(calls)
                else:
                    msg["content"] = "\n".join(t for t in (msg["content"], _tool_calls_as_text(calls)) if t)
            for key in ("name", "tool_call_id"):
                if m.get(key) is not None:
                    msg[key] = m[key]
            if msg["content"] is None:
                msg["content"] = ""
            out.append(msg)
            weights.append(m.get("weight"))
        if tools and not self.renders_tools:
            # The template has no place for tool definitions: describe them in the system message.
            spec = "You can call these tools:\n<tools>\n" + "\n".join(json.dumps(t, ensure_ascii=False) for t in tools) + "\n</tools>"
            if out and out[0]["role"] == "system":
                out[0] = {**out[0], "content": out[0]["content"] + "\n\n" + spec}
            else:
                out.insert(0, {"role": "system", "content": spec})
                weights.insert(0, None)
            tools = None
        return out, tools, weights


def _special_strings(tokenizer) -> list[str]:
    specials = set(tokenizer.all_special_tokens)
    for token in getattr(tokenizer, "added_tokens_decoder", {}).values():
        if getattr(token, "special", False):
            specials.add(str(token))
    return sorted((s for s in specials if s), key=len, reverse=True)


def _close_turn(text: str, start: int, end: int, specials: list[str]) -> tuple[int, bool]:
    """End of the trained span: through the turn's closing special token (dropping the whitespace
    after it); `needs_eos` when the template closes the turn without one."""
    span = text[start:end].rstrip()
    for special in specials:
        if span.endswith(special):
            return start + len(span), False
    return start + len(span), True


def chat_spans(renderer: ChatRenderer, record: dict, line: int = 0) -> tuple[str, list[tuple[int, int, float]], set[int]]:
    """Full text, the trained character spans with weights, and positions where EOS is inserted."""
    messages, tools, weights = renderer.prepare(record["messages"], record.get("tools"))
    full = renderer.render(messages, tools)
    specials = _special_strings(renderer.tokenizer)
    spans, eos_at, cursor = [], set(), 0
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        weight = weights[i]
        weight = 1.0 if weight is None else float(weight)
        head = renderer.render(messages[:i], tools, generation_prompt=True) if i else ""
        upto = renderer.render(messages[: i + 1], tools)
        if i and full.startswith(head) and full.startswith(upto) and len(head) <= len(upto):
            start, end = len(head), len(upto)
        else:
            # Templates that render a message differently once later turns follow (e.g. dropping
            # reasoning): find the content itself after the previous span.
            content = m["content"]
            start = full.find(content, cursor) if content else -1
            if start < 0:
                raise TrainError("invalid_training_file", f"line {line}: cannot locate assistant message {i + 1} in the rendered chat template", f"messages[{i}]")
            end = start + len(content)
            nxt = min((full.find(s, end) for s in specials if full.find(s, end) >= 0), default=-1)
            if nxt >= 0 and not full[end:nxt].strip():
                end = nxt + len(next(s for s in specials if full.startswith(s, nxt)))
        end, needs_eos = _close_turn(full, start, end, specials)
        cursor = end
        if weight > 0:
            spans.append((start, end, weight))
            if needs_eos:
                eos_at.add(end)
    return full, spans, eos_at


# -- tokenization -----------------------------------------------------------------------------


def _insert_eos(text: str, spans: list[tuple[int, int, float]], eos_at: set[int], eos: str):
    """Insert the EOS text at the given offsets, extending the span that ends there."""
    if not eos_at:
        return text, spans
    out, shift, last = [], {}, 0
    for pos in sorted(eos_at):
        out += [text[last:pos], eos]
        last = pos
        shift[pos] = len(eos)
    out.append(text[last:])

    def moved(p: int, inclusive: bool) -> int:
        return p + sum(v for q, v in shift.items() if q < p or (inclusive and q == p))

    new_spans = [(moved(s, False), moved(e, True), w) for s, e, w in spans]
    return "".join(out), new_spans


def _encode_weighted(tokenizer, text: str, spans, add_special_tokens: bool) -> tuple[list[int], list[float]]:
    enc = tokenizer(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
    char_weight = [0.0] * (len(text) + 1)
    for start, end, w in spans:
        for c in range(start, end):
            char_weight[c] = w
    weights = [char_weight[e - 1] if e > s else 0.0 for s, e in enc["offset_mapping"]]
    return list(enc["input_ids"]), weights


class Tokenizer:
    """Turns records into `Example`s for one base model."""

    def __init__(self, tokenizer, max_length: int, prompt_loss_weight: float):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.prompt_loss_weight = prompt_loss_weight
        self._renderer: ChatRenderer | None = None
        if tokenizer.eos_token is None:
            raise TrainError("invalid_model", "The base model's tokenizer has no EOS token", "model")

    @property
    def renderer(self) -> ChatRenderer:
        if self._renderer is None:
            self._renderer = ChatRenderer(self.tokenizer)
        return self._renderer

    def encode(self, record: Record) -> Example:
        if record.kind == CHAT:
            text, spans, eos_at = chat_spans(self.renderer, record.data, record.line)
            text, spans = _insert_eos(text, spans, eos_at, self.tokenizer.eos_token)
            ids, weights = _encode_weighted(self.tokenizer, text, spans, add_special_tokens=False)
        elif record.kind == COMPLETION:
            prompt, completion = record.data.get("prompt") or "", record.data.get("completion")
            if not isinstance(completion, str) or not isinstance(prompt, str):
                raise TrainError("invalid_training_file", f"line {record.line}: 'prompt' and 'completion' must be strings", "completion")
            # Legacy records are raw text for a completion model: no chat template.
            text = prompt + completion + self.tokenizer.eos_token
            spans = [(0, len(prompt), self.prompt_loss_weight), (len(prompt), len(text), 1.0)]
            ids, weights = _encode_weighted(self.tokenizer, text, spans, add_special_tokens=True)
        elif record.kind == PREFERENCE:
            raise TrainError(
                "invalid_training_file",
                f"line {record.line}: preference (DPO) records need method 'dpo', not 'supervised'",
                "training_file",
            )
        else:  # pragma: no cover - read_records only yields the kinds above
            raise TrainError("invalid_training_file", f"line {record.line}: unknown record format", "training_file")
        truncated = len(ids) > self.max_length
        if truncated:
            ids, weights = ids[: self.max_length], weights[: self.max_length]
        return Example(ids, weights, record.line, truncated)

    def encode_all(self, records: Iterable[Record], param: str = "training_file", folder: str | Path | None = None) -> TokenizedFile:
        """Tokenize a file as its records stream by, into a `TokenStore` (its temp file in `folder`);
        fail clearly when nothing in it can be trained."""
        result = TokenizedFile(TokenStore(folder))
        try:
            n_records = self._encode_into(result, records)
        except BaseException:
            result.examples.close()
            raise
        if not result.examples:
            result.examples.close()
            if result.truncated == n_records:
                raise TrainError(
                    "all_examples_too_long",
                    f"Every example in the {param.replace('_', ' ')} is longer than the context ({self.max_length} tokens) and nothing trainable is left after truncation",
                    param,
                )
            raise TrainError(
                "no_trainable_tokens",
                f"The {param.replace('_', ' ')} has no trainable tokens: no assistant message with weight > 0 (or empty completions)",
                param,
            )
        if result.truncated == n_records:
            result.examples.close()
            raise TrainError(
                "all_examples_too_long",
                f"Every example in the {param.replace('_', ' ')} is longer than the context ({self.max_length} tokens); check the model or max_length",
                param,
            )
        return result

    def _encode_into(self, result: TokenizedFile, records: Iterable[Record]) -> int:
        n_records = 0
        for record in records:
            n_records += 1
            example = self.encode(record)
            result.truncated += example.truncated
            trained = example.trained_tokens
            if trained == 0:
                result.dropped.append(record.line)
                continue
            result.trained_tokens += trained
            result.examples.append(example)
        return n_records
