"""Is TRL's padding-free batching correct on CPU with SDPA attention? (Run in bench/work/venv-trl.)

Four random sequences, loss on the last 3 tokens of each: the padded batch, the padding-free
(flattened, position_ids) batch from TRL's own collator, and each sequence alone. The padded batch
matches the sequences alone; the padding-free one does not (13.72 vs 13.87 on SmolLM2-135M), so
bench_train.py leaves padding_free (and BFD packing, which implies it) off for TRL.

usage: check_padding_free.py MODEL_DIR
"""

import sys

import torch
from transformers import AutoModelForCausalLM
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

torch.manual_seed(0)
model = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32, attn_implementation="sdpa").eval()
examples = [{"input_ids": torch.randint(0, 49000, (n,)).tolist()} for n in (40, 75, 23, 60)]
for e in examples:
    e["labels"] = [-100] * (len(e["input_ids"]) - 3) + e["input_ids"][-3:]
with torch.no_grad():
    losses = {pf: model(**DataCollatorForLanguageModeling(pad_token_id=2, padding_free=pf)(examples)).loss.item()
              for pf in (False, True)}
    alone = sum(model(input_ids=torch.tensor([e["input_ids"]]), labels=torch.tensor([e["labels"]])).loss.item()
                for e in examples) / len(examples)  # equal weights: 3 trained tokens each
print(f"padded {losses[False]:.4f}  padding-free {losses[True]:.4f}  each alone {alone:.4f}")
