"""Arrow IPC reading and writing: round trips, layouts, the value policy, named errors."""

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from chronos_moe.data import ArrowSeriesFile, DataError, read_arrow, write_arrow


def _starts(n):
    return pa.array(np.full(n, np.datetime64("2024-01-01T00:00:00", "s")), pa.timestamp("s"))


def _write_table(path, table, fmt="file", compression=None):
    options = pa.ipc.IpcWriteOptions(compression=compression)
    opener = pa.ipc.new_file if fmt == "file" else pa.ipc.new_stream
    with opener(str(path), table.schema, options=options) as writer:
        writer.write_table(table, max_chunksize=2)  # several record batches
    return path


# ---- round trips ----------------------------------------------------------------------


def test_write_then_read_round_trips_values_starts_and_metadata(arrow_file, rng):
    series = [rng.normal(size=n).astype(np.float32) for n in (5, 1, 300, 17)]
    starts = ["2020-01-01", "2021-06-01T12:00", "2022-01-01", "2023-03-04"]
    path = arrow_file(series, start=starts, freq="D", rows_per_batch=3)
    read = read_arrow(path)
    assert len(read) == len(series)
    for got, expected in zip(read, series, strict=True):
        np.testing.assert_array_equal(got, expected)
        assert got.dtype == np.float32
    table = pa.ipc.open_file(str(path)).read_all()
    assert table.schema.field("start").type == pa.timestamp("s")
    assert table.schema.field("target").type == pa.list_(pa.float32())
    assert table.schema.metadata[b"freq"] == b"D"
    assert table.column("start")[1].as_py().isoformat() == "2021-06-01T12:00:00"
    with ArrowSeriesFile(path) as file:
        assert file.format == "file"
        assert file.num_rows == file.num_series == 4
        assert file.lengths.tolist() == [5, 1, 300, 17]
        assert file._num_batches == 2  # rows_per_batch=3
        np.testing.assert_array_equal(file.read(2, 10, 20), series[2][10:20])
        np.testing.assert_array_equal(file.read(2, 290, 400), series[2][290:])


def test_write_is_atomic_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "data.arrow"
    write_arrow([np.ones(4)], path)
    before = path.read_bytes()

    def failing():
        yield np.zeros(3)
        raise RuntimeError("generator failed half-way")

    with pytest.raises(RuntimeError, match="half-way"):
        write_arrow(failing(), path)
    assert path.read_bytes() == before  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.arrow"]
    with pytest.raises(ValueError, match="at least one series"):
        write_arrow([], tmp_path / "empty.arrow")
    with pytest.raises(ValueError, match=r"series\[1\]"):
        write_arrow([np.ones(3), np.array(["a", "b"])], tmp_path / "bad.arrow")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.arrow"]


def test_write_streams_a_generator_in_record_batches(tmp_path):
    path = write_arrow((np.full(10, float(i)) for i in range(2500)), tmp_path / "g.arrow")
    with ArrowSeriesFile(path) as file:
        assert file.num_series == 2500
        assert file._num_batches == 3  # 1024 rows per record batch
        assert file.read(2499)[0] == 2499.0


# ---- layouts ---------------------------------------------------------------------------


def test_a_write_error_names_the_path_not_the_temporary_file(tmp_path):
    path = tmp_path / "missing-dir" / "x.arrow"
    with pytest.raises(FileNotFoundError) as info:
        write_arrow([np.ones(3)], path)
    assert info.value.filename == str(path) and str(path) in str(info.value)
    assert ".tmp-" not in str(info.value)


def test_multivariate_rows_are_split_one_series_per_dimension(arrow_file):
    rows = [np.arange(6.0).reshape(2, 3), np.arange(12.0).reshape(3, 4) + 100]
    path = arrow_file(rows)
    with ArrowSeriesFile(path) as file:
        assert (file.num_rows, file.num_series) == (2, 5)
        got = [s.tolist() for s in file]
    expected = [list(dim) for row in rows for dim in row.tolist()]
    assert got == expected


def test_gluonts_flat_layout_with_np_shape_is_split(tmp_path):
    target = pa.array([np.arange(6.0), np.arange(4.0)], pa.list_(pa.float64()))
    shape = pa.array([[2, 3], [4]], pa.list_(pa.int64()))
    table = pa.table({"start": _starts(2), "target": target, "target._np_shape": shape})
    with ArrowSeriesFile(_write_table(tmp_path / "flat.arrow", table)) as file:
        assert [s.tolist() for s in file] == [[0, 1, 2], [3, 4, 5], [0, 1, 2, 3]]


