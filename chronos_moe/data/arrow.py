"""Arrow IPC files of series (the GluonTS/Chronos layout): memory-mapped reading
(`write_arrow`, re-exported here, writes them: `arrow_writer.py`).

One row per series: a `start` column (timestamp) and a `target` column
(`list<float>`). A multivariate row holds `list<list<float>>` (one inner list per
dimension), or — as GluonTS' `ArrowWriter` stores it — a flat `list<float>` plus a
`target._np_shape` column `[dims, time]`; either way the row is split into one
univariate series per dimension, in order. Other columns (`item_id`, …) are
ignored.

Reading never loads a file into memory. The file is memory-mapped
(`pyarrow.memory_map`) and opened as an IPC *file* (random access through its
footer) or, failing that, as an IPC *stream* (the offset of each record batch is
recorded during the first pass). Opening streams over every record batch once,
validating it and recording each series' length and number of missing values;
afterwards a read materialises only the values asked for. Mapped pages that were
read are handed back to the kernel every `max_mapped_bytes` (Linux
`madvise(MADV_DONTNEED)`; the data stays in the page cache), so that the
resident memory of a process reading a 1 GB file stays far below 1 GB.
"""

from __future__ import annotations

import collections
import ctypes
import dataclasses
import os
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from chronos_moe.data.arrow_schema import (  # noqa: F401 (the column names, re-exported)
    SHAPE,
    START,
    TARGET,
    check_schema,
    check_start_values,
)
from chronos_moe.data.errors import DataError

# Values converted to float32 at once while scanning a file: bounds the scan's
# temporary memory (about 20 bytes per value) independently of the file size.
_SCAN_CHUNK_VALUES = 1 << 18
# What reading a few mapped values may make resident: the kernel maps neighbouring
# pages on a fault, up to a whole large page-cache folio (2 MiB on x86-64). Used
# to account for mapped memory, conservatively.
_FAULT_BYTES = 2 * 2**20


@dataclasses.dataclass
class _BatchView:
    """The series of one record batch: flat values and where each series lies in them."""

    values: Any  # a numpy view of the values when possible, else the `pa.Array`
    starts: np.ndarray  # int64 (num_series_in_batch,), offsets into `values`
    lengths: np.ndarray  # int64 (num_series_in_batch,)
    mapped: bool  # the values are read in place from the mapping (not a decoded copy)


