"""The legacy `/v1/fine-tunes` option `compute_classification_metrics`: classification columns of a
fine-tune's result file, computed on its validation file with the fine-tuned weights.

Predictions are the model's greedy answers through the serving engine, read as labels; for a
binary task (`classification_positive_class`) AUROC/AUPRC use the model's probability of the
positive label as a whole completion (the label, then the end of text; teacher-forced, normalized
over the two labels), as OpenAI's used its log-probs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tunery.eval.dataset import EvalError, Example, load_examples
from tunery.eval.labels import label_order, parse_label
from tunery.eval.metrics import legacy_classification_columns
from tunery.eval.runner import default_max_tokens, generate_answers, label_probabilities, prompt_ids
from tunery.eval.tasks import Task


def classification_columns(served, examples: Sequence[Example], n_classes: int | None = None, positive_class: str | None = None,
                           betas: Sequence[float] = ()) -> dict[str, float]:
    """`{"classification/accuracy": ..., ...}` for `served` on `examples` (see `legacy_classification_columns`)."""
    truth = [e.reference.strip() for e in examples]
    positive = positive_class.strip() if positive_class is not None else None
    labels = label_order({*truth, *([positive] if positive else [])})
    if n_classes is not None and len(labels) > n_classes:
        raise EvalError(f"the validation file has {len(labels)} distinct completions but classification_n_classes is {n_classes}")
    task = Task("classification", labels)
    answers = generate_answers(served, [prompt_ids(served, e) for e in examples], default_max_tokens(served, examples, task))
    predicted = [parse_label(a, labels) for a in answers]
    scores = None
    if positive is not None and len(labels) == 2:
        written = {e.reference.strip(): e.reference for e in examples}  # each label as the completions write it (" 1")
        candidates = [written.get(label, label) for label in labels]
        at = labels.index(positive)
        scores = [label_probabilities(served, e, candidates)[at] for e in examples]
    return legacy_classification_columns(truth, predicted, positive, labels, betas, scores)


def classification_columns_for_file(weights: str | Path, validation_file: str | Path, n_classes: int | None = None,
                                    positive_class: str | None = None, betas: Sequence[float] = ()) -> dict[str, float]:
    """The same, from a fine-tune's weights folder (adapter or full) and its validation JSONL; loads and frees the model."""
    from tunery.eval.sources import weights_source
    from tunery.serve.registry import ModelRegistry

    source = weights_source("fine-tune", Path(weights), fine_tune=True)
    if source is None:
        raise EvalError(f"{weights}: no adapter or model weights there")
    registry = ModelRegistry()
    try:
        return classification_columns(registry.get(source), load_examples(validation_file), n_classes, positive_class, betas)
    finally:
        registry.close()
