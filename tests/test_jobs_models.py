"""Fine-tuned models and checkpoints as models (the `/v1/models` and serving hooks), on a real
SQLite database with real weight folders; no training."""

from __future__ import annotations

import pytest

from tunery.jobs import models, queue, states
from tunery.store.context import open_store
from tunery.store.jobs import Job
from tunery.store.keys import get_or_create_project
from tunery.store.settings import load_settings


@pytest.fixture
def store(tmp_path):
    s = open_store(load_settings(tmp_path))
    yield s
    s.close()


def succeeded_job(store, tmp_path, project_id, name, steps=(1, 2)):
    weights = tmp_path / name / "adapter"
    weights.mkdir(parents=True)
    with store.db.session_scope() as session:
        job = Job(id=queue.new_job_id(), project_id=project_id, model="gpt-4o-mini", training_file="file-x", seed=1,
                  method={"type": "supervised"}, hyperparameters={}, options={}, status=states.SUCCEEDED,
                  fine_tuned_model=f"ft:gpt-4o-mini:acme::{name}", weights_path=str(weights), finished_at=100)
        session.add(job)
        session.flush()
        for step in steps:
            path = tmp_path / name / f"step-{step}"
            path.mkdir()
            queue.add_checkpoint(session, job, step, str(path), {"train_loss": 1.0}, 1, f"{job.fine_tuned_model}:ckpt-step-{step}")
        return job.fine_tuned_model, weights


def test_list_find_and_delete_fine_tuned_models(store, tmp_path):
    with store.db.session_scope() as session:
        acme, other = get_or_create_project(session, "acme").id, get_or_create_project(session, "other").id
    name, weights = succeeded_job(store, tmp_path, acme, "job1")
    with store.db.session_scope() as session:
        listed = models.list_fine_tuned(session, acme)
        assert [m["id"] for m in listed] == [name, f"{name}:ckpt-step-1", f"{name}:ckpt-step-2"]
        assert listed[0] == {"id": name, "created": 100, "owned_by": acme}
        assert models.list_fine_tuned(session, other) == []  # another project's models are invisible
        found = models.find_fine_tuned(session, acme, f"{name}:ckpt-step-2")
        assert found.step == 2 and found.weights_path.endswith("step-2") and found.base_model == "gpt-4o-mini"
        assert models.find_fine_tuned(session, other, name) is None
        assert not models.delete_fine_tuned(store, session, other, name)
    with store.db.session_scope() as session:
        assert models.delete_fine_tuned(store, session, acme, f"{name}:ckpt-step-1")
        assert models.delete_fine_tuned(store, session, acme, name)
    assert not weights.exists() and not (tmp_path / "job1" / "step-1").exists()
    assert (tmp_path / "job1" / "step-2").exists()
    with store.db.session_scope() as session:
        assert [m["id"] for m in models.list_fine_tuned(session, acme)] == [f"{name}:ckpt-step-2"]
        assert not models.delete_fine_tuned(store, session, acme, name)  # already gone


def test_rotated_checkpoints_drop_out_of_listings(store, tmp_path):
    with store.db.session_scope() as session:
        acme = get_or_create_project(session, "acme").id
    name, _ = succeeded_job(store, tmp_path, acme, "job2", steps=(1, 2, 3))
    (tmp_path / "job2" / "step-1").rmdir()  # the trainer keeps only its newest checkpoints
    with store.db.session_scope() as session:
        job_id = session.scalar(queue.select(Job.id).where(Job.fine_tuned_model == name))
        queue.forget_missing_checkpoints(session, job_id)
    with store.db.session_scope() as session:
        rows, more = queue.list_checkpoints(session, job_id)
        assert [c.step for c in rows] == [3, 2] and not more
        assert f"{name}:ckpt-step-1" not in [m["id"] for m in models.list_fine_tuned(session, acme)]