class ArrowSeriesFile:
    """A memory-mapped Arrow IPC file of series, validated and indexed when opened.

    Opening checks the file (readable, Arrow IPC in the file or stream format, a
    `target` column holding lists of numbers, a `start` column of timestamps, at
    least one row) and streams over it once, record batch by record batch, to
    count each series' length and missing values. Every problem is a `DataError`
    naming the file (and the row and field where it applies). Values follow the
    policy of `chronos_moe.data.source`: float32, NaN or null is missing, ±inf is
    missing too (set to NaN, counted in `inf_count`).

    Args:
        path: str or path-like. The `.arrow` file.
        max_mapped_bytes: int. Resident mapped memory after which the pages read
            so far are released (Linux). Defaults to 16 MiB.

    Attributes:
        name: str. The path, as given.
        format: str. `"file"` or `"stream"`, the IPC format found.
        num_rows: int. Rows in the file.
        num_series: int. Univariate series (multivariate rows split).
        lengths: int64 array `(num_series,)`. Length of each series.
        missing_counts: int64 array `(num_series,)`. Missing values per series.
        inf_count: int. ±inf values in the file (read as missing).

    Example:

    >>> import os, tempfile
    >>> import numpy as np
    >>> path = os.path.join(tempfile.mkdtemp(), "data.arrow")
    >>> rows = [np.arange(6.0).reshape(2, 3), np.ones((1, 4))]  # multivariate: (dims, time)
    >>> _ = write_arrow(rows, path)
    >>> with ArrowSeriesFile(path) as file:
    ...     print(file.num_rows, file.num_series, file.lengths.tolist())
    ...     print(file.read(1, 1).tolist(), [s.tolist() for s in file][2])
    2 3 [3, 3, 4]
    [4.0, 5.0] [1.0, 1.0, 1.0, 1.0]
    """

    def __init__(self, path: str | os.PathLike, max_mapped_bytes: int = 16 * 2**20) -> None:
        self.name = os.fspath(path)
        self.max_mapped_bytes = int(max_mapped_bytes)
        self._views: collections.OrderedDict[int, _BatchView] = collections.OrderedDict()
        self._touched = 0
        self._map: pa.MemoryMappedFile | None = None
        try:
            self._open()
            self._layout = check_schema(self.schema, self.name, self.format)
            self._scan()
        except BaseException:
            self.close()
            raise

    # ---- opening -----------------------------------------------------------------

    def _open(self) -> None:
        if not os.path.exists(self.name):
            raise DataError("file not found", path=self.name)
        if os.path.isdir(self.name):
            raise DataError("is a directory, not an Arrow file", path=self.name)
        try:
            self._map = pa.memory_map(self.name, "r")
            self._size = self._map.size()
            self._map.seek(0)
            head = self._map.read_buffer(min(8, self._size))
            self._base = head.address
            self._map.seek(0)
        except (OSError, pa.ArrowException) as error:
            raise DataError(f"cannot open for reading ({error})", path=self.name) from None
        magic = head.to_pybytes()
        try:
            self._reader = pa.ipc.open_file(self._map)
            self.format = "file"
            self.schema = self._reader.schema
            self._num_batches = self._reader.num_record_batches
        except (pa.ArrowException, OSError):
            if magic.startswith(b"ARROW1"):
                raise DataError(
                    "truncated or corrupt Arrow IPC file (its footer cannot be read)",
                    path=self.name,
                ) from None
            try:
                self._map.seek(0)
                self._reader = pa.ipc.open_stream(self._map)
            except (pa.ArrowException, OSError):
                what = "a Parquet file" if magic.startswith(b"PAR1") else "not Arrow data"
                if self._size == 0:
                    what = "an empty file"
                raise DataError(
                    f"is {what}: expected an Arrow IPC file (file or stream format)",
                    path=self.name,
                ) from None
            self.format = "stream"
            self.schema = self._reader.schema
            self._offsets: list[int] = []  # byte offset of each record batch message

    def _scan(self) -> None:
        """One streaming pass: validates every record batch and indexes its series."""
        lengths, missing = [], []
        self.inf_count = 0
        self.num_rows = 0
        series_starts = [0]
        batch_index = 0
        while True:
            batch = self._next_scan_batch(batch_index)
            if batch is None:
                break
            check_start_values(batch, self.name, self.num_rows)
            view = self._decode(batch, batch_index)
            batch_missing, batch_infs = self._count_missing(view)
            lengths.append(view.lengths)
            missing.append(batch_missing)
            self.inf_count += batch_infs
            self.num_rows += batch.num_rows
            series_starts.append(series_starts[-1] + len(view.lengths))
            del view, batch
            batch_index += 1
        if self.format == "stream":
            self._num_batches = batch_index
            self._stream_schema = self._reader.schema
            self._reader = None  # later reads go through the recorded offsets
        if self.num_rows == 0:
            raise DataError("has zero rows", path=self.name)
        self.lengths = np.concatenate(lengths).astype(np.int64)
        self.missing_counts = np.concatenate(missing).astype(np.int64)
        self.num_series = len(self.lengths)
        self._series_starts = np.asarray(series_starts, dtype=np.int64)
        self._release_pages()

    def _next_scan_batch(self, index: int) -> pa.RecordBatch | None:
        try:
            if self.format == "file":
                if index >= self._num_batches:
                    return None
                return _validated(self._reader.get_batch(index))
            offset = self._map.tell()
            try:
                batch = self._reader.read_next_batch()
            except StopIteration:
                return None
            self._offsets.append(offset)
            return _validated(batch)
        except (pa.ArrowException, OSError) as error:
            raise DataError(
                f"truncated or corrupt: record batch {index} cannot be read ({error})",
                path=self.name,
            ) from None

    # ---- decoding record batches ---------------------------------------------------

    def _decode(self, batch: pa.RecordBatch, batch_index: int) -> _BatchView:
        """Where each series of `batch` lies in its flat values (no values are copied)."""
        column = batch.column(TARGET)
        null_rows = column.is_null().to_numpy(zero_copy_only=False)
        if self._layout == "nested":
            outer = _list_offsets(column)
            counts = np.where(null_rows, 0, outer[1:] - outer[:-1])  # a null row has no series
            first = np.repeat(np.cumsum(counts) - counts, counts)
            series = np.arange(counts.sum(), dtype=np.int64) - first + np.repeat(outer[:-1], counts)
            inner_array = column.values
            inner = _list_offsets(inner_array)
            starts, ends = inner[series], inner[series + 1]
            inner_nulls = inner_array.is_null().to_numpy(zero_copy_only=False)
            lengths = np.where(inner_nulls[series], 0, ends - starts)
            ragged = (
                (lengths != lengths[first]) & ~inner_nulls[series] & ~inner_nulls[series[first]]
            )
            if ragged.any():  # a multivariate row is dims x time: every dimension as long
                position = int(np.argmax(ragged))
                row = int(np.repeat(np.arange(len(counts)), counts)[position])
                in_row = lengths[first == first[position]].tolist()
                raise DataError(
                    "a multivariate row's dimensions must have one length (dims x time). "
                    f"Received dimensions of lengths {in_row}",
                    path=self.name,
                    row=self.num_rows + row,
                    field=TARGET,
                )
            values = inner_array.values
        else:
            offsets = _list_offsets(column)
            starts = offsets[:-1]
            lengths = np.where(null_rows, 0, offsets[1:] - offsets[:-1])
            values = column.values
            if self._layout == "flat_shape":
                starts, lengths = self._split_flat(batch, starts, lengths, null_rows)
        mapped = _in_range(values, self._base, self._size)
        if values.null_count == 0:
            values = values.to_numpy(zero_copy_only=True)
        return _BatchView(values, starts.astype(np.int64), lengths.astype(np.int64), mapped)

    def _split_flat(self, batch, starts, lengths, null_rows):
        """Series of the GluonTS flat layout: row `r` holds `dims` series of `time` values."""
        shape_column = batch.column(SHAPE)
        shape_offsets = _list_offsets(shape_column)
        shape_values = np.asarray(shape_column.values.to_numpy(zero_copy_only=False))
        rank = shape_offsets[1:] - shape_offsets[:-1]
        dims = np.ones(len(starts), dtype=np.int64)
        time = lengths.copy()
        for row in np.flatnonzero(~null_rows):
            shape = shape_values[shape_offsets[row] : shape_offsets[row + 1]]
            if rank[row] == 2:
                dims[row], time[row] = shape
            elif rank[row] == 1:
                time[row] = shape[0]
            if rank[row] not in (1, 2) or dims[row] * time[row] != lengths[row] or dims[row] < 0:
                raise DataError(
                    f"the shape {shape.tolist()} does not match the {lengths[row]} values of "
                    "'target' (expected [time] or [dims, time])",
                    path=self.name,
                    row=self.num_rows + int(row),
                    field=SHAPE,
                )
        dims[null_rows] = 1
        row_of_series = np.repeat(np.arange(len(starts)), dims)
        first = np.repeat(np.cumsum(dims) - dims, dims)
        dimension = np.arange(len(row_of_series)) - first
        series_time = time[row_of_series]
        return starts[row_of_series] + dimension * series_time, series_time

    def _count_missing(self, view: _BatchView) -> tuple[np.ndarray, int]:
        """Missing values per series (NaN, null, ±inf) and the ±inf count, in chunks."""
        count = len(view.lengths)
        missing = np.zeros(count, dtype=np.int64)
        infs = 0
        ends = view.starts + view.lengths
        lo = 0
        while lo < count:
            limit = view.starts[lo] + _SCAN_CHUNK_VALUES
            hi = max(lo + 1, int(np.searchsorted(ends, limit, side="right")))
            hi = min(hi, count)
            first, last = int(view.starts[lo:hi].min()), int(ends[lo:hi].max())
            chunk = self._values(view, first, last)
            bad = ~np.isfinite(chunk)
            if bad.any():  # complete data (the common case) costs one isfinite pass
                positions = np.flatnonzero(bad)
                infs += int(np.count_nonzero(np.isinf(chunk[positions])))
                missing[lo:hi] = np.searchsorted(positions, ends[lo:hi] - first) - np.searchsorted(
                    positions, view.starts[lo:hi] - first
                )
            lo = hi
        return missing, infs

    def _values(self, view: _BatchView, start: int, stop: int) -> np.ndarray:
        """Values `[start, stop)` of the flat values of `view` as a new float32 array."""
        if isinstance(view.values, np.ndarray):
            chunk = view.values[start:stop]
            itemsize = chunk.itemsize
            with np.errstate(over="ignore"):  # float64 beyond float32 -> ±inf (missing)
                chunk = chunk.astype(np.float32)  # always a copy
        else:  # nulls: pyarrow turns them into NaN
            array = view.values.slice(start, stop - start)
            itemsize = array.type.bit_width // 8
            with np.errstate(over="ignore"):
                chunk = array.to_numpy(zero_copy_only=False).astype(np.float32)
        if view.mapped:
            self._account((stop - start) * itemsize)
        return chunk

    # ---- reading ---------------------------------------------------------------------

    def read(self, index: int, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Values `[start, stop)` of series `index` as a new float32 array (±inf as NaN).

        Args:
            index: int. The series, in `[0, num_series)`.
            start: int. First position. Defaults to `0`.
            stop: int. End position (exclusive); `None` for the series' end.

        Returns:
            float32 array of `min(stop, length) - start` values.
        """
        if not 0 <= index < self.num_series:
            raise IndexError(f"series index {index} out of range [0, {self.num_series})")
        length = int(self.lengths[index])
        stop = length if stop is None else min(stop, length)
        start = min(max(start, 0), stop)
        batch_index = int(np.searchsorted(self._series_starts, index, side="right")) - 1
        view = self._view(batch_index)
        first = int(view.starts[index - self._series_starts[batch_index]]) + start
        values = self._values(view, first, first + stop - start)
        infinite = np.isinf(values)
        if infinite.any():
            values[infinite] = np.nan
        return values

    def __iter__(self) -> Iterator[np.ndarray]:
        """Every series in file order, one record batch resident at a time."""
        for index in range(self.num_series):
            yield self.read(index)

    def __len__(self) -> int:
        return self.num_series

    def _view(self, batch_index: int) -> _BatchView:
        view = self._views.get(batch_index)
        if view is not None:
            self._views.move_to_end(batch_index)
            return view
        if self._map is None:
            raise ValueError(f"{self.name}: the file is closed")
        try:
            if self.format == "file":
                batch = self._reader.get_batch(batch_index)
            else:
                self._map.seek(self._offsets[batch_index])
                message = pa.ipc.read_message(self._map)
                batch = pa.ipc.read_record_batch(message, self._stream_schema)
            batch = _validated(batch)
        except (pa.ArrowException, OSError) as error:  # the file changed since it was opened
            raise DataError(
                f"record batch {batch_index} cannot be read ({error})", path=self.name
            ) from None
        view = self._decode(batch, batch_index)
        self._account(0)  # the message header and the offsets
        self._views[batch_index] = view
        if len(self._views) > 4:  # a few decoded batches (decompressed ones live in memory)
            self._views.popitem(last=False)
        return view

    # ---- resident memory ---------------------------------------------------------------

    def _account(self, nbytes: int) -> None:
        """Counts mapped bytes made resident; releases them all past the budget.

        A read of `nbytes` counts as `nbytes` plus a large folio on each side:
        a fault may map the whole page-cache folio around the page read.
        """
        self._touched += nbytes + 2 * _FAULT_BYTES
        if self._touched > self.max_mapped_bytes:
            self._release_pages()

    def _release_pages(self) -> None:
        """Drops this file's mapped pages from the process' resident memory.

        Why: mapped pages that were read stay resident (and count in the process'
        RSS) until the mapping is closed; for a long pass over a large file that is
        the whole file. `MADV_DONTNEED` on a read-only mapping only unmaps them from
        this process: the data stays in the page cache and a later read faults the
        page back in. Numpy views into the mapping stay valid.
        """
        self._touched = 0
        if _MADVISE is not None and self._map is not None and self._size > 0:
            _MADVISE(ctypes.c_void_p(self._base), ctypes.c_size_t(self._size), 4)  # DONTNEED

    # ---- life cycle ----------------------------------------------------------------------

    def close(self) -> None:
        """Closes the mapping (the series read so far stay valid: they are copies)."""
        self._views.clear()
        self._reader = None
        if self._map is not None:
            self._map.close()
            self._map = None

    def __enter__(self) -> ArrowSeriesFile:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        rows = getattr(self, "num_rows", "?")
        series = getattr(self, "num_series", "?")
        return f"ArrowSeriesFile({self.name!r}, num_rows={rows}, num_series={series})"


def read_arrow(path: str | os.PathLike) -> list[np.ndarray]:
    """Reads every series of an Arrow file into memory (for small files).

    Args:
        path: str or path-like. The `.arrow` file.

    Returns:
        A list of float32 1-D arrays, multivariate rows split, ±inf read as NaN.

    Example:

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "data.arrow")
    >>> _ = write_arrow([[1.0, 2.0], [3.0, float("inf")]], path)
    >>> [s.tolist() for s in read_arrow(path)]
    [[1.0, 2.0], [3.0, nan]]
    """
    with ArrowSeriesFile(path) as file:
        return list(file)


# ---- helpers ---------------------------------------------------------------------------


def _validated(batch: pa.RecordBatch) -> pa.RecordBatch:
    """`batch` after a full structural check (offsets within the buffers, sane
    lengths): a corrupt file raises `pa.ArrowInvalid` here instead of crashing
    or reading out of bounds later."""
    batch.validate(full=True)
    return batch


def _list_offsets(array: pa.Array) -> np.ndarray:
    """int64 offsets `(len(array) + 1,)` of a (large/fixed-size) list array into `.values`."""
    if pa.types.is_fixed_size_list(array.type):
        size = array.type.list_size
        return (array.offset + np.arange(len(array) + 1, dtype=np.int64)) * size
    return np.asarray(array.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)


def _in_range(array: pa.Array, base: int, size: int) -> bool:
    """Whether the values of `array` are read in place from the mapping at `base`."""
    data = array.buffers()[-1]
    return data is not None and base <= data.address < base + size


def _load_madvise():
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    function.restype = ctypes.c_int
    return function


_MADVISE = _load_madvise()

# The writer, in its own file; imported last (it uses this module's column names).
from chronos_moe.data.arrow_writer import write_arrow  # noqa: E402, F401
