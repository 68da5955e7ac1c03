"""Shared pieces of the tuning tests: the training tests' tiny checkpoint and
data, a MoE base config scored on the held-out file, and a small space."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from chronos_moe.training.config import TrainingConfig
from tests.training.helpers import make_data, make_start_checkpoint, small_config

SMALL_SPACE = {
    "num_experts": {"type": "int", "low": 2, "high": 3},
    "num_active_experts": {"type": "int", "low": 1, "high": 2},
    "load_balancing_weight": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
}


def make_base(directory: Path, **overrides: Any) -> TrainingConfig:
    """A 2-step MoE run of a one-layer model, validated on `test.arrow`."""
    start = make_start_checkpoint(directory / "start")
    train_data, test_data = make_data(directory)
    values = {
        "validation_data_paths": [str(test_data)],
        "use_moe": True,
        "max_steps": 2,
        "save_steps": 2,
        "log_steps": 1,
        "num_samples": 4,
        **overrides,
    }
    return small_config(start, train_data, directory / "best-run", **values)
