"""The metrics against hand-computed values and against the definitions written
out as plain loops."""

import doctest
import math

import numpy as np
import pytest

from chronos_moe.evaluation import datasets as datasets_module
from chronos_moe.evaluation import metrics as metrics_module
from chronos_moe.evaluation.datasets import seasonality_from_freq
from chronos_moe.evaluation.metrics import (
    absolute_scaled_errors,
    aggregate_relative_score,
    mean_absolute_scaled_error,
    relative_score,
    seasonal_error,
    weighted_quantile_loss,
)

# ---- weighted quantile loss -------------------------------------------------------------


def test_wql_hand_computed_with_missing_target():
    # Observed targets 2 and 4 (sum 6); the NaN target and its forecasts (NaN here)
    # are left out. Level 0.25: pinball 0.25 + 0 -> 2 * 0.25 / 6 = 1/12.
    # Level 0.75: pinball 0.25 + 0.5 -> 2 * 0.75 / 6 = 1/4. Mean: 1/6.
    target = [2.0, np.nan, 4.0]
    forecasts = [[1.0, 3.0], [np.nan, np.nan], [4.0, 6.0]]
    assert weighted_quantile_loss(target, forecasts, [0.25, 0.75]) == pytest.approx(1 / 6, 1e-15)


def test_wql_at_the_median_is_the_relative_absolute_error():
    target = np.array([[1.0, -2.0], [3.0, 4.0]])
    forecast = np.array([[2.0, 0.0], [3.0, 1.0]])
    expected = np.abs(target - forecast).sum() / np.abs(target).sum()  # 6 / 10
    assert weighted_quantile_loss(target, forecast[..., None], [0.5]) == pytest.approx(expected)
    assert expected == pytest.approx(0.6)


def test_wql_matches_the_definition_written_as_loops(rng):
    levels = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    target = rng.normal(size=(5, 7))
    target[1, 3] = target[4, 0] = np.nan
    forecasts = rng.normal(size=(5, 7, 9))
    per_level = []
    for j, q in enumerate(levels):
        loss = weight = 0.0
        for i in range(5):
            for t in range(7):
                y = target[i, t]
                if not math.isnan(y):
                    f = forecasts[i, t, j]
                    loss += 2 * (q * (y - f) if y >= f else (1 - q) * (f - y))
                    weight += abs(y)
        per_level.append(loss / weight)
    assert weighted_quantile_loss(target, forecasts, levels) == pytest.approx(
        np.mean(per_level), rel=1e-12
    )


def test_wql_of_an_all_zero_target_is_nan():
    assert math.isnan(weighted_quantile_loss([0.0, np.nan], [[1.0], [1.0]], [0.5]))


@pytest.mark.parametrize("levels", [[0.0, 0.5], [0.5, 1.0], [1.5], [], [[0.5]]])
def test_wql_rejects_quantile_levels_outside_the_open_unit_interval(levels):
    with pytest.raises(ValueError, match=r"`quantile_levels` must be .* in \(0, 1\)\. Received"):
        weighted_quantile_loss([1.0], [[1.0] * max(1, len(levels))], levels)


def test_wql_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"target.shape \+ \(n_quantiles,\) = \(2, 1\)"):
        weighted_quantile_loss([1.0, 2.0], [[1.0, 2.0]], [0.5])


# ---- MASE ------------------------------------------------------------------------------------


def test_seasonal_error_hand_computed():
    assert seasonal_error([1.0, 3.0, 2.0, 4.0], 2) == 1.0  # |2 - 1|, |4 - 3|
    assert seasonal_error([1.0, np.nan, 2.0, 4.0], 1) == 2.0  # only the pair (2, 4) is observed
    assert seasonal_error([5.0, 5.0, 5.0], 1) == 0.0


def test_seasonal_error_of_a_history_not_longer_than_the_season_uses_lag_one():
    assert seasonal_error([1.0, 3.0], 4) == 2.0
    assert seasonal_error([1.0, 3.0, 6.0], 3) == 2.5  # length == season: lag 1
    assert math.isnan(seasonal_error([1.0], 1))  # no pair at all
    assert math.isnan(seasonal_error([np.nan, 1.0, 2.0], 2))  # the only lag-2 pair has a NaN


def test_mase_hand_computed_with_missing_target():
    target = [[5.0, 6.0], [4.0, np.nan]]
    forecast = [[4.0, 4.0], [5.0, 100.0]]
    history = [np.array([1.0, 3.0, 2.0, 4.0]), np.array([1.0, 2.0, 3.0])]
    # Series 0: scale 1, MAE (1 + 2) / 2 = 1.5. Series 1: scale |3 - 1| = 2, MAE 1 -> 0.5.
    np.testing.assert_array_equal(absolute_scaled_errors(target, forecast, history, 2), [1.5, 0.5])
    assert mean_absolute_scaled_error(target, forecast, history, 2) == 1.0


