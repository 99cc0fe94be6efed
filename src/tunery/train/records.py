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

from .errors import TrainError

CHAT, COMPLETION, PREFERENCE = "chat", "completion", "preference"


@dataclass(frozen=True)
class Record:
    line: int  # 1-based line number in the file
    kind: str  # CHAT | COMPLETION | PREFERENCE
    data: dict[str, Any]


def record_kind(data: Any) -> str | None:
    if not isinstance(data, dict):
        return None
    if isinstance(data.get("messages"), list):
        return CHAT
    if "preferred_output" in data and "input" in data:
        return PREFERENCE
    if "prompt" in data or "completion" in data:
        return COMPLETION
    return None


def read_records(path: str | Path, param: str = "training_file") -> list[Record]:
    """All non-blank lines of a JSONL file as classified records."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TrainError(f"invalid_{param}", f"{path}: file not found", param) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TrainError(f"invalid_{param}", f"{path}: cannot read: {exc}", param) from None
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TrainError(f"invalid_{param}", f"{path}, line {number}: not valid JSON ({exc.msg})", param) from None
        kind = record_kind(data)
        if kind is None:
            raise TrainError(
                f"invalid_{param}",
                f"{path}, line {number}: expected an object with 'messages' (chat), 'prompt'/'completion' "
                "(legacy) or 'input'/'preferred_output' (preference)",
                param,
            )
        records.append(Record(number, kind, data))
    if not records:
        raise TrainError(f"invalid_{param}", f"{path}: the file has no examples", param)
    kinds = {r.kind for r in records}
    if len(kinds) > 1:
        first = {k: next(r.line for r in records if r.kind == k) for k in kinds}
        detail = ", ".join(f"{k} (first at line {n})" for k, n in sorted(first.items(), key=lambda kv: kv[1]))
        raise TrainError(f"invalid_{param}", f"{path}: mixes record formats: {detail}", param)
    return records
