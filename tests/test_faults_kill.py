"""SIGKILL under load: concurrent `openai` SDK clients upload files (one request, and the Uploads
API in parts), create and cancel fine-tuning jobs and chat, while `tunery serve` (a real
subprocess, its worker and training subprocesses with it) is killed with SIGKILL at seeded random
moments and started again. Then, on a last clean start:

- every acknowledged file is listed and its content has the sha256 of what was sent; every listed
  file (acknowledged or not: a kill can land between the commit and the answer) has its whole
  content, and no temp file shows as a file;
- every acknowledged job exists, with its training file and a consistent status (an acknowledged
  cancel stays cancelled; terminal jobs have `finished_at`, failed ones an `error`, succeeded ones
  a model and their result file) and its events (its creation recorded exactly once);
- the database passes its integrity check, right after every kill and at the end (SQLite:
  `PRAGMA integrity_check` and `foreign_key_check`; PostgreSQL: amcheck where installed).

The same against PostgreSQL (a throwaway server from the local binaries; skipped without them).
Seeded (`TUNERY_FAULT_SEED`, default 14) and bounded (`TUNERY_FAULT_KILLS` kills, default 4); the
figures of the run are printed as one `fault figures:` line (`pytest -s` shows it).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai
import pytest
from api_support import ServerProcess, chat_examples, create_key, free_port, jsonl
from fault_support import postgres_integrity, sha256, sqlite_integrity
from test_store_postgres import pg_url  # noqa: F401  (the fixture: a throwaway PostgreSQL server)

pytestmark = [pytest.mark.faults, pytest.mark.slow]  # slow: it chats with the packaged model

SEED = int(os.environ.get("TUNERY_FAULT_SEED", "14"))
KILLS = int(os.environ.get("TUNERY_FAULT_KILLS", "4"))
ENV = {
    "TUNERY_WORKER_POLL_S": "0.3",
    "TUNERY_WORKER_HEARTBEAT_S": "1",
    "TUNERY_WORKER_CONCURRENCY": "1",  # one training subprocess at a time: 2 cores are shared
}
TERMINAL = {"succeeded", "failed", "cancelled"}
STATUSES = TERMINAL | {"validating_files", "queued", "running", "paused"}
JOB_METHOD = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1, "batch_size": 2, "max_steps": 1}}}


@dataclass
class Ledger:
    """What the clients sent and what the server acknowledged (thread-safe enough: GIL + lock)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    sent_by_name: dict[str, str] = field(default_factory=dict)  # filename -> sha256 of what was sent
    files: dict[str, str] = field(default_factory=dict)  # acknowledged file id -> sha256
    training_files: list[str] = field(default_factory=list)
    jobs: dict[str, str] = field(default_factory=dict)  # acknowledged job id -> training file
    cancelled: set[str] = field(default_factory=set)  # acknowledged cancels
    requests: int = 0
    acknowledged: int = 0
    refused: int = 0  # connection refused/reset or timed out: the server was down or died mid-request
    errors: list[str] = field(default_factory=list)  # any HTTP error answer (none is expected)
    chats: int = 0

    def call(self, fn, *args, _expect_400: bool = False, **kwargs):
        """Run one SDK call; returns its result, or None when the server was down or died.
        `_expect_400`: a 400 is raised to the caller (which judges it) instead of counted as an error."""
        with self.lock:
            self.requests += 1
        try:
            result = fn(*args, **kwargs)
        except (openai.APIConnectionError, openai.APITimeoutError):
            with self.lock:
                self.refused += 1
            return None
        except openai.APIStatusError as exc:
            if _expect_400 and exc.status_code == 400:
                with self.lock:
                    self.acknowledged += 1
                raise
            with self.lock:
                self.errors.append(f"{exc.status_code} {exc.response.text[:300]}")
            return None
        with self.lock:
            self.acknowledged += 1
        return result


