"""chronos-moe: Chronos T5 forecasting models in Keras 3, with Mixture-of-Experts."""

from chronos_moe.backend import backend_info  # first: chooses the Keras backend
from chronos_moe.checkpoints import CheckpointError
from chronos_moe.config import ChronosConfig
from chronos_moe.models.chronos_t5 import ChronosT5
from chronos_moe.moe.balancing import LoadBalancingRegularizer
from chronos_moe.moe.experts import MoEExpertHead
from chronos_moe.moe.model import ChronosMoE, build_moe_chronos
from chronos_moe.moe.router import ContextRouter
from chronos_moe.pipeline import ChronosPipeline
from chronos_moe.tokenizer import MeanScaleUniformBins

__version__ = "0.1.0"

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
    "backend_info",
    "build_moe_chronos",
]
