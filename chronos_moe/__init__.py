"""chronos-moe: Chronos T5 and Chronos-Bolt forecasting models in Keras 3, with Mixture-of-Experts.

Importing the package chooses the Keras backend (`backend_choice.select_backend`:
``KERAS_BACKEND`` if set, else torch when installed, else JAX) before any
Keras import, so every `chronos_moe.*` module runs on torch or JAX whatever
the order of its own imports. Names are imported lazily: `import chronos_moe`
does not import Keras yet, so a program (or the `chronos-moe --backend`
option) can still change ``KERAS_BACKEND`` before the first model, layer or
pipeline is touched. When Keras is already
imported, the backend is fixed anyway, and the Keras classes are registered at
once so that `keras.saving.load_model` finds them; otherwise use
`chronos_moe.load_model`, which registers them first.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any

from chronos_moe.backend_choice import select_backend as _select_backend

_select_backend()  # before anything in the package imports Keras

__version__ = "0.1.0"

# Public name -> module that defines it.
_EXPORTS = {
    "backend_info": "chronos_moe.backend",
    "CheckpointError": "chronos_moe.errors",
    "ChronosConfig": "chronos_moe.config",
    "ChronosBoltConfig": "chronos_moe.config",
    "read_arrow": "chronos_moe.data.arrow",
    "write_arrow": "chronos_moe.data.arrow",
    "ChronosDataset": "chronos_moe.data.dataset",
    "DataError": "chronos_moe.data.errors",
    "tsmixup": "chronos_moe.data.mixup",
    "series_from_dataframe": "chronos_moe.data.source",
    "generate_sample_series": "chronos_moe.data.synthetic",
    "kernel_synth": "chronos_moe.data.synthetic",
    "evaluate": "chronos_moe.evaluation.evaluate",
    "EvaluationResult": "chronos_moe.evaluation.results",
    "aggregate_relative_score": "chronos_moe.evaluation.metrics",
    "mean_absolute_scaled_error": "chronos_moe.evaluation.metrics",
    "weighted_quantile_loss": "chronos_moe.evaluation.metrics",
    "plot_forecast": "chronos_moe.evaluation.plots",
    "plot_training_curves": "chronos_moe.evaluation.plots",
    "analyze_routing": "chronos_moe.evaluation.routing",
    "RoutingAnalysis": "chronos_moe.evaluation.routing",
    "ChronosT5": "chronos_moe.models.chronos_t5",
    "ChronosBolt": "chronos_moe.models.chronos_bolt",
    "LoadBalancingRegularizer": "chronos_moe.moe.balancing",
    "MoEExpertHead": "chronos_moe.moe.experts",
    "build_moe_chronos": "chronos_moe.moe.model",
    "ChronosMoE": "chronos_moe.moe.model",
    "ChronosBoltMoE": "chronos_moe.moe.bolt_model",
    "QuantileExpertHead": "chronos_moe.moe.quantile_experts",
    "ContextRouter": "chronos_moe.moe.router",
    "ChronosPipeline": "chronos_moe.pipeline",
    "ChronosBoltPipeline": "chronos_moe.pipeline_bolt",
    "load_model": "chronos_moe.saving",
    "MeanScaleUniformBins": "chronos_moe.tokenizer",
    "compare": "chronos_moe.training.compare",
    "ConfigError": "chronos_moe.training.config",
    "TrainingConfig": "chronos_moe.training.config",
    "RunError": "chronos_moe.training.errors",
    "train": "chronos_moe.training.run",
    "TrainResult": "chronos_moe.training.run",
}

__all__ = [
    "CheckpointError",
    "ChronosBolt",
    "ChronosBoltConfig",
    "ChronosBoltMoE",
    "ChronosBoltPipeline",
    "ChronosConfig",
    "ChronosDataset",
    "ChronosMoE",
    "ChronosPipeline",
    "ChronosT5",
    "ConfigError",
    "ContextRouter",
    "DataError",
    "EvaluationResult",
    "LoadBalancingRegularizer",
    "MeanScaleUniformBins",
    "MoEExpertHead",
    "QuantileExpertHead",
    "RoutingAnalysis",
    "RunError",
    "TrainResult",
    "TrainingConfig",
    "aggregate_relative_score",
    "analyze_routing",
    "backend_info",
    "build_moe_chronos",
    "compare",
    "evaluate",
    "generate_sample_series",
    "kernel_synth",
    "load_model",
    "mean_absolute_scaled_error",
    "plot_forecast",
    "plot_training_curves",
    "read_arrow",
    "series_from_dataframe",
    "train",
    "tsmixup",
    "weighted_quantile_loss",
    "write_arrow",
]

if TYPE_CHECKING:
    from chronos_moe.backend import backend_info
    from chronos_moe.config import ChronosBoltConfig, ChronosConfig
    from chronos_moe.data.arrow import read_arrow, write_arrow
    from chronos_moe.data.dataset import ChronosDataset
    from chronos_moe.data.errors import DataError
    from chronos_moe.data.mixup import tsmixup
    from chronos_moe.data.source import series_from_dataframe
    from chronos_moe.data.synthetic import generate_sample_series, kernel_synth
    from chronos_moe.errors import CheckpointError
    from chronos_moe.evaluation.evaluate import evaluate
    from chronos_moe.evaluation.metrics import (
        aggregate_relative_score,
        mean_absolute_scaled_error,
        weighted_quantile_loss,
    )
    from chronos_moe.evaluation.plots import plot_forecast, plot_training_curves
    from chronos_moe.evaluation.results import EvaluationResult
    from chronos_moe.evaluation.routing import RoutingAnalysis, analyze_routing
    from chronos_moe.models.chronos_bolt import ChronosBolt
    from chronos_moe.models.chronos_t5 import ChronosT5
    from chronos_moe.moe.balancing import LoadBalancingRegularizer
    from chronos_moe.moe.bolt_model import ChronosBoltMoE
    from chronos_moe.moe.experts import MoEExpertHead
    from chronos_moe.moe.model import ChronosMoE, build_moe_chronos
    from chronos_moe.moe.quantile_experts import QuantileExpertHead
    from chronos_moe.moe.router import ContextRouter
    from chronos_moe.pipeline import ChronosPipeline
    from chronos_moe.pipeline_bolt import ChronosBoltPipeline
    from chronos_moe.saving import load_model
    from chronos_moe.tokenizer import MeanScaleUniformBins
    from chronos_moe.training.compare import compare
    from chronos_moe.training.config import ConfigError, TrainingConfig
    from chronos_moe.training.errors import RunError
    from chronos_moe.training.run import TrainResult, train


def __getattr__(name: str) -> Any:
    if name == "training":  # `chronos_moe.training.callbacks(...)` after `import chronos_moe`
        return importlib.import_module("chronos_moe.training")
    if name not in _EXPORTS:
        raise AttributeError(f"module 'chronos_moe' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)


if "keras" in sys.modules:  # the backend is chosen already: register the layers now
    importlib.import_module("chronos_moe.saving")
