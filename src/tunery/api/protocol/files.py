"""File objects (`/v1/files`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, model_serializer

from tunery.store.files import UPLOAD_PURPOSES, FileRecord

# `POST /files` is parsed as a stream (`tunery.api.multipart`), so its form is declared here.
CREATE_FILE_FORM = {
    "type": "object",
    "required": ["file", "purpose"],
    "properties": {
        "file": {"type": "string", "format": "binary"},
        "purpose": {"type": "string", "enum": list(UPLOAD_PURPOSES)},
        "expires_after[anchor]": {"type": "string", "enum": ["created_at"]},
        "expires_after[seconds]": {"type": "integer", "minimum": 3600, "maximum": 2_592_000},
    },
}


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    expires_at: int | None = None
    filename: str
    purpose: str
    status: Literal["uploaded", "processed", "error"]
    status_details: str | None = None

    # The spec types `expires_at` and `status_details` as non-nullable: absent, never null.
    @model_serializer(mode="wrap")
    def _drop_absent(self, handler):
        data = handler(self)
        for key in ("expires_at", "status_details"):
            if data.get(key) is None:
                data.pop(key, None)
        return data

    @classmethod
    def of(cls, record: FileRecord) -> "FileObject":
        return cls(
            id=record.id,
            bytes=record.bytes,
            created_at=record.created_at,
            expires_at=record.expires_at,
            filename=record.filename,
            purpose=record.purpose,
            status=record.status,
            status_details=record.status_details,
        )


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool = True
