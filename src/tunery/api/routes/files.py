"""`/v1/files`: create (streamed multipart), list, retrieve, delete, content.

A `POST /files` body is streamed to the blob store and cut off at `max_file_bytes` (512 MB by
default) while it arrives, or at what the project's storage quota leaves (`max_project_bytes`:
429 `insufficient_quota`); a `fine-tune` file is then checked (see `tunery.store.validation`).
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from tunery.api.auth import current_project, get_store
from tunery.api.errors import APIError, invalid_request, not_found
from tunery.api.limits import check_storage, storage_exceeded, storage_room
from tunery.api.multipart import read_form
from tunery.api.openapi import NOT_MULTIPART, multipart_body
from tunery.api.protocol.common import CursorPage
from tunery.api.protocol.files import CREATE_FILE_FORM, FileDeleted, FileObject
from tunery.store import files as repo
from tunery.store import validation
from tunery.store.blobs import BlobTooLarge, BlobWriter
from tunery.store.context import Store
from tunery.store.db import now
from tunery.store.keys import Project
from tunery.store.settings import human_bytes

router = APIRouter(tags=["files"])

FORM_OVERHEAD = 64 * 1024  # multipart boundaries and small fields around the file itself


def too_large(limit: int, param: str = "file") -> APIError:
    return APIError(
        400,
        f"File is too large: the limit is {human_bytes(limit)}. Use the Uploads API (POST /v1/uploads) for larger files.",
        param=param,
        code="file_too_large",
    )


def _expires_at(fields: dict[str, str]) -> int | None:
    anchor, seconds = fields.get("expires_after[anchor]"), fields.get("expires_after[seconds]")
    if anchor is None and seconds is None:
        return None
    if anchor != "created_at":
        raise invalid_request("expires_after.anchor must be 'created_at'.", "expires_after.anchor")
    try:
        secs = int(seconds or "")
    except ValueError:
        raise invalid_request("expires_after.seconds must be an integer.", "expires_after.seconds") from None
    if not 3600 <= secs <= 2_592_000:
        raise invalid_request("expires_after.seconds must be between 3600 and 2592000.", "expires_after.seconds")
    return now() + secs


def finish_file(store: Store, request: Request, record_id: str, purpose: str, size: int) -> FileObject:
    """After a blob is committed as `record_id`: check it if needed and return its object."""
    if purpose in repo.CHECKED_PURPOSES:
        if size <= validation.INLINE_CHECK_BYTES:
            validation.check_file(store, record_id)
        else:
            request.app.state.file_checks.submit(validation.check_file, store, record_id)
    with store.db.session_scope() as session:
        return FileObject.of(session.get(repo.FileRecord, record_id))


@router.post("/files", response_model=FileObject, openapi_extra=multipart_body(CREATE_FILE_FORM), responses={415: NOT_MULTIPART})
async def create_file(request: Request, project: Project = Depends(current_project), store: Store = Depends(get_store)):
    limit = store.settings.max_file_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + FORM_OVERHEAD:
        raise too_large(limit)

    def room() -> int | None:
        with store.db.session_scope() as session:
            return storage_room(store, session, project.id)

    room_left = await run_in_threadpool(room)
    if room_left is not None and declared.isdigit() and int(declared) > room_left + FORM_OVERHEAD:
        raise storage_exceeded(store)
    quota_bound = room_left is not None and room_left < limit  # the quota, not the file limit, cuts it off
    fid = repo.new_file_id()
    writer: BlobWriter | None = None

    def open_sink(_filename: str) -> BlobWriter:
        nonlocal writer
        writer = store.blobs.writer(repo.blob_key(fid), room_left if quota_bound else limit)
        return writer

    try:
        form = await read_form(request, "file", open_sink)
        purpose = form.fields.get("purpose")
        if not purpose:
            raise invalid_request("Missing required parameter: 'purpose'.", "purpose")
        if purpose not in repo.UPLOAD_PURPOSES:
            raise invalid_request(
                f"'{purpose}' is not one of {list(repo.UPLOAD_PURPOSES)} - 'purpose'.", "purpose", "invalid_value"
            )
        if writer is None:
            raise invalid_request("Missing required parameter: 'file'.", "file")
        expires_at = _expires_at(form.fields)
        size = await run_in_threadpool(writer.commit)
    except BlobTooLarge:
        raise (storage_exceeded(store) if quota_bound else too_large(limit)) from None
    finally:
        if writer is not None:
            writer.abort()  # no-op once committed

    def record() -> FileObject:
        try:
            with store.db.session_scope() as session:
                check_storage(store, session, project.id, size)  # again: a concurrent upload may have used the room
                repo.add_file(session, project.id, fid, form.filename or "file", purpose, size, expires_at)
        except BaseException:  # over quota, or the database's disk is full: leave no blob without its row
            store.blobs.delete(repo.blob_key(fid))
            raise
        return finish_file(store, request, fid, purpose, size)

    return await run_in_threadpool(record)


@router.get("/files", response_model=CursorPage[FileObject])
def list_files(
    purpose: str | None = None,
    limit: int = Query(10_000, ge=1, le=10_000),
    order: Literal["asc", "desc"] = "desc",
    after: str | None = None,
    project: Project = Depends(current_project),
    store: Store = Depends(get_store),
):
    with store.db.session_scope() as session:
        rows, has_more = repo.list_files(session, project.id, purpose=purpose, limit=limit, order=order, after=after)
        return CursorPage.of([FileObject.of(r) for r in rows], has_more)


def _get(store: Store, project: Project, file_id: str) -> repo.FileRecord:
    with store.db.session_scope() as session:
        record = repo.get_file(session, project.id, file_id)
    if record is None:
        raise not_found("File", file_id, "file_id")
    return record


@router.get("/files/{file_id}", response_model=FileObject)
def retrieve_file(file_id: str, project: Project = Depends(current_project), store: Store = Depends(get_store)):
    return FileObject.of(_get(store, project, file_id))


@router.delete("/files/{file_id}", response_model=FileDeleted)
def delete_file(file_id: str, project: Project = Depends(current_project), store: Store = Depends(get_store)):
    with store.db.session_scope() as session:
        if not repo.delete_file(session, store.blobs, project.id, file_id):
            raise not_found("File", file_id, "file_id")
    return FileDeleted(id=file_id)


@router.get("/files/{file_id}/content", response_class=FileResponse,
            responses={200: {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}})
def file_content(file_id: str, project: Project = Depends(current_project), store: Store = Depends(get_store)):
    record = _get(store, project, file_id)
    return FileResponse(
        store.blobs.path(record.blob_key), media_type="application/octet-stream", filename=record.filename
    )
