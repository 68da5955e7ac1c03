"""MoEExpertHead: per-series experts over the decoder output, mixed at the
logit level. Each series runs only its k chosen experts."""

from __future__ import annotations

import keras
from keras import ops

from chronos_moe import backend
from chronos_moe.layers.common import normal_initializer, register


@register
class MoEExpertHead(keras.layers.Layer):
    """`num_experts` experts, each a residual feed-forward block plus its own
    prediction head over the token vocabulary.

    Expert `e` maps decoder hidden states `h` to logits
    `s · (h + relu(h W_up[e]) W_down[e]) W_head[e]`; a series' logits are the
    gate-weighted sum over its chosen experts. The chosen experts' weights are
    gathered per series, so compute and memory grow with `top_k`, never with
    `num_experts`; an expert no series chose receives no gradient.

    `W_down` starts at zero (each residual block starts as the identity); the
    heads are set by `build_moe_chronos` to the base model's output matrix, so
    a fresh MoE model forecasts exactly like its base. The output scale `s` is
    the base model's (`d_model ** -0.5` for a tied embedding head, else 1), so
    each expert head has the base head's parametrisation and an optimizer step
    moves it as much as it would move the base head.

    Args:
        num_experts: int. Number of experts.
        vocab_size: int. Token vocabulary (logits per position).
        intermediate_dim: int. Hidden width of each expert's feed-forward block.
        output_scale: float. Multiplies the expert outputs before the heads.
            Defaults to `1.0`.

    Call arguments:
        hidden_states: `(rows, len, d_model)` decoder outputs. `rows` is a
            multiple of the routed batch: consecutive groups of
            `rows // batch` rows (the samples of one series) share its experts.
        expert_indices: int `(batch, top_k)`.
        gates: `(batch, top_k)`, summing to 1 per series.

    Returns:
        Logits `(rows, len, vocab_size)`.

    Example:

    >>> import numpy as np
    >>> head = MoEExpertHead(num_experts=4, vocab_size=10, intermediate_dim=8)
    >>> logits = head(np.ones((6, 3, 16), "float32"), np.array([[0, 2], [3, 1]]),
    ...               np.full((2, 2), 0.5, "float32"))
    >>> tuple(logits.shape)
    (6, 3, 10)
    """

    def __init__(
        self,
        num_experts: int,
        vocab_size: int,
        intermediate_dim: int,
        output_scale: float = 1.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_experts = num_experts
        self.vocab_size = vocab_size
        self.intermediate_dim = intermediate_dim
        self.output_scale = float(output_scale)

    def build(self, hidden_states_shape, expert_indices_shape=None, gates_shape=None):
        d_model = hidden_states_shape[-1]
        self.up = self.add_weight(
            name="up",
            shape=(self.num_experts, d_model, self.intermediate_dim),
            initializer=normal_initializer(d_model**-0.5),  # as T5's wi
        )
        self.down = self.add_weight(
            name="down",
            shape=(self.num_experts, self.intermediate_dim, d_model),
            initializer="zeros",
        )
        self.head = self.add_weight(
            name="head",
            shape=(self.num_experts, d_model, self.vocab_size),
            initializer=normal_initializer(d_model**-0.5),  # overwritten by build_moe_chronos
        )

    @property
    def expert_weights(self) -> tuple:
        """The stacked weights of the experts: `up`, `down`, `head`."""
        return self.up, self.down, self.head

    def call(self, hidden_states, expert_indices, gates):
        return self.apply(hidden_states, self.gather(expert_indices, gates))

    def gather(self, expert_indices, gates):
        """The chosen experts' weights of each series, in the compute dtype:
        `(up, down, head, gates)`, shapes `(batch, k, d_model, inner)`,
        `(batch, k, inner, d_model)`, `(batch, k, d_model, vocab)`,
        `(batch, k)`. Decoding gathers them once per forecast and reuses them
        at every step (`ChronosMoE.logits_function`); the heads alone are
        `batch · k · d_model · vocab` numbers."""
        dtype = self.compute_dtype

        def take(weights):
            return ops.cast(ops.take(weights, expert_indices, axis=0), dtype)

        return take(self.up), take(self.down), take(self.head), ops.cast(gates, dtype)

    def apply(self, hidden_states, gathered):
        """Logits `(rows, len, vocab_size)` of `hidden_states` through the
        experts gathered by `gather`."""
        up, down, head, gates = gathered
        rows, length, d_model = ops.shape(hidden_states)
        batch = ops.shape(gates)[0]
        hidden = ops.reshape(
            ops.cast(hidden_states, self.compute_dtype), (batch, (rows // batch) * length, d_model)
        )
        # Batched products over (batch, k) through `backend.matmul` (float32
        # accumulation of bfloat16 products on JAX).
        top_k = ops.shape(gates)[1]
        hidden = ops.broadcast_to(hidden[:, None], (batch, top_k, *ops.shape(hidden)[1:]))
        inner = ops.relu(backend.matmul(hidden, up))  # (batch, k, t, inner)
        expert_hidden = hidden + backend.matmul(inner, down)  # (batch, k, t, d_model)
        if self.output_scale != 1.0:
            expert_hidden = expert_hidden * ops.cast(self.output_scale, expert_hidden.dtype)
        logits = backend.matmul(expert_hidden, head)  # (batch, k, t, vocab)
        mixed = ops.einsum("bk,bktv->btv", gates, logits)
        return ops.reshape(mixed, (rows, length, self.vocab_size))

    def compute_output_spec(self, hidden_states, expert_indices, gates):
        return keras.KerasTensor(
            (*hidden_states.shape[:2], self.vocab_size), dtype=self.compute_dtype
        )

    def get_config(self):
        return {
            **super().get_config(),
            "num_experts": self.num_experts,
            "vocab_size": self.vocab_size,
            "intermediate_dim": self.intermediate_dim,
            "output_scale": self.output_scale,
        }
