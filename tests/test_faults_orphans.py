"""A blob whose row was never committed: a real `tunery serve` is killed with SIGKILL while an
upload's blob is in place and its row waits for the database (held locked by the test), which
leaves exactly what a kill between the rename and the commit leaves. The next start sweeps it once
it is older than the grace period; a blob a row points to is never swept (expired and old, too).
A few seconds; no model, no training."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

import openai
import pytest
from api_support import ServerProcess, create_key
from fault_support import sha256, sqlite_integrity

from tunery.store import files as files_repo
from tunery.store.context import open_store
from tunery.store.keys import get_or_create_project
from tunery.store.settings import load_settings

pytestmark = pytest.mark.faults

NO_WORKER = ("--no-worker",)


def blob_names(home: Path) -> set[str]:
    return {p.name for p in (home / "data" / "files").iterdir() if not p.name.startswith(".")}


def age(path: Path, seconds: float) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past))


def kill_between_blob_and_row(home: Path, client_key: str) -> str:
    """Start the server, upload one file while the database refuses writes, kill -9 the server once
    the blob is in place (its row still waiting): the id of the blob left without a row."""
    server = ServerProcess(home, args=NO_WORKER).start()
    client = openai.OpenAI(base_url=server.base_url, api_key=client_key, max_retries=0, timeout=60)
    client.files.list()  # the key's use is recorded now, not under the lock below
    before = blob_names(home)
    lock = sqlite3.connect(home / "tunery.db", timeout=30, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")  # WAL: readers go on, the upload's INSERT waits
    failed: list[BaseException] = []

    def upload() -> None:
        try:
            client.files.create(file=("doomed.bin", os.urandom(50_000)), purpose="assistants")
        except BaseException as exc:  # the server dies under it
            failed.append(exc)

    thread = threading.Thread(target=upload)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not blob_names(home) - before:
            assert time.monotonic() < deadline, "the blob was never renamed into place"
            time.sleep(0.02)
        time.sleep(0.3)  # the request is now waiting on the database
        server.proc.kill()
        server.proc.wait()
        server.stop()
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    thread.join(30)
    assert failed, "the upload must not have been acknowledged"
    (orphan,) = blob_names(home) - before
    return orphan


def test_a_blob_left_without_its_row_by_a_kill_is_swept_after_the_grace_period(tmp_path):
    home = tmp_path
    key = create_key(home)
    server = ServerProcess(home, args=NO_WORKER).start()
    client = openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0)
    kept = {f.id: sha256(data) for data in (b"kept one\n", os.urandom(20_000))
            for f in [client.files.create(file=("kept.bin", data), purpose="assistants")]}
    expired = client.files.create(file=("expiring.bin", b"x" * 100), purpose="assistants",
                                  expires_after={"anchor": "created_at", "seconds": 3600})
    server.stop()
    files = home / "data" / "files"
    for fid in [*kept, expired.id]:
        age(files / fid, 3 * 86_400)  # old blobs with rows: never swept, however old
    # the expired file: its row stays (hidden from clients); its blob must stay with it
    db = sqlite3.connect(home / "tunery.db")
    db.execute("UPDATE files SET expires_at = ? WHERE id = ?", (int(time.time()) - 10, expired.id))
    db.commit()
    db.close()

    orphan = kill_between_blob_and_row(home, key)
    assert sqlite_integrity(home / "tunery.db") == []

    # a young orphan is left alone: another process sharing the folder might be about to commit its row
    server = ServerProcess(home, args=NO_WORKER).start()
    client = openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0)
    assert (files / orphan).is_file()
    assert orphan not in {f.id for f in client.files.list()}
    server.stop()

    age(files / orphan, files_repo.ORPHAN_GRACE_S + 60)
    server = ServerProcess(home, args=NO_WORKER).start()
    client = openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0)
    try:
        assert not (files / orphan).exists()
        assert "removed 1 file blob(s) left without a row by a crash" in server.output()
        listed = {f.id for f in client.files.list()}
        assert listed == set(kept)
        for fid, digest in kept.items():
            assert sha256(client.files.content(fid).content) == digest
        assert (files / expired.id).is_file()
    finally:
        server.stop()
    assert sqlite_integrity(home / "tunery.db") == []


@pytest.fixture
def store(tmp_path):
    s = open_store(load_settings(tmp_path))
    yield s
    s.close()


def _blob(store, name: str, seconds_old: float) -> Path:
    store.blobs.write_bytes(files_repo.blob_key(name), b"data")
    path = store.blobs.path(files_repo.blob_key(name))
    age(path, seconds_old)
    return path


def test_sweep_deletes_only_old_blobs_without_a_row_and_nothing_that_is_not_a_file_blob(store):
    with store.db.session_scope() as session:
        project = get_or_create_project(session, "acme").id
        row = files_repo.store_file(session, store.blobs, project, "a.txt", "assistants", b"a").id
    age(store.blobs.path(files_repo.blob_key(row)), 86_400)
    old, young = _blob(store, "file-old", 7200), _blob(store, "file-young", 60)
    foreign = _blob(store, "notes.txt", 86_400)  # not a name Tunery gives: not ours to delete
    assert files_repo.sweep_orphans(store.db, store.blobs) == 1
    assert not old.exists() and young.exists() and foreign.exists()
    assert store.blobs.exists(files_repo.blob_key(row))
    assert files_repo.sweep_orphans(store.db, store.blobs) == 0


def test_sweep_refuses_when_the_database_does_not_look_like_this_folders(store, caplog):
    """A fresh or another database under an existing data folder: deleting every blob would lose
    every file, so nothing is swept and the log says why."""
    paths = [_blob(store, f"file-{i}", 7200) for i in range(3)]
    with caplog.at_level("ERROR", logger="tunery.store"):
        assert files_repo.sweep_orphans(store.db, store.blobs) == 0  # no file row at all
    assert "no file row in the database" in caplog.text
    with store.db.session_scope() as session:
        files_repo.store_file(session, store.blobs, get_or_create_project(session, "acme").id, "a.txt", "assistants", b"a")
    with caplog.at_level("ERROR", logger="tunery.store"):
        assert files_repo.sweep_orphans(store.db, store.blobs, limit=2) == 0  # more orphans than a crash leaves
    assert "more than a crash leaves" in caplog.text
    assert all(p.exists() for p in paths)
    assert files_repo.sweep_orphans(store.db, store.blobs, limit=3) == 3
