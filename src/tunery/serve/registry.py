"""Which weights serve which model name.

A base model is loaded once and gets one `Engine`. A LoRA fine-tune is that engine plus an
adapter, hot-loaded on first use with peft (`load_adapter`) into the same base, so requests for
different adapters share one model in memory and one running batch. A full fine-tune loads as its
own weights with its own engine. Adapters and full fine-tunes live in an LRU cache bounded by a
memory budget; base models stay. Nothing is evicted while a request still uses it.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from tunery.serve.compute import COMPUTE
from tunery.serve.engine import Engine
from tunery.serve.prepack import keeps_packing, packed_bytes, prepack, unpack

log = logging.getLogger("tunery.serve")

DEFAULT_BUDGET_MB = 4096


@dataclass(frozen=True)
class ModelSource:
    """Where a served name's weights are. `kind`: "base" (path = model folder), "adapter" (path =
    PEFT folder, base_path = its base model folder) or "full" (path = a full fine-tune's folder)."""

    name: str
    kind: str
    path: Path
    base_path: Path | None = None
    context_length: int | None = None


@dataclass
class Served:
    """What a request needs: the engine, the adapter name inside it, the tokenizer it was trained with."""

    name: str
    engine: Engine
    adapter: str | None
    tokenizer: object
    context_length: int


@dataclass
class _Entry:
    served: Served
    nbytes: int
    weights_key: str  # engine key of a full fine-tune, or the base's key for an adapter


def _budget_bytes() -> int:
    return int(float(os.environ.get("TUNERY_SERVE_CACHE_MB", DEFAULT_BUDGET_MB)) * 2**20)


SERVE_DTYPES = ("auto", "float32", "bfloat16")


def serving_dtype(device: str | None = None):
    """The dtype weights are served in: `TUNERY_SERVE_DTYPE` (auto, float32 or bfloat16). Auto is
    bf16 on GPUs that support it and on CPUs with native bf16 dot products (AVX512-BF16/AMX:
    measured 2.2x the fp32 tokens/s of 8 concurrent clients with `prepack`, see BENCHMARKS.md), fp32 otherwise
    (emulated bf16 is slower than fp32). A bad value raises ValueError."""
    import torch

    from tunery.models.hardware import cpu_has_bf16

    spec = os.environ.get("TUNERY_SERVE_DTYPE", "auto").strip().lower() or "auto"
    if spec not in SERVE_DTYPES:
        raise ValueError(f"TUNERY_SERVE_DTYPE must be one of {', '.join(SERVE_DTYPES)}, got {spec!r}")
    if spec != "auto":
        return getattr(torch, spec)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if cpu_has_bf16() else torch.float32


def load_weights(path: Path):
    """A causal LM from a local folder, on the GPU when there is one, in `serving_dtype()`, its
    linears pre-packed for oneDNN when served in bf16 on the CPU (`prepack`: same answers, faster)."""
    import torch
    from transformers import AutoModelForCausalLM

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(path, dtype=serving_dtype(device)).to(device).eval()
    prepack(model)
    return model


def load_tokenizer(*folders: Path):
    """The tokenizer (and chat template) saved in the first folder that has one."""
    from transformers import AutoTokenizer

    for folder in folders:
        if folder is not None and (Path(folder) / "tokenizer_config.json").is_file():
            return AutoTokenizer.from_pretrained(folder)
    raise FileNotFoundError(f"no tokenizer in {', '.join(str(f) for f in folders if f)}")


def stop_token_ids(model, tokenizer) -> set[int]:
    ids = set()
    for value in (tokenizer.eos_token_id, getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(v for v in value if isinstance(v, int))
    return ids


def _param_bytes(model) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters()) + packed_bytes(model)


def _adapter_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.glob("adapter_model.*"))


