"""`Store`: the settings, the database and the blob store, opened together.

This is what the API routes reach through `request.app.state.store` and what the job worker is
handed (`tunery.jobs.worker.start(store)`); a separate `tunery worker` process opens its own with
`open_store(load_settings())` on the same database URL and data folder.
"""

from __future__ import annotations

from dataclasses import dataclass

from tunery.store.blobs import BlobStore
from tunery.store.db import Database
from tunery.store.settings import Settings


@dataclass
class Store:
    settings: Settings
    db: Database
    blobs: BlobStore

    def close(self) -> None:
        self.db.dispose()


def open_store(settings: Settings) -> Store:
    settings.home.mkdir(parents=True, exist_ok=True)
    db = Database(settings.database_url)
    db.create_all()
    return Store(settings=settings, db=db, blobs=BlobStore(settings.data_dir))
