"""Series sources: what the window samplers read, the in-memory source, and
`make_sources`, which turns the data forms `ChronosDataset` accepts into sources.

A *source* is one dataset of univariate series (one Arrow file, one list of
arrays, one DataFrame). Multivariate entries are split into one series per
dimension, as the reference training script does. Every source applies the same
value policy: values are float32, NaN (and an Arrow null) is *missing*, and ±inf
is treated as missing too (set to NaN and counted), so that no infinity ever
reaches the tokenizer. Finite float64 values beyond the float32 range become
±inf when cast, and therefore missing as well.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from chronos_moe.data.arrow import ArrowSeriesFile
from chronos_moe.data.errors import DataError


@runtime_checkable
class SeriesSource(Protocol):
    """The interface the window samplers read (`ArrowSeriesFile`, `InMemorySeries`).

    Attributes:
        name: str. The file path, or a name for in-memory data; used in errors and
            reports.
        num_rows: int. Entries in the source (rows of a file; a multivariate row
            holds several series).
        num_series: int. Univariate series after splitting multivariate rows.
        lengths: int64 array `(num_series,)`, the length of each series.
        missing_counts: int64 array `(num_series,)`, missing values (NaN, null or
            ±inf) in each series.
        inf_count: int. ±inf values in the whole source (all counted as missing).
    """

    name: str
    num_rows: int
    num_series: int
    lengths: np.ndarray
    missing_counts: np.ndarray
    inf_count: int

    def read(self, index: int, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Values `[start, stop)` of series `index`: a new float32 array, ±inf as NaN."""
        ...


class InMemorySeries:
    """A source of series held in memory: a list of arrays, or a 2-D array.

    Each element is one series (1-D), or a multivariate entry `(dims, time)` that
    is split into `dims` series. Values are copied to float32; ±inf becomes NaN
    and is counted in `inf_count`.

    Args:
        series: a list of 1-D (or 2-D multivariate) array-likes of numbers, or a
            2-D array whose rows are the series.
        name: str. The name used in errors and data reports. Defaults to
            `"<memory>"`.

    Example:

    >>> import numpy as np
    >>> source = InMemorySeries([np.arange(5.0), [1.0, np.inf, np.nan]])
    >>> source.num_series, source.lengths.tolist(), source.missing_counts.tolist()
    (2, [5, 3], [0, 2])
    >>> source.inf_count, source.read(1).tolist()
    (1, [1.0, nan, nan])
    >>> source.read(0, 1, 3).tolist()
    [1.0, 2.0]
    """

    def __init__(self, series: Any, name: str = "<memory>") -> None:
        self.name = name
        if isinstance(series, np.ndarray) and series.ndim == 2:
            series = list(series)
        if isinstance(series, (str, bytes)) or not isinstance(series, Sequence):
            raise DataError(
                "in-memory data must be a list of 1-D arrays (or a 2-D array of series). "
                f"Received: {type(series).__name__}",
                path=name,
            )
        self._series: list[np.ndarray] = []
        self.inf_count = 0
        for row, element in enumerate(series):
            values = _as_float32(element, name=name, row=row)
            if values.ndim == 1:
                values = values[None]
            elif values.ndim != 2:
                raise DataError(
                    "each series must be 1-D (or 2-D (dims, time) for a multivariate "
                    f"entry). Received shape {values.shape}",
                    path=name,
                    row=row,
                    field="target",
                )
            for dimension in values:
                infinite = np.isinf(dimension)
                count = int(infinite.sum())
                if count:
                    dimension = np.where(infinite, np.float32(np.nan), dimension)
                    self.inf_count += count
                self._series.append(np.ascontiguousarray(dimension))
        self.num_rows = len(series)
        if not self._series:
            raise DataError("holds no series (zero rows)", path=name)
        self.num_series = len(self._series)
        self.lengths = np.array([len(s) for s in self._series], dtype=np.int64)
        self.missing_counts = np.array(
            [np.count_nonzero(np.isnan(s)) for s in self._series], dtype=np.int64
        )

    def read(self, index: int, start: int = 0, stop: int | None = None) -> np.ndarray:
        return self._series[index][start:stop].copy()

    def __repr__(self) -> str:
        return f"InMemorySeries(name={self.name!r}, num_series={self.num_series})"


class IdentifiedSeries(list):
    """A list of series that keeps each one's id: `ids[i]` names `self[i]`.

    What `series_from_dataframe` returns; everything that takes a list of
    series takes it.

    Args:
        series: the series (1-D arrays).
        ids: one id per series, in the same order.

    Example:

    >>> import numpy as np
    >>> series = IdentifiedSeries([np.ones(3), np.zeros(2)], ids=["a", "b"])
    >>> len(series), series.ids, dict(zip(series.ids, map(len, series)))
    (2, ['a', 'b'], {'a': 3, 'b': 2})
    """

    def __init__(self, series: Sequence[np.ndarray], ids: Sequence[Any]) -> None:
        super().__init__(series)
        self.ids = list(ids)
        if len(self.ids) != len(self):
            raise ValueError(
                f"`ids` must hold one id per series. Received: {len(self.ids)} ids for "
                f"{len(self)} series"
            )


