"""ChronosBolt: the Chronos-Bolt forecaster as one Keras model.

The reference is `chronos.chronos_bolt.ChronosBoltModelForForecasting`: the
series is standardised (NaN-aware, float32), cut into patches, each patch (values
and observed mask) embedded by a `ResidualBlock`, optionally followed by a
`[REG]` token; the T5 encoder reads them, the T5 decoder runs one step from the
start token, and a second `ResidualBlock` turns its state into every quantile of
every step of the horizon at once.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from chronos_moe.config import ChronosBoltConfig
from chronos_moe.layers.common import invoke, register
from chronos_moe.layers.residual_block import ResidualBlock
from chronos_moe.models.quantile_loss import quantile_loss
from chronos_moe.models.t5_stacks import T5Stacks, checked_feed_forward_layers

# The reference's `InstanceNorm(eps=1e-5)`: the scale of a constant series.
INSTANCE_NORM_EPSILON = 1e-5


def instance_norm(context, observed):
    """The reference's NaN-aware standardisation, in float32.

    Args:
        context: `(batch, time)`; values where `observed` is false are ignored.
        observed: `(batch, time)` bool, the non-NaN values of `context`.

    Returns:
        `(scaled, loc, scale)`: `(context - loc) / scale` `(batch, time)` float32
        (NaN where not observed) and the mean and standard deviation of the
        observed values `(batch, 1)`: 0 and 1 for a series with none observed,
        `INSTANCE_NORM_EPSILON` as the scale of a constant series.
    """
    x = ops.cast(context, "float32")
    weight = ops.cast(observed, "float32")
    count = ops.sum(weight, axis=-1, keepdims=True)
    has_values = count > 0
    safe_count = ops.maximum(count, 1.0)
    # Float32 sums over the observed values (torch.nanmean), never touching NaN.
    loc = ops.sum(ops.where(observed, x, 0.0), axis=-1, keepdims=True) / safe_count
    loc = ops.where(has_values, loc, 0.0)
    deviation = ops.where(observed, ops.square(x - loc), 0.0)
    scale = ops.sqrt(ops.sum(deviation, axis=-1, keepdims=True) / safe_count)
    scale = ops.where(has_values, scale, 1.0)
    scale = ops.where(scale == 0, INSTANCE_NORM_EPSILON, scale)
    scaled = ops.where(observed, (x - loc) / scale, float("nan"))
    return scaled, loc, scale


def patches(values, patch_size: int, patch_stride: int, fill: float):
    """`(batch, time)` → `(batch, num_patches, patch_size)`: windows of
    `patch_size` every `patch_stride` steps, after left-padding `time` up to a
    multiple of `patch_size` with `fill` (the reference's `Patch`: `unfold`)."""
    length = values.shape[-1]
    pad = -length % patch_size
    if pad:
        filler = ops.full((ops.shape(values)[0], pad), fill, dtype=values.dtype)
        values = ops.concatenate([filler, values], axis=-1)
        length += pad
    count = (length - patch_size) // patch_stride + 1
    if patch_stride == patch_size:
        return ops.reshape(values, (-1, count, patch_size))  # (batch, patches, size)
    starts = ops.arange(count, dtype="int32")[:, None] * patch_stride
    index = starts + ops.arange(patch_size, dtype="int32")[None, :]  # (patches, size)
    return ops.take(values, index, axis=1)  # (batch, patches, size)


def _activation(feed_forward_proj: str) -> str:
    """transformers' `dense_act_fn` of a `feed_forward_proj` (as `T5Config`)."""
    return "gelu_new" if feed_forward_proj == "gated-gelu" else feed_forward_proj.split("-")[-1]


@register
class ChronosBolt(T5Stacks):
    """Chronos-Bolt, numerically identical to the reference
    `chronos.chronos_bolt.ChronosBoltModelForForecasting`.

    Argument names are those of `transformers.T5Config` so that a checkpoint's
    `config.json` maps one to one. The token table `shared` holds only the
    decoder's start token (and `[REG]`): 1 or 2 rows.

    Args:
        d_model: int. Hidden size.
        d_kv: int. Size of each attention head.
        d_ff: int. Feed-forward hidden size (also of both residual blocks).
        num_layers: int. Encoder blocks.
        num_decoder_layers: int. Decoder blocks; defaults to `num_layers`.
        num_heads: int. Attention heads.
        relative_attention_num_buckets: int. Defaults to `32`.
        relative_attention_max_distance: int. Defaults to `128`.
        dropout_rate: float. Defaults to `0.1`.
        layer_norm_epsilon: float. Defaults to `1e-6`.
        feed_forward_proj: str. `"relu"` (Chronos-Bolt) or `"gated-gelu"`, …;
            its activation (transformers' `dense_act_fn`) is also that of the
            residual blocks.
        decoder_start_token_id: int. Defaults to `0`.
        initializer_factor: float. Scales every initial standard deviation.
            Defaults to `1.0`.
        chronos_config: dict. The checkpoint's `chronos_config` block (see
            `ChronosBoltConfig`). Defaults to `ChronosBoltConfig()`.
        feed_forward_layers: dict. Block name (`"encoder_block_0"`, …) → the
            layer to use as that block's feed-forward, as for `ChronosT5`
            (the token-level experts of `build_moe_chronos(level="token")`).
            Defaults to `None`.

    Call arguments:
        inputs: dict with `context` `(batch, time)` (NaN marks missing values)
            and optionally `mask` `(batch, time)` (observed values; defaults to
            the non-NaN ones).

    Returns:
        Quantile forecasts `(batch, len(quantiles), prediction_length)` in the
        units of the context.

    Training: `fit` on batches with `context` and `target` `(batch, <=
    prediction_length)` (a `ChronosDataset` made with the model's
    `chronos_config` gives them) minimises the reference's quantile loss
    (`compute_loss`, `forecast_loss`).

    Example:

    >>> import numpy as np
    >>> model = ChronosBolt(d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4,
    ...     chronos_config={"context_length": 64, "prediction_length": 8,
    ...                     "input_patch_size": 16, "input_patch_stride": 16,
    ...                     "quantiles": [0.1, 0.5, 0.9], "use_reg_token": True})
    >>> forecast = model({"context": np.sin(np.arange(40.0))[None].astype("float32")})
    >>> tuple(forecast.shape)
    (1, 3, 8)
    >>> batch = {"context": np.sin(np.arange(40.0))[None].astype("float32"),
    ...          "target": np.ones((1, 8), "float32")}
    >>> loss = model.compute_loss(x=batch, y_pred=model(batch))
    >>> tuple(loss.shape)
    ()
    """

    # The name under which training reports the forecasting loss.
    forecast_loss_name = "quantile_loss"

    def __init__(
        self,
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
        decoder_start_token_id: int = 0,
        initializer_factor: float = 1.0,
        chronos_config: dict[str, Any] | None = None,
        feed_forward_layers: dict[str, keras.Layer] | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.store_settings(locals())  # the STACK_SETTINGS among the arguments
        self.chronos_config = ChronosBoltConfig.from_dict(chronos_config or {})
        self.vocab_size = 2 if self.chronos_config.use_reg_token else 1
        if not 0 <= decoder_start_token_id < self.vocab_size:
            raise ValueError(
                f"`decoder_start_token_id` must be a token id in [0, {self.vocab_size}). "
                f"Received: decoder_start_token_id={decoder_start_token_id}"
            )
        self.reg_token_id = 1  # the reference's `config.reg_token_id`
        self.feed_forward_layers = checked_feed_forward_layers(
            feed_forward_layers, self.num_layers, self.num_decoder_layers
        )
        self._make_layers()
        self.build()

    @property
    def quantiles(self) -> tuple[float, ...]:
        return self.chronos_config.quantiles

    @property
    def num_quantiles(self) -> int:
        return len(self.chronos_config.quantiles)

    def _make_layers(self) -> None:
        """The token table, the patch embedding, both stacks and the head."""
        factor = self.initializer_factor
        chronos = self.chronos_config
        patch_width = 2 * chronos.input_patch_size  # values and mask side by side
        # The reference's `_init_weights`: shared ~ N(0, factor²); in both
        # residual blocks hidden and residual ~ factor · (2 · patch_size)^-0.5
        # (the patch width, also for the output block), output ~ factor · d_ff^-0.5.
        self._make_shared()

        def residual_block(name: str, output_dim: int) -> ResidualBlock:
            return ResidualBlock(
                self.d_ff,
                output_dim,
                activation=_activation(self.feed_forward_proj),
                dropout_rate=self.dropout_rate,
                input_stddev=factor * patch_width**-0.5,
                output_stddev=factor * self.d_ff**-0.5,
                dtype=self.dtype_policy,
                name=name,
            )

        self.input_patch_embedding = residual_block("input_patch_embedding", self.d_model)
        self._make_stacks()
        self.output_patch_embedding = residual_block(
            "output_patch_embedding", self.num_quantiles * chronos.prediction_length
        )
        self._make_dropout()

    def build(self, input_shape=None):
        if self.built:
            return
        self._build_stacks()
        self.input_patch_embedding.build((None, None, 2 * self.chronos_config.input_patch_size))
        self.output_patch_embedding.build((None, None, self.d_model))
        self.built = True

    def shape_summary(self) -> str:
        """`describe`'s words for what is Chronos-Bolt's own: patches, quantiles, [REG]."""
        chronos = self.chronos_config
        return (
            f"patches of {chronos.input_patch_size}, {self.num_quantiles} quantiles"
            f"{', [REG]' if chronos.use_reg_token else ''}"
        )

    # ---- encoder ---------------------------------------------------------------

    def last_context(self, context, mask=None):
        """The last `context_length` steps of `context` `(batch, time)` (and of
        `mask`, when given): what the model reads."""
        length = self.chronos_config.context_length
        context = ops.convert_to_tensor(context)
        if context.shape[-1] > length:
            context = context[:, -length:]
            mask = None if mask is None else mask[:, -length:]
        return context, mask

    def encode(self, context, mask=None, training=False):
        """The encoder pass of a batch of series.

        Args:
            context: `(batch, time)` float; NaN marks missing values. Only the
                last `context_length` steps are read.
            mask: optional `(batch, time)`, true (or 1) where observed.
                Defaults to the non-NaN values.

        Returns:
            `(encoder_states, attention_mask, loc, scale)`: states `(batch,
            patches (+ 1 for [REG]), d_model)`, the mask of the patches with an
            observed value `(batch, patches (+ 1))`, and the series' mean and
            standard deviation `(batch, 1)` float32.
        """
        chronos = self.chronos_config
        context, mask = self.last_context(context, mask)
        # Standardised over the non-NaN values (whatever `mask` says, as the
        # reference) in float32, then moved to the model's dtype.
        not_nan = ops.logical_not(ops.isnan(context))
        observed = not_nan if mask is None else ops.cast(mask, "bool")
        scaled, loc, scale = instance_norm(context, not_nan)
        scaled = ops.cast(scaled, self.compute_dtype)
        weight = ops.cast(observed, self.compute_dtype)
        size, stride = chronos.input_patch_size, chronos.input_patch_stride
        patched = patches(scaled, size, stride, float("nan"))  # (batch, patches, size)
        patched_mask = patches(weight, size, stride, 0.0)
        patched = ops.where(patched_mask > 0, patched, 0.0)
        features = ops.concatenate([patched, patched_mask], axis=-1)  # (batch, patches, 2·size)
        embeddings = invoke(self.input_patch_embedding, features, training=training)
        if chronos.use_reg_token:
            batch = ops.shape(embeddings)[0]
            reg_ids = ops.full((batch, 1), self.reg_token_id, dtype="int32")
            embeddings = ops.concatenate([embeddings, invoke(self.shared, reg_ids)], axis=1)
        attention_mask = self.encoder_mask(patched_mask)
        states = self.encode_embeddings(embeddings, attention_mask, training)
        return states, attention_mask, loc, scale

    def encoder_mask(self, patched_mask):
        """The encoder's attention mask `(batch, patches (+ 1))` of the patches'
        observed masks `(batch, patches, input_patch_size)`: a patch with one
        observed value (and the `[REG]` token) is attended to."""
        attention_mask = ops.sum(patched_mask, axis=-1) > 0
        if self.chronos_config.use_reg_token:
            batch = ops.shape(attention_mask)[0]
            attention_mask = ops.concatenate(
                [attention_mask, ops.ones((batch, 1), dtype="bool")], axis=1
            )
        return attention_mask

    def context_mask(self, context, mask=None):
        """The encoder's attention mask `(batch, patches (+ 1))` of a context
        (what `encode` returns, without running the encoder)."""
        context, mask = self.last_context(context, mask)
        observed = ops.logical_not(ops.isnan(context)) if mask is None else mask
        chronos = self.chronos_config
        weight = ops.cast(observed, self.compute_dtype)
        return self.encoder_mask(
            patches(weight, chronos.input_patch_size, chronos.input_patch_stride, 0.0)
        )

    # ---- decoder and head (`decode`: see `T5Stacks`) -------------------------------

    def decoder_state(self, encoder_states, attention_mask, training=False):
        """The decoder's state `(batch, 1, d_model)` after one step from the
        start token: what the output block (or the experts) read."""
        batch = ops.shape(encoder_states)[0]
        start = ops.full((batch, 1), self.decoder_start_token_id, dtype="int32")
        return self.decode(start, encoder_states, attention_mask, training)

    def quantile_forecast(self, head_outputs, loc, scale):
        """Quantile forecasts `(batch, len(quantiles), prediction_length)` in
        the series' units, float32, of the output block's `(batch, 1,
        len(quantiles) · prediction_length)` standardised values."""
        shape = (-1, self.num_quantiles, self.chronos_config.prediction_length)
        scaled = ops.reshape(head_outputs, shape)  # (batch, quantiles, horizon)
        # Back to the series' units in float32 (the reference's `InstanceNorm.inverse`).
        return ops.cast(scaled, "float32") * scale[:, :, None] + loc[:, :, None]

    def call(self, inputs, training=False):
        states, attention_mask, loc, scale = self.encode(
            inputs["context"], inputs.get("mask"), training
        )
        hidden = self.decoder_state(states, attention_mask, training)
        outputs = invoke(self.output_patch_embedding, hidden, training=training)
        return self.quantile_forecast(outputs, loc, scale)

    # ---- training ------------------------------------------------------------------

    def forecast_loss(self, x, y, quantiles):
        """The reference's quantile loss (`quantile_loss`) of forecasts in the
        series' units against the batch's future.

        Both are standardised with the loc and scale of the context (the
        encoder's float32 values, recomputed from `x["context"]`), as the
        reference compares its standardised forecasts with the standardised
        target.

        Args:
            x: the batch: `context` `(batch, time)`, `target` `(batch,
                target_length <= prediction_length)` (NaN where missing) and
                optionally `target_mask` (true where the target counts;
                defaults to its non-NaN values).
            y: the target, in place of `x["target"]`; or `None`.
            quantiles: `(batch, len(quantiles), prediction_length)`, the
                model's forecasts of the batch (`call`).

        Returns:
            The loss, a float32 scalar.
        """
        target = ops.convert_to_tensor(x["target"] if y is None else y, "float32")
        horizon = self.chronos_config.prediction_length
        if target.shape[-1] > horizon:
            raise ValueError(
                f"The target must be at most prediction_length={horizon} steps long. "
                f"Received: target of shape {tuple(target.shape)}"
            )
        context, _ = self.last_context(x["context"])
        _, loc, scale = instance_norm(context, ops.logical_not(ops.isnan(context)))
        target_mask = x.get("target_mask")
        if target_mask is None:
            target_mask = ops.logical_not(ops.isnan(target))
        scaled_target = (target - loc) / scale
        scaled_quantiles = (ops.cast(quantiles, "float32") - loc[:, :, None]) / scale[:, :, None]
        return quantile_loss(scaled_quantiles, scaled_target, target_mask, self.quantiles)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The quantile loss of `forecast_loss` against `x["target"]` (or `y`),
        plus the model's added losses; what `fit` minimises."""
        loss = self.forecast_loss(x, y, y_pred)
        return loss + ops.cast(sum(self.losses), "float32") if self.losses else loss

    def get_config(self):
        return {
            **super().get_config(),
            **self.stack_config(),
            "chronos_config": self.chronos_config.to_dict(),
        }
