"""Router regularisers: the Switch-Transformer load-balancing loss and the
router z-loss. The one implementation every MoE layer uses."""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any

import keras
from keras import ops

from chronos_moe import backend
from chronos_moe.layers.common import register

# How the router is kept balanced (`ChronosMoE(load_balancing_mode=...)`): the
# Switch balance loss, the DeepSeek-V3 selection bias, or both.
BALANCE_MODES = ("loss", "bias", "loss_and_bias")


def validate_balancing(mode, window, rate) -> None:
    """Named errors for a balance mode that does not exist, a window below one
    step or a bias step `γ <= 0`."""
    if mode not in BALANCE_MODES:
        raise ValueError(
            f"`load_balancing_mode` must be one of {', '.join(map(repr, BALANCE_MODES))}. "
            f"Received: load_balancing_mode={mode!r}"
        )
    if isinstance(window, bool) or not isinstance(window, numbers.Integral) or window < 1:
        raise ValueError(
            f"`load_balancing_window` must be an integer >= 1. "
            f"Received: load_balancing_window={window!r}"
        )
    if (
        isinstance(rate, bool)
        or not isinstance(rate, numbers.Real)
        or not math.isfinite(rate)
        or rate <= 0
    ):
        raise ValueError(
            f"`bias_update_rate` must be a finite number > 0. Received: bias_update_rate={rate!r}"
        )


def slot_shares(expert_indices, num_experts: int, mask=None):
    """Each expert's share of the routing slots (series or tokens × top-k) of a
    batch, `(num_experts,)` float32 summing to 1. `mask` `(batch,)`, optional:
    rows where it is false (padded tokens) are not counted.

    Example:

    >>> import numpy as np
    >>> keras.ops.convert_to_numpy(slot_shares(np.array([[0, 1], [0, 2]]), 4)).tolist()
    [0.5, 0.25, 0.25, 0.0]
    """
    slots = ops.sum(ops.one_hot(expert_indices, num_experts, dtype="float32"), axis=1)  # (batch, N)
    if mask is not None:
        slots = slots * ops.cast(mask, "float32")[:, None]
    counts = backend.global_sum(ops.sum(slots, axis=0))  # the global batch's (torch DDP)
    return counts / ops.maximum(ops.sum(counts), 1.0)


def windowed_load(previous, shares, window: int):
    """The expert loads averaged over about `window` steps: the exponential
    moving average `previous + (shares - previous) / window` (`window = 1`:
    this step's shares alone). Each step's shares sum to 1, so the average does.

    Example:

    >>> import numpy as np
    >>> load = windowed_load(np.full(2, 0.5, "float32"), np.array([1.0, 0.0], "float32"), 4)
    >>> keras.ops.convert_to_numpy(load).tolist()
    [0.625, 0.375]
    """
    previous = ops.cast(previous, "float32")
    return previous + (ops.cast(shares, "float32") - previous) / float(window)


def selection_bias_update(bias, load, rate: float):
    """Auxiliary-loss-free balancing (DeepSeek-V3): `b_i + γ · sign(mean(load) −
    load_i)`. An overloaded expert's bias falls and an idle one's rises by `γ`,
    until their selection scores `probability + bias` share the series evenly.

    Example:

    >>> import numpy as np
    >>> load = np.array([0.5, 0.25, 0.25, 0.0], "float32")
    >>> bias = selection_bias_update(np.zeros(4, "float32"), load, 1e-3)
    >>> [round(float(b), 6) for b in keras.ops.convert_to_numpy(bias)]
    [-0.001, 0.0, 0.0, 0.001]
    """
    load = ops.cast(load, "float32")
    step = ops.sign(ops.mean(load) - load)
    return ops.cast(bias, "float32") + rate * step


def update_balance_state(expert_load, selection_bias, shares, window: int, mode: str, rate: float):
    """Folds one training step's slot `shares` into a router's balancing state:
    `expert_load` (the windowed shares) and, when `mode` uses the bias,
    `selection_bias`. The one update every router (series or token level) runs.

    The bias takes this step's shares, as DeepSeek-V3: it is itself a running
    sum, and a lagged (averaged) load would make it overshoot.
    """
    expert_load.assign(windowed_load(expert_load, shares, window))
    if "bias" in mode:
        selection_bias.assign(selection_bias_update(selection_bias, shares, rate))


def update_router_balance(router: Any, shares: Any) -> None:
    """`update_balance_state` on a router's own state and settings: its
    `expert_load`, `selection_bias`, `balance_window`, `balance_mode` and
    `bias_update_rate` (a `ContextRouter` or a `TokenExperts` layer)."""
    update_balance_state(
        router.expert_load,
        router.selection_bias,
        shares,
        router.balance_window,
        router.balance_mode,
        router.bias_update_rate,
    )


def masked_mean_rows(values, mask=None):
    """Mean of `values` `(rows, ...)` over the rows where `mask` `(rows,)` is
    true (all rows when `mask` is None), in float32."""
    values = ops.cast(values, "float32")
    if mask is None:
        weights = ops.ones((ops.shape(values)[0],) + (1,) * (len(values.shape) - 1), "float32")
    else:
        weights = ops.reshape(ops.cast(mask, "float32"), (-1,) + (1,) * (len(values.shape) - 1))
    # Summed over the ranks of a torch data-parallel step (else as is): the
    # mean over the global batch.
    total = backend.global_sum(ops.sum(values * weights, axis=0))
    return total / ops.maximum(backend.global_sum(ops.sum(weights)), 1.0)


