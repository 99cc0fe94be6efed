"""What a remote client may name as `model`, through a real `tunery serve` and real clients:
configured aliases, registered base models (`tunery models add`), OpenAI names (by rule), the
project's fine-tunes. Paths, Hugging Face ids, .gguf files and other projects' models answer one
and the same 404, whether or not such a thing exists on the server; `model: ""` is a 400."""

from __future__ import annotations

import json
import subprocess

import httpx
import openai
import pytest
from api_support import TUNERY, ServerProcess, chat_examples, create_key, jsonl, server_env
from serve_fixtures import random_lora, save_base
from serve_server import FT, register_fine_tune

MESSAGES = [{"role": "user", "content": "hello world"}]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("names")
    base = save_base(root / "base")
    adapter = random_lora(base, root / "job" / "adapter", seed=1)
    (root / "weights.gguf").write_bytes(b"GGUF not really")
    # Every OpenAI name means the alias "tiny" here (the rule's setting), to keep the test on the tiny model.
    extra = {"TUNERY_MODEL_ALIASES": json.dumps({"tiny": str(base)}), "TUNERY_OPENAI_MODELS_TARGET": "tiny"}
    home = root / "home"
    key = create_key(home, **extra)
    other = create_key(home, "other", **extra)
    register_fine_tune(home, key, FT, adapter)
    process = ServerProcess(home, args=("--no-worker",), env=extra).start()
    yield {"root": root, "base": base, "home": home, "key": key, "other": other, "process": process, "extra": extra}
    process.stop()


@pytest.fixture(scope="module")
def client(env):
    return openai.OpenAI(base_url=env["process"].base_url, api_key=env["key"], max_retries=0)


@pytest.fixture(scope="module")
def training_file(client):
    return client.files.create(file=("train.jsonl", jsonl(chat_examples(10))), purpose="fine-tune").id


def not_found(name: str, param: str = "model") -> dict:
    return {"error": {"message": f"The model `{name}` does not exist or you do not have access to it.",
                      "type": "invalid_request_error", "param": param, "code": "model_not_found"}}


def requests(name, training_file):
    """(path, body, the param an error names) of every request that names a model."""
    return [
        ("/chat/completions", {"model": name, "messages": MESSAGES, "max_tokens": 2}, "model"),
        ("/completions", {"model": name, "prompt": "hello", "max_tokens": 2}, "model"),
        ("/fine_tuning/jobs", {"model": name, "training_file": training_file}, "model"),
        ("/fine-tunes", {"model": name, "training_file": training_file}, "model"),
    ]


def post(env, path, body, key=None):
    return httpx.post(env["process"].base_url + path, json=body, headers={"Authorization": f"Bearer {key or env['key']}"}, timeout=120)


def hostile_names(env) -> list[str]:
    root, base = env["root"], env["base"]
    return [
        str(base),  # an existing Hugging Face folder (config.json and weights)
        str(root / "no-such-folder"),  # the same, absent
        str(root / "weights.gguf"),  # an existing .gguf file
        str(root / "missing.gguf"),
        "../" * 6 + str(base).lstrip("/"),  # relative, climbing out
        "../base",
        "~/models/x",
        "HuggingFaceTB/SmolLM2-360M-Instruct",  # an arbitrary Hugging Face id
        "org/name",
        "ft:tiny:default:nope:ftjob-missing",
        "no-such-model",
        "default",
    ]


@pytest.mark.parametrize("endpoint", range(4))
def test_paths_ids_and_unknown_names_all_answer_the_same_404(env, training_file, endpoint):
    for name in hostile_names(env):
        path, body, param = requests(name, training_file)[endpoint]
        r = post(env, path, body)
        assert (r.status_code, r.json()) == (404, not_found(name, param)), (path, name, r.text)
        assert str(env["home"]) not in r.text


@pytest.mark.parametrize("endpoint", range(4))
def test_another_projects_fine_tune_is_the_same_404(env, endpoint):
    other = openai.OpenAI(base_url=env["process"].base_url, api_key=env["other"], max_retries=0)
    own_file = other.files.create(file=("train.jsonl", jsonl(chat_examples(10))), purpose="fine-tune").id
    path, body, param = requests(FT, own_file)[endpoint]
    r = post(env, path, body, key=env["other"])
    assert (r.status_code, r.json()) == (404, not_found(FT, param)), r.text


@pytest.mark.parametrize("endpoint", range(4))
def test_empty_model_is_a_400(env, training_file, endpoint):
    path, body, param = requests("", training_file)[endpoint]
    r = post(env, path, body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param) and error["message"]


def test_sdk_sees_model_not_found(client):
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="/etc", messages=MESSAGES, max_tokens=2)
    assert info.value.body == not_found("/etc")["error"]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="", messages=MESSAGES, max_tokens=2)
    assert info.value.body["param"] == "model"


