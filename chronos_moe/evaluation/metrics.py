"""Forecast accuracy metrics of the Chronos benchmark: WQL, MASE, relative scores.

Plain numpy in float64, written as the definitions read (`docs/evaluation.md`):

- **WQL** (weighted quantile loss): for each quantile level `q`, the sum over
  all points of twice the pinball loss, divided by the sum of `|target|`;
  averaged over the levels.
- **MASE** (mean absolute scaled error): per series, the mean absolute error of
  the point (median) forecast divided by the in-sample mean absolute error of
  the seasonal-naive forecast `x[t] ≈ x[t - s]`; then the mean over series.
- **Aggregate relative score**: per dataset, the model's score divided by the
  baseline's (Seasonal Naive), then the geometric mean over datasets.

Conventions (chosen so that a model and a baseline always see the same series):

- NaN targets are excluded from every sum and mean, never propagated.
- A history no longer than the seasonality `s` is scaled by the naive
  (`s = 1`) error instead, as GluonTS' `calculate_seasonal_error` does.
- A series whose in-sample error is 0 (a constant history) or undefined (fewer
  than two observed points one season apart) has an undefined MASE: NaN,
  left out of the mean over series. The scale depends only on the history, so
  the same series are left out for every model.
- A relative score `0 / 0` (model and baseline both perfect) is 1; `x / 0` is
  `inf`. Datasets whose model or baseline score is NaN are left out of the
  geometric mean.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from chronos_moe.validation import positive_int as check_positive_int


def check_quantile_levels(quantile_levels: Any) -> np.ndarray:
    """Validates quantile levels: a non-empty 1-D sequence of numbers in (0, 1).

    Returns:
        float64 array of the levels.
    """
    levels = np.asarray(quantile_levels, dtype=np.float64)
    if levels.ndim != 1 or levels.size == 0 or not np.all((levels > 0) & (levels < 1)):
        raise ValueError(
            "`quantile_levels` must be a non-empty list of numbers in (0, 1). "
            f"Received: quantile_levels={np.asarray(quantile_levels).tolist()!r}"
        )
    return levels


def check_seasonality(seasonality: Any) -> int:
    """Validates a seasonality: an integer >= 1 (1 means "no season")."""
    return check_positive_int("seasonality", seasonality)


def weighted_quantile_loss(
    target: Any, quantile_forecasts: Any, quantile_levels: Sequence[float]
) -> float:
    """Weighted quantile loss of quantile forecasts, over all points given.

    `WQL = mean_q [ Σ_t 2·ρ_q(y_t, ŷ_t^q) / Σ_t |y_t| ]` with the pinball loss
    `ρ_q(y, ŷ) = max(q·(y − ŷ), (q − 1)·(y − ŷ))`; the sums run over every
    series and step whose target is not NaN. Pass one series for a per-series
    score, a whole dataset for the dataset score.

    Args:
        target: array-like `(..., prediction_length)`. NaN marks a missing value.
        quantile_forecasts: array-like `target.shape + (n_quantiles,)`.
        quantile_levels: sequence of `n_quantiles` levels in (0, 1).

    Returns:
        float. NaN when the observed targets sum to 0 in absolute value (or none
        is observed).

    Example:

    >>> weighted_quantile_loss([1.0, 3.0], [[1.0], [1.0]], [0.5])
    0.5
    """
    levels = check_quantile_levels(quantile_levels)
    target = np.asarray(target, dtype=np.float64)
    forecasts = np.asarray(quantile_forecasts, dtype=np.float64)
    if forecasts.shape != target.shape + levels.shape:
        raise ValueError(
            "`quantile_forecasts` must have shape target.shape + (n_quantiles,) = "
            f"{target.shape + levels.shape}. Received: shape {forecasts.shape}"
        )
    observed = ~np.isnan(target)
    y = target[observed][:, None]  # (points, 1)
    error = y - forecasts[observed]  # (points, n_quantiles)
    pinball = np.maximum(levels * error, (levels - 1) * error)
    denominator = np.abs(y).sum()
    if denominator == 0:
        return float("nan")
    return float(np.mean(2 * pinball.sum(axis=0) / denominator))


def seasonal_error(history: Any, seasonality: int) -> float:
    """In-sample mean absolute error of the seasonal-naive forecast of one series.

    `mean_t |x_t − x_{t−s}|` over the pairs where both values are observed. A
    history no longer than `s` uses `s = 1` (the naive forecast) instead.

    Returns:
        float. 0 for a constant history; NaN when no pair is observed.

    Example:

    >>> seasonal_error([1.0, 2.0, 4.0, 7.0], seasonality=2)
    4.0
    >>> seasonal_error([1.0, 2.0, 4.0], seasonality=3)  # too short: naive error
    1.5
    """
    seasonality = check_seasonality(seasonality)
    history = np.asarray(history, dtype=np.float64).ravel()
    lag = seasonality if seasonality < len(history) else 1
    differences = np.abs(history[lag:] - history[:-lag])
    differences = differences[~np.isnan(differences)]
    return float(differences.mean()) if differences.size else float("nan")


def absolute_scaled_errors(
    target: Any, point_forecast: Any, history: Sequence[Any], seasonality: int
) -> np.ndarray:
    """Absolute scaled error of each series: the MASE before the mean over series.

    Args:
        target: array-like `(n_series, prediction_length)`; NaN marks missing.
        point_forecast: array-like of the same shape (the median forecast).
        history: `n_series` 1-D array-likes (any lengths): what precedes `target`.
        seasonality: int >= 1.

    Returns:
        float64 array `(n_series,)`: `mean_t |y_t − ŷ_t| / seasonal_error(history)`,
        NaN where the scale is 0 or undefined or no target is observed.
    """
    seasonality = check_seasonality(seasonality)
    target = np.atleast_2d(np.asarray(target, dtype=np.float64))
    forecast = np.atleast_2d(np.asarray(point_forecast, dtype=np.float64))
    if forecast.shape != target.shape or target.ndim != 2:
        raise ValueError(
            "`point_forecast` must have the shape of `target`, (n_series, prediction_length). "
            f"Received: target {target.shape}, point_forecast {forecast.shape}"
        )
    if len(history) != len(target):
        raise ValueError(
            f"`history` must hold one series per row of `target` ({len(target)}). "
            f"Received: {len(history)} series"
        )
    errors = np.full(len(target), np.nan)
    for i, (y, y_hat, past) in enumerate(zip(target, forecast, history, strict=True)):
        observed = ~np.isnan(y)
        scale = seasonal_error(past, seasonality)
        if observed.any() and scale > 0:  # NaN > 0 is False: undefined scale
            errors[i] = np.mean(np.abs(y[observed] - y_hat[observed])) / scale
    return errors


def mean_absolute_scaled_error(
    target: Any, point_forecast: Any, history: Sequence[Any], seasonality: int
) -> float:
    """MASE: the mean over series of `absolute_scaled_errors`, undefined series left out.

    Returns:
        float. NaN when no series has a defined scaled error.

    Example:

    >>> mean_absolute_scaled_error([[3.0, 5.0]], [[4.0, 4.0]], [[1.0, 2.0]], seasonality=1)
    1.0
    """
    errors = absolute_scaled_errors(target, point_forecast, history, seasonality)
    errors = errors[~np.isnan(errors)]
    return float(errors.mean()) if errors.size else float("nan")


def relative_score(model_score: float, baseline_score: float) -> float:
    """`model_score / baseline_score`, with `0 / 0 = 1` and `x / 0 = inf` for `x > 0`."""
    model_score, baseline_score = float(model_score), float(baseline_score)
    if baseline_score == 0:
        return 1.0 if model_score == 0 else float("inf")
    return model_score / baseline_score


def aggregate_relative_score(
    model_scores: Mapping[str, float] | Sequence[float],
    baseline_scores: Mapping[str, float] | Sequence[float],
) -> float:
    """Geometric mean over datasets of the model's score relative to a baseline's.

    Args:
        model_scores: one score per dataset (a dict keyed by dataset name, or a
            sequence).
        baseline_scores: the baseline's scores, same keys (or same order).

    Returns:
        float. `exp(mean(log(model / baseline)))` over the datasets where both
        scores are defined (not NaN); NaN when there is none.

    Example:

    >>> aggregate_relative_score({"a": 1.0, "b": 2.0}, {"a": 2.0, "b": 1.0})
    1.0
    """
    if isinstance(model_scores, Mapping) != isinstance(baseline_scores, Mapping):
        raise TypeError(
            "`model_scores` and `baseline_scores` must both be dicts or both sequences. "
            f"Received: {type(model_scores).__name__} and {type(baseline_scores).__name__}"
        )
    if isinstance(model_scores, Mapping):
        if set(model_scores) != set(baseline_scores):
            raise ValueError(
                "`model_scores` and `baseline_scores` must name the same datasets. "
                f"Received: {sorted(model_scores)} and {sorted(baseline_scores)}"
            )
        pairs = [(model_scores[name], baseline_scores[name]) for name in model_scores]
    else:
        if len(model_scores) != len(baseline_scores):
            raise ValueError(
                "`model_scores` and `baseline_scores` must have one score per dataset each. "
                f"Received: {len(model_scores)} and {len(baseline_scores)} scores"
            )
        pairs = list(zip(model_scores, baseline_scores, strict=True))
    ratios = np.array(
        [relative_score(m, b) for m, b in pairs if not (np.isnan(m) or np.isnan(b))],
        dtype=np.float64,
    )
    if ratios.size == 0:
        return float("nan")
    with np.errstate(divide="ignore"):  # a ratio of 0 gives log 0 = -inf: a score of 0
        return float(np.exp(np.mean(np.log(ratios))))
