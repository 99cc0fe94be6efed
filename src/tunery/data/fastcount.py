"""Exact token counts for byte-level BPE tokenizers, several times faster than encoding every text.

A byte-level BPE tokenizer (GPT-2, SmolLM2, Llama 3, Qwen2...) first splits text with a fixed
regex, then merges each piece on its own: a text's token count is the sum of its pieces'
counts. So counting only needs each *distinct* piece encoded once (a few tens of thousands for
a large English data set) instead of every token; the rest is a regex split and dict lookups,
or for most ASCII text just `str.split(" ")` and lookups of whole space-separated chunks, or,
where sentences repeat (templated prompts, fixed instructions, reused passages), one lookup per
whole sentence.

Used only when the tokenizer is exactly that shape (no normalizer, a ByteLevel pre-tokenizer
with its regex and no prefix space, BPE without dropout); texts containing an added token
(`<|im_end|>`...) are encoded normally. The first batch is also encoded normally and compared,
so a tokenizer that splits differently (another Unicode version...) falls back to encoding.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
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
# Counting by sentence goes on after SENTENCE_TRIAL texts only while fewer than SENTENCE_MISS_RATE
# new sentences per text were met (a data set of unique sentences pays one more split and one
# more cache entry per sentence for nothing).
SENTENCE_TRIAL = 20_000
SENTENCE_MISS_RATE = 1.0
MAX_SENTENCE_CHARS = 256  # longer ones are counted but not kept: the cache stays small whatever the data
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


# Marks a text's first chunk (counted without the space before it) in the chunk cache. Texts
# holding a NUL never take the chunk path, so a later chunk cannot start with one.
FIRST = "\x00"


class _ChunkCounts(dict):
    """chunk -> its tokens, computed on first use from the piece cache: `FIRST + chunk` is a
    text's first chunk as is, any other key a later chunk with the space before it."""

    def __init__(self, owner: PieceLengths):
        super().__init__()
        self.owner = owner

    def __missing__(self, chunk: str) -> int:
        text = chunk[1:] if chunk[:1] == FIRST else " " + chunk
        n = self[chunk] = self.owner.count_one(text)
        return n


class _SegmentCounts(dict):
    """Sentence -> its tokens, from the chunk counts: a text split at ". " is counted as its
    sentences, each cached whole (one lookup for a sentence seen before, where a chunk lookup per
    word would be needed). `dotted` keys are followed by the "." the split removed."""

    def __init__(self, chunks: _ChunkCounts, dotted: bool):
        super().__init__()
        self.chunks, self.dotted, self.misses = chunks, dotted, 0

    def __missing__(self, segment: str) -> int:
        self.misses += 1
        text = segment + "." if self.dotted else segment
        n = sum(map(self.chunks.__getitem__, text.split(" ")))
        if len(segment) <= MAX_SENTENCE_CHARS:
            self[segment] = n
        return n


