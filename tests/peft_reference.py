"""What a trained adapter answers when loaded directly with peft: the reference the served answers
of fine-tuned models and checkpoints are compared with."""

from __future__ import annotations

from pathlib import Path

import torch

from tunery.serve.registry import serving_dtype


def peft_model(weights: Path):
    """The adapter loaded directly with peft on its base (the folder its adapter_config names), in the
    dtype the server uses (the same rule, same machine: greedy answers compare exactly)."""
    import json

    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter = weights if (weights / "adapter_config.json").exists() else weights / "adapter"
    base_path = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    tok = AutoTokenizer.from_pretrained(adapter if (adapter / "tokenizer_config.json").exists() else adapter.parent)
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=serving_dtype())
    return tok, PeftModel.from_pretrained(base, str(adapter)).eval()


def prompt_ids(tok, prompt: str | None, messages: list | None):
    if messages is not None:
        return tok(tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False), add_special_tokens=False, return_tensors="pt")["input_ids"]
    return tok(prompt, return_tensors="pt")["input_ids"]


def peft_greedy(weights: Path, prompt: str | None, messages: list | None, n: int) -> str:
    tok, model = peft_model(weights)
    ids = prompt_ids(tok, prompt, messages)
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=n, do_sample=False)
    return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def first_logprobs(weights: Path, messages: list, adapter: bool = True) -> torch.Tensor:
    """Log-probabilities of the first answer token: with the adapter, or with it disabled (the base)."""
    tok, model = peft_model(weights)
    ids = prompt_ids(tok, None, messages)
    with torch.no_grad():
        if adapter:
            logits = model(input_ids=ids).logits
        else:
            with model.disable_adapter():
                logits = model(input_ids=ids).logits
    return torch.log_softmax(logits[0, -1].float(), dim=-1)
