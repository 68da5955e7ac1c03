"""Window sampling: the reference training script's semantics, checked statistically."""

import json

import numpy as np
import pytest

from chronos_moe.data import (
    ArrowSeriesFile,
    DataError,
    InMemorySeries,
    TrainingWindows,
    WindowId,
)
from chronos_moe.data.validation_windows import ValidationWindows
from chronos_moe.data.windows import extract_window, usable_series


def _take(windows, count):
    return [next(windows) for _ in range(count)]


def test_cut_points_are_uniform_over_the_allowed_range():
    # One series of length 200: cuts must cover [min_past, 200 - prediction_length].
    length, min_past, horizon = 200, 30, 10
    source = InMemorySeries([np.arange(length, dtype=np.float32)])
    windows = TrainingWindows(
        [source], 64, horizon, min_past, shuffle_buffer_length=0, drop_prob=0.0, seed=3
    )
    cuts = np.array([w.id.cut for w in _take(windows, 16_000)])
    low, high = min_past, length - horizon
    assert cuts.min() == low and cuts.max() == high
    counts = np.bincount(cuts - low, minlength=high - low + 1)
    expected = len(cuts) / (high - low + 1)
    chi_square = ((counts - expected) ** 2 / expected).sum()
    # 160 degrees of freedom: the 99.9% quantile of chi-square is about 225.
    assert chi_square < 225, chi_square
    assert abs(cuts.mean() - (low + high) / 2) < 1.0


def test_past_and_future_are_the_values_around_the_cut_left_padded_with_nan(ramp_series):
    source = InMemorySeries(ramp_series)
    context, horizon = 100, 12
    windows = TrainingWindows([source], context, horizon, 20, drop_prob=0.0, seed=0)
    seen_padding = seen_full = False
    for window in _take(windows, 500):
        series = ramp_series[window.id.series]
        cut = window.id.cut
        assert window.past.shape == (context,) and window.future.shape == (horizon,)
        observed = min(cut, context)
        assert np.isnan(window.past[: context - observed]).all()
        np.testing.assert_array_equal(
            window.past[context - observed :], series[cut - observed : cut]
        )
        np.testing.assert_array_equal(window.future, series[cut : cut + horizon])
        assert 20 <= cut <= len(series) - horizon
        seen_padding |= cut < context
        seen_full |= cut >= context
    assert seen_padding and seen_full


def test_missing_value_augmentation_share_is_uniform_in_0_to_0_2():
    source = InMemorySeries([np.ones(3000, dtype=np.float32)] * 4)
    windows = TrainingWindows([source], 512, 64, 512, shuffle_buffer_length=0, seed=0)
    shares = np.array(
        [np.isnan(np.concatenate([w.past, w.future])).mean() for w in _take(windows, 3000)]
    )
    # share ~ Binomial(576, p) / 576 with p ~ U(0, 0.2): mean 0.1, spread over [0, 0.2]
    assert 0.0 <= shares.min() < 0.01
    assert 0.19 < shares.max() < 0.25
    assert abs(shares.mean() - 0.1) < 0.005
    assert abs(np.mean(shares < 0.1) - 0.5) < 0.04
    # off: drop_prob=0
    windows = TrainingWindows([source], 512, 64, 512, drop_prob=0.0, seed=0)
    assert not any(np.isnan(w.future).any() for w in _take(windows, 100))


def test_augmentation_is_a_function_of_the_window_identity():
    source = InMemorySeries([np.ones(400, dtype=np.float32)] * 3)
    windows = TrainingWindows([source], 64, 8, 64, shuffle_buffer_length=10, seed=5)
    for window in _take(windows, 50):
        again = windows.window(window.id)
        np.testing.assert_array_equal(again.past, window.past)
        np.testing.assert_array_equal(again.future, window.future)


def test_short_and_incomplete_series_are_dropped_and_counted():
    series = [
        np.ones(50),  # kept: 40 + 10
        np.ones(49),  # too short
        np.where(np.arange(100) < 91, np.nan, 1.0),  # 91% missing: too many
        np.where(np.arange(100) < 90, np.nan, 1.0),  # 90% missing: kept (<= 0.9)
        np.array([np.inf] * 60 + [1.0] * 40),  # inf is missing: 60% -> kept
    ]
    kept, report = usable_series(InMemorySeries(series, name="s"), 40, 10, 0.9)
    assert kept.tolist() == [0, 3, 4]
    assert (report.too_short, report.too_many_missing, report.kept) == (1, 1, 3)
    assert report.inf_values == 60


