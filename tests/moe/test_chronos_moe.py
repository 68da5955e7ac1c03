"""ChronosMoE and build_moe_chronos: function-preserving start, training with
logged CE/LB, sparse gradients, routing through the pipeline, persistence."""

import doctest
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from keras import ops

from chronos_moe import ChronosMoE, ChronosPipeline, build_moe_chronos
from chronos_moe.models.chronos_t5 import masked_cross_entropy
from chronos_moe.moe import build as build_module
from chronos_moe.moe import model as model_module
from chronos_moe.moe.balancing import load_balancing_loss, router_z_loss
from tests.moe.helpers import assert_config_round_trip, make_batch, tiny_base, trainable_count

EXPERTS, TOP_K = 4, 2


def logits_of(model, batch):
    out = model(batch)
    return ops.convert_to_numpy(out["logits"] if isinstance(out, dict) else out)


def series_batch(seed=0):
    """Five series of different lengths and shapes, one of them all NaN."""
    rng = np.random.default_rng(seed)
    t = np.arange(40.0)
    return [
        10 + np.sin(t / 3) + 0.1 * rng.normal(size=40),
        np.cumsum(rng.normal(size=25)),
        np.r_[np.full(10, np.nan), 5 * np.cos(t[:30] / 2)],
        np.full(12, np.nan),
        100 * rng.random(40),
    ]


def gradients(model, loss_fn, inputs):
    """Gradients of `loss_fn(model(inputs))` w.r.t. the trainable variables,
    by path, with the backend's own autodiff (inference mode: no dropout)."""
    variables = model.trainable_variables
    if keras.config.backend() == "jax":
        import jax

        def loss_of(values):
            non_trainable = [v.value for v in model.non_trainable_variables]
            outputs, _ = model.stateless_call(values, non_trainable, inputs)
            return loss_fn(outputs)

        grads = jax.jit(jax.grad(loss_of))([v.value for v in variables])
    else:
        for variable in variables:
            variable.value.grad = None
        loss_fn(model(inputs)).backward()
        grads = [
            v.value.grad if v.value.grad is not None else ops.zeros(v.shape) for v in variables
        ]
    return {v.path: ops.convert_to_numpy(g) for v, g in zip(variables, grads, strict=True)}


# ---- function-preserving start -------------------------------------------------------


@pytest.mark.parametrize("tie_word_embeddings", [True, False])
def test_fresh_moe_has_the_base_logits(tie_word_embeddings):
    base = tiny_base(tie_word_embeddings=tie_word_embeddings)
    assert (base.lm_head is None) == tie_word_embeddings
    moe = build_moe_chronos(base, EXPERTS, TOP_K)
    batch = make_batch()
    routes = ops.convert_to_numpy(moe(batch)["expert_indices"])
    assert routes.shape == (8, TOP_K)
    np.testing.assert_allclose(logits_of(moe, batch), logits_of(base, batch), rtol=0, atol=1e-5)


@pytest.mark.parametrize("tie_word_embeddings", [True, False])
def test_expert_heads_keep_the_base_head_parametrisation(tie_word_embeddings):
    """Each expert head holds the base head's own weights (the tied embedding,
    not the embedding pre-multiplied by d_model^-0.5), so an optimizer step of a
    given size moves expert heads as much as it moves the base head: a folded-in
    scale would multiply the experts' effective learning rate by sqrt(d_model)."""
    base = tiny_base(tie_word_embeddings=tie_word_embeddings)
    moe = build_moe_chronos(base, EXPERTS, TOP_K)
    if tie_word_embeddings:
        expected = ops.convert_to_numpy(base.shared.embeddings).T
        assert moe.experts.output_scale == pytest.approx(base.d_model**-0.5)
    else:
        expected = ops.convert_to_numpy(base.lm_head.kernel)
        assert moe.experts.output_scale == 1.0
    heads = ops.convert_to_numpy(moe.experts.head)
    for expert in range(EXPERTS):
        np.testing.assert_array_equal(heads[expert], expected)


def test_fresh_moe_forecasts_exactly_like_the_base():
    base = tiny_base()
    moe = build_moe_chronos(base, EXPERTS, TOP_K)
    series = series_batch()
    greedy = {"num_samples": 2, "top_k": 1, "seed": 0}
    np.testing.assert_array_equal(
        ChronosPipeline(moe).predict(series, **greedy),
        ChronosPipeline(base).predict(series, **greedy),
    )


