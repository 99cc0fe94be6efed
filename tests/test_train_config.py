"""Hyperparameters: OpenAI's auto rules, bounds, and the learning-rate schedule."""

import pytest

from tunery.train.config import Hyperparameters, TrainConfig, lr_factor, resolve_hyperparameters
from tunery.train.errors import TrainError


def hp(n, **kw):
    return resolve_hyperparameters(TrainConfig(training_file="t", out_dir="o", **kw), n)


def test_auto_rules_follow_openai():
    ten = hp(10)
    assert (ten.n_epochs, ten.batch_size, ten.learning_rate_multiplier) == (10, 1, 1.0)
    assert ten.learning_rate == 2e-4 and ten.total_steps == 100 and ten.steps_per_epoch == 10
    assert (hp(1000).n_epochs, hp(1000).batch_size) == (3, 2)
    assert (hp(20_000).n_epochs, hp(20_000).batch_size) == (1, 40)
    assert hp(100, method="full").learning_rate == 2e-5


def test_numbers_override_auto_and_a_partial_last_batch_is_kept():
    h = hp(10, n_epochs=2, batch_size=3, learning_rate_multiplier=0.5)
    assert (h.n_epochs, h.batch_size, h.steps_per_epoch, h.total_steps) == (2, 3, 4, 8)
    assert h.learning_rate == pytest.approx(1e-4)
    assert hp(10, n_epochs=2, max_steps=5).total_steps == 5


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("n_epochs", 0, "n_epochs must be between 1 and 50, got 0"),
        ("n_epochs", 2.5, "n_epochs must be 'auto' or an integer, got 2.5"),
        ("batch_size", 300, "batch_size must be between 1 and 256, got 300"),
        ("learning_rate_multiplier", 0, "learning_rate_multiplier must be greater than 0, got 0"),
        ("learning_rate_multiplier", "fast", "learning_rate_multiplier must be 'auto' or a number, got 'fast'"),
    ],
)
def test_out_of_range_hyperparameters_are_errors(field, value, message):
    with pytest.raises(TrainError) as err:
        hp(100, **{field: value})
    assert (err.value.code, err.value.param, err.value.message) == ("invalid_hyperparameters", field, message)


def test_batch_size_larger_than_the_data():
    with pytest.raises(TrainError) as err:
        hp(5, batch_size=8)
    assert err.value.code == "batch_size_too_large"
    assert err.value.message == "batch_size 8 is larger than the 5 trainable example(s) in the training file"


def test_schedule_warms_up_then_decays_linearly_to_zero():
    h = Hyperparameters(n_epochs=1, batch_size=1, learning_rate_multiplier=1, learning_rate=1, total_steps=100, steps_per_epoch=100, warmup_steps=5)
    assert [lr_factor(s, h) for s in range(5)] == pytest.approx([1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6])
    assert lr_factor(5, h) == 1.0
    assert lr_factor(99, h) == pytest.approx(1 / 95)
    assert hp(1000).warmup_steps == 10 and hp(10, n_epochs=1).warmup_steps == 0


def test_config_round_trips_through_json_and_rejects_unknown_fields(tmp_path):
    cfg = TrainConfig(training_file="t.jsonl", out_dir="o", n_epochs=3, lora_targets=["q_proj"])
    path = tmp_path / "c.json"
    import json

    path.write_text(json.dumps(cfg.to_dict()))
    assert TrainConfig.from_json_file(path) == cfg
    with pytest.raises(TrainError, match="Unknown config field"):
        TrainConfig.from_dict({"training_file": "t", "out_dir": "o", "epochs": 3})
