"""The folder blob store: atomic streamed writes, limits, joins, key confinement."""

import hashlib

import pytest

from tunery.store.blobs import BlobStore, BlobTooLarge


def test_streamed_write_is_atomic_and_leaves_no_temp(tmp_path):
    store = BlobStore(tmp_path)
    size = store.write_stream("files/a", [b"hello ", b"world"])
    assert size == 11
    assert store.path("files/a").read_bytes() == b"hello world"
    assert sorted(p.name for p in (tmp_path / "files").iterdir()) == ["a"]


def test_limit_aborts_the_write_and_keeps_the_old_blob(tmp_path):
    store = BlobStore(tmp_path)
    store.write_bytes("files/a", b"old")
    with pytest.raises(BlobTooLarge):
        store.write_stream("files/a", [b"12345", b"67890"], limit=8)
    assert store.path("files/a").read_bytes() == b"old"
    assert [p.name for p in (tmp_path / "files").iterdir()] == ["a"]


def test_writer_without_commit_writes_nothing(tmp_path):
    store = BlobStore(tmp_path)
    with store.writer("x/y") as w:
        w.write(b"data")
    assert not store.exists("x/y")
    assert list((tmp_path / "x").iterdir()) == []


def test_concat_joins_in_order_and_hashes(tmp_path):
    store = BlobStore(tmp_path)
    store.write_bytes("parts/1", b"abc")
    store.write_bytes("parts/2", b"def")
    size, md5 = store.concat("files/out", ["parts/2", "parts/1"])
    assert (size, store.path("files/out").read_bytes()) == (6, b"defabc")
    assert md5 == hashlib.md5(b"defabc").hexdigest()
    with pytest.raises(BlobTooLarge):
        store.concat("files/out2", ["parts/1", "parts/2"], limit=5)
    assert not store.exists("files/out2")


def test_keys_cannot_escape_the_root(tmp_path):
    store = BlobStore(tmp_path / "root")
    with pytest.raises(ValueError, match="escapes"):
        store.path("../outside")


def test_delete_file_and_folder(tmp_path):
    store = BlobStore(tmp_path)
    store.write_bytes("uploads/u/p1", b"1")
    store.write_bytes("files/f", b"2")
    store.delete("uploads/u")
    store.delete("files/f")
    store.delete("files/missing")
    assert not (tmp_path / "uploads" / "u").exists() and not store.exists("files/f")


def test_sweep_removes_only_old_temp_files(tmp_path):
    import os
    import time

    store = BlobStore(tmp_path)
    store.write_bytes("files/keep", b"1")
    (tmp_path / "files" / ".keep.abc.tmp").write_bytes(b"fresh")  # maybe being written right now
    old = tmp_path / "files" / ".gone.def.tmp"
    old.write_bytes(b"crash debris")
    past = time.time() - 2 * 86_400
    os.utime(old, (past, past))
    assert store.sweep_temps("files") == 1
    assert sorted(p.name for p in (tmp_path / "files").iterdir()) == [".keep.abc.tmp", "keep"]
    assert store.sweep_temps("nothing-here") == 0
