"""`T5FeedForward`: T5's position-wise feed-forward layer."""

from __future__ import annotations

import keras
from keras import ops

from chronos_moe.layers.common import invoke, normal_initializer, register
from chronos_moe.layers.dense import T5Dense
from chronos_moe.layers.dropout import FastDropout
from chronos_moe.validation import positive_int

FEED_FORWARD_PROJECTIONS = ("relu", "gated-relu", "gelu", "gated-gelu")


def activation(feed_forward_proj: str, x):
    """The activation of `feed_forward_proj`: relu, or gelu (the tanh
    approximation for the gated one, as transformers' `gelu_new`)."""
    if feed_forward_proj.endswith("relu"):
        return ops.relu(x)
    return ops.gelu(x, approximate=feed_forward_proj.startswith("gated-"))


def check_feed_forward_proj(feed_forward_proj: str) -> None:
    """A named error unless `feed_forward_proj` is one of `FEED_FORWARD_PROJECTIONS`."""
    if not isinstance(feed_forward_proj, str) or feed_forward_proj not in FEED_FORWARD_PROJECTIONS:
        raise ValueError(
            f"`feed_forward_proj` must be one of {FEED_FORWARD_PROJECTIONS}. "
            f"Received: feed_forward_proj={feed_forward_proj!r}"
        )


@register
class T5FeedForward(keras.layers.Layer):
    """T5 feed-forward: `wo(act(wi x))`, or gated `wo(act(wi_0 x) · wi_1 x)`.

    Args:
        intermediate_dim: int. Hidden size `d_ff`.
        feed_forward_proj: str. One of `"relu"`, `"gated-relu"`, `"gelu"`,
            `"gated-gelu"` (transformers' names; the gated gelu is the tanh
            approximation, `gelu_new`). Defaults to `"relu"`.
        dropout_rate: float. Dropout on the hidden activations.
        initializer_factor: float. Scales the initial standard deviations.
        hidden_dim: int. Size of the inputs and outputs (`d_model`). Required.

    Example:

    >>> import numpy as np
    >>> ffn = T5FeedForward(intermediate_dim=16, feed_forward_proj="gated-gelu", hidden_dim=8)
    >>> tuple(ffn(np.ones((2, 3, 8), "float32")).shape)
    (2, 3, 8)
    """

    def __init__(
        self,
        intermediate_dim: int,
        feed_forward_proj: str = "relu",
        dropout_rate: float = 0.0,
        initializer_factor: float = 1.0,
        hidden_dim: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_feed_forward_proj(feed_forward_proj)
        self.intermediate_dim = intermediate_dim
        self.feed_forward_proj = feed_forward_proj
        self.dropout_rate = dropout_rate
        self.initializer_factor = initializer_factor
        self.hidden_dim = positive_int("hidden_dim", hidden_dim)
        self.is_gated = feed_forward_proj.startswith("gated-")
        self.dropout = FastDropout(dropout_rate, dtype=self.dtype_policy)

        def dense(name, units, fan_in):
            # HF `_init_weights`: wi ~ d_model^-0.5, wo ~ d_ff^-0.5, times the factor.
            return T5Dense(
                units,
                use_bias=False,
                kernel_initializer=normal_initializer(initializer_factor * fan_in**-0.5),
                dtype=self.dtype_policy,
                name=name,
            )

        if self.is_gated:
            self.wi_0 = dense("wi_0", intermediate_dim, hidden_dim)
            self.wi_1 = dense("wi_1", intermediate_dim, hidden_dim)
        else:
            self.wi = dense("wi", intermediate_dim, hidden_dim)
        self.wo = dense("wo", hidden_dim, intermediate_dim)

    def build(self, input_shape=None):
        for layer in (self.wi_0, self.wi_1) if self.is_gated else (self.wi,):
            layer.build((None, None, self.hidden_dim))
        self.wo.build((None, None, self.intermediate_dim))

    def activation(self, x):
        return activation(self.feed_forward_proj, x)

    def call(self, inputs, training=False):
        if self.is_gated:
            hidden = self.activation(invoke(self.wi_0, inputs)) * invoke(self.wi_1, inputs)
        else:
            hidden = self.activation(invoke(self.wi, inputs))
        return invoke(self.wo, invoke(self.dropout, hidden, training=training))

    def get_config(self):
        return {
            **super().get_config(),
            "intermediate_dim": self.intermediate_dim,
            "feed_forward_proj": self.feed_forward_proj,
            "dropout_rate": self.dropout_rate,
            "initializer_factor": self.initializer_factor,
            "hidden_dim": self.hidden_dim,
        }
