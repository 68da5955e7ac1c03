"""ChronosBoltPipeline: quantile forecasts from a Chronos-Bolt model, with the
reference `chronos.ChronosBoltPipeline` API."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from keras import ops

from chronos_moe import checkpoints
from chronos_moe.config import DEFAULT_QUANTILE_LEVELS, ChronosBoltConfig
from chronos_moe.errors import CheckpointError
from chronos_moe.layers.common import direct_layer_calls, invoke
from chronos_moe.models.chronos_bolt import ChronosBolt
from chronos_moe.moe.bolt_model import ChronosBoltMoE
from chronos_moe.moe.token_experts import series_routes
from chronos_moe.pipeline_base import BasePipeline
from chronos_moe.pipeline_inputs import checked_context, checked_quantile_levels, checked_seed
from chronos_moe.shapes import batch_chunks, padded_length, padded_rows
from chronos_moe.validation import positive_int

logger = logging.getLogger("chronos_moe.pipeline")


class ChronosBoltPipeline(BasePipeline):
    """Forecasts with a Chronos-Bolt model: quantiles and embeddings.

    Same methods, defaults and output shapes as the reference
    `chronos.ChronosBoltPipeline`; inputs may be numpy arrays, lists, or tensors
    of the active backend, outputs are numpy arrays. A forecast is one encoder
    pass and one decoder step per chunk of `prediction_length` steps; the model
    runs as one compiled function per input shape (JAX) or eagerly without
    autograd (torch).

    Args:
        model: `ChronosBolt` or `ChronosBoltMoE`. Its `chronos_config` sets
            the context and prediction lengths and the quantile levels.
        compute_dtype: `None` (the model's own dtype policy), `"float32"` or
            `"bfloat16"`: forecasts and embeddings with a copy of the model in
            that dtype (weights and activations; the series' standardisation
            and the forecasts in the series' units stay float32), as
            `ChronosPipeline` does. The copy takes the model's current weights
            at every call. bfloat16 forecasts are not bitwise the float32 ones
            (`docs/bolt.md` gives the measured differences).

    Example:

    >>> import numpy as np
    >>> model = ChronosBolt(d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4,
    ...     chronos_config={"context_length": 64, "prediction_length": 4,
    ...                     "input_patch_size": 8, "input_patch_stride": 8,
    ...                     "quantiles": [0.1, 0.5, 0.9]})
    >>> pipeline = ChronosBoltPipeline(model)
    >>> pipeline.predict(np.sin(np.arange(40.0))).shape
    (1, 3, 4)
    >>> quantiles, mean = pipeline.predict_quantiles(np.arange(20.0), quantile_levels=[0.25])
    >>> quantiles.shape, mean.shape
    ((1, 4, 1), (1, 4))
    """

    def __init__(self, model: ChronosBolt | ChronosBoltMoE, compute_dtype: str | None = None):
        if not isinstance(model, (ChronosBolt, ChronosBoltMoE)):
            raise TypeError(
                "`model` must be a ChronosBolt or ChronosBoltMoE model. "
                f"Received: {type(model).__name__}"
            )
        super().__init__(model, compute_dtype)
        self.config: ChronosBoltConfig = model.chronos_config

    # ---- loading and saving ------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls, path_or_hub_id: str | os.PathLike, compute_dtype: str | None = None
    ) -> ChronosBoltPipeline:
        """Loads a Hugging Face Chronos-Bolt checkpoint: a local directory
        (with `config.json` and `model.safetensors`) or a hub id such as
        `"amazon/chronos-bolt-small"` (downloaded with `huggingface_hub`).
        `ChronosPipeline.from_pretrained` loads these too. `compute_dtype`:
        see the class."""
        model = checkpoints.load_chronos(path_or_hub_id)
        if not isinstance(model, (ChronosBolt, ChronosBoltMoE)):
            raise CheckpointError(
                f"Expected a Chronos-Bolt checkpoint. Received: a {type(model).__name__} "
                f"checkpoint in {str(path_or_hub_id)!r} (load it with ChronosPipeline)."
            )
        return cls(model, compute_dtype=compute_dtype)

    @property
    def quantiles(self) -> list[float]:
        """The quantile levels the model forecasts (its training grid)."""
        return list(self.config.quantiles)

    # ---- the model on one batch ------------------------------------------------------

    def _padded(self, context: np.ndarray) -> tuple[np.ndarray, int]:
        """`context` (truncated to the model's length) left-padded with NaN to
        the `shapes.padded_length` of its number of whole patches.

        Whole missing patches change nothing: they are masked out of attention
        and out of the series' mean and scale. (With overlapping patches,
        `input_patch_stride < input_patch_size`, the windows depend on the
        length, which then stays as it is.)

        Returns:
            `(padded, patches)`: the array and the number of patches padded in.
        """
        rows, length = context.shape
        size = self.config.input_patch_size
        width, extra = length, 0
        if self.config.input_patch_stride == size:
            count = -(-length // size)
            patches = padded_length(count, -(-self.config.context_length // size))
            width, extra = patches * size, patches - count
        padded = np.full((rows, width), np.nan, np.float32)
        padded[:, width - length :] = context
        return padded, extra

    def _forecast(self, context: np.ndarray, batch_size: int) -> np.ndarray:
        """The model's quantile forecast `(n_series, len(quantiles),
        prediction_length)` float32 of `(n_series, time)` contexts."""
        model = self._forecasting_model()

        def forecast(values):
            with direct_layer_calls(model):
                outputs = invoke(model, {"context": values})
            return outputs["quantiles"] if isinstance(model, ChronosBoltMoE) else outputs

        function = self._function("forecast", forecast, model)
        outputs = []
        for start, stop, rows in batch_chunks(len(context), batch_size):
            padded, _ = self._padded(padded_rows(context[start:stop], rows))
            forecast = ops.convert_to_numpy(function(ops.convert_to_tensor(padded)))
            outputs.append(forecast[: stop - start])
        return np.concatenate(outputs).astype(np.float32)

    # ---- forecasting -----------------------------------------------------------------

    def predict(
        self,
        inputs: Any,
        prediction_length: int | None = None,
        limit_prediction_length: bool = False,
        batch_size: int = 256,
        num_samples: int | None = None,
        seed: int | None = None,
    ) -> np.ndarray:
        """Quantile forecasts.

        Args:
            inputs: one series (1-D), a list of series of any lengths (left-padded
                with NaN), or a 2-D `(n_series, time)` array; NaN marks missing.
                Infinite values are treated as missing too, with a logged warning.
            prediction_length: steps to forecast. Defaults to the model's. Longer
                horizons are rolled out as the reference does: every quantile of
                the last chunk is appended to the context in turn, and the
                `len(quantiles)²` forecasts of the next chunk are reduced to
                their empirical quantiles at the model's levels.
            limit_prediction_length: raise instead of warning when
                `prediction_length` exceeds the model's.
            batch_size: series per model call (a roll-out calls the model on
                `len(quantiles)` rows per series). Defaults to `256`.
            num_samples: must be `None`: Chronos-Bolt forecasts quantiles, not
                sample paths. (Accepted so that code written for
                `ChronosPipeline`, such as `evaluate` and the `forecast`
                command, runs unchanged.)
            seed: int or `None`, unused: the forecasts are deterministic.

        Returns:
            float32 array `(n_series, len(quantiles), prediction_length)`, the
            quantiles in the order of `self.quantiles`.
        """
        config = self.config
        prediction_length = positive_int(
            "prediction_length",
            config.prediction_length if prediction_length is None else prediction_length,
        )
        batch_size = positive_int("batch_size", batch_size)
        checked_seed(seed)
        if num_samples is not None:
            raise ValueError(
                "Chronos-Bolt forecasts quantiles directly; `num_samples` applies to Chronos T5 "
                f"models only. Received: num_samples={num_samples!r}"
            )
        context = checked_context(inputs)
        self._check_prediction_length(prediction_length, limit_prediction_length)
        context = context[:, -config.context_length :]
        prediction = self._forecast(context, batch_size)
        chunks, remaining = [prediction], prediction_length - prediction.shape[-1]
        levels = np.asarray(config.quantiles, np.float32)
        num_series, num_quantiles = prediction.shape[:2]
        if remaining > 0:
            context = np.repeat(context[:, None, :], num_quantiles, axis=1)  # (n, Q, time)
        while remaining > 0:
            context = np.concatenate([context, prediction], axis=-1)[..., -config.context_length :]
            rows = context.reshape(num_series * num_quantiles, -1)
            forecast = self._forecast(rows, batch_size)  # (n · Q, Q, horizon)
            forecast = forecast.reshape(num_series, num_quantiles * num_quantiles, -1)
            # The Q² forecasts of each step reduced to the model's levels
            # (torch.quantile's linear interpolation, as the reference).
            prediction = np.quantile(forecast, levels, axis=1).transpose(1, 0, 2)
            prediction = prediction.astype(np.float32)
            chunks.append(prediction)
            remaining -= prediction.shape[-1]
        return np.concatenate(chunks, axis=-1)[..., :prediction_length].astype(np.float32)

    def predict_quantiles(
        self,
        inputs: Any,
        prediction_length: int | None = None,
        quantile_levels: Sequence[float] = DEFAULT_QUANTILE_LEVELS,
        **predict_kwargs: Any,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Quantile and mean forecasts at any levels in (0, 1): the arguments
        and the float32 `(quantiles, mean)` of `ChronosPipeline.predict_quantiles`.

        Levels on the model's grid are its forecasts; others are interpolated
        as the reference does: linearly between the model's levels, which are
        taken to be equally spaced, with the lowest and highest repeated at the
        ends (levels beyond the grid get its lowest or highest forecast, with
        a logged warning). The mean is the median forecast.
        """
        levels = checked_quantile_levels(quantile_levels)
        grid = self.quantiles
        if 0.5 not in grid:
            raise ValueError(
                "The mean forecast is the model's median, but its quantiles do not hold 0.5. "
                f"Received: quantiles={grid!r}"
            )
        predictions = self.predict(inputs, prediction_length=prediction_length, **predict_kwargs)
        predictions = predictions.swapaxes(1, 2)  # (n, horizon, Q)
        if set(levels.tolist()) <= set(grid):
            quantiles = predictions[..., [grid.index(level) for level in levels.tolist()]]
        else:
            if levels.min() < min(grid) or levels.max() > max(grid):
                logger.warning(
                    "Quantile levels %s lie outside the levels the model was trained on (%s); "
                    "beyond them the lowest or highest forecast is repeated.",
                    levels.tolist(),
                    grid,
                )
            augmented = np.concatenate(
                [predictions[..., :1], predictions, predictions[..., -1:]], axis=-1
            )
            quantiles = np.quantile(augmented, levels.astype(np.float32), axis=-1)
            quantiles = quantiles.transpose(1, 2, 0)
        mean = predictions[..., grid.index(0.5)]
        return quantiles.astype(np.float32), mean.astype(np.float32)

    def embed(self, context: Any) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
        """Encoder embeddings of the series.

        Returns:
            `(embeddings, (loc, scale))`: float32 `(n_series, patches (+ 1 for
            the [REG] token), d_model)`, over the last `context_length` steps,
            and each series' mean and standard deviation `(n_series,)`.
        """
        context = checked_context(context)[:, -self.config.context_length :]
        padded, extra = self._padded(context)
        model = self._forecasting_model()

        def encode(values):
            with direct_layer_calls(model):
                states, _, loc, scale = model.encode(values)
            return states, loc, scale

        states, loc, scale = self._function("encode", encode, model)(ops.convert_to_tensor(padded))
        states = ops.convert_to_numpy(states)[:, extra:]
        loc = ops.convert_to_numpy(loc)[:, 0]
        scale = ops.convert_to_numpy(scale)[:, 0]
        return states.astype(np.float32), (loc.astype(np.float32), scale.astype(np.float32))

    def route(self, context: Any) -> dict[str, np.ndarray]:
        """The experts a `ChronosBoltMoE` model chooses for each series, as
        `ChronosPipeline.route` (token level: over the patches and `[REG]`).

        Returns:
            dict of numpy arrays: `expert_indices` `(n_series, top_k)`, `gates`
            `(n_series, top_k)`, `router_probs` `(n_series, num_experts)`
            (token level: and `layer_shares` `(n_series, layers, num_experts)`).
        """
        model = self.model
        if not isinstance(model, ChronosBoltMoE):
            raise TypeError(
                "`route` needs a ChronosBoltMoE model (build one with build_moe_chronos). "
                f"Received: {type(model).__name__}"
            )
        context = checked_context(context)[:, -self.config.context_length :]
        padded, _ = self._padded(context)
        values = ops.convert_to_tensor(padded)
        if model.level == "token":

            def route_tokens(values):
                routing = model.route_tokens(values)
                mask = model.base.context_mask(values)
                return (
                    routing["encoder_expert_indices"],
                    routing["encoder_router_probs"],
                    mask,
                )

            indices, probs, mask = self._function("route_tokens", route_tokens, model)(values)
            return series_routes(
                ops.convert_to_numpy(indices),
                ops.convert_to_numpy(probs).astype(np.float64),
                ops.convert_to_numpy(mask),
                model.top_k,
            )

        def route(values):
            states, mask, _, _ = model.encode(values)
            routing = model.route(states, mask)
            return {key: routing[key] for key in ("expert_indices", "gates", "router_probs")}

        routing = self._function("route", route, model)(values)
        return {key: ops.convert_to_numpy(value) for key, value in routing.items()}
