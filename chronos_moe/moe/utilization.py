"""The per-expert utilisation metric `ChronosMoE` logs (`expert_0`, …)."""

from __future__ import annotations

import keras
from keras import ops

from chronos_moe import backend
from chronos_moe.layers.common import register


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

    def update_state(self, expert_indices, mask=None):
        """Counts the slots of `expert_indices` `(..., k)`; `mask` `(...)`,
        optional: the rows to count (padded tokens are not)."""
        top_k = ops.shape(expert_indices)[-1]
        indices = ops.reshape(expert_indices, (-1, top_k))
        slots = ops.sum(ops.one_hot(indices, self.num_experts, dtype="float32"), axis=1)
        if mask is not None:
            slots = slots * ops.cast(ops.reshape(mask, (-1,)), "float32")[:, None]
        # The global batch's counts in a torch data-parallel step (else this batch's).
        self.counts.assign(self.counts + backend.global_sum(ops.sum(slots, axis=0)))

    def result(self):
        shares = self.counts / ops.maximum(ops.sum(self.counts), 1.0)
        return {f"expert_{i}": shares[i] for i in range(self.num_experts)}

    def reset_state(self):
        self.counts.assign(ops.zeros((self.num_experts,)))

    def get_config(self):
        return {**super().get_config(), "num_experts": self.num_experts}