def test_expert_init_noise_breaks_the_symmetry():
    base = tiny_base()
    batch = make_batch()
    noisy = build_moe_chronos(base, EXPERTS, TOP_K, expert_init_noise=0.1, seed=3)
    heads = ops.convert_to_numpy(noisy.experts.head)
    assert np.abs(heads[0] - heads[1]).max() > 1e-3
    assert np.abs(logits_of(noisy, batch) - logits_of(base, batch)).max() > 1e-3
    again = build_moe_chronos(base, EXPERTS, TOP_K, expert_init_noise=0.1, seed=3)
    np.testing.assert_array_equal(ops.convert_to_numpy(again.experts.head), heads)


# ---- training ------------------------------------------------------------------------


def test_fit_lowers_ce_and_logs_each_loss():
    weight, z_loss_weight = 0.05, 0.01
    moe = build_moe_chronos(
        tiny_base(),
        EXPERTS,
        TOP_K,
        load_balancing_weight=weight,
        router_z_loss_weight=z_loss_weight,
    )
    moe.compile(optimizer=keras.optimizers.AdamW(1e-3))
    data = make_batch(batch=16)
    before = moe.evaluate(data, batch_size=8, return_dict=True, verbose=0)
    history = moe.fit(data, batch_size=8, epochs=4, verbose=0).history
    after = moe.evaluate(data, batch_size=8, return_dict=True, verbose=0)

    keys = {"loss", "ce_loss", "lb_loss", "z_loss"} | {f"expert_{i}" for i in range(EXPERTS)}
    assert set(history) == keys
    assert set(before) == set(after) == keys
    assert all(len(values) == 4 for values in history.values())
    json.dumps({key: [float(v) for v in values] for key, values in history.items()})
    assert after["ce_loss"] < before["ce_loss"] - 0.5
    assert history["ce_loss"][-1] < history["ce_loss"][0]
    for logs in (*[{k: v[e] for k, v in history.items()} for e in range(4)], after):
        # Batches of equal size: the epoch mean of the total is the total of the means.
        expected = logs["ce_loss"] + weight * logs["lb_loss"] + z_loss_weight * logs["z_loss"]
        assert logs["loss"] == pytest.approx(expected, rel=1e-4)
        assert sum(logs[f"expert_{i}"] for i in range(EXPERTS)) == pytest.approx(1.0, abs=1e-5)


def test_z_loss_is_logged_only_when_weighted():
    """The trackers `fit` and `evaluate` log (the fit above covers the z case)."""
    without = build_moe_chronos(tiny_base(), EXPERTS, TOP_K)
    with_z = build_moe_chronos(tiny_base(), EXPERTS, TOP_K, router_z_loss_weight=1e-3)
    without_names = {metric.name for metric in without.metrics}
    assert without.z_tracker is None and "z_loss" not in without_names
    assert {"ce_loss", "lb_loss", "expert_utilization"} <= without_names
    assert {metric.name for metric in with_z.metrics} == without_names | {"z_loss"}


def test_compute_loss_is_ce_plus_weighted_regularisers():
    moe = build_moe_chronos(
        tiny_base(), EXPERTS, TOP_K, load_balancing_weight=0.3, router_z_loss_weight=0.02
    )
    batch = make_batch()
    y_pred = moe(batch)
    # Evaluation: the balance loss of this batch's shares (training: see
    # test_training_balance_loss_reads_the_windowed_load).
    loss = float(moe.compute_loss(x=batch, y_pred=y_pred, training=False))

    # Token cross-entropy over the labels that are not -100, as torch computes it.
    logits = ops.convert_to_numpy(y_pred["logits"]).astype("float64")
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    labels = batch["labels"]
    valid = labels != -100
    ce = -np.take_along_axis(log_probs, np.where(valid, labels, 0)[..., None], -1)[..., 0][valid]
    ce = ce.mean()
    routes = {k: ops.convert_to_numpy(v) for k, v in y_pred.items() if k != "logits"}
    lb = float(load_balancing_loss(routes["router_probs"], routes["expert_indices"], EXPERTS))
    z = float(router_z_loss(routes["router_logits"]))
    assert loss == pytest.approx(ce + 0.3 * lb + 0.02 * z, rel=1e-5)
    assert float(moe.ce_tracker.result()) == pytest.approx(ce, rel=1e-5)
    assert float(moe.lb_tracker.result()) == pytest.approx(lb, rel=1e-6)
    assert float(moe.z_tracker.result()) == pytest.approx(z, rel=1e-6)
    shares = np.bincount(routes["expert_indices"].ravel(), minlength=EXPERTS) / (8 * TOP_K)
    utilization = moe.utilization.result()
    np.testing.assert_allclose([float(utilization[f"expert_{i}"]) for i in range(EXPERTS)], shares)


