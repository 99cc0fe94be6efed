"""`tunery prepare -q` against openai==0.28.1's `openai tools fine_tunes.prepare_data -q`.

Issue: on one generated 100,000-row prompt/completion CSV (~25 MB, built from ../shared/data),
time and peak memory side by side in one run; target at least 2x faster and at most a third of
the legacy tool's peak memory while also counting tokens. The 1 GB chat JSONL check is
`bench_prepare_chat.py`.
"""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
import statistics
from pathlib import Path

from common import DATA, TUNERY, WORK, ensure_venv, load_note, log, measure, table

CSV_ROWS = 100_000
SEED = 1234
LABELS = ["very negative", "negative", "neutral", "positive", "very positive"]
LEGACY_REQUIREMENTS = [["openai==0.28.1", "pandas<3", "numpy<2.3", "openpyxl>=3.1"]]
MODEL = "SmolLM2-135M-Instruct"
REPEATS = int(os.environ.get("BENCH_PREPARE_REPEATS", "5"))  # alternating runs of each tool; the median counts


def sst5_rows() -> list[tuple[str, int]]:
    with open(DATA / "sst5" / "train.csv", newline="", encoding="utf-8") as f:
        return [(r["text"], int(r["label"])) for r in csv.DictReader(f)]


def make_csv(path: Path, rows: int = CSV_ROWS) -> Path:
    """A deterministic prompt/completion CSV: two SST-5 reviews per prompt, label word as completion.

    Pairing two random reviews keeps rows (almost) unique, so the duplicate check has real work
    and no tool gets a trivially compressible file; ~250 bytes a row like the issue's 25 MB file.
    """
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(SEED)
    reviews = sst5_rows()
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["prompt", "completion"])
        for _ in range(rows):
            (a, label), (b, _) = rng.choice(reviews), rng.choice(reviews)
            w.writerow([f"Review: {a} Also: {b}\nSentiment:", LABELS[label]])
    tmp.rename(path)
    return path


def _alpaca_pairs() -> list[tuple[str, str]]:
    rows = json.loads((DATA / "alpaca" / "alpaca_5000.json").read_text())
    return [((r["instruction"] + ("\n\n" + r["input"] if r["input"] else "")), r["output"]) for r in rows]


def _fastchat_turns() -> list[list[dict]]:
    roles = {"human": "user", "gpt": "assistant"}
    convs = json.loads((DATA / "fastchat" / "dummy_conversation.json").read_text())
    return [[{"role": roles[t["from"]], "content": t["value"]} for t in c["conversations"]] for c in convs]


