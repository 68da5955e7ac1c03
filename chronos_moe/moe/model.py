"""ChronosMoE: a Chronos T5 whose output head is a routed mixture of experts."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from chronos_moe.layers.common import register
from chronos_moe.models.chronos_t5 import (
    ChronosT5,
    format_count,
    masked_cross_entropy,
    shift_right,
)
from chronos_moe.moe.balancing import LoadBalancingRegularizer, validate_balancing
from chronos_moe.moe.experts import MoEExpertHead
from chronos_moe.moe.router import ContextRouter, validate_routing


@register
class ExpertUtilization(keras.metrics.Metric):
    """Share of routing slots each expert received since the last reset.

    `result()` is a dict `{"expert_0": share, …}` so that every expert appears
    as its own entry in `History` and the progress bar.
    """

    def __init__(self, num_experts: int, name: str = "expert_utilization", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_experts = num_experts
        self.counts = self.add_variable(shape=(num_experts,), initializer="zeros", name="counts")

    def update_state(self, expert_indices):
        slots = ops.one_hot(ops.reshape(expert_indices, (-1,)), self.num_experts, dtype="float32")
        self.counts.assign(self.counts + ops.sum(slots, axis=0))

    def result(self):
        shares = self.counts / ops.maximum(ops.sum(self.counts), 1.0)
        return {f"expert_{i}": shares[i] for i in range(self.num_experts)}

    def reset_state(self):
        self.counts.assign(ops.zeros((self.num_experts,)))

    def get_config(self):
        return {**super().get_config(), "num_experts": self.num_experts}


@register
class ChronosMoE(keras.Model):
    """Chronos T5 with a `ContextRouter` and a `MoEExpertHead` in place of the
    output head. Build it with `build_moe_chronos`.

    The encoder and decoder are the base model's (shared, not copied). The
    router reads the encoder output once per series; the experts turn decoder
    states into logits. Training minimises `ce + load_balancing_weight · lb
    (+ router_z_loss_weight · z)` and logs `ce_loss`, `lb_loss` (and `z_loss`)
    separately; expert utilisation is logged per expert (`expert_i`). In
    training, `lb` uses the expert shares averaged over the router's window of
    steps (`ContextRouter.expert_load`); in the `"bias"` mode it is logged but
    not added to the loss, and the router's selection bias balances alone.

    Args:
        base: `ChronosT5`. The dense model whose encoder/decoder are used.
        num_experts: int. Number of experts.
        top_k: int. Experts per series.
        load_balancing_weight: float. Weight of the balance loss.
        router_z_loss_weight: float. Weight of the router z-loss (0 = off).
        router_hidden_dim: int. Width of the router MLP.
        expert_hidden_dim: int. Width of each expert's feed-forward block.
        router_jitter_noise: float. Multiplicative router noise in training.
        freeze_base: bool. Keep the base encoder/decoder weights fixed.
        router_input_norm: bool. Layer-normalise the router's pooled context
            (see `ContextRouter`, as for the next three).
        load_balancing_mode: str. `"loss"`, `"bias"` or `"loss_and_bias"`.
        load_balancing_window: int. Steps the expert loads are averaged over.
        bias_update_rate: float. `γ` of the selection-bias update.

    Call arguments:
        inputs: dict with `input_ids`, `attention_mask` and
            `decoder_input_ids` or `labels`, as for `ChronosT5`.

    Returns:
        dict: `logits` `(batch, dec_len, vocab)` and the router outputs
        (`expert_indices`, `gates`, `router_probs`, `router_logits`).
    """

    def __init__(
        self,
        base: ChronosT5,
        num_experts: int = 4,
        top_k: int = 2,
        load_balancing_weight: float = 0.01,
        router_z_loss_weight: float = 0.0,
        router_hidden_dim: int = 128,
        expert_hidden_dim: int | None = None,
        router_jitter_noise: float = 0.0,
        freeze_base: bool = False,
        router_input_norm: bool = True,
        load_balancing_mode: str = "loss_and_bias",
        load_balancing_window: int = 10,
        bias_update_rate: float = 1e-2,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(base, ChronosT5):
            raise TypeError(
                f"`base` must be a ChronosT5 model. Received: base of type {type(base).__name__}"
            )
        validate_routing(num_experts, top_k)
        validate_balancing(load_balancing_mode, load_balancing_window, bias_update_rate)
        require_non_negative(
            load_balancing_weight=load_balancing_weight,
            router_z_loss_weight=router_z_loss_weight,
            router_jitter_noise=router_jitter_noise,
        )
        self.base = base
        self.num_experts = int(num_experts)
        self.top_k = int(top_k)
        self.load_balancing_weight = load_balancing_weight
        self.router_z_loss_weight = router_z_loss_weight
        self.router_hidden_dim = router_hidden_dim
        self.expert_hidden_dim = expert_hidden_dim or base.d_ff
        self.router_jitter_noise = router_jitter_noise
        self.freeze_base = freeze_base
        self.router_input_norm = bool(router_input_norm)
        self.load_balancing_mode = load_balancing_mode
        self.load_balancing_window = int(load_balancing_window)
        self.bias_update_rate = float(bias_update_rate)
        self.router = ContextRouter(
            num_experts,
            top_k,
            router_hidden_dim,
            router_jitter_noise,
            input_norm=router_input_norm,
            balance_mode=load_balancing_mode,
            balance_window=load_balancing_window,
            bias_update_rate=bias_update_rate,
            name="router",
        )
        self.experts = MoEExpertHead(
            num_experts,
            base.vocab_size,
            self.expert_hidden_dim,
            output_scale=base_output_scale(base),
            dtype=base.dtype_policy,
            name="experts",
        )
        # In the "bias" mode the balance loss is logged, not trained on.
        loss_weight = load_balancing_weight if "loss" in load_balancing_mode else 0.0
        self.regularizer = LoadBalancingRegularizer(
            num_experts, loss_weight, router_z_loss_weight, name="regularizer"
        )
        self.ce_tracker = keras.metrics.Mean(name="ce_loss")
        self.lb_tracker = keras.metrics.Mean(name="lb_loss")
        self.z_tracker = keras.metrics.Mean(name="z_loss") if router_z_loss_weight > 0 else None
        self.utilization = ExpertUtilization(num_experts)
        if freeze_base:
            base.trainable = False
        self.build()

    def build(self, input_shape=None):
        if self.built:
            return
        hidden = (None, None, self.base.d_model)
        self.router.build(hidden)
        self.experts.build(hidden)
        self.built = True

    def __repr__(self) -> str:
        moe = self.router.count_params() + self.experts.count_params()
        return (
            f"<ChronosMoE {self.name!r}: {self.num_experts} experts, top-{self.top_k} routing "
            f"({format_count(moe)} parameters in the router and experts) on a ChronosT5 "
            f"{self.base.describe()}>"
        )

    # The generation interface of ChronosT5, delegated to the shared base.
    @property
    def chronos_config(self):
        return self.base.chronos_config

    @property
    def vocab_size(self) -> int:
        return self.base.vocab_size

    @property
    def decoder_start_token_id(self) -> int:
        return self.base.decoder_start_token_id

    @property
    def eos_token_id(self) -> int:
        return self.base.eos_token_id

    def encode(self, input_ids, attention_mask, training=False):
        return self.base.encode(input_ids, attention_mask, training)

    def init_cache(self, encoder_states, batch_size, max_length):
        return self.base.init_cache(encoder_states, batch_size, max_length)

    def decoding_constants(self, attention_mask, max_length):
        return self.base.decoding_constants(attention_mask, max_length)

    def decode_step(
        self, token_ids, cache_index, self_cache, cross_cache, attention_mask, constants=None
    ):
        return self.base.decode_step(
            token_ids, cache_index, self_cache, cross_cache, attention_mask, constants
        )

    def logits_function(self, encoder_states, attention_mask):
        """Routes the series and gathers their experts' weights once; returns the
        map hidden states → mixed logits, called at every decoding step."""
        routing = self.router(encoder_states, attention_mask)
        gathered = self.experts.gather(routing["expert_indices"], routing["gates"])
        return lambda hidden: self.experts.apply(hidden, gathered)

    def route(self, encoder_states, attention_mask, training=False):
        """The router's outputs for these encoder states (see `ContextRouter`)."""
        return self.router(encoder_states, attention_mask, training=training)

    def call(self, inputs, training=False):
        decoder_input_ids = inputs.get("decoder_input_ids")
        if decoder_input_ids is None:
            decoder_input_ids = shift_right(
                inputs["labels"], self.base.decoder_start_token_id, self.base.pad_token_id
            )
        mask = inputs["attention_mask"]
        encoder_states = self.base.encode(inputs["input_ids"], mask, training)
        routing = self.router(encoder_states, mask, training=training)
        hidden = self.base.decode(decoder_input_ids, encoder_states, mask, training)
        logits = self.experts(hidden, routing["expert_indices"], routing["gates"])
        return {"logits": logits, **routing}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """`ce + weight · lb (+ z weight · z)`; updates the `ce_loss`, `lb_loss`,
        `z_loss` and utilisation trackers."""
        labels = y if y is not None else x["labels"]
        ce = masked_cross_entropy(labels, y_pred["logits"])
        # Training: the shares averaged over the router's window (this step
        # included, `call` has just updated them); evaluation: this batch's.
        regularization = self.regularizer(
            y_pred["router_probs"],
            y_pred["expert_indices"],
            y_pred["router_logits"],
            ops.convert_to_tensor(self.router.expert_load) if training else None,
        )
        self.ce_tracker.update_state(ce)
        self.lb_tracker.update_state(regularization["lb_loss"])
        if self.z_tracker is not None:
            self.z_tracker.update_state(regularization["z_loss"])
        self.utilization.update_state(y_pred["expert_indices"])
        return ce + regularization["loss"]

    def get_config(self):
        return {
            **super().get_config(),
            "base": keras.saving.serialize_keras_object(self.base),
            "num_experts": self.num_experts,
            "top_k": self.top_k,
            "load_balancing_weight": self.load_balancing_weight,
            "router_z_loss_weight": self.router_z_loss_weight,
            "router_hidden_dim": self.router_hidden_dim,
            "expert_hidden_dim": self.expert_hidden_dim,
            "router_jitter_noise": self.router_jitter_noise,
            "freeze_base": self.freeze_base,
            "router_input_norm": self.router_input_norm,
            "load_balancing_mode": self.load_balancing_mode,
            "load_balancing_window": self.load_balancing_window,
            "bias_update_rate": self.bias_update_rate,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["base"] = keras.saving.deserialize_keras_object(config["base"])
        return cls(**config)


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


def require_non_negative(**values: float) -> None:
    """A named error for the first negative value."""
    for name, value in values.items():
        if value < 0:
            raise ValueError(f"`{name}` must be >= 0. Received: {name}={value}")


def build_moe_chronos(
    base: ChronosT5,
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
    **kwargs: Any,
) -> ChronosMoE:
    """Attaches a routed mixture of experts to a Chronos model.

    The result shares `base`'s encoder and decoder and starts
    function-preserving: every expert head is a copy of the base output head
    and every expert's residual block outputs zero, so its forecasts equal the
    base model's until training moves the weights. `expert_init_noise > 0`
    adds N(0, (noise · std(head))²) to each expert head to break the symmetry
    (then the start is no longer exact).

    Args:
        base: `ChronosT5`, pretrained or freshly initialised.
        num_experts, top_k, load_balancing_weight, router_hidden_dim,
        expert_hidden_dim, freeze_base, router_z_loss_weight,
        router_jitter_noise, router_input_norm, load_balancing_mode,
        load_balancing_window, bias_update_rate: see `ChronosMoE`.
        expert_init_noise: float. Relative scale of the symmetry-breaking noise.
        seed: int. Seed of that noise.

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
    if not isinstance(base, ChronosT5):
        raise TypeError(
            f"`base` must be a ChronosT5 model. Received: base of type {type(base).__name__}"
        )
    validate_routing(num_experts, top_k)
    validate_balancing(load_balancing_mode, load_balancing_window, bias_update_rate)
    require_non_negative(
        load_balancing_weight=load_balancing_weight,
        router_z_loss_weight=router_z_loss_weight,
        expert_init_noise=expert_init_noise,
    )
    model = ChronosMoE(
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
        **kwargs,
    )
    matrix = base_head_matrix(base)
    heads = np.repeat(matrix[None], num_experts, axis=0)
    if expert_init_noise > 0:
        rng = np.random.default_rng(seed)
        heads = heads + rng.normal(0.0, expert_init_noise * matrix.std(), heads.shape)
    model.experts.head.assign(heads.astype(model.experts.head.dtype))
    return model
