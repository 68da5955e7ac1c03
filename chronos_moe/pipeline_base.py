"""What `ChronosPipeline` and `ChronosBoltPipeline` share: the model and the
copy of it they forecast with, loading and saving, the compiled functions they
keep, and `predict_df` (the work of which is in `pipeline_dataframe.py`)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras

from chronos_moe import backend, checkpoints
from chronos_moe.config import DEFAULT_QUANTILE_LEVELS
from chronos_moe.pipeline_dtype import ForecastingModel

# Both pipelines' warnings, under one logger name.
logger = logging.getLogger("chronos_moe.pipeline")


class BasePipeline:
    """The part of a Chronos pipeline that does not depend on the model
    family; `ChronosPipeline` (Chronos T5) and `ChronosBoltPipeline`
    (Chronos-Bolt) check their model and add the forecasts.

    Args:
        model: the forecasting model. Its `chronos_config` sets the defaults.
        compute_dtype: `None` (the model's own dtype policy), `"float32"` or
            `"bfloat16"` (see `ForecastingModel`).
    """

    def __init__(self, model: keras.Model, compute_dtype: str | None = None):
        self._forecasting_model = ForecastingModel(model, compute_dtype)
        self.model = model
        self.compute_dtype = compute_dtype
        self.config = model.chronos_config
        self._compiled: dict[tuple, Any] = {}

    def __repr__(self) -> str:
        dtype = "" if self.compute_dtype is None else f", compute_dtype={self.compute_dtype!r}"
        return f"{type(self).__name__}({self.model!r}{dtype})"

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Writes the model as a Hugging Face Chronos (or Chronos-Bolt)
        checkpoint that the reference `chronos` package loads (and
        transformers, for Chronos T5)."""
        return checkpoints.save_chronos(self.model, directory)

    @property
    def model_context_length(self) -> int:
        return self.config.context_length

    @property
    def model_prediction_length(self) -> int:
        return self.config.prediction_length

    def _check_prediction_length(self, prediction_length: int, limit: bool) -> None:
        """Refuses (with `limit`, `predict`'s `limit_prediction_length`) or logs
        a warning for a horizon beyond the model's own."""
        if prediction_length > self.config.prediction_length:
            message = (
                f"prediction_length={prediction_length} exceeds the model's "
                f"prediction_length={self.config.prediction_length}; longer forecasts are rolled "
                "out autoregressively and may degrade."
            )
            if limit:
                raise ValueError(message + " Set `limit_prediction_length=False` to allow it.")
            logger.warning(message)

    def _function(self, key: Any, fn, model: keras.Model | None = None):
        """`fn` compiled for `model` (the pipeline's model by default, or its
        `compute_dtype` copy), kept under `key` for the next call."""
        model = self.model if model is None else model
        key = (key, id(model))
        if key not in self._compiled:
            self._compiled[key] = backend.compile_stateless(model, fn)
        return self._compiled[key]

    def predict_df(
        self,
        df: Any,
        *,
        id_column: str = "item_id",
        timestamp_column: str = "timestamp",
        target: str = "target",
        prediction_length: int | None = None,
        quantile_levels: Sequence[float] = DEFAULT_QUANTILE_LEVELS,
        batch_size: int = 256,
        validate_inputs: bool = True,
        freq: str | None = None,
        verbose: int = 0,
        **predict_kwargs: Any,
    ) -> Any:
        """Forecasts every series of a long-format pandas DataFrame.

        The reference `predict_df`: the same arguments, defaults, columns and
        dtypes. Rows are grouped by `id_column` (ids of any hashable type, in
        order of first appearance) and sorted by time within each id, so the
        input need not be sorted. Each series is forecast from its last
        `context_length` values (shorter ones are padded; NaN targets are
        missing values), and continued by the data's frequency: inferred as
        `pd.infer_freq` does from every series with 3 or more timestamps, or
        given as `freq`. Other columns (covariates) are ignored, as the
        reference ignores them.

        Bad input raises before any model work: a `TypeError` for a `df` that
        is not a DataFrame; a `ValueError` (`DataError` for the frame's
        content) for a missing column, an empty frame, a non-numeric target,
        a missing id or timestamp, duplicate (id, timestamp) rows, irregular
        timestamps or frequencies that differ between series (unless `freq`
        is given), a `prediction_length` < 1 or quantile levels outside
        (0, 1). (The reference accepts levels 0 and 1, and fails late or with
        other errors on the rest.)

        Args:
            df: pandas DataFrame, one row per (id, timestamp) observation.
            id_column: str. The series id column. Defaults to `"item_id"`.
            timestamp_column: str. The time column (datetimes, or strings that
                parse as dates). Defaults to `"timestamp"`.
            target: str. The numeric column to forecast. Defaults to `"target"`.
            prediction_length: int. Steps to forecast. Defaults to the model's.
            quantile_levels: list of numbers in (0, 1). Defaults to 0.1, ..., 0.9.
            batch_size: int. Series per `predict_quantiles` call (each call runs
                in compiled batches of `predict`'s own, smaller, `batch_size`).
                Defaults to `256`.
            validate_inputs: bool. `False` skips sorting and the duplicate
                check: the rows must then be grouped by id and time-sorted.
                Defaults to `True`.
            freq: str. A pandas frequency for the forecast timestamps (`"h"`,
                `"D"`, ...), used as given. Defaults to `None` (inferred).
            verbose: int. `1` shows a progress bar over the series. Defaults to
                `0`.
            **predict_kwargs: the other arguments of `predict` (for
                `ChronosPipeline`: `num_samples`, `top_k`, `seed`, ...).

        Returns:
            A pandas DataFrame with `prediction_length` rows per series: the id
            column, the timestamp column (the forecast timestamps),
            `target_name` (the `target` argument), `predictions` (float32: the
            mean forecast of `ChronosPipeline`, the median of
            `ChronosBoltPipeline`) and one float32 column per quantile level,
            named `str(level)` (`"0.1"`, ...).

        Example:

        >>> import pandas as pd
        >>> from chronos_moe import ChronosBolt, ChronosBoltPipeline, ChronosPipeline, ChronosT5
        >>> model = ChronosT5.from_preset("tiny", vocab_size=64, num_layers=1,
        ...     chronos_config={"n_tokens": 64, "context_length": 32, "prediction_length": 4})
        >>> df = pd.DataFrame({
        ...     "item_id": ["a"] * 10 + ["b"] * 10,
        ...     "timestamp": list(pd.date_range("2024-01-01", periods=10, freq="D")) * 2,
        ...     "target": list(range(10)) + list(range(10, 0, -1)),
        ... })
        >>> forecast = ChronosPipeline(model).predict_df(df, prediction_length=2, seed=0)
        >>> forecast.shape, list(forecast.columns[:5])
        ((4, 13), ['item_id', 'timestamp', 'target_name', 'predictions', '0.1'])
        >>> forecast["timestamp"].dt.strftime("%m-%d").tolist()
        ['01-11', '01-12', '01-11', '01-12']
        >>> bolt = ChronosBolt(d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4,
        ...     chronos_config={"context_length": 32, "prediction_length": 2,
        ...                     "input_patch_size": 8, "input_patch_stride": 8})
        >>> ChronosBoltPipeline(bolt).predict_df(df).shape
        (4, 13)
        """
        from chronos_moe.pipeline_dataframe import forecast_long_frame

        return forecast_long_frame(
            self,
            df,
            (id_column, timestamp_column, target),
            prediction_length,
            quantile_levels,
            batch_size=batch_size,
            validate_inputs=validate_inputs,
            freq=freq,
            verbose=verbose,
            **predict_kwargs,
        )
