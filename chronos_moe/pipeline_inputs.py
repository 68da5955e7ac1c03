"""The checks and clean-up of what `ChronosPipeline` receives: seeds, numbers,
quantile levels and the context series."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from chronos_moe.tokenizer import prepare_context

# The pipeline's logger: these warnings are about `ChronosPipeline`'s inputs.
logger = logging.getLogger("chronos_moe.pipeline")


def checked_seed(value: Any) -> int | None:
    """`value` as an int, or None; a `TypeError` for anything else."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))):
        raise TypeError(f"`seed` must be an integer or None. Received: seed={value!r}")
    return None if value is None else int(value)


def checked_number(name: str, value: Any) -> float:
    """`value` as a float; a `TypeError` naming `name` for a non-number."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"`{name}` must be a number. Received: {name}={value!r}")
    return float(value)


def checked_quantile_levels(levels: Any) -> np.ndarray:
    """`levels` as a float64 array, checked: a non-empty 1-D sequence of numbers in (0, 1)."""
    expected = "a list of numbers in (0, 1), such as [0.1, 0.5, 0.9]"
    if isinstance(levels, (str, bytes)) or np.ndim(levels) != 1:
        raise TypeError(
            f"`quantile_levels` must be {expected}. Received: quantile_levels={levels!r}"
        )
    array = np.asarray(levels)
    numeric = array.dtype.kind in "iuf" or (
        array.dtype.kind == "O"
        and all(
            isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)
            for x in array
        )
    )
    if not numeric:
        raise TypeError(
            f"`quantile_levels` must be {expected}. Received: quantile_levels={levels!r}"
        )
    array = array.astype(np.float64)
    if array.size == 0 or not np.all((array > 0) & (array < 1)):
        raise ValueError(
            f"`quantile_levels` must be {expected}. Received: quantile_levels={array.tolist()!r}"
        )
    return array


def checked_context(inputs: Any) -> np.ndarray:
    """`prepare_context(inputs)` with infinite values made missing (NaN), as the
    Arrow reader does. (The reference pipeline keeps them: the series' scale
    becomes inf and its whole forecast ±inf or NaN.)"""
    context = prepare_context(inputs)
    infinite = np.isinf(context)
    if infinite.any():
        logger.warning(
            "The context holds %d infinite value(s) (in %d of %d series); they are treated "
            "as missing values (NaN).",
            int(infinite.sum()),
            int(infinite.any(axis=1).sum()),
            len(context),
        )
        context = np.where(infinite, np.float32(np.nan), context)
    return context
