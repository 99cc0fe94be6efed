"""Which format a training record is in: chat, prompt/completion (legacy) or preference (DPO).

The one rule that `tunery prepare`, the upload check and the trainer all use:

- `messages` -> chat;
- `preferred_output` or `non_preferred_output` -> DPO (`input` alone is not enough: instruction
  data such as Alpaca has an `input` too);
- `prompt` or `completion` -> prompt/completion.

A record with the keys of two formats is refused (which part would be trained is a guess), and so
is one with none of them unless the caller has a default (prepare reads table rows without those
keys as prompt/completion, whose checks then name the missing key). A file holds one format, set
by its first record: `FileFormat` names the first record of another.
"""

from __future__ import annotations

from typing import Any

from tunery.data.findings import Finding, Level

CHAT, COMPLETION, DPO = "chat", "completion", "dpo"
NAMES = {CHAT: "chat", COMPLETION: "prompt/completion", DPO: "preference (DPO)"}
# DPO: the current key names, then the ones SPEC revisions of 2024-12..2025-07 used (still sent by
# generated clients).
MARKERS = {
    CHAT: ("messages",),
    DPO: ("preferred_output", "non_preferred_output", "preferred_completion", "non_preferred_completion"),
    COMPLETION: ("prompt", "completion"),
}


class FormatError(ValueError):
    """A record whose format cannot be told, or that differs from the file's; `code` is stable."""

    def __init__(self, code: str, message: str, field: str | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field

    def finding(self, line: int | None) -> Finding:
        return Finding(code=self.code, level=Level.ERROR, message=self.message, line=line, field=self.field)


def record_format(record: Any, default: str | None = None) -> str:
    """CHAT, COMPLETION or DPO; `default` for a record with no key of any format (else an error)."""
    if not isinstance(record, dict):
        raise FormatError("data_type", f"the line must be a JSON object, not {type(record).__name__}")
    found = {}  # format -> its first key in the record
    for fmt, keys in MARKERS.items():
        key = next((k for k in keys if k in record), None)
        if key is not None:
            found[fmt] = key
    if len(found) > 1:
        keys = " and ".join(f"'{key}' ({NAMES[fmt]})" for fmt, key in found.items())
        raise FormatError(
            "ambiguous_format",
            f"the record has the keys of more than one format: {keys}; use the keys of one format",
            next(iter(found.values())),
        )
    if found:
        return next(iter(found))
    if default is not None:
        return default
    raise FormatError(
        "unknown_format",
        "unknown format: expected 'messages' (chat), 'prompt'/'completion' (prompt/completion) "
        "or 'input'/'preferred_output'/'non_preferred_output' (DPO)",
    )


class FileFormat:
    """The format of a file: its first record's. `check` raises at a record of another format."""

    def __init__(self, unit: str = "line", default: str | None = None):
        self.unit = unit
        self.default = default
        self.format: str | None = None
        self.first_line: int | None = None

    def check(self, record: Any, line: int) -> str:
        fmt = record_format(record, self.default)
        if self.format is None:
            self.format, self.first_line = fmt, line
        elif fmt != self.format:
            raise FormatError(
                "mixed_format",
                f"a {NAMES[fmt]} example in a file that starts with {NAMES[self.format]} examples "
                f"({self.unit} {self.first_line}); use one format per file",
            )
        return fmt
