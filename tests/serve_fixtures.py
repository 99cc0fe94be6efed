"""Tiny in-memory models for the serving tests: a byte-level BPE tokenizer with a ChatML template,
a random 2-layer Llama and random LoRA adapters saved with peft. Builds in well under a second."""

from __future__ import annotations

from pathlib import Path

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "hello world, how are you today? I am fine, thank you.",
    "tunery serves fine-tuned models with hot-loaded adapters",
    "positive negative neutral 1 2 3 4 5 stars ->",
] * 20


def tiny_tokenizer():
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS, vocab_size=400, min_frequency=1, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<|im_end|>", bos_token="<|endoftext|>", pad_token="<|endoftext|>")
    tok.chat_template = CHATML
    return tok


def tiny_llama(tokenizer, seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config).eval()
    # Random init is near-uniform; widen the logits so greedy choices are far from ties.
    with torch.no_grad():
        model.lm_head.weight.mul_(40)
    return model


def save_base(folder: Path, seed: int = 0) -> Path:
    tok = tiny_tokenizer()
    model = tiny_llama(tok, seed)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def random_lora(base_folder: Path, out: Path, seed: int, r: int = 4, **lora_kw) -> Path:
    """A LoRA adapter with non-zero B (peft initialises B to zero, which would be a no-op)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(base_folder)
    torch.manual_seed(seed)
    peft_model = get_peft_model(base, LoraConfig(r=r, lora_alpha=2 * r, target_modules=["q_proj", "v_proj", "down_proj"], **lora_kw))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.normal_(0, 0.5)
    peft_model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base_folder).save_pretrained(out)
    return out
