"""Each of the 15 legacy checks and remedies on crafted data: exact findings and exact output.

The last tests run OpenAI's own tool (openai==0.28.1 in .venv-legacy, made by `make setup`) on
the same files and compare the written records with ours.
"""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import pytest

from tunery.data import legacy
from tunery.data.findings import Level
from tunery.data.prepare import PrepareOptions, prepare

ROOT = Path(__file__).resolve().parents[1]
LEGACY_OPENAI = ROOT / ".venv-legacy" / "bin" / "openai"


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def run(tmp_path, rows, accept=True, **kw):
    """prepare() on rows written as JSONL; returns (report, {code: finding}, written records in file order)."""
    src = write_jsonl(tmp_path / "data.jsonl", rows)
    kw.setdefault("split", False)
    report = prepare(PrepareOptions(path=src, out_dir=tmp_path / "out", **kw), decide=lambda f: accept)
    found = {f.code: f for f in report.findings}
    records = []
    for out in report.outputs:
        records += [json.loads(line) for line in Path(out).read_text(encoding="utf-8").splitlines()]
    return report, found, records


def pairs(records):
    return sorted((r["prompt"], r["completion"]) for r in records)


def varied(n, prompt="question {i}", completion="answer number {i}"):
    return [{"prompt": prompt.format(i=i), "completion": completion.format(i=i)} for i in range(n)]


# -- 1. number of examples ------------------------------------------------------------------


def test_1_few_examples(tmp_path):
    _, found, _ = run(tmp_path, varied(12))
    f = found["few_examples"]
    assert f.level is Level.WARNING and f.data == {"n": 12}
    assert "12 prompt-completion pairs" in f.message


def test_1_enough_examples(tmp_path):
    _, found, _ = run(tmp_path, varied(100))
    assert "few_examples" not in found


# -- 2-4. columns ---------------------------------------------------------------------------


def test_2_3_column_case_is_fixed(tmp_path):
    rows = [{"Prompt": f"q{i}", "COMPLETION": f" a{i}\n"} for i in range(5)]
    report, found, records = run(tmp_path, rows)
    f = found["column_case"]
    assert f.level is Level.FIX and f.count == 10 and f.line == 1 and f.field == "Prompt"
    assert "renamed `Prompt` to `prompt`" in f.message
    assert pairs(records)[0] == ("q0 ->", " a0\n")


def test_2_3_missing_column_is_an_error(tmp_path):
    report, found, records = run(tmp_path, [{"text": "a", "completion": "b"}] * 3)
    f = found["missing_column"]
    assert f.level is Level.ERROR and f.field == "prompt"
    assert "`prompt` column/key is missing" in f.message
    assert report.outputs == [] and not report.usable


def test_4_extra_columns_are_dropped_with_a_warning_for_lookalikes(tmp_path):
    rows = [{"prompt": f"q{i}", "completion": f" a{i}\n", "id": i, "prompt_v2": "x"} for i in range(4)]
    _, found, records = run(tmp_path, rows)
    f = found["extra_columns"]
    assert f.level is Level.FIX and f.count == 4 and f.data == {"columns": ["id", "prompt_v2"]}
    assert "WARNING: ['prompt_v2'] contain `prompt`" in f.message
    assert all(set(r) == {"prompt", "completion"} for r in records)


# -- 5-6. empty completions, task type ------------------------------------------------------


def test_5_empty_completions_are_dropped(tmp_path):
    rows = varied(6)
    rows[1]["completion"] = ""
    rows[4]["completion"] = None
    del rows[5]["completion"]
    report, found, records = run(tmp_path, rows)
    f = found["empty_completion"]
    assert f.level is Level.FIX and f.count == 3 and f.lines == [2, 5, 6]
    assert report.n_examples == 3
    assert [p for p, _ in pairs(records)] == ["question 0 ->", "question 2 ->", "question 3 ->"]


def test_6_classification_and_task_types():
    assert legacy.infer_task(30, 9, 100) == legacy.CLASSIFICATION
    assert legacy.infer_task(30, 10, 100) == legacy.CONDITIONAL
    assert legacy.infer_task(30, 2, 0) == legacy.OPEN_ENDED


