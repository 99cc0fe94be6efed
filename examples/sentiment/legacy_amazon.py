"""The old workflow end to end: the Amazon reviews sample through the legacy `/v1/fine-tunes`
endpoints with `openai==0.28.1`, exactly as the seed scripts call them.

  python -m venv .venv-legacy && .venv-legacy/bin/pip install openai==0.28.1
  export OPENAI_API_BASE=http://localhost:8000/v1 OPENAI_API_KEY=<key>
  .venv-legacy/bin/python examples/sentiment/legacy_amazon.py

Data: prompt = review title + body + separator, completion = " " + stars (the seed's format),
prepared by `tunery prepare` (run with the main environment's `tunery`, see --tunery). The sample
is 60 training and 30 test rows in six languages: this proves the path, not the accuracy.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import time
from pathlib import Path

import openai

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1].parent / "shared" / "data" / "amazon_reviews_multi"
PROMPT = "{review_title}\n\n{review_body}\n\n###\n\n"


def prepare(tunery: str, source: Path, work: Path, split: bool) -> list[Path]:
    subprocess.run([tunery, "prepare", str(source), "--prompt", PROMPT, "--completion", " {stars}", "-q", "--out-dir", str(work),
                    "--split" if split else "--no-split"], check=True, stdout=subprocess.DEVNULL)
    return sorted(Path(p) for p in glob.glob(str(work / f"{source.stem}_prepared*.jsonl")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tunery", default=str(HERE.parents[1] / ".venv" / "bin" / "tunery"))
    parser.add_argument("--work", type=Path, default=HERE / "out-legacy")
    parser.add_argument("--model", default="curie")
    parser.add_argument("--n-epochs", type=int, default=4)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    openai.api_base = os.environ.get("OPENAI_API_BASE", "http://localhost:8000/v1")

    train, valid = prepare(args.tunery, DATA / "sample_train.jsonl", args.work, split=True)  # _prepared_train, _prepared_valid
    [test] = prepare(args.tunery, DATA / "sample_test.jsonl", args.work, split=False)
    print(f"prepared: {train.name}, {valid.name}, {test.name}")

    train_id = openai.File.create(file=open(train, "rb"), purpose="fine-tune").id
    valid_id = openai.File.create(file=open(valid, "rb"), purpose="fine-tune").id
    job = openai.FineTune.create(training_file=train_id, validation_file=valid_id, model=args.model, n_epochs=args.n_epochs,
                                 compute_classification_metrics=True, classification_n_classes=5)
    print(f"fine-tune {job.id} created")
    for event in openai.FineTune.stream_events(job.id):
        print(f"  [{time.strftime('%H:%M:%S', time.localtime(event.created_at))}] {event.message}")
    job = openai.FineTune.retrieve(job.id)
    if job.status != "succeeded":
        raise SystemExit(f"fine-tune {job.status}")
    results = openai.File.download(job.result_files[0].id).decode()
    (args.work / "compiled_results.csv").write_text(results)
    header, *rows = results.strip().splitlines()
    print(f"result file: {len(rows)} steps; last row:\n  " + "\n  ".join(f"{k}={v}" for k, v in zip(header.split(","), rows[-1].split(",")) if v))

    # The seed's evaluation loop: one completion per test prompt, the first token is the rating.
    correct = errors = 0
    records = [json.loads(line) for line in open(test, encoding="utf-8")]
    for r in records:
        answer = openai.Completion.create(model=job.fine_tuned_model, prompt=r["prompt"], max_tokens=2, temperature=0).choices[0].text
        predicted, truth = answer.strip()[:1], r["completion"].strip()
        correct += predicted == truth
        errors += abs(int(predicted) - int(truth)) if predicted.isdigit() else 4
    print(f"{job.fine_tuned_model} on {len(records)} test reviews: accuracy {correct / len(records):.1%}, "
          f"MAE {errors / len(records):.2f} (an unreadable answer counts as an error of 4)")


if __name__ == "__main__":
    main()
