"""Series files as long-format DataFrames: CSV, Parquet or Arrow in, CSV or Parquet out.

What `chronos-moe forecast` reads and writes. A file holds either the *long*
layout (one row per observation: id, timestamp, target columns) or the *wide*
GluonTS/Chronos layout (one row per series: a `target` list and either a
`start` timestamp — the frequency then comes from the file's `freq` metadata or
the caller — or a `timestamp` list, as the Chronos datasets on the Hugging Face
hub store it). Both come back as the same long DataFrame.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from chronos_moe.atomic import write_atomically
from chronos_moe.data.errors import DataError

READ_SUFFIXES = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".arrow": "arrow",
    ".feather": "arrow",
    ".ipc": "arrow",
}
WRITE_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def table_format(path: str | os.PathLike, formats: dict[str, str] = READ_SUFFIXES) -> str:
    """The format of `path` by its suffix, or a `ValueError` listing the suffixes known."""
    suffix = Path(path).suffix.lower()
    if suffix not in formats:
        raise ValueError(
            f"{os.fspath(path)}: expected a file ending in {', '.join(sorted(formats))}. "
            f"Received suffix {suffix or '(none)'!r}"
        )
    return formats[suffix]


def read_long_frame(
    path: str | os.PathLike,
    id_column: str = "item_id",
    timestamp_column: str = "timestamp",
    target: str = "target",
    freq: str | None = None,
) -> pd.DataFrame:
    """Reads a CSV, Parquet or Arrow file of series as a long-format DataFrame.

    A file whose `target` column holds lists is read as the wide layout and
    expanded: one row per value, ids from `id_column` (else the row number),
    timestamps from a `timestamp_column` of lists, else from `start` and the
    frequency (`freq`, else the file's `freq` metadata as `write_arrow`
    stores it). Other files are read as they are. Problems are `DataError`s
    naming the file.

    Args:
        path: the file; its suffix names the format (`.csv`, `.parquet`,
            `.pq`, `.arrow`, `.feather`, `.ipc`).
        id_column, timestamp_column, target: str. The column names. Default to
            `"item_id"`, `"timestamp"` and `"target"`.
        freq: str. The frequency of a wide file with `start` timestamps.
            Defaults to `None` (the file's metadata).

    Returns:
        A pandas DataFrame.

    Example:

    >>> import os, tempfile
    >>> import numpy as np
    >>> from chronos_moe.data.arrow import write_arrow
    >>> path = write_arrow([np.arange(3.0), np.ones(2)],
    ...     os.path.join(tempfile.mkdtemp(), "d.arrow"), start="2024-01-01", freq="D")
    >>> frame = read_long_frame(path)
    >>> frame["item_id"].tolist(), frame["timestamp"].dt.day.tolist(), frame["target"].tolist()
    ([0, 0, 0, 1, 1], [1, 2, 3, 1, 2], [0.0, 1.0, 2.0, 1.0, 1.0])
    """
    name = os.fspath(path)
    kind = table_format(path)
    try:
        if kind == "csv":
            return pd.read_csv(path)
        table = _read_parquet(path) if kind == "parquet" else _read_arrow(path)
    except DataError:
        raise
    except (OSError, ValueError, UnicodeDecodeError, pa.ArrowException) as error:
        raise DataError(f"cannot read it as {kind.upper()} ({error})", path=name) from None
    if target in table.column_names and _is_list(table.schema.field(target).type):
        return _expand_wide(table, name, id_column, timestamp_column, target, freq)
    return table.to_pandas()


def _read_parquet(path) -> pa.Table:
    import pyarrow.parquet as pq

    return pq.read_table(path)


def _read_arrow(path) -> pa.Table:
    with pa.memory_map(os.fspath(path), "r") as source:
        try:
            return pa.ipc.open_file(source).read_all()
        except pa.ArrowInvalid:
            source.seek(0)
            return pa.ipc.open_stream(source).read_all()


def _is_list(data_type: pa.DataType) -> bool:
    return (
        pa.types.is_list(data_type)
        or pa.types.is_large_list(data_type)
        or pa.types.is_fixed_size_list(data_type)
    )


def _expand_wide(
    table: pa.Table, name: str, id_column: str, timestamp_column: str, target: str, freq
) -> pd.DataFrame:
    """One row per series (lists of values) -> one row per value."""
    target_type = table.schema.field(target).type
    if not (
        pa.types.is_integer(target_type.value_type) or pa.types.is_floating(target_type.value_type)
    ):
        raise DataError(
            "expected a list of numbers per series (one univariate series per row). "
            f"Received type {target_type}",
            path=name,
            field=target,
        )
    column = table.column(target).combine_chunks()
    lengths = np.asarray(column.value_lengths().fill_null(0), dtype=np.int64)
    values = column.flatten().to_numpy(zero_copy_only=False).astype(np.float64)
    ids = (
        table.column(id_column).to_pandas().to_numpy()
        if id_column in table.column_names
        else np.arange(table.num_rows)
    )
    timestamps = _wide_timestamps(table, name, timestamp_column, lengths, freq)
    return pd.DataFrame(
        {
            id_column: np.repeat(ids, lengths),
            timestamp_column: timestamps,
            target: values,
        }
    )


def _wide_timestamps(
    table: pa.Table, name: str, timestamp_column: str, lengths: np.ndarray, freq
) -> pd.DatetimeIndex:
    """The timestamps of every value of a wide table: its column of timestamp
    lists, or its `start` column continued by `freq` (or the file's `freq`
    metadata); `lengths` are the series' lengths."""
    if timestamp_column in table.column_names and _is_list(
        table.schema.field(timestamp_column).type
    ):
        stamps = table.column(timestamp_column).combine_chunks()
        mismatched = np.flatnonzero(np.asarray(stamps.value_lengths().fill_null(0)) != lengths)
        if mismatched.size:
            raise DataError(
                f"holds {int(np.asarray(stamps.value_lengths())[mismatched[0]])} timestamps "
                f"for {int(lengths[mismatched[0]])} target values",
                path=name,
                row=int(mismatched[0]),
                field=timestamp_column,
            )
        return pd.DatetimeIndex(stamps.flatten().to_pandas())
    elif "start" in table.column_names:
        metadata = table.schema.metadata or {}
        freq = freq or (metadata.get(b"freq") or b"").decode() or None
        if freq is None:
            raise DataError(
                "has `start` timestamps but records no frequency (`freq` metadata): pass "
                "the frequency (`--freq`, such as 'h' or 'D')",
                path=name,
            )
        starts = pd.DatetimeIndex(table.column("start").to_pandas())
        try:
            return pd.DatetimeIndex(
                np.concatenate(
                    [
                        pd.date_range(start, periods=n, freq=freq).to_numpy()
                        for start, n in zip(starts, lengths, strict=True)
                    ]
                )
            )
        except ValueError as error:
            raise DataError(
                f"cannot continue `start` by freq={freq!r} ({error})", path=name
            ) from None
    raise DataError(
        f"the wide layout (a list of values per row) needs a `start` column or a "
        f"`{timestamp_column}` column of lists. Received columns: {table.column_names}",
        path=name,
    )


def write_frame(frame: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Writes `frame` as CSV or Parquet (by the suffix), atomically: a reader never
    sees a half-written file, and an existing file survives a failed write.

    Example:

    >>> import os, tempfile
    >>> import pandas as pd
    >>> path = write_frame(pd.DataFrame({"a": [1, 2]}), os.path.join(tempfile.mkdtemp(), "a.csv"))
    >>> open(path).read().split()
    ['a', '1', '2']
    """
    kind = table_format(path, WRITE_SUFFIXES)

    def write(temporary: str) -> None:
        if kind == "csv":
            frame.to_csv(temporary, index=False)
        else:
            frame.to_parquet(temporary, index=False)

    try:
        write_atomically(path, write)
    except (pa.ArrowException, TypeError) as error:  # ids Parquet cannot store (mixed types)
        raise ValueError(f"{os.fspath(path)}: cannot write the forecasts ({error})") from None
    return Path(path)
