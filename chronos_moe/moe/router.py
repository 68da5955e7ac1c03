"""ContextRouter: picks the top-k experts of each series from its context."""

from __future__ import annotations

import numbers

import keras
from keras import ops

from chronos_moe import backend
from chronos_moe.layers.common import register
from chronos_moe.moe.balancing import slot_shares, update_router_balance, validate_balancing


def masked_mean(states, mask):
    """Mean of `states` `(batch, len, dim)` over the positions where `mask` is
    true; `(batch, dim)`. A row without any true position gives zeros."""
    weights = ops.cast(mask, states.dtype)[..., None]
    total = ops.sum(states * weights, axis=1)
    return total / ops.maximum(ops.sum(weights, axis=1), 1.0)


def series_moments(values):
    """Mean and variance of `values` `(batch, dim)` over the series, `(dim,)`
    each, in two passes: `Σ (x − mean)² / n` (Keras' `E[x²] − E[x]²` loses most
    digits when, as for pooled states, the spread is 1e-4 of the mean). In a
    torch data-parallel step the sums run over all ranks (as `SyncBatchNorm`),
    so every rank normalises by the global batch's statistics and keeps the
    same moving statistics."""
    values = ops.cast(values, "float32")
    count = backend.global_sum(ops.cast(ops.shape(values)[0], "float32"))
    mean = backend.global_sum(ops.sum(values, axis=0)) / count
    return mean, backend.global_sum(ops.sum(ops.square(values - mean), axis=0)) / count


