"""QuantileExpertHead: Chronos-Bolt's output block as `num_experts` routed
experts, mixed at the quantile level. Each series runs only its k chosen experts."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from chronos_moe import backend
from chronos_moe.layers.common import invoke, normal_initializer, register
from chronos_moe.layers.dropout import FastDropout
from chronos_moe.layers.residual_block import ACTIVATIONS, ResidualBlock, checked_activation


@register
class QuantileExpertHead(keras.layers.Layer):
    """`num_experts` copies of Chronos-Bolt's output `ResidualBlock`, each
    mapping the decoder state to every quantile of every step; a series'
    forecast is the gate-weighted sum of its chosen experts' quantiles.

    Expert `e` computes `dropout(act(h W_hidden[e] + b_hidden[e]) W_out[e] +
    b_out[e]) + h W_res[e] + b_res[e]`, the reference's `ResidualBlock`. The
    chosen experts' weights are gathered per series, so compute grows with
    `top_k`, never with `num_experts`. `upcycle` copies a dense output block
    into every expert: with gates summing to 1, the mixture then forecasts
    exactly as the dense model. Mixing quantiles (rather than hidden states
    before a shared projection) keeps each expert a whole forecaster, and a
    convex mixture of non-decreasing quantile curves is non-decreasing.

    Args:
        num_experts: int. Number of experts.
        intermediate_dim: int. Hidden size of each expert (`d_ff`).
        output_dim: int. `len(quantiles) · prediction_length`.
        activation: str. The hidden activation (see `ResidualBlock`).
            Defaults to `"relu"`.
        dropout_rate: float. Dropout on the output layer's result, as the
            dense block. Defaults to `0.0`.

    Call arguments:
        hidden_states: `(batch, len, d_model)` decoder states.
        expert_indices: int `(batch, top_k)`.
        gates: `(batch, top_k)`, summing to 1 per series.
        training: bool. Dropout is active when `True`.

    Returns:
        `(batch, len, output_dim)`, in the dense block's units.

    Example:

    >>> import numpy as np
    >>> head = QuantileExpertHead(num_experts=4, intermediate_dim=8, output_dim=6)
    >>> outputs = head(np.ones((2, 1, 16), "float32"), np.array([[0, 2], [3, 1]]),
    ...                np.full((2, 2), 0.5, "float32"))
    >>> tuple(outputs.shape)
    (2, 1, 6)
    """

    def __init__(
        self,
        num_experts: int,
        intermediate_dim: int,
        output_dim: int,
        activation: str = "relu",
        dropout_rate: float = 0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_experts = num_experts
        self.intermediate_dim = intermediate_dim
        self.output_dim = output_dim
        self.activation = checked_activation(activation)
        self.dropout_rate = dropout_rate
        self.dropout = FastDropout(dropout_rate, dtype=self.dtype_policy)

    def build(self, hidden_states_shape, expert_indices_shape=None, gates_shape=None):
        d_model = hidden_states_shape[-1]
        experts = self.num_experts

        def weight(name, shape, stddev):
            # Overwritten by `upcycle`; the dense block's initialisation otherwise.
            initializer = "zeros" if stddev is None else normal_initializer(stddev)
            return self.add_weight(name=name, shape=(experts, *shape), initializer=initializer)

        self.hidden_kernel = weight(
            "hidden_kernel", (d_model, self.intermediate_dim), d_model**-0.5
        )
        self.hidden_bias = weight("hidden_bias", (self.intermediate_dim,), None)
        stddev = self.intermediate_dim**-0.5
        self.output_kernel = weight(
            "output_kernel", (self.intermediate_dim, self.output_dim), stddev
        )
        self.output_bias = weight("output_bias", (self.output_dim,), None)
        self.residual_kernel = weight("residual_kernel", (d_model, self.output_dim), d_model**-0.5)
        self.residual_bias = weight("residual_bias", (self.output_dim,), None)

    @property
    def expert_weights(self) -> tuple:
        """The stacked weights, in the order `gather` returns them."""
        return (
            self.hidden_kernel,
            self.hidden_bias,
            self.output_kernel,
            self.output_bias,
            self.residual_kernel,
            self.residual_bias,
        )

    def upcycle(self, block: ResidualBlock, noise: float = 0.0, seed: int | None = None) -> None:
        """Copies the dense output `block` into every expert; `noise > 0` adds
        N(0, (noise · std(weight))²) to each copy of each weight (breaking the
        symmetry, and the exact start)."""
        rng = np.random.default_rng(seed)
        dense = [
            block.hidden_layer.kernel,
            block.hidden_layer.bias,
            block.output_layer.kernel,
            block.output_layer.bias,
            block.residual_layer.kernel,
            block.residual_layer.bias,
        ]
        for variable, source in zip(self.expert_weights, dense, strict=True):
            value = np.asarray(keras.ops.convert_to_numpy(source), np.float64)
            copies = np.repeat(value[None], self.num_experts, axis=0)
            if noise > 0:
                copies = copies + rng.normal(0.0, noise * value.std(), copies.shape)
            variable.assign(copies.astype(variable.dtype))

    def call(self, hidden_states, expert_indices, gates, training=False):
        return self.apply(hidden_states, self.gather(expert_indices, gates), training)

    def gather(self, expert_indices, gates):
        """The chosen experts' weights of each series, in the compute dtype,
        each `(batch, k, ...)`, and the gates `(batch, k)`."""
        dtype = self.compute_dtype
        taken = tuple(
            ops.cast(ops.take(w, expert_indices, axis=0), dtype) for w in self.expert_weights
        )
        return (*taken, ops.cast(gates, dtype))

    def apply(self, hidden_states, gathered, training=False):
        """`(batch, len, output_dim)`: `hidden_states` through the experts gathered by `gather`."""
        w_hidden, b_hidden, w_out, b_out, w_res, b_res, gates = gathered
        hidden = ops.cast(hidden_states, self.compute_dtype)
        top_k = ops.shape(gates)[1]
        hidden = ops.broadcast_to(hidden[:, None], (hidden.shape[0], top_k, *hidden.shape[1:]))
        # (batch, k, len, ·) products through `backend.matmul`, as `MoEExpertHead`.
        inner = ACTIVATIONS[self.activation](
            backend.matmul(hidden, w_hidden) + b_hidden[:, :, None]
        )  # (batch, k, len, intermediate)
        outputs = backend.matmul(inner, w_out) + b_out[:, :, None]  # (batch, k, len, output)
        outputs = invoke(self.dropout, outputs, training=training)
        outputs = outputs + backend.matmul(hidden, w_res) + b_res[:, :, None]
        return ops.einsum("bk,bklo->blo", gates, outputs)  # (batch, len, output)

    def compute_output_spec(self, hidden_states, expert_indices, gates, training=False):
        return keras.KerasTensor((*hidden_states.shape[:2], self.output_dim), self.compute_dtype)

    def get_config(self):
        return {
            **super().get_config(),
            "num_experts": self.num_experts,
            "intermediate_dim": self.intermediate_dim,
            "output_dim": self.output_dim,
            "activation": self.activation,
            "dropout_rate": self.dropout_rate,
        }
