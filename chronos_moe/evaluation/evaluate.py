"""Benchmark-style evaluation: forecast the last `prediction_length` points of
every series, score WQL and MASE, and compare with Naive and Seasonal Naive."""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from chronos_moe.config import DEFAULT_QUANTILE_LEVELS
from chronos_moe.evaluation.datasets import EvaluationDataset, as_datasets, seasonality_from_freq
from chronos_moe.evaluation.metrics import (
    absolute_scaled_errors,
    aggregate_relative_score,
    check_positive_int,
    check_quantile_levels,
    check_seasonality,
    relative_score,
    weighted_quantile_loss,
)
from chronos_moe.evaluation.results import (  # noqa: F401 (names of this module before)
    BASELINES,
    METHODS,
    METRICS,
    SKIP_REASONS,
    DatasetResult,
    EvaluationResult,
    markdown_comparison,
)

logger = logging.getLogger(__name__)

# ---- baselines ------------------------------------------------------------------------


def _fill_missing(values: np.ndarray) -> np.ndarray:
    """Carries the last observed value forward over NaN (leading NaN take the first
    observed value), as GluonTS' `LastValueImputation`."""
    observed = ~np.isnan(values)
    index = np.where(observed, np.arange(len(values)), 0)
    np.maximum.accumulate(index, out=index)
    filled = values[index]
    return np.where(np.isnan(filled), values[observed][0], filled)


def naive_forecast(history: Sequence[Any], prediction_length: int) -> np.ndarray:
    """The Naive forecast: the last observed value of each series, repeated.

    Args:
        history: 1-D array-likes, each with at least one observed (non-NaN) value.
        prediction_length: int. Steps to forecast.

    Returns:
        float64 array `(n_series, prediction_length)`.

    Example:

    >>> naive_forecast([[1.0, 2.0, float("nan")]], 2).tolist()
    [[2.0, 2.0]]
    """
    return seasonal_naive_forecast(history, prediction_length, seasonality=1)


def seasonal_naive_forecast(
    history: Sequence[Any], prediction_length: int, seasonality: int
) -> np.ndarray:
    """The Seasonal Naive forecast: the last observed season, repeated.

    Step `j` (1-based) of the forecast is `x[T − s + ((j − 1) mod s)]` for a
    history `x[0:T]`. Missing values are filled with the last observed one first;
    a history shorter than `s` gets the Naive forecast.

    Args:
        history: 1-D array-likes, each with at least one observed (non-NaN) value.
        prediction_length: int. Steps to forecast.
        seasonality: int >= 1.

    Returns:
        float64 array `(n_series, prediction_length)`.

    Example:

    >>> seasonal_naive_forecast([[1.0, 2.0, 3.0, 4.0]], 3, seasonality=2).tolist()
    [[3.0, 4.0, 3.0]]
    """
    seasonality = check_seasonality(seasonality)
    forecasts = np.empty((len(history), prediction_length))
    for i, values in enumerate(history):
        values = _fill_missing(np.asarray(values, dtype=np.float64))
        season = values[-seasonality:] if len(values) >= seasonality else values[-1:]
        forecasts[i] = np.resize(season, prediction_length)  # repeats the season cyclically
    return forecasts


# ---- evaluation -----------------------------------------------------------------------