class ModelRegistry:
    def __init__(self, budget_bytes: int | None = None, max_batch_size: int = 32):
        self.budget = _budget_bytes() if budget_bytes is None else budget_bytes
        self.max_batch_size = max_batch_size
        self._lock = threading.RLock()
        self._bases: dict[str, Served] = {}  # resolved base folder -> its served base
        self._lru: OrderedDict[str, _Entry] = OrderedDict()  # fine-tune name -> entry, oldest first
        self._adapter_ids = 0

    # --- lookups ---------------------------------------------------------------------------
    def get(self, source: ModelSource) -> Served:
        """Load (or reuse) what serves `source`. Blocking: call it off the event loop."""
        with self._lock:
            if source.kind == "base":
                return self._base(source.path, source.name, source.context_length)
            entry = self._lru.get(source.name)
            if entry is not None:
                self._lru.move_to_end(source.name)
                return entry.served
            entry = self._load_adapter(source) if source.kind == "adapter" else self._load_full(source)
            self._lru[source.name] = entry
            self._shrink(keep=source.name)
            return entry.served

    def cached(self) -> list[str]:
        with self._lock:
            return list(self._lru)

    @property
    def used_bytes(self) -> int:
        return sum(e.nbytes for e in self._lru.values())

    def evict(self, name: str, force: bool = True) -> bool:
        """Drop a fine-tune from memory (a deleted model). In-flight requests are cancelled when forced."""
        with self._lock:
            entry = self._lru.get(name)
            if entry is None:
                return False
            if not force and self._in_use(entry):
                return False
            del self._lru[name]
        self._unload(entry)
        return True

    def close(self) -> None:
        with self._lock:
            engines = {id(s.engine): s.engine for s in self._bases.values()}
            engines.update({id(e.served.engine): e.served.engine for e in self._lru.values()})
            self._bases.clear()
            self._lru.clear()
        for engine in engines.values():
            engine.close()

    # --- loading ---------------------------------------------------------------------------
    def _base(self, path: Path, name: str, context_length: int | None) -> Served:
        key = str(Path(path).resolve())
        served = self._bases.get(key)
        if served is None:
            log.info("loading base model %s from %s", name, path)
            model = COMPUTE.call(load_weights, path)  # torch runs on one thread (compute.py)
            tokenizer = load_tokenizer(path)
            engine = Engine(model, stop_token_ids(model, tokenizer), self.max_batch_size, name=name)
            served = Served(name, engine, None, tokenizer, context_length or _context_of(model))
            self._bases[key] = served
        return served

    def _load_adapter(self, source: ModelSource) -> _Entry:
        from peft import PeftModel

        base = self._base(source.base_path, source.base_path.name, source.context_length)
        engine = base.engine
        self._adapter_ids += 1
        adapter = f"ft{self._adapter_ids}"  # peft names become module keys: no dots or colons
        log.info("hot-loading adapter %s for %s from %s", adapter, source.name, source.path)
        config = json.loads((source.path / "adapter_config.json").read_text())

        def swap_in() -> None:  # on the compute thread, between two steps
            if not keeps_packing(config):
                unpack(engine.model)
            if isinstance(engine.model, PeftModel):
                engine.model.load_adapter(str(source.path), adapter_name=adapter)
            else:
                engine.model = PeftModel.from_pretrained(engine.model, str(source.path), adapter_name=adapter)
            engine.model.eval()

        COMPUTE.call(swap_in)
        tokenizer = load_tokenizer(source.path, source.path.parent, source.base_path)
        served = Served(source.name, engine, adapter, tokenizer, base.context_length)
        return _Entry(served, _adapter_bytes(source.path), str(Path(source.base_path).resolve()))

    def _load_full(self, source: ModelSource) -> _Entry:
        log.info("loading full fine-tune %s from %s", source.name, source.path)
        model = COMPUTE.call(load_weights, source.path)
        tokenizer = load_tokenizer(source.path, source.path.parent)
        engine = Engine(model, stop_token_ids(model, tokenizer), self.max_batch_size, name=source.name)
        served = Served(source.name, engine, None, tokenizer, source.context_length or _context_of(model))
        return _Entry(served, _param_bytes(model), str(Path(source.path).resolve()))

    # --- eviction --------------------------------------------------------------------------
    def _in_use(self, entry: _Entry) -> bool:
        s = entry.served
        return s.engine.uses_adapter(s.adapter) if s.adapter else s.engine.active > 0

    def _shrink(self, keep: str) -> None:
        """Evict least-recently-used entries until the cache fits the budget (skipping busy ones)."""
        for name in list(self._lru):
            if self.used_bytes <= self.budget:
                return
            entry = self._lru[name]
            if name == keep or self._in_use(entry):
                continue
            del self._lru[name]
            self._unload(entry)

    def _unload(self, entry: _Entry) -> None:
        s = entry.served
        log.info("evicting %s", s.name)
        if s.adapter is None:
            s.engine.close()
            return
        s.engine.cancel_adapter(s.adapter)
        COMPUTE.call(lambda: s.engine.model.delete_adapter(s.adapter))


def _context_of(model) -> int:
    return int(getattr(model.config, "max_position_embeddings", 2048) or 2048)
