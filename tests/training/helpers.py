"""Shared pieces of the training tests: a small Chronos checkpoint to start from
(so runs take a fraction of a second per step) and configs that train it on a
generated Arrow file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras

from chronos_moe import checkpoints
from chronos_moe.data import generate_sample_series, write_arrow
from chronos_moe.models.chronos_t5 import ChronosT5
from chronos_moe.training.config import TrainingConfig

N_TOKENS = 64
CONTEXT_LENGTH = 16
PREDICTION_LENGTH = 4


def make_start_checkpoint(directory: Path) -> Path:
    """A randomly initialised one-layer Chronos T5 in Hugging Face layout."""
    keras.utils.set_random_seed(0)
    model = ChronosT5.from_preset(
        "tiny",
        vocab_size=N_TOKENS,
        num_layers=1,
        d_model=16,
        d_ff=32,
        num_heads=2,
        d_kv=8,
        chronos_config={
            "n_tokens": N_TOKENS,
            "context_length": CONTEXT_LENGTH,
            "prediction_length": PREDICTION_LENGTH,
        },
    )
    return checkpoints.save_chronos(model, directory)


def make_bolt_start_checkpoint(directory: Path) -> Path:
    """A randomly initialised one-layer Chronos-Bolt in Hugging Face layout (the
    model of tests/test_chronos_bolt.py with these window lengths)."""
    from tests.test_chronos_bolt import small_bolt

    model = small_bolt(context_length=CONTEXT_LENGTH, prediction_length=PREDICTION_LENGTH)
    return checkpoints.save_chronos(model, directory)


def make_data(directory: Path, num_series: int = 12, length: int = 80) -> tuple[Path, Path]:
    """`train.arrow` (series without their last PREDICTION_LENGTH points) and
    `test.arrow` (whole series)."""
    series = generate_sample_series(num_series, length, seed=1)
    train = write_arrow([s[:-PREDICTION_LENGTH] for s in series], directory / "train.arrow")
    return train, write_arrow(series, directory / "test.arrow")


def small_config(start: Path, data: Path, output_dir: Path, **overrides: Any) -> TrainingConfig:
    """A few-step run of the start checkpoint on `data` (a Chronos-Bolt one with
    `model_family="bolt"`)."""
    values = {
        "training_data_paths": [str(data)],
        "probability": [1.0],
        "model_id": str(start),
        "random_init": False,
        "n_tokens": N_TOKENS,
        "context_length": CONTEXT_LENGTH,
        "prediction_length": PREDICTION_LENGTH,
        "min_past": 8,
        "per_device_train_batch_size": 4,
        "shuffle_buffer_length": 10,
        "max_steps": 4,
        "save_steps": 2,
        "log_steps": 1,
        "num_experts": 3,
        "num_active_experts": 2,
        "router_hidden_dim": 8,
        "output_dir": str(output_dir),
        "seed": 3,
        **overrides,
    }
    if values.get("model_family") == "bolt":
        del values["n_tokens"]  # a Chronos T5 key
    return TrainingConfig(**values)
