"""The registered base models file (`tunery models add`): names, reading, atomic writes, errors."""

import json

import pytest

from tunery.models.errors import TuneryModelError
from tunery.models.registered import check_name, load_registered, save_registered


def test_round_trip_and_missing_file(tmp_path):
    path = tmp_path / "home" / "models.json"
    assert load_registered(path) == {}
    save_registered(path, {"team-llama": "/models/llama", "org/name": "org/name"})
    assert load_registered(path) == {"team-llama": "/models/llama", "org/name": "org/name"}
    assert [p.name for p in path.parent.iterdir()] == ["models.json"]  # no temp file left


@pytest.mark.parametrize("name", ["has:colon", "has space", "/abs", "../up", "a/b/c", ".hidden", "", "x" * 129, "a/../b"])
def test_bad_names(name):
    with pytest.raises(TuneryModelError, match="^invalid model name"):
        check_name(name)


@pytest.mark.parametrize("text,fragment", [("{nope", "invalid JSON at line 1 column 2"), ("[1]", "expected a JSON object"),
                                           ('{"a": ""}', "expected a JSON object"), ('{"a:b": "/x"}', "invalid model name 'a:b'")])
def test_bad_files_say_why(tmp_path, text, fragment):
    path = tmp_path / "models.json"
    path.write_text(text)
    with pytest.raises(TuneryModelError, match=fragment):
        load_registered(path)


def test_written_file_is_plain_json(tmp_path):
    save_registered(tmp_path / "models.json", {"b": "/y", "a": "/x"})
    assert json.loads((tmp_path / "models.json").read_text()) == {"a": "/x", "b": "/y"}