def test_gluonts_flat_layout_with_a_wrong_shape_names_the_row(tmp_path):
    target = pa.array([np.arange(6.0), np.arange(4.0)], pa.list_(pa.float64()))
    shape = pa.array([[2, 3], [3, 2]], pa.list_(pa.int64()))
    table = pa.table({"start": _starts(2), "target": target, "target._np_shape": shape})
    with pytest.raises(DataError, match=r"row 1, field 'target._np_shape'") as error:
        ArrowSeriesFile(_write_table(tmp_path / "flat.arrow", table))
    assert error.value.row == 1 and error.value.field == "target._np_shape"


@pytest.mark.parametrize("fmt", ["file", "stream"])
@pytest.mark.parametrize("compression", [None, "lz4", "zstd"])
def test_file_and_stream_formats_with_compression(tmp_path, fmt, compression, rng):
    series = [rng.normal(size=n) for n in (7, 3, 9, 1, 4)]
    target = pa.array(series, pa.list_(pa.float64()))
    table = pa.table({"start": _starts(5), "target": target, "item_id": list("abcde")})
    path = _write_table(tmp_path / "x.arrow", table, fmt=fmt, compression=compression)
    with ArrowSeriesFile(path) as file:
        assert file.format == fmt
        assert file.num_series == 5
        # random access, backwards: each read goes through its record batch
        for index in (4, 0, 2, 3, 1):
            np.testing.assert_array_equal(file.read(index), series[index].astype(np.float32))


@pytest.mark.parametrize(
    "target_type",
    [
        pa.large_list(pa.float32()),
        pa.list_(pa.int32()),
        pa.list_(pa.float16()),
        pa.list_(pa.int64(), 3),
    ],
)
def test_list_variants_and_numeric_types_are_read(tmp_path, target_type):
    values = [[1, 2, 3], [4, 5, 6]]
    table = pa.table({"start": _starts(2), "target": pa.array(values, target_type)})
    with ArrowSeriesFile(_write_table(tmp_path / "v.arrow", table)) as file:
        assert [s.tolist() for s in file] == values
        assert all(s.dtype == np.float32 for s in file)


def test_dates_and_iso_strings_are_accepted_as_start(tmp_path):
    target = pa.array([[1.0, 2.0]], pa.list_(pa.float32()))
    dates = pa.array(np.array(["2024-01-01"], dtype="datetime64[D]"))
    for start in (dates, pa.array(["2024-01-01"])):
        table = pa.table({"start": start, "target": target})
        with ArrowSeriesFile(_write_table(tmp_path / "d.arrow", table)) as file:
            assert file.num_series == 1


# ---- the value policy: NaN, null and ±inf are missing -----------------------------------


def test_nan_null_and_inf_are_missing_and_inf_is_counted(tmp_path):
    target = pa.array(
        [[1.0, None, 3.0], None, [np.inf, -np.inf, np.nan, 2.0], [1e300, 1.0]],
        pa.list_(pa.float64()),
    )
    table = pa.table({"start": _starts(4), "target": target})
    with ArrowSeriesFile(_write_table(tmp_path / "m.arrow", table)) as file:
        assert file.lengths.tolist() == [3, 0, 4, 2]  # a null row is an empty series
        assert file.missing_counts.tolist() == [1, 0, 3, 1]
        # +inf, -inf, and 1e300 (beyond float32: +inf once cast) are counted
        assert file.inf_count == 3
        got = [s.tolist() for s in file]
    assert got[0][0] == 1.0 and np.isnan(got[0][1])
    assert np.isnan(got[2][:3]).all() and got[2][3] == 2.0
    assert np.isnan(got[3][0]) and got[3][1] == 1.0


def test_inf_written_is_read_back_as_nan(arrow_file):
    path = arrow_file([np.array([1.0, np.inf, -np.inf, np.nan])])
    with ArrowSeriesFile(path) as file:
        assert file.inf_count == 2
        assert file.missing_counts.tolist() == [3]
        assert np.isnan(file.read(0)[1:]).all()


# ---- named errors -------------------------------------------------------------------------


def _error(path):
    with pytest.raises(DataError) as info:
        ArrowSeriesFile(path)
    assert info.value.path == os.fspath(path)
    assert str(info.value).startswith(os.fspath(path))
    return info.value