def test_training_balance_loss_reads_the_windowed_load():
    moe = build_moe_chronos(tiny_base(), EXPERTS, TOP_K, load_balancing_window=4)
    batch = make_batch()
    y_pred = moe(batch, training=True)
    moe.compute_loss(x=batch, y_pred=y_pred, training=True)
    routes = {k: ops.convert_to_numpy(v) for k, v in y_pred.items() if k != "logits"}
    shares = np.bincount(routes["expert_indices"].ravel(), minlength=EXPERTS) / (8 * TOP_K)
    load = np.full(EXPERTS, 1 / EXPERTS) + (shares - 1 / EXPERTS) / 4
    np.testing.assert_allclose(ops.convert_to_numpy(moe.router.expert_load), load, rtol=1e-6)
    expected = EXPERTS * np.sum(load * routes["router_probs"].mean(0))
    assert float(moe.lb_tracker.result()) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(
    "mode, counted", [("loss", True), ("bias", False), ("loss_and_bias", True)]
)
def test_balance_loss_enters_the_loss_only_in_its_modes(mode, counted):
    moe = build_moe_chronos(
        tiny_base(), EXPERTS, TOP_K, load_balancing_weight=0.5, load_balancing_mode=mode
    )
    batch = make_batch()
    y_pred = moe(batch)
    loss = float(moe.compute_loss(x=batch, y_pred=y_pred, training=False))
    ce, lb = float(moe.ce_tracker.result()), float(moe.lb_tracker.result())
    assert lb > 0.5  # logged in every mode
    assert loss == pytest.approx(ce + (0.5 * lb if counted else 0.0), rel=1e-5)


def test_unchosen_expert_gets_exactly_zero_gradient():
    moe = build_moe_chronos(tiny_base(dropout_rate=0.0), EXPERTS, TOP_K)
    # Route every series to experts 1 and 3 (the router's output layer ignores
    # the context), and make each expert's residual block non-zero.
    moe.router.logits.kernel.assign(np.zeros(moe.router.logits.kernel.shape, "float32"))
    moe.router.logits.bias.assign(np.array([0.0, 5.0, -5.0, 4.0], "float32"))
    rng = np.random.default_rng(0)
    moe.experts.down.assign(rng.normal(0, 0.05, moe.experts.down.shape).astype("float32"))
    batch = make_batch()
    routes = ops.convert_to_numpy(moe(batch)["expert_indices"])
    assert set(routes.ravel().tolist()) == {1, 3}

    def loss_fn(out):
        ce = masked_cross_entropy(batch["labels"], out["logits"])
        regularizer = moe.regularizer(
            out["router_probs"], out["expert_indices"], out["router_logits"]
        )
        return ce + regularizer["loss"]

    grads = gradients(moe, loss_fn, batch)
    for name in ("up", "down", "head"):
        grad = grads[moe.experts.__getattribute__(name).path]
        for expert in (0, 2):
            assert not grad[expert].any(), (name, expert)
        for expert in (1, 3):
            assert np.abs(grad[expert]).max() > 1e-6, (name, expert)
    assert np.abs(grads[moe.router.logits.bias.path]).max() > 0  # the balance loss reaches P


@pytest.mark.parametrize("top_k", [1, 2, 3, 4])
def test_forecasting_loss_trains_the_router_for_every_k(top_k):
    """The CE alone (no balance loss) reaches the router's weights: through the
    Switch gate for k = 1 (a renormalised p / p would give ~1e-8), through the
    comparison of the chosen experts for k >= 2."""
    moe = build_moe_chronos(
        tiny_base(dropout_rate=0.0), EXPERTS, top_k, expert_init_noise=0.2, seed=1
    )
    rng = np.random.default_rng(0)
    moe.experts.down.assign(rng.normal(0, 0.05, moe.experts.down.shape).astype("float32"))
    batch = make_batch()

    def ce_only(out):
        return masked_cross_entropy(batch["labels"], out["logits"])

    grads = gradients(moe, ce_only, batch)
    for layer in (moe.router.logits, moe.router.hidden):
        assert np.abs(grads[layer.kernel.path]).max() > 1e-4, (layer.name, top_k)


