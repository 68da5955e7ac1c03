"""ChronosPipeline against the reference `chronos.ChronosPipeline`: greedy
forecasts equal exactly, embeddings to 1e-5, and sampling that follows the
model's distribution with the reference's top-k / top-p / temperature rules."""

import logging
import re

import keras
import numpy as np
import pytest
import torch
from keras import ops
from transformers.generation.logits_process import (
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from chronos_moe import backend
from chronos_moe.generation import filter_logits, sample_from_logits
from chronos_moe.models.chronos_t5 import ChronosT5
from chronos_moe.moe.model import build_moe_chronos
from chronos_moe.pipeline import ChronosPipeline
from tests.checkpoint_factory import (
    as_transformers4_layout,
    compiled_forward,
    load_reference_pipeline,
    make_reference_checkpoint,
)

CONTEXT_LENGTH, PREDICTION_LENGTH = 24, 6


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory):
    """(ours, reference) for one checkpoint. Its lm_head is untied: with a tied
    head a random T5 repeats its input token, so greedy forecasts would be
    constant and could not tell a wrong rollout from a right one."""
    directory = make_reference_checkpoint(
        tmp_path_factory.mktemp("pipeline"),
        vocab_size=4096,
        tie_word_embeddings=False,
        context_length=CONTEXT_LENGTH,
        prediction_length=PREDICTION_LENGTH,
        seed=3,
    )
    as_transformers4_layout(directory)
    return ChronosPipeline.from_pretrained(directory), load_reference_pipeline(directory)


@pytest.fixture(scope="module")
def small_vocab_pipeline(tmp_path_factory):
    """A 16-token model whose first-step distribution is spread over many tokens."""
    directory = make_reference_checkpoint(
        tmp_path_factory.mktemp("small-vocab"),
        vocab_size=16,
        tie_word_embeddings=False,
        context_length=CONTEXT_LENGTH,
        prediction_length=PREDICTION_LENGTH,
        seed=5,
    )
    return ChronosPipeline.from_pretrained(as_transformers4_layout(directory))


def series(length, seed=0, nans=()):
    rng = np.random.default_rng(seed)
    values = 10 + 3 * np.sin(np.arange(length) / 2.0 + seed) + rng.normal(size=length)
    values[list(nans)] = np.nan
    return values.astype(np.float32)


def as_reference_input(context):
    if isinstance(context, list):
        return [torch.tensor(np.asarray(x, np.float32)) for x in context]
    return torch.tensor(np.asarray(context, np.float32))


def assert_greedy_equal(pipelines, context, **kwargs):
    ours, reference = pipelines
    expected = reference.predict(as_reference_input(context), top_k=1, **kwargs).numpy()
    actual = ours.predict(context, top_k=1, seed=0, **kwargs)
    assert actual.dtype == np.float32 and actual.shape == expected.shape
    np.testing.assert_array_equal(actual, expected)
    return actual


# ---- greedy forecasts equal the reference ---------------------------------------------------


def test_greedy_one_series(pipelines):
    forecast = assert_greedy_equal(pipelines, series(20), num_samples=1)
    assert forecast.shape == (1, 1, PREDICTION_LENGTH)
    assert len(np.unique(forecast)) > 1  # not a constant forecast


def test_greedy_list_of_series_with_nans(pipelines):
    context = [series(20, 1, nans=[3, 4]), series(9, 2), series(14, 3, nans=[0, 13])]
    forecast = assert_greedy_equal(pipelines, context, num_samples=1)
    assert forecast.shape == (3, 1, PREDICTION_LENGTH)
    assert not np.array_equal(forecast[0], forecast[1])


def test_greedy_two_dimensional_array(pipelines):
    context = np.stack([series(20, 4), series(20, 5, nans=[1, 7]), series(20, 6)])
    assert_greedy_equal(pipelines, context, num_samples=1)


