"""The T5 layers, one concept per module, in the order a model reads them:

* `common`: what every layer shares (`register`, `normal_initializer`,
  `invoke` / `direct_layer_calls` for inference without Keras' per-call
  bookkeeping);
* `dense`: `T5Dense`; `dropout`: `FastDropout`;
* `layer_norm`: `T5LayerNorm` (and its `keras.ops` formula, `rms_norm`);
* `position_bias`: `T5RelativePositionBias`, `relative_position_bucket`;
* `attention`: `T5Attention` (`call` for whole sequences, `decode_step` for
  one position with a cache), the attention bias helpers, and the `keras.ops`
  reference of the backend's attention kernels;
* `feed_forward`: `T5FeedForward`;
* `block`: `T5Block`;
* `residual_block`: `ResidualBlock` (Chronos-Bolt's patch embedding and head).
"""

from chronos_moe.layers.attention import T5Attention
from chronos_moe.layers.block import T5Block
from chronos_moe.layers.dense import T5Dense
from chronos_moe.layers.dropout import FastDropout
from chronos_moe.layers.feed_forward import T5FeedForward
from chronos_moe.layers.layer_norm import T5LayerNorm
from chronos_moe.layers.position_bias import T5RelativePositionBias
from chronos_moe.layers.residual_block import ResidualBlock

__all__ = [
    "FastDropout",
    "ResidualBlock",
    "T5Attention",
    "T5Block",
    "T5Dense",
    "T5FeedForward",
    "T5LayerNorm",
    "T5RelativePositionBias",
]