class PieceLengths:
    """`lengths(texts, add_special_tokens)` = `[len(e) for e in tokenizer.encode_batch(...)]`, faster."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self._regex = None  # the Unicode split, compiled on the first non-ASCII text
        self.split_ascii = re.compile(ASCII_PATTERN).findall
        added = sorted({t.content for t in tokenizer.get_added_tokens_decoder().values() if t.content})
        self.added = added
        # an added token can only occur where its first character does (`in` is a fast C scan)
        self.added_starts = sorted({t[0] for t in added})
        # what the post-processor adds to one sequence (a BOS, say): the same for every text
        self.extra = len(tokenizer.encode("", add_special_tokens=True))
        self.pieces: dict[str, int] = {}
        self.chunks = _ChunkCounts(self)
        # Texts split at ". " are counted sentence by sentence (pieces never span a single space
        # between two chunks, so any single space is a valid split): data with repeated sentences
        # (instructions, boilerplate, reused passages) then costs one lookup per sentence. Turned
        # off for the rest of the run when most sentences are new.
        self.sentences = (_SegmentCounts(self.chunks, dotted=True), _SegmentCounts(self.chunks, dotted=False))
        self.by_sentence = True
        self._sentence_texts = 0  # texts counted by sentence so far
        self.verified = False
        self.enabled = True

    @property
    def split(self) -> Callable[[str], list[str]]:
        """The ByteLevel regex split (the `regex` module: Unicode classes), loaded when first needed."""
        if self._regex is None:
            import regex

            self._regex = regex.compile(BYTE_LEVEL_PATTERN).findall
        return self._regex

    @split.setter
    def split(self, value: Callable[[str], list[str]]) -> None:
        self._regex = value

    @property
    def first_chunks(self) -> set[str]:
        """The first chunks of texts in the cache (for inspection)."""
        return {k[1:] for k in self.chunks if k[:1] == FIRST}

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
        if len(self.pieces) + len(self.chunks) + len(self.sentences[0]) + len(self.sentences[1]) > MAX_CACHED_PIECES:
            self.pieces.clear()
            self.chunks.clear()
            self.sentences[0].clear()
            self.sentences[1].clear()
        # The tests that send a text elsewhere run once on the whole batch joined (C scans);
        # NUL joins the texts: not whitespace, so no whitespace pair spans two texts.
        joined = FIRST.join(texts)
        out: list[int | None]
        if (
            joined.count(FIRST) == len(texts) - 1
            and not _maybe_risky(joined)
            and not any(c in joined for c in self.added_starts)
        ):
            # ASCII texts: one cached lookup per sentence or per space-separated chunk, the first one marked
            if self.by_sentence:
                out = self._by_sentence(texts, extra)
            else:
                get = self.chunks.__getitem__
                out = [extra + sum(map(get, (FIRST + t).split(" "))) if t.isascii() else None for t in texts]
            slow = [] if joined.isascii() else [i for i, n in enumerate(out) if n is None]
        else:
            out, slow = [None] * len(texts), range(len(texts))
        if slow:
            self._slow(texts, slow, extra, add_special_tokens, out)
        if not self.verified:
            self.verified = True
            if out != self._encoded_here(texts, add_special_tokens):
                self.enabled = False  # this tokenizer splits differently: always encode
                return self._encoded(texts, add_special_tokens)
        return out  # type: ignore[return-value]

    def _by_sentence(self, texts: list[str], extra: int) -> list[int | None]:
        dotted, last = self.sentences
        get_dotted, get_last = dotted.__getitem__, last.__getitem__
        out: list[int | None] = []
        for t in texts:
            if t.isascii():
                parts = (FIRST + t).split(". ")
                end = parts.pop()
                out.append(extra + sum(map(get_dotted, parts)) + get_last(end))
            else:
                out.append(None)
        self._sentence_texts += len(texts)
        misses = dotted.misses + last.misses
        if self._sentence_texts >= SENTENCE_TRIAL and misses > SENTENCE_MISS_RATE * self._sentence_texts:
            self.by_sentence = False  # sentences rarely repeat here: the per-chunk path costs less
            dotted.clear()
            last.clear()
        return out

    def _slow(self, texts: list[str], which: Iterable[int], extra: int, add_special_tokens: bool, out: list) -> None:
        """Texts the batch checks sent here: a whitespace check, then chunks, regex pieces or encoding."""
        added, starts, chunks = self.added, self.added_starts, self.chunks
        risky = _RISKY_SPACES.search
        by_pieces: list[tuple[int, list[str]]] = []
        missing: set[str] = set()
        fallback: list[int] = []
        pieces = self.pieces
        for i in which:
            text = texts[i]
            if any(c in text for c in starts) and any(t in text for t in added):
                fallback.append(i)
            elif text.isascii() and FIRST not in text and not (_maybe_risky(text) and risky(text)):
                out[i] = extra + sum(map(chunks.__getitem__, (FIRST + text).split(" ")))
            else:
                parts = self.split_ascii(text) if text.isascii() else self.split(text)
                by_pieces.append((i, parts))
                missing.update(p for p in parts if p not in pieces)
        # one at a time: a handful of new pieces per batch, and no worker threads (each would keep
        # its own malloc arena resident)
        encode = self.tokenizer.encode
        for piece in missing:
            pieces[piece] = len(encode(piece, add_special_tokens=False))
        get = pieces.__getitem__
        for i, parts in by_pieces:
            out[i] = extra + sum(map(get, parts))
        if fallback:
            for i, n in zip(fallback, self._encoded_here([texts[i] for i in fallback], add_special_tokens)):
                out[i] = n

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

    def _encoded_here(self, texts: list[str], add_special_tokens: bool) -> list[int]:
        """Like `_encoded`, in this thread: for the few texts checked or that hold added tokens,
        where a batch would start worker threads, each keeping its own malloc arena resident."""
        encode = self.tokenizer.encode
        return [len(encode(t, add_special_tokens=add_special_tokens)) for t in texts]
