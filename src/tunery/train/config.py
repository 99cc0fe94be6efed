"""What a training run is asked to do (`TrainConfig`) and the numbers it actually uses.

Hyperparameters follow OpenAI's names: `n_epochs`, `batch_size`, `learning_rate_multiplier`, each
"auto" or a number. The learning rate is `BASE_LEARNING_RATES[method] * learning_rate_multiplier`:
the base rates are the usual good defaults for a small instruct model (LoRA 2e-4, full 2e-5), so the
"auto" multiplier is 1.0. (OpenAI's own legacy rule, 0.05-0.2 of the *pretraining* rate, is relative
to a number open models do not publish, so it cannot be reproduced faithfully.)
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunery.data.auto import auto_batch_size, auto_n_epochs

from .errors import TrainError

DEFAULT_MODEL = "SmolLM2-135M-Instruct"
BASE_LEARNING_RATES = {"lora": 2e-4, "full": 2e-5}
# DPO moves a model that already answers well by small log-prob ratios (beta-scaled): rates far
# below SFT's. Full: TRL's DPOConfig default (1e-6); LoRA, whose update is low-rank and starts at
# zero, the usual 5e-5 of LoRA DPO recipes (about 50x full, as 2e-4 is about 10x 2e-5 for SFT).
DPO_BASE_LEARNING_RATES = {"lora": 5e-5, "full": 1e-6}
OBJECTIVES = ("supervised", "dpo")  # OpenAI's method.type values this trainer runs
DEFAULT_BETA = 0.1  # OpenAI's examples and TRL's default; OpenAI publishes no number for "auto"
# Every linear layer of the decoder (attention and MLP), under these names in Llama, Qwen2/3, SmolLM,
# Mistral and Gemma: what LLaMA-Factory (`lora_target: all`) and Unsloth default to, and what the
# QLoRA paper found necessary to match full fine-tuning; the extra adapters cost little compute.
DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
DEFAULT_LORA_RANK = 16
DEFAULT_LORA_ALPHA = 32
# LoRA dropout 0: measured faster on CPU (no mask tensors per projection) and makes runs bitwise
# repeatable; with tiny data raise it (e.g. 0.05) if validation loss climbs.
DEFAULT_LORA_DROPOUT = 0.0
# Legacy prompt/completion: OpenAI's default weight of prompt tokens in the loss.
DEFAULT_PROMPT_LOSS_WEIGHT = 0.01
WARMUP_FRACTION = 0.05
MAX_WARMUP_STEPS = 10

Auto = str | int | float  # "auto" or a number


@dataclass
class TrainConfig:
    """Everything a run needs; JSON-serializable (`python -m tunery.train --config CONFIG.json`)."""

    training_file: str
    out_dir: str
    model: str = DEFAULT_MODEL
    validation_file: str | None = None
    method: str = "lora"  # lora | full: which weights train
    objective: str = "supervised"  # supervised | dpo: OpenAI's method.type, what they are trained for
    beta: Auto = "auto"  # DPO: "auto" (0.1) or 0 < beta <= 2
    n_epochs: Auto = "auto"
    batch_size: Auto = "auto"
    learning_rate_multiplier: Auto = "auto"
    seed: int = 42
    shuffle: bool = True  # False: every epoch in the file's order (a curriculum, another trainer's batches)
    max_steps: int | None = None  # cap the run (quick checks); the schedule is computed for it
    lora_rank: int = DEFAULT_LORA_RANK
    lora_alpha: int = DEFAULT_LORA_ALPHA
    lora_dropout: float = DEFAULT_LORA_DROPOUT
    lora_targets: list[str] = field(default_factory=lambda: list(DEFAULT_LORA_TARGETS))
    prompt_loss_weight: float = DEFAULT_PROMPT_LOSS_WEIGHT
    max_length: int | None = None  # default: the model's context length
    packing: bool = True
    shared_prefix: bool = True  # packed rows hold a prefix common to their examples once (same losses, less compute)
    micro_batch_tokens: int | None = None  # tokens per forward pass; default by device
    device: str = "auto"  # auto | cpu | cuda[:N]
    precision: str = "auto"  # auto | fp32 | bf16
    num_threads: int | None = None  # CPU threads; default $TUNERY_NUM_THREADS, else physical cores
    eval_every: int | None = None  # steps between validation passes; default ~10 per run
    valid_sample: int = 64  # examples in each periodic validation pass (the final one uses all)
    keep_checkpoints: int = 3
    resume: bool = False

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise TrainError("invalid_config", f"Unknown config field(s): {', '.join(unknown)}", unknown[0])
        for required in ("training_file", "out_dir"):
            if required not in data:
                raise TrainError("invalid_config", f"Config needs '{required}'", required)
        if isinstance(data.get("lora_targets"), str):  # "q_proj,v_proj" as on the command line
            data = {**data, "lora_targets": [t.strip() for t in data["lora_targets"].split(",") if t.strip()]}
        return cls(**data)

    @classmethod
    def from_json_file(cls, path: str | Path) -> "TrainConfig":
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            # no path in the message: in a job it is a server path, and the job's error is public
            why = exc.msg if isinstance(exc, json.JSONDecodeError) else (exc.strerror or type(exc).__name__)
            raise TrainError("invalid_config", f"Cannot read the training config: {why}", "config") from exc
        if not isinstance(data, dict):
            raise TrainError("invalid_config", "The training config must be a JSON object", "config")
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Hyperparameters:
    """The resolved numbers a run uses (reported back as the job's `hyperparameters`)."""

    n_epochs: int
    batch_size: int
    learning_rate_multiplier: float
    learning_rate: float
    total_steps: int
    steps_per_epoch: int
    warmup_steps: int
    beta: float | None = None  # DPO only


def _number(value: Auto, name: str, kind: type, low: float, high: float | None) -> int | float | None:
    """None for "auto", else the number checked against OpenAI's bounds."""
    if value == "auto" or value is None:
        return None
    try:
        number = kind(value)
        if kind is int and number != float(value):
            raise ValueError
    except (TypeError, ValueError):
        raise TrainError("invalid_hyperparameters", f"{name} must be 'auto' or a{'n integer' if kind is int else ' number'}, got {value!r}", name) from None
    if number < low or (high is not None and number > high) or (kind is float and number == 0):
        bound = f"between {low} and {high}" if high is not None else "greater than 0"
        raise TrainError("invalid_hyperparameters", f"{name} must be {bound}, got {value!r}", name)
    return number


def resolve_hyperparameters(config: TrainConfig, n_examples: int) -> Hyperparameters:
    """Apply OpenAI's auto rules (tunery.data.auto) and the bounds of its API to `config`."""
    if config.method not in BASE_LEARNING_RATES:
        raise TrainError("invalid_hyperparameters", f"method must be 'lora' or 'full', got {config.method!r}", "method")
    dpo = config.objective == "dpo"
    beta = None
    if dpo:
        beta = _number(config.beta, "beta", float, 0, 2) or DEFAULT_BETA
    elif config.beta != "auto":
        raise TrainError("invalid_hyperparameters", "beta is a DPO hyperparameter; a supervised run takes none", "beta")
    n_epochs = _number(config.n_epochs, "n_epochs", int, 1, 50) or auto_n_epochs(n_examples)
    batch_size = _number(config.batch_size, "batch_size", int, 1, 256) or auto_batch_size(n_examples)
    multiplier = _number(config.learning_rate_multiplier, "learning_rate_multiplier", float, 0, None) or 1.0
    if batch_size > n_examples:
        raise TrainError(
            "batch_size_too_large",
            f"batch_size {batch_size} is larger than the {n_examples} trainable {'pair' if dpo else 'example'}(s) in the training file",
            "batch_size",
        )
    # A trailing partial batch is kept (every example is seen each epoch); the loss is normalized by
    # the step's trained tokens, so a smaller last batch is not over-weighted.
    steps_per_epoch = -(-n_examples // batch_size)
    total = steps_per_epoch * n_epochs
    if config.max_steps is not None:
        if int(config.max_steps) < 1:
            raise TrainError("invalid_hyperparameters", f"max_steps must be at least 1, got {config.max_steps}", "max_steps")
        total = min(total, int(config.max_steps))
    warmup = min(MAX_WARMUP_STEPS, int(total * WARMUP_FRACTION))
    return Hyperparameters(
        n_epochs=n_epochs,
        batch_size=batch_size,
        learning_rate_multiplier=float(multiplier),
        learning_rate=(DPO_BASE_LEARNING_RATES if dpo else BASE_LEARNING_RATES)[config.method] * multiplier,
        total_steps=total,
        steps_per_epoch=steps_per_epoch,
        warmup_steps=warmup,
        beta=beta,
    )


def lr_factor(step: int, hp: Hyperparameters) -> float:
    """Linear warmup then linear decay to 0; `step` counts optimizer steps already taken."""
    if step < hp.warmup_steps:
        return (step + 1) / (hp.warmup_steps + 1)
    remaining = hp.total_steps - hp.warmup_steps
    return max(0.0, (hp.total_steps - step) / remaining) if remaining > 0 else 1.0
