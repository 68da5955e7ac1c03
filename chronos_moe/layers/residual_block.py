"""`ResidualBlock`: Chronos-Bolt's patch embedding and output head."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from chronos_moe.layers.common import invoke, normal_initializer, register
from chronos_moe.layers.dropout import FastDropout
from chronos_moe.layers.layer_norm import T5LayerNorm
from chronos_moe.validation import positive_int

# transformers' `ACT2FN` names (T5Config's `dense_act_fn`) -> the keras.ops function.
ACTIVATIONS = {
    "relu": ops.relu,
    "gelu": lambda x: ops.gelu(x, approximate=False),
    "gelu_new": lambda x: ops.gelu(x, approximate=True),
    "silu": ops.silu,
}


def checked_activation(activation: str) -> str:
    """`activation`, or a named error when it is not one of `ACTIVATIONS`."""
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"`activation` must be one of {sorted(ACTIVATIONS)}. "
            f"Received: activation={activation!r}"
        )
    return activation


@register
class ResidualBlock(keras.layers.Layer):
    """A two-layer MLP with a linear shortcut:
    `dropout(output(act(hidden(x)))) + residual(x)`, optionally followed by a
    `T5LayerNorm` (the reference's `chronos_bolt.ResidualBlock`).

    Chronos-Bolt maps each patch (values and observed mask side by side) to
    `d_model` with one, and the decoder's last hidden state to
    `len(quantiles) × prediction_length` values with another.

    Args:
        intermediate_dim: int. Hidden size (`d_ff`).
        output_dim: int. Size of the outputs.
        activation: str. transformers' name of the hidden activation
            (`dense_act_fn`): `"relu"`, `"gelu"`, `"gelu_new"` or `"silu"`.
            Defaults to `"relu"`.
        dropout_rate: float. Dropout on the output layer's result. Defaults
            to `0.0`.
        use_layer_norm: bool. A `T5LayerNorm` over the sum. Defaults to `False`
            (as both blocks of Chronos-Bolt).
        input_stddev: float. Initial standard deviation of the hidden and
            residual kernels. Defaults to `1.0`.
        output_stddev: float. Initial standard deviation of the output kernel.
            Defaults to `1.0`. (Biases start at zero.)

    Call arguments:
        inputs: `(..., input_dim)`.
        training: bool. Dropout is active when `True`.

    Returns:
        `(..., output_dim)`.

    Example:

    >>> import numpy as np
    >>> block = ResidualBlock(intermediate_dim=16, output_dim=8)
    >>> tuple(block(np.ones((2, 3, 4), "float32")).shape)
    (2, 3, 8)
    """

    def __init__(
        self,
        intermediate_dim: int,
        output_dim: int,
        activation: str = "relu",
        dropout_rate: float = 0.0,
        use_layer_norm: bool = False,
        input_stddev: float = 1.0,
        output_stddev: float = 1.0,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        checked_activation(activation)
        self.intermediate_dim = positive_int("intermediate_dim", intermediate_dim)
        self.output_dim = positive_int("output_dim", output_dim)
        self.activation = activation
        self.dropout_rate = dropout_rate
        self.use_layer_norm = use_layer_norm
        self.input_stddev = input_stddev
        self.output_stddev = output_stddev

        def dense(name: str, units: int, stddev: float) -> keras.layers.Dense:
            return keras.layers.Dense(
                units,
                kernel_initializer=normal_initializer(stddev),
                bias_initializer="zeros",
                dtype=self.dtype_policy,
                name=name,
            )

        self.hidden_layer = dense("hidden_layer", intermediate_dim, input_stddev)
        self.output_layer = dense("output_layer", output_dim, output_stddev)
        self.residual_layer = dense("residual_layer", output_dim, input_stddev)
        self.dropout = FastDropout(dropout_rate, dtype=self.dtype_policy)
        self.layer_norm = (
            T5LayerNorm(dtype=self.dtype_policy, name="layer_norm") if use_layer_norm else None
        )

    def build(self, input_shape):
        self.hidden_layer.build(input_shape)
        self.output_layer.build((*input_shape[:-1], self.intermediate_dim))
        self.residual_layer.build(input_shape)
        if self.layer_norm is not None:
            self.layer_norm.build((*input_shape[:-1], self.output_dim))

    def call(self, inputs, training=False):
        hidden = ACTIVATIONS[self.activation](invoke(self.hidden_layer, inputs))
        outputs = invoke(self.dropout, invoke(self.output_layer, hidden), training=training)
        outputs = outputs + invoke(self.residual_layer, inputs)
        if self.layer_norm is not None:
            outputs = invoke(self.layer_norm, outputs)
        return outputs

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.output_dim)

    def get_config(self):
        return {
            **super().get_config(),
            "intermediate_dim": self.intermediate_dim,
            "output_dim": self.output_dim,
            "activation": self.activation,
            "dropout_rate": self.dropout_rate,
            "use_layer_norm": self.use_layer_norm,
            "input_stddev": self.input_stddev,
            "output_stddev": self.output_stddev,
        }
