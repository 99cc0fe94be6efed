"""A full disk, through the real server and the `openai` SDK: Tunery's data folder (or its whole
home, database included) on an 8 MB tmpfs that a filler file fills up.

Each case checks the same four things: the request that could not be stored gets a 507 in
OpenAI's envelope saying the disk is full (no server path in it), or the job fails with
`disk_full`; nothing stored before is damaged (checksums of earlier files, no temp file left, the
database's integrity check); and once the filler is removed the server works again (a new upload
succeeds). Root only (mounting a tmpfs); the tests skip with the reason elsewhere.

Where the database lives: in the first two cases the data folder (`TUNERY_DATA_DIR`: blobs, job
folders, checkpoints) is on the small filesystem and the SQLite file stays in the home on the
normal disk, as when an operator puts the data on its own volume; the third case puts the whole
home there, so that SQLite itself meets the full disk.
"""

from __future__ import annotations

import random
import shutil
import sys
import time
from pathlib import Path

import openai
import pytest
from api_support import ServerProcess, chat_examples, create_key, jsonl
from fault_support import fill, small_fs, sqlite_integrity, sha256

from tunery.jobs.runner import TrainingProcess, watch
from tunery.store.blobs import BlobStore, DiskFull

pytestmark = pytest.mark.faults

MB = 1024 * 1024
FAST = {"TUNERY_WORKER_POLL_S": "0.2", "TUNERY_WORKER_HEARTBEAT_S": "1"}


@pytest.fixture
def small(tmp_path):
    with small_fs(tmp_path / "small") as folder:
        yield folder


class Running:
    """A server whose data folder (or home) is on the small filesystem, and an SDK client."""

    def __init__(self, home: Path, env: dict[str, str], args: tuple[str, ...]):
        self.home = home
        self.key = create_key(home, **env)
        self.process = ServerProcess(home, env=env, args=args).start()
        self.client = openai.OpenAI(base_url=self.process.base_url, api_key=self.key, max_retries=0, timeout=60)


@pytest.fixture
def server(request, small, tmp_path):
    """`request.param`: "data" (only the data folder on the small fs) or "home" (the database too)."""
    where, worker = request.param
    if where == "data":
        home, data = tmp_path / "home", small / "data"
        env = {"TUNERY_DATA_DIR": str(data), **FAST}
    else:
        home = small / "home"
        data, env = home / "data", dict(FAST)
    running = Running(home, env, () if worker else ("--no-worker",))
    running.data = data
    try:
        yield running
    finally:
        running.process.stop()  # before the filesystem is unmounted


def upload(client, data: bytes, name: str, purpose: str = "user_data"):
    return client.files.create(file=(name, data), purpose=purpose)


def assert_disk_full(err: openai.APIStatusError, spec, *paths: Path) -> None:
    assert err.status_code == 507, err
    body = err.response.json()
    spec.validate("ErrorResponse", body)
    error = body["error"]
    assert (error["type"], error["code"]) == ("server_error", "insufficient_storage")
    assert "disk is full" in error["message"]
    for path in paths:
        assert str(path) not in error["message"]
    assert "/" not in error["message"]


def assert_intact(client, stored: dict[str, str], data: Path) -> None:
    """Exactly the files in `stored` (id -> sha256) are listed, each with its content; no temp file."""
    listed = {f.id: f for f in client.files.list().data}
    assert set(listed) == set(stored)
    for fid, digest in stored.items():
        content = client.files.content(fid).content
        assert sha256(content) == digest and listed[fid].bytes == len(content)
    temps = [p for p in data.rglob("*.tmp")] + [p for p in data.rglob(".tmp-*")]
    assert temps == [], temps


def test_a_blob_that_does_not_fit_raises_disk_full_and_leaves_nothing(small):
    blobs = BlobStore(small / "data")
    blobs.write_bytes("files/old", b"old data")
    blobs.write_bytes("parts/p", b"p" * 40_000)
    fill(small, leave=64 * 1024)
    for write in (lambda: blobs.write_bytes("files/new", b"n" * 1024 * 1024),
                  lambda: blobs.write_stream("files/old", iter([b"x" * 65536] * 16)),
                  lambda: blobs.concat("files/joined", ["parts/p"] * 20)):
        with pytest.raises(DiskFull) as info:
            write()
        assert "/" not in str(info.value) and "disk is full" in str(info.value)
        assert sorted(p.name for p in (small / "data" / "files").iterdir()) == ["old"]
    assert blobs.path("files/old").read_bytes() == b"old data"
    (small / "filler.bin").unlink()
    assert blobs.write_bytes("files/new", b"n" * 1024 * 1024) == 1024 * 1024


