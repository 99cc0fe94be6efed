"""Alias table (env JSON / file overrides, dict overrides, errors) and the OpenAI-name rule."""

import json

import pytest

from tunery.models.aliases import ALIASES_ENV, OPENAI_BASE_MODELS, OpenAINames, base_target, list_base_models, load_aliases, resolve_alias
from tunery.models.errors import TuneryModelError


@pytest.fixture(autouse=True)
def _no_env_aliases(monkeypatch):
    monkeypatch.delenv(ALIASES_ENV, raising=False)


@pytest.mark.parametrize("name", [*OPENAI_BASE_MODELS, "gpt-4.1-mini", "gpt-4o", "o4-mini", "o3", "gpt-5-mini", "gpt-6-turbo-2027-01-01",
                                  "chatgpt-4o-latest", "text-davinci-003", "gpt-3.5-turbo-instruct"])
def test_every_openai_name_maps_to_the_default_by_rule(name):
    assert base_target(name, load_aliases()) == "default"


@pytest.mark.parametrize("name", ["/some/folder", "../x", "org/name", "HuggingFaceTB/other", "model.gguf", "ft:gpt-4o:x::y",
                                  "curie:ft-acme-2021-03-03-21-44-20", "gpt-4o/../../etc", "gpt-", "mistral-7b", "default", ""])
def test_other_names_are_not_base_models(name):
    assert base_target(name, load_aliases()) is None


def test_the_rule_is_configurable():
    table = load_aliases({"team": "/models/team", "gpt-4o": "/models/big"})
    rule = OpenAINames(target="team")
    assert base_target("gpt-4.1-mini", table, rule) == "/models/team"
    assert base_target("gpt-4o", table, rule) == "/models/big"  # an alias of the same name wins
    assert base_target("o4-mini", table, OpenAINames(pattern=r"gpt-.*")) is None
    assert base_target("gpt-4o-mini", table, OpenAINames(pattern="")) is None  # the rule off
    assert base_target("SmolLM2-135M-Instruct", table, OpenAINames(pattern="")) == "SmolLM2-135M-Instruct"
    assert "gpt-4o-mini" not in list_base_models(openai=OpenAINames(pattern=""))


def test_bad_pattern_is_one_line():
    with pytest.raises(TuneryModelError, match=r"^the OpenAI model name pattern '\(' is not a valid regular expression"):
        OpenAINames(pattern="(").matches("gpt-4o")


def test_env_json_overrides_and_adds(monkeypatch):
    monkeypatch.setenv(ALIASES_ENV, json.dumps({"gpt-4o-mini": "/models/llama", "my-model": "org/name"}))
    table = load_aliases()
    assert table["gpt-4o-mini"] == "/models/llama"
    assert table["my-model"] == "org/name"
    assert base_target("gpt-4o-mini", table) == "/models/llama"  # overrides the rule for that name
    assert base_target("gpt-3.5-turbo", table) == "default"


def test_env_file_path_and_dict_override_wins(monkeypatch, tmp_path):
    path = tmp_path / "aliases.json"
    path.write_text(json.dumps({"davinci-002": "/a", "curie": "/b"}))
    monkeypatch.setenv(ALIASES_ENV, str(path))
    table = load_aliases({"curie": "/c"})
    assert (table["davinci-002"], table["curie"]) == ("/a", "/c")


def test_chained_alias_and_cycle():
    table = load_aliases({"gpt-3.5-turbo": "gpt-4o-mini", "gpt-4o-mini": "/models/x"})
    assert resolve_alias("gpt-3.5-turbo", table) == "/models/x"
    cyclic = load_aliases({"a": "b", "b": "a"})
    with pytest.raises(TuneryModelError, match="^model alias cycle: a -> b -> a$"):
        resolve_alias("a", cyclic)


def test_bad_env_json_names_the_position(monkeypatch):
    monkeypatch.setenv(ALIASES_ENV, '{"curie": }')
    with pytest.raises(TuneryModelError, match=r"^\$TUNERY_MODEL_ALIASES: invalid JSON at line 1 column 11: Expecting value$"):
        load_aliases()


def test_bad_env_file(monkeypatch, tmp_path):
    monkeypatch.setenv(ALIASES_ENV, str(tmp_path / "missing.json"))
    with pytest.raises(TuneryModelError, match=r"missing.json: cannot read it \(No such file or directory\)"):
        load_aliases()
    (tmp_path / "list.json").write_text("[1, 2]")
    monkeypatch.setenv(ALIASES_ENV, str(tmp_path / "list.json"))
    with pytest.raises(TuneryModelError, match="list.json: expected a JSON object mapping model names to specs, got list$"):
        load_aliases()


@pytest.mark.parametrize("bad", [{"curie": 3}, {"curie": ""}, {"": "/x"}])
def test_bad_alias_values(bad):
    with pytest.raises(TuneryModelError, match="^aliases passed in: alias .* must map a non-empty name"):
        load_aliases(bad)


def test_list_base_models_includes_packaged_aliases_and_extras(monkeypatch):
    monkeypatch.setenv(ALIASES_ENV, '{"team-llama": "/models/llama"}')
    names = list_base_models({"extra": "org/name"})
    assert names[0] == "SmolLM2-135M-Instruct"
    assert names[1:17] == list(OPENAI_BASE_MODELS)
    assert names[17:] == ["team-llama", "extra"]