def _clients(base_url: str, key: str, ledger: Ledger, stop: threading.Event, seed: int) -> list[threading.Thread]:
    def client():
        return openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=60)

    def pause(rng, low=0.05, high=0.4):
        stop.wait(rng.uniform(low, high))

    def single_uploads(n: int):
        rng, c, i = random.Random(seed * 100 + n), client(), 0
        while not stop.is_set():
            i += 1
            name = f"single-{n}-{i}.jsonl"
            if rng.random() < 0.5:
                purpose, data = "fine-tune", jsonl(chat_examples(rng.randint(10, 40)) + [{"messages": [
                    {"role": "user", "content": f"{name} {rng.random()}"}, {"role": "assistant", "content": "ok"}]}])
            else:
                purpose, data = "user_data", rng.randbytes(rng.randint(1, 400_000))
            ledger.sent_by_name[name] = sha256(data)
            f = ledger.call(c.files.create, file=(name, data), purpose=purpose)
            if f is not None:
                with ledger.lock:
                    ledger.files[f.id] = sha256(data)
                    if purpose == "fine-tune":
                        ledger.training_files.append(f.id)
            pause(rng)

    def part_uploads():
        rng, c, i = random.Random(seed * 100 + 50), client(), 0
        while not stop.is_set():
            i += 1
            name = f"parts-{i}.bin"
            data = rng.randbytes(rng.randint(3, 600_000))
            cuts = sorted(rng.sample(range(1, len(data)), min(2, len(data) - 1)))
            pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]
            ledger.sent_by_name[name] = sha256(data)
            up = ledger.call(c.uploads.create, bytes=len(data), filename=name, mime_type="application/octet-stream", purpose="user_data")
            if up is None:
                pause(rng)
                continue
            ids = []
            for piece in pieces:
                part = ledger.call(c.uploads.parts.create, up.id, data=piece)
                if part is None:
                    break
                ids.append(part.id)
            if len(ids) == len(pieces):
                done = ledger.call(c.uploads.complete, up.id, part_ids=ids, md5=hashlib.md5(data).hexdigest())
                if done is not None:
                    assert done.status == "completed" and done.file is not None
                    with ledger.lock:
                        ledger.files[done.file.id] = sha256(data)
            pause(rng)

    def jobs():
        rng, c = random.Random(seed * 100 + 70), client()
        while not stop.is_set():
            with ledger.lock:
                choices = list(ledger.training_files)
            if not choices:
                pause(rng)
                continue
            training = rng.choice(choices)
            job = ledger.call(c.fine_tuning.jobs.create, model="gpt-4o-mini", training_file=training, method=JOB_METHOD)
            if job is None:
                pause(rng)
                continue
            with ledger.lock:
                ledger.jobs[job.id] = training
            pause(rng, 0.0, 2.5)  # cancelled while validating, queued or running
            try:
                cancelled = ledger.call(c.fine_tuning.jobs.cancel, job.id, _expect_400=True)
            except openai.BadRequestError as exc:  # only right when the job had already ended
                now = ledger.call(c.fine_tuning.jobs.retrieve, job.id)
                if now is not None and now.status not in TERMINAL:
                    with ledger.lock:
                        ledger.errors.append(f"cancel refused for a {now.status} job: {exc.message}")
                cancelled = None
            if cancelled is not None:
                assert cancelled.status == "cancelled"
                with ledger.lock:
                    ledger.cancelled.add(job.id)
            pause(rng)

    def chats():
        rng, c = random.Random(seed * 100 + 90), client()
        while not stop.is_set():
            reply = ledger.call(c.chat.completions.create, model="gpt-4o-mini", max_tokens=2,
                                messages=[{"role": "user", "content": f"Say a number {rng.randint(0, 99)}"}])
            if reply is not None:
                assert reply.choices[0].message.content is not None and reply.usage.completion_tokens >= 1
                with ledger.lock:
                    ledger.chats += 1
            pause(rng, 0.5, 1.5)

    def guarded(target):
        def run():
            try:
                target()
            except BaseException as exc:  # noqa: BLE001 - a client's own failure fails the test
                with ledger.lock:
                    ledger.errors.append(f"client {target.__name__}: {type(exc).__name__}: {exc}")
        return run

    targets = [lambda: single_uploads(0), lambda: single_uploads(1), part_uploads, jobs, chats]
    return [threading.Thread(target=guarded(t), daemon=True) for t in targets]


