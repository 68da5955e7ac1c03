"""ChronosPipeline.predict_df against the reference `predict_df`: the whole
frame, on one checkpoint loaded into both, where the forecast is deterministic
(greedy decoding); its own rules (seeded quantiles, dense and MoE) otherwise;
bad input named before any model work."""

import numpy as np
import pandas as pd
import pytest

from chronos_moe.data.errors import DataError
from chronos_moe.moe.model import build_moe_chronos
from chronos_moe.pipeline import ChronosPipeline
from tests.checkpoint_factory import (
    as_transformers4_layout,
    load_reference_pipeline,
    make_reference_checkpoint,
)

CONTEXT_LENGTH, PREDICTION_LENGTH = 24, 6
GREEDY = {"top_k": 1, "num_samples": 1}


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory):
    """(ours, reference) on one checkpoint with an untied head (greedy forecasts
    that are not constant; see tests/test_pipeline.py)."""
    directory = make_reference_checkpoint(
        tmp_path_factory.mktemp("predict-df"),
        vocab_size=4096,
        tie_word_embeddings=False,
        context_length=CONTEXT_LENGTH,
        prediction_length=PREDICTION_LENGTH,
        seed=3,
    )
    as_transformers4_layout(directory)
    return ChronosPipeline.from_pretrained(directory), load_reference_pipeline(directory)


