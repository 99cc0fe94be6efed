"""The FastAPI app: `create_app(settings) -> FastAPI`.

Mounting: the `router` of every module in `tunery.api.routes.ROUTERS` is included under `/v1`.

State: `app.state.store` is the `tunery.store.context.Store` (settings, database, blobs), opened in
the lifespan; routes reach it with `Depends(get_store)` and the caller's project with
`Depends(current_project)` (`tunery.api.auth`). `app.state.file_checks` runs the checks of
uploaded `fine-tune` files off the request path (`tunery.store.validation`).

Background work: on start the lifespan re-queues file checks the last run did not finish and
sweeps what a crash or an abandoned upload left (old temp files, file blobs without a row, parts
of expired uploads), then,
when `worker=True`, calls `tunery.jobs.worker.start(store)`; if that returns an object with a
`stop()` method it is called on shutdown (before the database is closed). The worker must not
block: it runs its own threads/subprocesses.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI

from tunery import __version__
from tunery.api import errors, openapi
from tunery.api.limits import BodyLimit
from tunery.api.routes import ROUTERS
from tunery.api import inference
from tunery.eval import run_worker
from tunery.jobs import worker as jobs_worker
from tunery.serve.judge import judges
from tunery.store import files as files_repo
from tunery.store import uploads, validation
from tunery.store.context import open_store
from tunery.store.settings import Settings, load_settings

log = logging.getLogger("tunery.api")


def _sweep(store) -> None:
    """What a crash or an abandoned upload left behind: old temp files, file blobs whose row was
    never committed (`files_repo.sweep_orphans`), parts of expired uploads."""
    for folder in ("files", "uploads"):
        store.blobs.sweep_temps(folder)
    files_repo.sweep_orphans(store.db, store.blobs)
    with store.db.session_scope() as session:
        expired = uploads.expired_pending(session)
    for upload_id in expired:
        store.blobs.delete(uploads.parts_folder(upload_id))


def create_app(settings: Settings | None = None, *, worker: bool = True) -> FastAPI:
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        store = open_store(settings)
        app.state.store = store
        app.state.file_checks = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tunery-file-check")
        validation.resume_pending(store, app.state.file_checks)
        _sweep(store)
        handle = jobs_worker.start(store) if worker else None
        # Eval runs generate in this process, through the registry chat completions use; their
        # model graders' judges too (a project's judge resolves names as chat completions do).
        registry = inference.registry(app)
        app.state.eval_runs = run_worker.start(store, registry, judges=judges(store, registry))
        try:
            yield
        finally:
            app.state.eval_runs.stop()
            if handle is not None and hasattr(handle, "stop"):
                handle.stop()
            app.state.file_checks.shutdown(wait=True, cancel_futures=True)
            store.close()

    app = FastAPI(title="Tunery", version=__version__, lifespan=lifespan)
    errors.install(app)
    openapi.install(app)
    app.add_middleware(BodyLimit, limit=settings.max_request_bytes)  # 413 past max_request_bytes
    for module in ROUTERS:
        app.include_router(module.router, prefix="/v1")
    return app
