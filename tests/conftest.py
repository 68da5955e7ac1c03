"""Shared test setup: a default Keras backend and a seeded random generator."""

import os

# Keras falls back to TensorFlow when KERAS_BACKEND is unset; chronos-moe runs on
# torch or JAX. This must happen before anything imports keras.
os.environ.setdefault("KERAS_BACKEND", "torch")
# XLA's LLVM back end at -O0: a tiny test model's programs compile in about
# half the time (most of the JAX pass is compiling, in this process and in the
# runs it starts, which inherit the variable). XLA's graph optimisations are
# unchanged: only the machine code is less optimised. The parity tests hold at
# their tolerances either way; users and benchmarks keep XLA's default.
if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
    ).strip()

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
