"""`T5Stacks`: the T5 encoder and decoder stacks that ChronosT5 and ChronosBolt share.

Both models are a transformers `T5Stack` pair: an encoder (relative-position bias,
blocks, final norm) and a decoder (the same, causal, with cross-attention) whose
token embedding is the model's `shared` table. They differ only in what feeds the
encoder (token embeddings or patch embeddings) and in the head on the decoder.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import keras
from keras import ops

from chronos_moe.config import T5_PRESETS
from chronos_moe.layers.attention import MASK_BIAS, cast_bias, sum_bias_terms
from chronos_moe.layers.block import T5Block
from chronos_moe.layers.common import invoke, normal_initializer
from chronos_moe.layers.dropout import FastDropout
from chronos_moe.layers.feed_forward import check_feed_forward_proj
from chronos_moe.layers.layer_norm import T5LayerNorm
from chronos_moe.layers.position_bias import T5RelativePositionBias
from chronos_moe.validation import positive_int

# The T5 settings that both models take, store and save (transformers' T5Config names).
STACK_SETTINGS = (
    "d_model",
    "d_kv",
    "d_ff",
    "num_layers",
    "num_decoder_layers",
    "num_heads",
    "relative_attention_num_buckets",
    "relative_attention_max_distance",
    "dropout_rate",
    "layer_norm_epsilon",
    "feed_forward_proj",
    "decoder_start_token_id",
    "initializer_factor",
)
# The settings that must be positive ints (checked before any layer is made).
STACK_SIZES = ("d_model", "d_kv", "d_ff", "num_layers", "num_heads")


def format_count(count: int) -> str:
    """A parameter count for people: `8.39M`, `46.2k`, `120`."""
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if count >= limit:
            return f"{count / limit:.3g}{suffix}"
    return str(count)


def padding_bias(mask):
    """`(batch, 1, 1, len)` additive bias: 0 where `mask` is true, `MASK_BIAS` elsewhere."""
    keep = ops.cast(mask, "float32")[:, None, None, :]
    return (1.0 - keep) * MASK_BIAS


def checked_feed_forward_layers(
    layers: dict[str, keras.Layer] | None, num_layers: int, num_decoder_layers: int
) -> dict[str, keras.Layer]:
    """`layers` (block name -> feed-forward layer) checked against the model's blocks."""
    layers = dict(layers or {})
    block_names = [f"encoder_block_{i}" for i in range(num_layers)] + [
        f"decoder_block_{i}" for i in range(num_decoder_layers)
    ]
    unknown = sorted(set(layers) - set(block_names))
    if unknown:
        raise ValueError(
            f"`feed_forward_layers` names blocks this model does not have. "
            f"Received: {unknown} (blocks: encoder_block_0…, decoder_block_0…)"
        )
    return layers