def test_6_classification_finding(tmp_path):
    rows = [{"prompt": f"text {i}", "completion": [" pos", " neg"][i % 2]} for i in range(12)]
    report, found, _ = run(tmp_path, rows)
    assert report.task == "classification"
    assert found["classification"].level is Level.INFO and found["classification"].data == {"n_classes": 2}
    assert report.classification["n_classes"] == 2 and report.classification["positive_class"] == " pos"
    assert "missing_completion_ending" not in found  # 14 is not for classification


# -- 7-8. duplicates, long examples ---------------------------------------------------------


def test_7_duplicates_dropped_when_accepted(tmp_path):
    rows = varied(5)
    rows.insert(3, dict(rows[0]))
    rows.append(dict(rows[1]))
    report, found, records = run(tmp_path, rows)
    f = found["duplicate_rows"]
    assert f.count == 2 and f.lines == [4, 7] and f.data["applied"] is True
    assert f.data["remedy"] == "Remove 2 duplicate rows"
    assert report.n_examples == 5 and len(set(pairs(records))) == 5


def test_7_duplicates_kept_when_declined(tmp_path):
    rows = varied(5) + [varied(1)[0]]
    report, found, records = run(tmp_path, rows, accept=False)
    assert found["duplicate_rows"].data["applied"] is False
    assert report.n_examples == 6
    assert pairs(records) == pairs(rows)  # declined: nothing at all was changed


def test_8_long_examples(tmp_path):
    rows = varied(5)
    rows[2]["prompt"] = "x" * 9_990 + " q"
    rows[2]["completion"] = " long answer"  # 9,992 + 12 > 10,000
    rows[3]["prompt"] = "y" * 9_000
    _, found, records = run(tmp_path, rows)
    f = found["long_examples"]
    assert f.count == 1 and f.lines == [3] and f.data["applied"]
    assert len(records) == 4 and not any(r["prompt"].startswith("x") for r in records)


def test_8_long_examples_are_fine_for_open_ended_generation(tmp_path):
    rows = [{"prompt": "", "completion": f"story {i} " + "z" * 10_001} for i in range(3)]
    report, found, _ = run(tmp_path, rows)
    assert report.task == "open-ended generation" and "long_examples" not in found


# -- 9-10. upper case -----------------------------------------------------------------------


def test_9_10_uppercase_prompt_and_completion(tmp_path):
    rows = [{"prompt": f"WHAT IS {i}? please", "completion": f" THE ANSWER IS {i}\n"} for i in range(4)]
    _, found, records = run(tmp_path, rows)
    assert found["uppercase_prompt"].data["upper"] == 4 * 6
    assert found["uppercase_prompt"].data["lower"] == 4 * 6
    assert found["uppercase_completion"].field == "completion"
    # lowercased; "? please" is already a common separator; " THE ANSWER IS " is a common prefix (13)
    assert pairs(records)[0] == ("what is 0? please", " 0\n")


def test_9_a_third_upper_case_is_fine(tmp_path):
    rows = [{"prompt": f"ABcdef {i}", "completion": f" x{i}\n"} for i in range(4)]  # 2 * upper == lower
    _, found, _ = run(tmp_path, rows)
    assert "uppercase_prompt" not in found


def test_uppercase_counts_non_ascii_letters(tmp_path):
    rows = [{"prompt": f"ÉÀÜ ÖÄ é {i}", "completion": f" ok {i}\n"} for i in range(3)]
    _, found, _ = run(tmp_path, rows)
    assert found["uppercase_prompt"].data == {"upper": 15, "lower": 3, "remedy": found["uppercase_prompt"].data["remedy"], "recommended": True, "applied": True}


# -- 11. the prompt separator ---------------------------------------------------------------


@pytest.mark.parametrize(
    "prompts, separator",
    [
        (["a", "b", "c"], " ->"),
        (["a\nb", "c", "d"], "\n\n###\n\n"),
        (["a\nb", "c\n\n###\n\n.", "d"], "\n\n===\n\n"),
        (["a ->", "b ->x", "c"], "\n\n###\n\n"),
        (["\n\n###\n\n", "\n\n===\n\n", "\n\n---\n\n", "\n\n===>\n\n", "\n\n--->\n\nz"], "\n\n### =>\n\n"),
    ],
)
def test_11_separator_is_the_first_one_absent(tmp_path, prompts, separator):
    rows = [{"prompt": p, "completion": f" answer {i}\n"} for i, p in enumerate(prompts)]
    report, found, records = run(tmp_path, rows)
    f = found["missing_prompt_separator"]
    assert f.data["separator"] == separator and f.data["applied"]
    assert all(r["prompt"].endswith(separator) for r in records)
    assert report.separator == separator


