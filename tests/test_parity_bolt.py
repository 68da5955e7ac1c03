"""ChronosBoltPipeline against the reference `chronos.ChronosBoltPipeline`.

Every case loads the same checkpoint, written by the reference's own
`ChronosBoltModelForForecasting` (see `checkpoint_factory`), into both pipelines
and asks for the same quantiles within 1e-5 of the forecast's size (float32):
`max |ours - reference| / max |reference|` over the whole output.
"""

import numpy as np
import pytest
import torch

from chronos_moe.pipeline import ChronosPipeline
from chronos_moe.pipeline_bolt import ChronosBoltPipeline
from tests.checkpoint_factory import load_bolt_reference_pipeline, make_bolt_reference_checkpoint

RTOL = 1e-5
NINE = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)

# Name -> checkpoint settings. Odd shapes on purpose: d_model not a power of two,
# 1-2 layers, unequal encoder and decoder depths, patch sizes 4, 8 and 16, a context
# length that is no multiple of the patch size, overlapping patches, few quantiles.
CASES = {
    "reg-token": dict(num_layers=2, context_length=64, prediction_length=8),
    "no-reg-token": dict(
        d_model=24,
        num_heads=3,
        d_ff=40,
        num_layers=1,
        context_length=40,
        prediction_length=6,
        input_patch_size=8,
        quantiles=(0.1, 0.5, 0.9),
        use_reg_token=False,
    ),
    "odd-shape": dict(
        d_model=20,
        d_kv=4,
        num_heads=5,
        d_ff=36,
        num_layers=1,
        num_decoder_layers=2,
        context_length=30,
        prediction_length=5,
        input_patch_size=4,
        quantiles=(0.1, 0.25, 0.5, 0.75, 0.9),
    ),
    "gated-gelu": dict(feed_forward_proj="gated-gelu", num_layers=1, context_length=48),
    "overlapping-patches": dict(
        num_layers=1,
        context_length=36,
        prediction_length=4,
        input_patch_size=8,
        input_patch_stride=4,
        use_reg_token=False,
    ),
}


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory):
    made = {}

    def get(name):
        if name not in made:
            directory = tmp_path_factory.mktemp(name)
            make_bolt_reference_checkpoint(directory, seed=list(CASES).index(name), **CASES[name])
            made[name] = (
                ChronosPipeline.from_pretrained(directory),
                load_bolt_reference_pipeline(directory),
            )
        return made[name]

    return get


def series_batch(context_length: int) -> list[np.ndarray]:
    """Series of different lengths: with missing values, shorter than one patch,
    longer than the context, constant (the scale's epsilon), all missing (every
    patch masked: attention over masked positions only, unless the [REG] token
    is there)."""
    rng = np.random.default_rng(context_length)
    series = [
        rng.normal(5.0, 3.0, context_length - 3),
        rng.normal(-2.0, 0.5, 3),
        rng.normal(0.0, 10.0, 2 * context_length + 5),
        np.full(context_length // 2, 4.0),
        np.cumsum(rng.normal(0.0, 1.0, context_length // 2 + 1)),
    ]
    series[0][[1, 7, 8]] = np.nan
    series[2][-4:-2] = np.nan
    series.append(np.full(7, np.nan))
    return [s.astype(np.float32) for s in series]


def relative_error(ours, reference) -> float:
    reference = np.asarray(reference, np.float64)
    return float(
        np.max(np.abs(np.asarray(ours, np.float64) - reference)) / np.max(np.abs(reference))
    )


def horizons(model_length: int) -> list[int]:
    """Shorter than, equal to, and beyond the model's (two roll-out rounds)."""
    return [3, model_length, 2 * model_length + 1]


@pytest.mark.parametrize("name", CASES)
def test_predict_matches_the_reference(pipelines, name):
    ours, reference = pipelines(name)
    assert isinstance(ours, ChronosBoltPipeline)
    series = series_batch(ours.model_context_length)
    for horizon in horizons(ours.model_prediction_length):
        expected = reference.predict([torch.tensor(s) for s in series], prediction_length=horizon)
        forecast = ours.predict(series, prediction_length=horizon)
        assert forecast.shape == tuple(expected.shape) and forecast.dtype == np.float32
        assert np.all(np.isfinite(forecast))
        assert relative_error(forecast, expected.numpy()) <= RTOL, (name, horizon)


@pytest.mark.parametrize("name", ["reg-token", "odd-shape"])
def test_predict_quantiles_matches_the_reference(pipelines, name):
    ours, reference = pipelines(name)
    series = series_batch(ours.model_context_length)
    horizon = ours.model_prediction_length + 2
    for levels in ([0.1, 0.5, 0.9], [0.05, 0.15, 0.5, 0.62, 0.95]):  # on the grid, between, beyond
        expected = reference.predict_quantiles(
            [torch.tensor(s) for s in series], prediction_length=horizon, quantile_levels=levels
        )
        quantiles, mean = ours.predict_quantiles(
            series, prediction_length=horizon, quantile_levels=levels
        )
        assert quantiles.shape == tuple(expected[0].shape)
        assert mean.shape == tuple(expected[1].shape)
        assert relative_error(quantiles, expected[0].numpy()) <= RTOL, (name, levels)
        assert relative_error(mean, expected[1].numpy()) <= RTOL, (name, levels)


@pytest.mark.parametrize("name", ["reg-token", "no-reg-token", "odd-shape"])
def test_embed_matches_the_reference(pipelines, name):
    ours, reference = pipelines(name)
    series = series_batch(ours.model_context_length)
    expected, (expected_loc, expected_scale) = reference.embed([torch.tensor(s) for s in series])
    embeddings, (loc, scale) = ours.embed(series)
    assert embeddings.shape == tuple(expected.shape)
    assert relative_error(embeddings, expected.numpy()) <= RTOL
    np.testing.assert_allclose(loc, expected_loc.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(scale, expected_scale.numpy(), rtol=1e-6, atol=1e-7)


def test_a_saved_checkpoint_forecasts_the_same_in_the_reference(pipelines, tmp_path):
    ours, _ = pipelines("odd-shape")
    ours.save_pretrained(tmp_path / "saved")
    reloaded = load_bolt_reference_pipeline(tmp_path / "saved")
    assert type(reloaded).__name__ == "ChronosBoltPipeline"
    series = series_batch(ours.model_context_length)
    expected = reloaded.predict([torch.tensor(s) for s in series])
    assert relative_error(ours.predict(series), expected.numpy()) <= RTOL
    again = ChronosPipeline.from_pretrained(tmp_path / "saved")
    np.testing.assert_array_equal(again.predict(series), ours.predict(series))


def test_one_series_and_a_2d_array_match_the_reference(pipelines):
    ours, reference = pipelines("reg-token")
    rng = np.random.default_rng(1)
    one = rng.normal(1.0, 2.0, 50).astype(np.float32)
    assert relative_error(ours.predict(one), reference.predict(torch.tensor(one)).numpy()) <= RTOL
    array = rng.normal(0.0, 1.0, (3, 20)).astype(np.float32)
    array[0, :5] = np.nan  # left-padded
    expected = reference.predict(torch.tensor(array)).numpy()
    assert relative_error(ours.predict(array), expected) <= RTOL
