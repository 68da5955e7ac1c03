"""The work of `ChronosPipeline.predict_df`: a long-format pandas DataFrame of
series in, their forecasts as a DataFrame out (`data/long_frame.py` reads and
writes the frames)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from chronos_moe.data.long_frame import LongFrameSeries, forecast_frame
from chronos_moe.pipeline_inputs import checked_quantile_levels
from chronos_moe.validation import positive_int


def forecast_long_frame(
    pipeline: Any,
    df: Any,
    columns: tuple[str, str, str],
    prediction_length: int | None,
    quantile_levels: Sequence[float],
    *,
    batch_size: int,
    validate_inputs: bool,
    freq: str | None,
    verbose: int,
    **predict_kwargs: Any,
) -> Any:
    """`pipeline.predict_df(df, ...)` (see there); `columns` are the id,
    timestamp and target column names."""
    prediction_length = positive_int(
        "prediction_length",
        pipeline.config.prediction_length if prediction_length is None else prediction_length,
    )
    levels = checked_quantile_levels(quantile_levels)
    batch_size = positive_int("batch_size", batch_size)
    series = LongFrameSeries.from_frame(df, *columns, validate_inputs=validate_inputs)
    timestamps = series.future_timestamps(prediction_length, freq)
    progress = None
    if verbose:
        from keras.utils import Progbar

        progress = Progbar(len(series), unit_name="series", verbose=1)
    quantiles, mean = [], []
    for start in range(0, len(series), batch_size):
        chunk = series.values[start : start + batch_size]
        q, m = pipeline.predict_quantiles(
            chunk, prediction_length, quantile_levels=levels, **predict_kwargs
        )
        quantiles.append(q)
        mean.append(m)
        if progress is not None:
            progress.add(len(chunk))
    levels_as_given = list(quantile_levels)
    return forecast_frame(
        series, timestamps, levels_as_given, np.concatenate(quantiles), np.concatenate(mean)
    )
