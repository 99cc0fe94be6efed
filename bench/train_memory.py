"""Peak memory of reading and tokenizing a big training file, the way a job does it, against the
way it was done before (every record and every example as Python lists).

    python bench/train_memory.py --records 200000 [--mode store|lists]

The file: alpaca_5000 repeated with a unique suffix on every instruction until --records chat
records; tokenized with the packaged SmolLM2's tokenizer. Each mode runs in its own process and
prints its peak RSS (ru_maxrss)."""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ALPACA = Path(__file__).resolve().parents[2] / "shared" / "data" / "alpaca" / "alpaca_5000.json"


def make_file(path: Path, n: int) -> None:
    rows = json.loads(ALPACA.read_text())
    with open(path, "w") as f:
        for i in range(n):
            r = rows[i % len(rows)]
            user = f"{r['instruction']} (#{i})" + (f"\n\n{r['input']}" if r.get("input") else "")
            f.write(json.dumps({"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": r["output"]}]}) + "\n")


def measure(path: Path, mode: str) -> None:
    from tunery.train import modeling
    from tunery.train.records import iter_records, read_records
    from tunery.train.tokenize import Tokenizer

    tok = Tokenizer(modeling.load_tokenizer(modeling.resolve("gpt-4o-mini").path), 2048, 0.01)  # the default: the packaged SmolLM2
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    if mode == "lists":  # before: the records in a list, then a list of examples of Python lists
        examples = [tok.encode(r) for r in read_records(path)]
        n, tokens = len(examples), sum(len(e) for e in examples)
    else:
        data = tok.encode_all(iter_records(path), folder=path.parent)
        n, tokens = len(data.examples), data.tokens
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"mode": mode, "examples": n, "tokens": tokens, "peak_rss_mb": round(peak), "rss_before_mb": round(base),
                      "seconds": round(time.perf_counter() - started, 1)}))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--records", type=int, default=200_000)
    p.add_argument("--mode", choices=["store", "lists", "both"], default="both")
    p.add_argument("--file")
    args = p.parse_args()
    if args.file:
        return measure(Path(args.file), args.mode)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.jsonl"
        make_file(path, args.records)
        print(f"{path.stat().st_size / 2**20:.0f} MB, {args.records} records", flush=True)
        for mode in (["store", "lists"] if args.mode == "both" else [args.mode]):
            subprocess.run([sys.executable, __file__, "--file", str(path), "--mode", mode], check=True)


if __name__ == "__main__":
    main()
