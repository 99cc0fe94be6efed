"""Loading the base model, LoRA, device and precision, and the loss of a micro-batch.

The loss runs the decoder for hidden states, then applies the LM head only at positions whose next
token is trained: for short answers after long prompts (classification-style chat) the 49k-way
head and softmax over every position would dominate the step; gathering first skips that work.
"""

from __future__ import annotations

from contextlib import nullcontext

from tunery.models.hardware import cpu_has_bf16

from .errors import TrainError


def pick_device(spec: str = "auto"):
    import torch

    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise TrainError("invalid_config", f"Unknown device {spec!r}; use auto, cpu or cuda[:N]", "device") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TrainError("invalid_config", "device cuda was asked for but no CUDA GPU is available", "device")
    return device


def pick_precision(spec: str, device) -> str:
    """bf16 on GPUs that support it and on CPUs with native bf16 (measured faster, loss within
    tolerance: see BENCHMARKS.md); fp32 otherwise."""
    import torch

    if spec not in ("auto", "fp32", "bf16"):
        raise TrainError("invalid_config", f"precision must be auto, fp32 or bf16, got {spec!r}", "precision")
    if spec != "auto":
        return spec
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_bf16() else "fp32"


def autocast(device, precision: str):
    import torch

    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return nullcontext()


def resolve(spec: str):
    """`tunery.models` resolution, with its not-found error turned into ours."""
    from tunery.models.errors import TuneryModelError
    from tunery.models.resolve import resolve_model

    try:
        return resolve_model(spec)
    except TuneryModelError as exc:
        code = "model_not_found" if type(exc).__name__ == "ModelNotFoundError" else "invalid_model"
        raise TrainError(code, str(exc), "model") from None


def load_tokenizer(path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if not tokenizer.is_fast:
        raise TrainError("invalid_model", "The base model has no fast tokenizer (tokenizer.json); one is needed for loss masks", "model")
    return tokenizer


def load_model(path, device, precision: str, method: str):
    """Base model on `device`. LoRA in bf16 keeps the frozen weights in bf16 (no per-step casts);
    full fine-tuning keeps fp32 master weights and computes under autocast."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if (precision == "bf16" and method == "lora") else torch.float32
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, attn_implementation="sdpa")
    model.config.use_cache = False
    return model.to(device)


def add_lora(model, rank: int, alpha: int, dropout: float, targets: list[str]):
    from peft import LoraConfig, get_peft_model

    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [t for t in targets if t not in names]
    if missing:
        raise TrainError("invalid_hyperparameters", f"LoRA target module(s) {', '.join(missing)} not found in the model", "lora_targets")
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets), bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def parts(model):
    """(decoder, lm_head, final logit softcap) of a causal LM, PEFT-wrapped or not."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder(), base.get_output_embeddings(), getattr(base.config, "final_logit_softcapping", None)


def add_cancel_points(model, check) -> None:
    """Call `check` (which raises to cancel) before each decoder layer, forward and backward: a
    signal then stops a long micro-batch within one layer's time instead of a whole pass."""

    def backward_point(_module, _inputs, output):
        hidden = output[0] if isinstance(output, tuple) else output
        if hidden.requires_grad:
            hidden.register_hook(lambda grad: check())

    for layer in parts(model)[0].layers:
        layer.register_forward_pre_hook(lambda *_: check())
        layer.register_forward_hook(backward_point)


def label_logits(model, mb):
    """fp32 logits at the micro-batch's label positions only (`mb.label_pos`), one row per target."""
    import torch

    decoder, head, softcap = parts(model)
    hidden = decoder(input_ids=mb.input_ids, position_ids=mb.position_ids, attention_mask=mb.attention_mask, use_cache=False).last_hidden_state
    hidden = hidden.reshape(-1, hidden.shape[-1]).index_select(0, mb.label_pos)
    logits = head(hidden).float()
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return logits


def micro_batch_loss(model, mb):
    """(sum of weighted token losses, sum of weighted correct predictions) of a micro-batch."""
    import torch.nn.functional as F

    logits = label_logits(model, mb)
    losses = F.cross_entropy(logits, mb.targets, reduction="none")
    correct = (logits.argmax(-1) == mb.targets).float()
    return (losses * mb.label_weights).sum(), (correct * mb.label_weights).sum().detach()


def is_oom(exc: BaseException) -> bool:
    import torch

    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text or "failed to allocate" in text)
