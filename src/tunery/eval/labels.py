"""Reading a label out of a model's free-form answer.

A fine-tuned classifier answers with the label alone; a base model says "The sentiment is
Positive." Both should count when they name one label. The rule: compare case-insensitively with
punctuation treated as space; an answer that *is* a label wins; otherwise the label named first
in the answer (longest label on ties, so "very positive" beats "positive"); numeric labels also
match a number written differently ("4.0" for "4", "4 stars"). No label named: invalid (None).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_NON_WORD = re.compile(r"[^\w]+")
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


def _words(text: str) -> str:
    return " ".join(_NON_WORD.sub(" ", text.lower()).split())


def _number(text: str) -> float | None:
    try:
        return float(text.strip())
    except ValueError:
        return None


def parse_label(answer: str, labels: Sequence[str]) -> str | None:
    """The label `answer` names, or None when it names none of `labels`."""
    answer = answer.strip()
    for label in labels:  # exact answers first, untouched
        if answer == label.strip():
            return label
    text = _words(answer)
    keys = {label: _words(label) for label in labels}
    for label, key in keys.items():
        if key and text == key:
            return label
    numeric = {label: _number(label) for label in labels}
    if all(v is not None for v in numeric.values()):
        # Numbers: the first number in the answer, compared by value ("4.0", "4 stars", "Rating: 4").
        for match in _NUMBER.finditer(answer):
            value = float(match.group())
            hit = next((label for label, v in numeric.items() if v == value), None)
            if hit is not None:
                return hit
        return None
    best = None  # (position, -length, label)
    padded = f" {text} "
    for label, key in keys.items():
        if not key:
            continue
        at = padded.find(f" {key} ")
        if at >= 0 and (best is None or (at, -len(key)) < best[:2]):
            best = (at, -len(key), label)
    return best[2] if best else None


def numeric_labels(labels: Sequence[str]) -> dict[str, float] | None:
    """Each label's value when every label is a number, else None."""
    values = {label: _number(label) for label in labels}
    return values if all(v is not None for v in values.values()) else None


def label_order(labels: Sequence[str]) -> list[str]:
    """Numeric labels by value, others alphabetically: the order of tables and matrices."""
    values = numeric_labels(labels)
    return sorted(labels, key=lambda x: values[x]) if values else sorted(labels)
