"""Token counts with a model's own tokenizer and chat template, and their statistics.

`TokenCounter` reads a Hugging Face model folder (tokenizer.json + chat template) with the
`tokenizers` library and jinja2 only, and counts exactly what transformers would; `TokenStats`
and `Histogram` summarize a dataset of any size in bounded memory.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from operator import add
from typing import Any

from tunery.data.findings import Finding, Level
from tunery.data.memory import trim_heap


class Histogram:
    """Counts of non-negative integers in bounded memory, for min/median/p95/max over any data size.

    Values below 2,048 are counted exactly; larger ones fall into buckets 1/2,048 of their size
    wide (11 significant bits), so a percentile is exact for ordinary examples and within 0.05%
    for huge ones, and memory stays under ~2,048 buckets per power of two whatever the row count.
    A histogram, not a reservoir: it is deterministic, mergeable, and exact where it matters.
    min, max, count and sum are always exact. Percentiles use the nearest-rank rule (the value
    at rank ceil(q * count)), so the median of [1, 2, 3, 4] is 2, always a value that occurred.
    """

    BITS = 11  # exact below 2**BITS

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.count = 0
        self.sum = 0
        self.min: int | None = None
        self.max: int | None = None

    def _key(self, value: int) -> int:
        shift = value.bit_length() - self.BITS
        return value if shift <= 0 else (value >> shift) << shift

    def add(self, value: int, times: int = 1) -> None:
        if value < 0:
            raise ValueError(f"Histogram counts non-negative integers, got {value}")
        key = self._key(value)
        self.buckets[key] = self.buckets.get(key, 0) + times
        self.count += times
        self.sum += value * times
        self.min = value if self.min is None else min(self.min, value)
        self.max = value if self.max is None else max(self.max, value)

    def merge(self, other: Histogram) -> None:
        for key, n in other.buckets.items():
            self.buckets[key] = self.buckets.get(key, 0) + n
        self.count += other.count
        self.sum += other.sum
        for v in (other.min, other.max):
            if v is not None:
                self.min = v if self.min is None else min(self.min, v)
                self.max = v if self.max is None else max(self.max, v)

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count else None

    def percentile(self, q: float) -> int | None:
        """The nearest-rank q-quantile (0 < q <= 1); None when empty."""
        if not 0 < q <= 1:
            raise ValueError(f"quantile must be in (0, 1], got {q}")
        if not self.count:
            return None
        rank = max(1, math.ceil(q * self.count - 1e-9))  # the epsilon absorbs float drift (0.95 * 20)
        seen = 0
        for key in sorted(self.buckets):
            seen += self.buckets[key]
            if seen >= rank:
                width = 1 << max(0, key.bit_length() - self.BITS)
                return min(max(key + (width - 1) // 2, self.min), self.max)
        return self.max  # unreachable: the counts add up to self.count

    def summary(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "sum": self.sum,
            "min": self.min,
            "median": self.percentile(0.5),
            "p95": self.percentile(0.95),
            "max": self.max,
            "mean": self.mean,
        }


# --- token counting with a model's own tokenizer and chat template ---------------------------

SPECIAL_TOKEN_KEYS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
# Private-use code points (plane 15) wrap each trained assistant content while rendering, to find
# where the template put it; they never occur in real text and are stripped before tokenizing.
_OPEN, _CLOSE = "\U000f0000", "\U000f0001"


class ChatTemplateError(ValueError):
    """The chat template refused an example (`raise_exception`) or failed on it."""

    def __init__(self, index: int, message: str):
        super().__init__(f"the chat template failed on example {index} of the batch: {message}")
        self.index = index
        self.reason = message


def _closes_turn(token: str, eos_token: str | None) -> bool:
    name = token.lower()
    return token == eos_token or name == "</s>" or "end" in name or "eot" in name


def _token_text(value: Any) -> str | None:
    """A special token as tokenizer files store it: a string or an AddedToken dict."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _read_json(path) -> dict:
    import json

    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _pick_template(value: Any, name: str) -> str | None:
    """tokenizer_config's chat_template is a string or a list of {name, template}."""
    if isinstance(value, list):
        named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
        return named.get(name) or named.get("default")
    return value if isinstance(value, str) else None


