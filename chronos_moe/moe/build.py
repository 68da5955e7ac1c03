"""`build_moe_chronos`: a routed mixture of experts attached to a Chronos T5
or Chronos-Bolt model (a `ChronosMoE` or `ChronosBoltMoE`), upcycled so that
it starts as the base model's function."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import keras  # noqa: F401 (the example's)

from chronos_moe.moe.arguments import require_moe_base, require_non_negative

if TYPE_CHECKING:
    from chronos_moe.models.t5_stacks import T5Stacks
    from chronos_moe.moe.model import ChronosMoE


def build_moe_chronos(
    base: T5Stacks,
    num_experts: int = 4,
    top_k: int = 2,
    load_balancing_weight: float = 0.01,
    router_hidden_dim: int = 128,
    expert_hidden_dim: int | None = None,
    freeze_base: bool = False,
    router_z_loss_weight: float = 0.0,
    router_jitter_noise: float = 0.0,
    expert_init_noise: float = 0.0,
    seed: int | None = None,
    router_input_norm: bool = True,
    load_balancing_mode: str = "loss_and_bias",
    load_balancing_window: int = 10,
    bias_update_rate: float = 1e-2,
    level: str = "series",
    moe_every: int = 1,
    shared_expert: bool = True,
    **kwargs: Any,
) -> ChronosMoE:
    """Attaches a routed mixture of experts to a Chronos T5 or Chronos-Bolt model.

    On a `ChronosBolt` the result is a `ChronosBoltMoE`: at the series level
    its experts are copies of Bolt's output block, mixed at the quantile level
    (see `QuantileExpertHead`).

    `level="series"` (the default) routes each series to experts that replace
    the output head; `level="token"` routes each token to experts that replace
    the feed-forward layer of every `moe_every`-th block, upcycled from it
    (`TokenExperts.upcycle`: same function at the start).

    The result shares `base`'s encoder and decoder and starts
    function-preserving: every expert head is a copy of the base output head
    and every expert's residual block outputs zero, so its forecasts equal the
    base model's until training moves the weights. `expert_init_noise > 0`
    adds N(0, (noise · std(head))²) to each expert head to break the symmetry
    (then the start is no longer exact).

    Args:
        base: `ChronosT5` or `ChronosBolt`, pretrained or freshly initialised.
        num_experts, top_k, load_balancing_weight, router_hidden_dim,
        expert_hidden_dim, freeze_base, router_z_loss_weight,
        router_jitter_noise, router_input_norm, load_balancing_mode,
        load_balancing_window, bias_update_rate: see `ChronosMoE`.
        expert_init_noise: float. Relative scale of the symmetry-breaking noise
            (series level).
        seed: int. Seed of that noise.
        level: str. `"series"` or `"token"`. Defaults to `"series"`.
        moe_every: int. Token level: experts in blocks 0, `moe_every`, … of
            each stack. Defaults to `1` (every block).
        shared_expert: bool. Token level: the dense feed-forward stays as an
            always-on shared expert. Defaults to `True`.

    Returns:
        A `ChronosMoE`.

    Example:

    >>> import numpy as np
    >>> from chronos_moe import ChronosT5
    >>> base = ChronosT5.from_preset("tiny", vocab_size=64, num_layers=1)
    >>> moe = build_moe_chronos(base, num_experts=4, top_k=2)
    >>> batch = {"input_ids": np.full((2, 8), 5), "attention_mask": np.ones((2, 8), bool),
    ...          "decoder_input_ids": np.zeros((2, 3), "int32")}
    >>> dense = keras.ops.convert_to_numpy(base(batch))
    >>> mixed = keras.ops.convert_to_numpy(moe(batch)["logits"])
    >>> bool(np.abs(dense - mixed).max() < 1e-5)
    True
    """
    # The rest of the settings are checked by `ChronosMoE` itself.
    require_moe_base(base)
    require_non_negative(expert_init_noise=expert_init_noise)
    from chronos_moe.moe.bolt_model import moe_class  # a subclass: it imports model.py

    model = moe_class(base)(
        base,
        num_experts=num_experts,
        top_k=top_k,
        load_balancing_weight=load_balancing_weight,
        router_z_loss_weight=router_z_loss_weight,
        router_hidden_dim=router_hidden_dim,
        expert_hidden_dim=expert_hidden_dim,
        router_jitter_noise=router_jitter_noise,
        freeze_base=freeze_base,
        router_input_norm=router_input_norm,
        load_balancing_mode=load_balancing_mode,
        load_balancing_window=load_balancing_window,
        bias_update_rate=bias_update_rate,
        level=level,
        moe_every=moe_every,
        shared_expert=shared_expert,
        **kwargs,
    )
    if level == "series":
        model.upcycle(expert_init_noise, seed)
    return model
