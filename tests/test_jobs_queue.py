"""The job queue on a real SQLite database: transitions, atomic claims, paging, orphan recovery,
parameter checks. Milliseconds each; no server, no training."""

from __future__ import annotations

import threading

import pytest

from tunery.jobs import create, queue, states
from tunery.jobs.validate import check_job_file
from tunery.store import files as files_repo
from tunery.store.context import open_store
from tunery.store.db import now
from tunery.store.jobs import Job
from tunery.store.keys import get_or_create_project
from tunery.store.settings import load_settings


from test_store_postgres import pg_url  # noqa: E402,F401 (a throwaway PostgreSQL server, skipped if absent)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    """The same tests on SQLite and on PostgreSQL: the queue must not depend on the dialect."""
    url = request.getfixturevalue("pg_url") if request.param == "postgresql" else None
    s = open_store(load_settings(tmp_path, database_url=url))
    assert s.db.engine.dialect.name == request.param
    yield s
    if request.param == "postgresql":
        from tunery.store.db import Base

        Base.metadata.drop_all(s.db.engine)  # the next test starts from an empty database
    s.close()


@pytest.fixture
def project_id(store):
    with store.db.session_scope() as session:
        return get_or_create_project(session, "acme").id


CHAT_LINE = b'{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\n'
DPO_LINE = (b'{"input": {"messages": [{"role": "user", "content": "q"}]}, "preferred_output": [{"role": "assistant", "content": "a"}],'
            b' "non_preferred_output": [{"role": "assistant", "content": "b"}]}\n')


def add_file(store, project_id, n=12, purpose="fine-tune", status=files_repo.PROCESSED, line=CHAT_LINE, head=b"") -> str:
    with store.db.session_scope() as session:
        record = files_repo.store_file(session, store.blobs, project_id, "t.jsonl", purpose, head + line * n)
        files_repo.set_status(session, record.id, status, "Invalid file format. Line 2: bad" if status == files_repo.ERROR else None)
        return record.id


def new_job(store, project_id, fid, **kw) -> str:
    with store.db.session_scope() as session:
        return create.create_job(session, project_id, model="gpt-4o-mini", training_file=fid, **kw).id


def status(store, job_id):
    with store.db.session_scope() as session:
        return queue.status_of(session, job_id)


def test_state_machine_allows_only_the_documented_moves():
    assert states.can_transition("validating_files", "queued")
    assert states.can_transition("running", "paused") and states.can_transition("paused", "queued")
    assert not states.can_transition("succeeded", "running")
    assert not states.can_transition("queued", "succeeded")
    assert states.sources_of("cancelled") == {"validating_files", "queued", "running", "paused"}


def test_transition_is_conditional(store, project_id):
    job_id = new_job(store, project_id, add_file(store, project_id))
    with store.db.session_scope() as session:
        assert not queue.transition(session, job_id, states.RUNNING, [states.QUEUED])  # it is validating_files
        assert queue.transition(session, job_id, states.QUEUED)
        assert queue.transition(session, job_id, states.CANCELLED)
        assert not queue.transition(session, job_id, states.CANCELLED, [states.QUEUED])
        job = session.get(Job, session.scalar(queue.select(Job.seq).where(Job.id == job_id)))
        assert job.status == "cancelled" and job.finished_at is not None


def test_claims_are_first_come_first_served_and_never_double(store, project_id):
    fid = add_file(store, project_id)
    ids = [new_job(store, project_id, fid) for _ in range(6)]
    with store.db.session_scope() as session:
        for job_id in ids:
            queue.transition(session, job_id, states.QUEUED)
    claimed: list[str] = []
    lock = threading.Lock()

    def claimer(n):
        while True:
            with store.db.session_scope() as session:
                job = queue.claim_next(session, f"w{n}")
            if job is None:
                return
            with lock:
                claimed.append(job.id)

    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(ids) and len(set(claimed)) == 6
    with store.db.session_scope() as session:
        assert queue.claim_next(session, "late") is None
        assert {queue.status_of(session, j) for j in ids} == {"running"}


def test_claim_order_is_creation_order(store, project_id):
    fid = add_file(store, project_id)
    ids = [new_job(store, project_id, fid) for _ in range(3)]
    with store.db.session_scope() as session:
        for job_id in reversed(ids):
            queue.transition(session, job_id, states.QUEUED)
        assert [queue.claim_next(session, "w").id for _ in ids] == ids


def test_orphans_of_dead_workers_are_requeued_to_resume_then_failed(store, project_id):
    job_id = new_job(store, project_id, add_file(store, project_id))
    with store.db.session_scope() as session:
        queue.transition(session, job_id, states.QUEUED)
    for attempt in range(1, queue.MAX_ATTEMPTS + 1):
        with store.db.session_scope() as session:
            assert queue.claim_next(session, "otherhost:1:abc").id == job_id
            queue.update_job(session, job_id, heartbeat_at=now() - 100)
        with store.db.session_scope() as session:
            recovered = queue.recover_orphans(session, stale_after_s=30)
        if attempt < queue.MAX_ATTEMPTS:
            assert recovered == [(job_id, "queued")]
            with store.db.session_scope() as session:
                job = queue.get_job(session, project_id, job_id)
                assert job.resume and job.worker_id is None
        else:
            assert recovered == [(job_id, "failed")]
    with store.db.session_scope() as session:
        job = queue.get_job(session, project_id, job_id)
        assert job.error["code"] == "worker_lost" and "3 times" in job.error["message"]


