"""Each metric against values computed by hand (and, where noted, scikit-learn's definitions)."""

import math

import pytest

from tunery.eval import metrics as m

TRUE = ["a", "a", "a", "b", "b", "c"]
PRED = ["a", "a", "b", "b", None, "c"]


def test_classification_metrics_by_hand():
    r = m.classification_metrics(TRUE, PRED, ["a", "b", "c"])
    assert r["n"] == 6 and r["invalid"] == 1
    assert r["accuracy"] == pytest.approx(4 / 6)
    assert r["per_class"]["a"] == pytest.approx({"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3})
    assert r["per_class"]["b"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert r["per_class"]["c"] == pytest.approx({"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1})
    assert r["macro_f1"] == pytest.approx((0.8 + 0.5 + 1.0) / 3)
    assert r["weighted_f1"] == pytest.approx((0.8 * 3 + 0.5 * 2 + 1.0) / 6)
    assert r["precision"] == pytest.approx((1 + 0.5 + 1) / 3) and r["recall"] == pytest.approx((2 / 3 + 0.5 + 1) / 3)
    assert r["confusion_matrix"] == [[2, 1, 0, 0], [0, 1, 0, 1], [0, 0, 1, 0]]  # last column: invalid answers


def test_labels_default_to_sorted_truth_and_unpredicted_class_scores_zero():
    r = m.classification_metrics(["y", "x"], ["y", "y"])
    assert r["labels"] == ["x", "y"]
    assert r["per_class"]["x"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert r["per_class"]["y"]["precision"] == 0.5


def test_classification_errors():
    with pytest.raises(ValueError, match="2 references but 1 predictions"):
        m.classification_metrics(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="reference labels not in the label set: 'z'"):
        m.classification_metrics(["a", "z"], ["a", "a"], ["a", "b"])
    with pytest.raises(ValueError, match="positive class 'q' is not one of the labels"):
        m.classification_metrics(["a"], ["a"], ["a", "b"], positive_class="q")


def test_binary_positive_class_auroc_auprc():
    truth = ["pos", "pos", "neg", "neg"]
    pred = ["pos", "neg", "pos", "neg"]
    r = m.classification_metrics(truth, pred, ["neg", "pos"], positive_class="pos", scores=[0.9, 0.4, 0.6, 0.1])
    assert (r["precision"], r["recall"], r["f1"]) == pytest.approx((0.5, 0.5, 0.5))
    assert r["auroc"] == pytest.approx(0.75)  # 3 of 4 positive/negative pairs ranked right
    assert r["auprc"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)  # precision 1 at the first positive, 2/3 at the second


def test_auroc_ties_and_degenerate():
    assert m.auroc([True, False], [0.5, 0.5]) == 0.5
    assert m.auroc([True, True], [0.1, 0.2]) == 0.0
    assert m.auprc([False, False], [0.1, 0.2]) == 0.0
    assert m.auprc([True, False, True], [0.5, 0.5, 0.1]) == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)


def test_legacy_columns_binary_and_multiclass():
    cols = m.legacy_classification_columns(["1", "1", "0", "0"], ["1", "0", "1", "0"], positive_class="1", betas=[2.0], scores=[0.9, 0.4, 0.6, 0.1])
    assert cols == pytest.approx({
        "classification/accuracy": 0.5, "classification/precision": 0.5, "classification/recall": 0.5,
        "classification/auroc": 0.75, "classification/auprc": 0.5 + 1 / 3, "classification/f1.0": 0.5, "classification/f2": 0.5,
    })
    multi = m.legacy_classification_columns(TRUE, PRED)
    assert multi == pytest.approx({"classification/accuracy": 4 / 6, "classification/weighted_f1_score": 4.4 / 6})


def test_f_beta():
    assert m.f_beta(0.5, 1.0, 2.0) == pytest.approx(2.5 / 3)
    assert m.f_beta(0.0, 0.0, 1.0) == 0.0


def test_regression_metrics_skip_invalid():
    r = m.regression_metrics([1, 2, 3], [2, 2, None])
    assert r == {"n": 3, "scored": 2, "invalid": 1, "mae": 0.5, "rmse": pytest.approx(math.sqrt(0.5))}
    assert m.regression_metrics([1], [None])["mae"] is None


def test_exact_and_normalized_match():
    preds, refs = [" Positive", "The cat.", "dog"], ["Positive", "cat", "Dog!"]
    assert m.exact_match(preds, refs) == pytest.approx(1 / 3)
    assert m.normalized_match(preds, refs) == 1.0
    assert m.normalize_text("  The  Quick, brown fox!  ") == "quick brown fox"


def test_rouge_l_and_token_f1():
    assert m.rouge_l("the cat sat on the mat", "the cat is on the mat") == pytest.approx(5 / 6)
    assert m.rouge_l("a b c", "c b a") == pytest.approx(1 / 3)
    assert m.rouge_l("", "") == 1.0 and m.rouge_l("x", "") == 0.0 and m.rouge_l("x", "y") == 0.0
    assert m.token_f1("the cat sat", "a cat sat down") == pytest.approx(0.8)
    assert m.token_f1("yes", "no") == 0.0
