"""`tunery prepare` through the real command: exit codes, one-line errors, --json, the case study."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tunery.cli.main import app

ROOT = Path(__file__).resolve().parents[1]
TUNERY = str(Path(sys.executable).parent / "tunery")
AMAZON = ROOT.parent / "shared" / "data" / "amazon_reviews_multi" / "sample_train.jsonl"
runner = CliRunner()


def tunery(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([TUNERY, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def invoke(*args: str, input: str | None = None):
    return runner.invoke(app, ["prepare", *args], input=input)


def pairs_file(path: Path, n: int = 30) -> Path:
    path.write_text("".join(json.dumps({"prompt": f"question {i}", "completion": f"answer {i}"}) + "\n" for i in range(n)))
    return path


# -- bad input, through the installed command -------------------------------------------------


@pytest.mark.parametrize(
    "name, content, code, message",
    [
        ("missing.jsonl", None, 2, "missing.jsonl: no such file"),
        ("data.pdf", b"%PDF", 2, "unsupported extension '.pdf'"),
        ("empty.jsonl", b"", 1, "the file is empty"),
        ("binary.csv", b"a,b\n\x00\x00\x01", 1, "binary data (NUL bytes), not a CSV text file"),
        ("latin1.jsonl", b'{"prompt": "a", "completion": "b"}\n{"prompt": "caf\xe9", "completion": "b"}\n', 1, "line 2 is not valid UTF-8"),
    ],
)
def test_unusable_files_give_one_line_and_the_exit_code(tmp_path, name, content, code, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    result = tunery("prepare", str(path), "-q", "--no-tokens")
    assert result.returncode == code
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert "Traceback" not in result.stderr


def test_broken_json_line_is_reported_with_its_line(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"prompt": "a", "completion": " b"}\n{"prompt": "a", "completion": \n')
    result = tunery("prepare", str(path), "-q", "--no-tokens")
    assert result.returncode == 1
    assert "invalid_json (line 2): invalid JSON" in result.stdout
    assert "Not written: 1 error to fix first" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert not list(tmp_path.glob("*_prepared*"))


def test_wrong_types_exit_1_naming_line_and_field(tmp_path):
    path = tmp_path / "types.jsonl"
    path.write_text('{"prompt": "a", "completion": " b"}\n{"prompt": {"x": 1}, "completion": " c"}\n')
    result = invoke(str(path), "-q", "--no-tokens", "--json")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    [error] = [f for f in report["findings"] if f["level"] == "error"]
    assert (error["code"], error["line"], error["field"]) == ("invalid_type", 2, "prompt")
    assert report["usable"] is False and report["outputs"] == []


@pytest.mark.parametrize(
    "args, message",
    [
        (["--prompt", "{nope}", "--completion", "{completion}"], "--prompt: unknown column 'nope'; the columns are: prompt, completion"),
        (["--where", "import os"], "--where 'import os': invalid expression"),
        (["--system", "be nice"], "--system needs --to chat"),
        (["--to", "yaml"], "--to must be 'chat' or 'completion'"),
        (["--valid-fraction", "2"], "--valid-fraction must be between 0 and 1"),
        (["--model", "/no/such/model.gguf"], "--model /no/such/model.gguf: GGUF file /no/such/model.gguf does not exist"),
    ],
)
def test_usage_errors_exit_2(tmp_path, args, message):
    result = invoke(str(pairs_file(tmp_path / "p.jsonl")), "-q", *args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_json_output_is_only_json(tmp_path):
    src = pairs_file(tmp_path / "p.jsonl")
    result = tunery("prepare", str(src), "--json", "--no-tokens", "--out-dir", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["usable"] is True and report["counts"]["examples"] == 30
    assert report["outputs"] == [str(tmp_path / "out" / "p_prepared.jsonl")]
    codes = {f["code"]: f for f in report["findings"]}
    assert codes["missing_prompt_separator"]["data"]["applied"] is True
    assert report["separator"] == " ->" and report["stop"] == "\n"
    assert any("fine_tunes.create -t" in c for c in report["next_commands"])
    assert report["tokens"] is None


def test_json_usage_error_is_json_too(tmp_path):
    result = invoke(str(tmp_path / "missing.jsonl"), "--json")
    assert result.exit_code == 2
    assert json.loads(result.stdout) == {"error": {"message": f"{tmp_path / 'missing.jsonl'}: no such file", "exit_code": 2}}


def test_without_a_terminal_the_recommended_remedies_are_accepted_and_said(tmp_path):
    result = invoke(str(pairs_file(tmp_path / "p.jsonl")), "--no-tokens", "--out-dir", str(tmp_path))
    assert result.exit_code == 0
    assert "no terminal to ask on: accepted every recommended remedy" in result.stdout
    assert "(fixed)" in result.stdout


def test_interactive_answers_are_honoured(tmp_path, monkeypatch):
    import tunery.cli.prepare as cli

    monkeypatch.setattr(cli, "_interactive", lambda: True)
    src = pairs_file(tmp_path / "p.jsonl")
    # four questions (separator, completion prefix, ending, leading space): decline the first only
    result = invoke(str(src), "--no-tokens", "--out-dir", str(tmp_path), input="n\ny\ny\ny\n")
    assert result.exit_code == 0, result.output
    assert "[Recommended] Add a suffix separator ` ->` to all prompts" in result.stderr
    rows = [json.loads(x) for x in (tmp_path / "p_prepared.jsonl").read_text().splitlines()]
    assert {"prompt": "question 4", "completion": " 4\n"} in rows


def test_errors_remaining_exit_1(tmp_path):
    path = tmp_path / "same.jsonl"
    path.write_text("".join(json.dumps({"prompt": "same", "completion": f"c{i}"}) + "\n" for i in range(5)))
    result = invoke(str(path), "-q", "--no-tokens")
    assert result.exit_code == 1
    assert "identical_prompts" in result.stdout and "Not written" in result.stdout


def test_make_prepare_sample_command_on_the_bundled_sample(tmp_path):
    result = tunery(
        "prepare", "examples/data/reviews.csv", "--prompt", "{text}", "--completion", "{label}", "-q",
        "--no-tokens", "--out-dir", str(tmp_path), cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "240 train / 60 validation, stratified by class" in result.stdout
    assert "--classification_n_classes 5" in result.stdout
    train = [json.loads(x) for x in (tmp_path / "reviews_prepared_train.jsonl").read_text().splitlines()]
    assert all(r["prompt"].endswith(" ->") and r["completion"] in {" 0", " 1", " 2", " 3", " 4"} for r in train)


@pytest.mark.skipif(not AMAZON.exists(), reason="the shared Amazon reviews sample is not on this machine")
def test_amazon_reviews_case_study_in_one_command(tmp_path):
    # the seed's case study, with a duplicated English review added to show it is dropped
    src = tmp_path / "reviews.jsonl"
    shutil.copy(AMAZON, src)
    rows = [json.loads(x) for x in AMAZON.read_text(encoding="utf-8").splitlines()]
    english = [r for r in rows if r["language"] == "en"]
    with src.open("a", encoding="utf-8") as f:
        f.write(json.dumps(english[2]) + "\n")
    result = tunery(
        "prepare", str(src), "--prompt", r"{review_title}\n\n{review_body}", "--completion", " {stars}",
        "--where", "language == 'en'", "-q", "--no-tokens", "--json", "--out-dir", str(tmp_path / "out"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["counts"]["filtered"] == len(rows) - len(english)
    assert report["counts"]["read"] == len(english) + 1
    dup = next(f for f in report["findings"] if f["code"] == "duplicate_rows")
    assert dup["count"] == 1 and dup["line"] == len(rows) + 1 and dup["data"]["applied"]
    written = []
    for out in report["outputs"]:
        lines = Path(out).read_text(encoding="utf-8").splitlines()
        written += [json.loads(x) for x in lines]  # valid JSONL
    expected = [(f"{r['review_title']}\n\n{r['review_body']}\n\n###\n\n", f" {r['stars']}") for r in english]
    assert sorted((w["prompt"], w["completion"]) for w in written) == sorted(expected)  # English only, once each
    assert [(w["prompt"], w["completion"]) for w in written] != expected  # shuffled
    assert report["separator"] == "\n\n###\n\n"


@pytest.mark.slow
def test_token_statistics_with_the_packaged_model(tmp_path):
    result = tunery("prepare", str(pairs_file(tmp_path / "p.jsonl", 40)), "-q", "--json", "--out-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    tokens = report["tokens"]
    assert tokens["tokens_per_example"]["count"] == 40 and tokens["context_length"] == 8192
    assert tokens["tokenizer"] == "SmolLM2-135M-Instruct"
    assert report["estimates"]["n_epochs"] == 3
    assert report["estimates"]["billed_tokens"] == 3 * tokens["billable_tokens_per_epoch"]