def test_a_live_workers_job_is_left_alone(store, project_id):
    job_id = new_job(store, project_id, add_file(store, project_id))
    with store.db.session_scope() as session:
        queue.transition(session, job_id, states.QUEUED)
        queue.claim_next(session, queue.new_worker_id())  # this process: alive, fresh heartbeat
    with store.db.session_scope() as session:
        assert queue.recover_orphans(session, stale_after_s=30) == []
    assert status(store, job_id) == "running"


def test_same_host_dead_pid_is_an_orphan_without_waiting(store, project_id):
    import socket
    import subprocess

    dead = subprocess.Popen(["true"])
    dead.wait()
    job_id = new_job(store, project_id, add_file(store, project_id))
    with store.db.session_scope() as session:
        queue.transition(session, job_id, states.QUEUED)
        queue.claim_next(session, f"{socket.gethostname()}:{dead.pid}:xyz")
    with store.db.session_scope() as session:
        assert queue.recover_orphans(session, stale_after_s=3600) == [(job_id, "queued")]


def test_events_page_newest_first(store, project_id):
    job_id = new_job(store, project_id, add_file(store, project_id))
    with store.db.session_scope() as session:
        for i in range(5):
            queue.add_event(session, job_id, f"e{i}")
    with store.db.session_scope() as session:
        page, more = queue.list_events(session, job_id, limit=3)
        assert [e.message for e in page] == ["e4", "e3", "e2"] and more
        page, more = queue.list_events(session, job_id, after=page[-1].id, limit=3)
        assert [e.message for e in page] == ["e1", "e0", f"Validating training file: {queue.get_job(session, project_id, job_id).training_file}"]
        assert more  # "Created fine-tuning job" is still to come


@pytest.mark.parametrize(
    "n,file_status,code,fragment",
    [
        (3, files_repo.PROCESSED, "invalid_n_examples", "Training file has 3 example(s), but must have at least 10 examples"),
        (12, files_repo.ERROR, "invalid_file_format", "Invalid file format. Line 2: bad"),
        (12, files_repo.PROCESSED, None, None),
    ],
)
def test_file_verdicts(store, project_id, n, file_status, code, fragment):
    fid = add_file(store, project_id, n=n, status=file_status)
    with store.db.session_scope() as session:
        verdict = check_job_file(store.blobs, files_repo.get_file(session, project_id, fid), fid, "training_file")
    assert verdict.ready
    if code is None:
        assert verdict.error is None and verdict.n_examples == 12
    else:
        assert verdict.error["code"] == code and fragment in verdict.error["message"]
        assert verdict.error["param"] == "training_file"


@pytest.mark.parametrize(
    "line,method,message",
    [
        (DPO_LINE, "supervised", "Line 2: a preference (DPO) example, but method 'supervised' trains on chat or prompt/completion examples"),
        (CHAT_LINE, "dpo", "Line 2: a chat example, but method 'dpo' trains on preference (DPO) examples"),
        (DPO_LINE, "dpo", None),
    ],
)
def test_a_file_of_another_methods_format_fails_validation_naming_its_line(store, project_id, line, method, message):
    fid = add_file(store, project_id, line=line, head=b"\n")  # a blank first line: the example is line 2
    with store.db.session_scope() as session:
        verdict = check_job_file(store.blobs, files_repo.get_file(session, project_id, fid), fid, "validation_file", method)
    assert verdict.ready and verdict.n_examples == 12
    if message is None:
        assert verdict.error is None
    else:
        assert verdict.error == {"code": "invalid_file_format", "param": "validation_file",
                                 "message": f"Validation file {fid}: Invalid file format. {message}"}


def test_dpo_jobs_take_beta_and_echo_every_hyperparameter(store, project_id):
    fid = add_file(store, project_id, line=DPO_LINE)
    with store.db.session_scope() as session:
        job = create.create_job(session, project_id, model="gpt-4o-mini", training_file=fid,
                                method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2, "n_epochs": 2}}})
        assert job.method == {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2, "n_epochs": 2, "batch_size": "auto", "learning_rate_multiplier": "auto"}}}
        job = create.create_job(session, project_id, model="gpt-4o-mini", training_file=fid, method={"type": "dpo"})
        assert job.method["dpo"]["hyperparameters"] == {"beta": "auto", "n_epochs": "auto", "batch_size": "auto", "learning_rate_multiplier": "auto"}


def test_a_file_still_being_checked_is_not_ready(store, project_id):
    fid = add_file(store, project_id, status=files_repo.UPLOADED)
    with store.db.session_scope() as session:
        assert not check_job_file(store.blobs, files_repo.get_file(session, project_id, fid), fid, "training_file").ready


@pytest.mark.parametrize(
    "hp,param",
    [({"n_epochs": True}, "h.n_epochs"), ({"batch_size": 257}, "h.batch_size"), ({"max_steps": 0}, "h.max_steps"),
     ({"learning_rate_multiplier": -1}, "h.learning_rate_multiplier"), ({"lr": 1}, "h.lr")],
)
def test_hyperparameter_checks_name_the_param(hp, param):
    with pytest.raises(create.JobParamError) as info:
        create.check_hyperparameters(hp, "h")
    assert info.value.param == param


def test_hyperparameters_accept_auto_numbers_and_max_steps():
    assert create.check_hyperparameters({"n_epochs": "auto", "batch_size": 8, "learning_rate_multiplier": 0.3, "max_steps": 5}, "h") == {
        "n_epochs": "auto", "batch_size": 8, "learning_rate_multiplier": 0.3, "max_steps": 5}