def _wait_until_up(base_url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{base_url}/models", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise AssertionError("the server did not come back")


def campaign(home: Path, env: dict[str, str], db_check) -> dict:
    rng = random.Random(SEED)
    key = create_key(home, **env)
    port = free_port()
    ledger, stop = Ledger(), threading.Event()
    server = ServerProcess(home, env={**ENV, **env}, port=port).start()
    base_url = server.base_url
    c = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=120)
    seed_file = c.files.create(file=("seed.jsonl", jsonl(chat_examples(12))), purpose="fine-tune")
    ledger.files[seed_file.id] = sha256(jsonl(chat_examples(12)))
    ledger.training_files.append(seed_file.id)
    threads = _clients(base_url, key, ledger, stop, SEED)
    for t in threads:
        t.start()
    kills, started, restarts = 0, time.monotonic(), []
    try:
        for _ in range(KILLS):
            stop.wait(rng.uniform(2.0, 6.0))  # the server runs under load for a while ...
            server.proc.kill()  # ... and dies without warning (its trainer dies with it)
            server.proc.wait(10)
            server.stop()
            kills += 1
            db_check()  # the database as the kill left it
            stop.wait(rng.uniform(0.0, 0.5))
            t0 = time.monotonic()
            server = ServerProcess(home, env={**ENV, **env}, port=port).start()
            restarts.append(round(time.monotonic() - t0, 1))
        stop.wait(rng.uniform(1.0, 3.0))
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    loaded = round(time.monotonic() - started, 1)
    try:
        assert not any(t.is_alive() for t in threads), "a client is stuck"
        figures = verify(c, ledger, home, env)
        figures.update(kills=kills, seconds_under_load=loaded, restart_seconds=restarts,
                       seconds_verifying=round(time.monotonic() - started - loaded, 1))
    finally:
        server.stop()
    figures["database"] = f"{db_check()} after each of the {kills} kills and at the end"
    return figures


def _all_jobs(c) -> list:
    jobs, after = [], None
    while True:
        page = c.fine_tuning.jobs.list(limit=100, after=after) if after else c.fine_tuning.jobs.list(limit=100)
        jobs += page.data
        if not page.has_more:
            return jobs
        after = page.data[-1].id


