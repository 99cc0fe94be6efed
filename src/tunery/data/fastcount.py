"""Exact token counts for byte-level BPE tokenizers, several times faster than encoding every text.

A byte-level BPE tokenizer (GPT-2, SmolLM2, Llama 3, Qwen2...) first splits text with a fixed
regex, then merges each piece on its own: a text's token count is the sum of its pieces'
counts. So counting only needs each *distinct* piece encoded once (a few tens of thousands for
a large English data set) instead of every token; the rest is a regex split and dict lookups.

Used only when the tokenizer is exactly that shape (no normalizer, a ByteLevel pre-tokenizer
with its regex and no prefix space, BPE without dropout); texts containing an added token
(`<|im_end|>`...) are encoded normally. The first batch is also encoded normally and compared,
so a tokenizer that splits differently (another Unicode version...) falls back to encoding.
"""

from __future__ import annotations

import re
from typing import Any

# The ByteLevel pre-tokenizer's regex (GPT-2's), as tokenizers applies it.
BYTE_LEVEL_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
MAX_CACHED_PIECES = 100_000  # ~10 MB; the cache starts over when full


class PieceLengths:
    """`lengths(texts, add_special_tokens)` = `[len(e) for e in tokenizer.encode_batch(...)]`, faster."""

    def __init__(self, tokenizer: Any):
        import regex

        self.tokenizer = tokenizer
        self.split = regex.compile(BYTE_LEVEL_PATTERN).findall
        added = [t.content for t in tokenizer.get_added_tokens_decoder().values() if t.content]
        self.has_added = re.compile("|".join(map(re.escape, added))).search if added else (lambda text: None)
        # what the post-processor adds to one sequence (a BOS, say): the same for every text
        self.extra = len(tokenizer.encode("", add_special_tokens=True))
        self.pieces: dict[str, int] = {}
        self.verified = False
        self.enabled = True

    @classmethod
    def for_tokenizer(cls, tokenizer: Any) -> PieceLengths | None:
        """A counter for `tokenizer` (a `tokenizers.Tokenizer`), or None when its shape does not allow it."""
        from tokenizers import models, pre_tokenizers

        pre = getattr(tokenizer, "pre_tokenizer", None)
        model = getattr(tokenizer, "model", None)
        if (
            getattr(tokenizer, "normalizer", None) is not None
            or not isinstance(pre, pre_tokenizers.ByteLevel)
            or pre.add_prefix_space
            or not pre.use_regex
            or not isinstance(model, models.BPE)
            or model.dropout not in (None, 0, 0.0)
        ):
            return None
        return cls(tokenizer)

    def lengths(self, texts: list[str], add_special_tokens: bool) -> list[int]:
        if not self.enabled:
            return self._encoded(texts, add_special_tokens)
        extra = self.extra if add_special_tokens else 0
        pieces = self.pieces
        if len(pieces) > MAX_CACHED_PIECES:
            pieces.clear()
        split, has_added = self.split, self.has_added
        per_text: list[list[str] | None] = []
        missing: set[str] = set()
        fallback: list[int] = []
        for i, text in enumerate(texts):
            if has_added(text):
                per_text.append(None)
                fallback.append(i)
                continue
            parts = split(text)
            per_text.append(parts)
            for p in parts:
                if p not in pieces:
                    missing.add(p)
        if missing:
            unique = list(missing)
            for piece, enc in zip(unique, self.tokenizer.encode_batch_fast(unique, add_special_tokens=False)):
                pieces[piece] = len(enc)
        get = pieces.__getitem__
        out = [extra + sum(map(get, parts)) if parts is not None else 0 for parts in per_text]
        if fallback:
            for i, n in zip(fallback, self._encoded([texts[i] for i in fallback], add_special_tokens)):
                out[i] = n
        if not self.verified:
            self.verified = True
            if out != self._encoded(texts, add_special_tokens):
                self.enabled = False  # this tokenizer splits differently: always encode
                return self._encoded(texts, add_special_tokens)
        return out

    def _encoded(self, texts: list[str], add_special_tokens: bool) -> list[int]:
        return [len(e) for e in self.tokenizer.encode_batch_fast(texts, add_special_tokens=add_special_tokens)]