@pytest.mark.parametrize("top_k", [1, 2])
def test_fresh_moe_has_the_base_logits_for_every_k(top_k):
    base = tiny_base()
    moe = build_moe_chronos(base, EXPERTS, top_k)
    batch = make_batch()
    np.testing.assert_allclose(logits_of(moe, batch), logits_of(base, batch), atol=1e-5)


def test_freeze_base_trains_only_router_and_experts():
    base = tiny_base()
    moe = build_moe_chronos(base, EXPERTS, TOP_K, freeze_base=True, expert_init_noise=0.05)
    router_and_experts = moe.router.trainable_weights + moe.experts.trainable_weights
    assert [w.path for w in moe.trainable_weights] == [w.path for w in router_and_experts]
    assert len(moe.trainable_weights) == 11  # router: norms (4) + MLP (4); experts: 3
    frozen = [ops.convert_to_numpy(w).copy() for w in base.weights]
    head = ops.convert_to_numpy(moe.experts.head).copy()
    moe.compile(optimizer=keras.optimizers.AdamW(1e-2))
    moe.fit(make_batch(), epochs=1, verbose=0)
    for before, weight in zip(frozen, base.weights, strict=True):
        np.testing.assert_array_equal(ops.convert_to_numpy(weight), before)
    assert np.abs(ops.convert_to_numpy(moe.experts.head) - head).max() > 0


def test_config_round_trip_and_weight_count():
    base = tiny_base(tie_word_embeddings=False)
    moe = build_moe_chronos(
        base, 6, 3, router_hidden_dim=16, expert_hidden_dim=32, router_z_loss_weight=0.1
    )
    restored = assert_config_round_trip(moe)
    assert isinstance(restored, ChronosMoE)
    assert (restored.num_experts, restored.top_k, restored.expert_hidden_dim) == (6, 3, 32)
    d, vocab = base.d_model, base.vocab_size
    router = 4 * d + d * 16 + 16 + 16 * 6 + 6  # two norms (scale, offset) + MLP
    experts = 6 * (d * 32 + 32 * d + d * vocab)
    assert (
        trainable_count(moe)
        == trainable_count(restored)
        == trainable_count(base) + router + experts
    )
    assert len(moe.trainable_weights) == len(base.trainable_weights) + 8 + 3
    # The feature norm's moving statistics and the balancing state: not
    # trained, but saved with the model.
    assert sorted(w.name for w in moe.router.non_trainable_weights) == [
        "expert_load",
        "moving_mean",
        "moving_variance",
        "selection_bias",
        "statistics_initialised",
    ]


# ---- routing through the pipeline ------------------------------------------------------


def test_pipeline_routes_every_series_and_permutes_with_the_batch():
    moe = build_moe_chronos(tiny_base(), EXPERTS, TOP_K)
    pipeline = ChronosPipeline(moe)
    series = series_batch()
    routes = pipeline.route(series)
    assert routes["expert_indices"].shape == (5, TOP_K)
    assert routes["router_probs"].shape == (5, EXPERTS)
    assert np.isfinite(routes["gates"]).all() and np.isfinite(routes["router_probs"]).all()
    np.testing.assert_allclose(routes["gates"].sum(-1), 1.0, atol=1e-6)
    for row in routes["expert_indices"]:  # the all-NaN series (row 3) included
        assert len(set(row.tolist())) == TOP_K and all(0 <= e < EXPERTS for e in row)
    order = [4, 2, 0, 3, 1]
    permuted = pipeline.route([series[i] for i in order])
    np.testing.assert_array_equal(permuted["expert_indices"], routes["expert_indices"][order])
    np.testing.assert_allclose(permuted["gates"], routes["gates"][order], rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError, match="ChronosMoE"):
        ChronosPipeline(tiny_base()).route(series)


