"""ContextRouter: masked-mean pooling, top-k choice, renormalised gates, float32."""

import doctest
import functools

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
    for weight in router.trainable_weights:
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
    # The layer norm and the feature norm (scale, offset each), then two dense
    # layers: (d_model -> hidden) and (hidden -> experts), with biases.
    assert len(router.trainable_weights) == 8
    expected = 4 * D_MODEL + D_MODEL * HIDDEN + HIDDEN + HIDDEN * EXPERTS + EXPERTS
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
    # The logits are the MLP of the pooled context, layer-normalised, then
    # standardised per feature with the moving statistics (inference).
    normalised = (pooled - pooled.mean(-1, keepdims=True)) / np.sqrt(
        pooled.var(-1, keepdims=True) + 1e-6
    )
    gamma, beta = (ops.convert_to_numpy(w) for w in (router.norm.gamma, router.norm.beta))
    normalised = normalised * gamma + beta
    norm = router.feature_norm
    mean, var, gamma, beta = (
        ops.convert_to_numpy(w)
        for w in (norm.moving_mean, norm.moving_variance, norm.gamma, norm.beta)
    )
    standardised = (normalised - mean) / np.sqrt(var + 1e-6) * gamma + beta
    expected = ops.convert_to_numpy(router.logits(router.hidden(standardised)))
    np.testing.assert_allclose(out["router_logits"], expected, rtol=1e-4, atol=1e-5)
    # Without the norm, the MLP reads the pooled context itself (earlier checkpoints).
    plain = make_router(input_norm=False)
    expected = ops.convert_to_numpy(plain.logits(plain.hidden(pooled)))
    np.testing.assert_allclose(
        numpy_outputs(plain(states, mask))["router_logits"], expected, rtol=1e-5, atol=1e-6
    )


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
        ({"num_experts": 4, "top_k": 2, "balance_mode": "aux"}, "load_balancing_mode='aux'"),
        ({"num_experts": 4, "top_k": 2, "balance_window": 0}, "load_balancing_window=0"),
        ({"num_experts": 4, "top_k": 2, "bias_update_rate": 0.0}, "bias_update_rate=0.0"),
        ({"num_experts": 4, "top_k": 2, "bias_update_rate": -1e-3}, "bias_update_rate=-0.001"),
    ],
)
def test_invalid_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ContextRouter(**kwargs)


