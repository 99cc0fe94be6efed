"""Convert a GGUF file once into a cached Hugging Face safetensors folder.

transformers dequantizes GGUF tensors to float32 on load, so the folder is saved in float32:
that is the exact dtype of the dequantized weights (Q4_1 values are fp16 scale * q + fp16 min,
which bf16 cannot hold), hence the saved model computes the same logits as the GGUF load.

The folder is built in a temp dir next to its final place and renamed into place, with a marker
file written last; a crash leaves only a temp dir (removed by the next conversion), never a folder
that looks complete. A file lock serializes conversions between processes (server, worker, tests).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from tunery.models.errors import ModelConversionError

MARKER = "tunery-source.json"
_TMP_DIR = ".tmp"


def cache_root() -> Path:
    """Tunery's cache (`$TUNERY_CACHE`, default `~/.cache/tunery`)."""
    return Path(os.environ.get("TUNERY_CACHE") or Path.home() / ".cache" / "tunery").expanduser()


def gguf_key(gguf: Path) -> dict:
    """What identifies a GGUF file's contents cheaply: its name, size and modification time."""
    stat = gguf.stat()
    return {"gguf_file": gguf.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def is_converted(folder: Path, key: dict) -> bool:
    """True when `folder` is a finished conversion of the GGUF identified by `key`."""
    try:
        marker = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return marker.get("source") == key


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_converted(gguf: Path, folder: Path, on_convert: Callable[[str], None] | None = None) -> Path:
    """Return `folder`, converting `gguf` into it first unless a finished conversion is there."""
    key = gguf_key(gguf)
    if is_converted(folder, key):
        return folder
    try:
        return _convert_locked(gguf, folder, key, on_convert)
    except OSError as exc:  # unwritable cache, disk full: one line, not a traceback
        raise ModelConversionError(
            f"cannot write the converted model to {folder}: {exc.strerror or exc}; set $TUNERY_CACHE to a writable folder"
        ) from exc


def _convert_locked(gguf: Path, folder: Path, key: dict, on_convert) -> Path:
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _locked(folder.parent / f".{folder.name}.lock"):
        if is_converted(folder, key):  # another process finished it while we waited
            return folder
        # Temp dirs live in .tmp/<name>/ (same filesystem, so rename is atomic); holding the lock,
        # anything there is a crashed conversion's leftover.
        scratch = folder.parent / _TMP_DIR / folder.name
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        if on_convert:
            on_convert(f"Converting {gguf.name} to safetensors in {folder} (once, ~30 s)")
        tmp = Path(tempfile.mkdtemp(dir=scratch))
        try:
            _convert(gguf, tmp)
            (tmp / MARKER).write_text(json.dumps({"source": key, "gguf_path": str(gguf)}, indent=2))
            if folder.exists():  # a stale or partial folder: move it aside, then swap in the new one
                stale = Path(tempfile.mkdtemp(prefix="stale-", dir=scratch))
                os.rename(folder, stale / folder.name)
                shutil.rmtree(stale, ignore_errors=True)
            os.rename(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return folder


def _convert(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    except Exception as exc:  # noqa: BLE001 - any load failure is a conversion failure for the user
        raise ModelConversionError(f"cannot load GGUF {gguf}: {type(exc).__name__}: {exc}".splitlines()[0]) from exc
    _clear_gguf_quantizer(model)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    _verify_tokenizer(tokenizer, out, gguf)


def _clear_gguf_quantizer(model) -> None:
    """Drop the GGUF 'quantizer' state: the weights are already plain float32 tensors, and a saved
    `quantization_config` with quant_method=gguf would make later loads look for a GGUF file."""
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model, "quantization_method"):
        model.quantization_method = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    # transformers copies the GGUF's `general.name` ("Smollm2 135M 8k ...") into this extra field.
    model.config.__dict__.pop("_model_name_or_path", None)


def _verify_tokenizer(original, out: Path, gguf: Path) -> None:
    """The chat template and end-of-turn token must survive the save, or chat and training break."""
    from transformers import AutoTokenizer

    reloaded = AutoTokenizer.from_pretrained(out)
    checks = {
        "chat_template": (original.chat_template, reloaded.chat_template),
        "eos_token": (original.eos_token, reloaded.eos_token),
        "eos_token_id": (original.eos_token_id, reloaded.eos_token_id),
        "vocab size": (len(original), len(reloaded)),
    }
    for what, (before, after) in checks.items():
        if before != after:
            raise ModelConversionError(f"converting {gguf}: tokenizer {what} changed on save ({before!r} -> {after!r})")
