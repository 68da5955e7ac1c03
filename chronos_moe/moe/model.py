"""ChronosMoE: a Chronos T5 with a routed mixture of experts, either per series
in place of the output head (`level="series"`) or per token in place of the
feed-forward layers of the T5 blocks (`level="token"`)."""

from __future__ import annotations

import keras
from keras import ops

from chronos_moe.distribution import check_expert_sharding, check_num_experts
from chronos_moe.layers.common import register
from chronos_moe.models.chronos_t5 import format_count
from chronos_moe.models.labels import masked_cross_entropy, shift_right
from chronos_moe.models.t5_stacks import T5Stacks
from chronos_moe.moe.arguments import validate_moe_arguments
from chronos_moe.moe.balancing import LoadBalancingRegularizer
from chronos_moe.moe.experts import MoEExpertHead
from chronos_moe.moe.router import ContextRouter
from chronos_moe.moe.token_experts import recording_routes, stack_routes
from chronos_moe.moe.upcycling import (
    base_output_scale,
    expert_heads,
    freeze_all_but_experts,
    token_expert_layers,
    with_token_experts,
)
from chronos_moe.moe.utilization import ExpertUtilization


@register
class ChronosMoE(keras.Model):
    """Chronos T5 with a routed mixture of experts. Build it with
    `build_moe_chronos`.

    `level="series"`: a `ContextRouter` and a `MoEExpertHead` in place of the
    output head, one route per series. `level="token"`: `TokenExperts` in
    place of the feed-forward layer of every `moe_every`-th encoder and decoder
    block (blocks 0, `moe_every`, …), one route per token, with an optional
    shared expert; a dense `base` is upcycled into a copy holding them
    (`TokenExperts.upcycle`), and `lb_loss`, `z_loss` and the `expert_i`
    shares are the means over those layers, padded tokens excluded.

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
        level: str. `"series"` or `"token"`. Defaults to `"series"`.
        moe_every: int. Token level: experts in every `moe_every`-th block.
        shared_expert: bool. Token level: keep the dense feed-forward as an
            always-on shared expert.

    Call arguments:
        inputs: dict with `input_ids`, `attention_mask` and
            `decoder_input_ids` or `labels`, as for `ChronosT5`.

    Returns:
        dict: `logits` `(batch, dec_len, vocab)` and the router outputs
        (`expert_indices`, `gates`, `router_probs`, `router_logits`); at the
        token level the same four per stack and layer, named
        `encoder_expert_indices` `(layers, batch, enc_len, k)`, …,
        `decoder_router_logits` `(layers, batch, dec_len, N)`.

    Example:

    >>> from chronos_moe import ChronosT5
    >>> base = ChronosT5.from_preset("tiny", vocab_size=64, num_layers=1)
    >>> moe = ChronosMoE(base, num_experts=4, top_k=2, level="token")
    >>> len(moe.token_layers), len(moe.encoder_token_layers)
    (2, 1)
    """

    # The name under which `compute_loss` logs the forecasting loss.
    forecast_loss_name = "ce_loss"

    def __init__(
        self,
        base: T5Stacks,
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
        level: str = "series",
        moe_every: int = 1,
        shared_expert: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        validate_moe_arguments(
            base,
            num_experts=num_experts,
            top_k=top_k,
            load_balancing_mode=load_balancing_mode,
            load_balancing_window=load_balancing_window,
            bias_update_rate=bias_update_rate,
            level=level,
            moe_every=moe_every,
            load_balancing_weight=load_balancing_weight,
            router_z_loss_weight=router_z_loss_weight,
            router_jitter_noise=router_jitter_noise,
        )
        check_num_experts(num_experts)  # under a distribution: before any expert weight exists
        self.level = level
        self.moe_every = int(moe_every)
        self.shared_expert = bool(shared_expert)
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
        base = self.base = self._with_token_experts(base) if level == "token" else base
        self._add_losses()
        self.token_layers = token_expert_layers(base)
        self.router = self.experts = None
        if level == "series":
            self.router, self.experts = self._router(), self._series_experts()
        if freeze_base and level == "token":
            freeze_all_but_experts(base)
        elif freeze_base:
            base.trainable = False
        self.build()
        check_expert_sharding(self)  # under a distribution: expert weights split, all placed

    def _with_token_experts(self, base: T5Stacks) -> T5Stacks:
        """`base` with its feed-forward layers replaced by token-level experts
        from the stored settings (sparse upcycling: `moe/token_experts.py`);
        a base that already has them (a loaded MoE) as it is."""
        if token_expert_layers(base):
            return base
        return with_token_experts(
            base,
            self.num_experts,
            self.top_k,
            expert_hidden_dim=self.expert_hidden_dim,
            shared_expert=self.shared_expert,
            moe_every=self.moe_every,
            balance_mode=self.load_balancing_mode,
            balance_window=self.load_balancing_window,
            bias_update_rate=self.bias_update_rate,
        )

    def _add_losses(self) -> None:
        """The balance regularizer and the loss trackers, from the stored settings."""
        # In the "bias" mode the balance loss is logged, not trained on.
        mode = self.load_balancing_mode
        loss_weight = self.load_balancing_weight if "loss" in mode else 0.0
        self.regularizer = LoadBalancingRegularizer(
            self.num_experts, loss_weight, self.router_z_loss_weight, name="regularizer"
        )
        # The forecasting loss's tracker (`ce_loss`; `quantile_loss` for Chronos-Bolt).
        self.ce_tracker = keras.metrics.Mean(name=self.forecast_loss_name)
        self.lb_tracker = keras.metrics.Mean(name="lb_loss")
        z_weight = self.router_z_loss_weight
        self.z_tracker = keras.metrics.Mean(name="z_loss") if z_weight > 0 else None
        self.utilization = ExpertUtilization(self.num_experts)

    def _router(self) -> ContextRouter:
        """Series level: the router, from the stored settings."""
        return ContextRouter(
            self.num_experts,
            self.top_k,
            self.router_hidden_dim,
            self.router_jitter_noise,
            input_norm=self.router_input_norm,
            balance_mode=self.load_balancing_mode,
            balance_window=self.load_balancing_window,
            bias_update_rate=self.bias_update_rate,
            name="router",
        )

    def _series_experts(self) -> MoEExpertHead:
        """Series level: the expert heads, from the stored settings."""
        return MoEExpertHead(
            self.num_experts,
            self.base.vocab_size,
            self.expert_hidden_dim,
            output_scale=base_output_scale(self.base),
            dtype=self.base.dtype_policy,
            name="experts",
        )

    def upcycle(self, noise: float = 0.0, seed: int | None = None) -> None:
        """Series level: every expert head becomes a copy of the base's output
        head (`expert_heads`), with N(0, (noise · std(head))²) added when `noise > 0`."""
        heads = expert_heads(self.base, self.num_experts, noise, seed)
        self.experts.head.assign(heads.astype(self.experts.head.dtype))

    def build(self, input_shape=None):
        if self.built:
            return
        # The token level has no weights of its own (its experts sit in `base`).
        if self.router is not None:
            hidden = (None, None, self.base.d_model)
            self.router.build(hidden)
            self.experts.build(hidden)
        self.built = True

    def __repr__(self) -> str:
        if self.level == "token":
            moe = sum(layer.count_params() for layer in self.token_layers)
            where = f"{len(self.token_layers)} feed-forward layers"
        else:
            moe = self.router.count_params() + self.experts.count_params()
            where = "the router and experts"
        return (
            f"<ChronosMoE {self.name!r}: {'token level, ' if self.level == 'token' else ''}"
            f"{self.num_experts} experts, "
            f"top-{self.top_k} routing ({format_count(moe)} parameters in {where}) on a "
            f"{type(self.base).__name__} {self.base.describe()}>"
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
        map hidden states → mixed logits, called at every decoding step. (Token
        level: the base head; each decoding step routes its own tokens.)"""
        if self.level == "token":
            return self.base.compute_logits
        routing = self.router(encoder_states, attention_mask)
        gathered = self.experts.gather(routing["expert_indices"], routing["gates"])
        return lambda hidden: self.experts.apply(hidden, gathered)

    def route(self, encoder_states, attention_mask, training=False):
        """The router's outputs for these encoder states (see `ContextRouter`)."""
        return self.router(encoder_states, attention_mask, training=training)

    def route_tokens(self, input_ids, attention_mask, decoder_input_ids=None):
        """Token level: the routing of every token of the context (and of
        `decoder_input_ids`, when given) through every expert layer.

        Returns:
            dict: `encoder_<key>` (and `decoder_<key>`) for `key` in
            `expert_indices`, `gates`, `router_probs`, `router_logits`,
            stacked over layers: `(layers, batch, len, k or N)`.
        """
        with recording_routes() as records:
            states = self.base.encode(input_ids, attention_mask)
            if decoder_input_ids is not None:
                self.base.decode(decoder_input_ids, states, attention_mask)
        return stack_routes(records, len(self.encoder_token_layers))

    @property
    def encoder_token_layers(self) -> list:
        """The `TokenExperts` of the encoder blocks (token level)."""
        return [
            b.feed_forward for b in self.base.encoder_blocks if b.feed_forward in self.token_layers
        ]

    def token_masks(self, inputs, encoder_length, decoder_length):
        """The tokens the balance statistics count: the attended context
        positions, and the decoder positions whose label is not ignored."""
        if inputs.get("labels") is not None:
            return self.loss_masks(inputs, None)
        decoder_mask = ops.ones((ops.shape(inputs["attention_mask"])[0], decoder_length), "bool")
        return ops.cast(inputs["attention_mask"], "bool"), decoder_mask

    def call(self, inputs, training=False):
        decoder_input_ids = inputs.get("decoder_input_ids")
        if decoder_input_ids is None:
            decoder_input_ids = shift_right(
                inputs["labels"], self.base.decoder_start_token_id, self.base.pad_token_id
            )
        mask = inputs["attention_mask"]
        if self.level == "token":
            with recording_routes() as records:
                encoder_states = self.base.encode(inputs["input_ids"], mask, training)
                hidden = self.base.decode(decoder_input_ids, encoder_states, mask, training)
            routing = stack_routes(records, len(self.encoder_token_layers))
            if training:
                masks = self.token_masks(
                    inputs, ops.shape(inputs["input_ids"])[1], ops.shape(decoder_input_ids)[1]
                )
                self.update_token_balance(records, masks)
            return {"logits": self.base.compute_logits(hidden), **routing}
        encoder_states = self.base.encode(inputs["input_ids"], mask, training)
        routing = self.router(encoder_states, mask, training=training)
        hidden = self.base.decode(decoder_input_ids, encoder_states, mask, training)
        logits = self.experts(hidden, routing["expert_indices"], routing["gates"])
        return {"logits": logits, **routing}

    def update_token_balance(self, records, masks) -> None:
        """Training, token level: moves each expert layer's balance state by
        this step's routes (`records` of `recording_routes`), counting the
        tokens of `masks` (the encoder's and the decoder's)."""
        encoder_count = len(self.encoder_token_layers)
        for index, record in enumerate(records):
            mask = masks[0] if index < encoder_count else masks[1]
            record["layer"].update_balance(record["expert_indices"], mask)

    def forecast_loss(self, x, y, y_pred):
        """The forecasting loss: the token cross-entropy against `x["labels"]` (or `y`)."""
        labels = y if y is not None else x["labels"]
        return masked_cross_entropy(labels, y_pred["logits"])

    def loss_masks(self, x, y):
        """Token level: the tokens the balance losses count: the attended
        context positions, and the decoder positions whose label is not ignored."""
        labels = y if y is not None else x["labels"]
        return ops.cast(x["attention_mask"], "bool"), ops.convert_to_tensor(labels, "int32") != -100

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """`forecast + weight · lb (+ z weight · z)`, the forecasting loss being
        `forecast_loss`; updates the `ce_loss` (`forecast_loss_name`), `lb_loss`,
        `z_loss` and utilisation trackers."""
        forecast = self.forecast_loss(x, y, y_pred)
        self.ce_tracker.update_state(forecast)
        if self.level == "token":
            return forecast + self.token_regularization(self.loss_masks(x, y), y_pred, training)
        # Training: the shares averaged over the router's window (this step
        # included, `call` has just updated them); evaluation: this batch's.
        regularization = self.regularizer(
            y_pred["router_probs"],
            y_pred["expert_indices"],
            y_pred["router_logits"],
            ops.convert_to_tensor(self.router.expert_load) if training else None,
        )
        self.lb_tracker.update_state(regularization["lb_loss"])
        if self.z_tracker is not None:
            self.z_tracker.update_state(regularization["z_loss"])
        self.utilization.update_state(y_pred["expert_indices"])
        return forecast + regularization["loss"]

    def token_regularization(self, masks, y_pred, training):
        """Token level: the balance and z-losses of every expert layer (tokens
        outside `masks`, the encoder's and the decoder's, excluded), averaged
        over the layers; updates the trackers."""
        encoder_mask, decoder_mask = masks
        encoder_layers = self.encoder_token_layers
        totals = {"lb_loss": 0.0, "z_loss": 0.0, "loss": 0.0}
        for stack, mask in (("encoder", encoder_mask), ("decoder", decoder_mask)):
            layers = (
                encoder_layers if stack == "encoder" else self.token_layers[len(encoder_layers) :]
            )
            flat_mask = ops.reshape(mask, (-1,))
            for index, layer in enumerate(layers):

                def flat(key, index=index, stack=stack):
                    value = y_pred[f"{stack}_{key}"][index]
                    return ops.reshape(value, (-1, ops.shape(value)[-1]))

                regularization = self.regularizer(
                    flat("router_probs"),
                    flat("expert_indices"),
                    flat("router_logits"),
                    ops.convert_to_tensor(layer.expert_load) if training else None,
                    padding_mask=flat_mask,
                )
                for key in totals:
                    totals[key] = totals[key] + regularization[key]
                self.utilization.update_state(flat("expert_indices"), flat_mask)
        count = float(len(self.token_layers))
        self.lb_tracker.update_state(totals["lb_loss"] / count)
        if self.z_tracker is not None:
            self.z_tracker.update_state(totals["z_loss"] / count)
        return totals["loss"] / count

    def get_config(self):
        return {
            **super().get_config(),
            "level": self.level,
            "moe_every": self.moe_every,
            "shared_expert": self.shared_expert,
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


# `build_moe_chronos` lives beside the classes it picks from (kept importable from here).
from chronos_moe.moe.build import build_moe_chronos  # noqa: E402, F401
