"""`evaluate`: baselines, relative scores, skipped series, files, and end-to-end
runs of tiny untrained dense and MoE models."""

import csv
import doctest
import importlib

import numpy as np
import pytest

from chronos_moe.data import write_arrow
from chronos_moe.evaluation import (
    evaluate,
    naive_forecast,
    run_evaluate,
    seasonal_naive_forecast,
    weighted_quantile_loss,
)
from chronos_moe.evaluation.metrics import mean_absolute_scaled_error
from tests.evaluation.helpers import PREDICTION_LENGTH, make_series

LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


# ---- baselines ---------------------------------------------------------------------------


def test_seasonal_naive_forecast_repeats_the_last_season():
    history = [[1.0, 2.0, 3.0, 4.0, 5.0], [np.nan, 2.0, np.nan], [7.0]]
    forecast = seasonal_naive_forecast(history, 5, seasonality=3)
    np.testing.assert_array_equal(
        forecast,
        [
            [3.0, 4.0, 5.0, 3.0, 4.0],
            [2.0, 2.0, 2.0, 2.0, 2.0],  # NaN filled from the observed neighbour
            [7.0, 7.0, 7.0, 7.0, 7.0],  # shorter than the season: Naive
        ],
    )
    np.testing.assert_array_equal(naive_forecast([[1.0, 4.0, np.nan]], 2), [[4.0, 4.0]])


def test_evaluating_seasonal_naive_gives_relative_scores_of_exactly_one(rng):
    data = {
        "noisy": [rng.normal(size=n) * 10 for n in rng.integers(8, 50, 20)],
        "positive": [np.exp(rng.normal(size=30)) for _ in range(5)],
        "with_gaps": make_series(4),
    }
    result = evaluate("seasonal_naive", data, prediction_length=6, seasonality=5, verbose=0)
    assert result.relative_wql == 1.0 and result.relative_mase == 1.0
    for dataset in result.datasets:
        assert dataset.relative["model"] == {"wql": 1.0, "mase": 1.0}
        assert dataset.relative["seasonal_naive"] == {"wql": 1.0, "mase": 1.0}


def test_baseline_scores_follow_the_metric_definitions():
    series = make_series(5)
    h, season = 6, 4
    result = evaluate("naive", series, prediction_length=h, seasonality=season, verbose=0)
    [dataset] = result.datasets
    target = np.stack([s[-h:] for s in series])
    history = [s[:-h] for s in series]
    for method, lag in (("naive", 1), ("seasonal_naive", season)):
        point = seasonal_naive_forecast(history, h, lag)
        quantiles = np.repeat(point[..., None], len(LEVELS), axis=-1)
        assert dataset.scores[method]["wql"] == weighted_quantile_loss(target, quantiles, LEVELS)
        assert dataset.scores[method]["mase"] == pytest.approx(
            mean_absolute_scaled_error(target, point, history, season), rel=1e-15
        )
        np.testing.assert_array_equal(
            dataset.per_series[method]["wql"],
            [weighted_quantile_loss(y, q, LEVELS) for y, q in zip(target, quantiles, strict=True)],
        )
    assert dataset.scores["model"] == dataset.scores["naive"]
    ratio = dataset.scores["naive"]["wql"] / dataset.scores["seasonal_naive"]["wql"]
    assert result.relative_wql == pytest.approx(ratio)


# ---- skipped series and bad input ---------------------------------------------------------


def test_series_too_short_or_without_observations_are_skipped_and_counted(caplog):
    good = np.arange(1.0, 21.0)
    no_history = np.concatenate([np.full(6, np.nan), np.arange(4.0)])
    no_target = np.concatenate([np.arange(1.0, 7.0), np.full(4, np.nan)])
    data = [good, np.ones(4), np.ones(2), no_history, no_target, good + 1]
    result = evaluate("naive", data, prediction_length=4, verbose=0)
    [dataset] = result.datasets
    assert dataset.num_series == 2 and dataset.num_skipped == 4
    assert dataset.skipped == {"too_short": 2, "no_history": 1, "no_target": 1}
    np.testing.assert_array_equal(dataset.series_index, [0, 5])
    assert "skipped 4 of 6 series" in caplog.text


