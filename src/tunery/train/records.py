"""Reading prepared JSONL training files and telling the record formats apart.

Files reaching the trainer were already checked by `tunery.data` (prepare / upload validation), so
this only parses and classifies; a record the engine cannot train on fails with the file, line and
field named.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tunery.data.formats import CHAT, COMPLETION, FileFormat, FormatError
from tunery.data.formats import DPO as PREFERENCE

from .errors import TrainError

__all__ = ["CHAT", "COMPLETION", "PREFERENCE", "Record", "iter_records", "read_records"]


@dataclass(frozen=True)
class Record:
    line: int  # 1-based line number in the file
    kind: str  # CHAT | COMPLETION | PREFERENCE
    data: dict[str, Any]


def read_records(path: str | Path, param: str = "training_file") -> list[Record]:
    """All non-blank lines of a JSONL file as classified records (`tunery.data.formats`' rule)."""
    return list(iter_records(path, param))


def iter_records(path: str | Path, param: str = "training_file") -> Iterator[Record]:
    """The records of a JSONL file one at a time, as it is read: neither the file nor its records
    are ever held whole (a training file can be gigabytes). Errors come when their line is reached."""
    path = Path(path)
    # Messages name the file by its role, not its path: a job's error is shown to the client, whose
    # file is stored under a server path it must not learn (and does not need: it uploaded it).
    label = param.replace("_", " ").capitalize()
    seen = 0
    file_format = FileFormat()
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    data = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise TrainError(f"invalid_{param}", f"{label}, line {number}: not valid JSON ({exc.msg})", param) from None
                try:
                    kind = file_format.check(data, number)
                except FormatError as exc:
                    raise TrainError(f"invalid_{param}", f"{label}, line {number}: {exc.message}", param) from None
                seen += 1
                yield Record(number, kind, data)
    except FileNotFoundError:
        raise TrainError(f"invalid_{param}", f"{label} not found", param) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TrainError(f"invalid_{param}", f"{label} cannot be read: {_reason(exc)}", param) from None
    if not seen:
        raise TrainError(f"invalid_{param}", f"{label} has no examples", param)


def _reason(exc: Exception) -> str:
    """Why a file could not be read, without the file name an OSError's text carries."""
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 text (byte {exc.start})"
    return getattr(exc, "strerror", None) or type(exc).__name__