def verify(c, ledger: Ledger, home: Path, env: dict[str, str]) -> dict:
    """The checks of the module doc on the restarted server; returns the figures."""
    assert ledger.errors == [], ledger.errors[:5]
    lost = []
    # Files: acknowledged ones intact; every listed one whole (and, when its name says what was sent, intact too).
    listed = {f.id: f for f in c.files.list().data}
    for fid, digest in ledger.files.items():
        if fid not in listed:
            lost.append(f"file {fid} is gone")
        elif sha256(c.files.content(fid).content) != digest:
            lost.append(f"file {fid} differs from what was sent")
    unacknowledged = 0
    for fid, f in listed.items():
        content = c.files.content(fid).content
        assert len(content) == f.bytes, f"{fid} is listed with {f.bytes} bytes but holds {len(content)}"
        if f.filename in ledger.sent_by_name:
            assert sha256(content) == ledger.sent_by_name[f.filename], f"{fid} ({f.filename}) is not what was sent"
        unacknowledged += fid not in ledger.files
    data = Path(env.get("TUNERY_DATA_DIR") or home / "data")
    on_disk = [p.name for p in (data / "files").iterdir()]
    blobs = {name for name in on_disk if not name.startswith(".")}
    assert set(listed) <= blobs
    # A kill mid-write leaves a temp file, one between the blob's rename and its row a blob
    # without a row: neither is ever listed or served (temps are swept a day later).
    temps = [name for name in on_disk if name.startswith(".")]
    orphans = blobs - set(listed)

    # The server still answers a chat after the kills (during the load, most chats die with it).
    reply = c.chat.completions.create(model="gpt-4o-mini", max_tokens=2, messages=[{"role": "user", "content": "Hi"}])
    assert reply.usage.completion_tokens >= 1

    # Jobs: stop what still runs, wait for the worker to settle, then check each one.
    for job in _all_jobs(c):
        if job.status not in TERMINAL:
            try:
                c.fine_tuning.jobs.cancel(job.id)
            except openai.BadRequestError:  # it finished meanwhile
                pass
    deadline = time.monotonic() + 90
    while True:
        jobs = _all_jobs(c)
        live = [(j.id, j.status) for j in jobs if j.status not in TERMINAL]
        if not live:
            break
        assert time.monotonic() < deadline, live
        time.sleep(0.5)
    by_id = {j.id: j for j in jobs}
    statuses: dict[str, int] = {}
    failures: dict[str, int] = {}
    for job_id, training in ledger.jobs.items():
        if job_id not in by_id:
            lost.append(f"job {job_id} is gone")
            continue
        job = by_id[job_id]
        if job.training_file != training:
            lost.append(f"job {job_id} lost its training file")
        if job_id in ledger.cancelled and job.status != "cancelled":
            lost.append(f"job {job_id}: its cancel was acknowledged, yet it is {job.status}")
    for job in jobs:
        statuses[job.status] = statuses.get(job.status, 0) + 1
        assert job.status in STATUSES and job.finished_at is not None, job
        if job.status == "failed":
            assert job.error is not None and job.error.message, job
            failures[job.error.code] = failures.get(job.error.code, 0) + 1
        if job.status == "succeeded":
            assert job.fine_tuned_model and job.result_files, job
            assert c.files.content(job.result_files[0]).content.startswith(b"step,")
        events = c.fine_tuning.jobs.list_events(job.id, limit=1000).data
        created = [e for e in events if e.message == f"Created fine-tuning job: {job.id}"]
        assert len(created) == 1, (job.id, [e.message for e in events])
        assert len({e.id for e in events}) == len(events)
        if job.status == "cancelled":
            assert any(e.message == "Fine-tuning job cancelled." for e in events), (job.id, [e.message for e in events])
    assert lost == [], lost
    return {
        "requests": ledger.requests,
        "acknowledged": ledger.acknowledged,
        "refused_while_down": ledger.refused,
        "files_checked": len(listed),
        "files_acknowledged": len(ledger.files),
        "files_unacknowledged_but_stored": unacknowledged,
        "temp_files_left_unlisted": len(temps),
        "blobs_without_row_unlisted": len(orphans),
        "jobs_checked": len(jobs),
        "jobs_acknowledged": len(ledger.jobs),
        "cancels_acknowledged": len(ledger.cancelled),
        "job_statuses": statuses,
        "job_failure_codes": failures,
        "chats_answered_under_load": ledger.chats,
        "data_lost": len(lost),
    }


def _report(name: str, figures: dict) -> None:
    print(f"\nfault figures: {name}: {json.dumps(figures)}")


def test_sigkill_under_load_loses_nothing_on_sqlite(tmp_path):
    home = tmp_path / "home"

    def check() -> str:
        problems = sqlite_integrity(home / "tunery.db")
        assert problems == [], problems
        return "sqlite: integrity_check ok, foreign_key_check empty"

    figures = campaign(home, {}, check)
    _report("sqlite", figures)
    assert figures["kills"] == KILLS and figures["data_lost"] == 0
    assert figures["files_acknowledged"] > KILLS and figures["jobs_acknowledged"] >= 1  # the load did happen


def test_sigkill_under_load_loses_nothing_on_postgres(tmp_path, pg_url):  # noqa: F811
    home = tmp_path / "home"

    def check() -> str:
        problems, what = postgres_integrity(pg_url)
        assert problems == [], problems
        return f"postgresql: {what}: ok"

    figures = campaign(home, {"TUNERY_DATABASE_URL": pg_url}, check)
    _report("postgresql", figures)
    assert figures["kills"] == KILLS and figures["data_lost"] == 0
    assert figures["files_acknowledged"] > KILLS and figures["jobs_acknowledged"] >= 1