def make_chat_jsonl(path: Path, size_bytes: int) -> Path:
    """Stream a chat JSONL of about `size_bytes`: alpaca and FastChat turns, varied system prompts."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(SEED)
    pairs, convs = _alpaca_pairs(), _fastchat_turns()
    styles = ["concisely", "in detail", "politely", "step by step", "in plain English", "like a tutor"]
    tmp = path.with_suffix(".tmp")
    written, i = 0, 0
    with open(tmp, "w", encoding="utf-8") as f:
        while written < size_bytes:
            system = {"role": "system", "content": f"You are assistant {i % 9973}. Answer {rng.choice(styles)}; ticket {rng.randrange(10**9)}."}
            if i % 4 == 3:
                turns = convs[rng.randrange(len(convs))]
            else:
                q, a = pairs[rng.randrange(len(pairs))]
                turns = [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
            line = json.dumps({"messages": [system, *turns]}, ensure_ascii=False) + "\n"
            f.write(line)
            written += len(line.encode("utf-8"))
            i += 1
    tmp.rename(path)
    return path


def tunery_cmd(data: Path, out_dir: Path, *, csv_columns: bool) -> list[str]:
    # The packaged model named explicitly, so the run provably counts with SmolLM2's tokenizer.
    cmd = [str(TUNERY), "prepare", str(data), "-q", "--json", "--model", MODEL, "--out-dir", str(out_dir)]
    if csv_columns:
        cmd[3:3] = ["--prompt", "{prompt}", "--completion", "{completion}"]
    return cmd


def token_summary(report: dict) -> tuple[int | None, int | None]:
    """Tokens Tunery counted (train + validation split) and the context it counted against."""
    tokens = report.get("tokens") or {}
    if "total_tokens" not in tokens:
        return None, None
    return tokens["total_tokens"] + (tokens.get("valid_tokens") or 0), tokens.get("context_length")


def parse_json_report(stdout: str) -> dict:
    text = stdout.strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError:  # tolerate a log line before the JSON object
        return json.loads(text[text.index("{"):])


def run(work: Path) -> str:
    work = work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    legacy_python = ensure_venv("venv-openai028", *LEGACY_REQUIREMENTS)
    legacy_cli = legacy_python.parent / "openai"
    source = make_csv(WORK / "data" / "prompt_completion_100k.csv")
    size_mb = source.stat().st_size / 1e6

    # Each run gets a fresh copy in its own folder (the legacy tool writes next to its input); the two
    # tools alternate, REPEATS times, and the median wall time counts: one run's ratio moves by ~10%
    # on this shared machine.
    times: dict[str, list[float]] = {"legacy": [], "tunery": []}
    peaks: dict[str, list[float]] = {"legacy": [], "tunery": []}
    runs = {}
    for rep in range(REPEATS):
        for tool in ("legacy", "tunery"):
            folder = work / tool
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            shutil.copy(source, folder / source.name)
        log(f"legacy prepare_data on the CSV ({rep + 1}/{REPEATS})")
        runs["legacy"] = measure([str(legacy_cli), "tools", "fine_tunes.prepare_data", "-f", source.name, "-q"],
                                 cwd=work / "legacy", env={"OPENAI_API_KEY": "sk-unused"}).check("legacy prepare_data")
        log(f"tunery prepare on the CSV ({rep + 1}/{REPEATS})")
        runs["tunery"] = measure(tunery_cmd(work / "tunery" / source.name, work / "tunery" / "out", csv_columns=True),
                                 cwd=work / "tunery").check("tunery prepare")
        for tool, m in runs.items():
            times[tool].append(m.wall_s)
            peaks[tool].append(m.peak_rss_mb)
    legacy_outputs = sorted((work / "legacy").glob("*_prepared*.jsonl"))
    if not legacy_outputs:
        raise RuntimeError(f"legacy prepare_data wrote nothing:\n{runs['legacy'].stdout[-3000:]}")
    legacy_examples = sum(sum(1 for _ in open(p, "rb")) for p in legacy_outputs)
    report = parse_json_report(runs["tunery"].stdout)
    total_tokens, context = token_summary(report)
    if not total_tokens:
        raise RuntimeError("tunery prepare reported no token counts: the comparison asked for needs them")

    leg_s, tun_s = statistics.median(times["legacy"]), statistics.median(times["tunery"])
    leg_mb, tun_mb = max(peaks["legacy"]), max(peaks["tunery"])
    t_ratio, m_ratio = leg_s / tun_s, leg_mb / tun_mb
    each = "; ".join(f"{a:.2f} / {b:.2f} s ({a / b:.2f}x)" for a, b in zip(times["legacy"], times["tunery"]))
    rows = report["counts"]["examples"]  # after duplicates are dropped
    body = [f"### 100,000-row prompt/completion CSV ({size_mb:.1f} MB)\n",
            "Generated deterministically from `../shared/data/sst5/train.csv` (two random reviews per prompt, "
            "the label word as completion; seed 1234). Each tool runs on its own copy in its own folder, "
            f"in its own subprocess; peak RSS is the whole process tree, polled every 20 ms. The tools alternate "
            f"{REPEATS} times; the table shows the median wall time and the largest peak RSS of each "
            f"(each pair, legacy / tunery: {each}).\n",
            table(["tool", "rows in → examples out", "wall s", "peak RSS MB", "time ratio (legacy/tunery)", "memory ratio (legacy/tunery)"], [
                ["openai==0.28.1 `openai tools fine_tunes.prepare_data -f FILE -q`", f"{CSV_ROWS:,} → {legacy_examples:,}", f"{leg_s:.2f}", f"{leg_mb:.0f}", "1.00", "1.00"],
                [f"`tunery prepare FILE --prompt '{{prompt}}' --completion '{{completion}}' -q --json`", f"{CSV_ROWS:,} → {rows:,}",
                 f"{tun_s:.2f}", f"{tun_mb:.0f}", f"**{t_ratio:.2f}x**", f"**{m_ratio:.2f}x**"],
            ]),
            f"Tunery counted {total_tokens:,} tokens with the packaged {MODEL} tokenizer and chat template "
            f"(context {context}; token statistics, over-context check and cost estimate in its `--json` report); "
            f"the legacy tool counts none. Both removed duplicates, added the leading space to completions and "
            f"split train/validation. Legacy outputs: {', '.join(p.name for p in legacy_outputs)}; "
            f"Tunery's: {', '.join(Path(p).name for p in report.get('outputs', []))}.\n",
            f"Targets: at least 2x faster — **{'met' if t_ratio >= 2 else 'MISSED'}** ({t_ratio:.2f}x); "
            f"at most a third of the legacy peak memory — **{'met' if m_ratio >= 3 else 'MISSED'}** ({m_ratio:.2f}x).\n"]

    body.append(load_note() + "\n")
    return "\n".join(body)
