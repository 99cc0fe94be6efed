"""The training loop: `run(config) -> TrainResult`, read in one sitting.

Output folder contract (the job runner relies on it): `events.jsonl`, `metrics.csv`,
`checkpoints/step-N/`, then `adapter/` (LoRA, PEFT format) or `model/` (full, safetensors) with the
tokenizer, and LAST `result.json` (the success marker). A failure writes `error.json` instead.

`trained_tokens` is what OpenAI bills: every token of every training example (each capped at the
context) once per epoch it is trained on, i.e. tokens x epochs for a full run, the tokens of the
steps actually run when `max_steps` cuts a run short. Validation tokens are free.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import resource
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tunery.models.hardware import physical_cores

from . import checkpoints as ckpt
from .config import OBJECTIVES, Hyperparameters, TrainConfig, lr_factor, resolve_hyperparameters
from .control import EXIT_CANCELLED, EXIT_ERROR, EXIT_OK, EXIT_PAUSED, Cancelled, Control
from .errors import DISK_FULL_MESSAGE, TrainError, is_disk_full
from .events import EventLog, metrics_message, write_json_atomic
from .metrics import MetricsCSV
from .packing import MIN_SHARED_PREFIX, micro_batches, step_indices
from .records import iter_records
from .tokenize import Example, TokenizedFile, Tokenizer

# Tokens per forward pass when not configured: large enough for efficient matmuls, small enough
# that a cancel is honoured within seconds on a CPU.
DEFAULT_MICRO_BATCH_TOKENS = {"cpu": 2048, "cuda": 16384}
MAX_GRAD_NORM = 1.0
# Validation examples grouped into micro-batches at a time: bounds memory on a big validation file;
# files up to this size are batched exactly as one group, as before it existed.
EVAL_CHUNK = 4096


@dataclass
class TrainResult:
    status: str  # succeeded | cancelled | paused | failed
    exit_code: int
    output_path: str | None = None
    steps: int = 0
    total_steps: int = 0
    trained_tokens: int = 0
    hyperparameters: dict = field(default_factory=dict)
    final: dict = field(default_factory=dict)
    error: dict | None = None
    tokens_per_second: float = 0.0
    train_seconds: float = 0.0
    peak_memory_mb: float = 0.0
    device: str = ""
    precision: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def peak_memory_mb(device) -> float:
    import torch

    if device is not None and device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run(config: TrainConfig, on_event: Callable[[dict], None] | None = None, control: Control | None = None) -> TrainResult:
    """Train as `config` says, writing into `config.out_dir`; never raises for a failed run."""
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    owns_control = control is None
    control = (control or Control()).install() if owns_control else control
    events = EventLog(out / "events.jsonl", on_event)
    try:
        return trainer_class(config)(config, out, events, control).run()
    except Cancelled:
        events.emit("status", "Training cancelled", {"status": "cancelled"}, level="warn")
        return TrainResult("cancelled", EXIT_CANCELLED)
    except BaseException as exc:  # noqa: BLE001 - every failure becomes error.json
        from .modeling import is_oom

        if isinstance(exc, TrainError):
            error = exc
        elif is_disk_full(exc):  # its own message names the file: no server path in a job's error
            error = TrainError("disk_full", DISK_FULL_MESSAGE)
        elif is_oom(exc):
            error = TrainError("out_of_memory", f"Out of memory during training ({exc}); lower batch_size or micro_batch_tokens, or use method 'lora'", "batch_size")
        elif isinstance(exc, KeyboardInterrupt):
            events.emit("status", "Training cancelled", {"status": "cancelled"}, level="warn")
            return TrainResult("cancelled", EXIT_CANCELLED)
        else:
            traceback.print_exc(file=sys.stderr)
            error = TrainError("internal_error", f"{type(exc).__name__}: {exc}")
        write_json_atomic(out / "error.json", error.to_dict())
        events.emit("status", f"Training failed: {error.message}", {"status": "failed", "error": error.to_dict()}, level="error")
        return TrainResult("failed", EXIT_ERROR, error=error.to_dict())
    finally:
        events.close()
        if owns_control:
            control.uninstall()


def trainer_class(config: TrainConfig) -> type["Trainer"]:
    """The trainer of the config's objective: a method adds its loss to this one, not a second loop."""
    if config.objective not in OBJECTIVES:
        raise TrainError("invalid_config", f"objective must be one of {', '.join(OBJECTIVES)}, got {config.objective!r}", "objective")
    if config.objective == "dpo":
        from .dpo import DPOTrainer

        return DPOTrainer
    return Trainer