def test_no_series_long_enough_is_an_error_that_lists_the_skips():
    with pytest.raises(ValueError, match=r"No series of dataset 'data'.*all 3 skipped \(3 not"):
        evaluate("naive", [np.ones(4), np.ones(3), np.ones(2)], prediction_length=4, verbose=0)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"seasonality": 0}, r"`seasonality` must be a positive integer\. Received: seasonality=0"),
        ({"seasonality": {"data": -2}}, r"`seasonality` must be a positive integer"),
        ({"seasonality": {"other": 2}}, r"`seasonality` names datasets that are not in `data`"),
        ({"quantile_levels": [0.1, 1.0]}, r"`quantile_levels` must be .* in \(0, 1\)"),
        ({"quantile_levels": [-0.1]}, r"`quantile_levels` must be .* in \(0, 1\)"),
        (
            {"prediction_length": 0},
            r"`prediction_length` must be a positive integer. Received: prediction_length=0",
        ),
        ({"batch_size": 0}, r"`batch_size` must be a positive integer"),
    ],
)
def test_bad_arguments_are_named_errors(options, message):
    arguments = {"prediction_length": 2, **options}
    with pytest.raises(ValueError, match=message):
        evaluate("naive", [np.arange(10.0)], verbose=0, **arguments)


def test_bad_pipelines_and_data_are_named_errors():
    with pytest.raises(ValueError, match=r"one of \('naive', 'seasonal_naive'\)"):
        evaluate("drift", [np.arange(10.0)], 2)
    with pytest.raises(TypeError, match="must be a ChronosPipeline"):
        evaluate(object(), [np.arange(10.0)], 2)
    with pytest.raises(ValueError, match=r"non-empty 1-D array. Received: series 1"):
        evaluate("naive", [np.arange(10.0), np.ones((2, 2))], 2)


# ---- files, seasonality, CSV ---------------------------------------------------------------------


def test_arrow_files_with_their_frequency_set_the_seasonality(tmp_path):
    hourly = write_arrow(make_series(3, seed=1), tmp_path / "hourly.arrow", freq="h")
    monthly = write_arrow(make_series(3, seed=2), tmp_path / "monthly.arrow", freq="MS")
    unknown = write_arrow(make_series(3, seed=3), tmp_path / "unknown.arrow", freq=None)
    result = evaluate("seasonal_naive", [hourly, monthly, unknown], 4, verbose=0)
    assert [d.name for d in result.datasets] == ["hourly", "monthly", "unknown"]
    assert [d.seasonality for d in result.datasets] == [24, 12, 1]
    fixed = evaluate("seasonal_naive", [hourly, monthly], 4, seasonality=3, verbose=0)
    assert [d.seasonality for d in fixed.datasets] == [3, 3]
    mixed = evaluate("seasonal_naive", [hourly, monthly], 4, seasonality={"hourly": 2}, verbose=0)
    assert [d.seasonality for d in mixed.datasets] == [2, 12]
    # The file's values (float32) give the scores of the same series in memory.
    in_memory = evaluate(
        "seasonal_naive", [s.astype(np.float32) for s in make_series(3, seed=1)], 4, 24, verbose=0
    )
    assert in_memory.datasets[0].scores == result.datasets[0].scores


def test_csv_and_table_hold_one_row_per_dataset_and_the_aggregate(tmp_path):
    data = {"a": make_series(3, seed=1), "b": make_series(4, seed=2)}
    result = evaluate("naive", data, 4, seasonality=5, verbose=0)
    path = result.to_csv(tmp_path / "out" / "scores.csv")
    with open(path) as file:
        rows = list(csv.DictReader(file))
    assert [row["dataset"] for row in rows] == ["a", "b", "aggregate (geometric mean)"]
    assert float(rows[0]["model_wql"]) == result.datasets[0].scores["model"]["wql"]
    assert float(rows[2]["model_relative_mase"]) == result.relative_mase
    assert rows[1]["num_series"] == "4" and rows[2]["num_series"] == "7"
    table = result.table()
    assert table.splitlines()[0].startswith("dataset") and "aggregate (2 datasets)" in table
    markdown = result.to_markdown().splitlines()
    assert len(markdown) == 5 and all(line.count("|") == 11 for line in markdown)
    assert markdown[-1].endswith(f"| **{result.relative_mase:.4f}** |")