# A stand-in trainer: writes a partial checkpoint until the disk is full, as the engine does.
FILLING_TRAINER = """
import os, sys
out = sys.argv[sys.argv.index("--config") + 1].rsplit("/", 1)[0] + "/out"
os.makedirs(out + "/checkpoints/.tmp-step-1", exist_ok=True)
with open(out + "/checkpoints/.tmp-step-1/weights.bin", "wb") as f:
    while True:
        f.write(b"w" * 65536)
        f.flush()
"""


def test_a_trainer_that_fills_the_disk_fails_with_disk_full_and_its_partial_checkpoint_goes(small):
    folder = small / "jobs" / "ftjob-x"
    process = TrainingProcess(folder, folder / "out", {"out_dir": str(folder / "out")},
                              command=[sys.executable, "-c", FILLING_TRAINER])
    process.start()
    outcome = watch(process, lambda records: None, lambda: None, poll_s=0.1)
    assert outcome.status == "failed" and outcome.error["code"] == "disk_full"
    assert "is full" in outcome.error["message"] and "/" not in outcome.error["message"]
    assert not (folder / "out" / "checkpoints" / ".tmp-step-1").exists()
    assert shutil.disk_usage(small).free > 7 * MB  # the space is back


def test_a_trainer_that_cannot_even_be_started_on_a_full_disk_fails_with_disk_full(small):
    folder = small / "jobs" / "ftjob-y"
    (folder / "out").mkdir(parents=True)
    fill(small)
    process = TrainingProcess(folder, folder / "out", {"out_dir": str(folder / "out"), "pad": "x" * 100_000},
                              command=[sys.executable, "-c", "raise SystemExit(0)"])
    process.start()  # config.json cannot be written
    assert process.proc is None
    outcome = watch(process, lambda records: None, lambda: None, poll_s=0.1)
    assert outcome.status == "failed" and outcome.error["code"] == "disk_full"


@pytest.mark.parametrize("server", [("data", False)], indirect=True)
def test_uploads_on_a_full_data_disk_answer_507_keep_earlier_files_and_recover(server, small, spec):
    client, rng = server.client, random.Random(507)
    stored = {}
    for i in range(3):
        data = rng.randbytes(200_000)
        stored[upload(client, data, f"earlier-{i}.bin").id] = sha256(data)

    # One POST /files larger than the space left.
    filler = fill(small, leave=256 * 1024)
    big = rng.randbytes(MB)
    with pytest.raises(openai.APIStatusError) as info:
        upload(client, big, "big.bin")
    assert_disk_full(info.value, spec, server.home, small)
    assert_intact(client, stored, server.data)

    # A part of the Uploads API larger than the space left: the upload stays pending, with no part.
    up = client.uploads.create(bytes=MB, filename="parts.bin", mime_type="application/octet-stream", purpose="user_data")
    with pytest.raises(openai.APIStatusError) as info:
        client.uploads.parts.create(up.id, data=big)
    assert_disk_full(info.value, spec, server.home, small)
    assert_intact(client, stored, server.data)

    # The part fits, the joined file does not: completing fails, the upload and its part survive.
    filler.unlink()
    fill(small, leave=int(1.5 * MB))
    part = client.uploads.parts.create(up.id, data=big)
    with pytest.raises(openai.APIStatusError) as info:
        client.uploads.complete(up.id, part_ids=[part.id])
    assert_disk_full(info.value, spec, server.home, small)
    assert_intact(client, stored, server.data)
    assert sqlite_integrity(server.home / "tunery.db") == []

    # Space freed: the same upload completes, and a new single upload succeeds.
    (small / "filler.bin").unlink()
    done = client.uploads.complete(up.id, part_ids=[part.id])
    assert done.status == "completed"
    stored[done.file.id] = sha256(big)
    again = upload(client, big, "big-again.bin")
    stored[again.id] = sha256(big)
    assert_intact(client, stored, server.data)
    assert sqlite_integrity(server.home / "tunery.db") == []
    assert "Traceback" not in server.process.output()


