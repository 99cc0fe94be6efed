"""A legacy fine-tune's result file, `compiled_results.csv`, in the legacy `/v1/fine-tunes` columns.

Compiled after training by a follow-up subprocess (`python -m tunery.jobs.legacy_results --config
CONFIG.json`, run by the worker like the trainer, so a crash or an out-of-memory kill never
reaches the server) that writes `compiled_results.csv`, `events.jsonl` and `result.json` into its
folder. Per column:

- `step`, `training_loss`, `training_token_accuracy`, `validation_loss`,
  `validation_token_accuracy`: the trainer's `metrics.csv` (validation on the steps it evaluated).
- `elapsed_examples`, `elapsed_tokens`: examples and tokens trained so far, replayed from the
  trainer's own tokenization and data order (`tunery.train.packing.step_indices`), so the last
  row's `elapsed_tokens` is the job's `trained_tokens` for a full run.
- `training_sequence_accuracy`, `validation_sequence_accuracy`: empty; the trainer does not
  measure whole-completion accuracy per step, and these are not invented.
- with `compute_classification_metrics` and a validation file: the `classification/*` columns of
  `tunery.eval.legacy.classification_columns_for_file`, on the last row only (as at OpenAI).

A failure of any optional part is a warning event and leaves its columns empty: the trained model
and the job's success never depend on it.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

LEGACY_COLUMNS = [
    "step", "elapsed_tokens", "elapsed_examples", "training_loss", "training_sequence_accuracy", "training_token_accuracy",
    "validation_loss", "validation_sequence_accuracy", "validation_token_accuracy",
]
# legacy column <- the trainer's metrics.csv column
FROM_METRICS = {
    "training_loss": "train_loss",
    "training_token_accuracy": "train_accuracy",
    "validation_loss": "valid_loss",
    "validation_token_accuracy": "valid_mean_token_accuracy",
}
RESULTS_NAME = "compiled_results.csv"


def read_metrics(path: Path) -> list[dict[str, str]]:
    """The trainer's `metrics.csv` rows (none when it is missing)."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return [r for r in csv.DictReader(f) if (r.get("step") or "").isdigit()]
    except FileNotFoundError:
        return []


def elapsed_counts(lengths: Sequence[int], batch_size: int, seed: int, steps: int) -> list[tuple[int, int]]:
    """[(elapsed_tokens, elapsed_examples)] after each of `steps` steps: the examples each step
    trained on (the trainer's order), with `lengths[i]` tokens for example i."""
    from tunery.train.packing import step_indices

    n = len(lengths)
    steps_per_epoch = -(-n // batch_size)
    out, tokens, examples = [], 0, 0
    for step in range(steps):
        _, indices = step_indices(n, batch_size, seed, step, steps_per_epoch)
        tokens += sum(lengths[i] for i in indices)
        examples += len(indices)
        out.append((tokens, examples))
    return out


def legacy_csv(metrics: Sequence[dict[str, str]], elapsed: Sequence[tuple[int, int]] = (),
               classification: dict[str, float] | None = None) -> bytes:
    """The legacy result file: one row per trainer step, classification columns on the last row."""
    extra = list(classification or {})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=LEGACY_COLUMNS + extra, restval="", lineterminator="\n")
    writer.writeheader()
    for k, row in enumerate(metrics):
        step = int(row["step"])
        out = {"step": step, **{legacy: row.get(ours) or "" for legacy, ours in FROM_METRICS.items()}}
        if 0 < step <= len(elapsed):
            out["elapsed_tokens"], out["elapsed_examples"] = elapsed[step - 1]
        if k == len(metrics) - 1:
            out.update({name: f"{value:.6f}" for name, value in (classification or {}).items()})
        writer.writerow(out)
    return buffer.getvalue().encode()


