"""Token-level experts (`TokenExperts`, `build_moe_chronos(level="token")`):
exact upcycled start, sparse dispatch against the dense reference, gradients,
balance statistics without padding, cached decoding, saving, bad input."""

import json

import keras
import numpy as np
import pytest
from keras import ops

from chronos_moe import ChronosMoE, ChronosT5, build_moe_chronos
from chronos_moe.models.chronos_t5 import masked_cross_entropy
from chronos_moe.moe import model as model_module
from chronos_moe.moe.token_experts import (
    TokenExperts,
    dense_reference,
    recording_routes,
    tile_size,
)
from tests.moe.helpers import TINY_CHRONOS, assert_config_round_trip, make_batch
from tests.moe.test_chronos_moe import gradients
from tests.test_parity_t5 import cached_logits

EXPERTS, TOP_K = 8, 2


def small_base(feed_forward_proj="relu", scale=2.0, seed=0, **overrides):
    """A two-layer Chronos T5 (d_model 32) whose weights are scaled up, so that
    logits are far from zero and a wrong expert shows."""
    settings = {
        "vocab_size": 64,
        "d_model": 32,
        "d_ff": 64,
        "d_kv": 8,
        "num_heads": 4,
        "num_layers": 2,
        "dropout_rate": 0.0,
        "feed_forward_proj": feed_forward_proj,
        "chronos_config": TINY_CHRONOS,
    }
    keras.utils.set_random_seed(seed)  # the same model whatever the test order
    base = ChronosT5(**{**settings, **overrides})
    rng = np.random.default_rng(seed)
    for variable in base.weights:
        value = ops.convert_to_numpy(variable)
        variable.assign((value * scale + 0.05 * rng.normal(size=value.shape)).astype("float32"))
    return base


def logits_of(model, batch):
    out = model(batch)
    return ops.convert_to_numpy(out["logits"] if isinstance(out, dict) else out)


def perturb_experts(moe, seed=1):
    """Non-zero routed output projections: the experts now change the output."""
    rng = np.random.default_rng(seed)
    for layer in moe.token_layers:
        layer.wo.assign(rng.normal(0, 0.3, layer.wo.shape).astype("float32"))


# ---- function-preserving start -------------------------------------------------------


@pytest.mark.parametrize(
    "feed_forward_proj,shared_expert,top_k",
    [("relu", True, 2), ("gated-gelu", True, 1), ("relu", False, 2), ("gated-gelu", False, 1)],
)
def test_upcycled_model_has_the_dense_logits(feed_forward_proj, shared_expert, top_k):
    base = small_base(feed_forward_proj)
    batch = make_batch()
    dense = logits_of(base, batch)
    moe = build_moe_chronos(
        base, EXPERTS, top_k, level="token", shared_expert=shared_expert, moe_every=1
    )
    assert len(moe.token_layers) == 4 and moe.base is not base
    assert np.abs(dense).max() > 5  # logits far from zero
    # With a shared expert the routed experts add exactly zero; without one
    # the k copies are mixed by gates summing to 1, equal up to rounding of
    # the (differently ordered) products, which the scaled weights amplify
    # through the layers: relative to the logits' size.
    atol = 1e-5 if shared_expert else 1e-4 * np.abs(dense).max()
    np.testing.assert_allclose(logits_of(moe, batch), dense, rtol=0, atol=atol)
    perturb_experts(moe)  # the test can fail: experts that act change the logits
    assert np.abs(logits_of(moe, batch) - dense).max() > 1e-2


def test_moe_every_other_block_and_narrow_experts():
    base = small_base()
    moe = build_moe_chronos(base, EXPERTS, TOP_K, level="token", moe_every=2, expert_hidden_dim=16)
    names = [
        block.name
        for block in moe.base.encoder_blocks + moe.base.decoder_blocks
        if isinstance(block.feed_forward, TokenExperts)
    ]
    assert names == ["encoder_block_0", "decoder_block_0"]
    assert tuple(moe.token_layers[0].wi.shape) == (EXPERTS, 32, 16)
    batch = make_batch()
    np.testing.assert_allclose(logits_of(moe, batch), logits_of(base, batch), rtol=0, atol=1e-5)


