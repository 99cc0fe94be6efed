"""A folder-backed blob store: uploads, parts, result files, adapters, checkpoints.

Writes stream into a temporary file in the same folder, are fsynced, then atomically renamed into
place, so a crash leaves either the whole blob or nothing — never a torn file — and nothing is
ever held whole in memory. Keys are relative POSIX paths ("files/file-abc"); no key can escape
the root.

A write that runs out of space (ENOSPC, or a quota's EDQUOT) removes its temp file and raises
`DiskFull`, whose message names no path: the API answers it with 507, the job runner fails the
job with it. `is_disk_full` also recognises the database's own "disk is full" errors.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

CHUNK = 1024 * 1024


class BlobTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"blob exceeds the limit of {limit} bytes")
        self.limit = limit


class DiskFull(Exception):
    """The filesystem (or the database) ran out of space; nothing of the failed write was kept."""

    def __init__(self, message: str = "The disk is full (no space left on device).") -> None:
        super().__init__(message)
        self.message = message


_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_SQLITE_FULL = 13  # SQLITE_FULL: "database or disk is full"
_PG_DISK_FULL = "53100"  # PostgreSQL's SQLSTATE disk_full


def is_disk_full(exc: BaseException | None) -> bool:
    """Whether `exc` (or an exception it wraps) is the disk running out of space."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, DiskFull) or (isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS):
            return True
        if getattr(exc, "sqlite_errorcode", None) == _SQLITE_FULL or getattr(exc, "sqlstate", None) == _PG_DISK_FULL:
            return True
        # SQLAlchemy keeps the driver's error in `.orig`; everything else chains with __cause__.
        exc, seen = getattr(exc, "orig", None) or exc.__cause__ or exc.__context__, seen + 1
    return False


class BlobWriter:
    """Streams bytes into a temp file; `commit()` makes it the blob, `abort()` throws it away."""

    def __init__(self, final: Path, limit: int | None = None) -> None:
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
        except OSError as exc:
            if is_disk_full(exc):
                raise DiskFull() from None
            raise
        self._file: BinaryIO = os.fdopen(fd, "wb")
        self._tmp = Path(tmp)
        self.final = final
        self.limit = limit
        self.size = 0
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.done = False

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.limit is not None and self.size > self.limit:
            raise BlobTooLarge(self.limit)
        try:
            self._file.write(data)
        except OSError as exc:
            self._check_full(exc)
            raise
        self.md5.update(data)

    def commit(self) -> int:
        try:
            self._file.flush()
            os.fsync(self._file.fileno())  # a full disk may only show here (delayed allocation)
            self._file.close()
        except OSError as exc:
            self._check_full(exc)
            raise
        os.replace(self._tmp, self.final)
        _fsync_dir(self.final.parent)
        self.done = True
        return self.size

    def _check_full(self, exc: OSError) -> None:
        """Out of space: drop the temp file at once (it holds space others need) and say so."""
        if is_disk_full(exc):
            self.abort()
            raise DiskFull() from None

    def abort(self) -> None:
        if not self.done:
            try:
                self._file.close()  # flushes what is buffered: fails again on a full disk
            except OSError:
                pass
            self._tmp.unlink(missing_ok=True)
            self.done = True

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, exc_type, *_exc) -> None:
        if exc_type is not None or not self.done:
            self.abort()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # not possible on every platform; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class BlobStore:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"blob key escapes the store: {key!r}")
        return path

    def writer(self, key: str, limit: int | None = None) -> BlobWriter:
        return BlobWriter(self.path(key), limit)

    def write_stream(self, key: str, chunks: Iterable[bytes], limit: int | None = None) -> int:
        with self.writer(key, limit) as writer:
            for chunk in chunks:
                writer.write(chunk)
            return writer.commit()

    def write_bytes(self, key: str, data: bytes) -> int:
        return self.write_stream(key, [data])

    def copy_in(self, key: str, source: Path | str) -> int:
        with open(source, "rb") as f:
            return self.write_stream(key, iter(lambda: f.read(CHUNK), b""))

    def concat(self, key: str, parts: Iterable[str], limit: int | None = None) -> tuple[int, str]:
        """Join blobs `parts` into `key`, streaming; returns (size, md5 hex)."""
        with self.writer(key, limit) as writer:
            for part in parts:
                with open(self.path(part), "rb") as f:
                    shutil.copyfileobj(f, _Sink(writer), CHUNK)
            digest = writer.md5.hexdigest()
            return writer.commit(), digest

    def open(self, key: str) -> BinaryIO:
        return open(self.path(key), "rb")

    def iter_chunks(self, key: str, chunk: int = CHUNK) -> Iterator[bytes]:
        with self.open(key) as f:
            while data := f.read(chunk):
                yield data

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def size(self, key: str) -> int:
        return self.path(key).stat().st_size

    def sweep_temps(self, folder: str, older_than: float = 86_400) -> int:
        """Remove temp files a crashed writer left in `folder` (only old ones: another process
        sharing the data folder may be writing right now). Returns how many were removed."""
        import time

        base = self.path(folder)
        if not base.is_dir():
            return 0
        cutoff, n = time.time() - older_than, 0
        for tmp in base.rglob(".*.tmp"):
            try:
                if tmp.stat().st_mtime < cutoff:
                    tmp.unlink()
                    n += 1
            except FileNotFoundError:
                pass
        return n

    def delete(self, key: str) -> None:
        path = self.path(key)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


class _Sink:
    def __init__(self, writer: BlobWriter) -> None:
        self.write = writer.write
