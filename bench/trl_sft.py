"""The TRL baseline: LoRA SFT with `SFTTrainer`, run inside bench/work/venv-trl.

Reads the chat JSONL shared with Tunery ({"messages": [system, user, assistant]}) and gives TRL
the same rows in its documented conversational prompt-completion format, so that
`completion_only_loss` puts the loss on the assistant answer only, like Tunery. Writes a JSON
summary: tokens, training seconds (on_train_begin -> on_train_end, model load excluded), per-step
losses.

`--paired` makes the run comparable batch for batch with `tunery train --seed S --no-shuffle` on the
file written in the order TRL used: the order is transformers' own length-grouped one
(`get_length_grouped_indices`, what `group_by_length` samples) drawn from a generator seeded with
`--seed`, trained sequentially and written to ORDER.json next to OUT_JSON; and the LoRA weights are
initialized as Tunery initializes them (`torch.manual_seed(seed)`, then peft's `get_peft_model`).

usage: trl_sft.py DATA MODEL OUT_JSON [--batch-size 8] [--lr 2e-4] [--epochs 1] [--warmup-steps N]
       [--bf16] [--model-dtype bfloat16] [--group-by-length] [--paired] [--padding-free] [--loss-through-eos] [--max-steps N]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("model")
    ap.add_argument("out_json")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--padding-free", action="store_true")
    ap.add_argument("--model-dtype", choices=["float32", "bfloat16"], default="float32")
    ap.add_argument("--warmup-steps", type=int, default=0)
    ap.add_argument("--group-by-length", action="store_true")
    ap.add_argument("--max-steps", type=int, default=-1)
    ap.add_argument("--loss-through-eos", action="store_true", help="train the answer through <|im_end|>, not the newline after it")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--paired", action="store_true", help="length-grouped order from --seed, trained sequentially; Tunery's LoRA init")
    args = ap.parse_args()

    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    rows = []
    for line in Path(args.data).read_text(encoding="utf-8").splitlines():
        messages = json.loads(line)["messages"]
        rows.append({"prompt": messages[:-1], "completion": messages[-1:]})
    dataset = Dataset.from_list(rows)

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=getattr(torch, args.model_dtype), attn_implementation="sdpa")

    class Timer(TrainerCallback):
        began = ended = 0.0

        def on_train_begin(self, *_, **__):
            Timer.began = time.perf_counter()

        def on_train_end(self, *_, **__):
            Timer.ended = time.perf_counter()

    config = SFTConfig(
        output_dir=str(Path(args.out_json).parent / "trl-out"),
        per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=1,
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        learning_rate=args.lr,
        lr_scheduler_type="linear",
        warmup_steps=args.warmup_steps,
        weight_decay=0.0,
        seed=args.seed,
        use_cpu=True,
        bf16=args.bf16,
        padding_free=args.padding_free,
        train_sampling_strategy="sequential" if args.paired else "group_by_length" if args.group_by_length else "random",
        completion_only_loss=True,
        max_length=1024,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    peft_config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    if args.paired:  # the adapter's initial A matrices from the seed, as `tunery train` draws them
        torch.manual_seed(args.seed)
        model = get_peft_model(model, peft_config)
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=None if args.paired else peft_config, callbacks=[Timer()])
    if args.loss_through_eos:
        # SmolLM2's template ends a turn with "<|im_end|>\n", so TRL's completion mask also trains the "\n"
        # after the end-of-turn token (a near-free token that lowers the mean loss). Tunery trains through
        # the end-of-turn token only; stop the labels there so both losses average the same tokens.
        eos = tokenizer.convert_tokens_to_ids("<|im_end|>")

        def through_eos(example):
            labels = list(example["labels"])
            trained = [i for i, t in enumerate(labels) if t != -100]
            ends = [i for i in trained if labels[i] == eos]
            if ends:
                for i in trained:
                    if i > ends[-1]:
                        labels[i] = -100
            return {"labels": labels}

        trainer.train_dataset = trainer.train_dataset.map(through_eos)
    if args.paired:
        from transformers.trainer_pt_utils import get_length_grouped_indices

        lengths = [len(x) for x in trainer.train_dataset["input_ids"]]
        order = get_length_grouped_indices(lengths, args.batch_size, generator=torch.Generator().manual_seed(args.seed))
        trainer.train_dataset = trainer.train_dataset.select(order)
        (Path(args.out_json).parent / "order.json").write_text(json.dumps(order))
    ids = trainer.train_dataset["input_ids"]
    tokens = sum(len(x) for x in ids)
    completion_tokens = sum(sum(1 for t in x if t != -100) for x in trainer.train_dataset["labels"])
    result = trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    summary = {
        "examples": len(dataset),
        "tokens": int(tokens * args.epochs) if args.max_steps < 0 else None,
        "dataset_tokens": tokens,
        "completion_tokens": completion_tokens,
        "steps": trainer.state.global_step,
        "train_s": Timer.ended - Timer.began,
        "losses": losses,
        "train_loss": result.training_loss,
        "trainable_params": trainable,
        "threads": torch.get_num_threads(),
        "config": {"bf16": args.bf16, "padding_free": args.padding_free, "group_by_length": args.group_by_length, "paired": args.paired,
                   "model_dtype": args.model_dtype, "loss_through_eos": args.loss_through_eos, "warmup_steps": args.warmup_steps,
                   "lr": args.lr, "batch_size": args.batch_size, "epochs": args.epochs},
    }
    # Saved after the timed part, so the bench can score both trained adapters on the same data.
    trainer.model.save_pretrained(str(Path(args.out_json).parent / "adapter"))
    Path(args.out_json).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