def test_11_identical_prompts_stop_with_an_error(tmp_path):
    rows = [{"prompt": "same", "completion": f" answer {i}\n"} for i in range(4)]
    report, found, _ = run(tmp_path, rows)
    assert found["identical_prompts"].level is Level.ERROR
    assert "all prompts are identical: `same`" in found["identical_prompts"].message
    assert report.outputs == []


def test_11_existing_separator_long_and_repeated(tmp_path):
    sep = " [separator here]"
    rows = [{"prompt": f"q{i}{sep}", "completion": f" a{i}\n"} for i in range(4)]
    rows[2]["prompt"] = f"q2{sep} more{sep}"
    report, found, records = run(tmp_path, rows)
    f = found["prompt_suffix"]
    assert f.level is Level.WARNING and "very long" in f.message and f.data["suffix"] == sep
    r = found["prompt_suffix_repeated"]
    assert r.count == 1 and r.line == 3
    assert "missing_prompt_separator" not in found and report.separator == sep


def test_11_short_common_separator_is_a_note(tmp_path):
    rows = [{"prompt": f"q{i} ->", "completion": f" a{i}\n"} for i in range(4)]
    _, found, _ = run(tmp_path, rows)
    assert found["prompt_suffix"].level is Level.INFO


# -- 12-13. common prefixes -----------------------------------------------------------------


def test_12_long_prompt_prefix_is_removed(tmp_path):
    prefix = "Classify the sentiment: "
    rows = [{"prompt": f"{prefix}text {i}", "completion": f" answer {i}\n"} for i in range(4)]
    _, found, records = run(tmp_path, rows)
    assert found["prompt_prefix"].level is Level.WARNING and found["prompt_prefix"].data["prefix"] == prefix + "text "
    assert pairs(records)[0][0] == "0 ->"


def test_12_short_prompt_prefix_is_a_note(tmp_path):
    rows = [{"prompt": f"Q: text{i}", "completion": f" answer {i}\n"} for i in range(4)]
    _, found, records = run(tmp_path, rows)
    assert found["prompt_prefix"].level is Level.INFO
    assert pairs(records)[0][0] == "Q: text0 ->"


def test_13_completion_prefix_removed_keeping_a_space(tmp_path):
    rows = [{"prompt": f"q{i}", "completion": f" Answer: value {i}\n"} for i in range(4)]
    _, found, records = run(tmp_path, rows)
    assert found["completion_prefix"].data["prefix"] == " Answer: value "
    assert pairs(records)[0][1] == " 0\n"


def test_13_completion_prefix_without_space(tmp_path):
    rows = [{"prompt": f"q{i}", "completion": f"Result={i * 11}\n"} for i in range(4)]
    _, found, records = run(tmp_path, rows)
    assert found["completion_prefix"].data["prefix"] == "Result="
    # then 15 adds the leading space
    assert sorted(c for _, c in pairs(records)) == [" 0\n", " 11\n", " 22\n", " 33\n"]


def test_13_short_completion_prefix_is_left(tmp_path):
    rows = [{"prompt": f"q{i}", "completion": f" ab {i}\n"} for i in range(4)]
    _, found, _ = run(tmp_path, rows)
    assert "completion_prefix" not in found


# -- 14. the completion ending --------------------------------------------------------------


@pytest.mark.parametrize(
    "completions, ending",
    [
        ([" a", " b", " c"], "\n"),
        ([" a\nb", " b", " c"], "."),
        ([" a\n.", " b", " c"], " END"),
        ([" a\n. END***+++&&&$$$@@@%%%", " b", " c"], " [END]"),
    ],
)
def test_14_ending_is_the_first_one_absent(tmp_path, completions, ending):
    rows = [{"prompt": f"q{i}", "completion": c} for i, c in enumerate(completions)]
    report, found, records = run(tmp_path, rows)
    f = found["missing_completion_ending"]
    assert f.data["ending"] == ending
    assert all(r["completion"].endswith(ending) for r in records)
    assert report.stop == ending


