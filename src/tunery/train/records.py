"""Reading prepared JSONL training files and telling the record formats apart.

Files reaching the trainer were already checked by `tunery.data` (prepare / upload validation), so
this only parses and classifies; a record the engine cannot train on fails with the file, line and
field named.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunery.data.formats import CHAT, COMPLETION, FileFormat, FormatError
from tunery.data.formats import DPO as PREFERENCE

from .errors import TrainError

__all__ = ["CHAT", "COMPLETION", "PREFERENCE", "Record", "read_records"]


@dataclass(frozen=True)
class Record:
    line: int  # 1-based line number in the file
    kind: str  # CHAT | COMPLETION | PREFERENCE
    data: dict[str, Any]


def read_records(path: str | Path, param: str = "training_file") -> list[Record]:
    """All non-blank lines of a JSONL file as classified records (`tunery.data.formats`' rule).

    Read line by line: the records are kept, the file's text is not.
    """
    path = Path(path)
    records = []
    file_format = FileFormat()
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    data = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise TrainError(f"invalid_{param}", f"{path}, line {number}: not valid JSON ({exc.msg})", param) from None
                try:
                    kind = file_format.check(data, number)
                except FormatError as exc:
                    raise TrainError(f"invalid_{param}", f"{path}, line {number}: {exc.message}", param) from None
                records.append(Record(number, kind, data))
    except FileNotFoundError:
        raise TrainError(f"invalid_{param}", f"{path}: file not found", param) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TrainError(f"invalid_{param}", f"{path}: cannot read: {exc}", param) from None
    if not records:
        raise TrainError(f"invalid_{param}", f"{path}: the file has no examples", param)
    return records