def long_frame(ids=("a", "b", "c"), lengths=(30, 2, 12), freq="h", seed=0):
    """Series longer than the context, shorter than pd.infer_freq's 3 points, and
    in between; values of O(10) with noise."""
    rng = np.random.default_rng(seed)
    parts = []
    for k, (series_id, length) in enumerate(zip(ids, lengths, strict=True)):
        values = 10 + 3 * np.sin(np.arange(length) / 2.0 + k) + rng.normal(size=length)
        parts.append(
            pd.DataFrame(
                {
                    "item_id": [series_id] * length,
                    "timestamp": pd.date_range("2024-03-01", periods=length, freq=freq),
                    "target": values,
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def shuffled(frame, seed=1):
    return frame.sample(frac=1, random_state=seed)


# ---- the reference's frame, value for value ------------------------------------------------


@pytest.mark.parametrize("prediction_length", [4, 9])  # 9: rolled out beyond the model's 6
def test_greedy_frame_equals_the_reference(pipelines, prediction_length):
    ours, reference = pipelines
    frame = shuffled(long_frame(ids=(("x", 2), 5, "b")))
    frame.loc[frame.index[3], "target"] = np.nan  # a missing value
    frame["covariate"] = 1.0  # other columns are ignored, as by the reference
    expected = reference.predict_df(frame, prediction_length=prediction_length, **GREEDY)
    actual = ours.predict_df(frame, prediction_length=prediction_length, seed=0, **GREEDY)
    pd.testing.assert_frame_equal(actual, expected)
    assert actual["item_id"].tolist()[::prediction_length] == list(pd.unique(frame["item_id"]))
    assert len(np.unique(actual["predictions"])) > 3  # not a constant forecast


@pytest.mark.parametrize("id_dtype", ["int64", "int32", "float64", "object", "category", "string"])
def test_id_dtypes_are_the_references(pipelines, id_dtype):
    ours, reference = pipelines
    frame = long_frame(ids=(7, 3, 5), lengths=(10, 10, 10), freq="D")
    frame["item_id"] = frame["item_id"].astype(id_dtype)
    expected = reference.predict_df(frame, prediction_length=2, quantile_levels=[0.5], **GREEDY)
    actual = ours.predict_df(frame, prediction_length=2, quantile_levels=[0.5], **GREEDY)
    pd.testing.assert_frame_equal(actual, expected)


def test_defaults_and_quantile_column_names_are_the_references(pipelines):
    ours, reference = pipelines
    frame = long_frame(lengths=(8, 8, 8), freq="MS")
    levels = np.array([0.25, 0.1])  # an array, out of order: names as given
    expected = reference.predict_df(frame, quantile_levels=levels, **GREEDY)
    actual = ours.predict_df(frame, quantile_levels=levels, **GREEDY)
    pd.testing.assert_frame_equal(actual, expected)
    assert list(actual.columns)[-3:] == ["predictions", "0.25", "0.1"]
    assert len(actual) == 3 * PREDICTION_LENGTH  # the model's prediction_length
    default = ours.predict_df(frame, **GREEDY)
    assert list(default.columns)[4:] == [str(q / 10) for q in range(1, 10)]


def test_an_explicit_freq_and_short_series(pipelines):
    ours, reference = pipelines
    frame = long_frame(lengths=(2, 1, 2), freq="W-MON")
    with pytest.raises(DataError, match="no series has 3 or more timestamps. Pass `freq`"):
        ours.predict_df(frame, **GREEDY)
    expected = reference.predict_df(frame, prediction_length=3, freq="W-MON", **GREEDY)
    actual = ours.predict_df(frame, prediction_length=3, freq="W-MON", **GREEDY)
    pd.testing.assert_frame_equal(actual, expected)


def test_validate_inputs_false_trusts_sorted_input(pipelines):
    ours, _ = pipelines
    frame = long_frame()
    checked = ours.predict_df(frame, prediction_length=3, **GREEDY)
    trusted = ours.predict_df(frame, prediction_length=3, validate_inputs=False, **GREEDY)
    pd.testing.assert_frame_equal(trusted, checked)


# ---- sampled forecasts -------------------------------------------------------------------


def test_seeded_quantiles_are_those_of_predict_quantiles(pipelines):
    ours, _ = pipelines
    frame = shuffled(long_frame())
    result = ours.predict_df(frame, prediction_length=4, num_samples=8, seed=11)
    series = [
        long_frame()["target"].to_numpy()[s] for s in (slice(0, 30), slice(30, 32), slice(32, 44))
    ]
    order = list(pd.unique(frame["item_id"]))
    context = [series[("a", "b", "c").index(i)] for i in order]
    quantiles, mean = ours.predict_quantiles(context, 4, num_samples=8, seed=11)
    np.testing.assert_array_equal(result["predictions"], mean.ravel())
    np.testing.assert_array_equal(result["0.9"], quantiles[..., 8].ravel())
    assert (result["0.1"] <= result["0.9"]).all() and (result["0.1"] < result["0.9"]).any()
    again = ours.predict_df(frame, prediction_length=4, num_samples=8, seed=11)
    pd.testing.assert_frame_equal(again, result)


def test_batch_size_splits_the_calls_not_the_result(pipelines):
    ours, _ = pipelines
    frame = long_frame()
    whole = ours.predict_df(frame, prediction_length=3, **GREEDY)
    one_by_one = ours.predict_df(frame, prediction_length=3, batch_size=1, **GREEDY)
    pd.testing.assert_frame_equal(one_by_one, whole)


def test_a_moe_model_forecasts_frames(pipelines):
    ours, _ = pipelines
    moe = ChronosPipeline(build_moe_chronos(ours.model, num_experts=2, top_k=1))
    frame = long_frame()
    result = moe.predict_df(frame, prediction_length=3, num_samples=4, seed=0)
    quantiles, mean = moe.predict_quantiles(
        [frame["target"].to_numpy()[s] for s in (slice(0, 30), slice(30, 32), slice(32, 44))],
        3,
        num_samples=4,
        seed=0,
    )
    np.testing.assert_array_equal(result["predictions"], mean.ravel())
    np.testing.assert_array_equal(result["0.5"], quantiles[..., 4].ravel())
    assert result["item_id"].tolist() == ["a"] * 3 + ["b"] * 3 + ["c"] * 3


def test_verbose_shows_progress(pipelines, capsys):
    ours, _ = pipelines
    ours.predict_df(long_frame(), prediction_length=2, verbose=1, **GREEDY)
    assert "3/3" in capsys.readouterr().out


# ---- bad input: named, before any model work ---------------------------------------------


@pytest.mark.parametrize(
    "change, kwargs, error, message",
    [
        (
            lambda f: f.drop(columns="timestamp"),
            {},
            DataError,
            r"missing column\(s\) \['timestamp'\]",
        ),
        (lambda f: f, {"target": "sales"}, DataError, r"missing column\(s\) \['sales'\]"),
        (lambda f: f, {"target": ["target"]}, ValueError, "only univariate"),
        (lambda f: pd.concat([f, f.iloc[[0]]]), {}, DataError, r"duplicate \(id, timestamp\)"),
        (lambda f: f.assign(target=f.target.astype(str)), {}, DataError, "numeric column"),
        (lambda f: f.iloc[:0], {}, DataError, "zero rows"),
        (lambda f: f.drop(index=5), {}, DataError, "series 'a'.*gaps"),
        (lambda f: f, {"prediction_length": 0}, ValueError, "prediction_length=0"),
        (lambda f: f, {"prediction_length": -2}, ValueError, "prediction_length=-2"),
        (lambda f: f, {"quantile_levels": [0.5, 1.0]}, ValueError, "quantile_levels"),
        (lambda f: f, {"quantile_levels": [0.0]}, ValueError, "quantile_levels"),
        (lambda f: f, {"batch_size": 0}, ValueError, "batch_size=0"),
        (lambda f: f, {"freq": "every other day"}, ValueError, "`freq` must be a pandas"),
        (lambda f: f.to_dict(), {}, TypeError, "must be a pandas DataFrame"),
    ],
)
def test_bad_input_is_named_before_any_model_work(
    pipelines, monkeypatch, change, kwargs, error, message
):
    ours, _ = pipelines

    def no_model_work(*args, **kwargs):
        raise AssertionError("the model ran before the input was checked")

    monkeypatch.setattr(ours, "predict_quantiles", no_model_work)
    with pytest.raises(error, match=message):
        ours.predict_df(change(long_frame()), **kwargs)