@register
class SeriesBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` over series whose training statistics
    are `series_moments`: the global batch's under torch DDP. Its weights
    and their paths are `BatchNormalization`'s."""

    def _moments(self, inputs, mask):
        if mask is not None or self._reduction_axes != [0]:
            return super()._moments(inputs, mask)
        return series_moments(inputs)


@register
class ContextRouter(keras.layers.Layer):
    """Routes each series to `top_k` of `num_experts` experts from its context.

    The encoder states are averaged over the attended positions (observed
    values and EOS) into one context embedding per series. A layer norm
    (`input_norm`) rescales that embedding to unit variance per series before a
    two-layer MLP maps it to one logit per expert: mean-pooled T5 states are
    small (their norm is a few units over `d_model` features), so without it
    the router's logits barely differ between series and every series gets the
    same experts. The `top_k` experts with the highest `probability + bias` are
    chosen, where `selection_bias` is the auxiliary-loss-free balancing bias
    (DeepSeek-V3; zero unless `balance_mode` uses it); the bias only selects, the
    gates use the unbiased probabilities:

    - `top_k >= 2`: the chosen probabilities renormalised over the k (they sum
      to 1), so the forecasting loss trains the router by comparing the experts.
    - `top_k == 1`: the Switch-Transformer gate, the raw top-1 probability `p`,
      as `p + stop_gradient(1 - p)`: its value is 1 (attaching experts to a
      pretrained model still changes nothing) and its gradient is `p`'s, where
      the renormalised gate `p / p` would give the router no gradient at all.

    In training the layer keeps `expert_load`, each expert's share of the
    routing slots averaged over about `balance_window` steps (an exponential
    moving average with weight `1 / balance_window`) for the balance loss, and,
    in the `"bias"` and `"loss_and_bias"` modes, moves the bias after every step
    by `b_i += bias_update_rate · sign(mean(load) − load_i)`, with this step's
    shares as `load`. Both are
    non-trainable weights, saved with the model. The router always computes in
    float32, whatever the dtype policy of the model: softmax and top-k on
    bfloat16 logits are too coarse to balance experts.

    Args:
        num_experts: int. Number of experts `N`.
        top_k: int. Experts per series, `1 <= top_k <= num_experts`.
        hidden_dim: int. Width of the router MLP. Defaults to `128`.
        jitter_noise: float. During training, the context embedding is
            multiplied by noise uniform in `[1 - jitter_noise, 1 + jitter_noise]`
            (Switch Transformer). Defaults to `0.0` (off).
        seed: int. Seed of the jitter noise.
        input_norm: bool. Layer-normalise the pooled context before the MLP.
            Defaults to `True`.
        balance_mode: str. `"loss"` (the balance loss only), `"bias"` (the
            selection bias only) or `"loss_and_bias"`. The layer only uses it to
            decide whether to move the bias. Defaults to `"loss_and_bias"`.
        balance_window: int. Steps over which `expert_load` is averaged
            (`>= 1`; 1: the current step only). Defaults to `10`.
        bias_update_rate: float. `γ`, the step of the selection bias (`> 0`),
            in units of probability. Defaults to `1e-2`.

    Call arguments:
        encoder_states: `(batch, len, d_model)`.
        attention_mask: `(batch, len)`, true where attended.
        training: bool. Updates `expert_load` and `selection_bias`.

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
        input_norm: bool = True,
        balance_mode: str = "loss_and_bias",
        balance_window: int = 10,
        bias_update_rate: float = 1e-2,
        **kwargs,
    ):
        kwargs["dtype"] = "float32"  # see the class docstring
        super().__init__(**kwargs)
        validate_routing(num_experts, top_k)
        validate_balancing(balance_mode, balance_window, bias_update_rate)
        if not 0 <= jitter_noise < 1:
            raise ValueError(
                f"`jitter_noise` must be in [0, 1). Received: jitter_noise={jitter_noise}"
            )
        self.num_experts = int(num_experts)
        self.top_k = int(top_k)
        self.hidden_dim = hidden_dim
        self.jitter_noise = jitter_noise
        self.seed = seed
        self.input_norm = bool(input_norm)
        self.balance_mode = balance_mode
        self.balance_window = int(balance_window)
        self.bias_update_rate = float(bias_update_rate)
        self.norm = self.feature_norm = None
        if self.input_norm:
            # epsilon 1e-6: pooled T5 states have a per-feature variance of ~0.04,
            # Keras' default 1e-3 would damp exactly the differences the router needs.
            self.norm = keras.layers.LayerNormalization(
                epsilon=1e-6, dtype="float32", name="input_norm"
            )
            # Momentum 0.9: the encoder moves fast early in training, and stale
            # statistics would put every series on the same side at inference.
            self.feature_norm = SeriesBatchNormalization(
                momentum=0.9, epsilon=1e-6, dtype="float32", name="feature_norm"
            )
        self.hidden = keras.layers.Dense(
            hidden_dim, activation="relu", dtype="float32", name="hidden"
        )
        self.logits = keras.layers.Dense(num_experts, dtype="float32", name="logits")
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, encoder_states_shape, attention_mask_shape=None):
        if self.input_norm:
            self.norm.build((None, encoder_states_shape[-1]))
            self.feature_norm.build((None, encoder_states_shape[-1]))
        self.hidden.build((None, encoder_states_shape[-1]))
        self.logits.build((None, self.hidden_dim))
        # Balancing state: moved by `call(training=True)`, never by the optimizer.
        self.expert_load = self.add_weight(
            name="expert_load",
            shape=(self.num_experts,),
            initializer=keras.initializers.Constant(1.0 / self.num_experts),
            trainable=False,
        )
        self.selection_bias = self.add_weight(
            name="selection_bias", shape=(self.num_experts,), initializer="zeros", trainable=False
        )
        if self.input_norm:
            # 1 once a training call has set the moving statistics (see `call`).
            self.statistics_initialised = self.add_weight(
                name="statistics_initialised", shape=(1,), initializer="zeros", trainable=False
            )

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
        if self.input_norm:
            context = self.norm(context)  # each series: zero mean, unit variance
            if training:
                self.initialise_statistics(context)
            context = self.feature_norm(context, training=training)  # each feature, over series
        router_logits = self.logits(self.hidden(context))  # (batch, N)
        routing = select_experts(router_logits, self.selection_bias, self.top_k)
        if training:
            self.update_balance(routing["expert_indices"])
        return routing

    def initialise_statistics(self, context):
        """Sets the feature norm's moving statistics to the first training batch's.

        They start at mean 0 and variance 1, while the layer-normalised pooled
        states vary across series by as little as 1e-4 per feature: with
        momentum 0.9 the starting variance would outweigh the measured one for
        ~100 steps, and inference would route differently from training."""
        mean, variance = series_moments(context)
        fresh = ops.equal(self.statistics_initialised.value, 0.0)  # (1,)
        norm = self.feature_norm
        norm.moving_mean.assign(ops.where(fresh, mean, norm.moving_mean.value))
        norm.moving_variance.assign(ops.where(fresh, variance, norm.moving_variance.value))
        self.statistics_initialised.assign(ops.ones((1,), "float32"))

    def update_balance(self, expert_indices):
        """Folds this step's routing into `expert_load` and, when the balance
        mode uses it, moves `selection_bias` towards balance."""
        shares = slot_shares(expert_indices, self.num_experts)  # (N,)
        update_router_balance(self, shares)

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
            "input_norm": self.input_norm,
            "balance_mode": self.balance_mode,
            "balance_window": self.balance_window,
            "bias_update_rate": self.bias_update_rate,
        }


def select_experts(router_logits, selection_bias, top_k: int) -> dict:
    """The top-k choice and gates of every router (series or token level).

    `p = softmax(logits)` in float32; the `top_k` experts with the highest
    `p + selection_bias` are chosen (the bias selects, it never weighs); the
    gates are the chosen `p` renormalised over the k, or for `top_k == 1` the
    Switch gate `p + stop_gradient(1 - p)` (value 1, gradient `p`'s).

    Args:
        router_logits: `(rows, num_experts)`.
        selection_bias: `(num_experts,)`.
        top_k: int.

    Returns:
        dict: `expert_indices` int32 `(rows, top_k)`, `gates` `(rows, top_k)`,
        `router_probs` and `router_logits` `(rows, num_experts)`, float32.

    Example:

    >>> import numpy as np
    >>> out = select_experts(np.log(np.array([[0.5, 0.3, 0.2]], "float32")), np.zeros(3), 2)
    >>> keras.ops.convert_to_numpy(out["expert_indices"]).tolist()
    [[0, 1]]
    """
    router_logits = ops.cast(router_logits, "float32")
    router_probs = ops.softmax(router_logits, axis=-1)
    bias = ops.stop_gradient(ops.cast(selection_bias, "float32"))
    scores = router_probs + bias[None, :]  # (rows, N)
    _, expert_indices = ops.top_k(scores, top_k)  # (rows, k)
    expert_indices = ops.cast(expert_indices, "int32")
    chosen = ops.take_along_axis(router_probs, expert_indices, axis=-1)  # (rows, k)
    if top_k == 1:
        gates = chosen + ops.stop_gradient(1.0 - chosen)  # Switch gate, value 1
    else:
        gates = chosen / ops.sum(chosen, axis=-1, keepdims=True)
    return {
        "expert_indices": expert_indices,
        "gates": gates,
        "router_probs": router_probs,
        "router_logits": router_logits,
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
