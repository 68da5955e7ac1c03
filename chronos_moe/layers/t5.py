"""The T5 layers under their former module path, `chronos_moe.layers.t5`.

Each layer now has a module of its own in `chronos_moe.layers`; this module
re-exports them so that existing imports keep working. New code imports
from `chronos_moe.layers` (or the layer's own module).
"""

from chronos_moe.layers.attention import (  # noqa: F401 (re-exported)
    LOWEST_FINITE,
    MASK_BIAS,
    T5Attention,
    cast_bias,
    sum_bias_terms,
)
from chronos_moe.layers.block import T5Block  # noqa: F401
from chronos_moe.layers.common import (  # noqa: F401
    direct_layer_calls,
    invoke,
    normal_initializer,
    register,
)
from chronos_moe.layers.dense import T5Dense  # noqa: F401
from chronos_moe.layers.feed_forward import FEED_FORWARD_PROJECTIONS, T5FeedForward  # noqa: F401
from chronos_moe.layers.layer_norm import T5LayerNorm  # noqa: F401
from chronos_moe.layers.position_bias import (  # noqa: F401
    T5RelativePositionBias,
    relative_position_bucket,
)
