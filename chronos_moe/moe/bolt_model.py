"""ChronosBoltMoE: a Chronos-Bolt with a routed mixture of experts, either per
series in place of the output block (`level="series"`) or per token in place
of the feed-forward layers of its T5 blocks (`level="token"`)."""

from __future__ import annotations

from keras import ops

from chronos_moe.layers.common import invoke, register
from chronos_moe.models.chronos_bolt import ChronosBolt
from chronos_moe.moe.model import ChronosMoE
from chronos_moe.moe.quantile_experts import QuantileExpertHead
from chronos_moe.moe.token_experts import recording_routes, stack_routes


@register
class ChronosBoltMoE(ChronosMoE):
    """`ChronosMoE` on a `ChronosBolt` base. Build it with `build_moe_chronos`.

    `level="series"`: a `ContextRouter` reads the encoder states of the
    patches once per series and a `QuantileExpertHead` (copies of the output
    block, upcycled from the base's) replaces the output block; the chosen
    experts' quantiles are mixed by their gates. `level="token"`:
    `TokenExperts` in the T5 blocks, as for Chronos T5; their balance losses
    count the attended patches (and `[REG]`) and the one decoder step.

    Training minimises `quantile + load_balancing_weight · lb (+
    router_z_loss_weight · z)`, the quantile loss being the reference's
    (`ChronosBolt.forecast_loss`), and logs `quantile_loss`, `lb_loss` (and
    `z_loss`) and the `expert_i` shares. Arguments: as `ChronosMoE`;
    `expert_hidden_dim` at the series level must be the base's `d_ff` (each
    expert is a copy of the output block).

    Call arguments:
        inputs: dict with `context` `(batch, time)` (and optionally `mask`),
            as for `ChronosBolt`; `target` is read by `compute_loss`.

    Returns:
        dict: `quantiles` `(batch, len(quantiles), prediction_length)` in the
        series' units, and the router outputs (`expert_indices`, `gates`,
        `router_probs`, `router_logits`); at the token level the same four per
        stack and layer (`encoder_expert_indices` `(layers, batch, patches, k)`,
        …), as `ChronosMoE`.

    Example:

    >>> import keras, numpy as np
    >>> from chronos_moe import ChronosBolt, build_moe_chronos
    >>> base = ChronosBolt(d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4,
    ...     chronos_config={"context_length": 32, "prediction_length": 4,
    ...                     "input_patch_size": 8, "input_patch_stride": 8,
    ...                     "quantiles": [0.1, 0.5, 0.9], "use_reg_token": True})
    >>> moe = build_moe_chronos(base, num_experts=4, top_k=2)
    >>> batch = {"context": np.sin(np.arange(40.0))[None].astype("float32")}
    >>> dense = keras.ops.convert_to_numpy(base(batch))
    >>> mixed = keras.ops.convert_to_numpy(moe(batch)["quantiles"])
    >>> bool(np.abs(dense - mixed).max() < 1e-5)
    True
    """

    forecast_loss_name = "quantile_loss"

    def _series_experts(self) -> QuantileExpertHead:
        base = self.base
        if self.expert_hidden_dim != base.d_ff:
            raise ValueError(
                "Chronos-Bolt's series-level experts are copies of its output block, so "
                f"`expert_hidden_dim` must equal d_ff. Received: expert_hidden_dim="
                f"{self.expert_hidden_dim}, d_ff={base.d_ff}"
            )
        block = base.output_patch_embedding
        return QuantileExpertHead(
            self.num_experts,
            block.intermediate_dim,
            block.output_dim,
            activation=block.activation,
            dropout_rate=block.dropout_rate,
            dtype=base.dtype_policy,
            name="experts",
        )

    def upcycle(self, noise: float = 0.0, seed: int | None = None) -> None:
        """Series level: every expert becomes a copy of the base's output block
        (`QuantileExpertHead.upcycle`)."""
        self.experts.upcycle(self.base.output_patch_embedding, noise, seed)

    @property
    def quantiles(self) -> tuple[float, ...]:
        return self.base.quantiles

    def encode(self, context, mask=None, training=False):
        """The base's encoder pass (`ChronosBolt.encode`)."""
        return self.base.encode(context, mask, training)

    def token_masks(self, inputs, encoder_length=None, decoder_length=None):
        """The tokens the balance statistics count: the attended patches (and
        `[REG]`), and the decoder's one step."""
        encoder_mask = self.base.context_mask(inputs["context"], inputs.get("mask"))
        return encoder_mask, ops.ones((ops.shape(encoder_mask)[0], 1), "bool")

    def loss_masks(self, x, y):
        return self.token_masks(x)

    def route_tokens(self, context, mask=None):
        """Token level: the routing of every patch of the context (and of the
        decoder step) through every expert layer, stacked over layers:
        `encoder_<key>` `(layers, batch, patches (+ 1), k or N)`, `decoder_<key>`."""
        with recording_routes() as records:
            states, attention_mask, _, _ = self.base.encode(context, mask)
            self.base.decoder_state(states, attention_mask)
        return stack_routes(records, len(self.encoder_token_layers))

    def forecast_loss(self, x, y, y_pred):
        return self.base.forecast_loss(x, y, y_pred["quantiles"])

    def call(self, inputs, training=False):
        base = self.base
        if self.level == "token":
            with recording_routes() as records:
                states, mask, loc, scale = base.encode(
                    inputs["context"], inputs.get("mask"), training
                )
                hidden = base.decoder_state(states, mask, training)
            routing = stack_routes(records, len(self.encoder_token_layers))
            if training:
                decoder_mask = ops.ones((ops.shape(mask)[0], 1), "bool")
                self.update_token_balance(records, (mask, decoder_mask))
            outputs = invoke(base.output_patch_embedding, hidden, training=training)
            return {"quantiles": base.quantile_forecast(outputs, loc, scale), **routing}
        states, mask, loc, scale = base.encode(inputs["context"], inputs.get("mask"), training)
        routing = self.router(states, mask, training=training)
        hidden = base.decoder_state(states, mask, training)
        outputs = self.experts(
            hidden, routing["expert_indices"], routing["gates"], training=training
        )
        return {"quantiles": base.quantile_forecast(outputs, loc, scale), **routing}


def moe_class(base) -> type[ChronosMoE]:
    """The `ChronosMoE` class of a base model: `ChronosBoltMoE` for a `ChronosBolt`."""
    return ChronosBoltMoE if isinstance(base, ChronosBolt) else ChronosMoE