def _training_lengths(train: dict, hp: dict, folder: Path | None = None) -> Sequence[int]:
    """Token count of each training example, tokenized exactly as the trainer did: streamed, so
    only the lengths (4 bytes an example) stay in memory."""
    from tunery.train import modeling
    from tunery.train.config import TrainConfig
    from tunery.train.records import iter_records
    from tunery.train.tokenize import Tokenizer

    cfg = TrainConfig.from_dict(train)
    tokenizer = modeling.load_tokenizer(modeling.resolve(cfg.model).path)
    tok = Tokenizer(tokenizer, int(hp["max_length"]), cfg.prompt_loss_weight)
    data = tok.encode_all(iter_records(cfg.training_file, "training_file"), "training_file", folder)
    data.examples.close()
    return data.examples.lengths


def _metrics_text(columns: dict[str, float]) -> str:
    return ", ".join(f"{name.removeprefix('classification/')}={value:.4f}" for name, value in columns.items())


def compile_results(config: dict, events) -> dict:
    """Write `compiled_results.csv` into `config["results_dir"]`; return what result.json holds."""
    out, results = Path(config["out_dir"]), Path(config["results_dir"])
    train = json.loads(Path(config["train_config"]).read_text())
    result = json.loads((out / "result.json").read_text())
    hp = result.get("hyperparameters") or {}
    metrics = read_metrics(out / "metrics.csv")
    steps = max((int(r["step"]) for r in metrics), default=0)

    elapsed: list[tuple[int, int]] = []
    try:
        elapsed = elapsed_counts(_training_lengths(train, hp, results), int(hp["batch_size"]), int(hp.get("seed", train.get("seed", 42))), steps)
    except Exception as exc:  # the columns stay empty; the job is unaffected
        events.emit("message", f"elapsed_tokens and elapsed_examples could not be computed ({exc}); they are empty in the result file.",
                    level="warn")

    columns = None
    options = config.get("classification") or {}
    if options.get("compute_classification_metrics"):
        columns = classification(train, result, options, events)

    (results / RESULTS_NAME).write_bytes(legacy_csv(metrics, elapsed, columns))
    return {"status": "succeeded", "results_file": str(results / RESULTS_NAME), "classification": columns,
            "elapsed_tokens": elapsed[-1][0] if elapsed else None}


def classification(train: dict, result: dict, options: dict, events) -> dict[str, float] | None:
    """The classification columns, or None with a warning event saying why."""
    if not train.get("validation_file"):
        events.emit("message", "compute_classification_metrics needs a validation_file; no classification metrics were computed.",
                    level="warn")
        return None
    from tunery.eval.legacy import classification_columns_for_file

    try:
        columns = classification_columns_for_file(
            result["output_path"], train["validation_file"], n_classes=options.get("classification_n_classes"),
            positive_class=options.get("classification_positive_class"), betas=options.get("classification_betas") or (),
        )
    except Exception as exc:
        events.emit("message", f"Classification metrics could not be computed: {exc}. The fine-tuned model is unaffected; "
                    "the result file has no classification columns.", {"error": str(exc)}, level="warn")
        return None
    events.emit("message", f"Classification metrics on the validation file: {_metrics_text(columns)}", {"classification": columns})
    return columns


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tunery.jobs.legacy_results", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="JSON: train_config, out_dir, results_dir, classification")
    args = parser.parse_args(argv)

    from tunery.train.events import EventLog, write_json_atomic

    config = json.loads(Path(args.config).read_text())
    results = Path(config["results_dir"])
    results.mkdir(parents=True, exist_ok=True)
    events = EventLog(results / "events.jsonl")
    try:
        write_json_atomic(results / "result.json", compile_results(config, events))
        return 0
    except Exception as exc:
        traceback.print_exc()
        write_json_atomic(results / "error.json", {"code": "results_error", "message": f"Compiling the results failed: {exc}",
                                                    "param": None})
        return 1
    finally:
        events.close()


if __name__ == "__main__":
    sys.exit(main())
