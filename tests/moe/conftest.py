"""Fixtures of the MoE tests."""

import keras
import pytest


@pytest.fixture
def mixed_bfloat16():
    """Runs the test under the `mixed_bfloat16` global dtype policy."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    yield
    keras.config.set_dtype_policy(previous)
