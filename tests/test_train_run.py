"""Whole runs on a tiny random Llama: outputs, metrics, events, and every bad-input error."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tunery.train import TrainConfig, run
from tunery.train.tiny import save_tiny_model

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(save_tiny_model(tmp_path_factory.mktemp("tiny") / "model"))


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def chats(n, answer=lambda i: str(i % 5)):
    return [{"messages": [{"role": "user", "content": f"Review {i}: fine"}, {"role": "assistant", "content": answer(i)}]} for i in range(n)]


def config(tmp_path, model_dir, rows=None, **kw):
    tmp_path.mkdir(parents=True, exist_ok=True)
    train = write_jsonl(tmp_path / "train.jsonl", rows if rows is not None else chats(12))
    kw.setdefault("n_epochs", 2)
    kw.setdefault("batch_size", 4)
    kw.setdefault("num_threads", 1)
    kw.setdefault("learning_rate_multiplier", 20)
    return TrainConfig(training_file=train, out_dir=str(tmp_path / "out"), model=model_dir, **kw)


def read_events(out):
    return [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]


def test_a_run_writes_every_output_of_the_contract(tmp_path, model_dir):
    valid = write_jsonl(tmp_path / "valid.jsonl", chats(5))
    seen = []
    result = run(config(tmp_path, model_dir, n_epochs=4, batch_size=3, validation_file=valid, eval_every=2), on_event=seen.append)
    out = tmp_path / "out"
    assert result.status == "succeeded" and result.exit_code == 0
    assert (result.steps, result.total_steps) == (16, 16)
    # Billable tokens: every token of the 12 examples, once per epoch.
    from tunery.train.records import read_records
    from tunery.train.tiny import tiny_tokenizer
    from tunery.train.tokenize import Tokenizer

    tokens = Tokenizer(tiny_tokenizer(), 512, 0.01).encode_all(read_records(tmp_path / "train.jsonl")).tokens
    done = json.loads((out / "result.json").read_text())
    assert done["trained_tokens"] == result.trained_tokens == tokens * 4
    assert done["status"] == "succeeded" and done["steps"] == 16 and done["epochs"] == 4 and done["method"] == "lora"
    assert done["base_model_path"] == model_dir and done["output_path"] == str(out / "adapter")
    assert done["hyperparameters"]["n_epochs"] == 4 and done["hyperparameters"]["batch_size"] == 3
    assert done["hyperparameters"]["learning_rate_multiplier"] == 20
    assert done["final"]["full_valid_loss"] is not None
    adapter_config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == model_dir and adapter_config["r"] == 16
    assert (out / "adapter" / "adapter_model.safetensors").is_file() and (out / "adapter" / "tokenizer.json").is_file()
    assert "chat_template" in (out / "adapter" / "chat_template.jinja").read_text() or (out / "adapter" / "chat_template.jinja").read_text().startswith("{% for message")
    # Epoch checkpoints at steps 4, 8, 12, 16; the last 3 kept.
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-12", "step-16", "step-8"]
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert list(rows[0]) == ["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"]
    assert [int(r["step"]) for r in rows] == list(range(1, 17))
    assert [r["valid_loss"] != "" for r in rows] == [s % 2 == 0 for s in range(1, 17)]
    assert float(rows[-1]["train_loss"]) < float(rows[0]["train_loss"])
    events = read_events(out)
    assert events == seen
    metrics = [e for e in events if e["type"] == "metrics"]
    assert len(metrics) == 16 and metrics[1]["message"].startswith("Step 2/16: training loss=") and ", validation loss=" in metrics[1]["message"]
    assert set(metrics[-1]["data"]) >= {"step", "total_steps", "train_loss", "train_mean_token_accuracy", "valid_loss", "valid_mean_token_accuracy",
                                        "full_valid_loss", "full_valid_mean_token_accuracy", "tokens_per_second", "eta_seconds", "epoch"}
    assert metrics[-1]["data"]["epoch"] == 4 and metrics[-1]["data"]["eta_seconds"] == 0
    checkpoints = [e["data"] for e in events if e["type"] == "checkpoint"]
    assert [c["step"] for c in checkpoints] == [4, 8, 12, 16] and checkpoints[0]["epoch"] == 1
    assert events[-1]["type"] == "status" and events[-1]["data"]["status"] == "succeeded"
    # events reach users (a job's, through the API): paths in them are relative to the output folder
    assert [c["path"] for c in checkpoints] == ["checkpoints/step-4", "checkpoints/step-8", "checkpoints/step-12", "checkpoints/step-16"]
    assert events[-1]["message"] == "Training succeeded: adapter written" and events[-1]["data"]["output_path"] == "adapter"
    assert str(tmp_path) not in json.dumps(events)


def test_same_seed_same_result_and_the_model_learns(tmp_path, model_dir):
    rows = chats(8, answer=lambda i: "yes")
    a = run(config(tmp_path / "a", model_dir, rows, n_epochs=8, seed=3))
    b = run(config(tmp_path / "b", model_dir, rows, n_epochs=8, seed=3))
    assert a.final == b.final
    from safetensors.torch import load_file

    wa = load_file(str(tmp_path / "a" / "out" / "adapter" / "adapter_model.safetensors"))
    wb = load_file(str(tmp_path / "b" / "out" / "adapter" / "adapter_model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    losses = [float(r["train_loss"]) for r in csv.DictReader((tmp_path / "a" / "out" / "metrics.csv").open())]
    assert losses[-1] < losses[0] - 0.4, losses


def test_without_shuffle_the_batches_follow_the_file(tmp_path, model_dir):
    """LoRA starts as the base model (B = 0), so step 1's loss depends only on which examples form
    the batch: the same across seeds in file order, different across seeds when shuffled."""
    rows = [{"messages": [{"role": "user", "content": f"Review {i}: " + "fine " * (i % 7)}, {"role": "assistant", "content": "yes " * (1 + i % 3)}]} for i in range(12)]

    def first_loss(name, **kw):
        run(config(tmp_path / name, model_dir, rows, n_epochs=1, max_steps=1, **kw))
        return float(next(csv.DictReader((tmp_path / name / "out" / "metrics.csv").open()))["train_loss"])

    assert first_loss("a", seed=1, shuffle=False) == first_loss("b", seed=2, shuffle=False)
    assert first_loss("c", seed=1) != first_loss("d", seed=2)


def test_full_fine_tuning_writes_safetensors_weights(tmp_path, model_dir):
    result = run(config(tmp_path, model_dir, method="full", n_epochs=1, learning_rate_multiplier=1))
    assert result.status == "succeeded"
    model = tmp_path / "out" / "model"
    assert (model / "model.safetensors").is_file() and (model / "config.json").is_file() and (model / "tokenizer.json").is_file()
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(str(model))  # loads as a plain model


def test_prompt_completion_records_train(tmp_path, model_dir):
    rows = [{"prompt": f"Review {i} ->", "completion": f" {i % 5}\n"} for i in range(10)]
    result = run(config(tmp_path, model_dir, rows, n_epochs=1, batch_size=5))
    assert result.status == "succeeded" and result.steps == 2


def assert_failed(tmp_path, result, code, message_part, param=None):
    out = tmp_path / "out"
    assert result.status == "failed" and result.exit_code == 1
    error = json.loads((out / "error.json").read_text())
    assert error["code"] == code and message_part in error["message"]
    if param:
        assert error["param"] == param
    assert not (out / "result.json").exists() and not (out / "adapter").exists()
    last = read_events(out)[-1]
    assert last["level"] == "error" and last["data"]["error"] == error


def test_unknown_model(tmp_path):
    result = run(config(tmp_path, "no-such-org/no-such-model"))
    assert_failed(tmp_path, result, "model_not_found", "no-such-org/no-such-model", "model")


def test_no_trainable_tokens(tmp_path, model_dir):
    rows = [{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "weight": 0}]}] * 10
    assert_failed(tmp_path, run(config(tmp_path, model_dir, rows)), "no_trainable_tokens", "has no trainable tokens", "training_file")


def test_every_example_over_the_context(tmp_path, model_dir):
    rows = chats(10, answer=lambda i: "x" * 200)
    assert_failed(tmp_path, run(config(tmp_path, model_dir, rows, max_length=64)), "all_examples_too_long", "longer than the context (64 tokens)")


def test_batch_size_larger_than_the_data(tmp_path, model_dir):
    result = run(config(tmp_path, model_dir, chats(3), batch_size=8))
    assert_failed(tmp_path, result, "batch_size_too_large", "batch_size 8 is larger than the 3", "batch_size")


def test_unreadable_validation_file(tmp_path, model_dir):
    result = run(config(tmp_path, model_dir, validation_file=str(tmp_path / "nope.jsonl")))
    assert_failed(tmp_path, result, "invalid_validation_file", "Validation file not found", "validation_file")


def test_out_of_memory_is_reported_as_such(tmp_path):
    # One packed row of 256 x ~4,000 tokens: its attention mask alone would need ~1 TB, a real
    # allocation failure in the real forward pass.
    long_model = str(save_tiny_model(tmp_path / "long-model", context=8192))
    rows = chats(256, answer=lambda i: "y" * 4000)
    result = run(config(tmp_path, long_model, rows, n_epochs=1, batch_size=256, micro_batch_tokens=10**7))
    assert_failed(tmp_path, result, "out_of_memory", "Out of memory during training", "batch_size")


def test_a_finished_output_folder_is_not_overwritten(tmp_path, model_dir):
    cfg = config(tmp_path, model_dir, n_epochs=1)
    assert run(cfg).status == "succeeded"
    before = (tmp_path / "out" / "result.json").read_text()
    again = run(cfg)
    assert again.status == "failed" and again.error["code"] == "output_exists"
    assert (tmp_path / "out" / "result.json").read_text() == before


def test_subprocess_entry_point_and_cli_exit_codes(tmp_path, model_dir):
    cfg = config(tmp_path, model_dir, batch_size=50)  # too large for 12 examples
    (tmp_path / "c.json").write_text(json.dumps(cfg.to_dict()))
    env = {**os.environ, "TUNERY_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "tunery.train", "--config", str(tmp_path / "c.json")], capture_output=True, text=True, env=env)
    assert proc.returncode == 1
    assert "error: batch_size 50 is larger than the 12" in proc.stderr and "Traceback" not in proc.stderr
    assert json.loads((tmp_path / "out" / "error.json").read_text())["code"] == "batch_size_too_large"

    tunery = [str(Path(sys.executable).parent / "tunery"), "train", cfg.training_file, "--model", model_dir]
    proc = subprocess.run([*tunery, "--out", str(tmp_path / "cli"), "--n-epochs", "1", "--batch-size", "4", "--json"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["status"] == "succeeded" and summary["steps"] == 3
    assert summary["tokens_per_second"] > 0 and summary["peak_memory_mb"] > 0 and summary["train_loss"] > 0

    proc = subprocess.run([*tunery, "--out", str(tmp_path / "cli2"), "--show-masks", "1"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0
    assert "Example 1 (line 1):" in proc.stdout and "<|im_start|>assistant\n[[0<|im_end|>]]" in proc.stdout
    assert not (tmp_path / "cli2" / "result.json").exists()
