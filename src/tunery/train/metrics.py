"""`DIR/metrics.csv` in OpenAI's result-file format, and the running numbers behind it."""

from __future__ import annotations

import csv
from pathlib import Path

COLUMNS = ["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"]


class MetricsCSV:
    """Appends one row per step; validation columns are empty on steps without validation."""

    def __init__(self, path: Path, resume_step: int = 0):
        self.path = path
        rows = []
        if resume_step and path.exists():
            # Rows past the checkpoint were written by the interrupted run and will be redone.
            with open(path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if r.get("step", "").isdigit() and int(r["step"]) <= resume_step]
        self._file = open(path, "w", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._file, fieldnames=COLUMNS)
        self._writer.writeheader()
        self._writer.writerows(rows)
        self._file.flush()

    def write(self, step: int, train_loss: float, train_accuracy: float, valid_loss: float | None = None, valid_accuracy: float | None = None) -> None:
        fmt = lambda v: "" if v is None else f"{v:.6f}"  # noqa: E731
        self._writer.writerow(
            {"step": step, "train_loss": fmt(train_loss), "train_accuracy": fmt(train_accuracy), "valid_loss": fmt(valid_loss), "valid_mean_token_accuracy": fmt(valid_accuracy)}
        )
        self._file.flush()

    def close(self) -> None:
        self._file.close()
