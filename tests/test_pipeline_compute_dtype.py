"""ChronosPipeline and ChronosBoltPipeline(compute_dtype="bfloat16"): forecasts
with a bfloat16 copy of the model that follows the model's weights, close to the
float32 ones."""

import keras
import numpy as np
import pytest

from chronos_moe.models.chronos_bolt import ChronosBolt
from chronos_moe.models.chronos_t5 import ChronosT5
from chronos_moe.moe.model import build_moe_chronos
from chronos_moe.pipeline import ChronosPipeline
from chronos_moe.pipeline_bolt import ChronosBoltPipeline

CONFIG = {"n_tokens": 256, "context_length": 32, "prediction_length": 6}
BOLT_CONFIG = {
    "context_length": 48,
    "prediction_length": 4,
    "input_patch_size": 8,
    "input_patch_stride": 8,
    "quantiles": [0.1, 0.5, 0.9],
    "use_reg_token": True,
}


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


# ---- Chronos-Bolt ------------------------------------------------------------------


def bolt_model(seed=0):
    keras.utils.set_random_seed(seed)
    model = ChronosBolt(
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        chronos_config=BOLT_CONFIG,
    )
    # Weights scaled up (a fresh model's forecasts barely depend on the input).
    model.set_weights([w * 3.0 if w.ndim == 2 else w for w in model.get_weights()])
    return model


def relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def test_bolt_compute_dtype_is_validated():
    with pytest.raises(ValueError, match="compute_dtype"):
        ChronosBoltPipeline(bolt_model(), compute_dtype="float16")
    model = bolt_model()
    assert ChronosBoltPipeline(model, compute_dtype="float32")._forecasting_model() is model


@pytest.mark.parametrize("level", [None, "series"])
def test_bolt_bfloat16_forecasts_and_embeddings_close_to_float32(level):
    model = bolt_model()
    if level:
        model = build_moe_chronos(model, num_experts=2, top_k=1, seed=0)
    context = series(length=50)
    fp32, bf16 = ChronosBoltPipeline(model), ChronosBoltPipeline(model, compute_dtype="bfloat16")
    forecast = bf16.predict(context)
    assert bf16._forecasting_model().compute_dtype == "bfloat16"
    assert forecast.dtype == np.float32 and forecast.shape == (6, 3, 4)
    # bfloat16 keeps 8 bits of mantissa: ~0.4 % per rounding, a few % through the
    # layers of this model with weights scaled up (measured 2.5 % on JAX, 4.5 % on torch).
    difference = relative_difference(forecast, fp32.predict(context))
    assert 0 < difference < 0.1, difference
    embeddings, (loc, scale) = bf16.embed(context)
    reference, (loc32, scale32) = fp32.embed(context)
    np.testing.assert_array_equal(loc, loc32)  # the standardisation stays float32
    np.testing.assert_array_equal(scale, scale32)
    assert 0 < relative_difference(embeddings, reference) < 0.1


def test_bolt_bfloat16_copy_follows_the_models_weights(tmp_path):
    model, other = bolt_model(0), bolt_model(1)
    pipeline = ChronosBoltPipeline(model, compute_dtype="bfloat16")
    context = series(length=50)
    before = pipeline.predict(context)
    model.set_weights(other.get_weights())
    after = pipeline.predict(context)
    np.testing.assert_array_equal(
        after, ChronosBoltPipeline(other, compute_dtype="bfloat16").predict(context)
    )
    assert not np.array_equal(before, after)
    ChronosBoltPipeline(model).save_pretrained(tmp_path / "bolt")
    loaded = ChronosPipeline.from_pretrained(tmp_path / "bolt", compute_dtype="bfloat16")
    assert isinstance(loaded, ChronosBoltPipeline) and loaded.compute_dtype == "bfloat16"
    np.testing.assert_array_equal(loaded.predict(context), after)
