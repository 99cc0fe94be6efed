"""A run interrupted by a SIGKILL of the server resumes when the server starts again: every row
gets exactly one output item and the counts add up over both lives of the run."""

from __future__ import annotations

import time

import openai

from api_support import ServerProcess, create_key, free_port
from fault_support import sqlite_integrity

SCHEMA = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}
ROWS = 24


def test_run_resumes_after_sigkill(tmp_path):
    home, port = tmp_path / "home", free_port()
    key = create_key(home)
    server = ServerProcess(home, port=port, env={"TUNERY_EVAL_BATCH": "8"}).start()
    try:
        client = openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0)
        ev = client.evals.create(name="restart", data_source_config={"type": "custom", "item_schema": SCHEMA},
                                 testing_criteria=[{"type": "string_check", "name": "any", "input": "{{sample.output_text}}", "reference": "", "operation": "like"}])
        run = client.evals.runs.create(ev.id, data_source={
            "type": "completions", "model": "gpt-4o-mini",
            "source": {"type": "file_content", "content": [{"item": {"q": f"Write a story number {i}."}} for i in range(ROWS)]},
            "input_messages": {"type": "template", "template": [{"role": "user", "content": "{{item.q}}"}]},
            "sampling_params": {"max_completion_tokens": 24}})
        # Kill once the first batch is written and before the run is done (batches of 32 > ROWS would finish at once:
        # the test server runs batches of 8, see TUNERY_EVAL_BATCH below).
        deadline = time.time() + 240
        while time.time() < deadline:
            got = client.evals.runs.retrieve(run.id, eval_id=ev.id)
            if got.result_counts.total > 0:
                break
            time.sleep(0.2)
        before = got.result_counts.total
        assert 0 < before < ROWS, f"the kill came too late ({before} items)"
        server.proc.kill()
        server.proc.wait()
        server.proc = None
        assert sqlite_integrity(home / "tunery.db") == []  # the database as the kill left it
        server = ServerProcess(home, port=port, env={"TUNERY_EVAL_BATCH": "8"}).start()
        client = openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0)
        deadline = time.time() + 120
        while time.time() < deadline:
            got = client.evals.runs.retrieve(run.id, eval_id=ev.id)
            if got.status in ("completed", "failed", "canceled"):
                break
            time.sleep(0.5)
        assert got.status == "completed", got.error
        assert got.result_counts.total == ROWS and got.result_counts.passed == ROWS
        items = client.evals.runs.output_items.list(run.id, eval_id=ev.id, limit=100).data
        assert sorted(i.datasource_item_id for i in items) == list(range(ROWS))
        assert got.per_model_usage[0].invocation_count == ROWS
    finally:
        server.stop()
