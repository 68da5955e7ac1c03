"""LongFrameSeries and forecast_frame: the checks, grouping and future
timestamps behind `predict_df`, against the reference `chronos.df_utils` where
it is defined (no model here)."""

import numpy as np
import pandas as pd
import pytest

from chronos_moe.data.errors import DataError
from chronos_moe.data.long_frame import LongFrameSeries, forecast_frame


def long_frame(ids=("a", "b"), lengths=(6, 4), freq="D", start="2024-01-01"):
    parts = []
    for k, (series_id, length) in enumerate(zip(ids, lengths, strict=True)):
        parts.append(
            pd.DataFrame(
                {
                    "item_id": [series_id] * length,
                    "timestamp": pd.date_range(start, periods=length, freq=freq),
                    "target": np.arange(length, dtype=float) + 100 * k,
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def test_unsorted_rows_are_grouped_by_first_appearance_and_sorted_in_time():
    frame = long_frame(ids=(3, 1)).sample(frac=1, random_state=0)
    series = LongFrameSeries.from_frame(frame)
    first = frame["item_id"].iloc[0]
    assert series.ids.tolist() == list(pd.unique(frame["item_id"]))
    assert series.ids[0] == first
    for values, timestamps in zip(series.values, series.timestamps, strict=True):
        assert timestamps.is_monotonic_increasing
        np.testing.assert_array_equal(np.diff(values), 1.0)  # targets follow their timestamps


def test_grouping_matches_the_reference_normalisation():
    df_utils = pytest.importorskip("chronos.df_utils")
    frame = long_frame(ids=("x", 7, (1, 2)), lengths=(5, 3, 4)).sample(frac=1, random_state=2)
    series = LongFrameSeries.from_frame(frame)
    normalised = df_utils.normalize_df(frame)
    np.testing.assert_array_equal(np.concatenate(series.values), normalised["target"].to_numpy())
    expected = pd.DatetimeIndex(normalised["timestamp"])
    assert pd.DatetimeIndex(np.concatenate(series.timestamps)).equals(expected)


@pytest.mark.parametrize(
    "ids, dtype",
    [
        (np.array([5, 2], dtype="int32"), "int32"),
        (np.array([5, 2], dtype="int64"), "int64"),
        (np.array([1.5, 0.5]), "float64"),
        (np.array(["b", "a"], dtype=object), None),
    ],
)
def test_ids_keep_their_dtype(ids, dtype):
    frame = long_frame(ids=ids)
    frame["item_id"] = frame["item_id"].astype(ids.dtype)
    series = LongFrameSeries.from_frame(frame)
    assert series.ids.tolist() == ids.tolist()
    if dtype is not None:
        assert series.ids.dtype == dtype


def test_tuple_and_timestamp_ids_are_ids():
    ids = [(1, "x"), pd.Timestamp("2020-01-01")]
    frame = long_frame(ids=ids)
    assert LongFrameSeries.from_frame(frame).ids.tolist() == ids


@pytest.mark.parametrize(
    "freq, expected",
    [("h", "h"), ("D", "D"), ("W-SUN", "W-SUN"), ("MS", "MS"), ("ME", "ME"), ("B", "B")],
)
def test_frequency_is_inferred_as_the_reference_infers_it(freq, expected):
    df_utils = pytest.importorskip("chronos.df_utils")
    frame = long_frame(freq=freq, lengths=(8, 10))
    series = LongFrameSeries.from_frame(frame)
    assert series.infer_frequency() == expected
    reference = df_utils.make_future_df(df_utils.normalize_df(frame), prediction_length=3)
    assert series.future_timestamps(3).equals(pd.DatetimeIndex(reference["timestamp"]))


def test_short_series_are_skipped_when_inferring():
    frame = long_frame(lengths=(2, 5), freq="h")
    series = LongFrameSeries.from_frame(frame)
    assert series.infer_frequency() == "h"
    future = series.future_timestamps(2)
    assert future[:2].tolist() == [
        pd.Timestamp("2024-01-01 02:00"),
        pd.Timestamp("2024-01-01 03:00"),
    ]


def test_only_short_series_need_an_explicit_freq():
    series = LongFrameSeries.from_frame(long_frame(lengths=(2, 1)))
    with pytest.raises(DataError, match="no series has 3 or more timestamps. Pass `freq`"):
        series.future_timestamps(2)
    assert series.future_timestamps(2, freq="D")[-1] == pd.Timestamp("2024-01-03")


def test_gaps_and_irregular_timestamps_name_the_series():
    frame = long_frame(ids=("a", "gappy")).drop(index=7)
    series = LongFrameSeries.from_frame(frame)
    with pytest.raises(DataError, match="frequency of series 'gappy'.*irregular or have gaps"):
        series.future_timestamps(2)
    # An explicit freq is used as given, as the reference does.
    assert len(series.future_timestamps(2, freq="D")) == 4


def test_series_of_different_frequencies_are_refused():
    frame = pd.concat(
        [long_frame(ids=("d",), lengths=(5,)), long_frame(ids=("h",), lengths=(5,), freq="h")]
    )
    with pytest.raises(DataError, match=r"different frequencies: 'D' \(series 'd'\), 'h'"):
        LongFrameSeries.from_frame(frame).future_timestamps(1)


def test_a_bad_freq_is_named():
    series = LongFrameSeries.from_frame(long_frame())
    with pytest.raises(ValueError, match=r"`freq` must be a pandas frequency.*freq='fortnightly'"):
        series.future_timestamps(2, freq="fortnightly")


def test_time_zones_and_string_timestamps():
    frame = long_frame()
    frame["timestamp"] = frame["timestamp"].dt.tz_localize("Europe/Berlin")
    future = LongFrameSeries.from_frame(frame).future_timestamps(2)
    assert str(future.tz) == "Europe/Berlin" and future[0] == pd.Timestamp(
        "2024-01-07", tz="Europe/Berlin"
    )
    frame = long_frame()
    frame["timestamp"] = frame["timestamp"].dt.strftime("%Y-%m-%d")
    assert LongFrameSeries.from_frame(frame).future_timestamps(1)[0] == pd.Timestamp("2024-01-07")


@pytest.mark.parametrize(
    "change, kwargs, message",
    [
        (lambda f: f.drop(columns="target"), {}, r"missing column\(s\) \['target'\]"),
        (lambda f: f, {"id_column": "series"}, r"missing column\(s\) \['series'\]"),
        (lambda f: f.iloc[:0], {}, "zero rows"),
        (lambda f: f.assign(target="x"), {}, "field 'target': expected a numeric column"),
        (lambda f: pd.concat([f, f.iloc[[2]]]), {}, r"duplicate \(id, timestamp\).*id 'a'"),
        (lambda f: f.assign(item_id=[None] + ["a"] * 9), {}, "row 0, field 'item_id': 1 missing"),
        (lambda f: f.assign(timestamp=["soon"] * 10), {}, "field 'timestamp': expected timestamps"),
        (
            lambda f: f.assign(timestamp=f.timestamp.where(f.index != 4)),
            {},
            "row 4.*missing timestamp",
        ),
    ],
)
def test_bad_frames_are_named(change, kwargs, message):
    with pytest.raises(DataError, match=message):
        LongFrameSeries.from_frame(change(long_frame()), **kwargs)


def test_not_a_frame_and_a_non_string_target():
    with pytest.raises(TypeError, match="`df` must be a pandas DataFrame"):
        LongFrameSeries.from_frame({"target": [1.0]})
    with pytest.raises(ValueError, match=r"only univariate.*target=\['target'\]"):
        LongFrameSeries.from_frame(long_frame(), target=["target"])


def test_forecast_frame_is_long_with_one_column_per_level():
    series = LongFrameSeries.from_frame(long_frame(ids=(9, 4)))
    quantiles = np.arange(2 * 3 * 2, dtype="float32").reshape(2, 3, 2)
    mean = quantiles.mean(axis=-1)
    result = forecast_frame(series, series.future_timestamps(3), [0.25, 0.75], quantiles, mean)
    assert list(result.columns) == [
        "item_id",
        "timestamp",
        "target_name",
        "predictions",
        "0.25",
        "0.75",
    ]
    assert result["item_id"].tolist() == [9, 9, 9, 4, 4, 4]
    assert (result["target_name"] == "target").all()
    np.testing.assert_array_equal(result["0.75"], quantiles[..., 1].ravel())
    assert result["predictions"].dtype == np.float32 and result["0.25"].dtype == np.float32
