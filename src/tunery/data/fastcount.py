"""Exact token counts for byte-level BPE tokenizers, several times faster than encoding every text.

A byte-level BPE tokenizer (GPT-2, SmolLM2, Llama 3, Qwen2...) first splits text with a fixed
regex, then merges each piece on its own: a text's token count is the sum of its pieces'
counts. So counting only needs each *distinct* piece encoded once (a few tens of thousands for
a large English data set) instead of every token; the rest is a regex split and dict lookups,
or for most ASCII text just `str.split(" ")` and lookups of whole space-separated chunks.

Used only when the tokenizer is exactly that shape (no normalizer, a ByteLevel pre-tokenizer
with its regex and no prefix space, BPE without dropout); texts containing an added token
(`<|im_end|>`...) are encoded normally. The first batch is also encoded normally and compared,
so a tokenizer that splits differently (another Unicode version...) falls back to encoding.
"""

from __future__ import annotations

import re
from itertools import islice
from typing import Any

# The ByteLevel pre-tokenizer's regex (GPT-2's), as tokenizers applies it.
BYTE_LEVEL_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# The same split for ASCII text, with the stdlib's faster `re`: letters, digits and whitespace
# spelled out as the Unicode classes contain them within ASCII (Unicode White_Space is
# \t\n\v\f\r and space, not the \x1c-\x1f that Python's \s adds).
_WS = "\t\n\x0b\x0c\r "
ASCII_PATTERN = (
    rf"'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^{_WS}A-Za-z0-9]+|[{_WS}]+(?![^{_WS}])|[{_WS}]+"
)
MAX_CACHED_PIECES = 100_000  # ~10 MB; the cache starts over when full
# Pieces never span a single space between two chunks of ASCII text, except inside a run of 3+
# whitespace characters or a run of 2+ at the very end (there the regex groups the spaces
# differently): texts without such runs are counted chunk by chunk, `str.split(" ")` and lookups.
_RISKY_SPACES = re.compile(r"[\t\n\r\x0b\x0c ]{3,}|[\t\n\r\x0b\x0c ]{2,}\Z")


def _maybe_risky(text: str) -> bool:
    """Two whitespace characters in a row (cheap `in` scans before the regex)."""
    return (
        "  " in text or "\n\n" in text or " \n" in text or "\n " in text
        or "\t" in text or "\r" in text or "\x0b" in text or "\x0c" in text
    )  # fmt: skip


class _ChunkCounts(dict):
    """chunk -> tokens of `prefix + chunk`, computed on first use from the piece cache."""

    def __init__(self, owner: PieceLengths, prefix: str):
        super().__init__()
        self.owner, self.prefix = owner, prefix

    def __missing__(self, chunk: str) -> int:
        n = self[chunk] = self.owner.count_one(self.prefix + chunk)
        return n


class PieceLengths:
    """`lengths(texts, add_special_tokens)` = `[len(e) for e in tokenizer.encode_batch(...)]`, faster."""

    def __init__(self, tokenizer: Any):
        import regex

        self.tokenizer = tokenizer
        self.split = regex.compile(BYTE_LEVEL_PATTERN).findall
        self.split_ascii = re.compile(ASCII_PATTERN).findall
        added = sorted({t.content for t in tokenizer.get_added_tokens_decoder().values() if t.content})
        self.added = added
        # an added token can only occur where its first character does (`in` is a fast C scan)
        self.added_starts = sorted({t[0] for t in added})
        # what the post-processor adds to one sequence (a BOS, say): the same for every text
        self.extra = len(tokenizer.encode("", add_special_tokens=True))
        self.pieces: dict[str, int] = {}
        self.first_chunks = _ChunkCounts(self, "")  # the text's first chunk
        self.chunks = _ChunkCounts(self, " ")  # every later chunk, with the space before it
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
        if len(pieces) + len(self.chunks) > MAX_CACHED_PIECES:
            pieces.clear()
            self.first_chunks.clear()
            self.chunks.clear()
        split, split_ascii, risky = self.split, self.split_ascii, _RISKY_SPACES.search
        added, starts = self.added, self.added_starts
        first, later = self.first_chunks, self.chunks.__getitem__
        out = [0] * len(texts)
        by_pieces: list[tuple[int, list[str]]] = []
        missing: set[str] = set()
        fallback: list[int] = []
        for i, text in enumerate(texts):
            if any(c in text for c in starts) and any(t in text for t in added):
                fallback.append(i)
            elif text.isascii() and not (_maybe_risky(text) and risky(text)):
                chunks = text.split(" ")
                out[i] = extra + first[chunks[0]] + sum(map(later, islice(chunks, 1, None)))
            else:
                parts = split_ascii(text) if text.isascii() else split(text)
                by_pieces.append((i, parts))
                missing.update(p for p in parts if p not in pieces)
        if missing:
            unique = list(missing)
            for piece, enc in zip(unique, self.tokenizer.encode_batch_fast(unique, add_special_tokens=False)):
                pieces[piece] = len(enc)
        get = pieces.__getitem__
        for i, parts in by_pieces:
            out[i] = extra + sum(map(get, parts))
        if fallback:
            for i, n in zip(fallback, self._encoded([texts[i] for i in fallback], add_special_tokens)):
                out[i] = n
        if not self.verified:
            self.verified = True
            if out != self._encoded(texts, add_special_tokens):
                self.enabled = False  # this tokenizer splits differently: always encode
                return self._encoded(texts, add_special_tokens)
        return out

    def count_one(self, text: str) -> int:
        """Tokens of one text without added tokens, from the piece cache."""
        parts = self.split_ascii(text) if text.isascii() else self.split(text)
        pieces = self.pieces
        for p in parts:
            if p not in pieces:
                pieces[p] = len(self.tokenizer.encode(p, add_special_tokens=False))
        return sum(map(pieces.__getitem__, parts))

    def _encoded(self, texts: list[str], add_special_tokens: bool) -> list[int]:
        return [len(e) for e in self.tokenizer.encode_batch_fast(texts, add_special_tokens=add_special_tokens)]