def evaluate(
    pipeline: Any,
    data: Any,
    prediction_length: int,
    seasonality: int | Mapping[str, int] | None = None,
    quantile_levels: Sequence[float] = DEFAULT_QUANTILE_LEVELS,
    batch_size: int = 256,
    num_samples: int | None = None,
    seed: int = 0,
    verbose: int = 1,
) -> EvaluationResult:
    """Scores forecasts of the last `prediction_length` points of every series.

    Each series is split into its history (all points but the last
    `prediction_length`) and its target (the last `prediction_length` points).
    The model forecasts quantiles from the history (truncated to the model's
    context length, which is all it reads); the median is the point forecast.
    Naive and Seasonal Naive forecast the same series, their quantile forecasts
    all equal to the point forecast. Scores: WQL over `quantile_levels` and MASE
    (`chronos_moe.evaluation.metrics`), per series and per dataset, and relative
    to Seasonal Naive per dataset and aggregated over datasets (geometric mean).

    A series is skipped (and counted by reason in `DatasetResult.skipped`) when it
    is not longer than `prediction_length`, or has no observed value in its
    history or in its target; a dataset without any series left is an error.

    Args:
        pipeline: `ChronosPipeline` (dense or MoE model), or `"naive"` /
            `"seasonal_naive"` to score a baseline as the model.
        data: an Arrow file path or a list of them (one dataset per file), a dict
            `name -> series`, or the series of one dataset (a list of 1-D arrays or a
            2-D array).
        prediction_length: int. Points to forecast at the end of each series.
        seasonality: int >= 1 for every dataset, a dict `dataset name -> int`,
            or `None`: then each dataset's frequency decides (the `freq` recorded
            in an Arrow file's schema metadata, read as GluonTS'
            `get_seasonality`: hourly 24, daily 1, monthly 12, ...), and 1 when no
            frequency is known. Defaults to `None`.
        quantile_levels: levels in (0, 1) that WQL averages over. Defaults to
            0.1, 0.2, ..., 0.9.
        batch_size: int. Series per forecasting call. Defaults to 256.
        num_samples: int. Sample paths per series; `None` takes the model's
            default. Defaults to `None`.
        seed: int. Seed of the sampling (the batch of series starting at position
            `i` of a dataset uses `seed + i`). Defaults to 0.
        verbose: int. 1 shows a progress bar (on a terminal; else one line at
            the end). Defaults to 1.

    Returns:
        `EvaluationResult`.

    Example:

    >>> import numpy as np
    >>> series = [np.sin(np.arange(40.0)) + 2, np.arange(30.0)]
    >>> result = evaluate("seasonal_naive", series, prediction_length=4, seasonality=6)
    >>> result.relative_wql, result.relative_mase
    (1.0, 1.0)
    """
    _check_pipeline(pipeline)
    prediction_length = check_positive_int("prediction_length", prediction_length)
    batch_size = check_positive_int("batch_size", batch_size)
    levels = check_quantile_levels(quantile_levels)
    if isinstance(seasonality, Mapping):
        seasonality = {name: check_seasonality(s) for name, s in seasonality.items()}
    elif seasonality is not None:
        seasonality = check_seasonality(seasonality)

    # Read and split every dataset before any forecasting, so that bad data fails fast.
    splits = [_split(dataset, prediction_length) for dataset in as_datasets(data)]
    names = [split.dataset.name for split in splits]
    if isinstance(seasonality, Mapping) and set(seasonality) - set(names):
        raise ValueError(
            f"`seasonality` names datasets that are not in `data` ({names}). "
            f"Received: {sorted(seasonality)}"
        )
    progress = None
    if verbose and not isinstance(pipeline, str):
        from keras.utils import Progbar

        # The bar only on a terminal; redirected output gets one plain line at the
        # end (Progbar's verbose=2), not carriage returns and ANSI colour codes.
        progress = Progbar(
            sum(len(s.index) for s in splits),
            unit_name="series",
            verbose=1 if sys.stdout.isatty() else 2,
        )

    results = []
    for split in splits:
        dataset = split.dataset
        if isinstance(seasonality, Mapping):
            season = seasonality.get(dataset.name, seasonality_from_freq(dataset.freq))
        else:
            season = seasonality or seasonality_from_freq(dataset.freq)
        forecasts = {method: _baseline(method, split, season, levels) for method in BASELINES}
        if isinstance(pipeline, str):
            forecasts["model"] = forecasts[pipeline]
        else:
            forecasts["model"] = _model_forecast(
                pipeline, split, levels, batch_size, num_samples, seed, progress
            )
        results.append(_score(split, season, levels, forecasts))

    relative = _relative_scores(results)
    return EvaluationResult(results, prediction_length, tuple(levels.tolist()), relative)


def _check_pipeline(pipeline: Any) -> None:
    """A named error for a `pipeline` that is neither a pipeline nor a baseline name."""
    if isinstance(pipeline, str):
        if pipeline not in BASELINES:
            raise ValueError(
                f"`pipeline` must be a ChronosPipeline or one of {BASELINES}. "
                f"Received: pipeline={pipeline!r}"
            )
    elif not hasattr(pipeline, "predict_quantiles"):
        raise TypeError(
            "`pipeline` must be a ChronosPipeline (or a baseline name). "
            f"Received: {type(pipeline).__name__}"
        )


def _relative_scores(results: list) -> dict[str, dict[str, float]]:
    """`method -> metric -> ` the geometric mean over datasets of the method's
    score relative to Seasonal Naive's (`aggregate_relative_score`)."""
    return {
        method: {
            metric: aggregate_relative_score(
                {d.name: d.scores[method][metric] for d in results},
                {d.name: d.scores["seasonal_naive"][metric] for d in results},
            )
            for metric in METRICS
        }
        for method in METHODS
    }


@dataclasses.dataclass
class _Split:
    dataset: EvaluationDataset
    index: np.ndarray  # positions of the evaluated series
    history: list[np.ndarray]
    target: np.ndarray  # (n, prediction_length)
    skipped: dict[str, int]


def _split(dataset: EvaluationDataset, prediction_length: int) -> _Split:
    skipped = collections.Counter()
    index, history, target = [], [], []
    for i, values in enumerate(dataset.series):
        if len(values) <= prediction_length:
            skipped["too_short"] += 1
        elif np.isnan(values[:-prediction_length]).all():
            skipped["no_history"] += 1
        elif np.isnan(values[-prediction_length:]).all():
            skipped["no_target"] += 1
        else:
            index.append(i)
            history.append(values[:-prediction_length])
            target.append(values[-prediction_length:])
    total = len(dataset.series)
    reasons = ", ".join(f"{n} {SKIP_REASONS[r]}" for r, n in skipped.items())
    if not index:
        raise ValueError(
            f"No series of dataset {dataset.name!r} can be evaluated with "
            f"prediction_length={prediction_length}: all {total} skipped ({reasons}). Each "
            "series needs more than prediction_length points, with an observed value in its "
            "history and one in its last prediction_length points."
        )
    if skipped:
        logger.warning(
            "Dataset %r: skipped %d of %d series with prediction_length=%d (%s).",
            dataset.name,
            sum(skipped.values()),
            total,
            prediction_length,
            reasons,
        )
    return _Split(dataset, np.asarray(index), history, np.stack(target), dict(skipped))