def test_router_outputs_float32_in_a_mixed_precision_model(mixed_bfloat16):
    moe = build_moe_chronos(tiny_base(), EXPERTS, TOP_K)
    batch = make_batch()
    out = moe(batch)
    assert keras.backend.standardize_dtype(out["logits"].dtype) == "bfloat16"
    for key in ("gates", "router_probs", "router_logits"):
        assert keras.backend.standardize_dtype(out[key].dtype) == "float32", key
    loss = moe.compute_loss(x=batch, y_pred=out)
    assert keras.backend.standardize_dtype(loss.dtype) == "float32"
    assert np.isfinite(float(loss))


# ---- persistence ---------------------------------------------------------------------


@pytest.fixture
def trained_like_moe():
    """An MoE whose experts differ (noisy heads, random residual blocks), so a
    round trip that swapped or dropped expert weights would show."""
    moe = build_moe_chronos(
        tiny_base(), EXPERTS, TOP_K, expert_init_noise=0.2, seed=1, router_z_loss_weight=0.1
    )
    rng = np.random.default_rng(1)
    moe.experts.down.assign(rng.normal(0, 0.05, moe.experts.down.shape).astype("float32"))
    # Balancing state as training leaves it: a bias that changes some routes.
    moe.router.selection_bias.assign(np.array([0.0, 0.3, -0.2, 0.1], "float32"))
    moe.router.expert_load.assign(np.array([0.1, 0.2, 0.3, 0.4], "float32"))
    return moe


ROUTER_STATE = ("selection_bias", "expert_load")


def assert_same_router_state(loaded, moe):
    for name in ROUTER_STATE:
        np.testing.assert_array_equal(
            ops.convert_to_numpy(getattr(loaded.router, name)),
            ops.convert_to_numpy(getattr(moe.router, name)),
        )
    for weight, expected in zip(loaded.router.weights, moe.router.weights, strict=True):
        np.testing.assert_array_equal(ops.convert_to_numpy(weight), ops.convert_to_numpy(expected))


def test_keras_file_round_trip(trained_like_moe, tmp_path):
    moe = trained_like_moe
    path = tmp_path / "moe.keras"
    moe.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, ChronosMoE) and loaded.z_tracker is not None
    assert_same_router_state(loaded, moe)
    batch = make_batch()
    np.testing.assert_array_equal(logits_of(loaded, batch), logits_of(moe, batch))
    series = series_batch()
    np.testing.assert_array_equal(
        ChronosPipeline(loaded).predict(series, num_samples=3, seed=0),
        ChronosPipeline(moe).predict(series, num_samples=3, seed=0),
    )


