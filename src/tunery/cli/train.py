"""`tunery train`: fine-tune a model on a prepared JSONL file, locally (no server needed)."""

from __future__ import annotations

import json
import itertools
from pathlib import Path

import typer

from tunery.train.config import DEFAULT_LORA_TARGETS

HP_HELP = "'auto' (OpenAI's rule) or a number"


def register(app: typer.Typer) -> None:
    app.command("train", no_args_is_help=True)(train)


def _auto(value: str, name: str, kind: type) -> str | int | float:
    if value == "auto":
        return value
    try:
        return kind(value)
    except ValueError:
        raise typer.BadParameter(f"must be 'auto' or a{'n integer' if kind is int else ' number'}, got {value!r}", param_hint=f"--{name.replace('_', '-')}") from None


def _method(method: str, weights: str | None) -> tuple[str, str]:
    """(objective, weights) from --method and --weights."""
    if method in ("lora", "full"):
        if weights not in (None, method):
            raise typer.BadParameter(f"--method {method} already says which weights train; it contradicts --weights {weights}", param_hint="--weights")
        return "supervised", method
    if method not in ("supervised", "dpo"):
        raise typer.BadParameter(f"must be supervised, dpo, lora or full, got {method!r}", param_hint="--method")
    if weights not in (None, "lora", "full"):
        raise typer.BadParameter(f"must be lora or full, got {weights!r}", param_hint="--weights")
    return method, weights or "lora"


