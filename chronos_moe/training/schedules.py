"""Learning-rate schedules of the reference trainer (transformers' `linear`,
`cosine` and `constant`, each with linear warm-up), as Keras schedules."""

from __future__ import annotations

import math

import keras
from keras import ops

from chronos_moe.layers.common import register


@register
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up over `warmup_steps`, then `linear` decay to 0 at
    `total_steps`, `cosine` decay to 0, or `constant`.

    The value at optimizer step `s` (0-based) is transformers'
    `get_*_schedule_with_warmup` multiplier at `s` times `learning_rate`.

    Example:

    >>> schedule = WarmupSchedule(1e-3, total_steps=100, warmup_steps=10)
    >>> [round(float(schedule(s)), 6) for s in (0, 5, 10, 55, 100)]
    [0.0, 0.0005, 0.001, 0.0005, 0.0]
    """

    def __init__(
        self,
        learning_rate: float,
        total_steps: int,
        warmup_steps: int = 0,
        kind: str = "linear",
    ):
        if kind not in ("linear", "cosine", "constant"):
            raise ValueError(
                f"`kind` must be 'linear', 'cosine' or 'constant'. Received: kind={kind!r}"
            )
        self.learning_rate = learning_rate
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.kind = kind

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup = float(max(self.warmup_steps, 1))
        warming = step / warmup
        progress = ops.clip(
            (step - self.warmup_steps) / float(max(self.total_steps - self.warmup_steps, 1)),
            0.0,
            1.0,
        )
        if self.kind == "linear":
            after = 1.0 - progress
        elif self.kind == "cosine":
            after = 0.5 * (1.0 + ops.cos(math.pi * progress))
        else:
            after = ops.ones_like(progress)
        factor = ops.where(step < self.warmup_steps, warming, after)
        return self.learning_rate * factor

    def get_config(self):
        return {
            "learning_rate": self.learning_rate,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "kind": self.kind,
        }
