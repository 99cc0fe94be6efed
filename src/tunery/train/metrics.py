"""`DIR/metrics.csv` in OpenAI's result-file format, and the running numbers behind it."""

from __future__ import annotations

import csv
from pathlib import Path

# Supervised runs; a method names its own columns (DPO: its rewards).
COLUMNS = ["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"]


class MetricsCSV:
    """Appends one row per step; validation columns are empty on steps without validation."""

    def __init__(self, path: Path, resume_step: int = 0, columns: list[str] = COLUMNS):
        self.path = path
        rows = []
        if resume_step and path.exists():
            # Rows past the checkpoint were written by the interrupted run and will be redone.
            with open(path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if r.get("step", "").isdigit() and int(r["step"]) <= resume_step]
        self._file = open(path, "w", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._file, fieldnames=columns)
        self._writer.writeheader()
        self._writer.writerows(rows)
        self._file.flush()

    def write(self, row: dict) -> None:
        """One step's row from {column: number or None}; the step stays an integer."""
        self._writer.writerow({k: v if k == "step" else ("" if v is None else f"{v:.6f}") for k, v in row.items()})
        self._file.flush()

    def close(self) -> None:
        self._file.close()