@pytest.mark.parametrize("name", ["gpt-4.1-mini", "o4-mini", "gpt-5-mini", "gpt-4o"])
def test_openai_names_chat_and_create_jobs(client, training_file, name):
    reply = client.chat.completions.create(model=name, messages=MESSAGES, max_tokens=3, temperature=0)
    assert reply.model == name and reply.usage.completion_tokens == 3
    assert reply.choices[0].message.content == client.chat.completions.create(
        model="tiny", messages=MESSAGES, max_tokens=3, temperature=0).choices[0].message.content
    job = client.fine_tuning.jobs.create(model=name, training_file=training_file)
    assert (job.model, job.status) == (name, "validating_files")


def test_fine_tune_of_the_project_continues_training(client, training_file):
    job = client.fine_tuning.jobs.create(model=FT, training_file=training_file, suffix="more")
    assert job.model == FT


def _models(env, *args):
    return subprocess.run([TUNERY, "models", *args], env=server_env(env["home"], **env["extra"]), capture_output=True, text=True, timeout=120)


def test_registered_model_is_offered_while_the_server_runs(env, client, training_file):
    assert post(env, "/chat/completions", requests("team-tiny", training_file)[0][1]).status_code == 404
    added = _models(env, "add", "team-tiny", str(env["base"]))
    assert added.returncode == 0, added.stderr
    assert json.loads((env["home"] / "models.json").read_text()) == {"team-tiny": str(env["base"])}
    reply = client.chat.completions.create(model="team-tiny", messages=MESSAGES, max_tokens=2)
    assert reply.usage.completion_tokens == 2
    job = client.fine_tuning.jobs.create(model="team-tiny", training_file=training_file)
    assert job.model == "team-tiny"
    assert "team-tiny" in [m.id for m in client.models.list()]
    removed = _models(env, "remove", "team-tiny")
    assert removed.returncode == 0, removed.stderr
    r = post(env, "/chat/completions", requests("team-tiny", training_file)[0][1])
    assert (r.status_code, r.json()) == (404, not_found("team-tiny"))


def test_models_add_refuses_bad_names_and_missing_weights(env):
    bad = _models(env, "add", "has:colon", str(env["base"]))
    assert bad.returncode == 1 and "invalid model name 'has:colon'" in bad.stderr
    missing = _models(env, "add", "ghost", str(env["root"] / "nothing-here"))
    assert missing.returncode == 1 and "unknown model" in missing.stderr
    gone = _models(env, "remove", "ghost")
    assert gone.returncode == 1 and "no registered model 'ghost'" in gone.stderr
    assert "ghost" not in (env["home"] / "models.json").read_text() if (env["home"] / "models.json").exists() else True


def test_a_broken_model_table_is_a_500_that_names_no_path(env, training_file):
    models_file = env["home"] / "models.json"
    before = models_file.read_text() if models_file.exists() else None
    models_file.write_text("{broken")
    try:
        for path, body, _ in requests("gpt-4o", training_file)[:3]:
            r = post(env, path, body)
            assert r.status_code == 500, r.text
            assert r.json()["error"]["message"] == "The model `gpt-4o` cannot be used on this server right now; the server log says why."
            assert str(env["home"]) not in r.text
        assert "models.json: invalid JSON" in env["process"].output()  # the operator reads why
    finally:
        if before is None:
            models_file.unlink()
        else:
            models_file.write_text(before)
    assert post(env, "/chat/completions", requests("gpt-4o", training_file)[0][1]).status_code == 200


def test_an_eval_run_on_a_path_or_unknown_name_is_the_same_404(env, client):
    """An Evals run names its model in `data_source.model`: the same 404 for every name that is
    not the project's, whether or not the path exists; another project's fine-tune too."""
    def new_eval(key):
        r = post(env, "/evals", {"data_source_config": {"type": "custom", "item_schema": {"type": "object"}},
                                 "testing_criteria": [{"type": "string_check", "name": "eq", "input": "{{sample.output_text}}",
                                                       "reference": "x", "operation": "eq"}]}, key=key)
        assert r.status_code == 201, r.text  # the spec's status for a created eval
        return r.json()["id"]

    def run_body(name):
        return {"data_source": {"type": "completions", "model": name, "source": {"type": "file_content", "content": [{"item": {}}]},
                                "input_messages": {"type": "template", "template": [{"role": "user", "content": "hi"}]}}}

    mine, theirs = new_eval(env["key"]), new_eval(env["other"])
    for key, eval_id, name in [*((env["key"], mine, n) for n in hostile_names(env)), (env["other"], theirs, FT)]:
        r = post(env, f"/evals/{eval_id}/runs", run_body(name), key=key)
        assert (r.status_code, r.json()) == (404, not_found(name, "data_source.model")), (name, r.text)
        assert str(env["home"]) not in r.text
