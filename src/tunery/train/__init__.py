"""Training engine: tokenization with loss masks, packing, the loop, LoRA/full, checkpoints, metrics. Knows nothing of HTTP."""
