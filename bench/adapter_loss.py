"""Mean loss of trained LoRA adapters over the answer tokens of a chat JSONL.

`python bench/adapter_loss.py DATA.jsonl BASE_MODEL ADAPTER [ADAPTER ...]` prints a JSON list of
{"adapter", "loss", "answer_tokens"}. Each adapter is loaded with plain peft on the fp32 base and
scored with Tunery's own masks (tunery.train.tokenize) in eval mode, so two trainers' final models
are compared on exactly the same tokens — a steadier "final training loss" than the last steps'
batch losses, which depend on each trainer's batch order.
"""

import json
import sys


def main() -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tunery.train.modeling import load_tokenizer, micro_batch_loss
    from tunery.train.packing import micro_batches
    from tunery.train.records import read_records
    from tunery.train.tokenize import Tokenizer

    data, base, adapters = sys.argv[1], sys.argv[2], sys.argv[3:]
    tokenizer = Tokenizer(load_tokenizer(base), 8192, 0.01)
    examples = [tokenizer.encode(r) for r in read_records(data)]
    out = []
    for adapter in adapters:
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32, attn_implementation="sdpa")
        model = PeftModel.from_pretrained(model, adapter).eval()
        loss = weight = 0.0
        with torch.no_grad():
            for mb in micro_batches(examples, 2048, packed=True, pad_id=0):
                total, _ = micro_batch_loss(model, mb)
                loss, weight = loss + float(total), weight + mb.weight
        out.append({"adapter": adapter, "loss": loss / weight, "answer_tokens": weight})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