def test_14_identical_completions_stop_with_an_error(tmp_path):
    rows = [{"prompt": f"q{i}", "completion": " same"} for i in range(2)]  # 1 class of 2 is not < 2/3
    report, found, _ = run(tmp_path, rows)
    assert found["identical_completions"].level is Level.ERROR and report.outputs == []


def test_14_existing_ending_long_and_repeated(tmp_path):
    end = " <<end of answer>>"
    rows = [{"prompt": f"q{i}", "completion": f" a{i}{end}"} for i in range(4)]
    rows[1]["completion"] = f" a1{end} b{end}"
    report, found, _ = run(tmp_path, rows)
    assert found["completion_suffix"].level is Level.WARNING
    assert found["completion_suffix_repeated"].line == 2
    assert report.stop == end


# -- 15. leading space ----------------------------------------------------------------------


def test_15_leading_space(tmp_path):
    rows = [{"prompt": f"q{i}", "completion": c} for i, c in enumerate(["a\n", " b\n", "\tc\n"])]
    _, found, records = run(tmp_path, rows)
    f = found["completion_space"]
    assert f.count == 2 and f.data["applied"]
    assert sorted(c for _, c in pairs(records)) == [" \tc\n", " a\n", " b\n"]


def test_all_remedies_declined_changes_nothing(tmp_path):
    rows = [{"prompt": f"PLEASE CLASSIFY THIS {i}", "completion": f"ANSWER {i}"} for i in range(5)]
    report, found, records = run(tmp_path, rows, accept=False)
    assert {r["code"] for r in report.remedies} >= {"uppercase_prompt", "missing_prompt_separator", "completion_space"}
    assert not any(r["applied"] for r in report.remedies)
    assert pairs(records) == pairs(rows)


def test_types_numbers_become_strings_others_are_errors(tmp_path):
    rows = [{"prompt": "a", "completion": 5}, {"prompt": ["x"], "completion": " b"}, {"prompt": "c", "completion": True}]
    report, found, _ = run(tmp_path, rows)
    assert found["converted_to_string"].level is Level.FIX and found["converted_to_string"].line == 1
    e = found["invalid_type"]
    assert e.count == 2 and e.lines == [2, 3]
    assert e.message == "`prompt` must be a string, not list"
    assert report.outputs == []


# -- parity with openai==0.28.1 -------------------------------------------------------------


def legacy_records(path: Path) -> list[tuple[str, str]]:
    subprocess.run(
        [str(LEGACY_OPENAI), "tools", "fine_tunes.prepare_data", "-f", str(path), "-q"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    written = sorted(path.parent.glob(f"{path.stem}_prepared*.jsonl"))
    if not written:  # the legacy tool writes nothing when there is nothing to fix
        return sorted((r["prompt"], r["completion"]) for r in csv.DictReader(path.open(newline="")))
    out = []
    for w in written:
        out += [(r["prompt"], r["completion"]) for r in map(json.loads, w.read_text().splitlines())]
    return sorted(out)


PARITY = {
    "conditional": [(f"Summarise: the text number {i}", f"Short SUMMARY {i % 7} of text") for i in range(40)]
    + [("Summarise: the text number 3", "Short SUMMARY 3 of text"), (" odd one", "")],
    "classification": [(f"Review {i}\nbody", [" good", " bad", " ok"][i % 3]) for i in range(30)] + [("Review 0\nbody", " good")],
    "shouting": [(f"WHAT IS {i} ->", f"IT IS {i}.") for i in range(20)],
    "open_ended": [("", f"Once upon a time {i}") for i in range(15)],
}


@pytest.mark.skipif(not LEGACY_OPENAI.exists(), reason="openai==0.28.1 is installed by `make setup` in .venv-legacy")
@pytest.mark.parametrize("name", sorted(PARITY))
def test_same_records_as_openai_0_28_1(tmp_path, name):
    legacy_dir = tmp_path / "legacy"
    legacy_dir.mkdir()
    path = legacy_dir / f"{name}.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["prompt", "completion"])
        w.writerows(PARITY[name])
    expected = legacy_records(path)
    report = prepare(PrepareOptions(path=path, out_dir=tmp_path / "ours"))
    ours = []
    for out in report.outputs:
        ours += [(r["prompt"], r["completion"]) for r in map(json.loads, Path(out).read_text().splitlines())]
    assert sorted(ours) == expected
