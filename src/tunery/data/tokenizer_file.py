"""Load a tokenizer.json with about half the peak memory of `Tokenizer.from_file`.

tokenizers reads the BPE `merges` of current files as pairs (`[["Ġ", "t"], ...]`); on the way
its deserializer keeps several generic copies of the whole model (~40 MB for a 50k vocabulary,
for a moment), and the peak memory of `tunery prepare` is that moment. The older spelling of the
same merges, one string `"Ġ t"` each, is read far more leanly (~20 MB). When no merged token
contains a space (byte-level BPE never does: a space is `Ġ`), both spellings mean exactly the same
merges, so the file's text is rewritten to the older spelling before tokenizers parses it.
Anything else (no pair-spelled merges, a space in a token, an odd layout) loads the file as is.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

_BODY = rb'[^"\\]*(?:\\.[^"\\]*)*'  # a JSON string's inside (the unrolled-loop form: fast)
_STRING = re.compile(rb'"' + _BODY + rb'"')
_PAIR = re.compile(rb'\[\s*"(' + _BODY + rb')"\s*,\s*"(' + _BODY + rb')"\s*\]')
_OPEN = re.compile(rb'"merges"\s*:\s*\[\s*\[')
_ESCAPED_WHITESPACE = (b"\\u0020", b"\\t", b"\\n", b"\\r", b"\\f")  # "a b" would be ambiguous


def merges_as_strings(data: bytes) -> bytes | None:
    """`data` (a tokenizer.json) with its pair-spelled merges as "a b" strings, or None to keep it.

    Only for the layout tokenizers writes: the merges array last in the model, the model last in
    the file, so that everything rewritten is merges.
    """
    start = data.rfind(b'"merges"')  # a vocab entry may also be "merges": the key comes after it
    opened = _OPEN.match(data, start) if start >= 0 else None
    if opened is None:
        return None
    head, tail = data[: opened.end() - 1], data[opened.end() - 1 :]  # tail: the first pair onwards
    lean, n = _PAIR.subn(rb'"\1 \2"', tail)
    # what is left besides the strings must be the array's separators and the closing braces
    rest = _STRING.sub(b"", lean)
    if n == 0 or rest.translate(None, b" \t\r\n,") != b"]}}":
        return None
    # exactly one space per merge inside the strings (none in a token), no escaped whitespace
    if lean.count(b" ") - rest.count(b" ") != n or any(w in lean for w in _ESCAPED_WHITESPACE):
        return None
    return head + lean


def load_tokenizer(path: str | Path) -> Any:
    """A `tokenizers.Tokenizer` from a tokenizer.json, read with the lean merges spelling if it can."""
    from tokenizers import Tokenizer

    lean = merges_as_strings(Path(path).read_bytes())
    if lean is None:
        return Tokenizer.from_file(str(path))
    return Tokenizer.from_buffer(lean)