def test_greedy_forecasts_in_chunks_equal_the_reference(pipelines):
    """Seven series with batch_size=4: chunks of 4 and 3 on torch, 4 + 2 + 1 on JAX."""
    ours, reference = pipelines
    context = [series(8 + 3 * i, 30 + i, nans=[i]) for i in range(7)]
    expected = reference.predict(as_reference_input(context), top_k=1, num_samples=1).numpy()
    actual = ours.predict(context, top_k=1, num_samples=1, seed=0, batch_size=4)
    np.testing.assert_array_equal(actual, expected)


def test_greedy_context_longer_than_the_model_context(pipelines):
    long = series(3 * CONTEXT_LENGTH + 5, 7)
    forecast = assert_greedy_equal(pipelines, long, num_samples=1)
    # Only the last context_length values count.
    ours, _ = pipelines
    truncated = ours.predict(long[-CONTEXT_LENGTH:], num_samples=1, top_k=1, seed=0)
    np.testing.assert_array_equal(forecast, truncated)


def test_greedy_rollout_beyond_the_model_horizon(pipelines, caplog):
    context = series(20, 8)
    with caplog.at_level(logging.WARNING):
        forecast = assert_greedy_equal(
            pipelines, context, num_samples=1, prediction_length=2 * PREDICTION_LENGTH
        )
    assert any("prediction_length" in record.getMessage() for record in caplog.records)
    ours, _ = pipelines
    first = ours.predict(context, num_samples=1, top_k=1, seed=0)
    np.testing.assert_array_equal(forecast[..., :PREDICTION_LENGTH], first)


def test_greedy_many_samples_are_all_equal(pipelines):
    context = [series(20, 9), series(11, 10)]
    forecast = assert_greedy_equal(pipelines, context, num_samples=3)
    assert forecast.shape == (2, 3, PREDICTION_LENGTH)
    np.testing.assert_array_equal(forecast, np.repeat(forecast[:, :1], 3, axis=1))


def test_greedy_all_nan_series_follows_the_reference(pipelines):
    context = [np.full(20, np.nan, np.float32), series(20, 11), series(8, 12)]
    assert_greedy_equal(pipelines, context, num_samples=1)


def test_backend_tensors_are_accepted(pipelines):
    ours, _ = pipelines
    values = [series(20, 13), series(12, 14), series(20, 15)]
    expected = ours.predict(values, num_samples=1, top_k=1, seed=0)
    tensors = [ops.convert_to_tensor(v) for v in values]
    np.testing.assert_array_equal(ours.predict(tensors, num_samples=1, top_k=1, seed=0), expected)
    padded = np.stack([values[0], np.pad(values[1], (8, 0), constant_values=np.nan), values[2]])
    stacked = ops.convert_to_tensor(padded)
    np.testing.assert_array_equal(ours.predict(stacked, num_samples=1, top_k=1, seed=0), expected)
    if keras.config.backend() == "jax":  # the reference takes torch; ours takes both
        torch_input = [torch.tensor(v) for v in values]
        np.testing.assert_array_equal(
            ours.predict(torch_input, num_samples=1, top_k=1, seed=0), expected
        )


# ---- embeddings ------------------------------------------------------------------------------


def test_embed_matches_the_reference(pipelines):
    ours, reference = pipelines
    context = [series(20, 15, nans=[2]), series(40, 16), np.full(5, np.nan, np.float32)]
    expected, expected_scale = reference.embed(as_reference_input(context))
    embeddings, scale = ours.embed(context)
    assert embeddings.dtype == np.float32
    assert embeddings.shape == tuple(expected.shape) == (3, CONTEXT_LENGTH + 1, 32)
    np.testing.assert_allclose(embeddings, expected.numpy(), rtol=0, atol=1e-5)
    np.testing.assert_array_equal(scale, expected_scale.numpy())
    one, one_scale = ours.embed(series(20, 15, nans=[2]))
    assert one.shape == (1, 21, 32)
    np.testing.assert_array_equal(one_scale, scale[:1])
    np.testing.assert_allclose(one[0], embeddings[0, -21:], rtol=0, atol=1e-5)


