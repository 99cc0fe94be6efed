"""Training engine: tokenization with loss masks, packing, the loop, LoRA/full, checkpoints, metrics.

Knows nothing of HTTP. Library: `run(TrainConfig(...), on_event=...) -> TrainResult`; subprocess:
`python -m tunery.train --config CONFIG.json`; command line: `tunery train`.
"""

from .config import TrainConfig
from .errors import TrainError


def run(config, on_event=None, control=None):
    """Train as `config` (a `TrainConfig`) says; see `tunery.train.loop`."""
    from .loop import run as _run

    return _run(config, on_event, control)


__all__ = ["TrainConfig", "TrainError", "run"]
