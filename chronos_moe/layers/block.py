"""`T5Block`: one pre-norm T5 block of the encoder or the decoder."""

from __future__ import annotations

import keras

from chronos_moe.layers.attention import T5Attention
from chronos_moe.layers.common import invoke, register
from chronos_moe.layers.dropout import FastDropout
from chronos_moe.layers.feed_forward import T5FeedForward
from chronos_moe.layers.layer_norm import T5LayerNorm
from chronos_moe.validation import positive_int


@register
class T5Block(keras.layers.Layer):
    """One pre-norm T5 block: self-attention, [cross-attention,] feed-forward.

    Args:
        num_heads: int. Attention heads.
        key_value_dim: int. Size of each head.
        intermediate_dim: int. Feed-forward hidden size.
        is_decoder: bool. Adds cross-attention over the encoder states.
        feed_forward_proj: str. See `T5FeedForward`.
        dropout_rate: float. Dropout after each sub-layer.
        layer_norm_epsilon: float. Epsilon of the layer norms.
        initializer_factor: float. Scales the initial standard deviations.
        hidden_dim: int. Size of the hidden states (`d_model`). Required.
        feed_forward: optional `keras.Layer` used as the feed-forward sub-layer
            (`call(hidden_states, training)` → same shape) in place of the
            `T5FeedForward` built from the arguments above, e.g. the token-level
            experts of `chronos_moe.moe.token_experts`. Defaults to `None`.

    `call` runs whole sequences; `decode_step` one new position per row of a
    decoder block, with caches (see `T5Attention.decode_step`).

    Call arguments:
        hidden_states: `(batch, len, d_model)`.
        self_attention_bias: position bias (+ mask) for self-attention, or a
            tuple of terms (see `T5Attention`).
        encoder_states: `(batch, enc_len, d_model)`, decoder only.
        cross_attention_bias: mask bias over the encoder positions.
        training: bool. Dropout when true.

    Returns:
        `(batch, len, d_model)`.

    Example:

    >>> import numpy as np
    >>> block = T5Block(num_heads=2, key_value_dim=4, intermediate_dim=16, hidden_dim=8)
    >>> tuple(block(np.ones((1, 3, 8), "float32")).shape)
    (1, 3, 8)
    """

    def __init__(
        self,
        num_heads: int,
        key_value_dim: int,
        intermediate_dim: int,
        is_decoder: bool = False,
        feed_forward_proj: str = "relu",
        dropout_rate: float = 0.0,
        layer_norm_epsilon: float = 1e-6,
        initializer_factor: float = 1.0,
        hidden_dim: int | None = None,
        feed_forward: keras.Layer | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.key_value_dim = key_value_dim
        self.intermediate_dim = intermediate_dim
        self.is_decoder = is_decoder
        self.feed_forward_proj = feed_forward_proj
        self.dropout_rate = dropout_rate
        self.layer_norm_epsilon = layer_norm_epsilon
        self.initializer_factor = initializer_factor
        self.hidden_dim = positive_int("hidden_dim", hidden_dim)

        def norm(name):
            return T5LayerNorm(layer_norm_epsilon, dtype=self.dtype_policy, name=name)

        def attention(name):
            return T5Attention(
                num_heads,
                key_value_dim,
                dropout_rate=dropout_rate,
                initializer_factor=initializer_factor,
                hidden_dim=hidden_dim,
                dtype=self.dtype_policy,
                name=name,
            )

        self.self_attention_norm = norm("self_attention_norm")
        self.self_attention = attention("self_attention")
        if is_decoder:
            self.cross_attention_norm = norm("cross_attention_norm")
            self.cross_attention = attention("cross_attention")
        self.feed_forward_norm = norm("feed_forward_norm")
        self.custom_feed_forward = feed_forward is not None
        self.feed_forward = feed_forward or T5FeedForward(
            intermediate_dim,
            feed_forward_proj,
            dropout_rate=dropout_rate,
            initializer_factor=initializer_factor,
            hidden_dim=hidden_dim,
            dtype=self.dtype_policy,
            name="feed_forward",
        )
        self.dropout = FastDropout(dropout_rate, dtype=self.dtype_policy)

    def build(self, hidden_states_shape=None, *args, **kwargs):
        shape = (None, None, self.hidden_dim)
        for layer in (self.self_attention_norm, self.feed_forward_norm, self.feed_forward):
            layer.build(shape)
        self.self_attention.build(shape)
        if self.is_decoder:
            self.cross_attention_norm.build(shape)
            self.cross_attention.build(shape, shape)

    def call(
        self,
        hidden_states,
        self_attention_bias=None,
        encoder_states=None,
        cross_attention_bias=None,
        training=False,
    ):
        attended = invoke(
            self.self_attention,
            invoke(self.self_attention_norm, hidden_states),
            attention_bias=self_attention_bias,
            training=training,
        )
        hidden_states = hidden_states + invoke(self.dropout, attended, training=training)
        if self.is_decoder:
            attended = invoke(
                self.cross_attention,
                invoke(self.cross_attention_norm, hidden_states),
                key_value_states=encoder_states,
                attention_bias=cross_attention_bias,
                training=training,
            )
            hidden_states = hidden_states + invoke(self.dropout, attended, training=training)
        transformed = invoke(
            self.feed_forward, invoke(self.feed_forward_norm, hidden_states), training=training
        )
        return hidden_states + invoke(self.dropout, transformed, training=training)

    def decode_step(
        self,
        hidden_states,
        self_attention_bias,
        cross_attention_bias,
        self_attention_cache,
        cross_attention_cache,
        cache_index,
        self_attention_projection=None,
    ):
        """One cached decoding step of a decoder block (inference: no dropout).

        Args:
            hidden_states: `(batch, 1, d_model)`.
            self_attention_bias, cross_attention_bias: the biases of this step.
            self_attention_cache, cross_attention_cache: `(keys, values)`
                pairs, see `T5Attention.decode_step`.
            cache_index: int scalar, the position decoded.
            self_attention_projection: optional, the self-attention's
                `projection()`, computed once per forecast.

        Returns:
            `(hidden_states, self_attention_cache)`, the cache updated.
        """
        attended, self_attention_cache = self.self_attention.decode_step(
            invoke(self.self_attention_norm, hidden_states),
            self_attention_bias,
            self_attention_cache,
            cache_index,
            self_attention_projection,
        )
        hidden_states = hidden_states + attended
        attended, _ = self.cross_attention.decode_step(
            invoke(self.cross_attention_norm, hidden_states),
            cross_attention_bias,
            cross_attention_cache,
        )
        hidden_states = hidden_states + attended
        transformed = invoke(
            self.feed_forward, invoke(self.feed_forward_norm, hidden_states), training=False
        )
        return hidden_states + transformed, self_attention_cache

    def get_config(self):
        config = super().get_config()
        if self.custom_feed_forward:
            config["feed_forward"] = keras.saving.serialize_keras_object(self.feed_forward)
        return {
            **config,
            "num_heads": self.num_heads,
            "key_value_dim": self.key_value_dim,
            "intermediate_dim": self.intermediate_dim,
            "is_decoder": self.is_decoder,
            "feed_forward_proj": self.feed_forward_proj,
            "dropout_rate": self.dropout_rate,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "initializer_factor": self.initializer_factor,
            "hidden_dim": self.hidden_dim,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if config.get("feed_forward") is not None:
            config["feed_forward"] = keras.saving.deserialize_keras_object(config["feed_forward"])
        return cls(**config)