# ---- dispatch ---------------------------------------------------------------------------


@pytest.mark.parametrize("feed_forward_proj", ["relu", "gated-gelu"])
@pytest.mark.parametrize("rows,top_k", [(5, 1), (5, 3), (300, 2)])
def test_dispatch_equals_the_dense_reference(feed_forward_proj, rows, top_k):
    layer = TokenExperts(
        EXPERTS, top_k, intermediate_dim=12, hidden_dim=8, feed_forward_proj=feed_forward_proj
    )
    layer.build()
    rng = np.random.default_rng(rows)
    layer.wo.assign(rng.normal(size=layer.wo.shape).astype("float32"))
    tokens = rng.normal(size=(rows, 8)).astype("float32")
    routing = layer.route(tokens)
    sparse = ops.convert_to_numpy(
        layer.dispatch(tokens, routing["expert_indices"], routing["gates"])
    )
    dense = ops.convert_to_numpy(
        dense_reference(layer, tokens, routing["expert_indices"], routing["gates"])
    )
    assert np.abs(dense).max() > 1
    np.testing.assert_allclose(sparse, dense, rtol=0, atol=1e-5)


def test_dispatch_layout_grows_with_top_k_not_num_experts():
    # Training-sized inputs: tiles of 128; the padded layout holds at most
    # rows·k + N·(S − 1) slots, so 4× the experts add only their padding.
    for experts in (8, 32):
        size = tile_size(16384 * 2, experts)
        assert size == 128
        capacity = 16384 * 2 + experts * (size - 1)
        assert capacity / (16384 * 2) < 1.13
    # A decoding step (20 rows): about one slot per gathered weight copy.
    assert tile_size(40, 8) <= 2


# ---- gradients and balance statistics ----------------------------------------------------


def ce_of(batch):
    return lambda out: masked_cross_entropy(batch["labels"], out["logits"])


@pytest.mark.parametrize("top_k", [1, 2])
def test_gradients_reach_router_and_experts(top_k):
    base = small_base()
    moe = build_moe_chronos(base, EXPERTS, top_k, level="token")
    batch = make_batch()
    layer = "encoder_block_0/feed_forward"

    def grad(grads, name):
        (key,) = [key for key in grads if key.endswith(f"{layer}/{name}")]
        return grads[key]

    grads = gradients(moe, ce_of(batch), batch)
    # Step 0 (wo = 0): the routed output projections learn, wi and the router
    # get no CE gradient yet (see docs/moe.md).
    assert np.abs(grad(grads, "wo")).max() > 1e-6
    assert np.abs(grad(grads, "wi")).max() == 0
    perturb_experts(moe)
    grads = gradients(moe, ce_of(batch), batch)
    for name in ("wi", "wo", "router"):
        assert np.abs(grad(grads, name)).max() > 1e-6, name


def test_padding_is_excluded_from_the_balance_statistics():
    layer = TokenExperts(4, 1, intermediate_dim=4, hidden_dim=2, balance_window=1)
    layer.build()
    indices = np.array([[[0], [1], [2], [3], [0], [0]]], "int32")  # (1, 6, 1)
    mask = np.array([[True, True, True, True, False, False]])
    layer.update_balance(indices, mask)
    np.testing.assert_allclose(ops.convert_to_numpy(layer.expert_load), [0.25] * 4, atol=1e-7)
    np.testing.assert_allclose(ops.convert_to_numpy(layer.selection_bias), [0] * 4, atol=1e-7)
    layer.update_balance(indices)  # unmasked: expert 0 has half of the slots
    assert ops.convert_to_numpy(layer.expert_load)[0] == pytest.approx(0.5)
    assert ops.convert_to_numpy(layer.selection_bias)[0] < 0