def test_docstring_examples_run():
    result = doctest.testmod(router_module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


# ---- diverse routes from step 0 --------------------------------------------------------


@functools.lru_cache(maxsize=2)
def encoded_demo_series(num_series=64, drift=0.0):
    """Encoder states of very different generated series (scales from 0.1 to
    1e4, trends, seasonalities, level shifts) through a fresh tiny Chronos,
    plus `drift` times one vector shared by every state (what the first
    training steps do to a fresh encoder: every series' states move the same
    way)."""
    from chronos_moe.data import generate_sample_series
    from chronos_moe.tokenizer import MeanScaleUniformBins
    from tests.moe.helpers import tiny_base

    keras.utils.set_random_seed(0)
    base = tiny_base()
    tokenizer = MeanScaleUniformBins.from_config(base.chronos_config)
    series = np.stack([s[-32:] for s in generate_sample_series(num_series, 200, seed=3)])
    ids, mask, _ = tokenizer.context_input_transform(series)
    states = ops.convert_to_numpy(base.encode(ids, mask))
    shared = np.random.default_rng(0).normal(size=states.shape[-1]).astype("float32")
    return states + drift * shared, mask


def most_common_route_share(out):
    """The share of the series that get the most common set of experts."""
    routes = [tuple(sorted(row)) for row in out["expert_indices"].tolist()]
    return max(routes.count(route) for route in set(routes)) / len(routes)


def distinct_routes(out):
    return len({tuple(sorted(row)) for row in out["expert_indices"].tolist()})


SEEDS = range(1, 9)  # router initialisations: one draw can be lopsided, eight are not


def step_0_routes(drift: float, input_norm: bool = True) -> list[dict[str, np.ndarray]]:
    """The first training call's outputs of a fresh router per seed in `SEEDS`."""
    states, mask = encoded_demo_series(drift=drift)
    outputs = []
    for seed in SEEDS:
        keras.utils.set_random_seed(seed)
        router = ContextRouter(4, 2, input_norm=input_norm)
        outputs.append(numpy_outputs(router(states, mask, training=True)))
    return outputs


def spread(out) -> float:
    """How much the router probabilities differ between series."""
    return float(out["router_probs"].std(0).mean())


@pytest.mark.parametrize("drift", [0.0, 5.0])
def test_training_routes_are_diverse_from_step_0(drift):
    outs = step_0_routes(drift)
    # Every expert is chosen for some series (but for an occasional lopsided
    # draw), and no set of experts takes most of the series.
    every_expert = [set(out["expert_indices"].ravel().tolist()) == {0, 1, 2, 3} for out in outs]
    assert sum(every_expert) >= 6, every_expert
    assert np.mean([most_common_route_share(out) for out in outs]) <= 0.6
    assert np.mean([spread(out) for out in outs]) > 0.1


def test_the_first_training_call_sets_the_moving_statistics():
    """Not the (0, 1) start: the pooled states' per-feature variance is ~1e-2 to
    1e-4, which a start of 1 would outweigh for ~100 steps of momentum 0.9."""
    states, mask = encoded_demo_series(drift=5.0)
    keras.utils.set_random_seed(1)
    router = ContextRouter(4, 2)
    router(states, mask)  # inference leaves the statistics alone
    np.testing.assert_array_equal(ops.convert_to_numpy(router.feature_norm.moving_variance), 1.0)
    router(states, mask, training=True)
    pooled = masked_mean(ops.convert_to_tensor(states), ops.convert_to_tensor(mask))
    context = ops.convert_to_numpy(router.norm(pooled))
    norm = router.feature_norm
    # float32 means of the same values summed in another order (the model's
    # reduction against numpy's) differ by a few ulps: ~5e-7 relative at values ~3.
    np.testing.assert_allclose(
        ops.convert_to_numpy(norm.moving_mean), context.mean(0), rtol=2e-6, atol=1e-6
    )
    np.testing.assert_allclose(
        ops.convert_to_numpy(norm.moving_variance), context.var(0), rtol=1e-2, atol=1e-6
    )
    assert ops.convert_to_numpy(router.statistics_initialised).tolist() == [1.0]


def test_inference_routes_use_the_statistics_seen_in_training():
    states, mask = encoded_demo_series(drift=5.0)
    keras.utils.set_random_seed(1)
    router = ContextRouter(4, 2)
    for _ in range(40):  # the moving statistics (momentum 0.9) settle
        router(states, mask, training=True)
    out = numpy_outputs(router(states, mask))
    assert set(out["expert_indices"].ravel().tolist()) == {0, 1, 2, 3}
    assert distinct_routes(out) >= 3


def test_a_shared_drift_of_the_encoder_states_collapses_the_plain_router():
    """The failure the normalisation removes: once every series' states move the
    same way, the router without it hardly tells the series apart."""
    plain, normed = step_0_routes(5.0, input_norm=False), step_0_routes(5.0)
    plain_share = np.mean([most_common_route_share(out) for out in plain])
    normed_share = np.mean([most_common_route_share(out) for out in normed])
    assert plain_share >= 0.85
    assert normed_share < plain_share - 0.25
    assert np.mean([spread(out) for out in normed]) > 2 * np.mean([spread(out) for out in plain])


# ---- balancing: the selection bias and the windowed load ----------------------------


def shares_of(indices, num_experts=EXPERTS):
    counts = np.bincount(np.asarray(indices).ravel(), minlength=num_experts)
    return counts / counts.sum()


@pytest.mark.parametrize("rate", [1e-3, 0.05])
def test_bias_moves_by_gamma_against_this_steps_load(rate):
    router = make_router(top_k=2, balance_mode="bias", bias_update_rate=rate)
    bias = np.zeros(EXPERTS, "float32")
    for step in range(3):
        out = numpy_outputs(router(*make_inputs(seed=step, batch=16), training=True))
        shares = shares_of(out["expert_indices"])
        # Overloaded experts (share above the mean 1/N) lose γ, idle ones gain γ.
        bias = bias + rate * np.sign(1 / EXPERTS - shares)
        np.testing.assert_allclose(ops.convert_to_numpy(router.selection_bias), bias, atol=1e-7)
    assert (bias != 0).any()


def test_bias_selects_but_does_not_weigh():
    router = make_router(top_k=2)
    states, mask = make_inputs(batch=8)
    before = numpy_outputs(router(states, mask))
    router.selection_bias.assign(np.array([0, 0, 0, 0, 0, 10], "float32"))
    out = numpy_outputs(router(states, mask))
    # Expert 5 is chosen for every series, by the bias alone ...
    assert (out["expert_indices"][:, 0] == 5).all()
    # ... but the probabilities and the gates are the unbiased ones.
    np.testing.assert_array_equal(out["router_probs"], before["router_probs"])
    chosen = np.take_along_axis(out["router_probs"], out["expert_indices"], axis=-1)
    np.testing.assert_allclose(out["gates"], chosen / chosen.sum(-1, keepdims=True), rtol=1e-6)


@pytest.mark.parametrize("mode", ["loss", "bias", "loss_and_bias"])
def test_state_moves_only_in_training_and_the_bias_only_in_its_modes(mode):
    router = make_router(balance_mode=mode, bias_update_rate=0.1)
    router(*make_inputs())  # inference: nothing moves
    np.testing.assert_array_equal(ops.convert_to_numpy(router.selection_bias), 0.0)
    np.testing.assert_allclose(ops.convert_to_numpy(router.expert_load), 1 / EXPERTS)
    router(*make_inputs(), training=True)
    moved = np.abs(ops.convert_to_numpy(router.selection_bias)).max() > 0
    assert moved == (mode != "loss")


@pytest.mark.parametrize("window", [1, 5])
def test_expert_load_is_the_moving_average_of_the_shares(window):
    router = make_router(top_k=2, balance_window=window)
    load = np.full(EXPERTS, 1 / EXPERTS)
    for step in range(4):
        out = numpy_outputs(router(*make_inputs(seed=step, batch=16), training=True))
        load = load + (shares_of(out["expert_indices"]) - load) / window
        np.testing.assert_allclose(ops.convert_to_numpy(router.expert_load), load, rtol=1e-6)
    np.testing.assert_allclose(load.sum(), 1.0, rtol=1e-6)
    if window == 1:  # the last step's shares alone
        np.testing.assert_allclose(load, shares_of(out["expert_indices"]))


def gate_gradient(router, states, mask):
    """d sum(gates) / d (the router's logit biases), with the backend's autodiff."""
    bias = router.logits.bias
    if keras.config.backend() == "jax":
        import jax

        def total(value):
            with keras.StatelessScope(state_mapping=[(bias, value)]):
                return router(states, mask)["gates"].sum()

        return np.asarray(jax.grad(total)(bias.value))
    bias.value.grad = None
    ops.sum(router(states, mask)["gates"]).backward()
    return bias.value.grad.numpy()


def test_top1_gate_is_one_with_the_gradient_of_the_raw_probability():
    router = make_router(top_k=1)
    states, mask = make_inputs()
    out = numpy_outputs(router(states, mask))
    np.testing.assert_array_equal(out["gates"], 1.0)  # function-preserving
    # The Switch gate's gradient: d p_top / d logits = p_top (onehot - p), where
    # the renormalised p_top / p_top would give zero.
    p = out["router_probs"]
    top = np.take_along_axis(p, out["expert_indices"], axis=-1)
    onehot = np.eye(EXPERTS)[out["expert_indices"][:, 0]]
    expected = (top * (onehot - p)).sum(0)
    np.testing.assert_allclose(gate_gradient(router, states, mask), expected, atol=1e-6)
    assert np.abs(expected).max() > 1e-2
