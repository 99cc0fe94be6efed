"""The HTML report renders, holds the numbers, and draws one confusion matrix per model."""

import re
from xml.etree import ElementTree

from tunery.eval.report import confusion_svg, loss_svg, read_metrics_csv, render_report, write_report

BASE = {
    "name": "SmolLM2 zero-shot", "n": 6, "accuracy": 0.3333, "macro_f1": 0.2222, "weighted_f1": 0.25, "invalid": 2, "mae": 1.25,
    "labels": ["0", "1"], "per_class": {"0": {"precision": 0.5, "recall": 0.25, "f1": 0.3333, "support": 4}, "1": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}},
    "confusion_matrix": [[1, 1, 2], [2, 0, 0]], "loss": 2.5, "perplexity": 12.18,
}


def fine_tuned(tmp_path):
    csv = tmp_path / "metrics.csv"
    csv.write_text("step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy\n1,2.0,0.1,,\n2,1.5,0.2,1.7,0.3\n3,1.0,0.4,,\n")
    return {**BASE, "name": "ft:smol:sst5", "accuracy": 0.8333, "macro_f1": 0.8, "invalid": 0, "mae": 0.1667,
            "confusion_matrix": [[4, 0, 0], [1, 1, 0]], "metrics_csv": str(csv),
            "per_class": {"0": {"precision": 0.8, "recall": 1.0, "f1": 0.8889, "support": 4}, "1": {"precision": 1.0, "recall": 0.5, "f1": 0.6667, "support": 2}}}


def test_report_contains_numbers_and_plots(tmp_path):
    page = render_report([BASE, fine_tuned(tmp_path)], data="dev.jsonl")
    assert page.startswith("<!doctype html>")
    assert "<td>33.3%</td>" in page and "<td>83.3%</td>" in page  # accuracy
    assert "<td>0.222</td>" in page and "<td>0.800</td>" in page  # macro F1
    assert "<td>1.250</td>" in page and "<td>0.167</td>" in page  # MAE
    assert "<td>12.18</td>" in page and "dev.jsonl" in page
    assert page.count("true ↓") == 2  # two confusion matrices side by side
    assert "F1 per class" in page and "ft:smol:sst5 · 1: F1 0.667" in page
    assert "0.89 / " not in page and "0.80 / 1.00 / 0.89" in page  # per-class table
    assert "Loss during training" in page and "ft:smol:sst5 step 2: 1.7000" in page
    for svg in re.findall(r"<svg.*?</svg>", page, flags=re.S):
        ElementTree.fromstring(svg)  # every plot is well-formed XML


def test_no_training_section_without_metrics_and_escaping(tmp_path):
    page = render_report([{**BASE, "name": "<b>x</b>"}])
    assert "Loss during training" not in page and "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page
    out = write_report(tmp_path / "sub" / "r.html", [BASE])
    assert out.read_text().startswith("<!doctype html>")


def test_generation_report_has_only_its_columns():
    page = render_report([{"name": "m", "n": 2, "exact_match": 0.5, "rouge_l": 0.75, "token_f1": 0.6}])
    assert "ROUGE-L" in page and "<td>0.750</td>" in page and "macro F1" not in page and "Confusion" not in page


def test_confusion_cells_and_metrics_csv(tmp_path):
    svg = confusion_svg([[3, 1, 0], [0, 2, 5]], ["neg", "pos"], "m")
    assert "true pos, predicted invalid: 5" in svg and "true neg, predicted neg: 3" in svg
    curves = read_metrics_csv(fine_tuned(tmp_path)["metrics_csv"])
    assert curves == {"train_loss": [(1, 2.0), (2, 1.5), (3, 1.0)], "valid_loss": [(2, 1.7)]}
    assert loss_svg({}) == ""
