"""read_long_frame and write_frame: CSV, Parquet and Arrow files, long and wide layouts."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from chronos_moe.data.arrow import write_arrow
from chronos_moe.data.errors import DataError
from chronos_moe.data.table_file import read_long_frame, write_frame


def long_frame():
    return pd.DataFrame(
        {
            "item_id": ["b", "b", "a"],
            "timestamp": pd.to_datetime(["2024-01-02", "2024-01-01", "2024-01-01"]),
            "target": [2.0, 1.0, 5.0],
        }
    )


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".arrow", ".feather"])
def test_long_files_read_as_they_are(suffix, tmp_path):
    path = tmp_path / f"data{suffix}"
    frame = long_frame()
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_feather(path)
    read = read_long_frame(path)
    assert read["item_id"].tolist() == ["b", "b", "a"]
    assert pd.to_datetime(read["timestamp"]).tolist() == frame["timestamp"].tolist()
    assert read["target"].tolist() == [2.0, 1.0, 5.0]


def test_the_hub_layout_with_timestamp_lists(tmp_path):
    """The Chronos datasets' layout: `id`, a `timestamp` list and a `target` list per row."""
    table = pa.table(
        {
            "id": ["x", "y"],
            "timestamp": [list(pd.date_range("2024-01-01", periods=3, freq="D")),
                          list(pd.date_range("2024-02-01", periods=2, freq="D"))],
            "target": [[1.0, None, 3.0], [4.0, 5.0]],
        }
    )  # fmt: skip
    pq.write_table(table, tmp_path / "hub.parquet")
    frame = read_long_frame(tmp_path / "hub.parquet", id_column="id")
    assert frame["id"].tolist() == ["x"] * 3 + ["y"] * 2
    assert frame["timestamp"].dt.strftime("%m-%d").tolist() == [
        "01-01", "01-02", "01-03", "02-01", "02-02"
    ]  # fmt: skip
    np.testing.assert_array_equal(frame["target"], [1.0, np.nan, 3.0, 4.0, 5.0])


def test_the_gluonts_layout_takes_its_frequency_from_the_file_or_the_caller(tmp_path):
    path = write_arrow([np.arange(3.0)], tmp_path / "g.arrow", start="2024-01-01", freq="W-SUN")
    frame = read_long_frame(path)
    assert frame["timestamp"].dt.strftime("%m-%d").tolist() == ["01-07", "01-14", "01-21"]
    bare = write_arrow([np.arange(3.0)], tmp_path / "bare.arrow", start="2024-01-01", freq=None)
    with pytest.raises(DataError, match="records no frequency.*--freq"):
        read_long_frame(bare)
    assert read_long_frame(bare, freq="h")["timestamp"].iloc[-1] == pd.Timestamp("2024-01-01 02:00")


def test_bad_files_are_named(tmp_path):
    with pytest.raises(
        ValueError, match=r"expected a file ending in .*\.csv.*Received suffix '\.txt'"
    ):
        read_long_frame(tmp_path / "data.txt")
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match="broken.parquet: cannot read it as PARQUET"):
        read_long_frame(tmp_path / "broken.parquet")
    multivariate = write_arrow([np.ones((2, 4))], tmp_path / "m.arrow")
    with pytest.raises(DataError, match="field 'target': expected a list of numbers per series"):
        read_long_frame(multivariate)


def test_write_frame_writes_csv_or_parquet_and_nothing_else(tmp_path):
    frame = long_frame()
    write_frame(frame, tmp_path / "out.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "out.parquet"), frame)
    with pytest.raises(ValueError, match="expected a file ending in"):
        write_frame(frame, tmp_path / "out.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.parquet"]
