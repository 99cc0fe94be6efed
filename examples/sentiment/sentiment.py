"""The SST-5 sentiment case study against a running Tunery, with the `openai` SDK.

  tunery serve &                        # prints an API key on first start
  export OPENAI_BASE_URL=http://localhost:8000/v1 OPENAI_API_KEY=<that key>
  python examples/sentiment/sentiment.py

Steps: `tunery prepare` turns ../shared/data/sst5 train.csv and dev.csv into chat data (a fixed
system prompt, the review as the user message, the label 0-4 as the answer); both are uploaded;
a fine-tuning job trains on train with dev as its validation file while a progress bar follows
it; then one eval (`client.evals`, OpenAI's Evals API: the dev reviews uploaded as an `evals`
file, a `string_check` of the answer against the label) runs the base model zero-shot and 5-shot
and the fine-tuned model on dev, prints the comparison (Tunery's run metrics: accuracy, F1, MAE,
confusion matrix) and saves each run's HTML report. `--train-limit`, `--dev-limit` and `--max-steps` make a quick run; `--job ID`
evaluates a job that already ran (its training and validation files) instead of training again.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import httpx
from openai import NotFoundError, OpenAI

HERE = Path(__file__).resolve().parent
DATA = HERE.parents[1].parent / "shared" / "data" / "sst5"
SYSTEM = ("Classify the sentiment of the movie review. Answer with one number: "
          "0 very negative, 1 negative, 2 neutral, 3 positive, 4 very positive.")
LABELS = ["0", "1", "2", "3", "4"]  # ordinal: accuracy and F1 as classes, MAE as numbers
# OpenAI's published training prices (USD per 1K tokens) for the comparison; see tunery.data.prices.
PRICES = {"curie (legacy, 2023)": 0.003, "gpt-3.5-turbo": 0.008, "gpt-4o-mini-2024-07-18": 0.003}


def sample_csv(source: Path, target: Path, limit: int | None, seed: int = 0) -> Path:
    """`source` itself, or a seeded random sample of `limit` rows of it (same columns)."""
    if limit is None:
        return source
    with open(source, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    rows = random.Random(seed).sample(rows, min(limit, len(rows)))
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return target


def prepare(csv_path: Path, work: Path) -> Path:
    """`tunery prepare`: reviews → chat examples with the system prompt and the label as the answer."""
    subprocess.run(
        [str(Path(sys.executable).with_name("tunery")), "prepare", str(csv_path), "--prompt", "{text}", "--completion", "{label}",
         "--to", "chat", "--system", SYSTEM, "--no-split", "-q", "--out-dir", str(work)],
        check=True, stdout=subprocess.DEVNULL,
    )
    return work / f"{csv_path.stem}_prepared.jsonl"


def follow(client: OpenAI, job_id: str):
    """A progress bar over the job's steps, fed by its metrics events; returns the finished job."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    seen: set[str] = set()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[loss]}"),
                  TimeElapsedColumn(), TimeRemainingColumn()) as bar:
        task = bar.add_task("queued", total=None, loss="")
        while True:
            job = client.fine_tuning.jobs.retrieve(job_id)
            events = client.fine_tuning.jobs.list_events(job_id, limit=100).data
            for e in reversed(events):
                if e.id in seen:
                    continue
                seen.add(e.id)
                data = e.data or {}
                if e.type == "metrics" and "step" in data:
                    loss = f"loss {data['train_loss']:.3f}" + (f" · val {data['valid_loss']:.3f}" if data.get("valid_loss") is not None else "")
                    bar.update(task, completed=data["step"], total=data.get("total_steps"), loss=loss)
                elif e.type != "metrics":
                    bar.console.print(f"  {e.message}", highlight=False)
            bar.update(task, description=job.status)
            if job.status in ("succeeded", "failed", "cancelled"):
                return job
            time.sleep(2)


def eval_file(client: OpenAI, dev_file_id: str, work: Path):
    """The dev reviews as Evals items `{review, label}`, from the uploaded chat file, uploaded as an `evals` file."""
    items = []
    for line in client.files.content(dev_file_id).text.splitlines():
        if line.strip():
            messages = json.loads(line)["messages"]
            items.append({"item": {"review": messages[-2]["content"], "label": messages[-1]["content"]}})
    path = work / "dev_items.jsonl"
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in items), encoding="utf-8")
    return client.files.create(file=open(path, "rb"), purpose="evals"), len(items)


