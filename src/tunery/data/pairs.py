"""The (position, prompt, completion) rows pass 1 keeps for pass 2, in a temporary file.

Written and read a block of rows at a time: a header (rows, bytes), the positions and the two
texts' lengths as arrays, then all the texts as one UTF-8 string, so that neither pass spends
Python work per row on the file (one encode, one decode and slices per block).
"""

from __future__ import annotations

import struct
import tempfile
from array import array
from collections.abc import Iterator
from itertools import accumulate
from pathlib import Path

BLOCK = 512
_HEADER = struct.Struct("<II")  # rows, bytes of text


class PairSpool:
    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.file = tempfile.TemporaryFile(prefix=".tunery-pairs-", dir=folder)
        self.positions = array("q")
        self.texts: list[str] = []  # prompt, completion, prompt, ...

    def add(self, position: int, prompt: str, completion: str) -> None:
        self.positions.append(position)
        self.texts += (prompt, completion)
        if len(self.positions) >= BLOCK:
            self.flush()

    def add_many(self, positions: list[int], prompts: list[str], completions: list[str]) -> None:
        self.flush()
        self.positions.extend(positions)
        self.texts = [t for pair in zip(prompts, completions) for t in pair]
        self.flush()

    def flush(self) -> None:
        if not self.positions:
            return
        texts = self.texts
        blob = "".join(texts).encode("utf-8", "surrogatepass")
        lengths = array("i", map(len, texts))  # in characters: pass 2 slices the decoded text
        self.file.write(_HEADER.pack(len(self.positions), len(blob)))
        self.file.write(self.positions.tobytes() + lengths.tobytes() + blob)
        self.positions, self.texts = array("q"), []

    def blocks(self) -> Iterator[list[tuple[int, tuple[str, str]]]]:
        """The rows again, a block (a list of `(position, (prompt, completion))`) at a time."""
        self.flush()
        f = self.file
        f.seek(0)
        while header := f.read(_HEADER.size):
            n, size = _HEADER.unpack(header)
            positions, lengths = array("q"), array("i")
            positions.frombytes(f.read(8 * n))
            lengths.frombytes(f.read(8 * n))
            text = f.read(size).decode("utf-8", "surrogatepass")
            ends = list(accumulate(lengths))
            starts = [0, *ends[:-1]]
            texts = list(map(text.__getitem__, map(slice, starts, ends)))
            yield list(zip(positions.tolist(), zip(texts[0::2], texts[1::2])))

    def tell(self) -> int:
        return self.file.tell()

    def close(self) -> None:
        self.file.close()
