"""Read training data from any supported file, lazily, one record at a time.

`open_source(path)` checks the file (exists, known extension, not empty, not binary) and returns
a `Source`; iterating it yields `(position, record)` pairs without ever loading the whole file.
`position` is the 1-based line (JSONL/JSON lines/TXT) or data row (CSV/TSV/XLSX/Parquet; the
header is not counted). A line that is not valid JSON yields a `BadRecord` instead of a dict, so
the checks can report it and carry on. Problems that make the whole file unusable raise
`DataError` (one line, ready to print).
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from tunery.data.findings import Finding, Level

EXTENSIONS = {
    ".jsonl": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".tsv": "tsv",
    ".xlsx": "xlsx",
    ".parquet": "parquet",
    ".txt": "txt",
}
TABLE_FORMATS = {"csv", "tsv", "xlsx", "parquet"}
_BOM = b"\xef\xbb\xbf"
_CHUNK = 1 << 20
_SPACE = re.compile(r"[ \t\r\n]*")


class DataError(Exception):
    """The file cannot be read at all. `exit_code` 2 = usage (missing file, unknown extension),
    1 = the file exists but is unusable (empty, binary, not UTF-8)."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class BadRecord:
    """A line that could not be parsed; the checks turn it into an `invalid_json` error."""

    message: str


class LineError(Exception):
    """A line that is not text; `reason` completes "line N ..." and names no file."""

    def __init__(self, line: int, reason: str):
        super().__init__(f"line {line} {reason}")
        self.line = line
        self.reason = reason


def text_lines(
    raw_lines: Iterable[bytes], max_bytes: int | None = None, on_read: Callable[[int], None] | None = None
) -> Iterator[tuple[int, str]]:
    """Decoded lines (without the line ending), numbered from 1; a BOM on line 1 is fine.

    Raises `LineError` at the first line that is not UTF-8, holds NUL bytes (a binary file), or is
    longer than `max_bytes` (pass lines read with `readline(max_bytes + 1)` to bound the memory).
    """
    number = 0
    for raw in raw_lines:
        number += 1
        if on_read is not None:
            on_read(len(raw))
        if max_bytes is not None and len(raw) > max_bytes:
            raise LineError(number, f"is longer than {max_bytes:,} bytes, the longest line a file may have")
        if number == 1 and raw.startswith(_BOM):
            raw = raw[3:]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise LineError(number, f"is not valid UTF-8 (byte {exc.start + 1} of the line); save the file as UTF-8") from None
        if "\x00" in text:
            raise LineError(number, "contains NUL bytes; this looks like a binary file")
        yield number, text.rstrip("\r\n")


def jsonl_records(lines: Iterable[tuple[int, str]]) -> Iterator[tuple[int, Any]]:
    """`(line, record)` for the non-blank numbered lines; a line that is not JSON gives a `BadRecord`."""
    for number, text in lines:
        if not text.strip():
            continue
        try:
            yield number, json.loads(text)
        except json.JSONDecodeError as exc:
            yield number, BadRecord(f"invalid JSON ({exc.msg} at column {exc.colno})")


