"""Evaluation metrics as pure functions over lists of strings and numbers.

Conventions: `y_pred` entries are a label or `None` (the answer was not a valid label). An invalid
answer is wrong for accuracy and recall, and is counted in `invalid`; it is nobody's prediction, so
it lowers no class's precision. Undefined ratios (0/0) are 0.0, as scikit-learn's
`zero_division=0` does, so numbers stay comparable with it.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Sequence

INVALID = "(invalid)"


def _ratio(a: float, b: float) -> float:
    return a / b if b else 0.0


# -- text matching ----------------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_text(text: str) -> str:
    """SQuAD's answer normalization: lower case, no punctuation, no articles, single spaces."""
    text = _ARTICLES.sub(" ", text.lower().translate(_PUNCT))
    return " ".join(text.split())


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Share of predictions equal to their reference once surrounding whitespace is stripped."""
    return _ratio(sum(p.strip() == r.strip() for p, r in zip(predictions, references, strict=True)), len(references))


def normalized_match(predictions: Sequence[str], references: Sequence[str]) -> float:
    return _ratio(sum(normalize_text(p) == normalize_text(r) for p, r in zip(predictions, references, strict=True)), len(references))


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD token F1 between two answers (bag of normalized words)."""
    pred, ref = normalize_text(prediction).split(), normalize_text(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def _lcs(a: list[str], b: list[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 (beta = 1) over lower-cased words: the longest common subsequence."""
    pred, ref = prediction.lower().split(), reference.lower().split()
    if not pred or not ref:
        return float(pred == ref)
    lcs = _lcs(pred, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def mean(values: Sequence[float]) -> float:
    return _ratio(sum(values), len(values))


# -- classification ---------------------------------------------------------------------------


def confusion_matrix(y_true: Sequence[str], y_pred: Sequence[str | None], labels: Sequence[str]) -> list[list[int]]:
    """Rows: true label (in `labels` order). Columns: predicted label, then one for invalid answers."""
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * (len(labels) + 1) for _ in labels]
    for t, p in zip(y_true, y_pred, strict=True):
        matrix[index[t]][index[p] if p is not None else len(labels)] += 1
    return matrix


def per_class(y_true: Sequence[str], y_pred: Sequence[str | None], labels: Sequence[str]) -> dict[str, dict]:
    """Precision, recall, F1 and support of each label."""
    out = {}
    for label in labels:
        tp = sum(t == label and p == label for t, p in zip(y_true, y_pred))
        predicted = sum(p == label for p in y_pred)
        support = sum(t == label for t in y_true)
        precision, recall = _ratio(tp, predicted), _ratio(tp, support)
        out[label] = {"precision": precision, "recall": recall, "f1": _ratio(2 * precision * recall, precision + recall), "support": support}
    return out


def classification_metrics(
    y_true: Sequence[str],
    y_pred: Sequence[str | None],
    labels: Sequence[str] | None = None,
    positive_class: str | None = None,
    scores: Sequence[float] | None = None,
) -> dict:
    """Accuracy, macro/weighted F1, per-class numbers, confusion matrix and invalid count.

    `labels` fixes the classes and their order (default: the sorted true labels). A true label
    outside `labels` is an error. With `positive_class` (binary tasks) `precision`, `recall` and
    `f1` are that class's; otherwise they are macro averages. With `scores` (the model's
    probability of `positive_class` for each example) `auroc` and `auprc` are added.
    """
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} references but {len(y_pred)} predictions")
    labels = list(labels) if labels is not None else sorted(set(y_true))
    unknown = sorted(set(y_true) - set(labels))
    if unknown:
        raise ValueError(f"reference labels not in the label set: {', '.join(map(repr, unknown))}")
    classes = per_class(y_true, y_pred, labels)
    n = len(y_true)
    support = sum(c["support"] for c in classes.values())
    result = {
        "n": n,
        "accuracy": _ratio(sum(t == p for t, p in zip(y_true, y_pred)), n),
        "macro_f1": mean([c["f1"] for c in classes.values()]),
        "weighted_f1": _ratio(sum(c["f1"] * c["support"] for c in classes.values()), support),
        "macro_precision": mean([c["precision"] for c in classes.values()]),
        "macro_recall": mean([c["recall"] for c in classes.values()]),
        "invalid": sum(p is None for p in y_pred),
        "labels": labels,
        "per_class": classes,
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels),
    }
    if positive_class is not None:
        if positive_class not in labels:
            raise ValueError(f"positive class {positive_class!r} is not one of the labels")
        pos = classes[positive_class]
        result.update(precision=pos["precision"], recall=pos["recall"], f1=pos["f1"])
        if scores is not None:
            truth = [t == positive_class for t in y_true]
            result.update(auroc=auroc(truth, scores), auprc=auprc(truth, scores))
    else:
        result.update(precision=result["macro_precision"], recall=result["macro_recall"], f1=result["macro_f1"])
    return result


def f_beta(precision: float, recall: float, beta: float) -> float:
    b2 = beta * beta
    return _ratio((1 + b2) * precision * recall, b2 * precision + recall)


def legacy_classification_columns(
    y_true: Sequence[str],
    y_pred: Sequence[str | None],
    positive_class: str | None = None,
    labels: Sequence[str] | None = None,
    betas: Sequence[float] = (),
    scores: Sequence[float] | None = None,
) -> dict[str, float]:
    """The columns OpenAI's legacy `compute_classification_metrics` adds to a result file.

    Binary (a `positive_class`): `classification/accuracy`, `/precision`, `/recall`, `/f1.0`, one
    `/f{beta}` per `betas`, and `/auroc`, `/auprc` when `scores` are given. Multiclass:
    `classification/accuracy` and `classification/weighted_f1_score`.
    """
    m = classification_metrics(y_true, y_pred, labels, positive_class, scores)
    out = {"classification/accuracy": m["accuracy"]}
    if positive_class is None:
        out["classification/weighted_f1_score"] = m["weighted_f1"]
        return out
    out.update({"classification/precision": m["precision"], "classification/recall": m["recall"]})
    if "auroc" in m:
        out.update({"classification/auroc": m["auroc"], "classification/auprc": m["auprc"]})
    for beta in (1.0, *betas):
        out[f"classification/f{beta:g}" if beta != 1.0 else "classification/f1.0"] = f_beta(m["precision"], m["recall"], beta)
    return out


def auroc(truth: Sequence[bool], scores: Sequence[float]) -> float:
    """Area under the ROC curve (the Mann-Whitney statistic, ties counted half); 0.0 without both classes."""
    pos = [s for t, s in zip(truth, scores, strict=True) if t]
    neg = [s for t, s in zip(truth, scores) if not t]
    if not pos or not neg:
        return 0.0
    wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


def auprc(truth: Sequence[bool], scores: Sequence[float]) -> float:
    """Average precision: the mean of the precision at the rank of each positive (scikit-learn's definition)."""
    n_pos = sum(truth)
    if not n_pos:
        return 0.0
    ranked = sorted(zip(scores, truth, strict=True), key=lambda st: -st[0])
    total, tp, i = 0.0, 0, 0
    while i < len(ranked):  # tied scores form one threshold
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        new_tp = sum(t for _, t in ranked[i:j])
        tp += new_tp
        total += new_tp / n_pos * (tp / j)
        i = j
    return total


# -- ordinal / numeric ------------------------------------------------------------------------


def regression_metrics(y_true: Sequence[float], y_pred: Sequence[float | None]) -> dict:
    """MAE and RMSE over the valid predictions (`None` ones are counted in `invalid`, not scored)."""
    pairs = [(t, p) for t, p in zip(y_true, y_pred, strict=True) if p is not None]
    errors = [p - t for t, p in pairs]
    return {
        "n": len(y_true),
        "scored": len(pairs),
        "invalid": len(y_true) - len(pairs),
        "mae": mean([abs(e) for e in errors]) if errors else None,
        "rmse": math.sqrt(mean([e * e for e in errors])) if errors else None,
    }