# ---- sampling --------------------------------------------------------------------------------


def test_predict_quantiles_are_the_quantiles_of_the_samples(pipelines):
    ours, _ = pipelines
    context = [series(20, 17), series(15, 18)]
    levels = [0.1, 0.5, 0.9]
    quantiles, mean = ours.predict_quantiles(context, quantile_levels=levels, num_samples=8, seed=3)
    samples = ours.predict(context, num_samples=8, seed=3)
    assert quantiles.shape == (2, PREDICTION_LENGTH, 3) and mean.shape == (2, PREDICTION_LENGTH)
    assert quantiles.dtype == mean.dtype == np.float32
    expected = np.quantile(samples.astype(np.float64), levels, axis=1).transpose(1, 2, 0)
    # float32 interpolation between samples of up to ~100 rounds at ~1e-5.
    atol = 8 * np.spacing(np.abs(samples).max())
    np.testing.assert_allclose(quantiles, expected, rtol=0, atol=atol)
    # The reference's rule is torch.quantile (linear) over the sample axis.
    reference = torch.quantile(
        torch.tensor(samples).swapaxes(1, 2), q=torch.tensor(levels), dim=-1
    ).permute(1, 2, 0)
    np.testing.assert_allclose(quantiles, reference.numpy(), rtol=0, atol=atol)
    np.testing.assert_allclose(mean, samples.astype(np.float64).mean(axis=1), rtol=0, atol=atol)
    assert np.all(quantiles[..., 0] <= quantiles[..., 1]) and np.any(
        quantiles[..., 0] < quantiles[..., 2]
    )


def test_seeds(pipelines):
    ours, _ = pipelines
    context = [series(20, 17), series(15, 18)]
    first = ours.predict(context, num_samples=8, seed=3)
    np.testing.assert_array_equal(ours.predict(context, num_samples=8, seed=3), first)
    other = ours.predict(context, num_samples=8, seed=4)
    assert not np.array_equal(other, first)
    assert len(np.unique(first[0, :, 0])) > 1  # samples of one series differ


_FORWARD = {}


def first_step_probabilities(pipeline, context, temperature):
    """softmax(first-step logits / temperature) with EOS removed, from ChronosT5."""
    model = pipeline.model
    if id(model) not in _FORWARD:
        _FORWARD[id(model)] = compiled_forward(model)
    ids, mask, scale = pipeline.tokenizer.context_input_transform(context)
    logits = _FORWARD[id(model)](
        input_ids=ids.astype("int32"),
        attention_mask=mask,
        decoder_input_ids=np.zeros((1, 1), "int32"),
    )[0, 0].astype(np.float64)
    logits[model.eos_token_id] = -np.inf
    probabilities = np.exp((logits - logits.max()) / temperature)
    return probabilities / probabilities.sum(), scale


def sampled_token_frequencies(pipeline, context, scale, **kwargs):
    """Frequencies of the first sampled value, mapped to centre indices."""
    samples = pipeline.predict(context, prediction_length=1, num_samples=4000, seed=1, **kwargs)
    centers = pipeline.tokenizer.centers
    index = np.abs(samples[0, :, 0, None] / scale[0] - centers[None, :]).argmin(axis=1)
    return np.bincount(index, minlength=len(centers)) / index.size


