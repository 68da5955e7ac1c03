"""Descriptive features of a series (scale, trend, seasonality, noise), as the
expert analysis (`routing.py`) reports them per series and per expert."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

FEATURES = ("scale", "seasonality_strength", "trend_strength", "noise_level")


def series_features(values: Any) -> dict[str, float]:
    """Descriptive features of one series (the context a router reads).

    - `scale`: mean `|x|` over the observed values (the tokenizer's scale).
    - `trend_strength`: the R² of a straight line fitted to the series, in [0, 1].
    - `seasonality_strength`: the highest peak of the autocorrelation of the
      detrended series over lags 2 … n/2, clipped at 0: near 1 for a clean
      periodic series, near 0 for noise or a pure trend.
    - `noise_level`: `std(Δx) / (√2 · std(x))`, clipped to 1: 0 for a smooth
      series, about 1 for white noise.

    Missing values inside the series are interpolated linearly, leading and
    trailing ones dropped. With no observed value every feature is NaN; with
    fewer than 4, all but `scale`; a constant series has 0 trend, seasonality
    and noise.

    Returns:
        dict `feature -> float` with the keys of `FEATURES`.

    Example:

    >>> import numpy as np
    >>> features = series_features(np.sin(2 * np.pi * np.arange(48) / 12))
    >>> round(features["seasonality_strength"], 2), round(features["trend_strength"], 2)
    (0.73, 0.04)
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    features = dict.fromkeys(FEATURES, math.nan)
    observed = np.flatnonzero(~np.isnan(values))
    if observed.size == 0:
        return features
    features["scale"] = float(np.mean(np.abs(values[observed])))
    if observed.size < 4:
        return features
    x = values[observed[0] : observed[-1] + 1]
    steps = np.arange(len(x), dtype=np.float64)
    known = ~np.isnan(x)
    x = np.interp(steps, steps[known], x[known])
    variance = x.var()
    if variance == 0:
        features.update(trend_strength=0.0, seasonality_strength=0.0, noise_level=0.0)
        return features
    slope, intercept = np.polyfit(steps, x, 1)
    residual = x - (intercept + slope * steps)
    features["trend_strength"] = float(max(0.0, 1.0 - residual.var() / variance))
    features["seasonality_strength"] = 0.0
    if residual.var() > 1e-12 * variance:  # a straight line leaves only rounding errors
        acf = np.correlate(residual, residual, "full")[len(x) - 1 :] / (residual @ residual)
        acf = acf[: len(x) // 2 + 1]  # lags 0 … n/2
        lags = np.arange(2, len(acf) - 1)
        peaks = lags[(acf[lags] > acf[lags - 1]) & (acf[lags] >= acf[lags + 1])]
        if peaks.size:
            features["seasonality_strength"] = float(max(0.0, acf[peaks].max()))
    noise = np.std(np.diff(x)) / (math.sqrt(2) * math.sqrt(variance))
    features["noise_level"] = float(min(1.0, noise))
    return features


def feature_table(series: list) -> dict[str, np.ndarray]:
    """`series_features` of every series: `feature -> float array (n_series,)`."""
    features = {name: np.empty(len(series)) for name in FEATURES}
    for i, values in enumerate(series):
        for name, value in series_features(values).items():
            features[name][i] = value
    return features


def feature_mean(name: str, values: np.ndarray, weights: np.ndarray | None = None) -> float:
    """The (weighted) mean of a feature over the series where it is defined; for
    `scale`, the geometric mean over positive scales."""
    weights = np.ones_like(values) if weights is None else weights
    keep = ~np.isnan(values) & (weights > 0)
    if name == "scale":
        keep &= values > 0
    if not keep.any():
        return math.nan
    values, weights = values[keep], weights[keep]
    if name == "scale":
        return float(np.exp(np.average(np.log(values), weights=weights)))
    return float(np.average(values, weights=weights))
