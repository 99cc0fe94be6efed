"""`tunery eval` with the packaged SmolLM2 on real SST-5 reviews (slow: generates with a 135M model)."""

import csv
import json
import os
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
                          "--json", "--answers", tmp_path / "answers.jsonl"], capture_output=True, text=True, timeout=900,
                         env={**os.environ, "TUNERY_HOME": str(tmp_path / "home")})
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

    # Each (model, few-shot) is an Evals run in the home's database: one output item per line, whose
    # answers are the written ones and whose pass/fail counts agree with the exact-match numbers.
    from sqlalchemy import select

    from tunery.store import evals as repo
    from tunery.store.context import open_store
    from tunery.store.settings import load_settings

    assert zero["eval_id"] == five["eval_id"] and zero["run_id"] != five["run_id"]
    assert zero["eval_id"] in out.stderr and zero["run_id"] in out.stderr
    store = open_store(load_settings(tmp_path / "home"))
    try:
        with store.db.session_scope() as s:
            for r in (zero, five):
                mine = [a for a in answers if a["few_shot"] == r["few_shot"]]
                items = repo.run_items(s, r["run_id"])
                assert [it.sample["output"][0]["content"] for it in items] == [a["answer"] for a in mine]
                run = s.scalar(select(repo.EvalRunRecord).where(repo.EvalRunRecord.id == r["run_id"]))
                assert run.status == repo.COMPLETED and run.result_counts["total"] == 8
                assert run.result_counts["passed"] == sum(a["answer"] == a["reference"] for a in mine)
            assert repo.runs_to_work(s) == []  # the server's worker will not execute the CLI's runs
    finally:
        store.close()