def load_balancing_loss(
    router_probs, expert_indices, num_experts: int, expert_load=None, mask=None
):
    """Switch-Transformer balance loss `N · Σ_i f_i · P_i`.

    `f_i` is the share of routing slots (series × top-k) given to expert `i`,
    `P_i` the mean router probability of expert `i`. It is 1.0 when the slots
    are evenly shared (in particular for a uniform router) and `N / k` for a
    full collapse, every series sent to the same k experts with all its
    probability on them (`N` for top-1). Only `P` carries a gradient (the
    choice itself is discrete). Computed in float32.

    Args:
        router_probs: `(batch, num_experts)` softmax probabilities.
        expert_indices: int `(batch, top_k)` chosen experts.
        num_experts: int.
        expert_load: `(num_experts,)` or None. The shares `f` averaged over a
            window of steps (`ContextRouter.expert_load`), used in place of this
            batch's shares so that the loss does not hinge on one micro-batch.
        mask: `(batch,)` or None. Rows to count (token level: the tokens that
            are not padding); `f` and `P` are taken over these rows only.

    Example:

    >>> import numpy as np
    >>> probs = np.full((4, 2), 0.5, "float32")
    >>> float(load_balancing_loss(probs, np.array([[0], [1], [0], [1]]), 2))
    1.0
    """
    if expert_load is None:
        fraction = slot_shares(expert_indices, num_experts, mask)  # (N,)
    else:
        fraction = ops.cast(expert_load, "float32")
    mean_prob = masked_mean_rows(router_probs, mask)  # (N,)
    return num_experts * ops.sum(ops.stop_gradient(fraction) * mean_prob)


def router_z_loss(router_logits, mask=None):
    """ST-MoE router z-loss: mean of `logsumexp(logits)²` (over the rows where
    `mask` is true), keeps router logits small. Computed in float32 (logsumexp
    is stable for logits of ±1e4)."""
    logits = ops.cast(router_logits, "float32")
    return masked_mean_rows(ops.square(ops.logsumexp(logits, axis=-1)), mask)


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
        expert_load: `(num_experts,)` or None. Windowed expert shares for the
            balance loss (see `load_balancing_loss`); None: this batch's.
        padding_mask: `(batch,)` or None. The rows to count (padded tokens
            excluded).

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

    def call(
        self, router_probs, expert_indices, router_logits, expert_load=None, padding_mask=None
    ):
        balance = load_balancing_loss(
            router_probs, expert_indices, self.num_experts, expert_load, padding_mask
        )
        z_loss = router_z_loss(router_logits, padding_mask)
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


class ExpertCollapseWarning(UserWarning):
    """One expert receives more than the allowed share of the series (or, for
    token-level experts, of the tokens)."""


class ExpertShareMonitor(keras.callbacks.Callback):
    """Warns when one expert takes more than `max_share` of the routing.

    Reads the `expert_i` entries that `ChronosMoE` logs (each expert's share of
    routing slots since the epoch began) at the end of every epoch, on the host
    and outside any compiled step, so it costs nothing per step and works the
    same on every backend. The share of *series* (of *tokens* for a token-level
    model, averaged over its expert layers) routed to expert `i` is
    `top_k × slot share`; a `ExpertCollapseWarning` (Python `warnings`) names
    the expert and its share when that exceeds `max_share`. With
    `top_k == num_experts` every expert sees every series and nothing is checked.

    Args:
        max_share: float in (0, 1]. The largest share of series one expert may
            receive without a warning. Defaults to `0.9`.
        prefix: str. Prefix of the logged entries; `"val_"` checks the
            validation routing. Defaults to `""`.

    Example:

    >>> monitor = ExpertShareMonitor(max_share=0.9)
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     monitor.on_epoch_end(0, {"expert_0": 0.95, "expert_1": 0.05})
    >>> str(caught[0].message)
    'Expert 0 received 95.0% of the series in epoch 1 (more than 90.0%): the router is collapsing.'
    """

    def __init__(self, max_share: float = 0.9, prefix: str = ""):
        super().__init__()
        if not 0 < max_share <= 1:
            raise ValueError(f"`max_share` must be in (0, 1]. Received: max_share={max_share}")
        self.max_share = max_share
        self.prefix = prefix

    def on_epoch_end(self, epoch, logs=None):
        self.check(logs, f"epoch {epoch + 1}")

    def check(self, logs: dict | None, period: str) -> None:
        """Warns if the `expert_i` shares in `logs` exceed `max_share`.

        Args:
            logs: dict. Logged values; the `<prefix>expert_i` entries are read.
            period: str. What the shares cover, for the message (`"epoch 3"`,
                `"steps 11-20"`).
        """
        prefix = f"{self.prefix}expert_"
        shares = {
            int(key[len(prefix) :]): float(value)
            for key, value in (logs or {}).items()
            if key.startswith(prefix) and key[len(prefix) :].isdigit()
        }
        top_k = getattr(self.model, "top_k", 1)
        if not shares or top_k >= len(shares):
            return
        expert = max(shares, key=shares.get)
        share = top_k * shares[expert]
        routed = "tokens" if getattr(self.model, "level", "series") == "token" else "series"
        if share > self.max_share:
            warnings.warn(
                f"Expert {expert} received {share:.1%} of the {routed} in {period} "
                f"(more than {self.max_share:.1%}): the router is collapsing.",
                ExpertCollapseWarning,
                stacklevel=2,
            )
