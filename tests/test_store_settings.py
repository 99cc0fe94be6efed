"""Settings: defaults, config file, environment, overrides — in that order of strength."""

import pytest

from tunery.store.settings import GB, MB, SettingsError, human_bytes, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in ("TUNERY_HOME", "TUNERY_DATABASE_URL", "TUNERY_DATA_DIR", "TUNERY_HOST", "TUNERY_PORT",
                 "TUNERY_MAX_UPLOAD_BYTES", "TUNERY_MAX_FILE_BYTES"):
        monkeypatch.delenv(name, raising=False)


def test_defaults_live_under_the_home(tmp_path):
    s = load_settings(tmp_path)
    assert s.database_url == f"sqlite:///{tmp_path / 'tunery.db'}"
    assert s.data_dir == tmp_path / "data"
    assert (s.host, s.port, s.max_upload_bytes, s.max_file_bytes) == ("127.0.0.1", 8000, 8 * GB, 512 * MB)


def test_home_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNERY_HOME", str(tmp_path))
    assert load_settings().home == tmp_path


def test_config_file_then_env_then_overrides(tmp_path, monkeypatch):
    (tmp_path / "config.toml").write_text(
        'port = 9000\nhost = "0.0.0.0"\nmax_upload_bytes = 1000\ndatabase_url = "postgresql://u@db/tunery"\n'
        "[worker]\nconcurrency = 2\n"
    )
    s = load_settings(tmp_path)
    assert (s.port, s.host, s.max_upload_bytes, s.database_url) == (9000, "0.0.0.0", 1000, "postgresql://u@db/tunery")
    assert s.extra == {"worker": {"concurrency": 2}}
    monkeypatch.setenv("TUNERY_PORT", "9100")
    assert load_settings(tmp_path).port == 9100
    assert load_settings(tmp_path, port=9200, host=None).port == 9200
    assert load_settings(tmp_path, port=9200, host=None).host == "0.0.0.0"


def test_bad_values_name_the_problem(tmp_path, monkeypatch):
    (tmp_path / "config.toml").write_text("port = \n")
    with pytest.raises(SettingsError, match="config.toml"):
        load_settings(tmp_path)
    (tmp_path / "config.toml").unlink()
    monkeypatch.setenv("TUNERY_MAX_FILE_BYTES", "lots")
    with pytest.raises(SettingsError, match="max_file_bytes must be an integer, got 'lots'"):
        load_settings(tmp_path)


def test_human_bytes():
    assert [human_bytes(n) for n in (10, 1536, 512 * MB, 8 * GB)] == ["10 bytes", "1.5 KB", "512 MB", "8 GB"]
