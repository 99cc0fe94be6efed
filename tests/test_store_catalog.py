"""`tunery.store.catalog`: fine-tuned names found by an indexed query within one project, the
operator's base model table (aliases, registered models, the OpenAI rule) and the local mode."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from tunery.models.errors import TuneryModelError
from tunery.models.registered import save_registered
from tunery.store import catalog
from tunery.store.context import open_store
from tunery.store.jobs import Job, JobCheckpoint
from tunery.store.keys import get_or_create_project
from tunery.store.settings import load_settings


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.delenv("TUNERY_MODEL_ALIASES", raising=False)
    for var in ("TUNERY_OPENAI_MODELS_PATTERN", "TUNERY_OPENAI_MODELS_TARGET"):
        monkeypatch.delenv(var, raising=False)
    s = open_store(load_settings(tmp_path / "home"))
    yield s
    s.close()


def _job(session, project_id, job_id, name, weights, **kw):
    session.add(Job(id=job_id, project_id=project_id, model="gpt-4o-mini", training_file="file-x", seed=1, method={"type": "supervised"},
                    hyperparameters={}, options={}, status=kw.pop("status", "succeeded"), fine_tuned_model=name,
                    weights_path=str(weights), result_files=[], **kw))
    session.flush()


def test_fine_tuned_lookup_is_per_project_and_honours_status_and_deletion(store, tmp_path):
    with store.db.session_scope() as s:
        acme, other = get_or_create_project(s, "acme").id, get_or_create_project(s, "other").id
        _job(s, acme, "ftjob-a", "ft:gpt-4o-mini:acme::a", tmp_path)
        _job(s, acme, "ftjob-b", "ft:gpt-4o-mini:acme::b", tmp_path, model_deleted=True)
        _job(s, acme, "ftjob-c", "ft:gpt-4o-mini:acme::c", tmp_path, status="running")
        s.add(JobCheckpoint(id="ftckpt_a_2", job_id="ftjob-a", step=2, path=str(tmp_path / "ck"), model_name="ft:gpt-4o-mini:acme::a:ckpt-step-2"))
        s.flush()
        found = catalog.find_fine_tuned(s, acme, "ft:gpt-4o-mini:acme::a")
        assert (found.job_id, found.step, found.weights_path) == ("ftjob-a", None, str(tmp_path))
        assert catalog.find_fine_tuned(s, acme, "ft:gpt-4o-mini:acme::a:ckpt-step-2").step == 2
        assert catalog.find_fine_tuned(s, other, "ft:gpt-4o-mini:acme::a") is None
        assert catalog.find_fine_tuned(s, other, "ft:gpt-4o-mini:acme::a:ckpt-step-2") is None
        assert catalog.find_fine_tuned(s, acme, "ft:gpt-4o-mini:acme::b") is None
        assert catalog.find_fine_tuned(s, acme, "ft:gpt-4o-mini:acme::c") is None


def test_lookups_search_the_name_index_not_the_project(store):
    """The query plans: each lookup seeks the model-name index; none scans a table or the project's rows."""
    with store.db.engine.connect() as conn:
        for query in (catalog.job_query("proj_x", "ft:a:b::c"), catalog.checkpoint_query("proj_x", "ft:a:b::c:ckpt-step-1")):
            sql = str(query.compile(store.db.engine, compile_kwargs={"literal_binds": True}))
            plan = " | ".join(row[3] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql))
            assert "SCAN" not in plan, plan
            assert ("ix_fine_tuning_jobs_model_project (fine_tuned_model=? AND project_id=?)" in plan
                    or "ix_fine_tuning_job_checkpoints_model_name (model_name=?)" in plan), plan


def test_an_existing_database_gets_the_new_index(tmp_path):
    settings = load_settings(tmp_path / "home")
    store = open_store(settings)
    with store.db.engine.begin() as conn:  # a database made before the index was declared
        conn.execute(text("DROP INDEX ix_fine_tuning_jobs_model_project"))
    store.close()
    store = open_store(settings)
    with store.db.engine.connect() as conn:
        names = {row[0] for row in conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'index'"))}
    store.close()
    assert "ix_fine_tuning_jobs_model_project" in names


def test_base_names_follow_the_operators_table(store, monkeypatch):
    settings = store.settings
    assert catalog.base_spec(settings, "gpt-4.1-mini") == "default"  # the default rule: the packaged model
    assert catalog.base_spec(settings, "o4-mini") == "default"
    assert catalog.base_spec(settings, "/etc") is None and catalog.base_spec(settings, "org/name") is None
    save_registered(settings.models_file, {"team": "/models/team"})
    assert catalog.base_spec(settings, "team") == "/models/team"
    assert "team" in catalog.base_names(settings)
    monkeypatch.setenv("TUNERY_OPENAI_MODELS_TARGET", "team")
    monkeypatch.setenv("TUNERY_OPENAI_MODELS_PATTERN", r"gpt-.*")
    ruled = load_settings(settings.home)
    assert catalog.base_spec(ruled, "gpt-4.1-mini") == "/models/team"
    assert catalog.base_spec(ruled, "o4-mini") is None
    monkeypatch.setenv("TUNERY_OPENAI_MODELS_PATTERN", "off")
    assert catalog.base_spec(load_settings(settings.home), "gpt-4.1-mini") is None


def test_a_broken_table_is_unusable_not_a_leak(store):
    store.settings.models_file.write_text("{not json")
    with pytest.raises(catalog.ModelUnusable) as info:
        catalog.base_spec(store.settings, "team")
    assert str(store.settings.home) not in str(info.value)


def test_remote_refuses_paths_local_accepts_them(store, tmp_path):
    from tunery.train.tiny import save_tiny_model

    folder = save_tiny_model(tmp_path / "tiny")
    with store.db.session_scope() as s:
        with pytest.raises(catalog.ModelNotAvailable) as info:
            catalog.resolve(s, store.settings, "proj_x", str(folder))
        assert str(info.value) == f"The model `{folder}` does not exist or you do not have access to it."
        local = catalog.resolve(s, store.settings, "proj_x", str(folder), remote=False)
        assert (local.kind, local.path) == ("base", folder)
        with pytest.raises(TuneryModelError):
            catalog.resolve(s, store.settings, "proj_x", str(tmp_path / "nothing"), remote=False)


def test_bad_pattern_setting_is_a_settings_error(tmp_path, monkeypatch):
    from tunery.store.settings import SettingsError

    monkeypatch.setenv("TUNERY_OPENAI_MODELS_PATTERN", "gpt-(")
    with pytest.raises(SettingsError, match="openai_models_pattern is not a valid regular expression"):
        load_settings(tmp_path)
