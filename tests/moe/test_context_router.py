"""ContextRouter: masked-mean pooling, top-k choice, renormalised gates, float32."""

import doctest

import keras
import numpy as np
import pytest
from keras import ops

from chronos_moe.moe import router as router_module
from chronos_moe.moe.router import ContextRouter, masked_mean
from tests.moe.helpers import assert_config_round_trip, trainable_count

D_MODEL, HIDDEN, EXPERTS = 16, 8, 6


def numpy_outputs(outputs):
    return {key: ops.convert_to_numpy(value) for key, value in outputs.items()}


def make_router(top_k=2, **kwargs):
    """A built router with seeded random weights, biases included (zero biases
    and a dead ReLU layer would tie every expert's probability)."""
    router = ContextRouter(EXPERTS, top_k, HIDDEN, **kwargs)
    router.build((None, None, D_MODEL))
    rng = np.random.default_rng(123)
    for weight in router.weights:
        weight.assign(rng.normal(0.0, 0.5, weight.shape).astype("float32"))
    return router


def make_inputs(seed=0, batch=5, length=7):
    rng = np.random.default_rng(seed)
    states = rng.normal(size=(batch, length, D_MODEL)).astype("float32")
    mask = rng.random((batch, length)) < 0.7
    mask[:, -1] = True  # EOS
    return states, mask


def test_config_round_trip_and_weight_count():
    router = make_router(top_k=3, jitter_noise=0.1, seed=4)
    restored = assert_config_round_trip(router)
    restored.build((None, None, D_MODEL))
    assert restored.top_k == 3 and restored.jitter_noise == 0.1 and restored.seed == 4
    # Two dense layers: (d_model -> hidden) and (hidden -> experts), with biases.
    assert len(router.trainable_weights) == 4
    expected = D_MODEL * HIDDEN + HIDDEN + HIDDEN * EXPERTS + EXPERTS
    assert trainable_count(router) == trainable_count(restored) == expected


def test_symbolic_call_matches_eager_call():
    router = make_router()
    symbolic = router(
        keras.KerasTensor((None, 7, D_MODEL)), keras.KerasTensor((None, 7), dtype="bool")
    )
    eager = router(*make_inputs())
    assert set(symbolic) == set(eager)
    for key, spec in symbolic.items():
        assert tuple(spec.shape[1:]) == tuple(eager[key].shape[1:]), key
        assert spec.dtype == keras.backend.standardize_dtype(eager[key].dtype), key


@pytest.mark.parametrize("top_k", [1, 2, EXPERTS])
def test_gates_are_renormalised_top_k_probabilities(top_k):
    router = make_router(top_k)
    out = numpy_outputs(router(*make_inputs()))
    probs = out["router_probs"]
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(probs, keras.ops.convert_to_numpy(ops.softmax(out["router_logits"])))
    # The chosen experts are the k most probable, in decreasing order.
    np.testing.assert_array_equal(out["expert_indices"], np.argsort(-probs, axis=-1)[:, :top_k])
    chosen = np.take_along_axis(probs, out["expert_indices"], axis=-1)
    np.testing.assert_array_equal(chosen, -np.sort(-probs, axis=-1)[:, :top_k])
    np.testing.assert_allclose(out["gates"], chosen / chosen.sum(-1, keepdims=True), rtol=1e-6)
    np.testing.assert_allclose(out["gates"].sum(-1), 1.0, atol=1e-6)
    assert out["expert_indices"].dtype == np.int32


def test_router_reads_the_masked_mean_of_the_encoder_states():
    router = make_router()
    states, mask = make_inputs()
    out = numpy_outputs(router(states, mask))
    # Changing states at masked positions changes nothing.
    noisy = np.where(mask[..., None], states, 100.0 * np.ones_like(states))
    np.testing.assert_array_equal(
        numpy_outputs(router(noisy, mask))["router_logits"], out["router_logits"]
    )
    # The logits are the MLP of the mean over attended positions.
    pooled = (states * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    np.testing.assert_allclose(
        ops.convert_to_numpy(masked_mean(ops.convert_to_tensor(states), mask)),
        pooled,
        rtol=1e-5,
        atol=1e-6,
    )
    expected = ops.convert_to_numpy(router.logits(router.hidden(pooled)))
    np.testing.assert_allclose(out["router_logits"], expected, rtol=1e-5, atol=1e-6)


def test_routes_permute_with_the_batch():
    router = make_router()
    states, mask = make_inputs(batch=9)
    permutation = np.random.default_rng(1).permutation(9)
    out = numpy_outputs(router(states, mask))
    permuted = numpy_outputs(router(states[permutation], mask[permutation]))
    np.testing.assert_array_equal(permuted["expert_indices"], out["expert_indices"][permutation])
    for key in ("gates", "router_probs", "router_logits"):
        np.testing.assert_allclose(permuted[key], out[key][permutation], rtol=1e-6, atol=1e-7)


def test_series_without_observations_gets_a_valid_route():
    router = make_router()
    states, mask = make_inputs(batch=3)
    mask[0] = False  # nothing attended at all
    mask[1] = False
    mask[1, -1] = True  # only EOS: an all-NaN series
    out = numpy_outputs(router(states, mask))
    for key in ("gates", "router_probs", "router_logits"):
        assert np.isfinite(out[key]).all(), key
    np.testing.assert_allclose(out["gates"].sum(-1), 1.0, atol=1e-6)
    assert ((out["expert_indices"] >= 0) & (out["expert_indices"] < EXPERTS)).all()
    for row in out["expert_indices"]:
        assert len(set(row.tolist())) == len(row)  # k distinct experts


def test_jitter_noise_only_while_training():
    router = make_router(jitter_noise=0.5, seed=0)
    states, mask = make_inputs()
    inference = numpy_outputs(router(states, mask))
    np.testing.assert_array_equal(
        numpy_outputs(router(states, mask))["router_logits"], inference["router_logits"]
    )
    training = numpy_outputs(router(states, mask, training=True))
    assert not np.allclose(training["router_logits"], inference["router_logits"])
    np.testing.assert_allclose(training["gates"].sum(-1), 1.0, atol=1e-6)


def test_router_computes_in_float32_under_mixed_precision(mixed_bfloat16):
    router = ContextRouter(EXPERTS, 2, HIDDEN)
    assert router.dtype_policy.name == "float32"
    states, mask = make_inputs()
    out = router(ops.cast(states, "bfloat16"), mask)
    for key in ("gates", "router_probs", "router_logits"):
        assert keras.backend.standardize_dtype(out[key].dtype) == "float32", key
    for weight in router.weights:
        assert weight.dtype == "float32"
    assert "dtype" not in router.get_config()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_experts": 0, "top_k": 1}, "num_experts=0"),
        ({"num_experts": 4, "top_k": 0}, "top_k=0"),
        ({"num_experts": 4, "top_k": 5}, "top_k=5"),
        ({"num_experts": 4.0, "top_k": 2}, "num_experts=4.0"),
        ({"num_experts": 4, "top_k": 2, "jitter_noise": 1.0}, "jitter_noise=1.0"),
    ],
)
def test_invalid_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ContextRouter(**kwargs)


def test_docstring_examples_run():
    result = doctest.testmod(router_module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
