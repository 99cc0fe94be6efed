"""Keys and projects: 401 without a valid key, and nothing of one project visible to another."""

import re
import subprocess

import httpx
import openai
import pytest
from api_support import TUNERY, ServerProcess, chat_examples, jsonl, server_env


@pytest.mark.parametrize(
    ("headers", "message", "code"),
    [
        ({}, "You didn't provide an API key.", None),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "You didn't provide an API key.", None),
        ({"Authorization": "Bearer"}, "You didn't provide an API key.", None),
        ({"Authorization": "Bearer sk-tunery-wrongwrongwrong"}, "Incorrect API key provided: sk-tuner…rong.", "invalid_api_key"),
    ],
)
def test_missing_or_bad_key_is_401(api_server, spec, headers, message, code):
    for method, path in (("GET", "/files"), ("POST", "/uploads"), ("GET", "/models"), ("DELETE", "/files/file-x")):
        r = httpx.request(method, api_server.base_url + path, headers=headers)
        assert r.status_code == 401, (method, path)
        spec.validate("ErrorResponse", r.json())
        err = r.json()["error"]
        assert err["message"].startswith(message) and (err["type"], err["code"]) == ("invalid_request_error", code)


def test_sdk_and_legacy_client_see_authentication_errors(api_server, legacy):
    client = openai.OpenAI(base_url=api_server.base_url, api_key="sk-bad", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.files.list()
    out = legacy.run(
        """
        try:
            openai.File.list()
        except openai.error.AuthenticationError as e:
            print("auth error:", e.http_status)
        """,
        key="sk-bad",
    )
    assert out.strip() == "auth error: 401"


def test_projects_are_isolated(api_server, openai_client):
    other = openai.OpenAI(base_url=api_server.base_url, api_key=api_server.new_key("other-team"), max_retries=0)
    mine = openai_client.files.create(file=("a.jsonl", jsonl(chat_examples(10))), purpose="fine-tune")
    up = openai_client.uploads.create(bytes=4, filename="u.jsonl", mime_type="text/jsonl", purpose="batch")
    part = openai_client.uploads.parts.create(up.id, data=b"abcd")
    for call in (
        lambda: other.files.retrieve(mine.id),
        lambda: other.files.content(mine.id),
        lambda: other.files.delete(mine.id),
        lambda: other.uploads.parts.create(up.id, data=b"x"),
        lambda: other.uploads.complete(up.id, part_ids=[part.id]),
        lambda: other.uploads.cancel(up.id),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    assert mine.id not in [f.id for f in other.files.list()]
    assert openai_client.files.retrieve(mine.id).id == mine.id  # untouched
    assert openai_client.uploads.complete(up.id, part_ids=[part.id]).status == "completed"


def test_keys_create_prints_only_the_key(tmp_path):
    out = subprocess.run([TUNERY, "keys", "create", "--project", "research"], env=server_env(tmp_path),
                         capture_output=True, text=True, check=True)
    assert re.fullmatch(r"sk-tunery-[A-Za-z0-9]{48}\n", out.stdout)
    bad = subprocess.run([TUNERY, "keys", "create", "--project", " "], env=server_env(tmp_path), capture_output=True, text=True)
    assert (bad.returncode, bad.stdout, bad.stderr.strip()) == (2, "", "error: --project must not be empty")


def test_first_start_creates_and_prints_one_key(tmp_path):
    server = ServerProcess(tmp_path).start()
    try:
        keys = re.findall(r"^(sk-tunery-\S+)$", server.output(), re.M)
        assert len(keys) == 1
        assert httpx.get(f"{server.base_url}/files", headers={"Authorization": f"Bearer {keys[0]}"}).status_code == 200
    finally:
        server.stop()
    again = ServerProcess(tmp_path).start()  # a key exists now: none is created
    again.stop()
    assert "sk-tunery-" not in again.output() and "Tunery API on" in again.output()
