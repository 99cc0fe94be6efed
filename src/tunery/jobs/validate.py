"""The `validating_files` stage: are the job's files usable for training?

The content check itself is the one every uploaded `fine-tune` file gets (`tunery.store.validation`,
recorded as the file's `status`/`status_details`); here it becomes the job's OpenAI error:
`invalid_file_format` naming the line, or `invalid_n_examples` under 10 training examples.
"""

from __future__ import annotations

from dataclasses import dataclass

from tunery.store import files as files_repo
from tunery.store.blobs import BlobStore
from tunery.store.files import FileRecord

MIN_TRAINING_EXAMPLES = 10


@dataclass
class FileVerdict:
    ready: bool  # False while the upload's check has not finished
    n_examples: int | None = None
    error: dict | None = None  # {code, message, param}


def count_examples(blobs: BlobStore, fid: str) -> int:
    """Non-blank lines, streamed (files can be gigabytes)."""
    n = 0
    with blobs.open(files_repo.blob_key(fid)) as f:
        for line in f:
            if line.strip():
                n += 1
    return n


def check_job_file(blobs: BlobStore, record: FileRecord | None, fid: str, param: str) -> FileVerdict:
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
    n = count_examples(blobs, fid)
    if param == "training_file" and n < MIN_TRAINING_EXAMPLES:
        return FileVerdict(True, n, {
            "code": "invalid_n_examples",
            "message": f"Training file has {n} example(s), but must have at least {MIN_TRAINING_EXAMPLES} examples",
            "param": param,
        })
    return FileVerdict(True, n)
