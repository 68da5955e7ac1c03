"""ChronosT5: the T5 encoder-decoder of Chronos as one Keras model.

`call` is the full-sequence pass (training, parity with transformers);
`decode_step` is the cached pass used by generation. Both run the same blocks.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from chronos_moe import backend
from chronos_moe.config import T5_PRESETS, ChronosConfig
from chronos_moe.layers.attention import MASK_BIAS, cast_bias
from chronos_moe.layers.common import invoke, normal_initializer, register
from chronos_moe.models.labels import (  # noqa: F401 (IGNORE_INDEX re-exported)
    IGNORE_INDEX,
    masked_cross_entropy,
    shift_right,
)
from chronos_moe.models.t5_stacks import (  # noqa: F401 (padding_bias, format_count re-exported)
    T5Stacks,
    checked_feed_forward_layers,
    format_count,
    padding_bias,
)


def _chronos_config(chronos_config: dict[str, Any] | None, vocab_size: int) -> ChronosConfig:
    """The `ChronosConfig` of a model with `vocab_size` tokens (n_tokens must match)."""
    chronos = ChronosConfig.from_dict(chronos_config or {"n_tokens": vocab_size})
    if chronos.n_tokens != vocab_size:
        raise ValueError(
            "chronos_config.n_tokens must equal the model's vocab_size. "
            f"Received: n_tokens={chronos.n_tokens}, vocab_size={vocab_size}"
        )
    return chronos


@register
class ChronosT5(T5Stacks):
    """The Chronos T5 encoder-decoder, numerically identical to transformers'
    `T5ForConditionalGeneration`.

    Argument names are those of `transformers.T5Config` so that a checkpoint's
    `config.json` maps one to one.

    Args:
        vocab_size: int. Number of tokens (`n_tokens`). Defaults to `4096`.
        d_model: int. Hidden size.
        d_kv: int. Size of each attention head.
        d_ff: int. Feed-forward hidden size.
        num_layers: int. Encoder blocks.
        num_decoder_layers: int. Decoder blocks; defaults to `num_layers`.
        num_heads: int. Attention heads.
        relative_attention_num_buckets: int. Defaults to `32`.
        relative_attention_max_distance: int. Defaults to `128`.
        dropout_rate: float. Defaults to `0.1`.
        layer_norm_epsilon: float. Defaults to `1e-6`.
        feed_forward_proj: str. `"relu"` (Chronos) or `"gated-gelu"`, ….
        tie_word_embeddings: bool. Logits from the shared embedding (scaled by
            `d_model^-0.5`) instead of a separate `lm_head`. Defaults to `True`.
        decoder_start_token_id: int. Defaults to `0`.
        pad_token_id: int. Defaults to `0`.
        eos_token_id: int. Defaults to `1`.
        initializer_factor: float. Scales every initial standard deviation;
            Chronos trains from scratch with `0.05`. Defaults to `1.0`.
        chronos_config: dict. The checkpoint's `chronos_config` block
            (tokenizer and forecasting defaults). Defaults to
            `ChronosConfig()` with `n_tokens = vocab_size`.
        feed_forward_layers: dict. Block name (`"encoder_block_0"`,
            `"decoder_block_1"`, …) → the layer to use as that block's
            feed-forward (see `T5Block`); the token-level experts of
            `build_moe_chronos(level="token")` sit here. Defaults to `None`
            (every block has its `T5FeedForward`).

    Call arguments:
        inputs: dict with `input_ids` `(batch, enc_len)`, `attention_mask`
            `(batch, enc_len)` and either `decoder_input_ids` `(batch, dec_len)`
            or `labels` (shifted right into decoder inputs).

    Returns:
        Logits `(batch, dec_len, vocab_size)`.

    Example:

    >>> import numpy as np
    >>> model = ChronosT5.from_preset("tiny", vocab_size=64, num_layers=1)
    >>> logits = model({
    ...     "input_ids": np.full((2, 10), 5),
    ...     "attention_mask": np.ones((2, 10), bool),
    ...     "decoder_input_ids": np.zeros((2, 3), "int32"),
    ... })
    >>> tuple(logits.shape)
    (2, 3, 64)
    """

    def __init__(
        self,
        vocab_size: int = 4096,
        d_model: int = 512,
        d_kv: int = 64,
        d_ff: int = 2048,
        num_layers: int = 6,
        num_decoder_layers: int | None = None,
        num_heads: int = 8,
        relative_attention_num_buckets: int = 32,
        relative_attention_max_distance: int = 128,
        dropout_rate: float = 0.1,
        layer_norm_epsilon: float = 1e-6,
        feed_forward_proj: str = "relu",
        tie_word_embeddings: bool = True,
        decoder_start_token_id: int = 0,
        pad_token_id: int = 0,
        eos_token_id: int = 1,
        initializer_factor: float = 1.0,
        chronos_config: dict[str, Any] | None = None,
        feed_forward_layers: dict[str, keras.Layer] | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.check_sizes(vocab_size=vocab_size)
        self.store_settings(locals())  # the STACK_SETTINGS among the arguments
        self.chronos_config = _chronos_config(chronos_config, vocab_size)
        self.vocab_size = vocab_size
        self.tie_word_embeddings = tie_word_embeddings
        self.pad_token_id = pad_token_id
        self.eos_token_id = eos_token_id
        self.feed_forward_layers = checked_feed_forward_layers(
            feed_forward_layers, num_layers, self.num_decoder_layers
        )
        self._make_layers()
        self.build()

    def _make_layers(self) -> None:
        """The embedding, both stacks of blocks and the head, from the stored settings."""
        factor = self.initializer_factor
        # HF `_init_weights`: shared embedding ~ N(0, factor²); relative bias
        # ~ factor · d_model^-0.5; untied lm_head ~ factor · d_model^-0.5.
        self._make_shared()
        self._make_stacks()
        self.lm_head = None
        if not self.tie_word_embeddings:
            self.lm_head = keras.layers.Dense(
                self.vocab_size,
                use_bias=False,
                kernel_initializer=normal_initializer(factor * self.d_model**-0.5),
                dtype=self.dtype_policy,
                name="lm_head",
            )
        self._make_dropout()

    def build(self, input_shape=None):
        if self.built:
            return
        self._build_stacks()
        if self.lm_head is not None:
            self.lm_head.build((None, None, self.d_model))
        self.built = True

    def shape_summary(self) -> str:
        """`describe`'s words for what is Chronos T5's own: its vocabulary."""
        return f"{self.vocab_size} tokens"

    @classmethod
    def from_preset(cls, size: str, **overrides) -> ChronosT5:
        """A randomly initialised model with the shape of a released Chronos size
        (`"tiny"`, `"mini"`, `"small"`, `"base"`, `"large"`); keyword arguments
        override any field."""
        if size not in T5_PRESETS:
            raise ValueError(f"`size` must be one of {sorted(T5_PRESETS)}. Received: size={size!r}")
        return cls(**{**T5_PRESETS[size], **overrides})

    # ---- encoder ---------------------------------------------------------------

    def encode(self, input_ids, attention_mask, training=False):
        """Encoder states `(batch, enc_len, d_model)` of the token ids."""
        embeddings = invoke(self.shared, input_ids)
        return self.encode_embeddings(embeddings, attention_mask, training)

    # ---- decoder (`decode`: see `T5Stacks`) ---------------------------------------

    def init_cache(self, encoder_states, batch_size: int, max_length: int):
        """The decoding cache.

        Returns:
            `(self_cache, cross_cache)`, one `(keys, values)` pair per decoder
            block in `T5Attention`'s layout: zeroed self-attention keys and
            values `(batch_size, heads, max_length, d_kv)`; the cross-attention
            keys `(enc_batch, heads, d_kv, enc_len)` (transposed) and values
            `(enc_batch, heads, enc_len, d_kv)` of the encoder states, computed
            once, each row shared by `batch_size // enc_batch` consecutive
            decoding rows.
        """
        shape = (batch_size, self.num_heads, max_length, self.d_kv)
        self_cache = tuple(
            (ops.zeros(shape, self.compute_dtype), ops.zeros(shape, self.compute_dtype))
            for _ in range(self.num_decoder_layers)
        )
        cross_cache = tuple(
            block.cross_attention.project_key_value(encoder_states, transpose_keys=True)
            for block in self.decoder_blocks
        )
        return self_cache, cross_cache

    def decoding_constants(self, attention_mask, max_length: int) -> dict[str, Any]:
        """What every cached decoding step of one forecast shares, computed once.

        Args:
            attention_mask: `(enc_batch, enc_len)` encoder mask.
            max_length: int, the length of the self-attention cache.

        Returns:
            A dict for `decode_step(..., constants=...)`:

            * `"self_bias"`: `(1, heads, max_length, max_length)`, the decoder's
              relative-position bias plus the causal mask, in the compute
              dtype (row `i` is the bias of step `i`);
            * `"cross_bias"`: `(enc_batch, 1, 1, enc_len)`, the padding bias
              over the encoder positions, in the compute dtype;
            * `"projections"`: per decoder block, the self-attention's query,
              key and value kernels side by side, `(d_model, 3 · heads ·
              d_kv)` (one product per step instead of three).

        Example:

        >>> import numpy as np
        >>> model = ChronosT5.from_preset("tiny", vocab_size=64, num_layers=1)
        >>> constants = model.decoding_constants(np.ones((2, 10), bool), 5)
        >>> tuple(constants["self_bias"].shape), tuple(constants["projections"][0].shape)
        ((1, 4, 5, 5), (256, 768))
        """
        positions = ops.arange(max_length, dtype="int32")
        causal = ops.where(positions[None, :] > positions[:, None], MASK_BIAS, 0.0)
        self_bias = invoke(self.decoder_position_bias, positions, positions) + causal[None, None]
        projections = tuple(block.self_attention.projection() for block in self.decoder_blocks)
        return {
            "self_bias": cast_bias(self_bias, self.compute_dtype),
            "cross_bias": cast_bias(padding_bias(attention_mask), self.compute_dtype),
            "projections": projections,
        }

    def decode_step(
        self, token_ids, cache_index, self_cache, cross_cache, attention_mask, constants=None
    ):
        """One cached decoding step.

        Args:
            token_ids: `(batch, 1)` tokens at position `cache_index`.
            cache_index: int scalar (Python or tensor), the position being decoded.
            self_cache, cross_cache: from `init_cache` (or a previous step).
            attention_mask: `(enc_batch, enc_len)` encoder mask.
            constants: optional `decoding_constants(attention_mask,
                max_length)`, computed once per forecast; computed here when
                `None`.

        Returns:
            `(hidden, self_cache)`: hidden states `(batch, 1, d_model)` and the
            updated self-attention cache. On torch the cache is updated in
            place (see `backend.update_cache`).
        """
        max_length = ops.shape(self_cache[0][0])[2]
        if constants is None:
            constants = self.decoding_constants(attention_mask, max_length)
        # The whole fixed-size cache is attended to, the positions not yet
        # written masked. It is contiguous, so the batched products read it in
        # place; a slice of the written part would be strided, and torch's
        # bfloat16 products copy such an operand first (640 rows: 3.2 ms
        # against 0.65 ms per product; float32 3.1 against 1.7 ms).
        index = backend.concrete_int(cache_index)
        self_bias = constants["self_bias"]
        if index is None:
            self_bias = ops.slice(
                self_bias, (0, 0, cache_index, 0), (1, self.num_heads, 1, max_length)
            )
        else:
            self_bias = self_bias[:, :, index : index + 1]
        hidden = invoke(self.shared, token_ids)
        new_cache = []
        for block, layer_cache, layer_cross, projection in zip(
            self.decoder_blocks, self_cache, cross_cache, constants["projections"], strict=True
        ):
            hidden, layer_cache = block.decode_step(
                hidden,
                self_bias,
                constants["cross_bias"],
                layer_cache,
                layer_cross,
                cache_index,
                projection,
            )
            new_cache.append(layer_cache)
        return invoke(self.decoder_final_norm, hidden), tuple(new_cache)

    # ---- head ------------------------------------------------------------------

    def compute_logits(self, hidden_states):
        """Token logits `(..., vocab_size)` from decoder hidden states."""
        if self.lm_head is not None:
            return invoke(self.lm_head, hidden_states)
        # Tied embeddings: T5 rescales by d_model^-0.5 before the shared matrix.
        scaled = hidden_states * (self.d_model**-0.5)
        return backend.matmul(scaled, ops.transpose(self.shared.embeddings))

    def logits_function(self, encoder_states, attention_mask):
        """The map from decoder hidden states to logits for these series. The
        dense head does not depend on them; `ChronosMoE` routes here."""
        return self.compute_logits

    def call(self, inputs, training=False):
        decoder_input_ids = inputs.get("decoder_input_ids")
        if decoder_input_ids is None:
            decoder_input_ids = shift_right(
                inputs["labels"], self.decoder_start_token_id, self.pad_token_id
            )
        encoder_states = self.encode(inputs["input_ids"], inputs["attention_mask"], training)
        hidden = self.decode(decoder_input_ids, encoder_states, inputs["attention_mask"], training)
        return self.compute_logits(hidden)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Token cross-entropy against `x["labels"]` (or `y`), ignoring -100."""
        labels = y if y is not None else x["labels"]
        loss = masked_cross_entropy(labels, y_pred)
        return loss + ops.cast(sum(self.losses), "float32") if self.losses else loss

    def get_config(self):
        return {
            **super().get_config(),
            **self.stack_config(),
            "vocab_size": self.vocab_size,
            "tie_word_embeddings": self.tie_word_embeddings,
            "pad_token_id": self.pad_token_id,
            "eos_token_id": self.eos_token_id,
            "chronos_config": self.chronos_config.to_dict(),
        }
