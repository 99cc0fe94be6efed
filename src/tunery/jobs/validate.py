"""The `validating_files` stage: are the job's files usable for training?

The content check itself is the one every uploaded `fine-tune` file gets (`tunery.store.validation`,
recorded as the file's `status`/`status_details`); here it becomes the job's OpenAI error:
`invalid_file_format` naming the line, or `invalid_n_examples` under 10 training examples. A file
whose format is not the job method's (a preference file for a supervised job, a chat file for a
DPO job) is `invalid_file_format` too, naming its first line: it fails here, never in the trainer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from tunery.data.formats import DPO, NAMES, FormatError, record_format
from tunery.store import files as files_repo
from tunery.store.blobs import BlobStore
from tunery.store.files import FileRecord

MIN_TRAINING_EXAMPLES = 10
# The record formats each job method trains on (`tunery.data.formats`).
METHOD_FORMATS = {"supervised": ("chat", "completion"), "dpo": (DPO,)}


@dataclass
class FileVerdict:
    ready: bool  # False while the upload's check has not finished
    n_examples: int | None = None
    error: dict | None = None  # {code, message, param}


def scan(blobs: BlobStore, fid: str) -> tuple[int, int | None, str | None]:
    """(non-blank lines, the first one's number, its record format), streamed (files can be
    gigabytes); the first record's format is the file's (the upload check allows only one)."""
    n, first, fmt = 0, None, None
    with blobs.open(files_repo.blob_key(fid)) as f:
        for number, line in enumerate(f, start=1):
            if line.strip():
                n += 1
                if first is None:
                    first = number
                    try:
                        fmt = record_format(json.loads(line))
                    except (ValueError, FormatError):  # not for this check to judge: the upload's did
                        fmt = None
    return n, first, fmt


def check_job_file(blobs: BlobStore, record: FileRecord | None, fid: str, param: str, method: str = "supervised") -> FileVerdict:
    label = "Training" if param == "training_file" else "Validation"
    if record is None or not blobs.exists(files_repo.blob_key(fid)):
        return FileVerdict(True, error={"code": "file_not_found", "message": f"{label} file {fid} was deleted.", "param": param})
    if record.status == files_repo.UPLOADED:
        return FileVerdict(False)
    if record.status == files_repo.ERROR:
        details = record.status_details or "Invalid file format."
        if not details.startswith("Invalid file format"):
            details = f"Invalid file format. {details}"
        return FileVerdict(True, error={"code": "invalid_file_format", "message": f"{label} file {fid}: {details}", "param": param})
    n, first, fmt = scan(blobs, fid)
    wanted = METHOD_FORMATS.get(method, ())
    if fmt is not None and wanted and fmt not in wanted:
        kinds = " or ".join(NAMES[w] for w in wanted)
        return FileVerdict(True, n, {
            "code": "invalid_file_format",
            "message": f"{label} file {fid}: Invalid file format. Line {first}: a {NAMES[fmt]} example, but method '{method}' trains on {kinds} examples",
            "param": param,
        })
    if param == "training_file" and n < MIN_TRAINING_EXAMPLES:
        return FileVerdict(True, n, {
            "code": "invalid_n_examples",
            "message": f"Training file has {n} example(s), but must have at least {MIN_TRAINING_EXAMPLES} examples",
            "param": param,
        })
    return FileVerdict(True, n)
