"""The check of an uploaded `fine-tune` file, in one place, off the request path.

Decision: a file with errors is *stored* with `status: "error"` and `status_details` naming the
first bad line ("Line 3: …"), not refused. Big files are checked after the upload has been
answered, so refusing is not possible for them, and one behaviour for every size is simpler to
rely on; it is also what OpenAI's legacy `status` field means, and what `File.wait_for_processing`
in openai 0.28.1 waits for. A job created on such a file fails with `invalid_file_format` and the
same line. Good files go `uploaded` → `processed`.

The check is `tunery.data.validate.first_error`: the record checks of `tunery prepare` (chat,
prompt/completion, DPO) in one streaming pass; `status_details` is "Invalid file format. " and
the first error as prepare names it ("Line 3, messages[1].content: the message has no content").
Small files are checked inside the request so the answer already says `processed`; larger ones
on the app's file-check thread. Files left `uploaded` by a stopped server are re-checked on start
(`resume_pending`).
"""

from __future__ import annotations

import logging
from concurrent.futures import Executor
from typing import BinaryIO

from tunery.data.validate import describe, first_error
from tunery.store import files as files_repo
from tunery.store.context import Store

log = logging.getLogger("tunery.store")

INLINE_CHECK_BYTES = 4 * 1024 * 1024  # up to this size, the upload request waits for the check


def problem(f: BinaryIO) -> str | None:
    """The first problem of a JSONL stream ("Line N, field: ..."), or None when it is good."""
    finding = first_error(f)
    return describe(finding) if finding is not None else None


def check_file(store: Store, fid: str) -> None:
    """Check file `fid` and record the outcome (`processed`, or `error` with the details)."""
    try:
        with store.blobs.open(files_repo.blob_key(fid)) as f:
            found = problem(f)
    except FileNotFoundError:
        return  # deleted while waiting
    except Exception:  # a bug in a check must not leave the file pending forever
        log.exception("checking file %s failed", fid)
        found = "Internal error while checking the file"
    status = files_repo.ERROR if found else files_repo.PROCESSED
    details = f"Invalid file format. {found}" if found else None
    with store.db.session_scope() as session:
        files_repo.set_status(session, fid, status, details)


def resume_pending(store: Store, executor: Executor) -> None:
    with store.db.session_scope() as session:
        pending = files_repo.pending_checks(session)
    for fid in pending:
        executor.submit(check_file, store, fid)
