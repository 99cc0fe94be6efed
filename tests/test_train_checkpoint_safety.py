"""A crafted checkpoint folder cannot run code when a run is resumed from it."""

import json
import subprocess
import sys

import pytest

from tunery.train import TrainConfig, run
from tunery.train.checkpoints import STATE_FILE, list_checkpoints
from tunery.train.tiny import save_tiny_model

torch = pytest.importorskip("torch")


class Payload:
    """Unpickling this writes a marker file: what an attacker's checkpoint would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))  # creating the file is the code that must never run


def make_config(tmp_path, model_dir, **kw) -> TrainConfig:
    data = tmp_path / "train.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"Review {i}"}, {"role": "assistant", "content": str(i % 3)}]} for i in range(12)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    kw = {"n_epochs": 1, "batch_size": 4, "num_threads": 1, "seed": 3, **kw}
    return TrainConfig(training_file=str(data), out_dir=str(tmp_path / "out"), model=model_dir, **kw)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(save_tiny_model(tmp_path_factory.mktemp("tiny") / "model"))


def test_a_real_checkpoint_still_resumes(tmp_path, model_dir):
    """The safe loader reads what the trainer writes (optimizer, scheduler, RNG states); the
crash/resume runs of test_train_control resume through it."""
    first = run(make_config(tmp_path, model_dir))
    assert first.status == "succeeded", first.error
    out = tmp_path / "out"
    [*_, last] = list_checkpoints(out / "checkpoints")
    state = torch.load(last / STATE_FILE, weights_only=True)  # no error: plain data only
    assert state["step"] == 3 and isinstance(state["python_rng"], tuple)


def test_a_crafted_trainer_state_is_refused_without_running_it(tmp_path, model_dir):
    cfg = make_config(tmp_path, model_dir)
    step = tmp_path / "out" / "checkpoints" / "step-2"
    step.mkdir(parents=True)
    marker = tmp_path / "pwned"
    torch.save({"step": 2, "kind": "periodic", "trap": Payload(marker)}, step / STATE_FILE)
    # sanity: the file really runs code when unpickled the unsafe way
    torch.load(step / STATE_FILE, weights_only=False)
    assert marker.exists()
    marker.unlink()

    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(cfg.to_dict()))
    proc = subprocess.run([sys.executable, "-m", "tunery.train", "--config", str(config_path), "--resume"],
                          capture_output=True, text=True, timeout=300)
    assert not marker.exists(), "the checkpoint ran code"
    assert proc.returncode == 1, proc.stderr
    error = json.loads((tmp_path / "out" / "error.json").read_text())
    assert error["code"] == "invalid_checkpoint" and error["param"] == "resume"
    assert error["message"] == (
        f"Checkpoint step-2: {STATE_FILE} holds objects other than tensors and plain data; "
        "refusing to load it (unpickling them could run code)"
    )
    assert str(tmp_path) not in error["message"]


def test_a_truncated_trainer_state_is_a_clear_error(tmp_path, model_dir):
    step = tmp_path / "out" / "checkpoints" / "step-1"
    step.mkdir(parents=True)
    (step / STATE_FILE).write_bytes(b"PK\x03\x04 not a whole file")
    result = run(make_config(tmp_path, model_dir, resume=True))
    assert result.status == "failed"
    assert result.error["code"] == "invalid_checkpoint"
    assert result.error["message"].startswith(f"Checkpoint step-1: {STATE_FILE} cannot be read")
