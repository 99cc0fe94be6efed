"""Every input format, read lazily with line/row numbers, and every unreadable-file case."""

from __future__ import annotations

import json

import pytest

from tunery.data import readers
from tunery.data.readers import BadRecord, DataError, open_source

PAIRS = [{"prompt": f"p{i}", "completion": f" c{i}"} for i in range(3)]


def read(path):
    return list(open_source(path))


def test_jsonl_with_bom_blank_lines_and_a_broken_line(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_bytes(
        b"\xef\xbb\xbf" + json.dumps(PAIRS[0]).encode() + b"\r\n\n" + b'{"prompt": "x", \n' + json.dumps(PAIRS[1]).encode() + b"\n"
    )
    rows = read(p)
    assert [r[0] for r in rows] == [1, 3, 4]
    assert rows[0][1] == PAIRS[0] and rows[2][1] == PAIRS[1]
    assert isinstance(rows[1][1], BadRecord) and "invalid JSON" in rows[1][1].message
    assert open_source(p).unit == "line"


def test_jsonl_non_utf8_names_the_line(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_bytes(b'{"prompt": "a", "completion": "b"}\n{"prompt": "a", "completion": "b"}\n{"prompt": "\xff\xfe"}\n')
    with pytest.raises(DataError, match=r"line 3 is not valid UTF-8") as e:
        read(p)
    assert e.value.exit_code == 1


@pytest.mark.parametrize("chunk", [7, 1 << 20])
def test_json_array_is_streamed_with_start_lines(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(readers, "_CHUNK", chunk)  # tiny chunks split strings, numbers and UTF-8
    records = [{"prompt": "é" * i, "completion": "ü", "n": 123456789 + i} for i in range(5)]
    p = tmp_path / "a.json"
    p.write_text(json.dumps(records, indent=2, ensure_ascii=False), encoding="utf-8")
    rows = read(p)
    assert [r for _, r in rows] == records
    assert [n for n, _ in rows] == [2, 7, 12, 17, 22]


def test_json_array_errors(tmp_path):
    p = tmp_path / "a.json"
    p.write_text('[{"a": 1},\n {"a": 2}\n')
    with pytest.raises(DataError, match="not closed"):
        read(p)
    p.write_text('[{"a": 1} {"a": 2}]')
    with pytest.raises(DataError, match="expected ',' or ']'"):
        read(p)


def test_json_file_holding_json_lines(tmp_path):
    p = tmp_path / "a.json"
    p.write_text("\n".join(json.dumps(r) for r in PAIRS) + "\n")
    assert read(p) == [(1, PAIRS[0]), (2, PAIRS[1]), (3, PAIRS[2])]


def test_jsonl_holding_a_json_array(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text(json.dumps(PAIRS, indent=1))
    assert [r for _, r in read(p)] == PAIRS


def test_json_single_object_and_pandas_column_layout(tmp_path):
    p = tmp_path / "one.json"
    p.write_text(json.dumps(PAIRS[0], indent=2))
    assert read(p) == [(1, PAIRS[0])]
    p = tmp_path / "cols.json"
    p.write_text(json.dumps({"prompt": {"0": "a", "1": "b"}, "completion": {"0": "x", "1": "y"}}, indent=2))
    assert read(p) == [(1, {"prompt": "a", "completion": "x"}), (2, {"prompt": "b", "completion": "y"})]


def test_csv_rows_quoted_newlines_bom_and_short_rows(tmp_path):
    p = tmp_path / "a.csv"
    p.write_bytes(b'\xef\xbb\xbfprompt, completion\n"multi\nline",1\nshort\n\nx,"a, b"\n')
    source = open_source(p)
    assert source.unit == "row" and source.is_table
    assert list(source) == [
        (1, {"prompt": "multi\nline", "completion": "1"}),
        (2, {"prompt": "short", "completion": ""}),
        (3, {"prompt": "x", "completion": "a, b"}),
    ]
    assert source.bytes_read == p.stat().st_size


def test_tsv(tmp_path):
    p = tmp_path / "a.tsv"
    p.write_text("prompt\tcompletion\nhello, world\t yes\n")
    assert read(p) == [(1, {"prompt": "hello, world", "completion": " yes"})]


def test_txt_lines_are_completions_with_empty_prompts(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("first line\r\n\nthird\n")
    assert read(p) == [
        (1, {"prompt": "", "completion": "first line"}),
        (2, {"prompt": "", "completion": ""}),
        (3, {"prompt": "", "completion": "third"}),
    ]


def test_xlsx_first_sheet_and_a_warning_for_more(tmp_path):
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["prompt", "completion", "n"])
    sheet.append(["a", "x", 3])
    sheet.append([None, None, None])
    sheet.append(["b", None, 2.5])
    book.create_sheet("other").append(["ignored"])
    p = tmp_path / "a.xlsx"
    book.save(p)
    source = open_source(p)
    assert list(source) == [
        (1, {"prompt": "a", "completion": "x", "n": "3"}),
        (2, {"prompt": "b", "completion": "", "n": "2.5"}),
    ]
    assert [n.code for n in source.notes] == ["extra_sheets"]
    assert "only the first ('Sheet') is read" in source.notes[0].message


def test_parquet_in_batches(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "a.parquet"
    pq.write_table(pa.table({"prompt": ["a", "b"], "completion": ["x", "y"], "stars": [1, 5]}), p)
    assert read(p) == [(1, {"prompt": "a", "completion": "x", "stars": 1}), (2, {"prompt": "b", "completion": "y", "stars": 5})]


@pytest.mark.parametrize(
    "name, content, code, message",
    [
        ("missing.jsonl", None, 2, "no such file"),
        ("data.docx", b"x", 2, "unsupported extension '.docx'"),
        ("data", b"x", 2, "no file extension"),
        ("empty.jsonl", b"", 1, "the file is empty"),
        ("blank.csv", b" \n\n \t\n", 1, "only whitespace"),
        ("bin.jsonl", b'{"a": 1}\n\x00\x01\x02', 1, "binary data (NUL bytes)"),
        ("bad.xlsx", b"not a zip", 1, "not an XLSX file"),
        ("bad.parquet", b"nope", 1, "not a Parquet file"),
    ],
)
def test_unreadable_files(tmp_path, name, content, code, message):
    p = tmp_path / name
    if content is not None:
        p.write_bytes(content)
    with pytest.raises(DataError) as e:
        read(p)
    assert e.value.exit_code == code
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_a_directory_is_a_usage_error(tmp_path):
    d = tmp_path / "d.jsonl"
    d.mkdir()
    with pytest.raises(DataError, match="is a directory") as e:
        open_source(d)
    assert e.value.exit_code == 2


def test_reading_is_lazy(tmp_path):
    p = tmp_path / "big.jsonl"
    p.write_text("".join(json.dumps({"prompt": "p", "completion": str(i)}) + "\n" for i in range(50_000)))
    it = iter(open_source(p))
    assert next(it) == (1, {"prompt": "p", "completion": "0"})
    source = open_source(p)
    first = next(iter(source))
    assert first[0] == 1 and source.bytes_read < p.stat().st_size


def test_csv_non_utf8_names_the_line(tmp_path):
    p = tmp_path / "a.csv"
    p.write_bytes(b"prompt,completion\na,b\ncaf\xe9,b\n")
    with pytest.raises(DataError, match=r"line 3 is not valid UTF-8"):
        read(p)

