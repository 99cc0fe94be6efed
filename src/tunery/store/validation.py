"""The check of an uploaded `fine-tune` file, in one place, off the request path.

Decision: a file with errors is *stored* with `status: "error"` and `status_details` naming the
first bad line ("Line 3: …"), not refused. Big files are checked after the upload has been
answered, so refusing is not possible for them, and one behaviour for every size is simpler to
rely on; it is also what OpenAI's legacy `status` field means, and what `File.wait_for_processing`
in openai 0.28.1 waits for. A job created on such a file fails with `invalid_file_format` and the
same line. Good files go `uploaded` → `processed`.

Each line must be a JSON object; the first record fixes the format (chat `messages`, DPO
`input`/`preferred_output`/`non_preferred_output`, or legacy `prompt`/`completion`) and every
record is checked with the prepare checks of `tunery.data` for that format (the first error-level
finding fails the file). Small files are checked inside the request so the answer already says
`processed`; larger ones on the app's file-check thread. Files left `uploaded` by a stopped
server are re-checked on start (`resume_pending`).
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Callable, Iterable
from concurrent.futures import Executor

from tunery.store import files as files_repo
from tunery.store.context import Store

log = logging.getLogger("tunery.store")

INLINE_CHECK_BYTES = 4 * 1024 * 1024  # up to this size, the upload request waits for the check

CHAT, DPO, LEGACY = "chat", "dpo", "prompt-completion"


def record_format(record: dict) -> str | None:
    if "messages" in record:
        return CHAT
    if "preferred_output" in record or "non_preferred_output" in record or "input" in record:
        return DPO
    if "prompt" in record or "completion" in record:
        return LEGACY
    return None


def _data_check(fmt: str) -> Callable[[dict, int], Iterable] | None:
    """The record check `tunery.data` provides for `fmt`, or None while it is not written."""
    module_name, names = {
        CHAT: ("tunery.data.chat", ("check_chat_record",)),
        DPO: ("tunery.data.dpo", ("check_dpo_record",)),
        LEGACY: ("tunery.data.legacy", ("check_legacy_record", "check_record")),
    }[fmt]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            return None
        raise
    for name in names:
        if callable(getattr(module, name, None)):
            return getattr(module, name)
    return None


def _structural_problem(fmt: str, record: dict) -> str | None:
    """The minimum every trainer needs, applied whatever `tunery.data` offers."""
    if fmt == CHAT:
        msgs = record.get("messages")
        if not isinstance(msgs, list) or not msgs:
            return "'messages' must be a non-empty list"
        if not any(isinstance(m, dict) and m.get("role") == "assistant" for m in msgs):
            return "'messages' has no assistant message"
    elif fmt == LEGACY:
        for key in ("prompt", "completion"):
            if not isinstance(record.get(key), str):
                return f"'{key}' must be a string"
    elif fmt == DPO:
        for key in ("input", "preferred_output", "non_preferred_output"):
            if key not in record:
                return f"missing '{key}'"
    return None


def _first_error(findings: Iterable) -> str | None:
    for f in findings or ():
        level = getattr(getattr(f, "level", None), "value", getattr(f, "level", None))
        if level == "error":
            where = f.field if getattr(f, "field", None) else None
            return f"{f.message}" + (f" ({where})" if where and where not in f.message else "")
    return None


def check_lines(lines: Iterable[bytes]) -> str | None:
    """Check a JSONL stream; returns the first problem ("Line N: …") or None when it is good."""
    fmt: str | None = None
    check = None
    n = 0
    for lineno, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        n += 1
        try:
            record = json.loads(raw)
        except UnicodeDecodeError:
            return f"Line {lineno}: not valid UTF-8"
        except json.JSONDecodeError as exc:
            return f"Line {lineno}: not valid JSON ({exc.msg} at column {exc.colno})"
        if not isinstance(record, dict):
            return f"Line {lineno}: each line must be a JSON object, got {type(record).__name__}"
        this = record_format(record)
        if this is None:
            return f"Line {lineno}: unknown format: expected 'messages' (chat), 'prompt'/'completion' or DPO keys"
        if fmt is None:
            fmt, check = this, _data_check(this)
        elif this != fmt:
            return f"Line {lineno}: {this} record in a {fmt} file (the first record sets the format)"
        # The prepare checks of `tunery.data` when written for this format, else the minimum.
        problem = _first_error(check(record, lineno)) if check is not None else _structural_problem(fmt, record)
        if problem:
            return f"Line {lineno}: {problem}"
    if n == 0:
        return "The file is empty: expected one JSON object per line"
    return None


def check_file(store: Store, fid: str) -> None:
    """Check file `fid` and record the outcome (`processed`, or `error` with the details)."""
    try:
        with store.blobs.open(files_repo.blob_key(fid)) as f:
            problem = check_lines(f)
    except FileNotFoundError:
        return  # deleted while waiting
    except Exception:  # a bug in a check must not leave the file pending forever
        log.exception("checking file %s failed", fid)
        problem = "Internal error while checking the file"
    status = files_repo.ERROR if problem else files_repo.PROCESSED
    details = f"Invalid file format. {problem}" if problem else None
    with store.db.session_scope() as session:
        files_repo.set_status(session, fid, status, details)


def resume_pending(store: Store, executor: Executor) -> None:
    with store.db.session_scope() as session:
        pending = files_repo.pending_checks(session)
    for fid in pending:
        executor.submit(check_file, store, fid)
