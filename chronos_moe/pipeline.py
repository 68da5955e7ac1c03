"""ChronosPipeline: probabilistic forecasts from a Chronos model, with the
reference `chronos.ChronosPipeline` API."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from keras import ops

from chronos_moe import checkpoints
from chronos_moe.config import DEFAULT_QUANTILE_LEVELS
from chronos_moe.generation import generate_tokens
from chronos_moe.models.chronos_bolt import ChronosBolt
from chronos_moe.models.chronos_t5 import ChronosT5
from chronos_moe.moe.bolt_model import ChronosBoltMoE
from chronos_moe.moe.model import ChronosMoE
from chronos_moe.moe.token_experts import series_routes
from chronos_moe.pipeline_base import BasePipeline
from chronos_moe.pipeline_bolt import ChronosBoltPipeline
from chronos_moe.pipeline_inputs import (
    checked_context,
    checked_number,
    checked_quantile_levels,
    checked_seed,
)
from chronos_moe.shapes import batch_chunks, padded_length, padded_rows
from chronos_moe.tokenizer import MeanScaleUniformBins
from chronos_moe.validation import positive_int


class ChronosPipeline(BasePipeline):
    """Forecasts with a Chronos model: sample paths, quantiles, embeddings.

    Same methods and defaults as the reference `chronos.ChronosPipeline`; inputs
    may be numpy arrays, lists, or tensors of the active backend, outputs are
    numpy arrays. Tokenization runs on the host; the encoder and the cached
    decoding loop run as one compiled function per input shape (JAX) or
    eagerly without autograd (torch).

    Args:
        model: `ChronosT5` or `ChronosMoE`. Its `chronos_config` sets the
            tokenizer and defaults.
        compute_dtype: `None` (the model's own dtype policy), `"float32"` or
            `"bfloat16"`. `"bfloat16"` forecasts with a bfloat16 copy of the
            model (weights and activations; softmax sums, layer-norm statistics
            and sampling stay float32). About 1.3× faster on a CPU with
            AVX512-BF16, but not bitwise the float32 forecasts: see
            `benchmarks/RESULTS.md` for the measured differences. The copy
            takes the model's current weights at every call.

    Example:

    >>> import numpy as np
    >>> model = ChronosT5.from_preset("tiny", vocab_size=64, num_layers=1,
    ...     chronos_config={"n_tokens": 64, "context_length": 32, "prediction_length": 4})
    >>> pipeline = ChronosPipeline(model)
    >>> samples = pipeline.predict(np.sin(np.arange(40.0)), num_samples=3, seed=0)
    >>> samples.shape
    (1, 3, 4)
    >>> quantiles, mean = pipeline.predict_quantiles(np.arange(20.0), quantile_levels=[0.5])
    >>> quantiles.shape, mean.shape
    ((1, 4, 1), (1, 4))
    """

    def __init__(self, model: ChronosT5 | ChronosMoE, compute_dtype: str | None = None):
        if not isinstance(model, (ChronosT5, ChronosMoE)) or isinstance(model, ChronosBoltMoE):
            bolt = isinstance(model, (ChronosBolt, ChronosBoltMoE))
            hint = " (forecast with ChronosBoltPipeline)" if bolt else ""
            raise TypeError(
                "`model` must be a ChronosT5 or ChronosMoE model. "
                f"Received: {type(model).__name__}{hint}"
            )
        super().__init__(model, compute_dtype)
        self.tokenizer = MeanScaleUniformBins.from_config(self.config)

    # ---- loading and saving ------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls, path_or_hub_id: str | os.PathLike, compute_dtype: str | None = None
    ) -> ChronosPipeline | ChronosBoltPipeline:
        """Loads a Hugging Face Chronos checkpoint: a local directory (with
        `config.json` and `model.safetensors`) or a hub id such as
        `"amazon/chronos-t5-small"` (downloaded with `huggingface_hub`).
        Checkpoints saved from a `ChronosMoE` load as one. Pickled weights
        (`pytorch_model.bin`) are refused. `compute_dtype`: see the class.

        A Chronos-Bolt checkpoint (`"amazon/chronos-bolt-small"`, …) gives a
        `ChronosBoltPipeline`, as the reference's `BaseChronosPipeline` chooses
        the pipeline from the config."""
        model = checkpoints.load_chronos(path_or_hub_id)
        if isinstance(model, (ChronosBolt, ChronosBoltMoE)):
            return ChronosBoltPipeline(model, compute_dtype=compute_dtype)
        return cls(model, compute_dtype=compute_dtype)

    # ---- tokens ---------------------------------------------------------------------

    def _tokenize(self, context: np.ndarray):
        """Token ids, mask and scale, with the context left-padded to its
        `shapes.padded_length` by masked pad tokens (no effect on the real
        tokens' results). Returns also the number of columns padded in."""
        token_ids, mask, scale = self.tokenizer.context_input_transform(context)
        length = token_ids.shape[1]
        pad_cols = padded_length(length - 1, self.config.context_length, smallest=16) + 1 - length
        token_ids = np.pad(
            token_ids, ((0, 0), (pad_cols, 0)), constant_values=self.config.pad_token_id
        )
        mask = np.pad(mask, ((0, 0), (pad_cols, 0)))
        return token_ids.astype("int32"), mask, scale, pad_cols

    # ---- forecasting -----------------------------------------------------------------

    def predict(
        self,
        inputs: Any,
        prediction_length: int | None = None,
        num_samples: int | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        limit_prediction_length: bool = False,
        seed: int | None = None,
        batch_size: int = 64,
    ) -> np.ndarray:
        """Samples forecast paths.

        Args:
            inputs: one series (1-D), a list of series of any lengths (left-padded
                with NaN), or a 2-D `(n_series, time)` array; NaN marks missing.
                Infinite values are treated as missing too, with a logged warning
                (the reference pipeline would forecast ±inf for such a series).
            prediction_length: steps to forecast. Defaults to the model's. Longer
                horizons are rolled out as the reference does: after each chunk
                the per-step median of the samples is appended to the context.
            num_samples, temperature, top_k, top_p: sampling settings; default to
                the model's `chronos_config`. `top_k=1` is greedy decoding.
            limit_prediction_length: raise instead of warning when
                `prediction_length` exceeds the model's.
            seed: int for reproducible samples; `None` draws a fresh seed.
                Anything else is a `TypeError`.
            batch_size: series per compiled call. It bounds memory: the
                decoding cache holds `batch_size · num_samples` rows (with 64
                series and 20 samples about 1 GB for chronos-t5-tiny); larger
                calls are no faster once there are several hundred rows.

        Returns:
            float32 array `(n_series, num_samples, prediction_length)`.
        """
        config = self.config
        prediction_length = positive_int(
            "prediction_length",
            config.prediction_length if prediction_length is None else prediction_length,
        )
        num_samples = positive_int(
            "num_samples", config.num_samples if num_samples is None else num_samples
        )
        top_k = positive_int("top_k", config.top_k if top_k is None else top_k)
        batch_size = positive_int("batch_size", batch_size)
        temperature = checked_number(
            "temperature", config.temperature if temperature is None else temperature
        )
        top_p = checked_number("top_p", config.top_p if top_p is None else top_p)
        seed = checked_seed(seed)
        if not temperature > 0:
            raise ValueError(f"`temperature` must be > 0. Received: temperature={temperature}")
        if not 0 < top_p <= 1:
            raise ValueError(f"`top_p` must be in (0, 1]. Received: top_p={top_p}")
        context = checked_context(inputs)
        self._check_prediction_length(prediction_length, limit_prediction_length)
        if seed is None:
            seed = int(np.random.default_rng().integers(2**31 - 1))

        top_k = min(top_k, self.model.vocab_size)
        chunks, remaining, round_index = [], prediction_length, 0
        while remaining > 0:
            horizon = min(remaining, config.prediction_length)
            samples = np.concatenate(
                [
                    self._sample_chunk(
                        padded_rows(context[start:stop], rows),
                        horizon,
                        num_samples,
                        temperature,
                        top_k,
                        top_p,
                        seed + 7919 * round_index + start,
                    )[: stop - start]
                    for start, stop, rows in batch_chunks(context.shape[0], batch_size)
                ]
            )
            chunks.append(samples)
            remaining -= horizon
            round_index += 1
            if remaining > 0:
                # torch.median (the reference) takes the lower middle value.
                median = np.sort(samples, axis=1)[:, (num_samples - 1) // 2, :]
                context = np.concatenate([context, median], axis=-1)
        return np.concatenate(chunks, axis=-1).astype(np.float32)

    def _sample_chunk(self, context, horizon, num_samples, temperature, top_k, top_p, seed):
        token_ids, mask, scale, _ = self._tokenize(context)
        use_top_p = top_p < 1.0
        model = self._forecasting_model()

        def sample(input_ids, attention_mask, seed, temperature, top_p):
            return generate_tokens(
                model,
                input_ids,
                attention_mask,
                seed,
                temperature,
                top_p,
                prediction_length=horizon,
                num_samples=num_samples,
                top_k=top_k,
                use_top_p=use_top_p,
            )

        function = self._function(("sample", horizon, num_samples, top_k, use_top_p), sample, model)
        tokens = function(
            ops.convert_to_tensor(token_ids),
            ops.convert_to_tensor(mask),
            ops.convert_to_tensor(np.int32(seed % (2**31 - 1))),
            ops.convert_to_tensor(np.float32(temperature)),
            ops.convert_to_tensor(np.float32(top_p)),
        )
        tokens = ops.convert_to_numpy(tokens)
        return self.tokenizer.output_transform(tokens, scale)

    def predict_quantiles(
        self,
        inputs: Any,
        prediction_length: int | None = None,
        quantile_levels: Sequence[float] = DEFAULT_QUANTILE_LEVELS,
        **predict_kwargs,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Quantile and mean forecasts from the sample paths of `predict`.

        Quantiles interpolate linearly between the sorted samples (as
        `torch.quantile`).

        Args:
            inputs, prediction_length: as for `predict`.
            quantile_levels: list of numbers in (0, 1). Defaults to 0.1, 0.2,
                ..., 0.9.
            **predict_kwargs: the other arguments of `predict`.

        Returns:
            `(quantiles, mean)`: float32 `(n_series, prediction_length,
            n_quantiles)` and `(n_series, prediction_length)`.
        """
        levels = checked_quantile_levels(quantile_levels)
        samples = self.predict(inputs, prediction_length=prediction_length, **predict_kwargs)
        quantiles = np.quantile(samples, levels, axis=1).transpose(1, 2, 0)
        return quantiles.astype(np.float32), samples.mean(axis=1).astype(np.float32)

    def embed(self, context: Any) -> tuple[np.ndarray, np.ndarray]:
        """Encoder embeddings of the series.

        Returns:
            `(embeddings, scale)`: float32 `(n_series, time + 1, d_model)` (time is
            the context length after truncation to the model's; + 1 for EOS) and
            the per-series scale `(n_series,)`.
        """
        context = checked_context(context)
        token_ids, mask, scale, pad_cols = self._tokenize(context)
        function = self._function(("encode",), lambda ids, m: self.model.encode(ids, m))
        states = ops.convert_to_numpy(
            function(ops.convert_to_tensor(token_ids), ops.convert_to_tensor(mask))
        )
        return states[:, pad_cols:].astype(np.float32), scale

    def route(self, context: Any) -> dict[str, np.ndarray]:
        """The experts a `ChronosMoE` model chooses for each series.

        At the token level every context token is routed in every expert
        layer; a series' experts are then the `top_k` experts that received
        most of its tokens' slots (over all encoder expert layers), its gates
        their shares renormalised, its `router_probs` the mean probabilities
        of its tokens, and `layer_shares` `(n_series, layers, num_experts)`
        gives each layer's share of its tokens' slots per expert.

        Returns:
            dict of numpy arrays: `expert_indices` `(n_series, top_k)`, `gates`
            `(n_series, top_k)`, `router_probs` `(n_series, num_experts)`
            (token level: and `layer_shares`).
        """
        if not isinstance(self.model, ChronosMoE):
            raise TypeError(
                "`route` needs a ChronosMoE model (build one with build_moe_chronos). "
                f"Received: {type(self.model).__name__}"
            )
        context = checked_context(context)
        token_ids, mask, _, _ = self._tokenize(context)
        if self.model.level == "token":
            return self._route_tokens(token_ids, mask)

        def route(ids, attention_mask):
            routing = self.model.route(self.model.encode(ids, attention_mask), attention_mask)
            return {key: routing[key] for key in ("expert_indices", "gates", "router_probs")}

        function = self._function(("route",), route)
        routing = function(ops.convert_to_tensor(token_ids), ops.convert_to_tensor(mask))
        return {key: ops.convert_to_numpy(value) for key, value in routing.items()}

    def _route_tokens(self, token_ids, mask) -> dict[str, np.ndarray]:
        """`route` for token-level experts (see there)."""

        def route(ids, attention_mask):
            routing = self.model.route_tokens(ids, attention_mask)
            return (routing["encoder_expert_indices"], routing["encoder_router_probs"])

        function = self._function(("route_tokens",), route)
        indices, probs = function(ops.convert_to_tensor(token_ids), ops.convert_to_tensor(mask))
        indices = ops.convert_to_numpy(indices)
        probs = ops.convert_to_numpy(probs).astype(np.float64)
        return series_routes(indices, probs, np.asarray(mask), self.model.top_k)
