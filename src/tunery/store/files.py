"""The files table and its repository functions. Blobs live under `files/<id>` in the blob store.

`status` is OpenAI's deprecated field: `uploaded` on arrival, then `processed` (or `error` with
`status_details`) once a `fine-tune` file has been checked (see `tunery.store.validation`); files
of other purposes go straight to `processed`. Every lookup takes the project id: an id from
another project is simply not found.
"""

from __future__ import annotations

import logging
import os
import time

from sqlalchemy import ForeignKey, Integer, String, Text, event, func, or_, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from tunery.store.blobs import BlobStore
from tunery.store.db import Base, keyset_page, now
from tunery.store.ids import file_id

log = logging.getLogger("tunery.store")

UPLOADED, PROCESSED, ERROR = "uploaded", "processed", "error"

# A blob is written, renamed into place, then its row committed; a kill between the last two (or
# between a delete's commit and its blob's removal) leaves a blob no row points to. Old enough,
# such a blob is swept: no writer of this or another process sharing the data folder can still
# be about to commit its row. More orphans than a crash leaves means a different database was
# put under this data folder: nothing is deleted then, and the log says so.
ORPHAN_GRACE_S = 3600
MAX_ORPHANS_SWEPT = 100

# Purposes a client may upload (the spec's FilePurpose plus the legacy-era ones still accepted).
UPLOAD_PURPOSES = ("fine-tune", "assistants", "batch", "user_data", "vision", "evals")
# Purposes only Tunery itself writes.
SYSTEM_PURPOSES = ("fine-tune-results", "assistants_output", "batch_output")
CHECKED_PURPOSES = ("fine-tune",)


class FileRecord(Base):
    __tablename__ = "files"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    filename: Mapped[str] = mapped_column(String(512))
    purpose: Mapped[str] = mapped_column(String(64), index=True)
    bytes: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[int] = mapped_column(Integer, index=True)
    expires_at: Mapped[int | None] = mapped_column(Integer, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default=UPLOADED)
    status_details: Mapped[str | None] = mapped_column(Text, nullable=True)

    @property
    def blob_key(self) -> str:
        return blob_key(self.id)


def blob_key(fid: str) -> str:
    return f"files/{fid}"


def new_file_id() -> str:
    return file_id()


def add_file(
    session: Session,
    project_id: str,
    fid: str,
    filename: str,
    purpose: str,
    size: int,
    expires_at: int | None = None,
) -> FileRecord:
    """Record a file whose blob is already committed at `blob_key(fid)`."""
    status = UPLOADED if purpose in CHECKED_PURPOSES else PROCESSED
    record = FileRecord(
        id=fid,
        project_id=project_id,
        filename=filename,
        purpose=purpose,
        bytes=size,
        created_at=now(),
        expires_at=expires_at,
        status=status,
    )
    session.add(record)
    session.flush()
    return record


def store_file(
    session: Session, blobs: BlobStore, project_id: str, filename: str, purpose: str, data: bytes
) -> FileRecord:
    """Write `data` as a new file (for small files Tunery makes itself, e.g. result CSVs)."""
    fid = new_file_id()
    size = blobs.write_bytes(blob_key(fid), data)
    return add_file(session, project_id, fid, filename, purpose, size)


def _live():
    # An expired file (`expires_after`) is gone for clients; its row and blob are kept for now.
    return or_(FileRecord.expires_at.is_(None), FileRecord.expires_at > now())


def get_file(session: Session, project_id: str, fid: str) -> FileRecord | None:
    return session.scalar(select(FileRecord).where(FileRecord.id == fid, FileRecord.project_id == project_id, _live()))


def list_files(
    session: Session,
    project_id: str,
    *,
    purpose: str | None = None,
    limit: int = 10_000,
    order: str = "desc",
    after: str | None = None,
) -> tuple[list[FileRecord], bool]:
    stmt = select(FileRecord).where(FileRecord.project_id == project_id, _live())
    if purpose:
        stmt = stmt.where(FileRecord.purpose == purpose)
    cursor = None
    if after:
        cursor = get_file(session, project_id, after)
        if cursor is None:  # an unknown cursor ends the listing rather than restarting it
            return [], False
    return keyset_page(session, stmt, [FileRecord.created_at, FileRecord.id], cursor, limit, order == "desc")


def project_bytes(session: Session, project_id: str) -> int:
    """Bytes of the project's live files: what its storage quota counts."""
    stmt = select(func.coalesce(func.sum(FileRecord.bytes), 0)).where(FileRecord.project_id == project_id, _live())
    return int(session.scalar(stmt) or 0)


def delete_file(session: Session, blobs: BlobStore, project_id: str, fid: str) -> bool:
    """Delete the row now and the blob once the session commits (a rollback keeps both)."""
    record = get_file(session, project_id, fid)
    if record is None:
        return False
    session.delete(record)
    session.flush()
    event.listen(session, "after_commit", lambda _session: blobs.delete(blob_key(fid)), once=True)
    return True


def set_status(session: Session, fid: str, status: str, details: str | None = None) -> None:
    record = session.get(FileRecord, fid)
    if record is not None:
        record.status = status
        record.status_details = details


def pending_checks(session: Session) -> list[str]:
    """Ids of files still waiting for their check (e.g. the server stopped mid-check)."""
    return list(session.scalars(select(FileRecord.id).where(FileRecord.status == UPLOADED)))


def sweep_orphans(db, blobs: BlobStore, older_than: float = ORPHAN_GRACE_S, limit: int = MAX_ORPHANS_SWEPT) -> int:
    """Delete blobs under `files/` that no row points to (expired rows included) and that were
    last written more than `older_than` seconds ago. Returns how many were deleted."""
    folder = blobs.path("files")
    if not folder.is_dir():
        return 0
    cutoff, old = time.time() - older_than, []
    with os.scandir(folder) as entries:
        for entry in entries:
            # only what `file_id()` names: temp files have their own sweep, and anything else is not ours
            if not entry.name.startswith("file-") or not entry.is_file(follow_symlinks=False):
                continue
            try:
                if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                    old.append(entry.name)
            except FileNotFoundError:
                pass
    if not old:
        return 0
    with db.session_scope() as session:
        if session.scalar(select(FileRecord.id).limit(1)) is None:
            log.error("%d file blobs but no file row in the database: is this the database of this data folder? "
                      "Nothing swept.", len(old))
            return 0
        known: set[str] = set()
        for i in range(0, len(old), 500):
            known.update(session.scalars(select(FileRecord.id).where(FileRecord.id.in_(old[i : i + 500]))))
    orphans = [name for name in old if name not in known]
    if len(orphans) > limit:
        log.error("%d file blobs have no row in the database (more than a crash leaves): is this the database of this "
                  "data folder? Nothing swept.", len(orphans))
        return 0
    for name in orphans:
        blobs.delete(blob_key(name))
    if orphans:
        log.warning("removed %d file blob(s) left without a row by a crash", len(orphans))
    return len(orphans)
