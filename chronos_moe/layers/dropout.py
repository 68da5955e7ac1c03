"""`FastDropout`: dropout whose training-mode mask the backend draws
(`backend.dropout`: cheaper masks on torch, Keras' own on JAX)."""

from __future__ import annotations

import keras

from chronos_moe import backend
from chronos_moe.layers.common import register


@register
class FastDropout(keras.layers.Dropout):
    """`keras.layers.Dropout` with a cheaper training-mode mask on torch.

    Without `noise_shape` and `seed` (T5's dropouts), training goes through
    `backend.dropout`: on torch the same rate up to 2⁻¹⁶
    (`backend.dropout_rate_drawn`), drawn from torch's global generator as
    Keras' unseeded torch dropout is, about 3× cheaper to draw, and a 1-byte
    mask kept for the backward pass; on JAX Keras' own dropout, from the
    layer's seed generator. Everything else (a seed or noise shape, inference)
    is `keras.layers.Dropout`'s own; the layer's variables (its seed
    generator's state) are the same, so checkpoints are unchanged.

    Example:

    >>> import numpy as np
    >>> layer = FastDropout(0.5)
    >>> x = np.ones((4, 8), "float32")
    >>> bool(np.all(keras.ops.convert_to_numpy(layer(x, training=False)) == 1.0))
    True
    >>> y = keras.ops.convert_to_numpy(layer(x, training=True))
    >>> set(np.unique(y).tolist()) <= {0.0, 2.0}
    True
    """

    def call(self, inputs, training=False):
        if training and self.rate > 0 and self.noise_shape is None and self.seed is None:
            return backend.dropout(inputs, self.rate, self.seed_generator)
        return super().call(inputs, training=training)
