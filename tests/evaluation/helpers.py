"""Shared pieces of the evaluation tests: the tiny model's settings and a small
set of series."""

import numpy as np

TINY_CHRONOS = {"n_tokens": 64, "context_length": 32, "prediction_length": 4}
PREDICTION_LENGTH = 4


def make_series(num_series: int = 6, seed: int = 0) -> list[np.ndarray]:
    """Seasonal series with trends, noise and a few missing values; all longer than
    the context (40 to 60 points), so that every forecast call has one shape."""
    rng = np.random.default_rng(seed)
    series = []
    for i in range(num_series):
        steps = np.arange(rng.integers(40, 61), dtype=np.float64)
        values = 10 + 0.1 * i * steps + 3 * np.sin(2 * np.pi * steps / (4 + i))
        values += rng.normal(scale=0.5, size=len(steps))
        values[rng.integers(0, len(steps) - 8)] = np.nan
        series.append(values)
    return series