def _jinja_env():
    """The sandboxed environment transformers renders chat templates in (same options and globals)."""
    import json
    from datetime import datetime

    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationTag(jinja2.ext.Extension):
        # `{% generation %}...{% endgeneration %}` marks assistant text for transformers' masks;
        # rendering-wise it is a no-op, and templates using it must still parse here.
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

        def _render(self, caller):
            return caller()

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        # Like transformers: no HTML escaping, unlike Jinja's own tojson.
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTag, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env


def _compile(template: str):
    import jinja2

    try:
        return _jinja_env().from_string(template)
    except jinja2.TemplateSyntaxError as exc:
        raise ValueError(f"the chat template does not parse: {exc} (template line {exc.lineno})") from None


class TokenCounter:
    """Counts tokens exactly as transformers' tokenizer and `apply_chat_template` would, without torch.

    Trained tokens of a chat example: for every assistant message whose weight is not 0, the
    tokens that overlap its content as the template renders it, plus the end-of-turn special
    token the template puts right after it (e.g. `<|im_end|>`, `<|eot_id|>`; whitespace between
    them counts too), and nothing else: not the role header, not the newline after the
    end-of-turn token. A token that straddles the content's edge counts as trained.
    """

    def __init__(
        self,
        tokenizer,
        chat_template: str | None = None,
        special_tokens: dict[str, str] | None = None,
        context_length: int | None = None,
        tool_template: str | None = None,
    ):
        self.tokenizer = tokenizer  # a `tokenizers.Tokenizer`
        self.special_tokens = dict(special_tokens or {})
        self.context_length = context_length
        self.eos_token = self.special_tokens.get("eos_token")
        self.eos_id = tokenizer.token_to_id(self.eos_token) if self.eos_token else None
        added = tokenizer.get_added_tokens_decoder().values()
        # Tokens that close a turn: EOS and special tokens named like it (<|im_end|>, <|eot_id|>,
        # <end_of_turn>, </s>), not the next turn's header (<|im_start|>). Longest first, so a
        # token is never mistaken for a shorter one that prefixes it.
        self._end_tokens = sorted(
            (t.content for t in added if t.special and _closes_turn(t.content, self.eos_token)), key=len, reverse=True
        )
        self._template = _compile(chat_template) if chat_template else None
        self._tool_template = _compile(tool_template) if tool_template else self._template

    @classmethod
    def from_folder(cls, path) -> TokenCounter:
        """Read `tokenizer.json`, the chat template and special tokens of a Hugging Face model folder."""
        from pathlib import Path

        from tunery.data.tokenizer_file import load_tokenizer

        folder = Path(path)
        if not (folder / "tokenizer.json").is_file():
            raise FileNotFoundError(f"{folder} has no tokenizer.json (a fast tokenizer is required)")
        config = _read_json(folder / "tokenizer_config.json")
        legacy = _read_json(folder / "special_tokens_map.json")
        special = {}
        for key in SPECIAL_TOKEN_KEYS:
            text = _token_text(config.get(key)) or _token_text(legacy.get(key))
            if text is not None:
                special[key] = text
        # transformers 5 prefers chat_template.jinja, then chat_template.json, then the config's
        template = tool_template = None
        if (folder / "chat_template.jinja").is_file():
            template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
        else:
            raw = _read_json(folder / "chat_template.json").get("chat_template", config.get("chat_template"))
            template, tool_template = _pick_template(raw, "default"), _pick_template(raw, "tool_use")
        if (folder / "additional_chat_templates" / "tool_use.jinja").is_file():
            tool_template = (folder / "additional_chat_templates" / "tool_use.jinja").read_text(encoding="utf-8")
        model_config = _read_json(folder / "config.json")
        context = model_config.get("max_position_embeddings") or model_config.get("n_positions")
        tokenizer = load_tokenizer(folder / "tokenizer.json")
        trim_heap()  # the load's temporary structures (~40 MB for a 50k vocab) would stay resident
        return cls(
            tokenizer,
            chat_template=template,
            special_tokens=special,
            context_length=context if isinstance(context, int) else None,
            tool_template=tool_template if tool_template != template else None,
        )

    # -- chat -------------------------------------------------------------------------------

    def _render(self, messages: list[dict], tools: Any, index: int, add_generation_prompt: bool = False) -> str:
        template = self._tool_template if tools is not None else self._template  # as transformers picks
        try:
            return template.render(
                messages=messages,
                tools=tools,
                documents=None,
                add_generation_prompt=add_generation_prompt,
                **self.special_tokens,
            )
        except Exception as exc:  # jinja errors and template bugs alike: the example cannot be rendered
            raise ChatTemplateError(index, str(exc) or type(exc).__name__) from exc

    def render_chat(self, record: dict, index: int = 0) -> tuple[str, list[tuple[int, int]]]:
        """The rendered text and the character spans of its trained parts, in order.

        Content is found by rendering once with each trained content wrapped in private-use
        markers (exact and one render); a template that rewrites content (trims it, splits out
        reasoning) is handled by rendering prefixes instead. Tool calls are structured, so an
        assistant turn with calls is located by prefix: from the end of the generation prompt
        to the last special token of the turn.
        """
        if self._template is None:
            raise ValueError("this model has no chat template: chat examples cannot be counted")
        # like apply_chat_template: keys whose value is None are dropped (templates choke on them)
        messages = [{k: v for k, v in m.items() if v is not None} for m in record["messages"]]
        tools = record.get("tools")
        trained = [i for i, m in enumerate(messages) if m.get("role") == "assistant" and m.get("weight", 1) != 0]
        calls = [i for i in trained if messages[i].get("tool_calls") or messages[i].get("function_call")]
        texts = [i for i in trained if i not in calls and isinstance(messages[i].get("content"), str)]
        text, spans = self._render_marked(messages, tools, texts, index)
        if text is None:
            text = self._render(messages, tools, index)
            spans = [self._span_by_prefix(text, messages, tools, i, index, content=True) for i in texts]
        spans += [self._span_by_prefix(text, messages, tools, i, index, content=False) for i in calls]
        return text, sorted(s for s in spans if s is not None)

    def _render_marked(self, messages, tools, texts, index) -> tuple[str | None, list[tuple[int, int]]]:
        """One render with markers around each trained content; (None, []) if the template rewrote one."""
        if not texts:
            return self._render(messages, tools, index), []
        marked = [dict(m) for m in messages]
        for i in texts:
            marked[i]["content"] = _OPEN + messages[i]["content"] + _CLOSE
        text = self._render(marked, tools, index)
        spans, pieces, pos, length = [], [], 0, 0
        for i in texts:
            start, end = text.find(_OPEN, pos), text.find(_CLOSE, pos)
            if start < 0 or end < start or text[start + 1 : end] != messages[i]["content"]:
                return None, []
            pieces.append(text[pos:start])
            length += start - pos
            spans.append((length, length + end - start - 1))
            pieces.append(text[start + 1 : end])
            length += end - start - 1
            pos = end + 1
        pieces.append(text[pos:])
        rendered = "".join(pieces)
        if any(messages[i]["content"] != messages[i]["content"].strip() for i in texts):
            # A template that trims content trims around the markers, not inside them: check.
            if rendered != self._render(messages, tools, index):
                return None, []
        return rendered, [(s, self._end_of_turn(rendered, e)) for s, e in spans]

    def _span_by_prefix(self, text, messages, tools, i, index, content: bool) -> tuple[int, int] | None:
        """Message i's trained span, found where the generation prompt for it ends in `text`."""
        try:
            prompt = self._render(messages[:i], tools, index, add_generation_prompt=True)
        except ChatTemplateError:
            if i:
                raise
            prompt = ""  # some templates refuse an empty history
        located = text.startswith(prompt)
        if not located:
            prompt = ""  # the template renders history differently: search from the start
        if content:
            body = messages[i]["content"].strip()
            found = text.find(body, len(prompt)) if body else -1
            if found >= 0:
                return found, self._end_of_turn(text, found + len(body))
        # Tool calls, or content the template rewrote: the whole turn after the generation
        # prompt, up to its last special token (the end of turn).
        turn = self._render(messages[: i + 1], tools, index)
        if not located or not text.startswith(turn):
            return None  # the template renders history differently: left out of the trained count
        ends = [turn.rfind(t) + len(t) for t in self._end_tokens if turn.rfind(t) >= len(prompt)]
        return len(prompt), max(ends, default=len(turn))

    def _end_of_turn(self, text: str, end: int) -> int:
        """Extend a content span over the whitespace and the special token that close the turn."""
        after = end
        while after < len(text) and text[after].isspace():
            after += 1
        for token in self._end_tokens:
            if text.startswith(token, after):
                return after + len(token)
        return end

    def count_chat(
        self, records: list[dict], errors: list[ChatTemplateError] | None = None
    ) -> list[tuple[int, int] | None]:
        """(total tokens, trained tokens) per chat example, as `apply_chat_template(tokenize=True)` counts.

        Records must have passed `check_chat_record`. An example the template refuses (many
        templates cannot render tool calls) raises `ChatTemplateError`, whose `index` is its
        position in `records`; pass an `errors` list instead to collect those errors and get
        None for those examples while the rest are counted.
        """
        from bisect import bisect_left, bisect_right

        rendered: list[tuple[str, list[tuple[int, int]]] | None] = []
        for i, record in enumerate(records):
            try:
                rendered.append(self.render_chat(record, i))
            except ChatTemplateError as exc:
                if errors is None:
                    raise
                errors.append(exc)
                rendered.append(None)
        ok = [r for r in rendered if r is not None]
        encodings = iter(self.tokenizer.encode_batch([text for text, _ in ok], add_special_tokens=False))
        out: list[tuple[int, int] | None] = []
        for item in rendered:
            if item is None:
                out.append(None)
                continue
            spans, enc = item[1], next(encodings)
            trained = 0
            if spans:
                offsets = enc.offsets
                # byte-level tokenizers trim a spaces-only token's offsets to (end, end): it covers end - 1
                starts = [s - 1 if s == e and s else s for s, e in offsets]
                ends = [e for _, e in offsets]
                for s, e in spans:
                    # tokens overlapping [s, e): start before e and end after s
                    trained += bisect_left(starts, e) - bisect_right(ends, s)
            out.append((len(enc), trained))
        return out

    # -- prompt/completion ------------------------------------------------------------------

    def count_completion(self, records: list[dict]) -> list[tuple[int, int]]:
        """(total, trained) per prompt/completion example.

        total = prompt tokens (with the tokenizer's own BOS, if it adds one) + completion tokens
        + EOS; trained = completion tokens + EOS. Prompt and completion are encoded separately,
        as a trainer does to know exactly where the loss starts.
        """
        total, trained = self.count_pairs([r.get("prompt") or "" for r in records], [r.get("completion") or "" for r in records])
        return list(zip(total, trained))

    def count_pairs(self, prompts: list[str], completions: list[str]) -> tuple[list[int], list[int]]:
        """`count_completion` over two columns of texts: the (total, trained) lists."""
        eos = 1 if self.eos_id is not None else 0
        p_len = self._lengths(prompts, add_special_tokens=True)
        trained = [c + eos for c in self._lengths(completions, add_special_tokens=False)]
        return list(map(add, p_len, trained)), trained

    def _lengths(self, texts: list[str], add_special_tokens: bool) -> list[int]:
        """Token counts, encoding each distinct text once (classification completions repeat a lot)."""
        unique = list(dict.fromkeys(texts))
        if not hasattr(self, "_pieces"):  # byte-level BPE: count by cached pieces (exact, ~5x faster)
            from tunery.data.fastcount import PieceLengths

            self._pieces = PieceLengths.for_tokenizer(self.tokenizer)
        if self._pieces is not None:
            counts = self._pieces.lengths(unique, add_special_tokens)
        else:
            counts = [len(e) for e in self.tokenizer.encode_batch_fast(unique, add_special_tokens=add_special_tokens)]
        length = dict(zip(unique, counts))
        return [length[t] for t in texts]


