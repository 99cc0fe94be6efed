"""The uploads and upload-parts tables: a large file sent in parts, then joined into a File.

Parts are blobs under `uploads/<upload_id>/<part_id>`; completing streams them, in the order
the client gives, into `files/<file_id>` and removes them. An Upload is `pending` until completed
or cancelled, and `expired` once `expires_at` (one hour after creation, as at OpenAI) has passed.
"""

from __future__ import annotations

from sqlalchemy import ForeignKey, Integer, String, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from tunery.store.db import Base, now
from tunery.store.ids import part_id, upload_id

PENDING, COMPLETED, CANCELLED, EXPIRED = "pending", "completed", "cancelled", "expired"
UPLOAD_TTL = 3600
MAX_PART_BYTES = 64 * 1024**2  # OpenAI's per-part limit


class Upload(Base):
    __tablename__ = "uploads"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id"), index=True)
    filename: Mapped[str] = mapped_column(String(512))
    purpose: Mapped[str] = mapped_column(String(64))
    bytes: Mapped[int] = mapped_column(Integer)
    mime_type: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[int] = mapped_column(Integer)
    file_expires_at: Mapped[int | None] = mapped_column(Integer, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default=PENDING)
    file_id: Mapped[str | None] = mapped_column(String(64), nullable=True)

    @property
    def current_status(self) -> str:
        if self.status == PENDING and now() >= self.expires_at:
            return EXPIRED
        return self.status


class UploadPart(Base):
    __tablename__ = "upload_parts"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    upload_id: Mapped[str] = mapped_column(ForeignKey("uploads.id"), index=True)
    bytes: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[int] = mapped_column(Integer)


def parts_folder(uid: str) -> str:
    return f"uploads/{uid}"


def part_key(uid: str, pid: str) -> str:
    return f"uploads/{uid}/{pid}"


def create_upload(
    session: Session, project_id: str, filename: str, purpose: str, size: int, mime_type: str, file_expires_at: int | None
) -> Upload:
    created = now()
    upload = Upload(
        id=upload_id(),
        project_id=project_id,
        filename=filename,
        purpose=purpose,
        bytes=size,
        mime_type=mime_type,
        created_at=created,
        expires_at=created + UPLOAD_TTL,
        file_expires_at=file_expires_at,
        status=PENDING,
    )
    session.add(upload)
    session.flush()
    return upload


def get_upload(session: Session, project_id: str, uid: str) -> Upload | None:
    return session.scalar(select(Upload).where(Upload.id == uid, Upload.project_id == project_id))


def new_part_id() -> str:
    return part_id()


def add_part(session: Session, uid: str, pid: str, size: int) -> UploadPart:
    part = UploadPart(id=pid, upload_id=uid, bytes=size, created_at=now())
    session.add(part)
    session.flush()
    return part


def parts_of(session: Session, uid: str) -> dict[str, UploadPart]:
    return {p.id: p for p in session.scalars(select(UploadPart).where(UploadPart.upload_id == uid))}


def bytes_received(session: Session, uid: str) -> int:
    return session.scalar(select(func.coalesce(func.sum(UploadPart.bytes), 0)).where(UploadPart.upload_id == uid)) or 0


def expired_pending(session: Session) -> list[str]:
    """Ids of uploads that expired before completion: their parts can go."""
    return list(session.scalars(select(Upload.id).where(Upload.status == PENDING, Upload.expires_at <= now())))
