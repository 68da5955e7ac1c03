"""Router regularisers: the Switch-Transformer load-balancing loss and the
router z-loss. The one implementation every MoE layer uses."""

from __future__ import annotations

import keras
from keras import ops

from chronos_moe.layers.t5 import register


def load_balancing_loss(router_probs, expert_indices, num_experts: int):
    """Switch-Transformer balance loss `N · Σ_i f_i · P_i`.

    `f_i` is the share of routing slots (series × top-k) given to expert `i`,
    `P_i` the mean router probability of expert `i`. It is 1.0 when both are
    uniform and `N` when every series goes to one expert with certainty. Only
    `P` carries a gradient (the choice itself is discrete). Computed in float32.

    Args:
        router_probs: `(batch, num_experts)` softmax probabilities.
        expert_indices: int `(batch, top_k)` chosen experts.
        num_experts: int.

    Example:

    >>> import numpy as np
    >>> probs = np.full((4, 2), 0.5, "float32")
    >>> float(load_balancing_loss(probs, np.array([[0], [1], [0], [1]]), 2))
    1.0
    """
    probs = ops.cast(router_probs, "float32")
    slots = ops.sum(ops.one_hot(expert_indices, num_experts, dtype="float32"), axis=1)  # (batch, N)
    fraction = ops.sum(slots, axis=0) / ops.maximum(ops.sum(slots), 1.0)  # (N,)
    mean_prob = ops.mean(probs, axis=0)  # (N,)
    return num_experts * ops.sum(ops.stop_gradient(fraction) * mean_prob)


def router_z_loss(router_logits):
    """ST-MoE router z-loss: mean of `logsumexp(logits)²`, keeps router logits
    small. Computed in float32 (logsumexp is stable for logits of ±1e4)."""
    logits = ops.cast(router_logits, "float32")
    return ops.mean(ops.square(ops.logsumexp(logits, axis=-1)))


@register
class LoadBalancingRegularizer(keras.layers.Layer):
    """Weighted router regularisation for a Mixture-of-Experts layer.

    Args:
        num_experts: int. Number of experts `N`.
        weight: float. Weight of the balance loss. Defaults to `0.01`.
        z_loss_weight: float. Weight of the router z-loss; `0` turns it off.
            Defaults to `0.0`.

    Call arguments:
        router_probs: `(batch, num_experts)`.
        expert_indices: int `(batch, top_k)`.
        router_logits: `(batch, num_experts)`.

    Returns:
        dict with `lb_loss`, `z_loss` (unweighted, float32 scalars) and
        `loss` = `weight · lb_loss + z_loss_weight · z_loss`.

    Example:

    >>> import numpy as np
    >>> regularizer = LoadBalancingRegularizer(num_experts=2, weight=0.1)
    >>> logits = np.zeros((4, 2), "float32")
    >>> out = regularizer(np.full((4, 2), 0.5, "float32"), np.array([[0], [0], [1], [1]]), logits)
    >>> round(float(out["lb_loss"]), 6), round(float(out["loss"]), 6)
    (1.0, 0.1)
    """

    def __init__(
        self, num_experts: int, weight: float = 0.01, z_loss_weight: float = 0.0, **kwargs
    ):
        # float32 whatever the policy: Keras casts a layer's float inputs to its
        # compute dtype, and bfloat16 would round the router's float32 outputs.
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        if weight < 0 or z_loss_weight < 0:
            raise ValueError(
                "Regularisation weights must be >= 0. "
                f"Received: weight={weight}, z_loss_weight={z_loss_weight}"
            )
        self.num_experts = num_experts
        self.weight = weight
        self.z_loss_weight = z_loss_weight

    def call(self, router_probs, expert_indices, router_logits):
        balance = load_balancing_loss(router_probs, expert_indices, self.num_experts)
        z_loss = router_z_loss(router_logits)
        return {
            "lb_loss": balance,
            "z_loss": z_loss,
            "loss": self.weight * balance + self.z_loss_weight * z_loss,
        }

    def get_config(self):
        config = super().get_config()
        config.pop("dtype", None)
        return {
            **config,
            "num_experts": self.num_experts,
            "weight": self.weight,
            "z_loss_weight": self.z_loss_weight,
        }
