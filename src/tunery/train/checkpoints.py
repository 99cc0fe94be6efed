"""Checkpoints: `DIR/checkpoints/step-N/` = the weights (PEFT adapter or safetensors), the
tokenizer, and `trainer_state.pt` (step, optimizer, RNG states, data fingerprint) to resume from.

Each checkpoint is written into a temporary folder and renamed into place, so a crash (SIGKILL)
mid-write never leaves a half checkpoint that a resume would pick up.

Loading runs no code from the folder: weights are safetensors, and `trainer_state.pt` is read
with `torch.load(weights_only=True)` (tensors, numbers, strings and containers only), so a
crafted checkpoint is refused with a `TrainError` instead of unpickling arbitrary objects.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from .errors import TrainError

STATE_FILE = "trainer_state.pt"


def save_weights(model, tokenizer, folder: Path, method: str) -> None:
    """Adapter (PEFT format) or full weights (safetensors), plus the tokenizer and chat template."""
    if method == "lora":
        model.save_pretrained(str(folder))
    else:
        model.save_pretrained(str(folder), safe_serialization=True)
    tokenizer.save_pretrained(str(folder))


def save_atomic(write, final: Path) -> Path:
    """Run `write(tmp_folder)` then rename the folder to `final` (replacing an older one)."""
    tmp = final.with_name(f".tmp-{final.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    if final.exists():
        old = final.with_name(f".old-{final.name}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    return final


def save_checkpoint(root: Path, step: int, model, tokenizer, method: str, state: dict) -> Path:
    import torch

    def write(folder: Path) -> None:
        save_weights(model, tokenizer, folder, method)
        torch.save(state, folder / STATE_FILE)
        (folder / "trainer_state.json").write_text(json.dumps({k: state[k] for k in ("step", "epoch", "kind", "metrics") if k in state}, indent=2))

    return save_atomic(write, root / f"step-{step}")


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.glob("step-*") if p.name[5:].isdigit() and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def prune(root: Path, keep: int) -> None:
    for old in list_checkpoints(root)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)


def clean_partial(root: Path) -> None:
    """Remove temporary folders a killed run left behind."""
    for leftover in list(root.glob(".tmp-*")) + list(root.glob(".old-*")) if root.is_dir() else []:
        shutil.rmtree(leftover, ignore_errors=True)


def load_checkpoint(folder: Path, model, method: str) -> dict:
    """Load weights from `folder` into `model`; return the trainer state (read first: it is checked)."""
    from safetensors.torch import load_file

    state = load_state(folder)

    if method == "lora":
        from peft.utils import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(str(folder / "adapter_model.safetensors")))
    else:
        weights = {}
        for file in sorted(folder.glob("*.safetensors")):
            weights.update(load_file(str(file)))
        missing, unexpected = model.load_state_dict(weights, strict=False)
        tied = {k for k in missing if "lm_head" in k and getattr(model.config, "tie_word_embeddings", False)}
        if set(missing) - tied or unexpected:
            raise RuntimeError(f"checkpoint {folder} does not match the model (missing {sorted(set(missing) - tied)[:3]}, unexpected {unexpected[:3]})")
    return state


def load_state(folder: Path) -> dict:
    """The trainer state of checkpoint `folder`, refusing anything but plain data."""
    import pickle

    import torch

    try:
        state = torch.load(folder / STATE_FILE, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError:
        raise TrainError(
            "invalid_checkpoint",
            f"Checkpoint {folder.name}: {STATE_FILE} holds objects other than tensors and plain data; "
            "refusing to load it (unpickling them could run code)",
            "resume",
        ) from None
    except (OSError, RuntimeError, EOFError) as exc:
        raise TrainError("invalid_checkpoint", f"Checkpoint {folder.name}: {STATE_FILE} cannot be read ({type(exc).__name__})", "resume") from None
    if not isinstance(state, dict):
        raise TrainError("invalid_checkpoint", f"Checkpoint {folder.name}: {STATE_FILE} is not a trainer state", "resume")
    return state