@dataclass
class Source:
    path: Path
    format: str  # one of EXTENSIONS' values
    size: int  # bytes on disk, for progress bars
    notes: list[Finding] = field(default_factory=list)  # e.g. "XLSX has more than one sheet"
    bytes_read: int = 0  # advanced while iterating (approximate for XLSX/Parquet)
    header: list[str] = field(default_factory=list)  # a table's column names, once read

    @property
    def unit(self) -> str:
        """What `position` counts: "line" or "row"."""
        return "row" if self.format in TABLE_FORMATS else "line"

    @property
    def is_table(self) -> bool:
        return self.format in TABLE_FORMATS

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        self.bytes_read = 0
        return getattr(self, f"_read_{self.format}")()

    # -- text formats ---------------------------------------------------------------------

    def _lines(self, f: BinaryIO) -> Iterator[tuple[int, str]]:
        """Decoded lines (without the line ending), numbered from 1; a BOM on line 1 is fine."""

        def count(n: int) -> None:
            self.bytes_read += n

        try:
            yield from text_lines(f, on_read=count)
        except LineError as exc:
            raise DataError(f"{self.path}: line {exc.line} {exc.reason}") from None

    def _read_jsonl(self) -> Iterator[tuple[int, Any]]:
        if _first_char(self.path) == "[":  # a JSON array saved as .jsonl: read it as one
            yield from self._read_json_array()
            return
        with open(self.path, "rb") as f:
            yield from jsonl_records(self._lines(f))

    def _read_json(self) -> Iterator[tuple[int, Any]]:
        if _first_char(self.path) == "[":
            yield from self._read_json_array()
            return
        # A .json file often holds JSON lines (OpenAI's own examples do); else it is one object.
        with open(self.path, "rb") as f:
            first_line = next((t for _, t in self._lines(f) if t.strip()), "")
        try:
            json.loads(first_line)
            yield from self._read_jsonl()
            return
        except json.JSONDecodeError:
            pass
        # A pretty-printed single object: parse it whole.
        with open(self.path, "rb") as f:
            data = f.read()
        self.bytes_read = len(data)
        try:
            obj = json.loads(data.decode("utf-8-sig"))
        except UnicodeDecodeError:
            raise DataError(f"{self.path}: not valid UTF-8; save the file as UTF-8") from None
        except json.JSONDecodeError as exc:
            raise DataError(f"{self.path}: invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
        columns = _as_columns(obj)
        if columns is None:
            yield 1, obj
        else:
            yield from columns

    def _read_json_array(self) -> Iterator[tuple[int, Any]]:
        """Stream the elements of a top-level JSON array; `position` is the line an element starts on."""
        decoder = json.JSONDecoder()
        utf8 = codecs.getincrementaldecoder("utf-8-sig")()
        with open(self.path, "rb") as f:
            buf, pos, line, eof = "", 0, 1, False

            def fill() -> bool:
                nonlocal buf, pos, eof
                if eof:
                    return False
                raw = f.read(_CHUNK)
                self.bytes_read += len(raw)
                try:
                    text = utf8.decode(raw, final=not raw)
                except UnicodeDecodeError:
                    raise DataError(f"{self.path}: not valid UTF-8 near line {line}; save the file as UTF-8") from None
                if "\x00" in text:
                    raise DataError(f"{self.path}: contains NUL bytes; this looks like a binary file")
                eof = not raw
                buf, pos = buf[pos:] + text, 0
                return not eof

            def skip_space() -> None:
                nonlocal pos, line
                while True:
                    end = _SPACE.match(buf, pos).end()
                    line += buf.count("\n", pos, end)
                    pos = end
                    if pos < len(buf) or not fill():
                        return

            skip_space()
            if buf[pos : pos + 1] != "[":
                raise DataError(f"{self.path}: expected a JSON array")
            pos += 1
            first = True
            while True:
                skip_space()
                if pos >= len(buf):
                    raise DataError(f"{self.path}: the JSON array is not closed (the file ends at line {line})")
                if buf[pos] == "]":
                    return
                if not first:
                    if buf[pos] != ",":
                        raise DataError(f"{self.path}: invalid JSON at line {line}: expected ',' or ']'")
                    pos += 1
                    skip_space()
                while True:
                    try:
                        obj, end = decoder.raw_decode(buf, pos)
                        if end < len(buf) or eof:  # a number cut at a chunk's end would decode short
                            break
                    except json.JSONDecodeError as exc:
                        if eof:
                            at = line + buf.count("\n", pos, exc.pos)
                            raise DataError(f"{self.path}: invalid JSON at line {at}: {exc.msg}") from None
                    fill()
                yield line, obj
                line += buf.count("\n", pos, end)
                pos = end
                first = False

    def _read_txt(self) -> Iterator[tuple[int, Any]]:
        # The legacy rule: every line is a completion with an empty prompt.
        with open(self.path, "rb") as f:
            for number, text in self._lines(f):
                yield number, {"prompt": "", "completion": text}

    def rows(self) -> Iterator[tuple[int, list[str]]] | None:
        """CSV/TSV rows as lists (padded to the header, whose names are then in `self.header`),
        without a dict per row; None for the other formats."""
        if self.format not in ("csv", "tsv"):
            return None
        self.bytes_read = 0
        return self._read_csv("," if self.format == "csv" else "\t", as_lists=True)

    def _read_csv(self, delimiter: str = ",", as_lists: bool = False) -> Iterator[tuple[int, Any]]:
        # The csv module reads the decoded stream directly (fast); on a decoding error the file is
        # scanned again, in binary, to name the line.
        with open(self.path, "rb") as raw, io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as text:
            reader = csv.reader(text, delimiter=delimiter)
            row_number = 0
            try:
                header = next(reader, None)
                if header is None:
                    return
                header = [h.strip() for h in header]
                self.header = header
                width = len(header)
                for row in reader:
                    if not row:
                        continue
                    row_number += 1
                    if row_number & 1023 == 0:
                        self.bytes_read = raw.tell()
                    if len(row) < width:
                        row = row + [""] * (width - len(row))
                    yield row_number, (row if as_lists else dict(zip(header, row)))
            except UnicodeDecodeError:
                self._raise_bad_utf8()
            except csv.Error as exc:
                if "NUL" in str(exc):
                    raise DataError(f"{self.path}: data row {row_number + 1} contains NUL bytes; this looks like a binary file") from None
                raise DataError(f"{self.path}: invalid {self.format.upper()} after data row {row_number}: {exc}") from None
            self.bytes_read = self.size

    def _raise_bad_utf8(self) -> None:
        with open(self.path, "rb") as f:
            for _ in self._lines(f):  # raises DataError naming the line
                pass
        raise DataError(f"{self.path}: not valid UTF-8; save the file as UTF-8")

    def _read_tsv(self) -> Iterator[tuple[int, Any]]:
        return self._read_csv("\t")

    def _read_xlsx(self) -> Iterator[tuple[int, Any]]:
        import openpyxl

        try:
            book = openpyxl.load_workbook(self.path, read_only=True, data_only=True)
        except Exception as exc:  # openpyxl raises many types for a damaged file
            raise DataError(f"{self.path}: not a readable XLSX file ({type(exc).__name__}: {exc})") from None
        try:
            sheet = book.worksheets[0]
            total = sheet.max_row or 0
            rows = sheet.iter_rows(values_only=True)
            header = next(rows, None)
            if header is None:
                return
            names = ["" if h is None else str(h).strip() for h in header]
            number = 0
            for values in rows:
                if all(v is None for v in values):
                    continue
                number += 1
                if total:
                    self.bytes_read = self.size * number // total
                yield number, {n: _cell(v) for n, v in zip(names, values) if n}
        finally:
            book.close()

    def _read_parquet(self) -> Iterator[tuple[int, Any]]:
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(self.path)
        except Exception as exc:
            raise DataError(f"{self.path}: not a readable Parquet file ({exc})") from None
        total = pf.metadata.num_rows or 1
        number = 0
        for batch in pf.iter_batches(batch_size=8192):
            for row in batch.to_pylist():
                number += 1
                yield number, row
            self.bytes_read = self.size * number // total


def open_source(path: str | os.PathLike) -> Source:
    """Check that `path` is a readable data file and return its lazy `Source`."""
    p = Path(path)
    ext = p.suffix.lower()
    if ext not in EXTENSIONS:
        known = ", ".join(EXTENSIONS)
        if ext:
            raise DataError(f"{p}: unsupported extension '{ext}' (use one of {known})", exit_code=2)
        raise DataError(f"{p}: no file extension (use one of {known})", exit_code=2)
    if not p.exists():
        raise DataError(f"{p}: no such file", exit_code=2)
    if p.is_dir():
        raise DataError(f"{p}: is a directory, not a file", exit_code=2)
    size = p.stat().st_size
    fmt = EXTENSIONS[ext]
    if size == 0:
        raise DataError(f"{p}: the file is empty")
    with open(p, "rb") as f:
        head = f.read(8192)
    if fmt == "xlsx":
        if not head.startswith(b"PK"):
            raise DataError(f"{p}: not an XLSX file (an .xlsx file is a zip archive)")
    elif fmt == "parquet":
        if not head.startswith(b"PAR1"):
            raise DataError(f"{p}: not a Parquet file (no PAR1 header)")
    else:
        if b"\x00" in head:
            raise DataError(f"{p}: binary data (NUL bytes), not a {fmt.upper()} text file")
        if not head.removeprefix(_BOM).strip() and _only_whitespace(p):
            raise DataError(f"{p}: the file is empty (only whitespace)")
    source = Source(path=p, format=fmt, size=size)
    if fmt == "xlsx":
        source.notes.extend(_xlsx_notes(p))
    return source


def _only_whitespace(p: Path) -> bool:
    with open(p, "rb") as f:
        while chunk := f.read(_CHUNK):
            if chunk.strip():
                return False
    return True


def _first_char(p: Path) -> str:
    with open(p, "rb") as f:
        while chunk := f.read(4096):
            text = chunk.removeprefix(_BOM).lstrip()
            if text:
                return chr(text[0])
    return ""


def _as_columns(obj: Any) -> Iterator[tuple[int, dict]] | None:
    """pandas' column layout `{"prompt": {"0": ..}, "completion": {"0": ..}}` or `{"prompt": [..]}`."""
    if not isinstance(obj, dict) or not obj:
        return None
    values = list(obj.values())
    if all(isinstance(v, list) for v in values):
        n = len(values[0])
        if any(len(v) != n for v in values):
            return None
        return ((i + 1, {k: obj[k][i] for k in obj}) for i in range(n))
    if all(isinstance(v, dict) for v in values):
        keys = list(values[0])
        if any(list(v) != keys for v in values):
            return None
        return ((i + 1, {k: obj[k][key] for k in obj}) for i, key in enumerate(keys))
    return None


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return value if isinstance(value, str) else str(value)


def _xlsx_notes(p: Path) -> list[Finding]:
    import openpyxl

    try:
        book = openpyxl.load_workbook(p, read_only=True)
    except Exception as exc:
        raise DataError(f"{p}: not a readable XLSX file ({type(exc).__name__}: {exc})") from None
    try:
        names = book.sheetnames
    finally:
        book.close()
    if len(names) > 1:
        return [
            Finding(
                code="extra_sheets",
                level=Level.WARNING,
                message=f"the workbook has {len(names)} sheets; only the first ('{names[0]}') is read",
                data={"sheets": names},
            )
        ]
    return []
