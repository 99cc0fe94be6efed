"""resolve_model on folders, the HF cache and bad specs; loading helpers; conversion guards; the CLI.

Uses a tiny random Llama built in memory; the packaged model's tests are in test_models_packaged.py.
"""

import json
import subprocess
import sys
import threading
import time

import pytest

from tunery.models import convert
from tunery.models.aliases import ALIASES_ENV
from tunery.models.errors import ModelConversionError, ModelNotFoundError, TuneryModelError
from tunery.models.loading import load_model, load_tokenizer
from tunery.models.resolve import resolve_model

CHAT_TEMPLATE = "{% for m in messages %}<|im_start|> {{ m['role'] }} {{ m['content'] }} <|im_end|>{% endfor %}"


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    """A random 2-layer Llama with a WordLevel tokenizer (no pad token) and a chat template."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = ["<unk>", "<|im_start|>", "<|im_end|>", "user", "assistant", "hello", "world"]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="<|im_end|>")
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(words), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, eos_token_id=2,
    )
    folder = tmp_path_factory.mktemp("models") / "tiny-llama"
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.setenv("TUNERY_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(ALIASES_ENV, raising=False)


def test_folder_resolves_as_is(tiny_llama):
    resolved = resolve_model(str(tiny_llama))
    assert (resolved.name, resolved.path, resolved.source) == ("tiny-llama", tiny_llama, "folder")
    assert resolved.context_length == 256
    assert resolved.spec == str(tiny_llama)


def test_alias_to_folder_from_env(monkeypatch, tiny_llama):
    monkeypatch.setenv(ALIASES_ENV, json.dumps({"gpt-4o-mini": str(tiny_llama)}))
    resolved = resolve_model("gpt-4o-mini")
    assert (resolved.path, resolved.source, resolved.spec) == (tiny_llama, "folder", "gpt-4o-mini")


@pytest.mark.parametrize("name", ["gpt-5-mini", "o4-mini", "gpt-4.1-mini", "davinci-002"])
def test_openai_names_follow_the_rule_to_its_target(tiny_llama, name):
    from tunery.models.aliases import OpenAINames

    resolved = resolve_model(name, openai=OpenAINames(target="team"), aliases={"team": str(tiny_llama)})
    assert (resolved.path, resolved.source, resolved.spec) == (tiny_llama, "folder", name)
    with pytest.raises(ModelNotFoundError, match=rf"^unknown model '{name}'"):
        resolve_model(name, openai=OpenAINames(pattern=""))  # the rule off: just an unknown name


def test_load_tokenizer_pads_with_eos_without_growing_vocab(tiny_llama):
    tokenizer = load_tokenizer(resolve_model(str(tiny_llama)))
    assert (tokenizer.pad_token, tokenizer.pad_token_id, len(tokenizer)) == ("<|im_end|>", 2, 7)
    assert tokenizer.chat_template == CHAT_TEMPLATE
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "hello world"}], tokenize=True)
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    assert list(ids) == [1, 3, 5, 6, 2]


def test_load_model_dtype_and_errors(tiny_llama):
    import torch

    resolved = resolve_model(str(tiny_llama))
    model = load_model(resolved, dtype="bfloat16", device="cpu")
    assert next(model.parameters()).dtype == torch.bfloat16
    assert not model.training
    assert next(load_model(resolved).parameters()).dtype == torch.float32
    with pytest.raises(TuneryModelError, match="^unknown dtype 'fp8': use one of float32, bfloat16, float16 or auto$"):
        load_model(resolved, dtype="fp8")


def test_folder_without_config(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match=r"^folder .*empty is not a Hugging Face model folder: it has no config.json$"):
        resolve_model(str(tmp_path / "empty"))


def test_unknown_spec_message():
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model("no such model")
    assert str(info.value) == (
        "unknown model 'no such model': not an alias, packaged model, local folder, .gguf file or "
        "Hugging Face id (org/name); add an alias via $TUNERY_MODEL_ALIASES or pass a local path"
    )


def test_alias_to_unknown_says_so():
    with pytest.raises(ModelNotFoundError, match=r"^unknown model 'nothing here' \(alias of 'curie'\)"):
        resolve_model("curie", aliases={"curie": "nothing here"})


def test_missing_gguf_file(tmp_path):
    with pytest.raises(ModelNotFoundError, match=r"^GGUF file .*missing.gguf does not exist$"):
        resolve_model(str(tmp_path / "missing.gguf"))


@pytest.fixture
def hf_cache(monkeypatch, tmp_path):
    from huggingface_hub import constants

    cache = tmp_path / "hf"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def _snapshot(cache, repo_id, files):
    """Lay out `repo_id` in an HF cache the way `hf download` does (refs/main -> snapshots/<commit>)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name, source in files.items():
        (snapshot / name).write_bytes(source.read_bytes())
    return snapshot


def test_hf_id_not_in_cache(hf_cache):
    with pytest.raises(ModelNotFoundError) as info:
        resolve_model("acme/llama-7b")
    assert str(info.value) == (
        "model 'acme/llama-7b' is not in the local Hugging Face cache; Tunery never downloads: on a machine "
        "with internet run `hf download acme/llama-7b` (HF cache) or save the model to a folder and pass its path"
    )


