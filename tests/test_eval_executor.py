"""`RunExecutor` runs an eval run synchronously in the calling thread (what `tunery eval` uses),
on the same database tables as the server's worker; the worker leaves the CLI's runs alone."""

import pytest

from tunery.eval.run_worker import RunExecutor, catalog_source
from tunery.store import catalog
from tunery.store import evals as repo
from tunery.store.context import open_store
from tunery.store.keys import get_or_create_project
from tunery.store.settings import load_settings

CRIT = [{"type": "string_check", "name": "same", "id": "same-1", "input": "{{item.q}}", "reference": "{{item.a}}", "operation": "eq"}]


@pytest.fixture
def store(tmp_path):
    store = open_store(load_settings(tmp_path / "home"))
    with store.db.session_scope() as s:
        store.project_id = get_or_create_project(s).id
        s.add(repo.EvalRecord(id="eval_1", project_id=store.project_id, data_source_config={}, testing_criteria=CRIT))
    yield store
    store.close()


def add_run(store, run_id, rows, **extra):
    ds = {"type": "jsonl", "source": {"type": "file_content", "content": [{"item": {"q": q, "a": a}} for q, a in rows]}, **extra.pop("ds", {})}
    with store.db.session_scope() as s:
        s.add(repo.EvalRunRecord(id=run_id, eval_id="eval_1", project_id=store.project_id, data_source=ds, **extra))


def test_execute_in_process_with_progress(store):
    add_run(store, "evalrun_a", [("x", "x"), ("x", "y"), ("z", "z")])
    seen = []
    RunExecutor(store, registry=None, batch_size=2, progress=seen.append).execute("evalrun_a")
    assert seen == [2, 1]
    with store.db.session_scope() as s:
        run = repo.get_run(s, store.project_id, "eval_1", "evalrun_a")
        assert run.status == repo.COMPLETED and run.attempts == 1
        assert run.result_counts == {"total": 3, "errored": 0, "failed": 1, "passed": 2}
        assert [i.status for i in repo.run_items(s, "evalrun_a")] == ["pass", "fail", "pass"]


def test_a_model_the_resolver_does_not_know_fails_the_run(store):
    def resolve(store, project_id, model):
        raise catalog.ModelNotAvailable(model)

    add_run(store, "evalrun_m", [("x", "x")], model="nope",
            ds={"type": "completions", "model": "nope", "input_messages": {"type": "item_reference", "item_reference": "item.q"}})
    RunExecutor(store, registry=None, resolve=resolve).run("evalrun_m")
    with store.db.session_scope() as s:
        run = repo.get_run(s, store.project_id, "eval_1", "evalrun_m")
        assert run.status == repo.FAILED and run.error["code"] == "model_not_found" and "nope" in run.error["message"]


def test_worker_leaves_cli_runs_alone(store):
    add_run(store, "evalrun_server", [("x", "x")])
    add_run(store, "evalrun_cli", [("x", "x")], status=repo.IN_PROGRESS, report={"executor": repo.CLI_EXECUTOR})
    with store.db.session_scope() as s:
        assert [r.id for r in repo.runs_to_work(s)] == ["evalrun_server"]


def test_batches_are_pipelined_and_a_failed_write_leaves_nothing_generating(store):
    """The next batch is in the engine while the current one is awaited; when writing a batch
    fails, the run fails alone and the already submitted next batch is canceled. (Batch 1's rows
    do not fit the context, so it is written at once while batch 2 is still generating.)"""
    import time

    from tunery.serve.registry import ModelRegistry

    registry = ModelRegistry()
    try:
        add_run(store, "evalrun_p", [("word " * 9000, "x")] * 2 + [(f"Write a long story about the number {n}.", "x") for n in range(4)], model="SmolLM2-135M-Instruct",
                ds={"type": "completions", "model": "SmolLM2-135M-Instruct",
                    "input_messages": {"type": "template", "template": [{"role": "user", "content": "{{item.q}}"}]},
                    "sampling_params": {"max_completion_tokens": 400}})
        executor = RunExecutor(store, registry, batch_size=2)
        calls = []
        submit, collect = executor._submit, executor._collect
        executor._submit = lambda served, ds, rows: calls.append(("submit", len(rows))) or submit(served, ds, rows)
        executor._collect = lambda run_id, pending, also=None: calls.append(("collect", also is not None)) or collect(run_id, pending, also)

        def failing_write(run_id, eval_id, project_id, criteria, batch, rows, samples):
            calls.append(("write", len(samples)))
            raise OSError("disk full")

        executor._write = failing_write
        executor.run("evalrun_p")
        # Batch 2 is submitted before batch 1 is awaited; the failure stops there.
        assert calls == [("submit", 2), ("submit", 2), ("collect", True), ("write", 2)]
        engine = registry.get(catalog_source(store, store.project_id, "SmolLM2-135M-Instruct")).engine
        deadline = time.monotonic() + 2  # uncanceled, batch 2's 400 tokens would take far longer
        while engine.active and time.monotonic() < deadline:
            time.sleep(0.05)
        assert engine.active == 0
        with store.db.session_scope() as s:
            run = repo.get_run(s, store.project_id, "eval_1", "evalrun_p")
            assert run.status == repo.FAILED and run.error == {"code": "run_failed", "message": "OSError: disk full"}
            assert repo.run_items(s, "evalrun_p") == []
    finally:
        registry.close()
