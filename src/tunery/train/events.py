"""The progress stream: `DIR/events.jsonl`, one JSON object per line, flushed as it happens.

Each event: `{"type": "message"|"metrics"|"checkpoint"|"status", "level": "info"|"warn"|"error",
"message": str, "created_at": unix_ts, "data": {...}}`; the job runner tails the file and forwards
events as OpenAI `fine_tuning.job.event`s. Library callers also get each event via `on_event`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path


class EventLog:
    def __init__(self, path: Path, on_event: Callable[[dict], None] | None = None):
        self.path = path
        self.on_event = on_event
        self._file = open(path, "a", encoding="utf-8")

    def emit(self, type: str, message: str, data: dict | None = None, level: str = "info") -> dict:
        event = {"type": type, "level": level, "message": message, "created_at": int(time.time()), "data": data or {}}
        self._file.write(json.dumps(event, ensure_ascii=False) + "\n")
        self._file.flush()
        if self.on_event is not None:
            self.on_event(event)
        return event

    def close(self) -> None:
        self._file.close()


def metrics_message(data: dict) -> str:
    """OpenAI's wording: `Step 30/300: training loss=0.15, validation loss=0.27`."""
    text = f"Step {data['step']}/{data['total_steps']}: training loss={data['train_loss']:.4f}"
    if data.get("valid_loss") is not None:
        text += f", validation loss={data['valid_loss']:.4f}"
    if data.get("full_valid_loss") is not None:
        text += f", full validation loss={data['full_valid_loss']:.4f}"
    if data.get("rewards/accuracies") is not None:  # DPO
        text += f", reward accuracy={data['rewards/accuracies']:.2f}, margin={data['rewards/margins']:.4f}"
    return text


def write_json_atomic(path: Path, data: dict) -> None:
    """Write then rename: a reader sees the whole file or none of it."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, ensure_ascii=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
