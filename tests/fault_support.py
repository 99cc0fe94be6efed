"""Helpers of the fault tests (kills, full disks): checksums, database integrity checks, a small
filesystem to fill.

`small_fs(folder)` mounts an 8 MB tmpfs (root only: the tests skip with the reason otherwise) and
always unmounts it; `sqlite_integrity(path)` and `postgres_integrity(url)` return the problems
found (an empty list when the database is sound).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import subprocess
from pathlib import Path

import pytest


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sqlite_integrity(path: Path) -> list[str]:
    """`PRAGMA integrity_check` and `PRAGMA foreign_key_check` of the SQLite file at `path` (opened
    read-write, as the server would: after a crash, opening it replays the WAL)."""
    conn = sqlite3.connect(path, timeout=30)
    try:
        problems = [row[0] for row in conn.execute("PRAGMA integrity_check") if row[0] != "ok"]
        problems += [f"foreign key: {row}" for row in conn.execute("PRAGMA foreign_key_check")]
        return problems
    finally:
        conn.close()


def postgres_integrity(url: str) -> tuple[list[str], str]:
    """amcheck's heap and B-tree checks of every table and index of Tunery (when the extension is
    installed; else the catalog's index validity only). Returns (problems, what was checked)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    problems: list[str] = []
    try:
        with engine.connect() as conn:
            try:
                conn.execute(text("CREATE EXTENSION IF NOT EXISTS amcheck"))
                conn.commit()
                amcheck = True
            except Exception:
                conn.rollback()
                amcheck = False
            problems += [f"invalid index {r[0]}" for r in conn.execute(text(
                "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND NOT i.indisvalid"))]
            if not amcheck:
                return problems, "index validity (amcheck is not installed)"
            tables = [r[0] for r in conn.execute(text(
                "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' AND c.relkind = 'r'"))]
            for oid in tables:
                problems += [f"heap {oid}: {r}" for r in conn.execute(text("SELECT * FROM verify_heapam(:t)"), {"t": oid})]
            indexes = [r[0] for r in conn.execute(text(
                "SELECT c.oid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND a.amname = 'btree'"))]
            for oid in indexes:  # raises on corruption
                conn.execute(text("SELECT bt_index_check(:i, true)"), {"i": oid})
            return problems, f"amcheck: {len(tables)} tables (verify_heapam), {len(indexes)} B-tree indexes (bt_index_check)"
    finally:
        engine.dispose()


@contextlib.contextmanager
def small_fs(folder: Path, size: str = "8m"):
    """An empty tmpfs of `size` mounted at `folder`, unmounted afterwards whatever happens."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem (tmpfs) needs root")
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield folder
    finally:
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)  # still busy: detach it


def fill(folder: Path, leave: int = 0) -> Path:
    """Write a filler file into `folder` until at most `leave` bytes stay free; returns it."""
    import shutil

    filler = folder / "filler.bin"
    block = b"\0" * 65536
    with open(filler, "ab", buffering=0) as f:
        while (free := shutil.disk_usage(folder).free) > leave:
            try:
                f.write(block[: max(4096, min(len(block), free - leave))])
            except OSError:  # full
                break
    return filler