def by_center(token_probabilities, n_special=2, n_centers=13):
    """Token probabilities summed by the centre each token decodes to (pad, the
    first bin token and the first centre share centre 0, as in the reference)."""
    centers = np.clip(np.arange(len(token_probabilities)) - n_special - 1, 0, n_centers - 1)
    return np.bincount(centers, weights=token_probabilities, minlength=n_centers)


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_samples_follow_the_model_distribution(small_vocab_pipeline, temperature):
    pipeline = small_vocab_pipeline
    context = series(20, 19)[None]
    probabilities, scale = first_step_probabilities(pipeline, context, temperature)
    assert probabilities.max() < 0.8 and (probabilities > 0.02).sum() >= 4  # a spread
    frequencies = sampled_token_frequencies(
        pipeline, context, scale, top_k=16, temperature=temperature
    )
    assert np.abs(frequencies - by_center(probabilities)).max() < 0.03


def test_top_k_keeps_the_k_most_likely_tokens(small_vocab_pipeline):
    pipeline = small_vocab_pipeline
    context = series(20, 19)[None]
    probabilities, scale = first_step_probabilities(pipeline, context, 1.0)
    kept = np.argsort(probabilities)[-3:]
    expected = np.zeros_like(probabilities)
    expected[kept] = probabilities[kept] / probabilities[kept].sum()
    frequencies = sampled_token_frequencies(pipeline, context, scale, top_k=3)
    assert set(np.flatnonzero(frequencies)) == set(np.clip(kept - 3, 0, None))
    assert np.abs(frequencies - by_center(expected)).max() < 0.03


@pytest.mark.parametrize(
    "temperature, top_k, top_p",
    [(1.0, 50, 1.0), (0.7, 10, 0.9), (1.3, 50, 0.5), (1.0, 1, 1.0), (2.0, 5, 0.3), (1.0, 50, 0.95)],
)
def test_filter_logits_keeps_the_tokens_transformers_keeps(temperature, top_k, top_p):
    """Reference order: EOS banned (min_new_tokens), temperature, top-k, top-p."""
    logits = np.random.default_rng(top_k).normal(size=(64, 50)).astype(np.float32) * 2
    scores = torch.tensor(logits)
    scores[:, 1] = -float("inf")
    scores = TemperatureLogitsWarper(temperature)(None, scores)
    scores = TopKLogitsWarper(top_k)(None, scores)
    if top_p < 1.0:
        scores = TopPLogitsWarper(top_p)(None, scores)
    expected = scores.numpy()
    actual = ops.convert_to_numpy(
        filter_logits(ops.convert_to_tensor(logits), temperature, top_k, top_p, top_p < 1.0, 1)
    )
    np.testing.assert_array_equal(np.isfinite(actual), np.isfinite(expected))
    kept = np.isfinite(expected)
    np.testing.assert_allclose(actual[kept], expected[kept], rtol=1e-6)
    assert kept.sum(axis=1).min() >= 1
    if top_p < 1.0 or top_k < 50:
        assert (kept.sum(axis=1) < 49).all()  # the filter removed something


def test_top_p_sampling_keeps_the_nucleus(small_vocab_pipeline):
    pipeline = small_vocab_pipeline
    context = series(20, 19)[None]
    probabilities, scale = first_step_probabilities(pipeline, context, 1.0)
    order = np.argsort(probabilities)[::-1]
    top_p = float(np.cumsum(probabilities[order])[2] - 1e-3)  # the nucleus is 3 tokens
    frequencies = sampled_token_frequencies(pipeline, context, scale, top_k=16, top_p=top_p)
    expected = np.zeros_like(probabilities)
    expected[order[:3]] = probabilities[order[:3]] / probabilities[order[:3]].sum()
    assert np.abs(frequencies - by_center(expected)).max() < 0.03


