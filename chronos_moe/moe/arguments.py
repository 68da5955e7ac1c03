"""The named errors of `ChronosMoE` and `build_moe_chronos`, raised before any
model is built."""

from __future__ import annotations

from chronos_moe.models.chronos_bolt import ChronosBolt
from chronos_moe.models.chronos_t5 import ChronosT5
from chronos_moe.moe.balancing import validate_balancing
from chronos_moe.moe.router import validate_routing
from chronos_moe.moe.token_experts import validate_feed_forward_proj
from chronos_moe.validation import positive_int

# Where the experts sit: one route per series (a head after the decoder) or
# one route per token (the feed-forward layers of the T5 blocks).
MOE_LEVELS = ("series", "token")


def validate_moe_arguments(
    base,
    num_experts,
    top_k,
    load_balancing_mode,
    load_balancing_window,
    bias_update_rate,
    level="series",
    moe_every=1,
    **non_negative: float,
) -> None:
    """Every named error of `build_moe_chronos`, raised before any model is built."""
    require_moe_base(base)
    validate_routing(num_experts, top_k)
    validate_balancing(load_balancing_mode, load_balancing_window, bias_update_rate)
    require_non_negative(**non_negative)
    if level not in MOE_LEVELS:
        raise ValueError(
            f"`level` must be one of {', '.join(map(repr, MOE_LEVELS))}. Received: level={level!r}"
        )
    positive_int("moe_every", moe_every)
    if level == "token":
        validate_feed_forward_proj(base.feed_forward_proj)


def require_non_negative(**values: float) -> None:
    """A named error for the first negative value."""
    for name, value in values.items():
        if value < 0:
            raise ValueError(f"`{name}` must be >= 0. Received: {name}={value}")


def require_moe_base(base) -> None:
    """A named error unless `base` is a model experts can be attached to."""
    if not isinstance(base, (ChronosT5, ChronosBolt)):
        raise TypeError(
            "`base` must be a ChronosT5 or ChronosBolt model. "
            f"Received: base of type {type(base).__name__}"
        )
