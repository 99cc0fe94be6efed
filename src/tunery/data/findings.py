"""What a data check reports: one `Finding` per problem, naming the line and field."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from dataclasses import field as dataclass_field  # `field` is also a Finding attribute
from enum import Enum
from typing import Any


class Level(str, Enum):
    ERROR = "error"  # the file cannot be used for training as it is
    WARNING = "warning"  # usable, but probably not what the user wants
    FIX = "fix"  # a remedy that was (or will be) applied
    INFO = "info"  # a statistic or a suggestion


@dataclass
class Finding:
    code: str  # stable, machine-readable: e.g. "missing_content", "duplicate_rows"
    level: Level
    message: str  # one human sentence
    line: int | None = None  # 1-based line (JSONL) or row (tables) of the first occurrence
    field: str | None = None  # e.g. "messages[2].content"
    count: int = 1  # how many records share this finding (summaries group by code)
    lines: list[int] = dataclass_field(default_factory=list)  # a few example lines when count > 1
    data: dict[str, Any] = dataclass_field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["level"] = self.level.value
        return d

    def where(self) -> str:
        parts = []
        if self.line is not None:
            parts.append(f"line {self.line}")
        if self.field:
            parts.append(self.field)
        return ", ".join(parts)
