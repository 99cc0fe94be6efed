"""`/v1/uploads`: create, add part (multipart `data`), complete (ordered `part_ids`, optional
`md5`), cancel. Every part is streamed to disk; the declared total may not exceed
`max_upload_bytes` (8 GB by default) and the parts may not exceed the declared total. The
project's storage quota (`max_project_bytes`) is checked when the Upload is created (for its
declared size) and again when it completes.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool

from tunery.api.auth import current_project, get_store
from tunery.api.errors import APIError, invalid_request, not_found
from tunery.api.limits import check_storage
from tunery.api.multipart import read_form
from tunery.api.openapi import NOT_MULTIPART, multipart_body
from tunery.api.protocol.files import FileObject
from tunery.api.protocol.uploads import (
    ADD_PART_FORM,
    CompleteUploadRequest,
    CreateUploadRequest,
    UploadObject,
    UploadPartObject,
)
from tunery.api.routes.files import finish_file
from tunery.store import files as files_repo
from tunery.store import uploads as repo
from tunery.store.blobs import BlobTooLarge, BlobWriter
from tunery.store.context import Store
from tunery.store.db import now
from tunery.store.keys import Project
from tunery.store.settings import human_bytes

router = APIRouter(tags=["uploads"])


def _object(session, upload: repo.Upload) -> UploadObject:
    file = None
    if upload.file_id:
        record = session.get(files_repo.FileRecord, upload.file_id)
        file = FileObject.of(record) if record is not None else None
    return UploadObject(
        id=upload.id,
        bytes=upload.bytes,
        created_at=upload.created_at,
        expires_at=upload.expires_at,
        filename=upload.filename,
        purpose=upload.purpose,
        status=upload.current_status,
        file=file,
    )


def _pending(session, project: Project, upload_id: str) -> repo.Upload:
    upload = repo.get_upload(session, project.id, upload_id)
    if upload is None:
        raise not_found("Upload", upload_id, "upload_id")
    status = upload.current_status
    if status != repo.PENDING:
        raise invalid_request(f"Upload {upload_id} is {status}: it no longer accepts changes.", "upload_id")
    return upload


@router.post("/uploads", response_model=UploadObject)
def create_upload(body: CreateUploadRequest, project: Project = Depends(current_project), store: Store = Depends(get_store)):
    limit = store.settings.max_upload_bytes
    if body.bytes > limit:
        raise APIError(
            400,
            f"The upload is too large: {body.bytes} bytes declared, the limit is {human_bytes(limit)}.",
            param="bytes",
            code="file_too_large",
        )
    file_expires = now() + body.expires_after.seconds if body.expires_after else None
    with store.db.session_scope() as session:
        check_storage(store, session, project.id, body.bytes)
        upload = repo.create_upload(
            session, project.id, body.filename, body.purpose, body.bytes, body.mime_type, file_expires
        )
        return _object(session, upload)


@router.post("/uploads/{upload_id}/parts", response_model=UploadPartObject, openapi_extra=multipart_body(ADD_PART_FORM),
             responses={415: NOT_MULTIPART})
async def add_part(
    upload_id: str, request: Request, project: Project = Depends(current_project), store: Store = Depends(get_store)
):
    def room() -> int:
        with store.db.session_scope() as session:
            upload = _pending(session, project, upload_id)
            return upload.bytes - repo.bytes_received(session, upload_id)

    left = await run_in_threadpool(room)
    limit = min(repo.MAX_PART_BYTES, left)
    pid = repo.new_part_id()
    writer: BlobWriter | None = None

    def open_sink(_filename: str) -> BlobWriter:
        nonlocal writer
        writer = store.blobs.writer(repo.part_key(upload_id, pid), limit)
        return writer

    def too_large() -> APIError:
        if limit == left:
            return invalid_request(
                f"The parts would exceed the {left} bytes left of the size declared when the Upload was created.",
                "data",
            )
        return invalid_request(f"A part may hold at most {repo.MAX_PART_BYTES} bytes (64 MB).", "data")

    try:
        await read_form(request, "data", open_sink)
        if writer is None:
            raise invalid_request("Missing required parameter: 'data'.", "data")
        size = await run_in_threadpool(writer.commit)
    except BlobTooLarge:
        raise too_large() from None
    finally:
        if writer is not None:
            writer.abort()

    def record() -> UploadPartObject:
        with store.db.session_scope() as session:
            upload = _pending(session, project, upload_id)
            if repo.bytes_received(session, upload_id) + size > upload.bytes:  # a concurrent part won
                store.blobs.delete(repo.part_key(upload_id, pid))
                raise too_large()
            part = repo.add_part(session, upload_id, pid, size)
            return UploadPartObject(id=part.id, created_at=part.created_at, upload_id=upload_id)

    return await run_in_threadpool(record)


@router.post("/uploads/{upload_id}/complete", response_model=UploadObject)
def complete_upload(
    upload_id: str,
    body: CompleteUploadRequest,
    request: Request,
    project: Project = Depends(current_project),
    store: Store = Depends(get_store),
):
    with store.db.session_scope() as session:
        upload = _pending(session, project, upload_id)
        parts = repo.parts_of(session, upload_id)
    if len(set(body.part_ids)) != len(body.part_ids):
        raise invalid_request("part_ids lists a part more than once.", "part_ids")
    unknown = [p for p in body.part_ids if p not in parts]
    if unknown:
        raise invalid_request(f"No such part in Upload {upload_id}: {unknown[0]}", "part_ids")
    total = sum(parts[p].bytes for p in body.part_ids)
    if total != upload.bytes:
        raise invalid_request(
            f"The parts hold {total} bytes, but the Upload was created with bytes={upload.bytes}.", "part_ids"
        )
    fid = files_repo.new_file_id()
    size, md5 = store.blobs.concat(files_repo.blob_key(fid), [repo.part_key(upload_id, p) for p in body.part_ids])
    if body.md5 and body.md5.lower() != md5:
        store.blobs.delete(files_repo.blob_key(fid))
        raise invalid_request(f"md5 mismatch: the parts hash to {md5}, not {body.md5}.", "md5", "md5_mismatch")
    try:
        with store.db.session_scope() as session:
            upload = _pending(session, project, upload_id)  # still pending: not cancelled meanwhile
            check_storage(store, session, project.id, size)  # files stored since the Upload was created count
            files_repo.add_file(session, project.id, fid, upload.filename, upload.purpose, size, upload.file_expires_at)
            upload.status, upload.file_id = repo.COMPLETED, fid
    except BaseException:
        store.blobs.delete(files_repo.blob_key(fid))
        raise
    store.blobs.delete(repo.parts_folder(upload_id))
    finish_file(store, request, fid, upload.purpose, size)
    with store.db.session_scope() as session:
        return _object(session, repo.get_upload(session, project.id, upload_id))


@router.post("/uploads/{upload_id}/cancel", response_model=UploadObject)
def cancel_upload(upload_id: str, project: Project = Depends(current_project), store: Store = Depends(get_store)):
    with store.db.session_scope() as session:
        upload = _pending(session, project, upload_id)
        upload.status = repo.CANCELLED
    store.blobs.delete(repo.parts_folder(upload_id))
    with store.db.session_scope() as session:
        return _object(session, repo.get_upload(session, project.id, upload_id))
