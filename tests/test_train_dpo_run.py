"""Whole DPO runs on the tiny random Llama, through `tunery.train.run` and `tunery train --method dpo`:
the loss starts at log 2 and falls, the preference metrics are named the same in events,
metrics.csv, checkpoints and result.json, and a resumed run continues exactly."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys

import pytest

from tunery.train import TrainConfig, run
from tunery.train.control import Control
from tunery.train.tiny import save_tiny_model

torch = pytest.importorskip("torch")

REWARDS = ("rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(save_tiny_model(tmp_path_factory.mktemp("tiny") / "model"))


def pairs(n, start=0):
    """The preference to learn: answer politely ("Yes, gladly.") rather than curtly ("No.")."""
    return [{"input": {"messages": [{"role": "user", "content": f"Request {i}: help me?"}]},
             "preferred_output": [{"role": "assistant", "content": "Yes, gladly."}],
             "non_preferred_output": [{"role": "assistant", "content": "No."}]} for i in range(start, start + n)]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def config(tmp_path, model_dir, rows=None, **kw):
    tmp_path.mkdir(parents=True, exist_ok=True)
    kw.setdefault("n_epochs", 3)
    kw.setdefault("batch_size", 4)
    kw.setdefault("num_threads", 1)
    kw.setdefault("learning_rate_multiplier", 100)
    kw.setdefault("precision", "fp32")
    kw.setdefault("objective", "dpo")
    return TrainConfig(training_file=write_jsonl(tmp_path / "train.jsonl", rows if rows is not None else pairs(8)),
                       out_dir=str(tmp_path / "out"), model=model_dir, **kw)


def read_events(out):
    return [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]


def test_a_dpo_run_starts_at_log_2_learns_the_preference_and_names_its_metrics_everywhere(tmp_path, model_dir):
    valid = write_jsonl(tmp_path / "valid.jsonl", pairs(3, start=100))
    result = run(config(tmp_path, model_dir, validation_file=valid, eval_every=2))
    out = tmp_path / "out"
    assert result.status == "succeeded", result.error
    steps = [e["data"] for e in read_events(out) if e["type"] == "metrics"]
    assert len(steps) == result.total_steps == 6  # 8 pairs / 4 a step, 3 epochs
    # Step 1's loss is measured before its update: the policy is the reference, so log 2 exactly.
    assert steps[0]["train_loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert steps[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-6)
    assert steps[-1]["train_loss"] < 0.5 * math.log(2)
    assert steps[-1]["rewards/accuracies"] == 1.0 and steps[-1]["rewards/margins"] > 0
    assert steps[-1]["rewards/chosen"] > steps[-1]["rewards/rejected"]
    assert steps[-1]["valid_loss"] < math.log(2) and steps[-1]["valid_rewards/accuracies"] == 1.0
    assert steps[0]["valid_loss"] is None and steps[1]["valid_loss"] is not None  # eval_every 2
    assert "train_mean_token_accuracy" not in steps[0]
    # metrics.csv: the same names, the same numbers
    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["step", "train_loss", "valid_loss", *REWARDS]
    assert [int(r["step"]) for r in rows] == list(range(1, 7))
    assert float(rows[-1]["rewards/margins"]) == pytest.approx(steps[-1]["rewards/margins"], abs=1e-6)
    assert rows[0]["valid_loss"] == "" and float(rows[1]["valid_loss"]) == pytest.approx(steps[1]["valid_loss"], abs=1e-6)
    # the result file and the checkpoints' metrics
    done = json.loads((out / "result.json").read_text())
    assert done["objective"] == "dpo" and done["method"] == "lora" and done["hyperparameters"]["beta"] == 0.1
    for key in ("train_loss", "valid_loss", "full_valid_loss", *REWARDS, "full_valid_rewards/accuracies"):
        assert done["final"][key] is not None, key
    assert done["final"]["rewards/accuracies"] == steps[-1]["rewards/accuracies"]
    checkpoint = [e for e in read_events(out) if e["type"] == "checkpoint"][-1]["data"]["metrics"]
    assert checkpoint == done["final"]
    # Events: pairs counted, the reference computed once
    messages = [e["message"] for e in read_events(out)]
    assert "Training file: 8 pairs" in messages[1] and sum("Reference log-probabilities" in m for m in messages) == 1
    assert (out / "adapter" / "adapter_config.json").is_file()
    # Billing: every token of both examples of every pair (prompt and output), each epoch
    file = next(e["data"] for e in read_events(out) if e["data"].get("file") == "training")
    assert result.trained_tokens == done["trained_tokens"] == 3 * file["tokens"]


def test_beta_bounds_and_a_supervised_run_refuses_beta(tmp_path, model_dir):
    for bad in (0, 2.5, "x"):
        result = run(config(tmp_path / str(bad), model_dir, beta=bad))
        assert result.status == "failed" and result.error["code"] == "invalid_hyperparameters" and result.error["param"] == "beta"
    chat = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}] * 4
    sup = TrainConfig(training_file=write_jsonl(tmp_path / "chat.jsonl", chat), out_dir=str(tmp_path / "sup"), model=model_dir, beta=0.5, num_threads=1)
    result = run(sup)
    assert result.status == "failed" and result.error["param"] == "beta"


def test_a_dpo_run_on_a_chat_file_and_a_supervised_run_on_a_preference_file_fail_naming_the_line(tmp_path, model_dir):
    chat = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}] * 4
    result = run(config(tmp_path / "a", model_dir, rows=chat))
    assert result.status == "failed" and result.error["code"] == "invalid_training_file" and "line 1" in result.error["message"]
    sup = TrainConfig(training_file=write_jsonl(tmp_path / "p.jsonl", pairs(4)), out_dir=str(tmp_path / "b"), model=model_dir, num_threads=1)
    result = run(sup)
    assert result.status == "failed" and "line 1" in result.error["message"] and "'dpo'" in result.error["message"]


def test_an_unknown_objective_is_refused(tmp_path, model_dir):
    result = run(config(tmp_path, model_dir, objective="rlhf"))
    assert result.status == "failed" and result.error["param"] == "objective"


def test_batch_size_counts_pairs(tmp_path, model_dir):
    result = run(config(tmp_path, model_dir, rows=pairs(3), batch_size=4))
    assert result.status == "failed" and result.error["code"] == "batch_size_too_large" and "3 trainable pair(s)" in result.error["message"]


def test_a_paused_and_resumed_dpo_run_matches_an_uninterrupted_one(tmp_path, model_dir):
    """Paused mid-epoch, the resumed run reads the reference from the checkpoint (no second pass)
    and ends with the same metrics and weights."""
    from safetensors.torch import load_file

    from tunery.train.control import Control

    whole = run(config(tmp_path / "whole", model_dir, n_epochs=2, batch_size=3))  # 8 pairs: 3 steps an epoch
    assert whole.status == "succeeded"
    control = Control()
    first = run(config(tmp_path / "cut", model_dir, n_epochs=2, batch_size=3),
                on_event=lambda e: e["type"] == "metrics" and e["data"]["step"] == 2 and control.pause(), control=control)
    assert first.status == "paused" and first.steps == 2
    resumed = run(config(tmp_path / "cut", model_dir, n_epochs=2, batch_size=3, resume=True))
    assert resumed.status == "succeeded" and resumed.steps == 6
    assert resumed.final == pytest.approx(whole.final, abs=1e-6)
    messages = [json.loads(line)["message"] for line in (tmp_path / "cut" / "out" / "events.jsonl").read_text().splitlines()]
    assert sum("Reference log-probabilities" in m for m in messages) == 1  # the first run's only
    a = load_file(str(tmp_path / "whole" / "out" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "out" / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_tunery_train_method_dpo_on_the_command_line(tmp_path, model_dir):
    train = write_jsonl(tmp_path / "train.jsonl", pairs(4))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TUNERY_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", "from tunery.cli.main import app; app()", "train", train, "--out", str(tmp_path / "out"), "--model", model_dir,
           "--method", "dpo", "--beta", "0.2", "--batch-size", "2", "--n-epochs", "1", "--precision", "fp32", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["status"] == "succeeded" and summary["hyperparameters"]["beta"] == 0.2
    assert set(REWARDS) <= set(summary["final"])
    bad = subprocess.run([*cmd[:-1], "--weights", "half"], capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "--weights" in bad.stderr
    clash = subprocess.run([*cmd[:9], "--method", "full", "--weights", "lora"], capture_output=True, text=True, env=env, timeout=120)
    assert clash.returncode == 2 and "contradicts" in clash.stderr


def test_full_fine_tuning_dpo_keeps_its_reference_in_the_checkpoint(tmp_path, model_dir):
    """Full weights have no adapter to switch off: the reference exists only as the cache computed
    before step 1, so a resumed run must read it back; recomputing it would score against the
    already-updated weights and change the result."""
    import torch

    kw = dict(method="full", n_epochs=2, batch_size=3, learning_rate_multiplier=1000)
    whole = run(config(tmp_path / "whole", model_dir, **kw))
    assert whole.status == "succeeded"
    steps = [e["data"] for e in read_events(tmp_path / "whole" / "out") if e["type"] == "metrics"]
    assert steps[0]["train_loss"] == pytest.approx(math.log(2), abs=1e-6) and steps[-1]["train_loss"] < steps[0]["train_loss"]
    control = Control()
    first = run(config(tmp_path / "cut", model_dir, **kw), on_event=lambda e: e["type"] == "metrics" and e["data"]["step"] == 2 and control.pause(), control=control)
    assert first.status == "paused"
    state = torch.load(tmp_path / "cut" / "out" / "checkpoints" / "step-2" / "trainer_state.pt", weights_only=True)
    assert state["ref_train"].shape == (8, 2) and state["ref_valid"] is None
    resumed = run(config(tmp_path / "cut", model_dir, resume=True, **kw))
    assert resumed.status == "succeeded" and resumed.final == pytest.approx(whole.final, abs=1e-6)


def test_show_masks_shows_both_outputs_of_a_pair_scored_after_the_same_prompt(tmp_path, model_dir):
    train = write_jsonl(tmp_path / "train.jsonl", pairs(2))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TUNERY_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", "from tunery.cli.main import app; app()", "train", train, "--out", str(tmp_path / "o"),
                           "--model", model_dir, "--method", "dpo", "--show-masks", "2"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "user\nRequest 0: help me?<|im_end|>\n<|im_start|>assistant\n[[Yes, gladly.<|im_end|>]]" in proc.stdout
    assert "user\nRequest 0: help me?<|im_end|>\n<|im_start|>assistant\n[[No.<|im_end|>]]" in proc.stdout
    assert "Request 1" not in proc.stdout and not (tmp_path / "o" / "result.json").exists()


def test_the_command_lines_method_and_weights():
    import typer

    from tunery.cli.train import _method

    assert _method("supervised", None) == ("supervised", "lora") and _method("dpo", "full") == ("dpo", "full")
    assert _method("full", None) == ("supervised", "full") and _method("lora", "lora") == ("supervised", "lora")  # as before
    for method, weights in (("full", "lora"), ("ppo", None), ("dpo", "half")):
        with pytest.raises(typer.BadParameter):
            _method(method, weights)


def test_lora_dropout_in_a_dpo_run_is_warned_about(tmp_path, model_dir):
    result = run(config(tmp_path, model_dir, lora_dropout=0.1, max_steps=1))
    assert result.status == "succeeded"
    warnings = [e for e in read_events(tmp_path / "out") if e["level"] == "warn" and "dropout" in e["message"]]
    assert len(warnings) == 1 and warnings[0]["data"] == {"lora_dropout": 0.1}
