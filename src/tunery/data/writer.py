"""Write prepared records: spool them to a temporary JSONL, then copy lines by offset.

Shuffling and splitting a large file never holds its records: `Spool` remembers only the byte
offset of each line (8 bytes per record) and `write` copies the lines, in any order, to the
output files. Outputs are written to a temporary name and renamed, so a failed run never
leaves a half-written file under the final name.
"""

from __future__ import annotations

import json
import os
import tempfile
from array import array
from collections.abc import Callable, Sequence
from itertools import accumulate, islice
from pathlib import Path
from typing import Any


def output_paths(input_path: Path, out_dir: Path | None, split: bool) -> list[Path]:
    """`<name>_prepared.jsonl`, or `<name>_prepared_train.jsonl` and `_valid.jsonl`, next to the input."""
    folder = out_dir if out_dir is not None else input_path.parent
    stem = input_path.stem
    suffixes = ["_train", "_valid"] if split else [""]
    return [folder / f"{stem}_prepared{s}.jsonl" for s in suffixes]


_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(", ", ": ")).encode
_STRING = json.encoder.encode_basestring  # what that encoder writes for a str (C when available)


def dumps(record: dict[str, Any]) -> bytes:
    """One JSONL line (UTF-8, non-ASCII kept as is)."""
    return (_ENCODE(record) + "\n").encode("utf-8")


def pair_lines(prompts: list[str], completions: list[str]) -> list[bytes]:
    """`dumps({"prompt": p, "completion": c})` for each pair, byte for byte, without a dict each."""
    s = _STRING
    return [f'{{"prompt": {s(p)}, "completion": {s(c)}}}\n'.encode() for p, c in zip(prompts, completions)]


class Spool:
    """A temporary JSONL of the transformed records, addressed by record index."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".tunery-spool-", suffix=".jsonl", dir=folder)
        self.path = Path(name)
        self._file = os.fdopen(fd, "wb", buffering=1 << 20)
        self.offsets = array("q", [0])
        self._pos = 0

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def add(self, line: bytes) -> None:
        self._file.write(line)
        self._pos += len(line)
        self.offsets.append(self._pos)

    def add_many(self, lines: list[bytes]) -> None:
        if not lines:
            return
        self._file.write(b"".join(lines))
        self.offsets.extend(islice(accumulate(map(len, lines), initial=self._pos), 1, None))
        self._pos = self.offsets[-1]

    def write(self, path: Path, order: Sequence[int], progress: Callable[[int], None] | None = None) -> int:
        """Copy records `order` (indices) to `path`; returns the bytes written."""
        self._file.flush()
        tmp = path.with_name(f".{path.name}.tmp")
        written = 0
        offsets = self.offsets
        with open(self.path, "rb", buffering=0) as src, open(tmp, "wb", buffering=1 << 20) as dst:
            fd = src.fileno()
            for k, i in enumerate(order):
                i = int(i)
                start, end = offsets[i], offsets[i + 1]
                dst.write(os.pread(fd, end - start, start))  # one system call per line
                written += end - start
                if progress is not None and k % 4096 == 0:
                    progress(written)
        os.replace(tmp, path)
        return written

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