def test_missing_file_and_directory(tmp_path):
    assert "not found" in str(_error(tmp_path / "nope.arrow"))
    assert "directory" in str(_error(tmp_path))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_file(arrow_file):
    path = arrow_file([np.ones(3)])
    path.chmod(0)
    try:
        assert "cannot open" in str(_error(path))
    finally:
        path.chmod(0o644)


def test_random_bytes_parquet_and_empty_files_are_not_arrow(tmp_path, rng):
    (tmp_path / "random.arrow").write_bytes(rng.bytes(1000))
    assert "not Arrow data" in str(_error(tmp_path / "random.arrow"))
    table = pa.table({"start": _starts(1), "target": pa.array([[1.0]])})
    pq.write_table(table, tmp_path / "parquet.arrow")
    assert "Parquet" in str(_error(tmp_path / "parquet.arrow"))
    (tmp_path / "empty.arrow").write_bytes(b"")
    assert "empty file" in str(_error(tmp_path / "empty.arrow"))


def test_truncated_files(arrow_file, tmp_path):
    data = arrow_file([np.arange(100.0)] * 50, rows_per_batch=10).read_bytes()
    (tmp_path / "half.arrow").write_bytes(data[: len(data) // 2])
    assert "truncated" in str(_error(tmp_path / "half.arrow"))
    (tmp_path / "minus_one.arrow").write_bytes(data[:-1])
    assert "truncated" in str(_error(tmp_path / "minus_one.arrow"))
    table = pa.table({"start": _starts(6), "target": pa.array([np.arange(50.0)] * 6)})
    stream = _write_table(tmp_path / "s.arrow", table, fmt="stream").read_bytes()
    (tmp_path / "cut_stream.arrow").write_bytes(stream[: len(stream) // 2])
    assert "truncated or corrupt: record batch" in str(_error(tmp_path / "cut_stream.arrow"))


@pytest.mark.parametrize(
    ("columns", "field", "message"),
    [
        ({"start": _starts(1), "values": pa.array([[1.0]])}, "target", "missing column 'target'"),
        ({"target": pa.array([[1.0]])}, "start", "missing column 'start'"),
        ({"start": pa.array([3]), "target": pa.array([[1.0]])}, "start", "timestamp"),
        ({"start": pa.array([1.5]), "target": pa.array([[1.0]])}, "start", "Received type double"),
        ({"start": _starts(1), "target": pa.array([["a", "b"]])}, "target", "list<item: string>"),
        ({"start": _starts(1), "target": pa.array([1.0])}, "target", "Received type double"),
        (
            {"start": _starts(1), "target": pa.array([[[[1.0]]]])},
            "target",
            "list<item: list<item: list",
        ),
        ({"start": _starts(1), "target": pa.array([[True]])}, "target", "list<item: bool>"),
    ],
)
def test_schema_errors_name_the_field(tmp_path, columns, field, message):
    path = _write_table(tmp_path / "bad.arrow", pa.table(columns))
    error = _error(path)
    assert error.field == field
    assert message in str(error)


def test_a_start_string_that_is_not_a_date_names_row_and_field(tmp_path):
    table = pa.table({"start": pa.array(["yesterday"]), "target": pa.array([[1.0]])})
    error = _error(_write_table(tmp_path / "bad.arrow", table))
    assert (error.row, error.field) == (0, "start")


def test_zero_rows(tmp_path):
    schema = pa.schema([("start", pa.timestamp("s")), ("target", pa.list_(pa.float32()))])
    path = _write_table(tmp_path / "zero.arrow", schema.empty_table())
    assert "zero rows" in str(_error(path))


def test_dictionary_columns_in_stream_format_are_refused_by_name(tmp_path):
    table = pa.table(
        {
            "start": _starts(2),
            "target": pa.array([[1.0], [2.0]]),
            "item_id": pa.array(["a", "b"]).dictionary_encode(),
        }
    )
    error = _error(_write_table(tmp_path / "dict.arrow", table, fmt="stream"))
    assert error.field == "item_id"
    # the file format is random-access: dictionaries are fine there
    with ArrowSeriesFile(_write_table(tmp_path / "dict_file.arrow", table)) as file:
        assert file.num_series == 2


def test_read_index_out_of_range_and_closed_file(arrow_file):
    file = ArrowSeriesFile(arrow_file([np.ones(3)]))
    with pytest.raises(IndexError):
        file.read(1)
    values = file.read(0)
    file.close()
    assert values.tolist() == [1.0, 1.0, 1.0]  # reads are copies, valid after close
    file._views.clear()
    with pytest.raises(ValueError, match="closed"):
        file.read(0)