def test_windows_whose_past_is_all_nan_are_skipped_and_counted():
    # The first 60 values are missing: cuts up to 60 with context 20 have an empty past.
    values = np.where(np.arange(100) < 60, np.nan, 1.0).astype(np.float32)
    source = InMemorySeries([values], name="gappy")
    windows = TrainingWindows(
        [source], 20, 5, 10, max_missing_prop=1.0, shuffle_buffer_length=0, drop_prob=0.0
    )
    drawn = _take(windows, 200)
    assert all(w.id.cut > 60 for w in drawn)
    assert all(not np.isnan(w.past).all() for w in drawn)
    skipped = windows.report.sources[0].all_nan_past
    # cuts in [10, 95]; those <= 60 (51 of 86) are skipped
    assert 0.45 < skipped / (skipped + len(drawn)) < 0.75


def test_a_source_that_never_gives_a_window_is_an_error():
    values = np.where(np.arange(100) < 90, np.nan, 1.0).astype(np.float32)
    source = InMemorySeries([values], name="hopeless")
    # cuts in [10, 85]: every past lies in [5, 85), all missing
    windows = TrainingWindows([source], 5, 15, 10, shuffle_buffer_length=0, drop_prob=0.0)
    with pytest.raises(DataError, match="hopeless: none of its 1 usable series"):
        _take(windows, 5)


def test_a_source_without_usable_series_is_an_error_at_start(arrow_file):
    path = arrow_file([np.ones(10), np.ones(20)], name="short.arrow")
    with pytest.raises(DataError, match=r"short.arrow: no usable series.*2 are shorter than"):
        TrainingWindows([ArrowSeriesFile(path)], 32, 8, 16)
    with pytest.raises(DataError, match="no usable series"):
        ValidationWindows([ArrowSeriesFile(path)], 32, 8, 16)


def test_mixing_proportions_follow_probability():
    sources = [InMemorySeries([np.full(100, i, np.float32)] * 3, name=str(i)) for i in range(3)]
    probability = [0.5, 0.3, 0.2]
    for buffer in (0, 50):
        windows = TrainingWindows(
            sources, 16, 4, 8, probability=probability, shuffle_buffer_length=buffer, seed=1
        )
        files = np.array([w.id.file for w in _take(windows, 8000)])
        shares = np.bincount(files, minlength=3) / len(files)
        # binomial standard deviation <= 0.0056: allow 4 of them
        np.testing.assert_allclose(shares, probability, atol=0.023)


def test_zero_probability_sources_are_never_drawn():
    sources = [InMemorySeries([np.ones(100)] * 2, name=str(i)) for i in range(2)]
    windows = TrainingWindows(sources, 16, 4, 8, probability=[0.0, 1.0])
    assert {w.id.file for w in _take(windows, 300)} == {1}


def test_each_file_is_cycled_with_a_new_order_every_pass():
    source = InMemorySeries([np.ones(50)] * 7)
    windows = TrainingWindows([source], 16, 4, 8, shuffle_buffer_length=0, seed=2)
    drawn = _take(windows, 7 * 6)
    passes = [[w.id.series for w in drawn[i * 7 : (i + 1) * 7]] for i in range(6)]
    assert all(sorted(p) == list(range(7)) for p in passes)  # each series once per pass
    assert len({tuple(p) for p in passes}) > 1  # orders differ between passes
    assert [w.id.cycle for w in drawn[::7]] == list(range(6))


def test_the_shuffle_buffer_reorders_the_stream():
    source = InMemorySeries([np.ones(50)] * 200)
    plain = TrainingWindows([source], 16, 4, 8, shuffle_buffer_length=0, seed=4)
    order = [w.id.series for w in _take(plain, 200)]
    shuffled = TrainingWindows([source], 16, 4, 8, shuffle_buffer_length=100, seed=4)
    first = _take(shuffled, 200)
    assert [w.id.series for w in first] != order
    # a window leaves the buffer at most 100 draws... but on average ~100 positions late
    assert np.mean([w.id.cycle for w in first]) < 1.0