def test_hf_id_in_cache(hf_cache, tiny_llama):
    files = {p.name: p for p in tiny_llama.iterdir()}
    snapshot = _snapshot(hf_cache, "acme/tiny-llama", files)
    resolved = resolve_model("acme/tiny-llama")
    assert (resolved.name, resolved.path, resolved.source, resolved.context_length) == (
        "tiny-llama", snapshot, "hf-cache", 256
    )


def test_hf_id_partly_in_cache(hf_cache, tiny_llama):
    _snapshot(hf_cache, "acme/config-only", {"config.json": tiny_llama / "config.json"})
    with pytest.raises(ModelNotFoundError, match=r"^model 'acme/config-only' is only partly in the local Hugging Face cache"):
        resolve_model("acme/config-only")


def test_packaged_hf_id_never_needs_the_hf_cache(hf_cache, monkeypatch, tmp_path):
    # With a finished conversion in place, the packaged HF id resolves without any HF cache entry.
    from tunery.models.packaged import packaged_gguf

    folder = tmp_path / "cache" / "models" / "SmolLM2-135M-Instruct"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"max_position_embeddings": 8192}')
    (folder / convert.MARKER).write_text(json.dumps({"source": convert.gguf_key(packaged_gguf())}))
    resolved = resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert (resolved.name, resolved.path, resolved.source, resolved.context_length) == (
        "SmolLM2-135M-Instruct", folder, "packaged", 8192
    )


def test_partial_folder_is_not_complete(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"x" * 10)
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert not convert.is_converted(folder, convert.gguf_key(gguf))  # no marker: a crash or a hand-made copy
    (folder / convert.MARKER).write_text(json.dumps({"source": {**convert.gguf_key(gguf), "size": 11}}))
    assert not convert.is_converted(folder, convert.gguf_key(gguf))  # converted from another file
    (folder / convert.MARKER).write_text(json.dumps({"source": convert.gguf_key(gguf)}))
    assert convert.is_converted(folder, convert.gguf_key(gguf))


def test_failed_conversion_leaves_nothing_behind(tmp_path):
    gguf = tmp_path / "broken.Q4_0.gguf"
    gguf.write_bytes(b"not a gguf file at all")
    models = tmp_path / "cache" / "models" / "gguf"
    crashed = models / ".tmp" / "broken.Q4_0-22" / "crashed"  # an earlier crash of this conversion
    other = models / ".tmp" / "broken.Q4_0-220" / "running"  # another file's conversion in progress
    for folder in (crashed, other):
        folder.mkdir(parents=True)
    with pytest.raises(ModelConversionError, match=r"^cannot load GGUF .*broken.Q4_0.gguf: "):
        resolve_model(str(gguf))
    assert sorted(p.name for p in models.iterdir()) == [".broken.Q4_0-22.lock", ".tmp"]
    assert list((models / ".tmp" / "broken.Q4_0-22").iterdir()) == []
    assert other.is_dir()


def test_unwritable_cache_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("TUNERY_CACHE", str(tmp_path / "a-file"))
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"x")
    with pytest.raises(ModelConversionError, match=r"^cannot write the converted model to .*/a-file/models/gguf/m-1: "
                       r"Not a directory; set \$TUNERY_CACHE to a writable folder$"):
        resolve_model(str(gguf))


def test_invalid_config_json(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text('{"max_position_embeddings": 12,}')
    with pytest.raises(TuneryModelError, match=r"bad/config.json: invalid JSON at line 1 column 32: Expecting property name"):
        resolve_model(str(tmp_path / "bad"))


def test_waiter_uses_a_conversion_finished_while_it_waited(tmp_path):
    """Two processes racing: the second blocks on the lock, then finds the folder done and
    does not convert again (converting this fake file would raise)."""
    import fcntl

    gguf = tmp_path / "fake.gguf"
    gguf.write_bytes(b"fake")
    folder = tmp_path / "out" / "fake"
    folder.parent.mkdir()
    result = {}
    with open(folder.parent / ".fake.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        waiter = threading.Thread(target=lambda: result.update(path=convert.ensure_converted(gguf, folder)))
        waiter.start()
        time.sleep(0.3)
        assert waiter.is_alive()  # blocked on the lock
        folder.mkdir()
        (folder / convert.MARKER).write_text(json.dumps({"source": convert.gguf_key(gguf)}))
        fcntl.flock(lock, fcntl.LOCK_UN)
    waiter.join(5)
    assert result == {"path": folder}


def _cli(*args, env_cache):
    import os

    env = {**os.environ, "TUNERY_CACHE": str(env_cache)}
    return subprocess.run([sys.executable, "-m", "tunery.models", *args], capture_output=True, text=True, env=env, timeout=120)


def test_cli_prints_the_folder(tiny_llama, tmp_path):
    done = _cli(str(tiny_llama), env_cache=tmp_path / "cache")
    assert (done.returncode, done.stdout) == (0, f"{tiny_llama}\n")
    assert "tiny-llama (folder, context 256)" in done.stderr


def test_cli_unknown_model_exits_1_with_one_line(tmp_path):
    done = _cli("no-such-model", env_cache=tmp_path / "cache")
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.startswith("error: unknown model 'no-such-model': not an alias")
    assert done.stderr.count("\n") == 1