def pick_shots(client: OpenAI, train_file_id: str, k: int, seed: int = 0) -> list[dict]:
    """k solved examples from the training file, one per class in turn (seeded), as chat turns."""
    by_label: dict[str, list[str]] = {label: [] for label in LABELS}
    for line in client.files.content(train_file_id).text.splitlines():
        if line.strip():
            messages = json.loads(line)["messages"]
            if messages[-1]["content"] in by_label:
                by_label[messages[-1]["content"]].append(messages[-2]["content"])
    rng = random.Random(seed)
    for reviews in by_label.values():
        rng.shuffle(reviews)
    shots, turn = [], 0
    while len(shots) < 2 * k and any(by_label.values()):  # two turns per shot
        label = LABELS[turn % len(LABELS)]
        if by_label[label]:
            shots += [{"role": "user", "content": by_label[label].pop()}, {"role": "assistant", "content": label}]
        turn += 1
    return shots


def run_eval(client: OpenAI, eval_id: str, file_id: str, total: int, model: str, shots: list[dict]):
    """One eval run (greedy, at most 8 new tokens) followed with a progress bar; returns the finished run."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    name = model + (f" ({len(shots) // 2}-shot)" if shots else " (zero-shot)")
    template = [{"role": "system", "content": SYSTEM}, *shots, {"role": "user", "content": "{{item.review}}"}]
    run = client.evals.runs.create(eval_id, name=name, metadata={"few_shot": str(len(shots) // 2)}, data_source={
        "type": "completions", "model": model, "source": {"type": "file_id", "id": file_id},
        "input_messages": {"type": "template", "template": template},
        "sampling_params": {"temperature": 0, "max_completion_tokens": 8}})
    with Progress(TextColumn(name), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()) as bar:
        task = bar.add_task("eval", total=total)
        while run.status in ("queued", "in_progress"):
            time.sleep(2)
            run = client.evals.runs.retrieve(run.id, eval_id=eval_id)
            bar.update(task, completed=run.result_counts.total)
    if run.status != "completed":
        raise SystemExit(f"eval run {run.id} {run.status}: {run.error.message if run.error else ''}")
    return run


def fine_tune(client: OpenAI, args, work: Path):
    """Steps 1-3: prepare, upload, train (followed with a progress bar). Returns (train file, dev file, job)."""
    number = lambda v: v if v == "auto" else (float(v) if "." in v else int(v))  # noqa: E731

    print("1. tunery prepare (train, dev)")
    train = prepare(sample_csv(DATA / "train.csv", work / "train.csv", args.train_limit), work)
    dev = prepare(sample_csv(DATA / "dev.csv", work / "dev.csv", args.dev_limit), work)
    print(f"   {train} ({sum(1 for _ in open(train))} examples), {dev} ({sum(1 for _ in open(dev))} examples)")

    print("2. upload")
    train_file = client.files.create(file=open(train, "rb"), purpose="fine-tune")
    dev_file = client.files.create(file=open(dev, "rb"), purpose="fine-tune")
    print(f"   {train_file.id}, {dev_file.id}")

    print("3. fine-tune")
    hp = {"n_epochs": number(args.epochs), "batch_size": number(args.batch_size), "learning_rate_multiplier": number(args.lr_multiplier)}
    if args.max_steps:
        hp["max_steps"] = args.max_steps  # Tunery extension
    job = client.fine_tuning.jobs.create(model=args.model, training_file=train_file.id, validation_file=dev_file.id,
                                         hyperparameters=hp, suffix="sst5")
    print(f"   {job.id}")
    job = follow(client, job.id)
    if job.status != "succeeded":
        raise SystemExit(f"the job {job.status}: {job.error.message if job.error else ''}")
    return train_file, dev_file, job


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="SmolLM2-135M-Instruct")
    parser.add_argument("--work", type=Path, default=HERE / "out", help="Where prepared data, results and the report go.")
    parser.add_argument("--train-limit", type=int, help="Train on a seeded sample of this many reviews (default: all 8,540).")
    parser.add_argument("--dev-limit", type=int, help="Validate and evaluate on a seeded sample of this many dev reviews (default: all 1,101).")
    # One epoch fits the 30-minute budget on a 2-core CPU (OpenAI's auto rule gives 2 for 8,531
    # examples); the doubled LoRA learning rate makes up for the single pass. "auto" is accepted too.
    parser.add_argument("--epochs", default="1", help="n_epochs ('auto' for OpenAI's rule: 2 here).")
    parser.add_argument("--batch-size", default="16", help="batch_size ('auto': 17 here).")
    parser.add_argument("--lr-multiplier", default="2", help="learning_rate_multiplier (x the LoRA base rate 2e-4).")
    parser.add_argument("--max-steps", type=int, help="Stop training after this many steps (a quick run).")
    parser.add_argument("--few-shot", type=int, default=5)
    parser.add_argument("--job", help="Skip steps 1-3: evaluate this finished fine-tuning job (ftjob-...) on its validation file.")
    args = parser.parse_args()
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    client = OpenAI(timeout=httpx.Timeout(600.0, connect=10.0))

    if args.job:
        try:
            job = client.fine_tuning.jobs.retrieve(args.job)
        except NotFoundError as exc:
            raise SystemExit(f"--job {args.job}: {exc.message}") from None
        if job.status != "succeeded" or not job.validation_file:
            raise SystemExit(f"--job {args.job}: the job is {job.status}" + ("" if job.validation_file else " and has no validation file"))
        train_file, dev_file = client.files.retrieve(job.training_file), client.files.retrieve(job.validation_file)
        print(f"1-3. reusing {job.id} ({job.fine_tuned_model}), trained on {train_file.filename}, validated on {dev_file.filename}")
    else:
        train_file, dev_file, job = fine_tune(client, args, work)
    seconds = (job.finished_at or 0) - (job.created_at or 0)
    print(f"   {job.fine_tuned_model}: {job.trained_tokens:,} trained tokens in {seconds / 60:.1f} min (queue to finish), "
          f"hyperparameters {job.hyperparameters.model_dump()}")

    print("4. evaluate on dev (client.evals): base zero-shot and few-shot, fine-tuned")
    items_file, total = eval_file(client, dev_file.id, work)
    ev = client.evals.create(
        name="sst5 dev", metadata={"job": job.id},
        data_source_config={"type": "custom", "include_sample_schema": True, "item_schema": {
            "type": "object", "properties": {"review": {"type": "string"}, "label": {"type": "string"}}, "required": ["review", "label"]}},
        testing_criteria=[{"type": "string_check", "name": "label", "input": "{{sample.output_text}}", "reference": "{{item.label}}",
                           "operation": "eq"}])
    print(f"   {ev.id} on {items_file.id} ({total} reviews)")
    shots = pick_shots(client, train_file.id, args.few_shot)
    results, reports = [], []
    for model, k_shots in ((args.model, []), (args.model, shots), (job.fine_tuned_model, [])):
        run = run_eval(client, ev.id, items_file.id, total, model, k_shots)
        # Tunery extension: the run's task metrics (accuracy, F1, MAE, confusion matrix) from its items.
        metrics = client.get(f"/evals/{ev.id}/runs/{run.id}/metrics", cast_to=object, options={"params": {"labels": ",".join(LABELS)}})["metrics"]
        results.append({"model": model, "few_shot": len(k_shots) // 2, "run_id": run.id, "report_url": run.report_url,
                        "result_counts": run.result_counts.model_dump(), **metrics})
        page = client.get(f"/evals/{ev.id}/runs/{run.id}/report", cast_to=httpx.Response).text
        reports.append(work / f"report_{len(reports) + 1}.html")
        reports[-1].write_text(page, encoding="utf-8")
    summary = {"job": job.model_dump(mode="json"), "eval": {"id": ev.id, "file": items_file.id, "results": results},
               "openai_cost_usd": {name: round(job.trained_tokens / 1000 * price, 2) for name, price in PRICES.items()}}
    (work / "results.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")

    print(f"\n{'model':<58} {'n':>5} {'accuracy':>9} {'macro-F1':>9} {'MAE':>6} {'invalid':>8}")
    for r in results:
        name = r["model"] + (f" ({r['few_shot']}-shot)" if r["few_shot"] else " (zero-shot)")
        print(f"{name:<58} {r['n']:>5} {r['accuracy']:>9.1%} {r['macro_f1']:>9.3f} {r['mae'] if r['mae'] is not None else float('nan'):>6.3f} {r['invalid']:>8}")
    print(f"\nMajority class share on this dev set: {max(r['per_class'][c]['support'] for c in r['labels']) / r['n']:.1%}")
    print("What OpenAI would charge to train on the same tokens: " + ", ".join(f"{k} ${v:,.2f}" for k, v in summary["openai_cost_usd"].items()))
    print(f"Reports: {', '.join(map(str, reports))} · all numbers: {work / 'results.json'}")


if __name__ == "__main__":
    main()
