"""Which metrics an evaluation reports: the task, inferred from the references unless given.

classification — few distinct short answers (the label set is the set of references);
regression — every reference is a number and there are too many values to be classes;
generation — anything else. Numeric class labels (star ratings) are ordinal: they also get MAE/RMSE.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tunery.eval.labels import label_order, numeric_labels

TASKS = ("classification", "regression", "generation")
MAX_CLASSES = 50
MAX_LABEL_WORDS = 4


@dataclass(frozen=True)
class Task:
    name: str  # one of TASKS
    labels: list[str] | None = None  # classification: the classes, in display order
    ordinal: bool = False  # classification with numeric labels: MAE/RMSE apply

    def to_dict(self) -> dict:
        return {"task": self.name, "labels": self.labels, "ordinal": self.ordinal}


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def infer_task(references: Sequence[str], task: str | None = None, labels: Sequence[str] | None = None) -> Task:
    """The task for these references; `task` forces one, `labels` fixes the classes (and implies classification)."""
    if task is not None and task not in TASKS:
        raise ValueError(f"unknown task {task!r}: use one of {', '.join(TASKS)}")
    refs = [r.strip() for r in references]
    distinct = set(refs)
    if labels is not None:
        if task not in (None, "classification"):
            raise ValueError(f"--labels applies to classification, not {task}")
        labels = list(dict.fromkeys(label.strip() for label in labels))
        missing = sorted(distinct - set(labels))
        if missing:
            raise ValueError(f"references not in --labels: {', '.join(map(repr, missing[:5]))}")
        return Task("classification", labels, numeric_labels(labels) is not None)
    if task is None:
        short = all(len(r.split()) <= MAX_LABEL_WORDS for r in refs)
        if short and len(distinct) <= MAX_CLASSES and len(distinct) <= max(2, len(refs) // 2):
            task = "classification"
        elif refs and all(_is_number(r) for r in refs):
            task = "regression"
        else:
            task = "generation"
    if task == "classification":
        ordered = label_order(distinct)
        return Task(task, ordered, numeric_labels(ordered) is not None)
    if task == "regression":
        bad = next((r for r in refs if not _is_number(r)), None)
        if bad is not None:
            raise ValueError(f"regression needs numeric references, got {bad!r}")
    return Task(task)
