"""ft: and legacy model names: building, parsing, suffix validation."""

import pytest

from tunery.models.naming import (
    ModelName,
    checkpoint_model_name,
    fine_tuned_model_name,
    legacy_fine_tuned_model_name,
    parse_model_name,
    validate_suffix,
)


def test_name_strips_ftjob_prefix_and_round_trips():
    name = fine_tuned_model_name("gpt-4o-mini-2024-07-18", "acme", "support-bot_v2", "ftjob-abc123")
    assert name == "ft:gpt-4o-mini-2024-07-18:acme:support-bot_v2:abc123"
    assert parse_model_name(name) == ModelName("gpt-4o-mini-2024-07-18", "acme", "support-bot_v2", "abc123")


def test_empty_or_missing_suffix_gives_double_colon():
    assert fine_tuned_model_name("SmolLM2-135M-Instruct", "org", "", "ftjob-x1") == "ft:SmolLM2-135M-Instruct:org::x1"
    assert fine_tuned_model_name("SmolLM2-135M-Instruct", "org", None, "x1") == "ft:SmolLM2-135M-Instruct:org::x1"
    assert parse_model_name("ft:SmolLM2-135M-Instruct:org::x1").suffix == ""


def test_checkpoint_name_round_trips():
    name = checkpoint_model_name("ft:gpt-4o-mini-2024-07-18:acme::7qtWWEgP", 1000)
    assert name == "ft:gpt-4o-mini-2024-07-18:acme::7qtWWEgP:ckpt-step-1000"
    assert parse_model_name(name) == ModelName("gpt-4o-mini-2024-07-18", "acme", "", "7qtWWEgP", step=1000)


@pytest.mark.parametrize("bad", ["SmolLM2-135M-Instruct", "ft:gpt-4o-mini:acme::x:ckpt-step-2", "curie:ft-x-2021"])
def test_checkpoint_of_a_non_ft_name_is_refused(bad):
    with pytest.raises(ValueError, match="not a fine-tuned model name"):
        checkpoint_model_name(bad, 3)


@pytest.mark.parametrize("step", [-1, 1.5, True])
def test_checkpoint_step_must_be_a_non_negative_int(step):
    with pytest.raises(ValueError, match="non-negative integer"):
        checkpoint_model_name("ft:b:o::i", step)


def test_legacy_names():
    assert legacy_fine_tuned_model_name("curie", "org", None, 1614807860) == "curie:ft-org-2021-03-03-21-44-20"
    assert legacy_fine_tuned_model_name("curie", "acmeco", "custom-model-name", 1644898864) == (
        "curie:ft-acmeco:custom-model-name-2022-02-15-04-21-04"
    )
    assert parse_model_name("curie:ft-org-2021-03-03-21-44-20") == ModelName(
        "curie", "org", "", "2021-03-03-21-44-20", legacy=True
    )
    assert parse_model_name("davinci:ft-user-abc:custom-2022-02-15-04-21-04") == ModelName(
        "davinci", "user-abc", "custom", "2022-02-15-04-21-04", legacy=True
    )


@pytest.mark.parametrize(
    "name", ["gpt-4o-mini", "SmolLM2-135M-Instruct", "ft:only:three", "ft:b:o:s:", "curie:ft-org", "ft:b:o::i:ckpt-step-x"]
)
def test_other_names_parse_to_none(name):
    assert parse_model_name(name) is None


def test_suffix_limits():
    assert validate_suffix("a" * 64) == "a" * 64
    with pytest.raises(ValueError, match="^suffix must be at most 64 characters, got 65$"):
        validate_suffix("a" * 65)
    assert validate_suffix("a" * 40, legacy=True) == "a" * 40
    with pytest.raises(ValueError, match="^suffix must be at most 40 characters, got 41$"):
        validate_suffix("a" * 41, legacy=True)
    with pytest.raises(ValueError, match="at most 40"):
        legacy_fine_tuned_model_name("curie", "org", "a" * 41, 0)


@pytest.mark.parametrize("suffix, bad", [("my:model", ":"), ("has space", " "), ("dot.ted", "."), ("ümlaut", "ü")])
def test_suffix_characters(suffix, bad):
    with pytest.raises(ValueError, match=f"only letters, digits, '-' and '_'; got {bad!r}"):
        fine_tuned_model_name("base", "org", suffix, "ftjob-1")


@pytest.mark.parametrize("base, org, job", [("a:b", "org", "ftjob-1"), ("base", "", "ftjob-1"), ("base", "org", "ftjob-")])
def test_parts_must_not_break_the_name(base, org, job):
    with pytest.raises(ValueError, match="must be non-empty with no ':' or spaces"):
        fine_tuned_model_name(base, org, "", job)
