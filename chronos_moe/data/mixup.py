"""TSMixup (Chronos paper, Ansari et al. 2024): convex mixes of mean-scaled series."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from chronos_moe.validation import positive_int


def tsmixup(
    series_list: Sequence[Any],
    num_series: int,
    max_components: int = 3,
    alpha: float = 1.5,
    min_length: int = 128,
    max_length: int = 2048,
    seed: int = 0,
) -> list[np.ndarray]:
    """Augments a dataset with convex combinations of its series (TSMixup).

    For each new series (Algorithm 1 of the Chronos paper): draw `k` uniformly in
    `[1, max_components]` and a length `l` uniformly in `[min_length, max_length]`;
    draw `k` series (with replacement) and from each a random window of length `l`
    — or of the shortest drawn series' length when one is shorter than `l`;
    divide each window by its mean absolute value (NaN ignored; 1 if that is not
    positive); mix them with weights drawn from `Dirichlet(alpha, …, alpha)`. NaN in
    a component stays NaN in the mix. The paper's defaults are `max_components=3`,
    `alpha=1.5`, lengths 128 to 2048.

    Args:
        series_list: list of 1-D array-likes of numbers, the series to mix.
        num_series: int. Number of mixes to make.
        max_components: int. Largest number of series in one mix. Defaults to `3`.
        alpha: float. Dirichlet concentration of the mixing weights. Defaults to `1.5`.
        min_length: int. Shortest mix length. Defaults to `128`.
        max_length: int. Longest mix length. Defaults to `2048`.
        seed: int. Seed of the generator. Defaults to `0`.

    Returns:
        A list of `num_series` float32 1-D arrays.

    Example:

    >>> import numpy as np
    >>> base = [np.arange(1.0, 301.0), 5.0 + np.sin(np.arange(400.0))]
    >>> mixes = tsmixup(base, 4, min_length=50, max_length=100, seed=0)
    >>> len(mixes), all(50 <= len(m) <= 100 for m in mixes)
    (4, True)
    >>> bool(np.array_equal(mixes[2], tsmixup(base, 4, min_length=50, max_length=100)[2]))
    True
    """
    if isinstance(series_list, np.ndarray) and series_list.ndim == 2:
        series_list = list(series_list)
    arrays = []
    for index, series in enumerate(series_list):
        array = np.asarray(series, dtype=np.float64)
        if array.ndim != 1 or array.size == 0:
            raise ValueError(
                "`series_list` must hold non-empty 1-D series. "
                f"Received: series_list[{index}] with shape {array.shape}"
            )
        arrays.append(array)
    if not arrays:
        raise ValueError("`series_list` must hold at least one series. Received: []")
    for name, value in (("num_series", num_series), ("max_components", max_components)):
        positive_int(name, value)
    if not (isinstance(min_length, (int, np.integer)) and 1 <= min_length <= max_length):
        raise ValueError(
            "`min_length` and `max_length` must satisfy 1 <= min_length <= max_length. "
            f"Received: min_length={min_length!r}, max_length={max_length!r}"
        )
    if not alpha > 0:
        raise ValueError(f"`alpha` must be > 0. Received: alpha={alpha!r}")
    rng = np.random.default_rng(seed)
    mixes = []
    for _ in range(num_series):
        count = int(rng.integers(1, max_components + 1))
        length = int(rng.integers(min_length, max_length + 1))
        picks = rng.integers(len(arrays), size=count)
        length = min(length, *(len(arrays[p]) for p in picks))
        weights = rng.dirichlet(np.full(count, float(alpha)))
        mix = np.zeros(length)
        for weight, pick in zip(weights, picks, strict=True):
            start = int(rng.integers(0, len(arrays[pick]) - length + 1))
            window = arrays[pick][start : start + length]
            with np.errstate(invalid="ignore"):
                scale = np.nanmean(np.abs(window)) if not np.isnan(window).all() else np.nan
            mix += weight * window / (scale if scale > 0 else 1.0)
        mixes.append(mix.astype(np.float32))
    return mixes