@pytest.mark.parametrize(
    ("probability", "message"),
    [
        ([1.0], "one entry per data source"),
        ([0.5, 0.3, 0.2], "one entry per data source"),
        ([1.2, -0.2], "non-negative"),
        ([0.5, float("nan")], "finite"),
        ([0.5, 0.4], "sum to 1"),
        (["a", "b"], "list of numbers"),
    ],
)
def test_probability_errors_name_the_argument(probability, message):
    sources = [InMemorySeries([np.ones(100)]) for _ in range(2)]
    with pytest.raises(ValueError, match=message) as error:
        TrainingWindows(sources, 16, 4, 8, probability=probability)
    assert "`probability`" in str(error.value)
    TrainingWindows(sources, 16, 4, 8, probability=[0.3, 0.7000000001])  # within 1e-6


@pytest.mark.parametrize(
    "kwargs",
    [
        {"context_length": 0},
        {"prediction_length": -1},
        {"min_past": 0},
        {"max_missing_prop": 1.5},
        {"shuffle_buffer_length": -1},
        {"drop_prob": 2.0},
        {"seed": -1},
    ],
)
def test_argument_errors_name_the_argument(kwargs):
    arguments = {"context_length": 16, "prediction_length": 4, "min_past": 8, **kwargs}
    with pytest.raises(ValueError, match=f"`{next(iter(kwargs))}`"):
        TrainingWindows([InMemorySeries([np.ones(100)])], **arguments)


def test_validation_windows_are_the_last_window_of_each_series(ramp_series):
    sources = [InMemorySeries(ramp_series[:3]), InMemorySeries(ramp_series[3:])]
    windows = ValidationWindows(sources, context_length=100, prediction_length=12, min_past=80)
    # series 2 (length 90) is shorter than 80 + 12: dropped
    assert [w.id for w in windows] == [
        WindowId(0, 0, 108, 0),
        WindowId(0, 1, 188, 0),
        WindowId(1, 0, 288, 0),
        WindowId(1, 1, 138, 0),
    ]
    for window in windows:
        series = (ramp_series[:3], ramp_series[3:])[window.id.file][window.id.series]
        np.testing.assert_array_equal(window.future, series[-12:])
        past = series[:-12][-100:]
        np.testing.assert_array_equal(window.past[100 - len(past) :], past)
        assert np.isnan(window.past[: 100 - len(past)]).all()
    assert windows.report.sources[0].too_short == 1


def test_validation_reads_series_in_order_without_augmentation(arrow_file):
    path = arrow_file([np.ones(40)] * 5)
    windows = ValidationWindows([ArrowSeriesFile(path)], 16, 4, 8)
    assert len(windows) == 5
    assert not any(np.isnan(w.past).any() for w in windows)
    assert windows[-1].id == windows[4].id
    with pytest.raises(IndexError):
        windows[5]


def test_state_round_trips_through_json_and_resumes_exactly(arrow_file, ramp_series):
    sources = [ArrowSeriesFile(arrow_file(ramp_series)), InMemorySeries(ramp_series[:2])]
    windows = TrainingWindows(sources, 64, 8, 16, probability=[0.7, 0.3], seed=11)
    _take(windows, 137)
    state = json.loads(json.dumps(windows.get_state()))
    expected = _take(windows, 300)
    fresh = TrainingWindows(sources, 64, 8, 16, probability=[0.7, 0.3], seed=11)
    fresh.set_state(state)
    for got, want in zip(_take(fresh, 300), expected, strict=True):
        assert got.id == want.id
        np.testing.assert_array_equal(got.past, want.past)
        np.testing.assert_array_equal(got.future, want.future)
    assert fresh.report == windows.report


def test_same_seed_same_stream_other_seed_other_stream(ramp_series):
    def ids(seed):
        source = InMemorySeries(ramp_series)
        return [w.id for w in _take(TrainingWindows([source], 32, 8, 16, seed=seed), 100)]

    assert ids(1) == ids(1)
    assert ids(1) != ids(2)


def test_extract_window_reads_only_the_span():
    source = InMemorySeries([np.arange(10.0)])
    window = extract_window(source, WindowId(0, 0, 10, 0), 4, 0)
    assert window.past.tolist() == [6.0, 7.0, 8.0, 9.0] and window.future.size == 0


def test_set_state_refuses_windows_that_are_not_in_the_data(ramp_series):
    source = InMemorySeries(ramp_series)
    windows = TrainingWindows([source], 32, 8, 16, shuffle_buffer_length=5)
    state = windows.get_state()
    next(windows)
    state = windows.get_state()
    state["buffer"][0][2] = 10_000  # a cut beyond the series
    with pytest.raises(DataError, match="not in this data"):
        TrainingWindows([source], 32, 8, 16, shuffle_buffer_length=5).set_state(state)
