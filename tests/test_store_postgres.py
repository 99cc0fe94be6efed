"""The same store and server on PostgreSQL: a throwaway server is started from the local binaries
(skipped where PostgreSQL or psycopg is not installed)."""

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import openai
import pytest
from api_support import ServerProcess, chat_examples, free_port, jsonl
from sqlalchemy import select, text

from tunery.store import files
from tunery.store.context import open_store
from tunery.store.keys import Project, create_key, project_for_key
from tunery.store.settings import load_settings


def _binary(name):
    return shutil.which(name) or next(
        (p for p in (f"/usr/local/bin/{name}", f"/usr/lib/postgresql/15/bin/{name}") if os.path.exists(p)), None
    )


@pytest.fixture(scope="module")
def pg_url():
    pytest.importorskip("psycopg")
    initdb, postgres = _binary("initdb"), _binary("postgres")
    if not (initdb and postgres):
        pytest.skip("PostgreSQL binaries are not installed")
    root = Path(tempfile.mkdtemp(prefix="tunery-pg-"))  # not under pytest's root-only folder
    # PostgreSQL refuses to run as root: run it as `nobody` when the tests are root.
    as_user = ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(root, "nobody")
    subprocess.run([*as_user, initdb, "-D", str(root / "db"), "-U", "tunery", "--auth=trust"], check=True, capture_output=True)
    port = free_port()
    proc = subprocess.Popen(
        [*as_user, postgres, "-D", str(root / "db"), "-k", str(root), "-p", str(port), "-c", "listen_addresses=",
         "-c", "fsync=off"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"postgresql+psycopg://tunery@/postgres?host={root}&port={port}"
    deadline = time.monotonic() + 60
    while not (root / f".s.PGSQL.{port}").exists():
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail("PostgreSQL did not start")
        time.sleep(0.1)
    time.sleep(0.3)
    yield url
    proc.terminate()
    proc.wait(30)
    shutil.rmtree(root, ignore_errors=True)


def test_store_on_postgres(pg_url, tmp_path):
    store = open_store(load_settings(tmp_path, database_url=pg_url))
    try:
        with store.db.engine.connect() as conn:
            assert conn.execute(text("select 1")).scalar() == 1
            assert store.db.engine.dialect.name == "postgresql"
        with store.db.session_scope() as s:
            key = create_key(s, "pg")
            project = s.scalar(select(Project).where(Project.name == "pg"))
            ids = []
            for i in range(3):
                rec = files.add_file(s, project.id, files.new_file_id(), f"{i}.jsonl", "batch", i)
                rec.created_at = 100 + i
                ids.append(rec.id)
        with store.db.session_scope() as s:
            assert project_for_key(s, key).name == "pg"
            page, more = files.list_files(s, project.id, limit=2)
            assert ([r.id for r in page], more) == ([ids[2], ids[1]], True)
            assert [r.id for r in files.list_files(s, project.id, after=ids[1])[0]] == [ids[0]]
    finally:
        store.close()


def test_server_on_postgres(pg_url, tmp_path):
    from api_support import create_key as cli_key

    env = {"TUNERY_DATABASE_URL": pg_url}
    key = cli_key(tmp_path, "pg-server", **env)
    server = ServerProcess(tmp_path, env=env, args=("--no-worker",)).start()
    try:
        client = openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0)
        data = jsonl(chat_examples(10))
        f = client.files.create(file=("t.jsonl", data), purpose="fine-tune")
        assert f.status == "processed"
        up = client.uploads.create(bytes=len(data), filename="u.jsonl", mime_type="text/jsonl", purpose="fine-tune")
        part = client.uploads.parts.create(up.id, data=data)
        done = client.uploads.complete(up.id, part_ids=[part.id])
        assert {x.id for x in client.files.list()} == {f.id, done.file.id}
        assert client.files.content(done.file.id).content == data
    finally:
        server.stop()
