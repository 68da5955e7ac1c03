"""The datasets an evaluation reads: in-memory series or Arrow files, each with a
name and, where the file records one, a frequency (which sets the default
seasonality)."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from chronos_moe.data.arrow import ArrowSeriesFile

logger = logging.getLogger(__name__)

# GluonTS' `get_seasonality` table (`gluonts.time_feature.seasonality`), which the
# Chronos benchmark uses: the number of steps in one natural cycle of the base unit.
_BASE_SEASONALITY = {"S": 3600, "T": 1440, "H": 24, "D": 1, "W": 1, "M": 12, "B": 5, "Q": 4, "Y": 1}
# pandas offset aliases, old and new spellings, mapped onto the table's keys.
_ALIASES = {
    "S": "S",
    "SEC": "S",
    "T": "T",
    "MIN": "T",
    "H": "H",
    "BH": "H",
    "D": "D",
    "B": "B",
    "C": "B",
    "W": "W",
    "M": "M",
    "ME": "M",
    "MS": "M",
    "BM": "M",
    "BME": "M",
    "BMS": "M",
    "SM": "M",
    "SME": "M",
    "SMS": "M",
    "Q": "Q",
    "QE": "Q",
    "QS": "Q",
    "BQ": "Q",
    "BQE": "Q",
    "BQS": "Q",
    "A": "Y",
    "AS": "Y",
    "Y": "Y",
    "YE": "Y",
    "YS": "Y",
    "BA": "Y",
    "BY": "Y",
    "BYE": "Y",
    "BYS": "Y",
}


def seasonality_from_freq(freq: str | None) -> int:
    """The seasonality of a pandas frequency string, as GluonTS' `get_seasonality`.

    The base unit's cycle (`"h"` → 24, `"D"` → 1, `"W"` → 1, `"M"` → 12, `"Q"` → 4,
    `"B"` → 5, `"min"` → 1440, `"s"` → 3600, yearly → 1), divided by the
    multiple when it divides it (`"15min"` → 96, `"7h"` → 1). Anchors (`"W-SUN"`,
    `"QS-DEC"`) are ignored; unknown or missing frequencies give 1.

    Example:

    >>> seasonality_from_freq("h"), seasonality_from_freq("15min"), seasonality_from_freq("W-SUN")
    (24, 96, 1)
    """
    if not freq:
        return 1
    match = re.fullmatch(r"\s*(\d*)\s*([A-Za-z]+)(?:-\w+)?\s*", str(freq))
    base = _ALIASES.get(match.group(2).upper()) if match else None
    if base is None:
        logger.warning("Unknown frequency %r: using seasonality 1.", freq)
        return 1
    multiple = int(match.group(1) or 1)
    seasonality = _BASE_SEASONALITY[base]
    return seasonality // multiple if multiple and seasonality % multiple == 0 else 1


@dataclasses.dataclass
class EvaluationDataset:
    """One dataset to evaluate: named univariate series and their frequency.

    Attributes:
        name: str. The file's stem, the mapping's key, or `"data"`.
        series: list of float 1-D numpy arrays; NaN marks missing values.
        freq: str or `None`. The frequency recorded with the data, if any.
    """

    name: str
    series: list[np.ndarray]
    freq: str | None = None


def as_datasets(data: Any) -> list[EvaluationDataset]:
    """Resolves the forms of evaluation data into a list of datasets.

    Accepted: an Arrow file path (str or path-like) or a list of them (one
    dataset per file); a dict `name -> series` (one dataset per entry); or the
    series of one dataset (a list of 1-D array-likes, a 2-D array whose rows are
    series, or one 1-D array).
    """
    if isinstance(data, (str, os.PathLike)):
        return [_read_file(data)]
    if isinstance(data, Mapping):
        if not data:
            raise ValueError("`data` must hold at least one dataset. Received: an empty dict")
        return [EvaluationDataset(str(name), _as_series(v, name)) for name, v in data.items()]
    if (
        isinstance(data, (list, tuple))
        and data
        and all(isinstance(item, (str, os.PathLike)) for item in data)
    ):
        datasets = [_read_file(path) for path in data]
        names = [d.name for d in datasets]
        for dataset, path in zip(datasets, data, strict=True):
            if names.count(dataset.name) > 1:  # two files with one stem: name them by path
                dataset.name = os.fspath(path)
        return datasets
    return [EvaluationDataset("data", _as_series(data, "data"))]


def _as_series(data: Any, name: str) -> list[np.ndarray]:
    if isinstance(data, np.ndarray) and data.ndim in (1, 2):
        series = [data] if data.ndim == 1 else list(data)
    elif isinstance(data, (list, tuple)) and data:
        if all(np.isscalar(x) for x in data):
            series = [np.asarray(data)]
        else:
            series = list(data)
    else:
        raise ValueError(
            "Each dataset must be an Arrow file path, a list of 1-D series or a 2-D array. "
            f"Received for {name!r}: {type(data).__name__}"
        )
    arrays = []
    for index, values in enumerate(series):
        array = np.asarray(values, dtype=np.float64)
        if array.ndim != 1 or array.size == 0:
            raise ValueError(
                f"Each series must be a non-empty 1-D array. Received: series {index} of "
                f"{name!r} with shape {array.shape}"
            )
        arrays.append(np.where(np.isinf(array), np.nan, array))
    return arrays


def _read_file(path: str | os.PathLike) -> EvaluationDataset:
    """Reads every series of an Arrow file, and the `freq` its schema metadata records."""
    with ArrowSeriesFile(path) as file:
        freq = (file.schema.metadata or {}).get(b"freq")
        series = [values.astype(np.float64) for values in file]
    return EvaluationDataset(Path(path).stem, series, freq.decode() if freq else None)