# ---- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "inputs, error",
    [
        ([], ValueError),
        (np.array([], np.float32), ValueError),
        (np.zeros((2, 0), np.float32), ValueError),
        (np.zeros((2, 3, 4), np.float32), ValueError),
        (["a", "b"], TypeError),
        (np.array(["1.0", "2.0"]), TypeError),
        ([np.ones(3), "x"], TypeError),
    ],
)
def test_bad_context(pipelines, inputs, error):
    ours, _ = pipelines
    with pytest.raises(error, match="context"):
        ours.predict(inputs)


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"prediction_length": 0}, "prediction_length"),
        ({"prediction_length": -2}, "prediction_length"),
        ({"num_samples": 0}, "num_samples"),
        ({"top_k": 0}, "top_k"),
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": -1.0}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        (
            {"prediction_length": PREDICTION_LENGTH + 1, "limit_prediction_length": True},
            "limit_prediction_length",
        ),
    ],
)
def test_bad_settings(pipelines, kwargs, argument):
    ours, _ = pipelines
    with pytest.raises(ValueError, match=argument):
        ours.predict(series(10), **kwargs)


@pytest.mark.parametrize("levels", [[0.0, 0.5], [1.0], [0.5, 1.2], [], [-0.1]])
def test_bad_quantile_levels(pipelines, levels):
    ours, _ = pipelines
    with pytest.raises(ValueError, match="quantile_levels"):
        ours.predict_quantiles(series(10), quantile_levels=levels)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"seed": "a"}, TypeError, "`seed` must be an integer or None. Received: seed='a'"),
        ({"seed": 1.5}, TypeError, "Received: seed=1.5"),
        ({"temperature": "1"}, TypeError, "`temperature` must be a number. Received: "),
        ({"top_p": None, "temperature": [1]}, TypeError, "Received: temperature=[1]"),
    ],
)
def test_wrong_types_name_the_argument(pipelines, kwargs, error, message):
    ours, _ = pipelines
    with pytest.raises(error, match=re.escape(message)):
        ours.predict(series(10), **kwargs)


@pytest.mark.parametrize(
    "levels, error",
    [
        (0.5, TypeError),  # was "'float' object is not iterable"
        ("0.5", TypeError),
        (["0.5"], TypeError),  # was silently accepted
        ([[0.1, 0.5]], TypeError),
        ([None], TypeError),
    ],
)
def test_quantile_levels_of_the_wrong_type(pipelines, levels, error):
    ours, _ = pipelines
    expected = "`quantile_levels` must be a list of numbers in (0, 1), such as [0.1, 0.5, 0.9]"
    with pytest.raises(error, match=re.escape(expected)) as info:
        ours.predict_quantiles(series(10), quantile_levels=levels)
    assert f"Received: quantile_levels={levels!r}" in str(info.value)


def test_quantile_levels_may_be_an_array(pipelines):
    ours, _ = pipelines
    quantiles, _ = ours.predict_quantiles(series(10), quantile_levels=np.array([0.1, 0.9]), seed=1)
    assert quantiles.shape == (1, PREDICTION_LENGTH, 2)


def test_infinite_context_values_are_missing(pipelines, caplog):
    """The reference forecasts ±inf for a series holding an inf (its scale is
    inf); here inf is a missing value, as in the Arrow reader, and a warning says so."""
    ours, reference = pipelines
    clean = series(20, 21)
    with_inf, with_nan = clean.copy(), clean.copy()
    with_inf[[3, 15]] = [np.inf, -np.inf]
    with_nan[[3, 15]] = np.nan
    with caplog.at_level(logging.WARNING, logger="chronos_moe.pipeline"):
        forecast = ours.predict([with_inf, clean], num_samples=2, seed=4)
    assert "2 infinite value(s) (in 1 of 2 series)" in caplog.text and "missing" in caplog.text
    assert np.isfinite(forecast).all()
    np.testing.assert_array_equal(forecast, ours.predict([with_nan, clean], num_samples=2, seed=4))
    reference_forecast = reference.predict(torch.tensor(with_inf)[None], num_samples=2)
    assert not np.isfinite(reference_forecast.numpy()).all()  # why we do not follow it
    embeddings, scale = ours.embed(with_inf)
    assert np.isfinite(embeddings).all() and np.isfinite(scale).all()


