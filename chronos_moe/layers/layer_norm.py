"""`T5LayerNorm`: T5's RMS layer norm."""

from __future__ import annotations

import keras
from keras import ops

from chronos_moe import backend
from chronos_moe.layers.common import register


def rms_norm(inputs, scale, epsilon: float, compute_dtype: str):
    """T5's layer norm in `keras.ops`: ``scale · x / √(mean(x²) + epsilon)``
    over the last axis. The mean square is computed in float32 so that
    half-precision inputs do not overflow; the normalised ``x`` is cast to
    ``compute_dtype`` before the scale multiplies it (as transformers)."""
    x = ops.cast(inputs, "float32")
    variance = ops.mean(ops.square(x), axis=-1, keepdims=True)
    x = x * ops.rsqrt(variance + epsilon)
    return scale * ops.cast(x, compute_dtype)


@register
class T5LayerNorm(keras.layers.Layer):
    """T5's RMS layer norm: scales by the root mean square, no mean, no bias.

    `rms_norm`, or the backend's one-kernel version of it where it has one
    (`backend.rms_norm`: torch, float32).

    Args:
        epsilon: float. Added to the mean square. Defaults to `1e-6`.

    Example:

    >>> import numpy as np
    >>> norm = T5LayerNorm()
    >>> y = norm(np.ones((2, 3, 8), "float32") * 3.0)
    >>> bool(np.allclose(keras.ops.convert_to_numpy(y), 1.0, atol=1e-5))
    True
    """

    def __init__(self, epsilon: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(input_shape[-1],), initializer="ones")

    def call(self, inputs):
        if self.compute_dtype == "float32":
            outputs = backend.rms_norm(inputs, self.scale, self.epsilon)
            if outputs is not None:
                return outputs
        return rms_norm(inputs, self.scale, self.epsilon, self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}
