"""The dtype a pipeline forecasts in: the model's own, or a copy of it in
`float32` or `bfloat16` that takes the model's current weights at every call.

`ChronosPipeline` and `ChronosBoltPipeline` both forecast through a
`ForecastingModel`."""

from __future__ import annotations

import keras
from keras import ops

from chronos_moe.moe.model import ChronosMoE

COMPUTE_DTYPES = (None, "float32", "bfloat16")


class ForecastingModel:
    """The model a pipeline forecasts with.

    With `compute_dtype=None`, or one equal to the model's dtype policy, it is
    the model itself; otherwise a copy of the model's architecture whose
    variables and computations are in `compute_dtype`, built on first use, into
    which `__call__` copies the model's current weights (a model that trains
    between forecasts is forecast with its newest weights).

    Args:
        model: a `ChronosT5`, `ChronosBolt`, or an MoE model built from one.
        compute_dtype: `None`, `"float32"` or `"bfloat16"`.

    Example:

    >>> from chronos_moe import ChronosT5
    >>> model = ChronosT5.from_preset("tiny", vocab_size=64, num_layers=1,
    ...     chronos_config={"n_tokens": 64, "context_length": 32, "prediction_length": 4})
    >>> ForecastingModel(model, None)() is model
    True
    >>> ForecastingModel(model, "bfloat16")().compute_dtype
    'bfloat16'
    """

    def __init__(self, model: keras.Model, compute_dtype: str | None):
        if compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(
                f"`compute_dtype` must be one of {COMPUTE_DTYPES}. "
                f"Received: compute_dtype={compute_dtype!r}"
            )
        self.model = model
        self.compute_dtype = compute_dtype
        self._copy: keras.Model | None = None

    def __call__(self) -> keras.Model:
        dtype, policy = self.compute_dtype, self.model.dtype_policy
        if dtype is None or (policy.compute_dtype == dtype and policy.variable_dtype == dtype):
            return self.model
        if self._copy is None:
            self._copy = model_in_dtype(self.model, dtype)
        for target, source in zip(self._copy.weights, self.model.weights, strict=True):
            target.assign(ops.cast(source, target.dtype))
        return self._copy


def model_in_dtype(model: keras.Model, dtype: str) -> keras.Model:
    """A copy of `model`'s architecture whose variables and computations are in
    `dtype` (its weights are not copied)."""
    config = model.get_config()
    config["dtype"] = dtype
    if isinstance(model, ChronosMoE):
        base = dict(config["base"])
        base["config"] = {**base["config"], "dtype": dtype}
        layers = base["config"].get("feed_forward_layers") or {}
        base["config"]["feed_forward_layers"] = {
            name: {**layer, "config": {**layer["config"], "dtype": dtype}}
            for name, layer in layers.items()
        } or None
        config["base"] = base
    return type(model).from_config(config)
