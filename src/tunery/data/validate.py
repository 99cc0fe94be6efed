"""Is a JSONL training file usable as it is? The check of every uploaded `fine-tune` file.

The same record checks as `tunery prepare` (`formats` for the format, `chat`, `dpo`, and `legacy`'s
per-record check), run as one streaming pass that stops at the first error: memory holds one
line at a time, and a line is at most `MAX_LINE_BYTES`. Unlike prepare it fixes nothing, so what
prepare would fix is an error here (see `legacy.check_record`); a file prepare wrote passes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, BinaryIO

from tunery.data import legacy
from tunery.data.chat import check_chat_record
from tunery.data.dpo import check_dpo_record
from tunery.data.findings import Finding, Level
from tunery.data.formats import CHAT, COMPLETION, DPO, FileFormat, FormatError
from tunery.data.readers import BadRecord, LineError, jsonl_records, text_lines

MAX_LINE_BYTES = 64 * 1024 * 1024  # far beyond any context window; bounds what one line can hold

CHECKS: dict[str, Callable[[Any, int], list[Finding]]] = {
    CHAT: check_chat_record,
    COMPLETION: legacy.check_record,
    DPO: check_dpo_record,
}


def first_error(f: BinaryIO, max_line_bytes: int = MAX_LINE_BYTES) -> Finding | None:
    """The first error-level finding of the JSONL stream `f`, or None when every record is usable."""
    lines = iter(lambda: f.readline(max_line_bytes + 1), b"")
    file_format = FileFormat()
    n = 0
    try:
        for line, record in jsonl_records(text_lines(lines, max_line_bytes)):
            if isinstance(record, BadRecord):
                return Finding("invalid_json", Level.ERROR, record.message, line=line)
            try:
                fmt = file_format.check(record, line)
            except FormatError as exc:
                return exc.finding(line)
            for finding in CHECKS[fmt](record, line):
                if finding.level is Level.ERROR:
                    return finding
            n += 1
    except LineError as exc:
        return Finding("unreadable_line", Level.ERROR, f"the line {exc.reason}", line=exc.line)
    if n == 0:
        return Finding("no_examples", Level.ERROR, "the file has no examples: expected one JSON object per line")
    return None


def describe(finding: Finding) -> str:
    """"Line 3, messages[1].content: the message has no content": where, then what."""
    where = finding.where()
    return f"{where[:1].upper()}{where[1:]}: {finding.message}" if where else finding.message[:1].upper() + finding.message[1:]
