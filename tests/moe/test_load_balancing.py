"""The Switch-Transformer balance loss N · Σ f_i · P_i, the router z-loss, and
LoadBalancingRegularizer."""

import doctest

import keras
import numpy as np
import pytest
from keras import ops

from chronos_moe.moe import balancing as balancing_module
from chronos_moe.moe.balancing import LoadBalancingRegularizer, load_balancing_loss, router_z_loss
from tests.moe.helpers import assert_config_round_trip, trainable_count


def lb(probs, indices, num_experts):
    return float(
        load_balancing_loss(np.asarray(probs, "float32"), np.asarray(indices), num_experts)
    )


def peaked_probs(indices, num_experts, peak):
    """Each series puts `peak` on its first chosen expert, the rest uniformly."""
    probs = np.full((len(indices), num_experts), (1.0 - peak) / (num_experts - 1))
    probs[np.arange(len(indices)), indices[:, 0]] = peak
    return probs


def reference_lb(probs, indices, num_experts):
    fraction = np.bincount(indices.ravel(), minlength=num_experts) / indices.size
    return num_experts * float(np.sum(fraction * probs.mean(0)))


@pytest.mark.parametrize("num_experts, top_k", [(4, 1), (4, 2), (8, 2), (3, 3)])
def test_uniform_router_gives_one(num_experts, top_k):
    batch = 2 * num_experts
    probs = np.full((batch, num_experts), 1.0 / num_experts)
    # Balanced assignment: every expert gets the same number of slots.
    indices = (np.arange(batch)[:, None] + np.arange(top_k)[None, :]) % num_experts
    assert lb(probs, indices, num_experts) == pytest.approx(1.0, abs=1e-6)


def test_balanced_assignment_gives_one_whatever_the_probabilities():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), 8)
    indices = np.array([[0], [1], [2], [3], [3], [2], [1], [0]])
    assert lb(probs, indices, 4) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("num_experts", [2, 4, 16])
def test_collapsed_router_gives_num_experts(num_experts):
    probs = np.zeros((6, num_experts))
    probs[:, 2 % num_experts] = 1.0
    indices = np.full((6, 1), 2 % num_experts)
    assert lb(probs, indices, num_experts) == pytest.approx(num_experts, rel=1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_any_imbalance_costs_more_than_balance(seed):
    """A router whose probabilities agree with its choices (top-1 is the most
    probable expert) pays > 1 as soon as the slots are unevenly shared."""
    rng = np.random.default_rng(seed)
    num_experts = 4
    counts = rng.multinomial(12, rng.dirichlet(np.ones(num_experts)))
    if (counts == counts[0]).all():
        counts = np.array([4, 4, 3, 1])
    indices = np.repeat(np.arange(num_experts), counts)[:, None]
    for peak in (0.3, 0.6, 0.99):
        probs = peaked_probs(indices, num_experts, peak)
        value = lb(probs, indices, num_experts)
        assert value > 1.0
        assert value == pytest.approx(reference_lb(probs, indices, num_experts), rel=1e-5)


def test_balance_loss_matches_numpy_reference():
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(6), 10)
    indices = np.argsort(-probs, axis=-1)[:, :2]
    assert lb(probs, indices, 6) == pytest.approx(reference_lb(probs, indices, 6), rel=1e-5)


def test_z_loss_matches_numpy_and_is_finite_for_huge_logits():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(5, 4)).astype("float32")
    expected = np.mean(np.log(np.exp(logits.astype("float64")).sum(-1)) ** 2)
    assert float(router_z_loss(logits)) == pytest.approx(expected, rel=1e-5)
    huge = np.array([[1e4, -1e4, 0.0, 1e4], [-1e4, -1e4, -1e4, -1e4]], "float32")
    value = float(router_z_loss(huge))
    assert np.isfinite(value)
    # logsumexp = 1e4 + log 2 and -1e4 + log 4.
    expected = ((1e4 + np.log(2)) ** 2 + (-1e4 + np.log(4)) ** 2) / 2
    assert value == pytest.approx(expected, rel=1e-6)
    half = float(router_z_loss(ops.cast(huge, "bfloat16")))
    assert np.isfinite(half)


def test_regularizer_combines_weighted_losses():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(8, 4)).astype("float32")
    probs = ops.convert_to_numpy(ops.softmax(logits))
    indices = np.argsort(-probs, axis=-1)[:, :2].astype("int32")
    regularizer = LoadBalancingRegularizer(4, weight=0.3, z_loss_weight=0.02)
    out = {k: float(v) for k, v in regularizer(probs, indices, logits).items()}
    assert out["lb_loss"] == pytest.approx(lb(probs, indices, 4), rel=1e-6)
    assert out["z_loss"] == pytest.approx(float(router_z_loss(logits)), rel=1e-6)
    assert out["loss"] == pytest.approx(0.3 * out["lb_loss"] + 0.02 * out["z_loss"], rel=1e-6)


def test_regularizer_config_round_trip_and_no_weights():
    regularizer = LoadBalancingRegularizer(6, weight=0.5, z_loss_weight=1e-3)
    restored = assert_config_round_trip(regularizer)
    assert (restored.num_experts, restored.weight, restored.z_loss_weight) == (6, 0.5, 1e-3)
    assert trainable_count(regularizer) == 0 and not regularizer.weights


def test_regularizer_symbolic_call():
    regularizer = LoadBalancingRegularizer(4)
    out = regularizer(
        keras.KerasTensor((None, 4)),
        keras.KerasTensor((None, 2), dtype="int32"),
        keras.KerasTensor((None, 4)),
    )
    assert set(out) == {"lb_loss", "z_loss", "loss"}
    assert all(tuple(v.shape) == () and v.dtype == "float32" for v in out.values())


def test_regularizer_computes_in_float32_under_mixed_precision(mixed_bfloat16):
    """Under `mixed_bfloat16` the router's float32 outputs must not be rounded
    to bfloat16 on their way into the losses."""
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(16, 4)).astype("float32")
    logits[0] = [1e4, -1e4, 3.0, 0.0]
    probs = ops.convert_to_numpy(ops.softmax(logits))
    indices = np.argsort(-probs, axis=-1)[:, :2].astype("int32")
    out = LoadBalancingRegularizer(4, weight=1.0, z_loss_weight=1.0)(probs, indices, logits)
    for value in out.values():
        assert keras.backend.standardize_dtype(value.dtype) == "float32"
    assert float(out["lb_loss"]) == pytest.approx(reference_lb(probs, indices, 4), rel=1e-6)
    assert float(out["z_loss"]) == pytest.approx(float(router_z_loss(logits)), rel=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"weight": -0.1}, "weight=-0.1"), ({"z_loss_weight": -1.0}, "z_loss_weight=-1.0")],
)
def test_negative_weights_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LoadBalancingRegularizer(4, **kwargs)


def test_docstring_examples_run():
    result = doctest.testmod(balancing_module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