def test_training_steps_reduce_the_loss_and_log_the_losses():
    base = small_base(scale=1.0)
    moe = build_moe_chronos(base, 4, 2, level="token", router_z_loss_weight=1e-3)
    batch = make_batch()
    moe.compile(optimizer=keras.optimizers.Adam(3e-3))
    history = moe.fit(batch, epochs=8, batch_size=8, verbose=0).history
    assert {"ce_loss", "lb_loss", "z_loss", "expert_0"} <= set(history)
    assert history["ce_loss"][-1] < history["ce_loss"][0] - 0.05
    assert 1.0 <= history["lb_loss"][0] < 4.0
    loads = [ops.convert_to_numpy(layer.expert_load) for layer in moe.token_layers]
    assert any(np.abs(load - 0.25).max() > 1e-4 for load in loads)  # balance state moved


def test_router_is_float32_under_mixed_precision(mixed_bfloat16):
    base = small_base(scale=1.0)
    moe = build_moe_chronos(base, 4, 2, level="token")
    layer = moe.token_layers[0]
    assert layer.router.dtype == "float32" and layer.compute_dtype == "bfloat16"
    with recording_routes() as records:
        out = layer(np.ones((2, 3, 32), "float32"))
    assert keras.backend.standardize_dtype(records[0]["router_probs"].dtype) == "float32"
    assert ops.convert_to_numpy(out).dtype.name == "bfloat16"


# ---- decoding and saving ---------------------------------------------------------------


def test_cached_decoding_equals_the_full_pass():
    # Each new token is routed on its own in the cached path. (Unscaled
    # weights: the scaled ones amplify rounding for the dense model too.)
    base = small_base(scale=1.0)
    moe = build_moe_chronos(base, EXPERTS, TOP_K, level="token")
    perturb_experts(moe)
    batch = make_batch()
    decoder_input_ids = np.concatenate(
        [np.zeros((8, 1), "int32"), np.maximum(batch["labels"][:, :-1], 0)], axis=1
    )
    inputs = {**batch, "decoder_input_ids": decoder_input_ids}
    full = logits_of(moe, inputs)
    cached = cached_logits(moe.base, batch["input_ids"], batch["attention_mask"], decoder_input_ids)
    np.testing.assert_allclose(cached, full, rtol=0, atol=1e-4)


def test_keras_save_and_config_round_trip(tmp_path):
    moe = build_moe_chronos(small_base(), EXPERTS, TOP_K, level="token", moe_every=2)
    perturb_experts(moe)
    batch = make_batch()
    moe.token_layers[0].selection_bias.assign(np.arange(EXPERTS, dtype="float32") / 100)
    path = tmp_path / "token.keras"
    moe.save(path)
    restored = keras.saving.load_model(path)
    assert isinstance(restored, ChronosMoE) and restored.level == "token"
    assert len(restored.token_layers) == 2
    np.testing.assert_allclose(logits_of(restored, batch), logits_of(moe, batch), atol=1e-6)
    np.testing.assert_array_equal(
        ops.convert_to_numpy(restored.token_layers[0].selection_bias),
        np.arange(EXPERTS, dtype="float32") / 100,
    )
    layer = moe.token_layers[0]
    assert_config_round_trip(layer)
    json.dumps(moe.get_config())


def test_save_pretrained_round_trip(tmp_path):
    from chronos_moe.checkpoints import load_chronos, save_chronos

    moe = build_moe_chronos(
        small_base("gated-gelu"), EXPERTS, TOP_K, level="token", moe_every=2, shared_expert=True
    )
    perturb_experts(moe)
    save_chronos(moe, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())["chronos_moe_config"]
    assert config["level"] == "token" and config["moe_every"] == 2 and config["shared_expert"]
    restored = load_chronos(tmp_path)
    assert restored.level == "token" and len(restored.token_layers) == 2
    batch = make_batch()
    np.testing.assert_allclose(logits_of(restored, batch), logits_of(moe, batch), atol=1e-5)


