"""The database layer: SQLite pragmas, projects and hashed keys, keyset pages, file rows, ids."""

import re

import pytest
from sqlalchemy import select, text

from tunery.store import files
from tunery.store.context import open_store
from tunery.store.db import keyset_page
from tunery.store.ids import new_id
from tunery.store.keys import ApiKey, Project, count_keys, create_key, hash_key, project_for_key
from tunery.store.settings import load_settings


@pytest.fixture
def store(tmp_path):
    s = open_store(load_settings(tmp_path))
    yield s
    s.close()


def test_sqlite_runs_in_wal_with_a_busy_timeout(store):
    with store.db.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 30000


def test_keys_are_stored_hashed_and_open_their_project(store):
    with store.db.session_scope() as s:
        assert count_keys(s) == 0
        a = create_key(s, "alpha")
        b = create_key(s, "beta")
    assert re.fullmatch(r"sk-tunery-[A-Za-z0-9]{48}", a)
    with store.db.session_scope() as s:
        rows = list(s.scalars(select(ApiKey)))
        assert {r.key_hash for r in rows} == {hash_key(a), hash_key(b)}
        assert all(a not in (r.key_hash + r.display) for r in rows)
        assert project_for_key(s, a).name == "alpha"
        assert project_for_key(s, b).name == "beta"
        assert project_for_key(s, a + "x") is None
        assert project_for_key(s, "") is None
        assert count_keys(s) == 2
        assert [p.name for p in s.scalars(select(Project).order_by(Project.name))] == ["alpha", "beta"]


def test_file_listing_pages_by_cursor_in_both_orders(store):
    with store.db.session_scope() as s:
        create_key(s, "p")
        project = s.scalar(select(Project))
        ids = []
        for i in range(5):
            rec = files.add_file(s, project.id, files.new_file_id(), f"f{i}.jsonl", "batch", i)
            rec.created_at = 1000 + i  # distinct times: the order is then unambiguous
            ids.append(rec.id)
    with store.db.session_scope() as s:
        page, more = files.list_files(s, project.id, limit=2, order="desc")
        assert ([r.id for r in page], more) == ([ids[4], ids[3]], True)
        page, more = files.list_files(s, project.id, limit=2, order="desc", after=ids[3])
        assert ([r.id for r in page], more) == ([ids[2], ids[1]], True)
        page, more = files.list_files(s, project.id, limit=10, order="asc", after=ids[2])
        assert ([r.id for r in page], more) == ([ids[3], ids[4]], False)
        assert files.list_files(s, project.id, after="file-unknown") == ([], False)
        assert files.list_files(s, project.id, purpose="fine-tune") == ([], False)


def test_keyset_page_breaks_ties_on_the_second_column(store):
    with store.db.session_scope() as s:
        create_key(s, "p")
        project = s.scalar(select(Project))
        for fid in ("file-a", "file-b", "file-c"):
            files.add_file(s, project.id, fid, "x", "batch", 1).created_at = 5
    with store.db.session_scope() as s:
        stmt = select(files.FileRecord)
        cols = [files.FileRecord.created_at, files.FileRecord.id]
        first, more = keyset_page(s, stmt, cols, None, 1, False)
        second, _ = keyset_page(s, stmt, cols, first[0], 5, False)
        assert ([r.id for r in first], more, [r.id for r in second]) == (["file-a"], True, ["file-b", "file-c"])


def test_fine_tune_files_wait_for_their_check_other_purposes_do_not(store):
    with store.db.session_scope() as s:
        create_key(s, "p")
        project = s.scalar(select(Project))
        ft = files.add_file(s, project.id, files.new_file_id(), "t.jsonl", "fine-tune", 3)
        other = files.add_file(s, project.id, files.new_file_id(), "b.jsonl", "batch", 3)
        assert (ft.status, other.status) == ("uploaded", "processed")
        assert files.pending_checks(s) == [ft.id]


def test_ids_look_like_openai_ids():
    assert re.fullmatch(r"ftjob-[A-Za-z0-9]{24}", new_id("ftjob-"))
    assert re.fullmatch(r"file-[A-Za-z0-9]{24}", files.new_file_id())
    assert len({new_id("x_") for _ in range(1000)}) == 1000


def test_deleting_a_file_removes_its_blob_only_on_commit(store):
    with store.db.session_scope() as s:
        create_key(s, "p")
        project = s.scalar(select(Project))
        rec = files.store_file(s, store.blobs, project.id, "a.jsonl", "batch", b"data")
    with pytest.raises(RuntimeError):
        with store.db.session_scope() as s:
            assert files.delete_file(s, store.blobs, project.id, rec.id)
            raise RuntimeError("rolled back")
    assert store.blobs.exists(files.blob_key(rec.id))
    with store.db.session_scope() as s:
        assert files.get_file(s, project.id, rec.id) is not None
        assert files.delete_file(s, store.blobs, project.id, rec.id)
    assert not store.blobs.exists(files.blob_key(rec.id))
    with store.db.session_scope() as s:
        assert files.get_file(s, project.id, rec.id) is None
        assert not files.delete_file(s, store.blobs, project.id, rec.id)