def _baseline(method: str, split: _Split, seasonality: int, levels: np.ndarray):
    """`(quantiles (n, h, q), median (n, h))` of a baseline: every quantile is the point."""
    season = seasonality if method == "seasonal_naive" else 1
    point = seasonal_naive_forecast(split.history, split.target.shape[1], season)
    return np.repeat(point[:, :, None], len(levels), axis=2), point


def _model_forecast(pipeline, split, levels, batch_size, num_samples, seed, progress):
    """`(quantiles (n, h, q), median (n, h))` of a pipeline, in batches of series."""
    with_median = np.union1d(levels, [0.5])  # sorted; the median is the point forecast
    columns = np.searchsorted(with_median, levels)
    median_column = int(np.searchsorted(with_median, 0.5))
    context_length = getattr(pipeline, "model_context_length", None)
    options = {} if num_samples is None else {"num_samples": num_samples}
    quantiles = []
    for start in range(0, len(split.history), batch_size):
        context = split.history[start : start + batch_size]
        if context_length:  # the model reads no more than this: spare the padding
            context = [values[-context_length:] for values in context]
        chunk, _ = pipeline.predict_quantiles(
            context,
            prediction_length=split.target.shape[1],
            quantile_levels=with_median.tolist(),
            seed=seed + start,
            batch_size=batch_size,
            **options,
        )
        quantiles.append(np.asarray(chunk, dtype=np.float64))
        if progress is not None:
            progress.add(len(context))
    quantiles = np.concatenate(quantiles)
    return quantiles[:, :, columns], quantiles[:, :, median_column]


def _score(split: _Split, seasonality: int, levels: np.ndarray, forecasts) -> DatasetResult:
    target = split.target
    scores, per_series = {}, {}
    for method in METHODS:
        quantiles, median = forecasts[method]
        series_wql = np.array(
            [weighted_quantile_loss(y, q, levels) for y, q in zip(target, quantiles, strict=True)]
        )
        series_mase = absolute_scaled_errors(target, median, split.history, seasonality)
        defined = series_mase[~np.isnan(series_mase)]
        scores[method] = {
            "wql": weighted_quantile_loss(target, quantiles, levels),
            "mase": float(defined.mean()) if defined.size else math.nan,
        }
        per_series[method] = {"wql": series_wql, "mase": series_mase}
    relative = {
        method: {k: relative_score(scores[method][k], scores["seasonal_naive"][k]) for k in METRICS}
        for method in METHODS
    }
    return DatasetResult(
        name=split.dataset.name,
        seasonality=seasonality,
        num_series=len(split.index),
        skipped=split.skipped,
        series_index=split.index,
        scores=scores,
        relative=relative,
        per_series=per_series,
    )


# ---- command line ---------------------------------------------------------------------


def run_evaluate(
    model_dir: str | os.PathLike,
    data_paths: Sequence[str | os.PathLike],
    prediction_length: int,
    seasonality: int | None = None,
    output_csv: str | os.PathLike | None = None,
    quantile_levels: Sequence[float] = DEFAULT_QUANTILE_LEVELS,
    batch_size: int = 256,
    num_samples: int | None = None,
    seed: int = 0,
) -> EvaluationResult:
    """`chronos-moe evaluate`: loads a model, evaluates it on Arrow files, prints
    the table (one row per file, then the aggregate relative scores) and writes it
    as CSV when `output_csv` is given.

    Args:
        model_dir: a Chronos checkpoint directory (Hugging Face layout, dense or
            MoE), or a hub id; `"naive"` / `"seasonal_naive"` score a baseline.
        data_paths: Arrow files, one dataset each.
        prediction_length, seasonality, quantile_levels, batch_size, num_samples,
            seed: see `evaluate`.
        output_csv: where to write the CSV. Defaults to `None` (no file).

    Returns:
        The `EvaluationResult`.
    """
    if os.fspath(model_dir) in BASELINES and not Path(model_dir).exists():
        pipeline = os.fspath(model_dir)
    else:
        from chronos_moe.pipeline import ChronosPipeline

        pipeline = ChronosPipeline.from_pretrained(model_dir)
    paths = [data_paths] if isinstance(data_paths, (str, os.PathLike)) else list(data_paths)
    result = evaluate(
        pipeline,
        paths,
        prediction_length,
        seasonality=seasonality,
        quantile_levels=quantile_levels,
        batch_size=batch_size,
        num_samples=num_samples,
        seed=seed,
    )
    for d in result.datasets:
        if d.skipped:
            reasons = ", ".join(f"{n} {SKIP_REASONS[r]}" for r, n in d.skipped.items())
            print(f"{d.name}: skipped {d.num_skipped} series ({reasons})")
    print(result.table())
    if output_csv is not None:
        print(f"Wrote {result.to_csv(output_csv)}")
    return result