# ---- bad input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arguments,message",
    [
        ({"num_experts": 2, "top_k": 3}, "top_k"),
        ({"num_experts": 0, "top_k": 1}, "num_experts"),
        ({"load_balancing_mode": "lossless"}, "load_balancing_mode"),
        ({"bias_update_rate": 0.0}, "bias_update_rate"),
        ({"bias_update_rate": -1e-3}, "bias_update_rate"),
        ({"level": "layer"}, "level"),
        ({"moe_every": 0}, "moe_every"),
    ],
)
def test_bad_arguments_are_named_before_any_model_is_built(monkeypatch, arguments, message):
    base = small_base(scale=1.0)

    def no_model(*args, **kwargs):
        raise AssertionError("a model was built")

    monkeypatch.setattr(model_module, "ChronosMoE", no_model)
    arguments = {"num_experts": 4, "top_k": 2, "level": "token", **arguments}
    with pytest.raises(ValueError, match=message):
        build_moe_chronos(base, **arguments)


def test_an_unknown_feed_forward_type_is_named(monkeypatch):
    base = small_base(scale=1.0)
    base.feed_forward_proj = "swiglu"  # e.g. a hand-edited model
    monkeypatch.setattr(model_module, "ChronosMoE", None)
    with pytest.raises(ValueError, match="feed_forward_proj='swiglu'"):
        build_moe_chronos(base, 4, 2, level="token")


def test_narrow_experts_need_a_shared_expert():
    with pytest.raises(ValueError, match="expert_hidden_dim"):
        build_moe_chronos(
            small_base(scale=1.0), 4, 2, level="token", shared_expert=False, expert_hidden_dim=16
        )


# ---- pipeline and routing analysis -------------------------------------------------------


def test_pipeline_forecasts_and_routing_analysis(tmp_path):
    from chronos_moe import ChronosPipeline
    from chronos_moe.evaluation.routing import analyze_routing, write_routing_report

    base = small_base(scale=1.0)
    dense_forecast = ChronosPipeline(base).predict([np.arange(40.0)], num_samples=3, seed=0)
    moe = build_moe_chronos(base, 4, 2, level="token")
    pipeline = ChronosPipeline(moe)
    # The upcycled model samples the dense model's forecasts.
    forecast = pipeline.predict([np.arange(40.0)], num_samples=3, seed=0)
    np.testing.assert_allclose(forecast, dense_forecast, rtol=1e-6)
    data = {"ramps": [np.arange(40.0), np.arange(30.0) * 3], "flat": [np.ones(20)]}
    analysis = analyze_routing(pipeline, data)
    assert analysis.layer_shares.shape == (3, 2, 4)  # series, encoder expert layers, experts
    np.testing.assert_allclose(analysis.layer_utilization.sum(axis=1), 1.0, atol=1e-6)
    assert analysis.expert_indices.shape == (3, 2)
    report = write_routing_report(analysis, tmp_path).read_text()
    assert "## Expert layers (token level)" in report and "![expert layers](layers.png)" in report
    assert (tmp_path / "utilization.png").stat().st_size > 0
    assert (tmp_path / "layers.png").stat().st_size > 0


def test_backend_grouped_matmul_equals_its_reference():
    from chronos_moe import backend
    from chronos_moe.moe.token_experts import grouped_matmul_reference

    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 4)).astype("float32")
    weights = rng.normal(size=(3, 4, 5)).astype("float32")
    sizes = np.array([4, 0, 6], "int32")  # an expert without rows included
    expected = ops.convert_to_numpy(grouped_matmul_reference(x, weights, sizes))
    np.testing.assert_allclose(expected[:4], x[:4] @ weights[0], rtol=1e-6)
    actual = backend.grouped_matmul(x, weights, sizes)
    if actual is None:  # JAX: the tiled dispatch runs (tested against the dense reference)
        assert keras.config.backend() == "jax"
        return
    np.testing.assert_allclose(ops.convert_to_numpy(actual), expected, rtol=1e-6, atol=1e-6)
