"""`tunery eval` with the packaged SmolLM2 on real SST-5 reviews (slow: generates with a 135M model)."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

TUNERY = str(Path(sys.executable).with_name("tunery"))
SST5 = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst5"
SYSTEM = "Classify the sentiment of the movie review. Answer with one number: 0 very negative, 1 negative, 2 neutral, 3 positive, 4 very positive."


def chat_file(path: Path, source: Path, n: int) -> Path:
    with open(source, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))[:n]
    path.write_text("".join(json.dumps({"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": r["text"]},
                                                     {"role": "assistant", "content": r["label"]}]}) + "\n" for r in rows))
    return path


@pytest.mark.slow
@pytest.mark.skipif(not SST5.is_dir(), reason="needs ../shared/data/sst5")
def test_packaged_model_zero_and_five_shot(tmp_path):
    dev = chat_file(tmp_path / "dev.jsonl", SST5 / "dev.csv", 8)
    train = chat_file(tmp_path / "train.jsonl", SST5 / "train.csv", 40)
    out = subprocess.run([TUNERY, "eval", "SmolLM2-135M-Instruct", "--data", dev, "--few-shot", "0,5", "--few-shot-file", train, "--labels", "0,1,2,3,4",
                          "--json", "--answers", tmp_path / "answers.jsonl"], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr
    zero, five = json.loads(out.stdout)
    assert (zero["few_shot"], five["few_shot"]) == (0, 5)
    for r in (zero, five):
        assert r["n"] == 8 and r["task"] == "classification" and r["labels"] == ["0", "1", "2", "3", "4"]
        assert 0 <= r["accuracy"] <= 1 and r["loss"] > 0 and r["perplexity"] == pytest.approx(2.718281828 ** r["loss"], rel=1e-6)
        assert sum(map(sum, r["confusion_matrix"])) == 8
    # Five solved examples in the prompt make the bare-label reference far more likely.
    assert five["loss"] < zero["loss"]
    answers = [json.loads(x) for x in (tmp_path / "answers.jsonl").read_text().splitlines()]
    assert len(answers) == 16 and all(a["prediction"] in (None, "0", "1", "2", "3", "4") for a in answers)
    for r in (zero, five):  # the reported numbers are exactly those of the written answers
        mine = [a for a in answers if a["few_shot"] == r["few_shot"]]
        assert r["accuracy"] == sum(a["prediction"] == a["reference"] for a in mine) / 8
        assert r["invalid"] == sum(a["prediction"] is None for a in mine)
