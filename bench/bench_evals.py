"""Evals throughput: a 1,000-row `completions` eval run (string_check + text_similarity) on the
packaged model, against the same prompts sent one at a time through `/v1/chat/completions` (what
a script that loops over its rows and calls the API does), on two data sets:

- sst5 `dev.csv`: movie reviews (real sentences, 2-60 words), the label digit as the reference;
  max 4 new tokens; criteria string_check `eq` and text_similarity `fuzzy_match`.
- alpaca_5000: instructions (+ input) with very different lengths, the reference output as the
  reference; max 32 new tokens; criteria string_check `ilike` and text_similarity `rouge_l`.

Both paths run greedy on one `tunery serve` (no job worker), in the precision it picks. The eval
run is timed from `runs.create` to `completed` as the SDK sees it (polling every 0.2 s), grading
and database writes included; the one-at-a-time client covers the first BASELINE rows of the same
set (rows/s is a rate, so the sizes need not match). Rounds alternate which path goes first
(TUNERY_BENCH_EVALS_ROUNDS, default 2); the medians count. Sizes: TUNERY_BENCH_EVALS_ROWS
(default 1000), TUNERY_BENCH_EVALS_BASELINE (default 100).

The python grader's overhead per row (when its module exists): the same 1,000 (sample, item)
pairs graded by a python grader that does what the string_check does, against the string_check,
in this process (`grade_batch`, the function the run worker calls): its sandbox process start and
JSON round trip, per batch of the run worker's size and per row.
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the tests' server helpers
sys.path.insert(0, str(ROOT / "bench"))

DATA = ROOT.parent / "shared" / "data"
ROWS = int(os.environ.get("TUNERY_BENCH_EVALS_ROWS", 1000))
BASELINE = int(os.environ.get("TUNERY_BENCH_EVALS_BASELINE", 100))
ROUNDS = int(os.environ.get("TUNERY_BENCH_EVALS_ROUNDS", 2))
MODEL = "SmolLM2-135M-Instruct"

SST5_SYSTEM = "Classify the sentiment of the movie review as one digit: 0 very negative, 1 negative, 2 neutral, 3 positive, 4 very positive. Answer with the digit only."
ALPACA_SYSTEM = "You are a helpful assistant. Answer briefly."


def sst5_set(n: int) -> dict:
    with open(DATA / "sst5" / "dev.csv", newline="") as f:
        rows = [{"text": r["text"], "label": r["label"]} for r in csv.DictReader(f)][:n]
    return {
        "name": "sst5", "rows": rows, "max_tokens": 4,
        "schema": {"type": "object", "properties": {"text": {"type": "string"}, "label": {"type": "string"}}, "required": ["text", "label"]},
        "template": [{"role": "system", "content": SST5_SYSTEM}, {"role": "user", "content": "{{item.text}}"}],
        "criteria": [
            {"type": "string_check", "name": "label", "input": "{{sample.output_text}}", "reference": "{{item.label}}", "operation": "eq"},
            {"type": "text_similarity", "name": "close", "input": "{{sample.output_text}}", "reference": "{{item.label}}",
             "evaluation_metric": "fuzzy_match", "pass_threshold": 0.5},
        ],
        "messages": lambda row: [{"role": "system", "content": SST5_SYSTEM}, {"role": "user", "content": row["text"]}],
        "sample": "label",
    }


def alpaca_set(n: int) -> dict:
    data = json.loads((DATA / "alpaca" / "alpaca_5000.json").read_text())[:n]
    rows = [{"prompt": r["instruction"] + (f"\n\n{r['input']}" if r.get("input") else ""), "output": r["output"],
             "first": (r["output"].split() or [""])[0]} for r in data]
    return {
        "name": "alpaca", "rows": rows, "max_tokens": 32,
        "schema": {"type": "object", "properties": {k: {"type": "string"} for k in ("prompt", "output", "first")},
                   "required": ["prompt", "output", "first"]},
        "template": [{"role": "system", "content": ALPACA_SYSTEM}, {"role": "user", "content": "{{item.prompt}}"}],
        "criteria": [
            {"type": "string_check", "name": "mentions", "input": "{{sample.output_text}}", "reference": "{{item.first}}", "operation": "ilike"},
            {"type": "text_similarity", "name": "rouge", "input": "{{sample.output_text}}", "reference": "{{item.output}}",
             "evaluation_metric": "rouge_l", "pass_threshold": 0.3},
        ],
        "messages": lambda row: [{"role": "system", "content": ALPACA_SYSTEM}, {"role": "user", "content": row["prompt"]}],
        "sample": "output",
    }


def eval_run(client, eval_id: str, spec: dict, rows: int | None = None) -> dict:
    started = time.perf_counter()
    run = client.evals.runs.create(eval_id, name=f"bench-{spec['name']}", data_source={
        "type": "completions", "model": MODEL,
        "source": {"type": "file_content", "content": [{"item": r} for r in spec["rows"][:rows]]},
        "input_messages": {"type": "template", "template": spec["template"]},
        "sampling_params": {"temperature": 0, "max_completion_tokens": spec["max_tokens"], "seed": 0},
    })
    while run.status in ("queued", "in_progress"):
        time.sleep(0.2)
        run = client.evals.runs.retrieve(run.id, eval_id=eval_id)
    wall = time.perf_counter() - started
    if run.status != "completed":
        raise RuntimeError(f"eval run {run.id} ended {run.status}: {run.error}")
    counts = run.result_counts
    usage = run.per_model_usage[0] if run.per_model_usage else None
    return {"rows": counts.total, "wall": wall, "rps": counts.total / wall, "errored": counts.errored, "passed": counts.passed,
            "tokens": usage.completion_tokens if usage else 0,
            "criteria": {c.testing_criteria.rsplit("-", 5)[0]: c.passed for c in run.per_testing_criteria_results}}


def one_at_a_time(client, spec: dict, n: int) -> dict:
    started, tokens = time.perf_counter(), 0
    for row in spec["rows"][:n]:
        out = client.chat.completions.create(model=MODEL, messages=spec["messages"](row), max_tokens=spec["max_tokens"], temperature=0, seed=0)
        tokens += out.usage.completion_tokens
    wall = time.perf_counter() - started
    return {"rows": n, "wall": wall, "rps": n / wall, "tokens": tokens}


def median(runs: list[dict]) -> dict:
    return sorted(runs, key=lambda r: r["rps"])[len(runs) // 2]


def python_overhead(spec: dict) -> str:
    """The python grader's cost per row next to string_check's, on this set's references."""
    from tunery.graders import grade, make_sample
    from tunery.eval.run_worker import BATCH

    if "python" not in grade.KINDS:
        return "- Python grader overhead: not measured (this build has no `python` grader).\n"
    field = spec["sample"]
    pairs = [(make_sample(r[field]), r) for r in spec["rows"]]
    check = {"type": "string_check", "name": "eq", "input": "{{sample.output_text}}", "reference": "{{item.%s}}" % field, "operation": "eq"}
    source = f"def grade(sample, item):\n    return 1.0 if sample['output_text'] == item[{field!r}] else 0.0\n"
    python = {"type": "python", "name": "eq", "source": source}
    grade.validate(python, context="eval")
    timings = {}
    for name, grader in (("string_check", check), ("python", python), ("string_check ", check), ("python ", python)):
        started = time.perf_counter()
        results = [r for i in range(0, len(pairs), BATCH) for r in grade.grade_batch(grader, pairs[i:i + BATCH])]
        timings.setdefault(name.strip(), []).append(time.perf_counter() - started)
        assert sum(r.reward for r in results) == len(pairs), f"{name}: every pair matches itself"
    s, p = min(timings["string_check"]), min(timings["python"])
    batches = -(-len(pairs) // BATCH)
    return (f"- Python grader overhead ({len(pairs)} rows, graded in the run worker's batches of {BATCH}: {batches} sandbox processes; "
            f"best of 2): python {p:.2f} s vs string_check {s:.3f} s, **{(p - s) / len(pairs) * 1000:.1f} ms per row** "
            f"({(p - s) / batches * 1000:.0f} ms per batch: one process start and its JSON round trip).\n")


def run(work: Path) -> str:
    import openai
    from api_support import ServerProcess, create_key
    from common import load_note

    from tunery.serve.registry import serving_dtype

    work.mkdir(parents=True, exist_ok=True)
    home = work / "home"
    if home.exists():
        import shutil

        shutil.rmtree(home)
    key = create_key(home)
    served = str(serving_dtype("cpu")).removeprefix("torch.")
    sets = [sst5_set(ROWS), alpaca_set(ROWS)]
    server = ServerProcess(home, args=("--no-worker",)).start(timeout=120)
    results = {}
    try:
        client = openai.OpenAI(base_url=server.base_url, api_key=key, timeout=600, max_retries=0)
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=1)  # load the model
        for spec in sets:
            ev = client.evals.create(name=f"bench-{spec['name']}", testing_criteria=spec["criteria"],
                                     data_source_config={"type": "custom", "item_schema": spec["schema"], "include_sample_schema": True})
            runs = {"eval": [], "single": []}
            eval_run(client, ev.id, spec, rows=40)  # warm-up, not counted: the first batches of new shapes are slow
            one_at_a_time(client, spec, 3)
            for r in range(ROUNDS):
                order = [("eval", lambda: eval_run(client, ev.id, spec)), ("single", lambda: one_at_a_time(client, spec, BASELINE))]
                for name, fn in (order if r % 2 == 0 else order[::-1]):
                    print(f"[{spec['name']}] round {r + 1}/{ROUNDS}: {name}", flush=True)
                    runs[name].append(fn())
            results[spec["name"]] = runs
    finally:
        server.stop()

    lines = [
        f"Packaged {MODEL} on the CPU in {served} (what `tunery serve` picks here), greedy; one server, no job worker. "
        f"{ROUNDS} rounds per set, alternating which path goes first; each row is the round with the median rows/s. "
        f"{load_note()}",
        "",
        "| data set | path | rows | wall s | rows/s | completion tokens | passed per criterion | ratio |",
        "|---|---|---:|---:|---:|---:|---|---:|",
    ]
    notes = []
    for spec in sets:
        runs = results[spec["name"]]
        e, s = median(runs["eval"]), median(runs["single"])
        ratio = e["rps"] / s["rps"]
        per_round = "; ".join(f"{a['rps']:.2f} vs {b['rps']:.2f}" for a, b in zip(runs["eval"], runs["single"]))
        crit = ", ".join(f"{k} {v}" for k, v in e["criteria"].items())
        lines.append(f"| {spec['name']} | eval run (`client.evals.runs.create`, {len(spec['criteria'])} criteria) | {e['rows']} | {e['wall']:.1f} | "
                     f"{e['rps']:.2f} | {e['tokens']} | {crit} | **{ratio:.1f}x** |")
        lines.append(f"| {spec['name']} | `/v1/chat/completions`, one request at a time | {s['rows']} | {s['wall']:.1f} | {s['rps']:.2f} | {s['tokens']} | | 1.0x |")
        notes.append(f"- {spec['name']}: eval run vs one at a time, rows/s per round: {per_round}; {e['errored']} errored rows. "
                     f"Target at least 4x: {'met' if ratio >= 4 else 'NOT met'}.")
    lines += ["", *notes, python_overhead(sets[0]).rstrip(), "",
              "Command: `python bench/run.py evals` (`TUNERY_BENCH_EVALS_ROWS`, `_BASELINE`, `_ROUNDS` set the sizes)."]
    return "\n".join(lines) + "\n"
