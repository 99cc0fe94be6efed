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


def test_limits_have_defaults_and_come_from_config_and_environment(tmp_path, monkeypatch):
    from tunery.store.settings import LIMITS

    for name in LIMITS:
        monkeypatch.delenv(f"TUNERY_{name.upper()}", raising=False)
    s = load_settings(tmp_path)
    assert (s.max_request_bytes, s.max_form_parts, s.max_form_header_bytes) == (16 * MB, 16, 4096)
    assert (s.default_max_tokens, s.max_generation_seconds) == (2048, 300.0)
    assert (s.max_project_bytes, s.max_active_jobs, s.rate_limit_per_minute, s.rate_limit_burst) == (100 * GB, 50, 3000, 500)
    (tmp_path / "config.toml").write_text("default_max_tokens = 512\nmax_generation_seconds = 1.5\nrate_limit_per_minute = 0\n")
    monkeypatch.setenv("TUNERY_MAX_ACTIVE_JOBS", "3")
    s = load_settings(tmp_path)
    assert (s.default_max_tokens, s.max_generation_seconds, s.rate_limit_per_minute, s.max_active_jobs) == (512, 1.5, 0, 3)
    assert s.extra == {}


@pytest.mark.parametrize(
    ("env", "value", "message"),
    [
        ("TUNERY_MAX_REQUEST_BYTES", "0", "max_request_bytes must be positive, got '0'"),
        ("TUNERY_MAX_PROJECT_BYTES", "-1", "max_project_bytes must be at least 0, got '-1'"),
        ("TUNERY_MAX_GENERATION_SECONDS", "soon", "max_generation_seconds must be a number, got 'soon'"),
        ("TUNERY_RATE_LIMIT_BURST", "1.5", "rate_limit_burst must be an integer, got '1.5'"),
    ],
)
def test_bad_limits_name_the_setting(tmp_path, monkeypatch, env, value, message):
    monkeypatch.setenv(env, value)
    with pytest.raises(SettingsError, match=message):
        load_settings(tmp_path)
