"""`write_arrow`: series to an Arrow IPC file in the GluonTS/Chronos layout, atomically
(read back by `chronos_moe.data.arrow.ArrowSeriesFile`)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from chronos_moe.atomic import write_atomically
from chronos_moe.data.arrow import START, TARGET, ArrowSeriesFile  # noqa: F401 (doctest)

# Values per record batch (about 4 MB of float32).
_BATCH_VALUES = 1 << 20


def write_arrow(
    series: Iterable[Any],
    path: str | os.PathLike,
    start: Any = "2000-01-01T00:00:00",
    freq: str | None = "h",
    compression: str | None = None,
    rows_per_batch: int = 1024,
) -> Path:
    """Writes series to an Arrow IPC file in the GluonTS/Chronos layout, atomically.

    Each element becomes one row: `start` (`timestamp[s]`) and `target`
    (`list<float32>`), or `list<list<float32>>` when the first element is 2-D
    `(dims, time)` (a multivariate row; then every element must be 2-D). The file
    is written to a temporary name in the same directory, flushed to disk and
    renamed over `path`: a reader never sees a half-written file. Rows are
    written in record batches of at most `rows_per_batch` rows (and about a
    million values), so `series` may be a generator larger than memory.

    Args:
        series: iterable of array-likes of numbers: 1-D series, or 2-D
            multivariate entries.
        path: str or path-like. The destination file.
        start: the first timestamp of every series (a string, `datetime` or
            `numpy.datetime64`), or a sequence with one per series. Defaults to
            `"2000-01-01T00:00:00"`.
        freq: str. The series' frequency, stored in the schema metadata
            (`b"freq"`); the layout itself has no frequency. Defaults to `"h"`.
        compression: `None`, `"lz4"` or `"zstd"`: IPC buffer compression.
            Uncompressed files are read in place; compressed record batches are
            decompressed into memory when read. Defaults to `None`.
        rows_per_batch: int. Rows per record batch. Defaults to `1024`.

    Returns:
        The `Path` written.

    Example:

    >>> import os, tempfile
    >>> import numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "data.arrow")
    >>> write_arrow([np.arange(3.0), np.arange(5.0)], path).name
    'data.arrow'
    >>> ArrowSeriesFile(path).lengths.tolist()
    [3, 5]
    """
    path = Path(path)
    if rows_per_batch < 1:
        raise ValueError(
            f"`rows_per_batch` must be >= 1. Received: rows_per_batch={rows_per_batch}"
        )
    starts = None if _is_single_time(start) else iter(start)
    single_start = np.datetime64(start, "s") if starts is None else None
    metadata = {b"freq": freq.encode()} if freq else None
    options = pa.ipc.IpcWriteOptions(compression=compression)

    def write(temporary: str) -> None:
        writer, schema = None, None
        rows, pending_values = [], 0
        with open(temporary, "wb") as sink:

            def flush():
                nonlocal rows, pending_values
                if rows:
                    writer.write_batch(_record_batch(rows, schema))
                rows, pending_values = [], 0

            for index, element in enumerate(series):
                values = np.asarray(element)
                if values.dtype.kind not in "biuf" or values.ndim not in (1, 2):
                    raise ValueError(
                        "Each series must be a 1-D (or 2-D multivariate) array of numbers. "
                        f"Received: series[{index}] with shape {values.shape}, dtype {values.dtype}"
                    )
                if schema is None:
                    schema = _schema(multivariate=values.ndim == 2, metadata=metadata)
                    writer = pa.ipc.new_file(sink, schema, options=options)
                if (values.ndim == 2) != pa.types.is_list(schema.field(TARGET).type.value_type):
                    raise ValueError(
                        "All series must have the rank of the first one (1-D, or 2-D for "
                        f"multivariate rows). Received: series[{index}] with shape {values.shape}"
                    )
                row_start = single_start if starts is None else next(starts, None)
                if row_start is None:
                    raise ValueError(
                        f"`start` must hold one timestamp per series. Received: fewer than "
                        f"{index + 1} starts"
                    )
                row_start = np.datetime64(row_start, "s")
                with np.errstate(over="ignore"):
                    rows.append((row_start, values.astype(np.float32)))
                pending_values += values.size
                if len(rows) >= rows_per_batch or pending_values >= _BATCH_VALUES:
                    flush()
            if schema is None:
                raise ValueError("`series` must hold at least one series. Received: no series")
            flush()
            writer.close()

    write_atomically(path, write)
    return path


# ---- helpers ---------------------------------------------------------------------------


def _schema(multivariate: bool, metadata: dict | None) -> pa.Schema:
    target = pa.list_(pa.float32())
    if multivariate:
        target = pa.list_(target)
    return pa.schema([(START, pa.timestamp("s")), (TARGET, target)], metadata=metadata)


def _record_batch(rows: list, schema: pa.Schema) -> pa.RecordBatch:
    starts = pa.array(np.array([r[0] for r in rows], dtype="datetime64[s]"), pa.timestamp("s"))
    arrays = [r[1] for r in rows]
    if arrays[0].ndim == 2:
        inner_counts = [a.shape[1] for a in arrays for _ in range(a.shape[0])]
        flat = [a.reshape(-1) for a in arrays]
        inner = pa.ListArray.from_arrays(_offsets(inner_counts), _concat(flat))
        target = pa.ListArray.from_arrays(_offsets([a.shape[0] for a in arrays]), inner)
    else:
        target = pa.ListArray.from_arrays(_offsets([a.size for a in arrays]), _concat(arrays))
    return pa.record_batch([starts, target], schema=schema)


def _offsets(counts: list[int]) -> pa.Array:
    offsets = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])
    if offsets[-1] >= 2**31:
        raise ValueError("A record batch holds more than 2**31 values; lower `rows_per_batch`.")
    return pa.array(offsets.astype(np.int32))


def _concat(arrays: list[np.ndarray]) -> pa.Array:
    flat = np.concatenate(arrays) if arrays else np.zeros(0, np.float32)
    return pa.array(flat.astype(np.float32, copy=False), type=pa.float32())


def _is_single_time(start: Any) -> bool:
    return isinstance(start, (str, bytes, np.datetime64)) or not isinstance(start, Iterable)
