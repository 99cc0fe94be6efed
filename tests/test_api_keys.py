"""`tunery keys list` and `tunery keys revoke` against a running server: listings never show a
whole key, and a revoked key is refused (401) from the very next request."""

from __future__ import annotations

import json
import subprocess
import time

import httpx
import openai
import pytest
from api_support import TUNERY, ServerProcess, create_key, server_env


def keys(home, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([TUNERY, "keys", *args], env=server_env(home), capture_output=True, text=True, timeout=60)


def listing(home) -> dict[str, dict]:
    out = keys(home, "list", "--json")
    assert out.returncode == 0, out.stderr
    return {k["project"]: k for k in json.loads(out.stdout)}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("keys")
    create_key(home, "first")
    process = ServerProcess(home, args=("--no-worker",)).start()
    yield process
    process.stop()


def status(server, key: str) -> int:
    return httpx.get(f"{server.base_url}/files", headers={"Authorization": f"Bearer {key}"}).status_code


def test_list_shows_hints_projects_and_last_use_never_keys(server):
    alpha, beta = create_key(server.home, "alpha"), create_key(server.home, "beta")
    assert status(server, alpha) == 200
    table = keys(server.home, "list")
    assert table.returncode == 0
    assert alpha not in table.stdout and beta not in table.stdout
    assert f"{alpha[:14]}…{alpha[-4:]}" in table.stdout and "alpha" in table.stdout and "beta" in table.stdout
    rows = listing(server.home)
    assert rows["alpha"]["display"] == f"{alpha[:14]}…{alpha[-4:]}" and rows["alpha"]["id"].startswith("key_")
    assert abs(rows["alpha"]["last_used_at"] - time.time()) < 60 and rows["beta"]["last_used_at"] is None
    assert rows["alpha"]["revoked_at"] is None and rows["beta"]["created_at"] <= time.time()
    only = json.loads(keys(server.home, "list", "--json", "--project", "beta").stdout)
    assert [k["project"] for k in only] == ["beta"]


def test_revoked_key_is_refused_at_once_by_the_running_server(server):
    gamma, delta = create_key(server.home, "gamma"), create_key(server.home, "delta")
    client = openai.OpenAI(base_url=server.base_url, api_key=gamma, max_retries=0)
    assert client.files.list().data == []
    out = keys(server.home, "revoke", gamma[:14])  # the hint as listed, up to its "…"
    gamma_id = listing(server.home)["gamma"]["id"]
    assert (out.returncode, out.stdout.strip()) == (0, f"revoked {gamma_id} ({gamma[:14]}…{gamma[-4:]})")
    assert gamma not in out.stdout + out.stderr
    with pytest.raises(openai.AuthenticationError) as info:
        client.files.list()
    assert info.value.body["code"] == "invalid_api_key"
    assert status(server, delta) == 200  # other keys are untouched
    assert listing(server.home)["gamma"]["revoked_at"] is not None
    again = keys(server.home, "revoke", gamma_id)
    assert (again.returncode, again.stdout.strip()) == (0, f"{gamma_id} ({gamma[:14]}…{gamma[-4:]}) was already revoked")
    assert keys(server.home, "revoke", delta).returncode == 0  # the whole key names it too
    assert status(server, delta) == 401


def test_revoke_names_exactly_one_key(server):
    missing = keys(server.home, "revoke", "key_doesnotexist")
    assert (missing.returncode, missing.stderr.strip()) == (1, "error: no key matches 'key_doesnotexist'")
    short = keys(server.home, "revoke", "sk-tunery-a")
    assert short.returncode == 1 and "at least 4 characters" in short.stderr
    # two keys whose hints share a prefix (1 in 62**4 per pair: it happens among thousands of keys)
    from sqlalchemy import select

    from tunery.store.context import open_store
    from tunery.store.keys import ApiKey
    from tunery.store.settings import load_settings

    one, two = create_key(server.home, "twin-1"), create_key(server.home, "twin-2")
    store = open_store(load_settings(server.home))
    try:
        with store.db.session_scope() as session:
            for key in session.scalars(select(ApiKey).where(ApiKey.display.in_([f"{k[:14]}…{k[-4:]}" for k in (one, two)]))):
                key.display = "sk-tunery-Twin" + key.display[14:]
    finally:
        store.close()
    both = keys(server.home, "revoke", "sk-tunery-Twin")
    assert both.returncode == 1 and "matches 2 keys" in both.stderr
    assert status(server, one) == 200 and status(server, two) == 200  # nothing was revoked