def load_in_subprocess(path, batch, backend, imports, loader="keras.saving.load_model"):
    """Loads the `.keras` file at `path` with `loader` in a fresh Python with
    `backend`, after `imports`, and returns its logits on `batch` (or the
    subprocess' error)."""
    folder = path.parent
    np.savez(folder / "batch.npz", **batch)
    script = f"""
{imports}
import keras, numpy as np
assert keras.config.backend() == {backend!r}
model = {loader}({str(path)!r})
batch = dict(np.load({str(folder / "batch.npz")!r}))
np.save({str(folder / "logits.npy")!r}, keras.ops.convert_to_numpy(model(batch)["logits"]))
"""
    result = subprocess.run(
        [sys.executable, "-c", script],
        # One intra-op thread, as this process (tests/__init__.py): torch splits a
        # product's sums by thread count, and the logits are compared bit for bit.
        env={**os.environ, "KERAS_BACKEND": backend, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return np.load(folder / "logits.npy")


def test_hugging_face_layout_round_trip_keeps_the_router_state(trained_like_moe, tmp_path):
    from chronos_moe.checkpoints import load_chronos, read_weights, save_chronos

    moe = trained_like_moe
    save_chronos(moe, tmp_path / "moe")
    names = set(read_weights(tmp_path / "moe"))
    assert {"moe.router.selection_bias", "moe.router.expert_load"} <= names
    assert "moe.router.feature_norm.running_mean" in names
    loaded = load_chronos(tmp_path / "moe")
    assert (loaded.load_balancing_mode, loaded.bias_update_rate) == ("loss_and_bias", 0.01)
    assert_same_router_state(loaded, moe)
    batch = make_batch()
    np.testing.assert_array_equal(logits_of(loaded, batch), logits_of(moe, batch))


def test_checkpoint_of_an_earlier_version_loads_with_its_plain_router(tmp_path):
    """Written before the router norms and the balancing state existed: no
    `router_input_norm` key (it meant no norm) and no state tensors."""
    import safetensors.numpy

    from chronos_moe.checkpoints import load_chronos, read_weights, save_chronos

    moe = build_moe_chronos(tiny_base(), EXPERTS, TOP_K, router_input_norm=False)
    directory = save_chronos(moe, tmp_path / "old")
    config = json.loads((directory / "config.json").read_text())
    for key in ("router_input_norm", "load_balancing_mode", "load_balancing_window"):
        del config["chronos_moe_config"][key]
    del config["chronos_moe_config"]["bias_update_rate"]
    (directory / "config.json").write_text(json.dumps(config))
    tensors = {
        name: value
        for name, value in read_weights(directory).items()
        if name not in ("moe.router.selection_bias", "moe.router.expert_load")
    }
    safetensors.numpy.save_file(tensors, directory / "model.safetensors")
    loaded = load_chronos(directory)
    assert not loaded.router_input_norm
    np.testing.assert_array_equal(ops.convert_to_numpy(loaded.router.selection_bias), 0.0)
    batch = make_batch()
    np.testing.assert_array_equal(logits_of(loaded, batch), logits_of(moe, batch))


def test_keras_file_loads_under_the_other_backend(trained_like_moe, tmp_path):
    other = "jax" if keras.config.backend() == "torch" else "torch"
    trained_like_moe.save(tmp_path / "moe.keras")
    batch = make_batch()
    # Touching a model class imports (and registers) every chronos_moe layer.
    logits = load_in_subprocess(
        tmp_path / "moe.keras", batch, other, "import keras\nfrom chronos_moe import ChronosMoE"
    )
    np.testing.assert_allclose(logits, logits_of(trained_like_moe, batch), rtol=1e-5, atol=1e-5)


def test_keras_file_loads_after_a_plain_import(trained_like_moe, tmp_path):
    trained_like_moe.save(tmp_path / "moe.keras")
    batch = make_batch()
    logits = load_in_subprocess(
        tmp_path / "moe.keras", batch, keras.config.backend(), "import keras\nimport chronos_moe"
    )
    np.testing.assert_array_equal(logits, logits_of(trained_like_moe, batch))


def test_load_model_helper_registers_the_classes(trained_like_moe, tmp_path):
    # chronos_moe imported before Keras: nothing is registered until load_model.
    trained_like_moe.save(tmp_path / "moe.keras")
    batch = make_batch()
    logits = load_in_subprocess(
        tmp_path / "moe.keras",
        batch,
        keras.config.backend(),
        "import chronos_moe",
        loader="chronos_moe.load_model",
    )
    np.testing.assert_array_equal(logits, logits_of(trained_like_moe, batch))


# ---- bad input -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"num_experts": 2, "top_k": 3}, ValueError, "top_k=3"),
        ({"num_experts": 0, "top_k": 1}, ValueError, "num_experts=0"),
        ({"num_experts": 4, "top_k": 0}, ValueError, "top_k=0"),
        ({"load_balancing_weight": -0.1}, ValueError, "load_balancing_weight=-0.1"),
        ({"router_z_loss_weight": -1.0}, ValueError, "z_loss_weight=-1.0"),
        ({"expert_init_noise": -1.0}, ValueError, "expert_init_noise"),
        ({"load_balancing_mode": "aux"}, ValueError, "load_balancing_mode='aux'"),
        ({"load_balancing_window": 0}, ValueError, "load_balancing_window=0"),
        ({"bias_update_rate": 0}, ValueError, "bias_update_rate=0"),
        ({"bias_update_rate": -0.01}, ValueError, "bias_update_rate=-0.01"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        build_moe_chronos(tiny_base(), **kwargs)
    if "expert_init_noise" not in kwargs:
        with pytest.raises(error, match=match):
            ChronosMoE(tiny_base(), **kwargs)


@pytest.mark.parametrize("base", [None, "amazon/chronos-t5-tiny", keras.layers.Dense(2)])
def test_base_must_be_a_chronos_model(base):
    with pytest.raises(TypeError, match="base"):
        build_moe_chronos(base)
    with pytest.raises(TypeError, match="base"):
        ChronosMoE(base)


@pytest.mark.parametrize("module", [model_module, build_module], ids=lambda m: m.__name__)
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
