"""A job's events and error are shown to clients: no server path gets into them. Milliseconds."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tunery.jobs import create, queue, states
from tunery.jobs.redact import hide_paths, hide_paths_in
from tunery.store import files as files_repo
from tunery.store.context import open_store
from tunery.store.jobs import Job
from tunery.store.keys import get_or_create_project
from tunery.store.settings import load_settings


@pytest.mark.parametrize("text, expected", [
    ("Training succeeded: adapter written to /srv/t/jobs/ftjob-1/out/adapter", "Training succeeded: adapter written to adapter"),
    ("[Errno 2] No such file or directory: '/srv/t/jobs/ftjob-1/config.json'", "[Errno 2] No such file or directory: 'config.json'"),
    ("Checkpoint /srv/t/out/checkpoints/step-3 was made with other data", "Checkpoint step-3 was made with other data"),
    ("cannot load (/root/.cache/tunery/models/smollm2/)", "cannot load (smollm2)"),
    ("see ~/tunery/train.log", "see train.log"),
    # not paths: left exactly as they are
    ("Step 3/10: training loss=0.1234", "Step 3/10: training loss=0.1234"),
    ("1,204 tokens/s, a / b, and/or", "1,204 tokens/s, a / b, and/or"),
    ("base HuggingFaceTB/SmolLM2-135M-Instruct, see https://example.com/a/b", "base HuggingFaceTB/SmolLM2-135M-Instruct, see https://example.com/a/b"),
])
def test_hide_paths(text, expected):
    assert hide_paths(text) == expected


def test_hide_paths_in_nested_data():
    data = {"path": "/a/b/checkpoints/step-2", "step": 2, "error": {"message": "in /a/b/c.json", "param": None}, "lines": ["/x/y", 3]}
    assert hide_paths_in(data) == {"path": "step-2", "step": 2, "error": {"message": "in c.json", "param": None}, "lines": ["y", 3]}


@pytest.fixture
def store(tmp_path):
    s = open_store(load_settings(tmp_path))
    yield s
    s.close()


def test_events_and_errors_are_stored_without_server_paths(store, tmp_path):
    """Whatever the trainer, a loader or Python says, the queue (the one way in) stores it path-free."""
    line = b'{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\n'
    with store.db.session_scope() as session:
        project = get_or_create_project(session, "acme").id
        fid = files_repo.store_file(session, store.blobs, project, "t.jsonl", "fine-tune", line * 12).id
        job_id = create.create_job(session, project, model="gpt-4o-mini", training_file=fid).id
    where = tmp_path / "data" / "jobs" / job_id / "out"
    with store.db.session_scope() as session:
        queue.add_event(session, job_id, f"Training succeeded: adapter written to {where / 'adapter'}",
                        data={"output_path": str(where / "adapter"), "nested": [{"path": str(where)}]})
        queue.update_job(session, job_id, error={"code": "x", "message": f"while reading {where}/config.json", "param": None})
        assert queue.transition(session, job_id, states.FAILED, error={"code": "internal_error", "param": None,
                                                                       "message": f"FileNotFoundError: '{where}/result.json'"})
    with store.db.session_scope() as session:
        job = session.scalar(select(Job).where(Job.id == job_id))
        events = [(e.message, e.data) for e in queue.list_events(session, job_id, limit=100)[0]]
        assert job.error == {"code": "internal_error", "message": "FileNotFoundError: 'result.json'", "param": None}
    assert ("Training succeeded: adapter written to adapter", {"output_path": "adapter", "nested": [{"path": "out"}]}) in events
    assert str(tmp_path) not in repr(events) + repr(job.error)
