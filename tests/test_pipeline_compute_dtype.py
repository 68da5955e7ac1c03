"""ChronosPipeline(compute_dtype="bfloat16"): forecasts with a bfloat16 copy
of the model that follows the model's weights, close to the float32 ones."""

import keras
import numpy as np
import pytest

from chronos_moe.models.chronos_t5 import ChronosT5
from chronos_moe.moe.model import build_moe_chronos
from chronos_moe.pipeline import ChronosPipeline

CONFIG = {"n_tokens": 256, "context_length": 32, "prediction_length": 6}


def small_model(seed=0):
    keras.utils.set_random_seed(seed)
    return ChronosT5.from_preset(
        "tiny",
        vocab_size=256,
        d_model=64,
        d_ff=128,
        d_kv=16,
        num_layers=2,
        tie_word_embeddings=False,
        chronos_config=CONFIG,
    )


def series(n=6, length=40):
    t = np.arange(length)
    rng = np.random.default_rng(0)
    return np.stack([10 + 3 * np.sin(t / (2 + i)) + rng.normal(0, 0.3, length) for i in range(n)])


def test_compute_dtype_is_validated():
    with pytest.raises(ValueError, match="compute_dtype"):
        ChronosPipeline(small_model(), compute_dtype="float16")


def test_float32_uses_the_model_itself():
    model = small_model()
    for dtype in (None, "float32"):
        assert ChronosPipeline(model, compute_dtype=dtype)._forecasting_model() is model


def test_bfloat16_greedy_forecasts_close_to_float32():
    model = small_model()
    context = series()
    fp32 = ChronosPipeline(model).predict(context, num_samples=1, top_k=1, seed=0)
    pipeline = ChronosPipeline(model, compute_dtype="bfloat16")
    bf16 = pipeline.predict(context, num_samples=1, top_k=1, seed=0)
    assert pipeline._forecasting_model().compute_dtype == "bfloat16"
    assert bf16.shape == fp32.shape == (6, 1, 6) and np.isfinite(bf16).all()
    # Tolerance: rounding may flip a near-tie of the greedy choice (and a random
    # model's next values then differ wildly); most steps must agree exactly.
    assert np.mean(bf16 == fp32) >= 0.75


def test_bfloat16_copy_follows_the_models_weights():
    model, other = small_model(0), small_model(1)
    pipeline = ChronosPipeline(model, compute_dtype="bfloat16")
    context = series()
    before = pipeline.predict(context, num_samples=2, seed=3)
    model.set_weights(other.get_weights())
    after = pipeline.predict(context, num_samples=2, seed=3)
    fresh = ChronosPipeline(other, compute_dtype="bfloat16").predict(context, num_samples=2, seed=3)
    np.testing.assert_array_equal(after, fresh)
    assert not np.array_equal(before, after)


def test_bfloat16_moe_model_forecasts():
    moe = build_moe_chronos(small_model(), num_experts=4, top_k=2, router_hidden_dim=16, seed=0)
    context = series()
    fp32 = ChronosPipeline(moe).predict(context, num_samples=1, top_k=1, seed=0)
    bf16 = ChronosPipeline(moe, compute_dtype="bfloat16").predict(
        context, num_samples=1, top_k=1, seed=0
    )
    assert bf16.shape == fp32.shape and np.isfinite(bf16).all()
    assert np.mean(bf16 == fp32) >= 0.75
