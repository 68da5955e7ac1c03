"""Dropout whose training-mode mask is drawn by `backend.dropout` where the
backend has a faster one (torch)."""

from __future__ import annotations

import keras

from chronos_moe import backend


@keras.saving.register_keras_serializable(package="chronos_moe")
class FastDropout(keras.layers.Dropout):
    """`keras.layers.Dropout` with a cheaper training-mode mask on torch.

    Without `noise_shape` and `seed` (T5's dropouts), training on torch goes
    through `backend.dropout`: the same rate up to 2⁻¹⁶
    (`backend.dropout_rate_drawn`), drawn from torch's global generator as
    Keras' unseeded torch dropout is, about 3× cheaper to draw, and a 1-byte
    mask kept for the backward pass. Everything else (JAX, a seed or noise
    shape, inference) is `keras.layers.Dropout`'s own; the layer's variables
    (its seed generator's state) are the same, so checkpoints are unchanged.

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

    def uses_backend_dropout(self, training) -> bool:
        """Whether a call with this `training` flag drops through
        `backend.dropout` (so a caller may fuse it, as `T5Attention` does
        with `backend.attention_with_dropout`)."""
        return bool(
            training
            and self.rate > 0
            and self.noise_shape is None
            and self.seed is None
            and backend.fast_dropout_available()
        )

    def call(self, inputs, training=False):
        if self.uses_backend_dropout(training):
            return backend.dropout(inputs, self.rate)
        return super().call(inputs, training=training)