def train(
    training_file: Path = typer.Argument(..., help="Prepared JSONL: chat `messages` or legacy prompt/completion records (supervised); preference records (dpo)."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder: adapter/ or model/, checkpoints/, metrics.csv, events.jsonl, result.json."),
    model: str = typer.Option("SmolLM2-135M-Instruct", "--model", "-m", help="Base model: alias, packaged name, local folder, .gguf file or cached Hugging Face id."),
    validation_file: Path | None = typer.Option(None, "--validation-file", help="JSONL scored for validation loss/accuracy during training."),
    method: str = typer.Option("supervised", "--method", help="supervised or dpo (OpenAI's method types); lora or full, as before, mean supervised with those weights."),
    weights: str | None = typer.Option(None, "--weights", help="lora (default) or full: which weights train."),
    beta: str = typer.Option("auto", "--beta", help="DPO: 'auto' (0.1) or 0 < beta <= 2; higher stays closer to the starting model."),
    n_epochs: str = typer.Option("auto", "--n-epochs", help=f"Epochs: {HP_HELP}."),
    batch_size: str = typer.Option("auto", "--batch-size", help=f"Examples per optimizer step: {HP_HELP}."),
    learning_rate_multiplier: str = typer.Option("auto", "--learning-rate-multiplier", help=f"Times the base rate (LoRA 2e-4, full 2e-5): {HP_HELP}."),
    seed: int = typer.Option(42, "--seed", help="Same seed, same data order and result."),
    shuffle: bool = typer.Option(True, "--shuffle/--no-shuffle", help="Shuffle the examples every epoch (seeded), or train in the file's order."),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Stop after this many steps (quick checks)."),
    lora_rank: int = typer.Option(16, "--lora-rank"),
    lora_alpha: int = typer.Option(32, "--lora-alpha"),
    lora_dropout: float = typer.Option(0.0, "--lora-dropout"),
    lora_targets: str = typer.Option(",".join(DEFAULT_LORA_TARGETS), "--lora-targets", help="Comma-separated module names (default: every attention and MLP projection)."),
    prompt_loss_weight: float = typer.Option(0.01, "--prompt-loss-weight", help="Legacy prompt/completion: weight of prompt tokens."),
    max_length: int | None = typer.Option(None, "--max-length", help="Truncate examples to this many tokens (default: the model's context)."),
    packing: bool = typer.Option(True, "--packing/--no-packing", help="Pack examples into rows (padding-free) or pad length-sorted batches."),
    shared_prefix: bool = typer.Option(True, "--shared-prefix/--no-shared-prefix", help="With packing, compute a prefix the examples of a row share (system prompt, template header) once per row: same losses, less compute."),
    micro_batch_tokens: int | None = typer.Option(None, "--micro-batch-tokens", help="Tokens per forward pass (gradient accumulation above it)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda[:N]."),
    precision: str = typer.Option("auto", "--precision", help="auto, fp32 or bf16."),
    eval_every: int | None = typer.Option(None, "--eval-every", help="Steps between validation passes (default: ~10 per run)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the newest checkpoint in --out."),
    show_masks: int = typer.Option(0, "--show-masks", help="Print N tokenized examples with the trained tokens highlighted, then exit."),
    as_json: bool = typer.Option(False, "--json", help="Print a final JSON summary (tokens/s, loss, peak memory) on stdout."),
) -> None:
    """Fine-tune a base model on TRAINING_FILE (LoRA by default) and write the result to --out.

    Exit codes: 0 done, 1 failed (OUT/error.json), 75 paused (SIGUSR1), 130 cancelled (SIGTERM/SIGINT).
    """
    from rich.console import Console

    from tunery.train.config import TrainConfig

    console = Console(stderr=True)
    objective, method = _method(method, weights)
    config = TrainConfig(
        training_file=str(training_file), out_dir=str(out), model=model,
        validation_file=str(validation_file) if validation_file else None, method=method, objective=objective,
        beta=_auto(beta, "beta", float),
        n_epochs=_auto(n_epochs, "n_epochs", int), batch_size=_auto(batch_size, "batch_size", int),
        learning_rate_multiplier=_auto(learning_rate_multiplier, "learning_rate_multiplier", float),
        seed=seed, shuffle=shuffle, max_steps=max_steps, lora_rank=lora_rank, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
        lora_targets=[t.strip() for t in lora_targets.split(",") if t.strip()], prompt_loss_weight=prompt_loss_weight,
        max_length=max_length, packing=packing, shared_prefix=shared_prefix, micro_batch_tokens=micro_batch_tokens, device=device,
        precision=precision, eval_every=eval_every, resume=resume,
    )
    if show_masks:
        raise typer.Exit(_show_masks(config, show_masks))
    result = _train_with_progress(config, console)
    if as_json:
        summary = {k: result.to_dict()[k] for k in ("status", "steps", "total_steps", "trained_tokens", "tokens_per_second", "train_seconds", "peak_memory_mb", "device", "precision", "output_path", "error", "hyperparameters")}
        summary["train_loss"] = result.final.get("train_loss") if result.final else None
        summary["final"] = result.final
        typer.echo(json.dumps(summary))
    elif result.status == "succeeded":
        console.print(f"[green]Done[/]: {result.steps} steps, train loss {result.final.get('train_loss'):.4f}, {result.tokens_per_second:,.0f} tokens/s, peak memory {result.peak_memory_mb:,.0f} MB -> {result.output_path}")
    if result.error:
        console.print(f"[red]error[/] ({result.error['code']}): {result.error['message']}", highlight=False)
    elif result.status == "paused":
        console.print(f"Paused at step {result.steps}/{result.total_steps}; continue with --resume")
    elif result.status == "cancelled":
        console.print("Cancelled")
    raise typer.Exit(result.exit_code)


def _show_masks(config, n: int) -> int:
    from rich.console import Console

    from tunery.train.errors import TrainError
    from tunery.train.masks_view import show_masks
    from tunery.train.modeling import load_tokenizer, resolve
    from tunery.train.records import iter_records
    from tunery.train.tokenize import Tokenizer

    console = Console()
    try:
        resolved = resolve(config.model)
        tokenizer = load_tokenizer(resolved.path)
        context = resolved.context_length or 2048
        max_length = min(config.max_length or context, context)
        if config.objective == "dpo":  # each pair as its two examples: preferred, then non-preferred
            from tunery.train.dpo import PreferenceTokenizer

            tok = PreferenceTokenizer(tokenizer, max_length, config.prompt_loss_weight)
            examples = [ex for r in itertools.islice(iter_records(config.training_file), -(-n // 2)) for ex in tok.encode_pair(r)][:n]
        else:
            tok = Tokenizer(tokenizer, max_length, config.prompt_loss_weight)
            examples = [tok.encode(r) for r in itertools.islice(iter_records(config.training_file), n)]
    except TrainError as exc:
        Console(stderr=True).print(f"[red]error[/] ({exc.code}): {exc.message}", highlight=False)
        return 1
    show_masks(console, tokenizer, examples, n)
    return 0


def _train_with_progress(config, console):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from tunery.train import run

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"), TimeRemainingColumn(), console=console, transient=False) as progress:
        task = progress.add_task("training", total=None, info="")

        def on_event(event: dict) -> None:
            data = event["data"]
            if event["type"] == "metrics":
                info = f"loss {data['train_loss']:.4f}" + (f" val {data['valid_loss']:.4f}" if data.get("valid_loss") is not None else "")
                if data.get("rewards/accuracies") is not None:  # DPO
                    info += f" reward acc {data['rewards/accuracies']:.2f}"
                info += f" {data['tokens_per_second']:,.0f} tok/s"
                progress.update(task, completed=data["step"], total=data["total_steps"], info=info)
            elif event["type"] != "status" or event["level"] != "info":
                progress.console.print(event["message"], highlight=False)

        return run(config, on_event=on_event)
