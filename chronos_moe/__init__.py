"""chronos-moe: Chronos T5 forecasting models in Keras 3, with Mixture-of-Experts."""

from chronos_moe.backend import backend_info  # first: chooses the Keras backend
from chronos_moe.config import ChronosConfig
from chronos_moe.models.chronos_t5 import ChronosT5

__version__ = "0.1.0"

__all__ = ["ChronosConfig", "ChronosT5", "backend_info"]
