"""Merge a LoRA fine-tune into its base and save a standalone Hugging Face folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def export_merged(weights: Path, out: Path) -> Path:
    """`weights`: a PEFT adapter folder (or a job folder holding `adapter/`), or a full fine-tune.

    Writes `out` with config, safetensors weights, generation config and the tokenizer (with the
    chat template the model was trained with), loadable by `from_pretrained(out)` alone.
    """
    from transformers import AutoModelForCausalLM

    from tunery.serve.registry import load_tokenizer

    weights = Path(weights)
    for candidate in (weights, weights / "adapter", weights / "model"):
        if (candidate / "adapter_config.json").is_file() or (candidate / "config.json").is_file():
            weights = candidate
            break
    else:
        raise FileNotFoundError(f"{weights} holds neither a PEFT adapter (adapter_config.json) nor a model (config.json)")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; choose a new folder")
    if (weights / "adapter_config.json").is_file():
        from peft import PeftModel

        base_path = Path(json.loads((weights / "adapter_config.json").read_text())["base_model_name_or_path"])
        if not (base_path / "config.json").is_file():
            raise FileNotFoundError(f"the adapter's base model {base_path} is missing (adapter_config.json: base_model_name_or_path)")
        base = AutoModelForCausalLM.from_pretrained(base_path, dtype="auto")
        model = PeftModel.from_pretrained(base, str(weights)).merge_and_unload()
        tokenizer = load_tokenizer(weights, weights.parent, base_path)
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
