"""Long-format DataFrames of series: checked, split by id, continued in time.

A *long* DataFrame holds one row per observation: a series id, a timestamp and
a numeric target (the layout of the reference `chronos` package's `predict_df`,
of AutoGluon and of most CSV exports). `LongFrameSeries.from_frame` checks it
and splits it into one series per id; `future_timestamps` continues each series
by the data's frequency; `forecast_frame` puts forecasts back into a long
DataFrame. `ChronosPipeline.predict_df` and `chronos-moe forecast` are built
from these three.

pandas is imported here (and only here and in `table_file`); importing
`chronos_moe.data` does not import it.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from chronos_moe.data.errors import DataError

FRAME = "<DataFrame>"  # the "path" of an in-memory frame in a DataError
PREDICTIONS = "predictions"
TARGET_NAME = "target_name"


def _check_columns(frame: Any, columns: dict[str, str | None]) -> None:
    """`frame` is a DataFrame holding every named column; the names are strings."""
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(
            f"`df` must be a pandas DataFrame in long format. Received: {type(frame).__name__}"
        )
    for argument, name in columns.items():
        if name is not None and not isinstance(name, str):
            raise ValueError(
                f"`{argument}` must be a column name (str); only univariate series are "
                f"forecast. Received: {argument}={name!r}"
            )
    names = [name for name in columns.values() if name is not None]
    missing = [name for name in names if name not in frame.columns]
    if missing:
        raise DataError(
            f"DataFrame is missing column(s) {missing}; expected a long-format frame with "
            f"columns {names}. Received columns: {list(frame.columns)}",
            path=FRAME,
            field=missing[0],
        )
    duplicated = [name for name in names if list(frame.columns).count(name) > 1]
    if duplicated:
        raise DataError(f"more than one column is named {duplicated[0]!r}", path=FRAME)


def _check_target(frame: pd.DataFrame, target: str) -> None:
    dtype = frame[target].dtype
    if not pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_complex_dtype(dtype):
        raise DataError(
            f"expected a numeric column (NaN for missing values). Received dtype {dtype}",
            path=FRAME,
            field=target,
        )


def _timestamps(column: pd.Series, name: str) -> pd.DatetimeIndex:
    """The timestamp column as a `DatetimeIndex` (strings are parsed); no missing values."""
    if pd.api.types.is_datetime64_any_dtype(column.dtype):
        timestamps = pd.DatetimeIndex(column)
    else:
        try:
            timestamps = pd.DatetimeIndex(pd.to_datetime(column))
        except (TypeError, ValueError, OverflowError) as error:
            raise DataError(
                f"expected timestamps (datetime values or date strings). Received dtype "
                f"{column.dtype} ({error})",
                path=FRAME,
                field=name,
            ) from None
    _refuse_missing(timestamps.isna(), "timestamp(s) (NaT); every row needs one", name)
    return timestamps


def _ids(column: pd.Series, name: str) -> np.ndarray:
    """Codes 0, 1, ... of the ids in order of first appearance."""
    try:
        codes, _ = pd.factorize(column)
    except TypeError as error:  # unhashable ids (lists, dicts)
        raise DataError(f"series ids must be hashable ({error})", path=FRAME, field=name) from None
    _refuse_missing(codes < 0, "series id(s) (NaN or None); every row needs an id", name)
    return codes


def _refuse_missing(missing: Any, what: str, name: str) -> None:
    """A `DataError` naming how many rows `missing` (a boolean per row) flags,
    the first of them and the column `name`."""
    rows = np.flatnonzero(np.asarray(missing))
    if rows.size:
        raise DataError(f"{rows.size} missing {what}", path=FRAME, row=int(rows[0]), field=name)


@dataclasses.dataclass(frozen=True)
class LongFrameSeries:
    """A long-format DataFrame split into one series per id.

    Build it with `LongFrameSeries.from_frame`. Series are in order of each
    id's first appearance in the frame, their values in time order.

    Attributes:
        ids: numpy array `(num_series,)`. The id of each series, as the id column
            holds it (ints stay ints, strings stay strings, tuples stay tuples).
        values: list of float64 1-D arrays, one per series (NaN is missing).
        timestamps: list of `pd.DatetimeIndex`, the timestamps of each series.
        id_column, timestamp_column, target: str. The column names read.

    Example:

    >>> import pandas as pd
    >>> frame = pd.DataFrame({
    ...     "item_id": [7, 3, 7, 3, 7],
    ...     "timestamp": ["2024-01-02", "2024-01-01", "2024-01-01", "2024-01-02", "2024-01-03"],
    ...     "target": [2.0, 10.0, 1.0, 20.0, 3.0],
    ... })
    >>> series = LongFrameSeries.from_frame(frame)
    >>> series.ids.tolist(), [v.tolist() for v in series.values]
    ([7, 3], [[1.0, 2.0, 3.0], [10.0, 20.0]])
    >>> series.future_timestamps(2).strftime("%m-%d").tolist()
    ['01-04', '01-05', '01-03', '01-04']
    """

    ids: np.ndarray
    values: list[np.ndarray]
    timestamps: list[pd.DatetimeIndex]
    id_column: str = "item_id"
    timestamp_column: str = "timestamp"
    target: str = "target"

    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        id_column: str = "item_id",
        timestamp_column: str = "timestamp",
        target: str = "target",
        validate_inputs: bool = True,
    ) -> LongFrameSeries:
        """Checks `frame` and splits it by id.

        Checks, each a `DataError` (a `ValueError`) naming the column: the three
        columns exist, the frame has rows, the target is numeric, every row has
        an id and a timestamp (datetime values, or strings that parse as dates),
        and — with `validate_inputs` — no id has two rows with the same
        timestamp. Other columns are ignored. With `validate_inputs=False` the
        rows must already be grouped by id and sorted by time (not checked; the
        reference's fast path).
        """
        _check_columns(
            frame,
            {"id_column": id_column, "timestamp_column": timestamp_column, "target": target},
        )
        if len(frame) == 0:
            raise DataError("DataFrame has zero rows; nothing to forecast", path=FRAME)
        _check_target(frame, target)
        codes = _ids(frame[id_column], id_column)
        timestamps = _timestamps(frame[timestamp_column], timestamp_column)
        if validate_inputs:
            # Rows grouped by id (first-appearance order), time-sorted within each id.
            order = np.lexsort([timestamps.asi8, codes])
            codes, timestamps = codes[order], timestamps[order]
            repeated = np.flatnonzero((np.diff(codes) == 0) & (np.diff(timestamps.asi8) == 0))
            if repeated.size:
                row = int(order[repeated[0] + 1])
                raise DataError(
                    f"{repeated.size} duplicate (id, timestamp) row(s), e.g. id "
                    f"{frame[id_column].iloc[row]!r} at {timestamps[repeated[0]]}; each "
                    "series needs one value per timestamp",
                    path=FRAME,
                    row=row,
                    field=timestamp_column,
                )
        else:
            order = np.arange(len(frame))
        ends = np.flatnonzero(np.diff(codes, append=-1))  # last row of each id's block
        starts = np.concatenate([[0], ends[:-1] + 1])
        with warnings.catch_warnings():  # nullable integers with <NA> warn on the cast
            warnings.simplefilter("ignore", RuntimeWarning)
            values = frame[target].to_numpy(dtype=np.float64, na_value=np.nan)[order]
        return cls(
            ids=frame[id_column].to_numpy()[order][starts],
            values=[values[s : e + 1] for s, e in zip(starts, ends, strict=True)],
            timestamps=[timestamps[s : e + 1] for s, e in zip(starts, ends, strict=True)],
            id_column=id_column,
            timestamp_column=timestamp_column,
            target=target,
        )

    def __len__(self) -> int:
        return len(self.values)

    def infer_frequency(self) -> str:
        """The frequency shared by the series, as the reference infers it.

        `pd.infer_freq` needs 3 timestamps, so shorter series are skipped; every
        longer series must have regular timestamps (no gaps) of one shared
        frequency. Otherwise a `ValueError` says which series and asks for an
        explicit `freq`.
        """
        found: dict[str, Hashable] = {}
        for series_id, timestamps in zip(self.ids, self.timestamps, strict=True):
            if len(timestamps) < 3:
                continue
            freq = _infer_freq(timestamps)
            if freq is None:
                raise DataError(
                    f"cannot infer the frequency of series {series_id!r}: its timestamps "
                    f"are irregular or have gaps ({_preview(timestamps)}). Fill the gaps "
                    "(NaN targets are allowed), or pass `freq`",
                    path=FRAME,
                    field=self.timestamp_column,
                )
            found.setdefault(freq, series_id)
        if len(found) > 1:
            named = ", ".join(f"{freq!r} (series {i!r})" for freq, i in found.items())
            raise DataError(
                f"the series have different frequencies: {named}; all series must share one",
                path=FRAME,
                field=self.timestamp_column,
            )
        if not found:
            raise DataError(
                "cannot infer the frequency: no series has 3 or more timestamps. Pass `freq` "
                "(such as 'h' or 'D')",
                path=FRAME,
                field=self.timestamp_column,
            )
        return next(iter(found))

    def future_timestamps(
        self, prediction_length: int, freq: str | None = None
    ) -> pd.DatetimeIndex:
        """The `prediction_length` timestamps after each series' last one.

        Args:
            prediction_length: int. Steps to continue.
            freq: str. A pandas frequency (`"h"`, `"D"`, `"W-SUN"`, `"MS"`, ...);
                `None` infers it (`infer_frequency`). Used as given, not checked
                against the data.

        Returns:
            A `pd.DatetimeIndex` of `num_series * prediction_length` timestamps,
            series after series (the time zone and resolution of the data's).
        """
        offset = _offset(self.infer_frequency() if freq is None else freq)
        like = self.timestamps[0]
        last = _datetime_index(np.array([t.asi8[-1] for t in self.timestamps]), like)
        with warnings.catch_warnings():  # offsets without a vectorised form (BusinessDay)
            warnings.simplefilter("ignore", pd.errors.PerformanceWarning)
            steps = [
                (last + step * offset).as_unit(like.unit)
                for step in range(1, prediction_length + 1)
            ]
        # (num_series, prediction_length) -> series after series
        return _datetime_index(np.stack([s.asi8 for s in steps], axis=1).reshape(-1), like)


def _datetime_index(i8: np.ndarray, like: pd.DatetimeIndex) -> pd.DatetimeIndex:
    """Integer timestamps (UTC-based, as `asi8`) in the unit and time zone of `like`."""
    index = pd.DatetimeIndex(i8.astype(f"datetime64[{like.unit}]"))
    return index if like.tz is None else index.tz_localize("UTC").tz_convert(like.tz)


def _infer_freq(timestamps: pd.DatetimeIndex) -> str | None:
    """`pd.infer_freq` as a string (pandas 3 warns that it will return an offset)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        freq = pd.infer_freq(timestamps)
    return freq if freq is None or isinstance(freq, str) else freq.freqstr


def _offset(freq: Any) -> pd.DateOffset:
    try:
        return pd.tseries.frequencies.to_offset(freq)
    except (TypeError, ValueError) as error:
        raise ValueError(
            "`freq` must be a pandas frequency string such as 'h', 'D' or 'W-SUN'. "
            f"Received: freq={freq!r} ({error})"
        ) from None


def _preview(timestamps: pd.DatetimeIndex, count: int = 4) -> str:
    shown = ", ".join(str(t) for t in timestamps[:count])
    return shown + (", ..." if len(timestamps) > count else "")


def forecast_frame(
    series: LongFrameSeries,
    future_timestamps: pd.DatetimeIndex,
    quantile_levels: Sequence[float],
    quantiles: np.ndarray,
    mean: np.ndarray,
) -> pd.DataFrame:
    """Forecasts as a long DataFrame, in the reference `predict_df`'s layout.

    Columns: the id column, the timestamp column (the future timestamps),
    `target_name` (the target column's name), `predictions` (the mean
    forecast) and one float32 column per quantile level, named `str(level)`
    (`"0.1"`, `"0.5"`, ...). Rows: `prediction_length` per series, series in the
    order of `series.ids`.

    Args:
        series: the `LongFrameSeries` forecast.
        future_timestamps: `series.future_timestamps(prediction_length)`.
        quantile_levels: the levels, as given (their `str` names the columns).
        quantiles: float32 `(num_series, prediction_length, num_levels)`.
        mean: float32 `(num_series, prediction_length)`.

    Example:

    >>> import numpy as np, pandas as pd
    >>> frame = pd.DataFrame({"item_id": ["a"] * 3, "timestamp": pd.date_range(
    ...     "2024-01-01", periods=3, freq="D"), "target": [1.0, 2.0, 3.0]})
    >>> series = LongFrameSeries.from_frame(frame)
    >>> quantiles, mean = np.ones((1, 2, 1), "float32"), np.ones((1, 2), "float32")
    >>> result = forecast_frame(series, series.future_timestamps(2), [0.5], quantiles, mean)
    >>> list(result.columns)
    ['item_id', 'timestamp', 'target_name', 'predictions', '0.5']
    """
    horizon = mean.shape[1]
    result = pd.DataFrame(
        {
            series.id_column: np.repeat(series.ids, horizon),
            series.timestamp_column: future_timestamps,
        }
    )
    result[TARGET_NAME] = series.target
    result[PREDICTIONS] = mean.reshape(-1).astype(np.float32)
    flat = quantiles.reshape(len(result), len(quantile_levels)).astype(np.float32)
    for index, level in enumerate(quantile_levels):
        result[str(level)] = flat[:, index]
    return result
