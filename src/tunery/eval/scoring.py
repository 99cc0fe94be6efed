"""Answers + references + task → the metrics of one model (pure; the runner feeds it)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from tunery.eval import metrics
from tunery.eval.labels import numeric_labels, parse_label
from tunery.eval.tasks import Task


def _number(text: str) -> float | None:
    match = re.search(r"[-+]?\d+(?:\.\d+)?", text)
    return float(match.group()) if match else None


def score_answers(references: Sequence[str], answers: Sequence[str], task: Task) -> dict:
    """Every metric that applies to `task`: match rates always; classification numbers (and MAE/RMSE
    for numeric labels); MAE/RMSE for regression; ROUGE-L and token F1 for generation.
    `predictions` holds the parsed label (classification) or number (regression) of each answer."""
    out: dict = {
        "n": len(references),
        "exact_match": metrics.exact_match(answers, references),
        "normalized_match": metrics.normalized_match(answers, references),
    }
    if task.name == "classification":
        truth = [r.strip() for r in references]
        predicted = [parse_label(a, task.labels) for a in answers]
        out.update(metrics.classification_metrics(truth, predicted, task.labels))
        out["predictions"] = predicted
        values = numeric_labels(task.labels)
        if values:
            out.update({k: v for k, v in metrics.regression_metrics([values[t] for t in truth], [values[p] if p is not None else None for p in predicted]).items() if k in ("mae", "rmse")})
    elif task.name == "regression":
        predicted = [_number(a) for a in answers]
        reg = metrics.regression_metrics([float(r) for r in references], predicted)
        out.update(mae=reg["mae"], rmse=reg["rmse"], invalid=reg["invalid"], predictions=predicted)
    else:
        out["rouge_l"] = metrics.mean([metrics.rouge_l(a, r) for a, r in zip(answers, references)])
        out["token_f1"] = metrics.mean([metrics.token_f1(a, r) for a, r in zip(answers, references)])
    return out
