"""A real `tunery serve` for the inference tests, serving the tiny Llama (alias "tiny") and two
random LoRA adapters registered as the project's fine-tuned model and checkpoint, exactly as the
job worker records them (a succeeded job's `fine_tuned_model`/`weights_path`, a checkpoint's
`model_name`/`path`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from api_support import ServerProcess, create_key
from serve_fixtures import random_lora, save_base

FT = "ft:tiny:default:serve:ftjob-serve1"
CKPT = FT + ":ckpt-step-4"


@dataclass
class TinyServer:
    process: ServerProcess
    key: str
    base: Path
    adapters: dict

    @property
    def base_url(self) -> str:
        return self.process.base_url


def register_fine_tune(home: Path, key: str, name: str, weights: Path, checkpoint: tuple[str, Path, int] | None = None) -> None:
    from tunery.jobs import states
    from tunery.store.context import open_store
    from tunery.store.jobs import Job, JobCheckpoint
    from tunery.store.keys import project_for_key
    from tunery.store.settings import load_settings

    store = open_store(load_settings(home))
    try:
        with store.db.session_scope() as s:
            project = project_for_key(s, key)
            job_id = name.rsplit(":", 1)[-1]
            s.add(Job(id=job_id, project_id=project.id, model="tiny", training_file="file-x", seed=1,
                      method={"type": "supervised"}, hyperparameters={}, options={}, status=states.SUCCEEDED,
                      fine_tuned_model=name, weights_path=str(weights), result_files=[]))
            s.flush()
            if checkpoint:
                ck_name, ck_path, step = checkpoint
                s.add(JobCheckpoint(id=f"ftckpt_{job_id}_{step}", job_id=job_id, step=step, path=str(ck_path), model_name=ck_name, metrics={}))
    finally:
        store.close()


def start_tiny_server(root: Path) -> TinyServer:
    base = save_base(root / "base")
    adapters = {FT: random_lora(base, root / "job" / "adapter", seed=1), CKPT: random_lora(base, root / "job" / "checkpoints" / "step-4", seed=2)}
    home = root / "home"
    env = {"TUNERY_MODEL_ALIASES": json.dumps({"tiny": str(base)})}
    key = create_key(home, **env)
    register_fine_tune(home, key, FT, adapters[FT], (CKPT, adapters[CKPT], 4))
    process = ServerProcess(home, env=env).start()
    return TinyServer(process, key, base, adapters)