def _fingerprint(config: TrainConfig, hp: Hyperparameters, model_path: str, examples: list[Example]) -> str:
    """What a checkpoint must match to be resumed from: data, model and every number."""
    h = hashlib.sha256()
    settings = {k: v for k, v in config.to_dict().items() if k not in ("resume", "out_dir", "training_file", "validation_file", "eval_every", "keep_checkpoints", "device", "micro_batch_tokens", "num_threads")}
    numbers = asdict(hp)
    if config.objective == "supervised":  # as before DPO existed: a supervised checkpoint still resumes
        del settings["objective"], settings["beta"], numbers["beta"]
    h.update(json.dumps([settings, numbers, model_path], sort_keys=True, default=str).encode())
    for ex in examples:
        h.update(json.dumps([ex.input_ids, ex.weights]).encode())
    return h.hexdigest()


class Trainer:
    """One run's state; `run()` walks it through setup, the steps and the outputs.

    Supervised training; another method (`dpo.DPOTrainer`) overrides the hooks marked "method":
    how files are tokenized and counted, one step, validation, and what its metrics are."""

    tokenizer_class = Tokenizer
    unit = "example"  # method: what `count` counts, as events name it
    # method: metrics.csv columns (OpenAI's result-file names) and where each comes from
    csv_columns = {"step": "step", "train_loss": "train_loss", "train_accuracy": "train_mean_token_accuracy",
                   "valid_loss": "valid_loss", "valid_mean_token_accuracy": "valid_mean_token_accuracy"}
    # method: the validation metrics of a step (None when it has no validation)
    valid_keys = ("valid_loss", "valid_mean_token_accuracy")

    def __init__(self, config: TrainConfig, out: Path, events: EventLog, control: Control):
        self.config, self.out, self.events, self.control = config, out, events, control
        self.ckpt_root = out / "checkpoints"
        self.device = None

    def relative(self, path: Path) -> str:
        """A path inside the output folder as events name it: relative, since events are shown to
        users (through the API, a job's) who must not learn the server's layout."""
        return str(Path(path).relative_to(self.out))

    # -- setup --------------------------------------------------------------------------------

    def prepare_out_dir(self) -> None:
        ckpt.clean_partial(self.ckpt_root)
        for partial in self.out.glob(".tmp-*"):
            shutil.rmtree(partial, ignore_errors=True)
        finished = (self.out / "result.json").exists()
        if finished:
            raise TrainError("output_exists", "The output folder already holds a finished run (result.json); choose another output folder", "out_dir")
        if not self.config.resume and ckpt.list_checkpoints(self.ckpt_root):
            raise TrainError("output_exists", "The output folder already holds checkpoints of another run; resume it or choose another output folder", "out_dir")
        (self.out / "error.json").unlink(missing_ok=True)

    def count(self, data: TokenizedFile) -> int:
        """method: the units a batch is made of (examples; DPO: pairs)."""
        return len(data.examples)

    def tokenize(self, tokenizer, max_length: int) -> tuple[TokenizedFile, TokenizedFile | None]:
        tok = self.tokenizer_class(tokenizer, max_length, self.config.prompt_loss_weight)
        # Streamed: records are read, tokenized and stored one at a time (`TokenStore`, in the
        # output folder's disk), so memory does not grow with the size of the files.
        train = tok.encode_all(iter_records(self.config.training_file, "training_file"), "training_file", self.out)
        valid = None
        if self.config.validation_file:
            valid = tok.encode_all(iter_records(self.config.validation_file, "validation_file"), "validation_file", self.out)
        for name, data in (("training", train), ("validation", valid)):
            if data is None:
                continue
            trained = data.trained_tokens
            self.events.emit("message", f"{name.capitalize()} file: {self.count(data)} {self.unit}s, {data.tokens} tokens ({trained} trained)", {"file": name, f"{self.unit}s": self.count(data), "tokens": data.tokens, "trained_tokens": trained})
            if data.truncated:
                self.events.emit("message", f"{data.truncated} {name} {self.unit}(s) longer than {max_length} tokens were truncated", {"file": name, "truncated": data.truncated}, level="warn")
            if data.dropped:
                lines = ", ".join(map(str, data.dropped[:10])) + (" ..." if len(data.dropped) > 10 else "")
                self.events.emit("message", f"{len(data.dropped)} {name} {self.unit}(s) with nothing to train on were skipped (lines {lines})", {"file": name, "skipped": len(data.dropped), "skipped_lines": data.dropped[:100]}, level="warn")
        return train, valid

    def setup(self) -> None:
        import torch

        from . import modeling

        cfg = self.config
        random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        resolved = modeling.resolve(cfg.model)
        self.resolved = resolved
        self.tokenizer = modeling.load_tokenizer(resolved.path)
        context = resolved.context_length or 2048
        self.max_length = min(cfg.max_length or context, context)
        self.train, self.valid = self.tokenize(self.tokenizer, self.max_length)
        self.n_train = self.count(self.train)
        self.hp = resolve_hyperparameters(cfg, self.n_train)

        self.device = modeling.pick_device(cfg.device)
        self.precision = modeling.pick_precision(cfg.precision, self.device)
        if self.device.type == "cpu":
            torch.set_num_threads(cfg.num_threads or int(os.environ.get("TUNERY_NUM_THREADS", 0)) or physical_cores())
        self.packed = cfg.packing
        self.min_prefix = MIN_SHARED_PREFIX if cfg.shared_prefix else 0
        self.budget = cfg.micro_batch_tokens or DEFAULT_MICRO_BATCH_TOKENS.get(self.device.type, 4096)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id

        torch.manual_seed(cfg.seed)  # LoRA's initial A matrices
        model = modeling.load_model(resolved.path, self.device, self.precision, cfg.method)
        if cfg.method == "lora":
            model = modeling.add_lora(model, cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets)
        model.train()
        self.model = model
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = self.make_optimizer()
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(s, self.hp))
        self.autocast = lambda: modeling.autocast(self.device, self.precision)
        self.loss_fn = modeling.micro_batch_loss
        modeling.add_cancel_points(model, self.control.check_cancel)
        self.fingerprint = _fingerprint(cfg, self.hp, str(resolved.path), self.train.examples)

    def make_optimizer(self):
        import torch

        kwargs = dict(lr=self.hp.learning_rate, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
        try:
            return torch.optim.AdamW(self.trainable, fused=True, **kwargs)
        except (RuntimeError, TypeError, ValueError):
            return torch.optim.AdamW(self.trainable, foreach=True, **kwargs)

    def resume_state(self) -> int:
        """Load the newest checkpoint when resuming; the step to continue from."""
        import torch

        found = ckpt.list_checkpoints(self.ckpt_root)
        if not self.config.resume or not found:
            if self.config.resume:
                self.events.emit("message", "No checkpoint to resume from; starting from the beginning", level="warn")
            return 0
        state = ckpt.load_checkpoint(found[-1], self.model, self.config.method)
        if state.get("fingerprint") != self.fingerprint:
            raise TrainError("resume_mismatch", f"Checkpoint {found[-1].name} was made with other data, model or hyperparameters; cannot resume from it", "resume")
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        random.setstate(state["python_rng"])
        self.restore_state(state)
        self.resumed_metrics = dict(state.get("metrics") or {})
        self.train_seconds = state.get("train_seconds", 0.0)
        self.tokens_seen = state.get("tokens_seen", 0)
        self.computed_tokens = state.get("computed_tokens", 0)
        self.events.emit("message", f"Resumed from checkpoint {found[-1].name} ({state['kind']}, step {state['step']})", {"step": state["step"], "path": self.relative(found[-1])})
        return state["step"]

    def extra_state(self) -> dict:
        """method: what else a checkpoint must hold to resume exactly (tensors, numbers, strings)."""
        return {}

    def restore_state(self, state: dict) -> None:
        """method: take back what `extra_state` saved."""

    # -- steps --------------------------------------------------------------------------------

    def validate(self, indices: list[int] | None, prefix: str = "valid") -> dict:
        """method: validation metrics over the validation file's units `indices` (None: all)."""
        examples = self.valid.examples if indices is None else [self.valid.examples[i] for i in indices]
        loss, accuracy = self.evaluate(examples)
        return {f"{prefix}_loss": loss, f"{prefix}_mean_token_accuracy": accuracy}

    def step(self, indices: list[int]) -> tuple[dict, int, int]:
        """method: one optimizer step over the training units `indices`: (its metrics, tokens of the
        examples, tokens actually computed)."""
        loss, accuracy, tokens, computed = self.train_step([self.train.examples[i] for i in indices])
        return {"train_loss": loss, "train_mean_token_accuracy": accuracy}, tokens, computed

    def optimizer_step(self) -> None:
        import torch

        torch.nn.utils.clip_grad_norm_(self.trainable, MAX_GRAD_NORM)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def evaluate(self, examples) -> tuple[float, float]:
        """Loss and accuracy over `examples` (a list, or a whole `TokenStore`), read
        `EVAL_CHUNK` examples at a time so that a big validation file is never held whole."""
        import torch

        self.model.eval()
        loss = correct = weight = 0.0
        with torch.no_grad(), self.autocast():
            for start in range(0, len(examples), EVAL_CHUNK):
                chunk = [examples[i] for i in range(start, min(start + EVAL_CHUNK, len(examples)))]
                for mb in micro_batches(chunk, self.budget, self.packed, self.pad_id, self.min_prefix):
                    mb = mb.to(self.device)
                    l, c = self.loss_fn(self.model, mb)
                    loss, correct, weight = loss + float(l), correct + float(c), weight + mb.weight
        self.model.train()
        return loss / weight, correct / weight

    def train_step(self, batch: list[Example]) -> tuple[float, float, int, int]:
        """Forward/backward over the micro-batches of one step, then one optimizer step.
        Returns (loss, accuracy, tokens of the examples, tokens actually computed)."""
        import torch

        mbs = micro_batches(batch, self.budget, self.packed, self.pad_id, self.min_prefix)
        total = sum(mb.weight for mb in mbs)
        loss_sum = torch.zeros((), device=self.device)
        correct_sum = torch.zeros((), device=self.device)
        for mb in mbs:
            self.control.check_cancel()
            mb = mb.to(self.device)
            with self.autocast():
                loss, correct = self.loss_fn(self.model, mb)
            (loss / total).backward()
            loss_sum += loss.detach()
            correct_sum += correct
        self.optimizer_step()
        return float(loss_sum) / total, float(correct_sum) / total, sum(mb.n_tokens for mb in mbs), sum(mb.n_computed for mb in mbs)

    def checkpoint(self, step: int, epoch: int, kind: str, metrics: dict) -> Path:
        import torch

        state = {
            "step": step,
            "epoch": epoch,
            "kind": kind,
            "metrics": metrics,
            "fingerprint": self.fingerprint,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "python_rng": random.getstate(),
            "train_seconds": self.train_seconds,
            "tokens_seen": self.tokens_seen,
            "computed_tokens": self.computed_tokens,
            **self.extra_state(),
        }
        path = ckpt.save_checkpoint(self.ckpt_root, step, self.model, self.tokenizer, self.config.method, state)
        ckpt.prune(self.ckpt_root, self.config.keep_checkpoints)
        self.events.emit("checkpoint", f"Checkpoint created at step {step}", {"step": step, "epoch": epoch, "kind": kind, "path": self.relative(path), "metrics": metrics})
        return path

    def run(self) -> TrainResult:
        self.prepare_out_dir()
        self.events.emit("status", "Preparing training run", {"status": "running"})
        self.train_seconds, self.tokens_seen, self.computed_tokens = 0.0, 0, 0
        self.setup()
        cfg, hp = self.config, self.hp
        start = self.resume_state()
        csv = MetricsCSV(self.out / "metrics.csv", resume_step=start, columns=list(self.csv_columns))
        try:
            return self.loop(start, csv)
        finally:
            csv.close()
            for data in (self.train, self.valid):
                if data is not None:
                    data.examples.close()

    def loop(self, start: int, csv: MetricsCSV) -> TrainResult:
        cfg, hp = self.config, self.hp
        n = self.n_train
        eval_every = cfg.eval_every or max(1, hp.total_steps // 10)
        valid_sample = None
        if self.valid is not None:
            n_valid = self.count(self.valid)
            valid_sample = random.Random(cfg.seed).sample(range(n_valid), min(cfg.valid_sample, n_valid))
        self.events.emit(
            "message",
            f"Training {self.resolved.name} ({cfg.method}) on {self.device.type} in {self.precision}: {n} {self.unit}s, "
            f"{hp.n_epochs} epoch(s), batch size {hp.batch_size}, learning rate {hp.learning_rate:g}, {hp.total_steps} steps",
            {"hyperparameters": asdict(hp), "device": str(self.device), "precision": self.precision, "packing": self.packed, "shared_prefix": bool(self.min_prefix)},
        )
        # A run killed while writing its outputs resumes at the last step: finish with its metrics.
        metrics: dict = dict(getattr(self, "resumed_metrics", {}))
        for step in range(start, hp.total_steps):
            epoch, indices = step_indices(n, hp.batch_size, cfg.seed, step, hp.steps_per_epoch, cfg.shuffle)
            started = time.perf_counter()
            train_metrics, tokens, computed = self.step(indices)
            self.train_seconds += time.perf_counter() - started
            self.tokens_seen += tokens
            self.computed_tokens += computed
            done = step + 1
            last = done == hp.total_steps
            metrics = {"step": done, "total_steps": hp.total_steps, **train_metrics, **dict.fromkeys(self.valid_keys), **dict.fromkeys("full_" + k for k in self.valid_keys)}
            if valid_sample is not None and (last or done % eval_every == 0):
                metrics.update(self.validate(valid_sample))
                if last:
                    metrics.update(self.validate(None, "full_valid"))
            rate = self.tokens_seen / self.train_seconds if self.train_seconds else 0.0
            steps_run = done - start
            eta = (self.train_seconds / max(1, done)) * (hp.total_steps - done) if steps_run else None
            metrics.update(tokens_per_second=rate, eta_seconds=eta, epoch=epoch + 1)
            csv.write({column: metrics.get(key) for column, key in self.csv_columns.items()})
            self.events.emit("metrics", metrics_message(metrics), metrics)
            epoch_end = done % hp.steps_per_epoch == 0
            path = self.checkpoint(done, epoch + 1, "epoch" if epoch_end else "final", self.ckpt_metrics(metrics)) if (epoch_end or last) else None
            if self.control.paused.is_set() and not last:
                path = path or self.checkpoint(done, epoch + 1, "pause", self.ckpt_metrics(metrics))
                self.events.emit("status", f"Training paused at step {done}/{hp.total_steps}", {"status": "paused", "step": done, "path": self.relative(path)})
                return self.result("paused", EXIT_PAUSED, done, metrics)
        return self.finish(metrics)

    # -- outputs ------------------------------------------------------------------------------

    def unit_tokens(self, i: int) -> int:
        """method: tokens of training unit `i` (DPO: both examples of the pair)."""
        return self.train.examples.lengths[i]

    def billable_tokens(self, steps: int) -> int:
        n, hp = self.n_train, self.hp
        if steps == hp.steps_per_epoch * hp.n_epochs:
            return self.train.tokens * hp.n_epochs
        return sum(self.unit_tokens(i) for s in range(steps) for i in step_indices(n, hp.batch_size, self.config.seed, s, hp.steps_per_epoch, self.config.shuffle)[1])

    def result(self, status: str, code: int, steps: int, metrics: dict) -> TrainResult:
        return TrainResult(
            status=status,
            exit_code=code,
            steps=steps,
            total_steps=self.hp.total_steps,
            trained_tokens=self.billable_tokens(steps),
            hyperparameters=self.hyperparameters(),
            final=self.ckpt_metrics(metrics),
            tokens_per_second=self.tokens_seen / self.train_seconds if self.train_seconds else 0.0,
            train_seconds=self.train_seconds,
            peak_memory_mb=peak_memory_mb(self.device),
            device=str(self.device),
            precision=self.precision,
        )

    def hyperparameters(self) -> dict:
        cfg, hp = self.config, self.hp
        out = {"n_epochs": hp.n_epochs, "batch_size": hp.batch_size, "learning_rate_multiplier": hp.learning_rate_multiplier,
               "learning_rate": hp.learning_rate, "warmup_steps": hp.warmup_steps, "max_length": self.max_length, "seed": cfg.seed}
        if cfg.method == "lora":
            out.update(lora_rank=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, lora_targets=list(cfg.lora_targets))
        if hp.beta is not None:
            out["beta"] = hp.beta
        return out

    def finish(self, metrics: dict) -> TrainResult:
        name = "adapter" if self.config.method == "lora" else "model"
        target = ckpt.save_atomic(lambda d: ckpt.save_weights(self.model, self.tokenizer, d, self.config.method), self.out / name)
        result = self.result("succeeded", EXIT_OK, self.hp.total_steps, metrics)
        result.output_path = str(target)
        write_json_atomic(self.out / "result.json", {
            "status": "succeeded",
            "trained_tokens": result.trained_tokens,
            "steps": result.steps,
            "epochs": self.hp.n_epochs if result.steps == self.hp.steps_per_epoch * self.hp.n_epochs else result.steps / self.hp.steps_per_epoch,
            "method": self.config.method,
            "objective": self.config.objective,
            "base_model": self.resolved.name,
            "base_model_path": str(self.resolved.path),
            "output_path": str(target),
            "hyperparameters": result.hyperparameters,
            "final": result.final,
            "tokens_per_second": result.tokens_per_second,
            # tokens run through the model: fewer than the examples' tokens when rows share a prefix
            "computed_tokens": self.computed_tokens,
            "train_seconds": result.train_seconds,
            "peak_memory_mb": result.peak_memory_mb,
            "device": result.device,
            "precision": result.precision,
        })
        self.events.emit("status", f"Training succeeded: {name} written", {"status": "succeeded", "output_path": self.relative(target), "trained_tokens": result.trained_tokens})
        return result


    def ckpt_metrics(self, metrics: dict) -> dict:
        """A checkpoint's (and the result's) `metrics`: the step's numbers without the progress ones."""
        return {k: v for k, v in metrics.items() if k not in ("total_steps", "tokens_per_second", "eta_seconds", "epoch")}
