"""Merge a LoRA fine-tune into its base and save a standalone Hugging Face folder."""

from __future__ import annotations

import shutil
from pathlib import Path


def export_merged(weights: Path, out: Path) -> Path:
    """`weights`: a PEFT adapter folder (or a job folder holding `adapter/`), or a full fine-tune.

    Writes `out` with config, safetensors weights, generation config and the tokenizer (with the
    chat template the model was trained with), loadable by `from_pretrained(out)` alone.
    """
    from transformers import AutoModelForCausalLM

    from tunery.models.errors import TuneryModelError
    from tunery.models.weights import find_weights
    from tunery.serve.registry import load_tokenizer

    try:
        found = find_weights(Path(weights))
    except TuneryModelError as exc:  # the adapter's base model is gone
        raise FileNotFoundError(str(exc)) from None
    if found is None:
        raise FileNotFoundError(f"{weights} holds neither a PEFT adapter (adapter_config.json) nor a model (config.json)")
    weights = found.path
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; choose a new folder")
    if found.kind == "adapter":
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(found.base_path, dtype="auto")
        model = PeftModel.from_pretrained(base, str(weights)).merge_and_unload()
        tokenizer = load_tokenizer(weights, weights.parent, found.base_path)
    else:
        model = AutoModelForCausalLM.from_pretrained(weights, dtype="auto")
        tokenizer = load_tokenizer(weights, weights.parent)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if out.exists():
        out.rmdir()
    tmp.rename(out)  # never leave a half-written folder under the requested name
    return out
