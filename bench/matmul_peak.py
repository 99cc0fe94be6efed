"""Measured matrix-multiply peak of this machine: best of a few square matmuls, FLOP/s = 2n^3/t.

Prints JSON {"fp32": flops, "bf16": flops, "threads": n}. Run in Tunery's venv (same torch).
"""

from __future__ import annotations

import json
import time

import torch


def peak(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.matmul(a, b)  # warm-up: oneDNN picks its kernel on the first call
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


if __name__ == "__main__":
    print(json.dumps({"fp32": peak(torch.float32), "bf16": peak(torch.bfloat16), "threads": torch.get_num_threads()}))