@pytest.mark.parametrize("server", [("home", False)], indirect=True)
def test_a_full_disk_under_the_database_answers_507_and_the_database_stays_sound(server, small, spec):
    client = server.client
    earlier = jsonl(chat_examples(20))
    stored = {upload(client, earlier, "earlier.jsonl", "fine-tune").id: sha256(earlier)}
    db = server.home / "tunery.db"
    filler = fill(small)

    # Creating an Upload writes only a database row: SQLite meets the full disk ("database or disk is full").
    full = None
    for i in range(300):
        try:
            client.uploads.create(bytes=1000, filename=f"u{i}.jsonl", mime_type="text/jsonl", purpose="fine-tune")
        except openai.APIStatusError as exc:
            full = exc
            break
    assert full is not None, "300 rows fit on a full disk: the test did not fill it"
    assert_disk_full(full, spec, server.home, small)
    with pytest.raises(openai.APIStatusError) as info:  # and a file: its blob cannot be written either
        upload(client, b"x" * 100_000, "late.bin")
    assert_disk_full(info.value, spec, server.home, small)
    assert_intact(client, stored, server.data)

    filler.unlink()
    after = client.uploads.create(bytes=3, filename="after.txt", mime_type="text/plain", purpose="user_data")
    part = client.uploads.parts.create(after.id, data=b"abc")
    stored[client.uploads.complete(after.id, part_ids=[part.id]).file.id] = sha256(b"abc")
    fresh = upload(client, b"x" * 100_000, "fresh.bin")
    stored[fresh.id] = sha256(b"x" * 100_000)
    assert_intact(client, stored, server.data)
    server.process.stop()
    assert sqlite_integrity(db) == []


@pytest.mark.slow  # loads the packaged model in a training subprocess
@pytest.mark.parametrize("server", [("data", True)], indirect=True)
def test_training_on_a_full_data_disk_fails_the_job_clearly_and_the_server_recovers(server, small, spec):
    client = server.client
    train = jsonl(chat_examples(10))
    record = upload(client, train, "train.jsonl", "fine-tune")
    stored = {record.id: sha256(train)}
    # Room for the job's config, log and events, not for a checkpoint (adapter + optimizer state).
    filler = fill(small, leave=512 * 1024)
    job = client.fine_tuning.jobs.create(
        model="gpt-4o-mini", training_file=record.id,
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1, "batch_size": 2, "max_steps": 1}}},
    )
    deadline = time.monotonic() + 300
    while (job := client.fine_tuning.jobs.retrieve(job.id)).status not in ("failed", "succeeded", "cancelled"):
        assert time.monotonic() < deadline, f"job still {job.status}"
        time.sleep(0.5)
    assert job.status == "failed", job
    assert job.error.code == "disk_full"
    assert "disk" in job.error.message and "is full" in job.error.message
    for path in (server.home, small, server.data):
        assert str(path) not in job.error.message
    events = client.fine_tuning.jobs.list_events(job.id, limit=100).data
    failed = [e for e in events if e.level == "error"]
    assert failed and "is full" in failed[0].message  # the job's own event, newest first
    for event in failed:  # the trainer's report too: no server path in any of them
        assert "No space left on device" in event.message or "is full" in event.message
        assert "/" not in event.message, event.message
    out = server.data / "jobs" / job.id / "out"
    assert list(out.rglob(".tmp-*")) == []  # the partial checkpoint is gone
    assert client.fine_tuning.jobs.checkpoints.list(job.id).data == []
    assert_intact(client, stored, server.data)
    assert sqlite_integrity(server.home / "tunery.db") == []

    filler.unlink()
    after = random.Random(1).randbytes(2 * MB)
    stored[upload(client, after, "after.bin").id] = sha256(after)
    assert_intact(client, stored, server.data)
    assert shutil.disk_usage(small).free > 4 * MB  # what the failed job left is small
