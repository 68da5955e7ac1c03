"""ContextRouter: picks the top-k experts of each series from its context."""

from __future__ import annotations

import numbers

import keras
from keras import ops

from chronos_moe.layers.common import register


def masked_mean(states, mask):
    """Mean of `states` `(batch, len, dim)` over the positions where `mask` is
    true; `(batch, dim)`. A row without any true position gives zeros."""
    weights = ops.cast(mask, states.dtype)[..., None]
    total = ops.sum(states * weights, axis=1)
    return total / ops.maximum(ops.sum(weights, axis=1), 1.0)


@register
class ContextRouter(keras.layers.Layer):
    """Routes each series to `top_k` of `num_experts` experts from its context.

    The encoder states are averaged over the attended positions (observed
    values and EOS) into one context embedding per series, which a two-layer
    MLP maps to one logit per expert. The `top_k` most probable experts are
    chosen; their gates are the router probabilities renormalised over the
    chosen k (they sum to 1). The router always computes in float32, whatever
    the dtype policy of the model: softmax and top-k on bfloat16 logits are
    too coarse to balance experts.

    Args:
        num_experts: int. Number of experts `N`.
        top_k: int. Experts per series, `1 <= top_k <= num_experts`.
        hidden_dim: int. Width of the router MLP. Defaults to `128`.
        jitter_noise: float. During training, the context embedding is
            multiplied by noise uniform in `[1 - jitter_noise, 1 + jitter_noise]`
            (Switch Transformer). Defaults to `0.0` (off).
        seed: int. Seed of the jitter noise.

    Call arguments:
        encoder_states: `(batch, len, d_model)`.
        attention_mask: `(batch, len)`, true where attended.
        training: bool.

    Returns:
        dict: `expert_indices` int32 `(batch, top_k)`, `gates` float32
        `(batch, top_k)`, `router_probs` and `router_logits` float32
        `(batch, num_experts)`.

    Example:

    >>> import numpy as np
    >>> router = ContextRouter(num_experts=4, top_k=2, hidden_dim=8)
    >>> out = router(np.random.rand(3, 5, 16).astype("float32"), np.ones((3, 5), bool))
    >>> tuple(out["expert_indices"].shape), tuple(out["router_probs"].shape)
    ((3, 2), (3, 4))
    >>> bool(np.allclose(keras.ops.convert_to_numpy(out["gates"]).sum(-1), 1.0))
    True
    """

    def __init__(
        self,
        num_experts: int,
        top_k: int,
        hidden_dim: int = 128,
        jitter_noise: float = 0.0,
        seed: int | None = None,
        **kwargs,
    ):
        kwargs["dtype"] = "float32"  # see the class docstring
        super().__init__(**kwargs)
        validate_routing(num_experts, top_k)
        if not 0 <= jitter_noise < 1:
            raise ValueError(
                f"`jitter_noise` must be in [0, 1). Received: jitter_noise={jitter_noise}"
            )
        self.num_experts = int(num_experts)
        self.top_k = int(top_k)
        self.hidden_dim = hidden_dim
        self.jitter_noise = jitter_noise
        self.seed = seed
        self.hidden = keras.layers.Dense(
            hidden_dim, activation="relu", dtype="float32", name="hidden"
        )
        self.logits = keras.layers.Dense(num_experts, dtype="float32", name="logits")
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, encoder_states_shape, attention_mask_shape=None):
        self.hidden.build((None, encoder_states_shape[-1]))
        self.logits.build((None, self.hidden_dim))

    def call(self, encoder_states, attention_mask, training=False):
        context = masked_mean(
            ops.cast(encoder_states, "float32"), attention_mask
        )  # (batch, d_model)
        if training and self.jitter_noise > 0:
            context = context * keras.random.uniform(
                ops.shape(context),
                1.0 - self.jitter_noise,
                1.0 + self.jitter_noise,
                seed=self.seed_generator,
            )
        router_logits = self.logits(self.hidden(context))  # (batch, N)
        router_probs = ops.softmax(router_logits, axis=-1)
        top_probs, expert_indices = ops.top_k(router_probs, self.top_k)  # (batch, k)
        gates = top_probs / ops.sum(top_probs, axis=-1, keepdims=True)
        return {
            "expert_indices": ops.cast(expert_indices, "int32"),
            "gates": gates,
            "router_probs": router_probs,
            "router_logits": router_logits,
        }

    def compute_output_spec(self, encoder_states, attention_mask, training=False):
        batch = encoder_states.shape[0]
        return {
            "expert_indices": keras.KerasTensor((batch, self.top_k), dtype="int32"),
            "gates": keras.KerasTensor((batch, self.top_k), dtype="float32"),
            "router_probs": keras.KerasTensor((batch, self.num_experts), dtype="float32"),
            "router_logits": keras.KerasTensor((batch, self.num_experts), dtype="float32"),
        }

    def get_config(self):
        config = super().get_config()
        config.pop("dtype", None)
        return {
            **config,
            "num_experts": self.num_experts,
            "top_k": self.top_k,
            "hidden_dim": self.hidden_dim,
            "jitter_noise": self.jitter_noise,
            "seed": self.seed,
        }


def validate_routing(num_experts, top_k) -> None:
    """Named errors for impossible expert counts."""
    for name, value in (("num_experts", num_experts), ("top_k", top_k)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"`{name}` must be an integer >= 1. Received: {name}={value!r}")
    if top_k > num_experts:
        raise ValueError(
            f"`top_k` must be <= num_experts. Received: top_k={top_k}, num_experts={num_experts}"
        )
