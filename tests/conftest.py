"""Shared test setup: a default Keras backend and a seeded random generator."""

import os

# Keras falls back to TensorFlow when KERAS_BACKEND is unset; chronos-moe runs on
# torch or JAX. This must happen before anything imports keras.
os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
