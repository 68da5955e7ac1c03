"""`T5Dense`: the dense projection of every T5 layer."""

from __future__ import annotations

import keras

from chronos_moe import backend
from chronos_moe.layers.common import register


@register
class T5Dense(keras.layers.Dense):
    """A `keras.layers.Dense` whose product goes through `backend.matmul`
    (bfloat16 products accumulated in float32 on JAX, see there); used without
    a bias, as everywhere in T5.

    Example:

    >>> import numpy as np
    >>> dense = T5Dense(4, use_bias=False)
    >>> tuple(dense(np.ones((2, 3, 8), "float32")).shape)
    (2, 3, 4)
    """

    def call(self, inputs, training=None):
        outputs = backend.matmul(inputs, self.kernel)
        if self.bias is not None:
            outputs = outputs + self.bias
        return outputs if self.activation is None else self.activation(outputs)
