"""Cancel, pause/resume and crash/resume, through the real subprocess entry point and signals."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tunery.train import TrainConfig, run
from tunery.train.control import Control
from tunery.train.tiny import save_tiny_model

torch = pytest.importorskip("torch")
ENV = {**os.environ, "TUNERY_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(save_tiny_model(tmp_path_factory.mktemp("tiny") / "model"))


def make_config(tmp_path, model_dir, name, **kw) -> TrainConfig:
    data = tmp_path / "train.jsonl"
    if not data.exists():
        rows = [{"messages": [{"role": "user", "content": f"Review {i}: " + "ok " * (i % 4)}, {"role": "assistant", "content": str(i % 5)}]} for i in range(12)]
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    kw = {"n_epochs": 4, "batch_size": 4, "learning_rate_multiplier": 10, "num_threads": 1, "seed": 7, **kw}
    return TrainConfig(training_file=str(data), out_dir=str(tmp_path / name), model=model_dir, **kw)


def adapter(out):
    from safetensors.torch import load_file

    return load_file(str(out / "adapter" / "adapter_model.safetensors"))


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def start(config: TrainConfig, tmp_path, resume=False):
    path = tmp_path / f"{os.path.basename(config.out_dir)}.json"
    path.write_text(json.dumps(config.to_dict()))
    return subprocess.Popen([sys.executable, "-m", "tunery.train", "--config", str(path), *(["--resume"] if resume else [])],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_event(out, predicate, proc, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        path = out / "events.jsonl"
        if path.exists():
            for line in path.read_text().splitlines():
                if line.endswith("}") and predicate(json.loads(line)):
                    return
        assert proc.poll() is None, f"exited early ({proc.returncode}): {proc.stderr.read()}"
        time.sleep(0.02)
    raise AssertionError("event never came")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, model_dir):
    tmp = tmp_path_factory.mktemp("ref")
    result = run(make_config(tmp, model_dir, "ref"))
    assert result.status == "succeeded"
    return tmp / "ref"


def metric_rows(out):
    return [(r["step"], r["train_loss"]) for r in csv.DictReader((out / "metrics.csv").open())]


def test_pause_then_resume_gives_the_uninterrupted_result(tmp_path, model_dir, uninterrupted):
    config = make_config(tmp_path, model_dir, "run")
    out = tmp_path / "run"
    proc = start(config, tmp_path)
    wait_for_event(out, lambda e: e["type"] == "metrics" and e["data"]["step"] == 4, proc)
    proc.send_signal(signal.SIGUSR1)
    assert proc.wait(timeout=60) == 75
    paused = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()][-1]
    assert paused["type"] == "status" and paused["data"]["status"] == "paused"
    step = paused["data"]["step"]
    assert 4 <= step < 12 and (out / "checkpoints" / f"step-{step}" / "trainer_state.pt").is_file()
    assert paused["data"]["path"] == f"checkpoints/step-{step}"  # relative: events are shown to users
    assert not (out / "result.json").exists() and not (out / "adapter").exists()

    proc = start(config, tmp_path, resume=True)
    assert proc.wait(timeout=240) == 0, proc.stderr.read()
    assert_same_weights(adapter(out), adapter(uninterrupted))
    assert metric_rows(out) == metric_rows(uninterrupted)
    assert json.loads((out / "result.json").read_text())["trained_tokens"] == json.loads((uninterrupted / "result.json").read_text())["trained_tokens"]


def test_crash_then_resume_restarts_from_the_last_checkpoint(tmp_path, model_dir, uninterrupted):
    config = make_config(tmp_path, model_dir, "run")
    out = tmp_path / "run"
    proc = start(config, tmp_path)
    wait_for_event(out, lambda e: e["type"] == "metrics" and e["data"]["step"] == 7, proc)  # epoch 2 ended at step 6
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (out / "result.json").exists()
    proc = start(config, tmp_path, resume=True)
    assert proc.wait(timeout=240) == 0, proc.stderr.read()
    resumed = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines() if "Resumed from checkpoint" in line]
    assert resumed and resumed[-1]["data"]["step"] in (6, 7)
    assert resumed[-1]["data"]["path"] == f"checkpoints/step-{resumed[-1]['data']['step']}"
    assert str(tmp_path) not in (out / "events.jsonl").read_text()
    assert_same_weights(adapter(out), adapter(uninterrupted))
    assert metric_rows(out) == metric_rows(uninterrupted)


def test_cancel_stops_within_seconds_and_leaves_nothing_finished(tmp_path, model_dir):
    config = make_config(tmp_path, model_dir, "run", n_epochs=40)
    out = tmp_path / "run"
    proc = start(config, tmp_path)
    wait_for_event(out, lambda e: e["type"] == "metrics", proc)
    sent = time.time()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 130
    assert time.time() - sent < 10
    assert not (out / "result.json").exists() and not (out / "adapter").exists() and not (out / "error.json").exists()
    last = json.loads((out / "events.jsonl").read_text().splitlines()[-1])
    assert last["data"]["status"] == "cancelled"


def test_resume_refuses_a_checkpoint_from_other_settings(tmp_path, model_dir):
    control = Control()
    first = run(make_config(tmp_path, model_dir, "run"), on_event=lambda e: e["type"] == "metrics" and control.pause(), control=control)
    assert first.status == "paused" and first.exit_code == 75 and first.steps == 1
    other = run(make_config(tmp_path, model_dir, "run", seed=8, resume=True))
    assert other.status == "failed" and other.error["code"] == "resume_mismatch"
    again = run(make_config(tmp_path, model_dir, "run", resume=True))
    assert again.status == "succeeded" and again.steps == 12


def test_a_crash_while_writing_the_outputs_resumes_to_the_same_result(tmp_path, model_dir, uninterrupted):
    import shutil

    out = tmp_path / "ref"
    shutil.copytree(uninterrupted, out)
    (out / "result.json").unlink()  # killed after the last checkpoint, before the success marker
    shutil.rmtree(out / "adapter")
    result = run(make_config(tmp_path, model_dir, "ref", resume=True))
    assert result.status == "succeeded" and result.steps == 12
    assert result.final == json.loads((uninterrupted / "result.json").read_text())["final"]
    assert_same_weights(adapter(out), adapter(uninterrupted))
