"""The checks an Arrow series file passes before it is read (`ArrowSeriesFile`):
its schema (the `start` and `target` columns and the target layout) and the
values of a string `start` column."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from chronos_moe.data.errors import DataError

TARGET = "target"
START = "start"
SHAPE = "target._np_shape"  # GluonTS' `ArrowWriter(flatten_arrays=True)` layout


def check_schema(schema: pa.Schema, path: str, file_format: str) -> str:
    """Validates `start` and `target` of the file at `path` (`file_format`:
    `"file"` or `"stream"`); returns the target layout: `"list"`, `"nested"`
    or `"flat_shape"`."""
    try:
        names = schema.names
    except UnicodeDecodeError as error:
        raise DataError(
            f"corrupt schema: a column name is not UTF-8 ({error})", path=path
        ) from None
    for column in (TARGET, START):
        if column not in names:
            raise DataError(
                f"missing column '{column}'. Expected the GluonTS layout with columns "
                f"'start' (timestamp) and 'target' (list of numbers). Received columns: "
                f"{names}",
                path=path,
                field=column,
            )
    _check_start_type(schema.field(START).type, path)
    layout = _target_layout(schema.field(TARGET).type, path)
    if SHAPE in names:
        shape_type = schema.field(SHAPE).type
        if layout != "list" or not (
            _is_list(shape_type) and pa.types.is_integer(shape_type.value_type)
        ):
            raise DataError(
                f"expected a list of integers [dims, time] next to a flat 'target'. "
                f"Received type {shape_type}",
                path=path,
                field=SHAPE,
            )
        layout = "flat_shape"
    if file_format == "stream":
        _check_no_dictionary(schema, path)
    return layout


def _check_start_type(start_type: pa.DataType, path: str) -> None:
    if not (
        pa.types.is_timestamp(start_type)
        or pa.types.is_date(start_type)
        or pa.types.is_string(start_type)
        or pa.types.is_large_string(start_type)
    ):
        raise DataError(
            f"expected a timestamp (or a date, or an ISO date string). Received type {start_type}",
            path=path,
            field=START,
        )


def _target_layout(target_type: pa.DataType, path: str) -> str:
    """`"list"` (`list<float>`) or `"nested"` (`list<list<float>>`)."""
    expected = (
        "expected a list of numbers (list<float>), or a list of such lists for a "
        f"multivariate row (list<list<float>>). Received type {target_type}"
    )
    if not _is_list(target_type):
        raise DataError(expected, path=path, field=TARGET)
    inner = target_type.value_type
    if _is_number(inner):
        return "list"
    if _is_list(inner) and _is_number(inner.value_type):
        return "nested"
    raise DataError(expected, path=path, field=TARGET)


def _check_no_dictionary(schema: pa.Schema, path: str) -> None:
    """The IPC stream format is read through recorded offsets, without the
    dictionaries that a dictionary-encoded column needs."""
    for field in schema:
        if pa.types.is_dictionary(field.type):
            raise DataError(
                "dictionary-encoded columns are not supported in the IPC stream "
                "format (no random access); write the file in the IPC file format "
                "(`write_arrow` does)",
                path=path,
                field=field.name,
            )


def check_start_values(batch: pa.RecordBatch, path: str, first_row: int) -> None:
    """String starts must all be ISO dates (one vectorized parse per record
    batch); `first_row` is the file row of the batch's first row (for the error)."""
    column = batch.column(START)
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return
    values = column.to_numpy(zero_copy_only=False)
    try:
        np.asarray(values[column.is_valid().to_numpy(zero_copy_only=False)], "datetime64[s]")
        return
    except (TypeError, ValueError):
        pass
    for row, value in enumerate(values):
        try:
            if value is not None:
                np.datetime64(value)
        except (TypeError, ValueError):
            raise DataError(
                f"expected a timestamp; the string {value!r} is not an ISO date",
                path=path,
                row=first_row + row,
                field=START,
            ) from None


def _is_list(data_type: pa.DataType) -> bool:
    return (
        pa.types.is_list(data_type)
        or pa.types.is_large_list(data_type)
        or pa.types.is_fixed_size_list(data_type)
    )


def _is_number(data_type: pa.DataType) -> bool:
    return pa.types.is_integer(data_type) or pa.types.is_floating(data_type)