class TokenStats:
    """Token statistics of a whole dataset in bounded memory (two histograms and a few sums).

    `billable_tokens` is the per-epoch total with each example capped at `context_length`
    (what is actually trained on, and what OpenAI bills); `truncated_tokens` is what the cap cuts.
    """

    def __init__(self, context_length: int | None = None):
        self.context_length = context_length
        self.tokens = Histogram()
        self.trained = Histogram()
        self.over_context = 0
        self.over_context_lines: list[int] = []
        self.truncated_tokens = 0

    def add(self, total: int, trained: int, line: int | None = None) -> None:
        self.tokens.add(total)
        self.trained.add(trained)
        if self.context_length is not None and total > self.context_length:
            self.add_over_context(total, line)

    def add_over_context(self, total: int, line: int | None) -> None:
        """The context part of `add`, for an example longer than the context."""
        self.over_context += 1
        self.truncated_tokens += total - self.context_length
        if line is not None and len(self.over_context_lines) < 5:
            self.over_context_lines.append(line)

    def add_counts(self, totals: Mapping[int, int], trained: Mapping[int, int]) -> None:
        """The histogram part of `add` for many examples: {value: how many examples have it}."""
        for h, counts in ((self.tokens, totals), (self.trained, trained)):
            for value, times in counts.items():
                h.add(value, times)

    def add_many(self, counts: list[tuple[int, int]], lines: list[int] | None = None) -> None:
        if counts:
            totals, trained = zip(*counts)
            self.add_columns(list(totals), list(trained), lines)

    def add_columns(self, totals: Sequence[int], trained: Sequence[int], lines: Sequence[int] | None = None) -> None:
        """`add` each example (the same statistics), counting repeated values once per value."""
        self.add_counts(Counter(totals), Counter(trained))
        ctx = self.context_length
        if ctx is not None and totals and max(totals) > ctx:
            for k, total in enumerate(totals):
                if total > ctx:
                    self.add_over_context(total, lines[k] if lines is not None else None)

    @property
    def examples(self) -> int:
        return self.tokens.count

    @property
    def billable_tokens(self) -> int:
        """Tokens per epoch, each example capped at the context length."""
        return self.tokens.sum - self.truncated_tokens

    def to_dict(self) -> dict[str, Any]:
        return {
            "examples": self.examples,
            "context_length": self.context_length,
            "tokens_per_example": self.tokens.summary(),
            "trained_tokens_per_example": self.trained.summary(),
            "total_tokens": self.tokens.sum,
            "trained_tokens": self.trained.sum,
            "billable_tokens_per_epoch": self.billable_tokens,
            "examples_over_context": self.over_context,
            "truncated_tokens": self.truncated_tokens,
        }

    def findings(self) -> list[Finding]:
        if not self.examples:
            return []

        def line(name: str, h: Histogram) -> str:
            return f"{name} per example: min {h.min}, median {h.percentile(0.5)}, p95 {h.percentile(0.95)}, max {h.max}"

        out = [
            Finding("tokens_per_example", Level.INFO, line("tokens", self.tokens), data=self.tokens.summary()),
            Finding(
                "trained_tokens_per_example", Level.INFO, line("trained tokens", self.trained), data=self.trained.summary()
            ),
        ]
        if self.over_context:
            out.append(
                Finding(
                    "examples_over_context",
                    Level.WARNING,
                    f"{self.over_context} examples are longer than the {self.context_length}-token context and will "
                    f"be truncated ({self.truncated_tokens} tokens cut)",
                    line=self.over_context_lines[0] if self.over_context_lines else None,
                    count=self.over_context,
                    lines=list(self.over_context_lines),
                    data={"truncated_tokens": self.truncated_tokens, "context_length": self.context_length},
                )
            )
        return out
