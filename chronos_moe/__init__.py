"""chronos-moe: Chronos T5 forecasting models in Keras 3, with Mixture-of-Experts.

Names are imported lazily: `import chronos_moe` does not import Keras yet, so a
program (or the `chronos-moe --backend` option) can still choose the backend
before the first model, layer or pipeline is touched. When Keras is already
imported, the backend is fixed anyway, and the Keras classes are registered at
once so that `keras.saving.load_model` finds them; otherwise use
`chronos_moe.load_model`, which registers them first.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Public name -> module that defines it.
_EXPORTS = {
    "backend_info": "chronos_moe.backend",
    "CheckpointError": "chronos_moe.checkpoints",
    "ChronosConfig": "chronos_moe.config",
    "ChronosT5": "chronos_moe.models.chronos_t5",
    "LoadBalancingRegularizer": "chronos_moe.moe.balancing",
    "MoEExpertHead": "chronos_moe.moe.experts",
    "ChronosMoE": "chronos_moe.moe.model",
    "build_moe_chronos": "chronos_moe.moe.model",
    "ContextRouter": "chronos_moe.moe.router",
    "ChronosPipeline": "chronos_moe.pipeline",
    "load_model": "chronos_moe.saving",
    "MeanScaleUniformBins": "chronos_moe.tokenizer",
    "TrainingConfig": "chronos_moe.training.config",
    "train": "chronos_moe.training.run",
}

__all__ = [
    "CheckpointError",
    "ChronosConfig",
    "ChronosMoE",
    "ChronosPipeline",
    "ChronosT5",
    "ContextRouter",
    "LoadBalancingRegularizer",
    "MeanScaleUniformBins",
    "MoEExpertHead",
    "TrainingConfig",
    "backend_info",
    "build_moe_chronos",
    "load_model",
    "train",
]

if TYPE_CHECKING:
    from chronos_moe.backend import backend_info
    from chronos_moe.checkpoints import CheckpointError
    from chronos_moe.config import ChronosConfig
    from chronos_moe.models.chronos_t5 import ChronosT5
    from chronos_moe.moe.balancing import LoadBalancingRegularizer
    from chronos_moe.moe.experts import MoEExpertHead
    from chronos_moe.moe.model import ChronosMoE, build_moe_chronos
    from chronos_moe.moe.router import ContextRouter
    from chronos_moe.pipeline import ChronosPipeline
    from chronos_moe.saving import load_model
    from chronos_moe.tokenizer import MeanScaleUniformBins
    from chronos_moe.training.config import TrainingConfig
    from chronos_moe.training.run import train


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'chronos_moe' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)


if "keras" in sys.modules:  # the backend is chosen already: register the layers now
    importlib.import_module("chronos_moe.saving")