def series_from_dataframe(
    frame: Any,
    id_column: str = "id",
    timestamp_column: str | None = "timestamp",
    target_column: str = "target",
) -> IdentifiedSeries:
    """Splits a long-format DataFrame into one float32 series per id.

    Rows are grouped by `id_column` (series in order of first appearance) and
    sorted by `timestamp_column` within each id (stable sort; gaps in time are
    not filled). Every row needs an id: a missing one (NaN, None) is a
    `DataError`. pandas is needed only to build the DataFrame: this function
    reads it through the DataFrame API.

    Args:
        frame: a pandas DataFrame with one row per (id, timestamp) observation.
        id_column: str. The series id column. Defaults to `"id"`.
        timestamp_column: str or `None`. The time column; `None` keeps the row
            order. Defaults to `"timestamp"`.
        target_column: str. The numeric value column. Defaults to `"target"`.

    Returns:
        An `IdentifiedSeries`: a list of float32 1-D arrays, one per id, whose
        `ids` attribute holds the ids (as the id column holds them).

    Example:

    >>> import pandas as pd
    >>> frame = pd.DataFrame({
    ...     "id": ["b", "a", "b", "a"],
    ...     "timestamp": pd.to_datetime(["2024-01-02", "2024-01-01", "2024-01-01", "2024-01-02"]),
    ...     "target": [2.0, 10.0, 1.0, 20.0],
    ... })
    >>> series = series_from_dataframe(frame)
    >>> series.ids, [s.tolist() for s in series]
    (['b', 'a'], [[1.0, 2.0], [10.0, 20.0]])
    """
    columns = [id_column, target_column] + ([timestamp_column] if timestamp_column else [])
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(
            f"DataFrame is missing column(s) {missing}; expected long format with columns "
            f"{columns}. Received columns: {list(frame.columns)}",
            path="<DataFrame>",
            field=missing[0],
        )
    if frame.shape[0] == 0:
        raise DataError("DataFrame has zero rows", path="<DataFrame>")
    target = frame[target_column]
    if target.dtype.kind not in "biuf":
        raise DataError(
            f"expected a numeric column. Received dtype {target.dtype}",
            path="<DataFrame>",
            field=target_column,
        )
    missing_ids = frame[id_column].isna().to_numpy()
    if missing_ids.any():
        raise DataError(
            f"{int(missing_ids.sum())} missing series id(s) (NaN or None); every row needs an id",
            path="<DataFrame>",
            row=int(np.flatnonzero(missing_ids)[0]),
            field=id_column,
        )
    series, ids = [], []
    for key, group in frame.groupby(id_column, sort=False):
        if timestamp_column:
            group = group.sort_values(timestamp_column, kind="stable")
        ids.append(key)
        series.append(group[target_column].to_numpy(dtype=np.float64).astype(np.float32))
    return IdentifiedSeries(series, ids)


def is_dataframe(value: Any) -> bool:
    """Whether `value` is a pandas DataFrame (without importing pandas)."""
    return type(value).__name__ == "DataFrame" and hasattr(value, "groupby")


def _as_float32(element: Any, name: str, row: int) -> np.ndarray:
    """A float32 copy of one series; out-of-range float64 values overflow to ±inf."""
    try:
        values = np.asarray(element)
    except (TypeError, ValueError) as error:  # ragged nested lists
        raise DataError(
            f"not an array of numbers ({error})", path=name, row=row, field="target"
        ) from None
    if values.dtype.kind not in "biuf":
        raise DataError(
            f"expected numbers. Received dtype {values.dtype}",
            path=name,
            row=row,
            field="target",
        )
    with np.errstate(over="ignore"):
        return values.astype(np.float32)


def make_sources(
    paths_or_data: Any,
    id_column: str = "id",
    timestamp_column: str | None = "timestamp",
    target_column: str = "target",
) -> list[SeriesSource]:
    """Turns the data forms `ChronosDataset` accepts into a list of `SeriesSource`.

    Example:

    >>> import numpy as np
    >>> [type(s).__name__ for s in make_sources([np.ones(5), np.ones(7)])]
    ['InMemorySeries']
    """

    def one(item: Any, position: int | None) -> SeriesSource:
        if isinstance(item, (str, os.PathLike)):
            return ArrowSeriesFile(item)
        if is_dataframe(item):
            series = series_from_dataframe(item, id_column, timestamp_column, target_column)
            name = "<DataFrame>" if position is None else f"<DataFrame {position}>"
            return InMemorySeries(series, name=name)
        if isinstance(item, SeriesSource):
            return item
        raise TypeError(
            "Each data source must be a path to an Arrow file, a DataFrame or a SeriesSource. "
            f"Received: {type(item).__name__}"
        )

    if isinstance(paths_or_data, np.ndarray):
        data = paths_or_data[None] if paths_or_data.ndim == 1 else paths_or_data
        return [InMemorySeries(data)]
    if isinstance(paths_or_data, (list, tuple)):
        if len(paths_or_data) == 0:
            raise ValueError("`paths_or_data` must not be empty. Received: []")
        containers = (str, os.PathLike, SeriesSource)
        if all(isinstance(x, containers) or is_dataframe(x) for x in paths_or_data):
            return [one(item, position) for position, item in enumerate(paths_or_data)]
        if any(isinstance(x, containers) or is_dataframe(x) for x in paths_or_data):
            raise TypeError(
                "`paths_or_data` mixes data sources (paths, DataFrames) with arrays: pass a "
                "list of sources, or a list of arrays (one in-memory dataset)."
            )
        return [InMemorySeries(list(paths_or_data))]
    return [one(paths_or_data, None)]
