"""`T5LayerNorm` computes T5's formula in float32 and bfloat16, and the
backend's one-kernel version (`backend.rms_norm`) equals the `keras.ops`
reference `rms_norm` where it exists."""

import keras
import numpy as np
import pytest
from keras import ops

from chronos_moe import backend
from chronos_moe.layers.layer_norm import T5LayerNorm, rms_norm


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_rms_norm_matches_the_t5_formula(dtype):
    rng = np.random.default_rng(1)
    x = ops.cast(ops.convert_to_tensor(rng.normal(size=(3, 4, 16)).astype("float32") * 5), dtype)
    scale = ops.cast(ops.convert_to_tensor(rng.normal(size=(16,)).astype("float32")), dtype)
    norm = T5LayerNorm(dtype=dtype)
    norm.build(x.shape)
    norm.scale.assign(scale)
    out = ops.convert_to_numpy(ops.cast(norm(x), "float32"))
    x32 = ops.convert_to_numpy(ops.cast(x, "float32"))
    normed = x32 / np.sqrt(np.mean(x32**2, axis=-1, keepdims=True) + 1e-6)
    normed = ops.convert_to_numpy(ops.cast(ops.cast(normed, dtype), "float32"))
    expected = normed * ops.convert_to_numpy(ops.cast(scale, "float32"))
    tolerance = 1e-5 if dtype == "float32" else 2e-2
    np.testing.assert_allclose(out, expected, rtol=tolerance, atol=tolerance)


def test_the_backends_rms_norm_kernel_matches_the_reference():
    """`backend.rms_norm` (torch float32: one kernel) computes `rms_norm`;
    where it has no kernel (JAX; half precision) it says so with `None`."""
    rng = np.random.default_rng(1)
    x = ops.convert_to_tensor(rng.normal(size=(3, 4, 16)).astype("float32") * 5)
    scale = ops.convert_to_tensor(rng.normal(size=(16,)).astype("float32"))
    fused = backend.rms_norm(x, scale, 1e-6)
    assert (fused is not None) == (keras.config.backend() == "torch")
    if fused is not None:
        want = ops.convert_to_numpy(rms_norm(x, scale, 1e-6, "float32"))
        np.testing.assert_allclose(ops.convert_to_numpy(fused), want, rtol=1e-6, atol=1e-6)
    assert backend.rms_norm(ops.cast(x, "bfloat16"), ops.cast(scale, "bfloat16"), 1e-6) is None