# ---- models ------------------------------------------------------------------------------------


@pytest.mark.parametrize("pipeline_name", ["dense_pipeline", "moe_pipeline"])
def test_model_evaluation_end_to_end(pipeline_name, request):
    pipeline = request.getfixturevalue(pipeline_name)
    series = make_series(6)
    result = evaluate(
        pipeline, {"a": series[:3], "b": series[3:]}, PREDICTION_LENGTH, seasonality=4,
        num_samples=4, batch_size=4, verbose=0,
    )  # fmt: skip
    for dataset in result.datasets:
        assert dataset.num_series == 3
        for metric in ("wql", "mase"):
            assert np.isfinite(dataset.scores["model"][metric])
            assert dataset.per_series["model"][metric].shape == (3,)
            assert dataset.relative["seasonal_naive"][metric] == 1.0
    assert np.isfinite(result.relative_wql) and np.isfinite(result.relative_mase)
    assert result.relative["seasonal_naive"] == {"wql": 1.0, "mase": 1.0}


def test_model_scores_are_those_of_the_pipelines_own_quantiles(dense_pipeline):
    """The model's WQL and MASE are the metrics of `predict_quantiles` on the
    untruncated histories with the same seed: evaluating only truncates contexts
    the model would truncate anyway, and batches with `seed + start`."""
    series = make_series(6)
    h = PREDICTION_LENGTH
    result = evaluate(dense_pipeline, series, h, seasonality=4, num_samples=4, verbose=0)
    history = [s[:-h] for s in series]
    target = np.stack([s[-h:] for s in series])
    quantiles, _ = dense_pipeline.predict_quantiles(
        history, h, quantile_levels=LEVELS, num_samples=4, seed=0
    )
    scores = result.datasets[0].scores["model"]
    assert scores["wql"] == pytest.approx(weighted_quantile_loss(target, quantiles, LEVELS))
    median = quantiles[:, :, LEVELS.index(0.5)]
    assert scores["mase"] == pytest.approx(mean_absolute_scaled_error(target, median, history, 4))
    again = evaluate(dense_pipeline, series, h, seasonality=4, num_samples=4, verbose=0)
    assert again.datasets[0].scores == result.datasets[0].scores


def test_run_evaluate_prints_the_table_and_writes_csv(dense_pipeline, tmp_path, capsys):
    model_dir = dense_pipeline.save_pretrained(tmp_path / "model")
    paths = [
        write_arrow(make_series(3, seed=1), tmp_path / "one.arrow"),
        write_arrow(make_series(3, seed=2) + [np.ones(3)], tmp_path / "two.arrow"),
    ]
    result = run_evaluate(
        model_dir, paths, PREDICTION_LENGTH, output_csv=tmp_path / "scores.csv", num_samples=4
    )
    output = capsys.readouterr().out
    assert "two: skipped 1 series (1 not longer than prediction_length)" in output
    assert "Aggregate relative score vs Seasonal Naive" in output
    assert f"Wrote {tmp_path / 'scores.csv'}" in output
    assert [d.seasonality for d in result.datasets] == [24, 24]  # `write_arrow`'s freq "h"
    assert (tmp_path / "scores.csv").read_text().count("\n") == 4


def test_docstring_examples_run():
    # `chronos_moe.evaluation.evaluate` is the function; the module is imported by name.
    for name in ("chronos_moe.evaluation.evaluate", "chronos_moe.evaluation.results"):
        module = importlib.import_module(name)
        result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
        assert result.attempted > 0 and result.failed == 0, name
