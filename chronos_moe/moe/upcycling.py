"""Turning a dense `ChronosT5` (or `ChronosBolt`) into the parts of a
`ChronosMoE`: the copy with token-level experts upcycled from its feed-forward
layers, the series-level expert heads copied from its output head, and
`freeze_base`."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from chronos_moe.models.chronos_t5 import ChronosT5
from chronos_moe.models.t5_stacks import T5Stacks
from chronos_moe.moe.token_experts import TokenExperts, validate_feed_forward_proj


def head_layers(base: T5Stacks) -> list[keras.Layer]:
    """The base's layers outside the T5 blocks: the token table, the position
    biases, the final norms, and the T5 `lm_head` or Bolt's patch embedding
    and output blocks."""
    layers = [
        base.shared,
        base.encoder_position_bias,
        base.decoder_position_bias,
        base.encoder_final_norm,
        base.decoder_final_norm,
    ]
    names = ("lm_head", "input_patch_embedding", "output_patch_embedding")
    return layers + [getattr(base, n) for n in names if getattr(base, n, None) is not None]


def token_expert_layers(base: T5Stacks) -> list[TokenExperts]:
    """The `TokenExperts` among `base`'s feed-forward layers, encoder blocks
    first, in block order."""
    blocks = base.encoder_blocks + base.decoder_blocks
    return [block.feed_forward for block in blocks if isinstance(block.feed_forward, TokenExperts)]


def sublayers_except_experts(block) -> list:
    """The sublayers of a T5 block other than its `TokenExperts` (for `freeze_base`)."""
    layers = [block.self_attention_norm, block.self_attention, block.feed_forward_norm]
    if block.is_decoder:
        layers += [block.cross_attention_norm, block.cross_attention]
    if not isinstance(block.feed_forward, TokenExperts):
        layers.append(block.feed_forward)
    elif block.feed_forward.shared is not None:
        layers.append(block.feed_forward.shared)
    return layers


def freeze_all_but_experts(base: T5Stacks) -> None:
    """Token level, `freeze_base`: every weight of `base` is frozen except the
    routed experts and routers of its `TokenExperts` layers."""
    for block in base.encoder_blocks + base.decoder_blocks:
        for layer in sublayers_except_experts(block):
            layer.trainable = False
    for layer in head_layers(base):
        layer.trainable = False


def moe_block_names(num_layers: int, num_decoder_layers: int, moe_every: int) -> list[str]:
    """The blocks whose feed-forward becomes experts: 0, `moe_every`, … in each stack."""
    return [
        f"{stack}_block_{i}"
        for stack, count in (("encoder", num_layers), ("decoder", num_decoder_layers))
        for i in range(0, count, moe_every)
    ]


def with_token_experts(
    base: T5Stacks,
    num_experts: int,
    top_k: int,
    expert_hidden_dim: int,
    shared_expert: bool = True,
    moe_every: int = 1,
    **balance: Any,
) -> T5Stacks:
    """A copy of `base` whose chosen blocks have `TokenExperts` upcycled from
    their dense feed-forward layers (`TokenExperts.upcycle`): same function,
    same weights elsewhere. `base` itself is not changed."""
    validate_feed_forward_proj(base.feed_forward_proj)
    if not shared_expert and expert_hidden_dim != base.d_ff:
        raise ValueError(
            "Without a shared expert the routed experts are copies of the dense feed-forward, "
            f"so `expert_hidden_dim` must equal d_ff. Received: expert_hidden_dim="
            f"{expert_hidden_dim}, d_ff={base.d_ff}"
        )
    names = moe_block_names(base.num_layers, base.num_decoder_layers, moe_every)
    layers = {
        name: TokenExperts(
            num_experts,
            top_k,
            intermediate_dim=expert_hidden_dim,
            hidden_dim=base.d_model,
            feed_forward_proj=base.feed_forward_proj,
            shared_expert=shared_expert,
            shared_intermediate_dim=base.d_ff,
            dropout_rate=base.dropout_rate,
            dtype=base.dtype_policy,
            name="feed_forward",
            **{f"balance_{k}" if k in ("mode", "window") else k: v for k, v in balance.items()},
        )
        for name in names
    }
    config = {**base.get_config(), "feed_forward_layers": layers}
    model = type(base)(**config)
    pairs = list(zip(head_layers(base), head_layers(model), strict=True))
    for old, new in zip(
        base.encoder_blocks + base.decoder_blocks,
        model.encoder_blocks + model.decoder_blocks,
        strict=True,
    ):
        if isinstance(new.feed_forward, TokenExperts):
            new.feed_forward.upcycle(old.feed_forward)
        else:
            pairs.append((old.feed_forward, new.feed_forward))
        names = ["self_attention_norm", "self_attention", "feed_forward_norm"]
        if old.is_decoder:
            names += ["cross_attention_norm", "cross_attention"]
        pairs += [(getattr(old, name), getattr(new, name)) for name in names]
    for old, new in pairs:
        new.set_weights(old.get_weights())
    return model


def base_output_scale(base: ChronosT5) -> float:
    """The factor `s` with `logits = s · hidden @ M` for `base`: `d_model ** -0.5`
    with a tied embedding head, else 1."""
    return base.d_model**-0.5 if base.lm_head is None else 1.0


def base_head_matrix(base: ChronosT5) -> np.ndarray:
    """The `(d_model, vocab)` matrix `M` with `logits = s · hidden @ M` for `base`
    (`s`: `base_output_scale`)."""
    if base.lm_head is not None:
        return np.asarray(keras.ops.convert_to_numpy(base.lm_head.kernel))
    return np.asarray(keras.ops.convert_to_numpy(base.shared.embeddings)).T


def expert_heads(base: ChronosT5, num_experts: int, noise: float, seed: int | None) -> np.ndarray:
    """Series level: `num_experts` copies of `base`'s head matrix (`base_head_matrix`),
    `(num_experts, d_model, vocab)`; `noise > 0` adds N(0, (noise · std(head))²)
    to each copy to break the symmetry."""
    matrix = base_head_matrix(base)
    heads = np.repeat(matrix[None], num_experts, axis=0)
    if noise > 0:
        rng = np.random.default_rng(seed)
        heads = heads + rng.normal(0.0, noise * matrix.std(), heads.shape)
    return heads
