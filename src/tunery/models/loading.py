"""Load a resolved model's tokenizer and weights (torch and transformers imported lazily)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tunery.models.errors import TuneryModelError
from tunery.models.resolve import ResolvedModel

if TYPE_CHECKING:
    import torch

_DTYPES = ("float32", "bfloat16", "float16")


def load_tokenizer(resolved: ResolvedModel):
    """The model's transformers tokenizer, with `pad_token` set without growing the vocab:
    kept if the model has one, else the EOS token (the usual choice; padding is masked out of
    attention and loss anyway), else UNK."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved.path)
    except Exception as exc:  # noqa: BLE001 - one clear line instead of a transformers traceback
        raise TuneryModelError(f"cannot load the tokenizer of {resolved.name} from {resolved.path}: {exc}".splitlines()[0]) from exc
    if tokenizer.pad_token is None:
        fallback = tokenizer.eos_token or tokenizer.unk_token
        if fallback is None:
            raise TuneryModelError(f"tokenizer of {resolved.name} has no pad, eos or unk token to pad with")
        tokenizer.pad_token = fallback
    return tokenizer


def load_model(resolved: ResolvedModel, dtype: "str | torch.dtype | None" = None, device: "str | torch.device | None" = None) -> Any:
    """The causal LM in eval mode. `dtype`: a torch dtype, "float32"/"bfloat16"/"float16", or
    None/"auto" for the dtype saved in the folder. `device`: e.g. "cpu", "cuda" (default: cpu)."""
    import torch
    from transformers import AutoModelForCausalLM

    if isinstance(dtype, str) and dtype != "auto":
        if dtype not in _DTYPES:
            raise TuneryModelError(f"unknown dtype {dtype!r}: use one of {', '.join(_DTYPES)} or auto")
        dtype = getattr(torch, dtype)
    try:
        model = AutoModelForCausalLM.from_pretrained(resolved.path, dtype=dtype or "auto")
    except Exception as exc:  # noqa: BLE001
        raise TuneryModelError(f"cannot load model {resolved.name} from {resolved.path}: {exc}".splitlines()[0]) from exc
    if device is not None:
        model.to(device)
    return model.eval()
