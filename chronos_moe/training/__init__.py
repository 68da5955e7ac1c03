"""Training: `TrainingConfig` (the YAML schema), `train` (the command line's
runner) and `callbacks`, the runner's guarantees (steps log, NaN guard, atomic
checkpoints with exact resume, SIGTERM stop, expert-collapse monitor, progress)
for `model.fit`.

Names are loaded on first use: `chronos_moe.training.lock` and `.errors` stay
importable without Keras.
"""

from __future__ import annotations

import importlib
from typing import Any

_NAMES = {
    "callbacks": "chronos_moe.training.guarantees",
    "TrainingRun": "chronos_moe.training.state",
    "TrainingConfig": "chronos_moe.training.config",
    "train": "chronos_moe.training.run",
    "RunError": "chronos_moe.training.errors",
    "TrainingStopped": "chronos_moe.training.errors",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name not in _NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_NAMES[name]), name)