def test_repr_says_what_the_pipeline_and_model_are(pipelines):
    ours, _ = pipelines
    text = repr(ours)
    assert text.startswith("ChronosPipeline(<ChronosT5 ")
    assert f"context {CONTEXT_LENGTH}, prediction {PREDICTION_LENGTH}" in text
    assert "4096 tokens" in text and f"backend {keras.backend.backend()}" in text
    assert "parameters" in text and "float32" in text
    tiny = ChronosT5.from_preset("tiny", vocab_size=64, num_layers=1)
    assert repr(tiny).startswith(f"<ChronosT5 {tiny.name!r}: custom (")
    moe = build_moe_chronos(ChronosT5.from_preset("tiny"), num_experts=4, top_k=2)
    text = repr(moe)
    assert text.startswith(f"<ChronosMoE {moe.name!r}: 4 experts, top-2 routing (")
    assert "on a ChronosT5 tiny (8.39M parameters" in text
    assert "compute_dtype='bfloat16'" in repr(ChronosPipeline(tiny, compute_dtype="bfloat16"))


def test_kth_largest_is_exact_with_ties_infinities_and_signed_zeros():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(6, 300)).astype(np.float32) * 5
    values[1, :40] = 2.5  # a tie across the k-th position
    values[2, ::3] = -np.inf
    values[3, :] = np.float32(-1.0)  # all equal
    values[4, :150] = 0.0
    values[4, 150:155] = -0.0
    values[4, 155:] = -np.abs(values[4, 155:]) - 1  # the k-th largest is a zero
    values[5, :] = np.abs(values[5, :]) + 1e30  # huge, close together
    kth = backend.kth_largest
    if keras.config.backend() == "jax":
        import jax

        kth = jax.jit(kth, static_argnums=1)
    for k in (1, 2, 50, 152, 299, 300):
        expected = -np.sort(-values, axis=1)[:, k - 1 : k]
        actual = ops.convert_to_numpy(kth(ops.convert_to_tensor(values), k))
        np.testing.assert_array_equal(actual, expected)
        # The set the reference keeps (logits >= k-th value) has at least k tokens.
        assert ((values >= actual).sum(axis=1) >= k).all()


def test_inverse_transform_sampling_follows_the_probabilities():
    """Uniforms on a regular grid land on each token in proportion to its
    probability; tokens with logit -inf are never drawn, even at u -> 1."""
    logits = np.array([[0.0, -np.inf, 1.0, 2.0, -np.inf, 0.5, -1.0, -np.inf] * 20], np.float32)
    logits[0, 100:] = -np.inf  # the last finite logit sits inside a chunk
    n = 20000
    uniform = ((np.arange(n) + 0.5) / n).astype(np.float32)[:, None]
    uniform[-1] = np.float32(1.0 - 2**-24)
    rows = np.repeat(logits, n, axis=0)
    tokens = ops.convert_to_numpy(
        sample_from_logits(ops.convert_to_tensor(rows), ops.convert_to_tensor(uniform), 16)
    )
    assert tokens.dtype == np.int32 and tokens.shape == (n,)
    probabilities = np.exp(logits[0] - logits[0].max())
    probabilities /= probabilities.sum()
    frequencies = np.bincount(tokens, minlength=logits.shape[1]) / n
    np.testing.assert_allclose(frequencies, probabilities, atol=2e-4)
    assert np.isfinite(logits[0, tokens]).all()
    assert tokens[-1] == np.flatnonzero(np.isfinite(logits[0]))[-1]
    # One finite logit (greedy): always that token, whatever the uniform.
    single = np.full((3, 40), -np.inf, np.float32)
    single[:, 37] = 3.0
    uniform = ops.convert_to_tensor(np.array([[0.0], [0.5], [0.999]], np.float32))
    drawn = sample_from_logits(ops.convert_to_tensor(single), uniform, 16)
    np.testing.assert_array_equal(ops.convert_to_numpy(drawn), [37, 37, 37])