class T5Stacks(keras.Model):
    """The base of the Chronos encoder-decoders: T5's two stacks, built from the
    model's T5 settings (`d_model`, `d_kv`, `d_ff`, `num_heads`, `num_layers`,
    `num_decoder_layers`, `relative_attention_*`, `dropout_rate`,
    `layer_norm_epsilon`, `feed_forward_proj`, `initializer_factor`,
    `feed_forward_layers`), which the subclass stores before `_make_stacks`.

    The subclass owns `shared` (the token embedding the decoder reads), the
    input of the encoder and the head. Layer names and weights are those
    `ChronosT5` always had, so saved models load unchanged.
    """

    def _make_shared(self) -> None:
        """`shared`, the token table the decoder reads, ~ N(0, initializer_factor²)
        (HF and the reference's `_init_weights`)."""
        self.shared = keras.layers.Embedding(
            self.vocab_size,
            self.d_model,
            embeddings_initializer=normal_initializer(self.initializer_factor),
            dtype=self.dtype_policy,
            name="shared",
        )

    def _make_stacks(self) -> None:
        """Both stacks, from the stored settings (the dropout: `_make_dropout`)."""
        self.encoder_position_bias = self._position_bias("encoder_position_bias", True)
        self.encoder_blocks = self._blocks("encoder", self.num_layers, False)
        self.encoder_final_norm = T5LayerNorm(
            self.layer_norm_epsilon, dtype=self.dtype_policy, name="encoder_final_norm"
        )
        self.decoder_position_bias = self._position_bias("decoder_position_bias", False)
        self.decoder_blocks = self._blocks("decoder", self.num_decoder_layers, True)
        self.decoder_final_norm = T5LayerNorm(
            self.layer_norm_epsilon, dtype=self.dtype_policy, name="decoder_final_norm"
        )

    def _make_dropout(self) -> None:
        """The dropout both stacks apply to their inputs and outputs (made last:
        its seed generator's state is the model's last variable, as it always was)."""
        self.dropout = FastDropout(self.dropout_rate, dtype=self.dtype_policy)

    def _blocks(self, prefix: str, count: int, is_decoder: bool) -> list[T5Block]:
        return [
            T5Block(
                self.num_heads,
                self.d_kv,
                self.d_ff,
                is_decoder=is_decoder,
                feed_forward_proj=self.feed_forward_proj,
                dropout_rate=self.dropout_rate,
                layer_norm_epsilon=self.layer_norm_epsilon,
                initializer_factor=self.initializer_factor,
                hidden_dim=self.d_model,
                feed_forward=self.feed_forward_layers.get(f"{prefix}_block_{i}"),
                dtype=self.dtype_policy,
                name=f"{prefix}_block_{i}",
            )
            for i in range(count)
        ]

    def _position_bias(self, name: str, bidirectional: bool) -> T5RelativePositionBias:
        # HF `_init_weights`: relative bias ~ N(0, (factor · d_model^-0.5)²).
        return T5RelativePositionBias(
            self.num_heads,
            self.relative_attention_num_buckets,
            self.relative_attention_max_distance,
            bidirectional=bidirectional,
            initializer_stddev=self.initializer_factor * self.d_model**-0.5,
            dtype=self.dtype_policy,
            name=name,
        )

    def serialized_feed_forward_layers(self) -> dict[str, dict] | None:
        """`feed_forward_layers` for `get_config` (`None` when there are none)."""
        return {
            name: keras.saving.serialize_keras_object(layer)
            for name, layer in self.feed_forward_layers.items()
        } or None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}: {self.describe()}>"

    def describe(self) -> str:
        """What the model is, in one line: size, parameters, shape (its
        `shape_summary`), forecast lengths, dtype and backend (its `repr`)."""
        chronos = self.chronos_config
        return (
            f"{self.size_name()} ({format_count(self.count_params())} parameters: "
            f"d_model {self.d_model}, {self.num_layers}+{self.num_decoder_layers} layers, "
            f"{self.shape_summary()}), "
            f"context {chronos.context_length}, prediction {chronos.prediction_length}, "
            f"{self.dtype_policy.name}, backend {keras.backend.backend()}"
        )

    def stack_config(self) -> dict:
        """The part of `get_config` both models share: `STACK_SETTINGS` and the
        serialized `feed_forward_layers`."""
        return {
            **{name: getattr(self, name) for name in STACK_SETTINGS},
            "feed_forward_layers": self.serialized_feed_forward_layers(),
        }

    @staticmethod
    def check_sizes(**sizes: int) -> None:
        """A named error for the first size (`d_model=…`, …) that is not a positive int."""
        for name, value in sizes.items():
            positive_int(name, value)

    def store_settings(self, arguments: Mapping[str, Any]) -> None:
        """Checks and stores the `STACK_SETTINGS` among `arguments` (both
        models' `__init__` pass their `locals()`: they take the settings as
        keyword arguments, as Hugging Face's `T5Config` names them). Named
        errors for a size that is not a positive int, an unknown
        `feed_forward_proj` and a negative or non-finite `initializer_factor`;
        `num_decoder_layers=None` means as many as `num_layers`."""
        settings = {name: arguments[name] for name in STACK_SETTINGS}
        self.check_sizes(**{name: settings[name] for name in STACK_SIZES})
        check_feed_forward_proj(settings["feed_forward_proj"])
        factor = settings["initializer_factor"]
        if (
            isinstance(factor, bool)
            or not isinstance(factor, (int, float))
            or not math.isfinite(factor)
            or factor < 0
        ):
            raise ValueError(
                "`initializer_factor` must be a finite number >= 0. "
                f"Received: initializer_factor={factor!r}"
            )
        if settings["num_decoder_layers"] is None:
            settings["num_decoder_layers"] = settings["num_layers"]
        for name in STACK_SETTINGS:
            setattr(self, name, settings[name])

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        layers = config.get("feed_forward_layers") or {}
        config["feed_forward_layers"] = {
            name: keras.saving.deserialize_keras_object(layer) for name, layer in layers.items()
        } or None
        return cls(**config)

    def size_name(self) -> str:
        """The T5 size preset this shape matches (`"tiny"`, …), or `"custom"`."""
        shape = {
            "d_model": self.d_model,
            "d_ff": self.d_ff,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "d_kv": self.d_kv,
        }
        return next((name for name, preset in T5_PRESETS.items() if preset == shape), "custom")

    def _build_stacks(self) -> None:
        hidden = (None, None, self.d_model)
        self.shared.build((None, None))
        self.encoder_position_bias.build()
        self.decoder_position_bias.build()
        for block in self.encoder_blocks + self.decoder_blocks:
            block.build(hidden)
        self.encoder_final_norm.build(hidden)
        self.decoder_final_norm.build(hidden)

    # ---- encoder ---------------------------------------------------------------

    def encode_embeddings(self, embeddings, attention_mask, training=False):
        """Encoder states `(batch, enc_len, d_model)` of input embeddings
        `(batch, enc_len, d_model)` (transformers' `inputs_embeds`)."""
        length = ops.shape(embeddings)[1]
        positions = ops.arange(length, dtype="int32")
        position = invoke(self.encoder_position_bias, positions, positions)
        # Each term is cast (and clamped) on its own, before the broadcast sum:
        # the clamp and its gradient then run over `(1, heads, len, len)` and
        # `(batch, 1, 1, len)`, not over the `(batch, heads, len, len)` sum. The
        # sum is the same (a bias plus 0, or the lowest finite value absorbing
        # the bias).
        terms = (
            cast_bias(position, self.compute_dtype),
            cast_bias(padding_bias(attention_mask), self.compute_dtype),
        )
        # Training passes the terms to the blocks (torch's fused training
        # attention adds them in place and sums the position bias's gradient
        # over the batch itself); otherwise they are summed once, not in every block.
        bias = terms if training else sum_bias_terms(terms)
        hidden = invoke(self.dropout, embeddings, training=training)
        for block in self.encoder_blocks:
            hidden = invoke(block, hidden, self_attention_bias=bias, training=training)
        hidden = invoke(self.encoder_final_norm, hidden)
        return invoke(self.dropout, hidden, training=training)

    # ---- decoder ---------------------------------------------------------------

    def decode(self, decoder_input_ids, encoder_states, attention_mask, training=False):
        """Decoder hidden states `(batch, dec_len, d_model)` for the whole
        sequence at once (causal self-attention)."""
        length = ops.shape(decoder_input_ids)[1]
        positions = ops.arange(length, dtype="int32")
        causal = ops.where(positions[None, :] > positions[:, None], MASK_BIAS, 0.0)
        self_bias = invoke(self.decoder_position_bias, positions, positions) + causal[None, None]
        self_bias = cast_bias(self_bias, self.compute_dtype)  # once, not in every block
        cross_bias = cast_bias(padding_bias(attention_mask), self.compute_dtype)
        hidden = invoke(self.dropout, invoke(self.shared, decoder_input_ids), training=training)
        for block in self.decoder_blocks:
            hidden = invoke(
                block,
                hidden,
                self_attention_bias=self_bias,
                encoder_states=encoder_states,
                cross_attention_bias=cross_bias,
                training=training,
            )
        hidden = invoke(self.decoder_final_norm, hidden)
        return invoke(self.dropout, hidden, training=training)
