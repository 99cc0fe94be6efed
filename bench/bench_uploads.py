"""Uploads into the API server: throughput and the server's memory while a big file streams in.

The server (`tunery serve --no-worker`) receives one ~200 MB JSONL file twice: as one
`POST /v1/files` and through the Uploads API in 64 MB parts. Its process RSS is polled throughout:
bodies stream to disk, so the peak should stay near the idle size whatever the file size. The
ceiling for comparison is a plain copy of the same file on the same disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from api_support import ServerProcess, create_key  # noqa: E402

SIZE_MB = int(os.environ.get("BENCH_UPLOAD_MB", "200"))


class _Peak(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.proc, self.peak, self.running = psutil.Process(pid), 0, True

    def run(self) -> None:
        while self.running:
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except psutil.NoSuchProcess:
                return
            time.sleep(0.01)


def _make_file(path: Path) -> None:
    line = (json.dumps({"messages": [{"role": "user", "content": "x" * 900}, {"role": "assistant", "content": "y"}]}) + "\n").encode()
    with open(path, "wb") as f:
        for _ in range(SIZE_MB * 1024 * 1024 // len(line)):
            f.write(line)


def _wait_processed(client: httpx.Client, base: str, fid: str) -> float:
    started = time.perf_counter()
    while client.get(f"{base}/files/{fid}").json()["status"] == "uploaded":
        time.sleep(0.2)
    return time.perf_counter() - started


def run(work: Path) -> str:
    work.mkdir(parents=True, exist_ok=True)
    home = work / "uploads-home"
    shutil.rmtree(home, ignore_errors=True)
    data = work / "upload.jsonl"
    _make_file(data)
    size = data.stat().st_size
    mb = size / 2**20

    started = time.perf_counter()
    shutil.copyfile(data, work / "copy.jsonl")
    os.sync()
    copy_s = time.perf_counter() - started
    (work / "copy.jsonl").unlink()

    key = create_key(home)
    server = ServerProcess(home, args=("--no-worker",)).start()
    rows = []
    try:
        proc = psutil.Process(server.proc.pid)
        time.sleep(1)
        idle_mb = proc.memory_info().rss / 2**20
        client = httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=600)
        base = server.base_url

        peak = _Peak(server.proc.pid)
        peak.start()
        started = time.perf_counter()
        with open(data, "rb") as f:
            obj = client.post(f"{base}/files", data={"purpose": "fine-tune"}, files={"file": ("upload.jsonl", f)}).json()
        wall = time.perf_counter() - started
        check_s = _wait_processed(client, base, obj["id"])
        peak.running = False
        peak.join()
        rows.append(("`POST /v1/files` (one request)", wall, peak.peak / 2**20, check_s))

        peak = _Peak(server.proc.pid)
        peak.start()
        started = time.perf_counter()
        up = client.post(f"{base}/uploads", json={"filename": "upload.jsonl", "purpose": "fine-tune", "bytes": size, "mime_type": "text/jsonl"}).json()
        md5, part_ids = hashlib.md5(), []
        with open(data, "rb") as f:
            while chunk := f.read(64 * 2**20):
                md5.update(chunk)
                part_ids.append(client.post(f"{base}/uploads/{up['id']}/parts", files={"data": ("p", chunk)}).json()["id"])
        done = client.post(f"{base}/uploads/{up['id']}/complete", json={"part_ids": part_ids, "md5": md5.hexdigest()}).json()
        wall = time.perf_counter() - started
        check_s = _wait_processed(client, base, done["file"]["id"])
        peak.running = False
        peak.join()
        rows.append((f"Uploads API ({len(part_ids)} parts of 64 MB, md5)", wall, peak.peak / 2**20, check_s))
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)
        data.unlink(missing_ok=True)

    lines = [
        f"One {mb:.0f} MB chat JSONL file ({size:,} bytes), client and server on this machine (loopback).",
        f"Server RSS when idle: {idle_mb:.0f} MB. A plain copy of the file on the same disk: {copy_s:.2f} s ({mb / copy_s:.0f} MB/s).",
        "The check of a `fine-tune` file (every line parsed and checked) runs after the answer, off the request path.",
        "",
        "| path | upload wall s | MB/s | server peak RSS MB | check s |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, wall, peak_mb, check_s in rows:
        lines.append(f"| {name} | {wall:.2f} | {mb / wall:.0f} | {peak_mb:.0f} | {check_s:.1f} |")
    lines += ["", "Command: `python bench/run.py uploads` (`BENCH_UPLOAD_MB` sets the size)."]
    return "\n".join(lines) + "\n"