def test_mase_leaves_out_a_constant_history():
    """A constant history has an in-sample error of 0: its scaled error is undefined
    (NaN) and the mean runs over the other series, whatever the forecast."""
    target = [[3.0], [7.0], [7.0]]
    forecast = [[4.0], [7.0], [9.0]]
    history = [[1.0, 3.0], [7.0, 7.0, 7.0], [7.0, 7.0]]
    errors = absolute_scaled_errors(target, forecast, history, 1)
    assert errors[0] == 0.5 and np.isnan(errors[1:]).all()
    assert mean_absolute_scaled_error(target, forecast, history, 1) == 0.5
    assert math.isnan(mean_absolute_scaled_error(target[1:], forecast[1:], history[1:], 1))


def test_mase_matches_the_definition_written_as_loops(rng):
    target, forecast = rng.normal(size=(4, 5)), rng.normal(size=(4, 5))
    target[2, :2] = np.nan
    history = [rng.normal(size=n) for n in (3, 12, 20, 7)]
    season = 6
    errors = []
    for y, f, x in zip(target, forecast, history, strict=True):
        lag = season if len(x) > season else 1
        scale = np.mean([abs(x[t] - x[t - lag]) for t in range(lag, len(x))])
        errors.append(np.nanmean(np.abs(y - f)) / scale)
    result = mean_absolute_scaled_error(target, forecast, history, season)
    assert result == pytest.approx(np.mean(errors), rel=1e-12)


@pytest.mark.parametrize("seasonality", [0, -1, 1.5, True, None])
def test_mase_rejects_a_seasonality_below_one(seasonality):
    with pytest.raises(ValueError, match=r"`seasonality` must be a positive integer\. Received"):
        mean_absolute_scaled_error([[1.0]], [[1.0]], [[1.0, 2.0]], seasonality)


def test_mase_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="must have the shape of `target`"):
        absolute_scaled_errors([[1.0, 2.0]], [[1.0]], [[1.0, 2.0]], 1)
    with pytest.raises(ValueError, match="one series per row of `target` \\(1\\)"):
        absolute_scaled_errors([[1.0]], [[1.0]], [[1.0], [2.0]], 1)


# ---- relative scores -------------------------------------------------------------------------


def test_aggregate_relative_score_is_the_geometric_mean_of_ratios():
    assert aggregate_relative_score({"a": 0.5, "b": 2.0}, {"a": 1.0, "b": 1.0}) == 1.0
    assert aggregate_relative_score([2.0, 8.0], [1.0, 1.0]) == pytest.approx(4.0)
    ratios = np.array([0.3, 1.7, 0.9])
    assert aggregate_relative_score(list(ratios * 5), [5.0] * 3) == pytest.approx(
        np.prod(ratios) ** (1 / 3), rel=1e-12
    )


def test_aggregate_relative_score_of_the_baseline_itself_is_exactly_one(rng):
    scores = {f"d{i}": float(v) for i, v in enumerate(rng.uniform(0.01, 100, 7))}
    assert aggregate_relative_score(scores, scores) == 1.0


def test_relative_score_conventions():
    assert relative_score(0.0, 0.0) == 1.0  # both perfect
    assert relative_score(1.0, 0.0) == math.inf
    # Datasets with an undefined (NaN) score are left out.
    assert aggregate_relative_score([2.0, np.nan], [1.0, 1.0]) == 2.0
    assert math.isnan(aggregate_relative_score([np.nan], [1.0]))


def test_aggregate_relative_score_rejects_mismatched_datasets():
    with pytest.raises(ValueError, match="must name the same datasets"):
        aggregate_relative_score({"a": 1.0}, {"b": 1.0})
    with pytest.raises(ValueError, match="one score per dataset each"):
        aggregate_relative_score([1.0, 2.0], [1.0])
    with pytest.raises(TypeError, match="both be dicts or both sequences"):
        aggregate_relative_score({"a": 1.0}, [1.0])


# ---- seasonality from a frequency --------------------------------------------------------------


@pytest.mark.parametrize(
    "freq, expected",
    [
        ("h", 24),
        ("H", 24),
        ("1h", 24),
        ("15min", 96),
        ("30T", 48),
        ("7h", 1),  # 24 is not a multiple of 7
        ("D", 1),
        ("W-SUN", 1),
        ("M", 12),
        ("MS", 12),
        ("QS-DEC", 4),
        ("YE", 1),
        ("B", 5),
        ("s", 3600),
        (None, 1),
        ("fortnightly", 1),
    ],
)
def test_seasonality_from_freq(freq, expected):
    assert seasonality_from_freq(freq) == expected


def test_docstring_examples_run():
    for module in (metrics_module, datasets_module):
        result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
        assert result.attempted > 0 and result.failed == 0
