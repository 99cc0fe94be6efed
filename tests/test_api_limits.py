"""Limits a remote client must not control, through the real server: body size, multipart shape,
the default and the deadline of a generation, per-project quotas (stored bytes, unfinished jobs)
and the request rate. Each answer is OpenAI's envelope, validated against OpenAI's spec.

One server (`limits`) has every limit set small, the tiny Llama as model "tiny" and no worker (jobs
stay `validating_files`, so the job quota is exact); each test opens its own project, so the
rate limit of one test never touches another. A second server has a short generation deadline.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
from api_support import LegacyRunner, ServerProcess, chat_examples, create_key, jsonl
from serve_fixtures import save_base

MESSAGES = [{"role": "user", "content": "hello world, how are you?"}]
LIMITS = {
    "TUNERY_MAX_REQUEST_BYTES": "65536",
    "TUNERY_MAX_FORM_PARTS": "6",
    "TUNERY_MAX_FORM_HEADER_BYTES": "1024",
    "TUNERY_DEFAULT_MAX_TOKENS": "7",
    "TUNERY_MAX_PROJECT_BYTES": "300000",
    "TUNERY_MAX_ACTIVE_JOBS": "2",
    "TUNERY_RATE_LIMIT_PER_MINUTE": "30",
    "TUNERY_RATE_LIMIT_BURST": "20",
}


@dataclass
class Limited:
    process: ServerProcess
    env: dict
    base: Path

    @property
    def url(self) -> str:
        return self.process.base_url

    def key(self, project: str) -> str:
        return create_key(self.process.home, project, **self.env)

    def client(self, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url, api_key=key, max_retries=0)


def _start(root: Path, **limits: str) -> Limited:
    base = save_base(root / "base")
    env = {"TUNERY_MODEL_ALIASES": json.dumps({"tiny": str(base)}), **limits}
    create_key(root / "home", "first", **env)  # so that the server does not print a key of its own
    return Limited(ServerProcess(root / "home", args=("--no-worker",), env=env).start(), env, base)


@pytest.fixture(scope="module")
def limits(tmp_path_factory):
    server = _start(tmp_path_factory.mktemp("limits"), **LIMITS)
    yield server
    server.process.stop()


def auth(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def error_of(r: httpx.Response, spec, status: int) -> dict:
    assert r.status_code == status, r.text
    spec.validate("ErrorResponse", r.json())
    return r.json()["error"]


# --- body size ---------------------------------------------------------------------------------

def test_json_body_over_the_limit_is_413_with_or_without_content_length(limits, spec):
    key = limits.key("body")
    big = {"model": "tiny", "messages": [{"role": "user", "content": "x" * 70_000}]}
    err = error_of(httpx.post(f"{limits.url}/chat/completions", json=big, headers=auth(key)), spec, 413)
    assert (err["message"], err["type"], err["code"]) == (
        "The request body is too large: the limit is 64 KB.", "invalid_request_error", "request_too_large")

    def chunks():  # no Content-Length: Transfer-Encoding chunked, cut off while it arrives
        data = json.dumps(big).encode()
        for i in range(0, len(data), 8192):
            yield data[i:i + 8192]

    r = httpx.post(f"{limits.url}/uploads", content=chunks(), headers={**auth(key), "Content-Type": "application/json"})
    assert "content-length" not in r.request.headers
    assert error_of(r, spec, 413)["code"] == "request_too_large"
    with pytest.raises(openai.APIStatusError) as info:  # the SDK sees the same
        limits.client(key).chat.completions.create(model="tiny", messages=big["messages"])
    assert info.value.status_code == 413
    # under the limit, chunked or not, a body is read as before
    small = {"bytes": 4, "filename": "a.jsonl", "mime_type": "text/jsonl", "purpose": "batch"}
    assert httpx.post(f"{limits.url}/uploads", json=small, headers=auth(key)).status_code == 200
    one_chunk = iter([json.dumps(small).encode()])
    assert httpx.post(f"{limits.url}/uploads", content=one_chunk, headers={**auth(key), "Content-Type": "application/json"}).status_code == 200


def test_multipart_uploads_keep_their_own_limit_not_the_json_one(limits):
    client = limits.client(limits.key("multipart-big"))
    data = jsonl(chat_examples(1)) * 1500  # ~200 KB: over the 64 KB JSON limit, under the quota
    f = client.files.create(file=("big.jsonl", data), purpose="batch")
    assert f.bytes == len(data) and client.files.content(f.id).content == data


# --- multipart shape ---------------------------------------------------------------------------

def multipart(parts: list[tuple[str, str]], boundary: str = "b0undary") -> bytes:
    """Raw parts as (headers, body)."""
    out = b""
    for headers, body in parts:
        out += f"--{boundary}\r\n{headers}\r\n\r\n{body}\r\n".encode()
    return out + f"--{boundary}--\r\n".encode()


def post_form(limits, key: str, body: bytes) -> httpx.Response:
    return httpx.post(f"{limits.url}/files", content=body,
                      headers={**auth(key), "Content-Type": "multipart/form-data; boundary=b0undary"})


def test_too_many_parts_is_400_and_big_part_headers_413(limits, spec):
    key = limits.key("form-shape")
    purpose = ('Content-Disposition: form-data; name="purpose"', "batch")
    file = ('Content-Disposition: form-data; name="file"; filename="a.txt"', "hello")
    extra = [(f'Content-Disposition: form-data; name="x{i}"', "1") for i in range(5)]
    err = error_of(post_form(limits, key, multipart([purpose, file, *extra])), spec, 400)
    assert err["message"] == "The multipart body has too many parts: at most 6 are accepted."
    ok = post_form(limits, key, multipart([purpose, file, *extra[:4]]))  # 6 parts: accepted
    assert ok.status_code == 200 and ok.json()["bytes"] == 5

    # several header lines of one part, each short, over 1 KB together
    many = "\r\n".join([file[0]] + [f"X-Pad-{i}: {'p' * 200}" for i in range(6)])
    err = error_of(post_form(limits, key, multipart([purpose, (many, "hello")])), spec, 413)
    assert err["message"] == "The headers of a part of the multipart body are too large: the limit is 1 KB."
    # one header line longer than python-multipart's own cap per line: the same answer
    long_name = f'Content-Disposition: form-data; name="file"; filename="{"n" * 5000}.txt"'
    assert error_of(post_form(limits, key, multipart([purpose, (long_name, "hello")])), spec, 413)["code"] == "request_too_large"
    assert [f["id"] for f in httpx.get(f"{limits.url}/files", headers=auth(key)).json()["data"]] == [ok.json()["id"]]


# --- max_tokens when the request gives none ----------------------------------------------------

def test_default_max_tokens_caps_a_request_without_max_tokens(limits, spec):
    key = limits.key("tokens")
    client = limits.client(key)
    capped = client.chat.completions.create(model="tiny", messages=MESSAGES, temperature=0)
    longer = client.chat.completions.create(model="tiny", messages=MESSAGES, temperature=0, max_tokens=20)
    assert (capped.usage.completion_tokens, capped.choices[0].finish_reason) == (7, "length")
    assert longer.usage.completion_tokens > 7  # the cap, not the model, ended the first answer
    assert longer.choices[0].message.content.startswith(capped.choices[0].message.content)
    # completions: `max_tokens: null` means "the context" at OpenAI; here it is the cap too
    r = httpx.post(f"{limits.url}/completions", headers=auth(key),
                   json={"model": "tiny", "prompt": "hello world", "max_tokens": None, "temperature": 0})
    assert (r.json()["usage"]["completion_tokens"], r.json()["choices"][0]["finish_reason"]) == (7, "length")
    # the legacy SDK gets the same cap; an explicit max_tokens over the context is still the 400
    out = LegacyRunner(limits.url, key).run(
        """
        r = openai.ChatCompletion.create(model="tiny", messages=[{"role": "user", "content": "hello world, how are you?"}], temperature=0)
        print(r["usage"]["completion_tokens"], r["choices"][0]["finish_reason"])
        """
    )
    assert out.split() == ["7", "length"]
    r = httpx.post(f"{limits.url}/chat/completions", headers=auth(key), json={"model": "tiny", "messages": MESSAGES, "max_tokens": 10**6})
    assert error_of(r, spec, 400)["code"] == "context_length_exceeded"


# --- quotas ------------------------------------------------------------------------------------

def quota_error(info, spec) -> dict:
    assert info.value.status_code == 429
    assert info.value.response.headers["x-should-retry"] == "false"  # the SDK must not retry it
    spec.validate("ErrorResponse", info.value.response.json())
    return info.value.response.json()["error"]


def test_storage_quota_counts_the_projects_files(limits, spec):
    key = limits.key("storage")
    client, other = limits.client(key), limits.client(limits.key("storage-other"))
    data = b"x" * 200_000
    first = client.files.create(file=("a.txt", data), purpose="batch")
    with pytest.raises(openai.RateLimitError) as info:  # 200 KB more would pass 300 KB
        client.files.create(file=("b.txt", data), purpose="batch")
    err = quota_error(info, spec)
    assert (err["type"], err["code"]) == ("insufficient_quota", "insufficient_quota")
    assert err["message"].startswith("This file would exceed the project's storage quota of 293 KB.")
    body = multipart([('Content-Disposition: form-data; name="purpose"', "batch"),
                      ('Content-Disposition: form-data; name="file"; filename="c.txt"', "y" * 150_000)])
    r = httpx.post(f"{limits.url}/files", content=iter([body[:70_000], body[70_000:]]),  # no length: cut off while streaming
                   headers={**auth(key), "Content-Type": "multipart/form-data; boundary=b0undary"})
    assert error_of(r, spec, 429)["code"] == "insufficient_quota"
    assert [f.id for f in client.files.list()] == [first.id]  # nothing of the refused ones was kept
    assert other.files.create(file=("b.txt", data), purpose="batch").bytes == 200_000  # another project's quota

    # the Uploads API: checked for the declared size, and again on completion
    with pytest.raises(openai.RateLimitError):
        client.uploads.create(bytes=200_000, filename="u.txt", mime_type="text/plain", purpose="batch")
    up = client.uploads.create(bytes=60_000, filename="u.txt", mime_type="text/plain", purpose="batch")
    part = client.uploads.parts.create(up.id, data=b"z" * 60_000)
    more = client.files.create(file=("d.txt", b"w" * 60_000), purpose="batch")  # 260 KB stored now
    with pytest.raises(openai.RateLimitError) as info:
        client.uploads.complete(up.id, part_ids=[part.id])
    assert quota_error(info, spec)["code"] == "insufficient_quota"
    client.files.delete(more.id)
    done = client.uploads.complete(up.id, part_ids=[part.id])  # room again: the pending upload completes
    assert (done.status, done.file.bytes) == ("completed", 60_000)


def test_unfinished_jobs_quota(limits, spec):
    key = limits.key("jobs")
    client = limits.client(key)
    train = client.files.create(file=("t.jsonl", jsonl(chat_examples(12))), purpose="fine-tune")
    jobs = [client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=train.id) for _ in range(2)]
    with pytest.raises(openai.RateLimitError) as info:
        client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=train.id)
    err = quota_error(info, spec)
    assert (err["type"], err["code"], err["param"]) == ("insufficient_quota", "insufficient_quota", None)
    assert "already has 2 unfinished fine-tuning jobs" in err["message"]
    out = LegacyRunner(limits.url, key).run(
        f"""
        try:
            openai.FineTune.create(training_file={train.id!r})
        except openai.error.RateLimitError as e:
            print(e.http_status, e.json_body["error"]["code"])
        """
    )
    assert out.split() == ["429", "insufficient_quota"]
    client.fine_tuning.jobs.cancel(jobs[0].id)  # a finished job frees its place
    assert client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=train.id).status == "validating_files"


# --- request rate ------------------------------------------------------------------------------

def test_rate_limit_is_429_with_retry_after_per_project(limits, spec):
    key, other = limits.key("rate"), limits.key("rate-other")
    codes = [httpx.get(f"{limits.url}/files", headers=auth(key)) for _ in range(26)]
    ok = [r for r in codes if r.status_code == 200]
    limited = [r for r in codes if r.status_code == 429]
    assert 20 <= len(ok) <= 24 and len(limited) >= 2  # the burst, plus what refilled meanwhile
    err = error_of(limited[0], spec, 429)
    assert (err["type"], err["code"]) == ("requests", "rate_limit_exceeded")
    retry = int(limited[0].headers["retry-after"])
    assert 1 <= retry <= 2 and f"try again in {retry}s" in err["message"]  # 30/min: one every 2 s
    assert httpx.get(f"{limits.url}/files", headers=auth(other)).status_code == 200  # each project has its bucket
    with pytest.raises(openai.RateLimitError):
        limits.client(key).files.list()
    time.sleep(retry + 0.2)
    assert httpx.get(f"{limits.url}/files", headers=auth(key)).status_code == 200


# --- generation deadline -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def deadline(tmp_path_factory):
    # fp32, as the reference `greedy` computes: in bf16 (auto on a CPU with native bf16) the random
    # model's near-ties (a 0.02 logit gap at token 9) flip, and the answers part after a few tokens.
    server = _start(tmp_path_factory.mktemp("deadline"), TUNERY_MAX_GENERATION_SECONDS="0.03", TUNERY_SERVE_DTYPE="float32")
    yield server
    server.process.stop()


def greedy(base: Path, n: int) -> tuple[str, int]:
    """The tiny model's greedy answer of n tokens, computed directly with transformers."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base).eval()
    ids = tok(tok.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False), add_special_tokens=False,
              return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=n, do_sample=False, pad_token_id=0, eos_token_id=tok.eos_token_id)
    new = out[0, ids.shape[1]:]
    return tok.decode(new, skip_special_tokens=True), len(new)


def test_a_generation_past_the_deadline_ends_as_length_with_its_partial_text(deadline):
    client = deadline.client(deadline.key("slow"))
    full, full_tokens = greedy(deadline.base, 200)
    assert full_tokens == 200  # the model alone would not stop: only the deadline can
    r = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=200, temperature=0)
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens < 200 and full.startswith(r.choices[0].message.content.rstrip("\ufffd"))
    chunks = list(client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=200, temperature=0, stream=True))
    assert chunks[-1].choices[0].finish_reason == "length"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert len(text) < len(full) and full.startswith(text.rstrip("\ufffd"))
