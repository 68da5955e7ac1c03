"""The layer contract for every T5 layer and ChronosT5, through one harness:
config → JSON → from_config gives the same outputs with the same weights, a
symbolic call gives the eager shapes, and the trainable weight count is exact.
ChronosT5 also round-trips through `.keras` files (on this backend and across
backends) and trains with `fit`."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
from keras import ops

from chronos_moe.layers.t5 import (
    T5Attention,
    T5Block,
    T5FeedForward,
    T5LayerNorm,
    T5RelativePositionBias,
)
from chronos_moe.models.chronos_t5 import ChronosT5

REPO_ROOT = Path(__file__).resolve().parents[2]
BACKEND = keras.config.backend()
D_MODEL = 12


def to_numpy(outputs):
    return [ops.convert_to_numpy(x) for x in keras.tree.flatten(outputs) if x is not None]


def to_symbolic(values):
    return keras.tree.map_structure(
        lambda v: keras.KerasTensor(np.shape(v), dtype=str(np.asarray(v).dtype)), values
    )


def random(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def run_layer_test(cls, init_kwargs, call_args, call_kwargs=None, expected_weights=None):
    """The harness: build and call `cls(**init_kwargs)` eagerly, check the exact
    trainable weight count, and that config → JSON → `from_config` with the same
    weights gives the same outputs. Returns the layer and its numpy outputs."""
    call_kwargs = call_kwargs or {}
    layer = cls(**init_kwargs)
    outputs = to_numpy(layer(*call_args, **call_kwargs))

    count = sum(int(np.prod(w.shape)) for w in layer.trainable_weights)
    assert count == expected_weights, f"{cls.__name__}: {count} != {expected_weights}"

    config = json.loads(json.dumps(layer.get_config()))
    clone = cls.from_config(config)
    assert clone.get_config() == layer.get_config()
    clone(*call_args, **call_kwargs)  # builds it
    clone.set_weights(layer.get_weights())
    rebuilt = to_numpy(clone(*call_args, **call_kwargs))
    assert len(rebuilt) == len(outputs)
    for original, again in zip(outputs, rebuilt, strict=True):
        np.testing.assert_array_equal(again, original)
    # The clone really has its own weights: resetting them changes the outputs.
    clone.set_weights([np.asarray(w) * 0.5 + 0.1 for w in layer.get_weights()])
    changed = to_numpy(clone(*call_args, **call_kwargs))
    assert any(not np.allclose(a, b) for a, b in zip(changed, outputs, strict=True))
    return layer, outputs


HEADS, D_KV, D_FF = 2, 4, 16
INNER = HEADS * D_KV


def layer_cases():
    """id -> (class, init kwargs, call args, call kwargs, trainable weights)."""
    x, memory = random(2, 5, D_MODEL), random(2, 6, D_MODEL, seed=1)
    cross_bias = np.zeros((2, 1, 1, 6), "float32")
    cross_bias[1, ..., :2] = -1e9
    block = {
        "num_heads": HEADS,
        "key_value_dim": D_KV,
        "intermediate_dim": D_FF,
        "hidden_dim": D_MODEL,
    }
    return {
        "layer-norm": (T5LayerNorm, {"epsilon": 1e-3}, [x], {}, D_MODEL),
        "relative-position-bias": (
            T5RelativePositionBias,
            {"num_heads": 3, "num_buckets": 8, "max_distance": 20, "bidirectional": False},
            [np.arange(5, dtype="int32"), np.arange(30, dtype="int32")],
            {},
            8 * 3,
        ),
        "self-attention": (
            T5Attention,
            {"num_heads": 3, "key_value_dim": 5, "hidden_dim": D_MODEL},
            [x],
            {},
            4 * D_MODEL * 3 * 5,
        ),
        "cross-attention": (
            T5Attention,
            {"num_heads": HEADS, "key_value_dim": D_KV, "hidden_dim": D_MODEL},
            [x],
            {"key_value_states": memory, "attention_bias": cross_bias},
            4 * D_MODEL * INNER,
        ),
        "feed-forward-relu": (
            T5FeedForward,
            {"intermediate_dim": D_FF, "hidden_dim": D_MODEL},
            [x],
            {},
            2 * D_MODEL * D_FF,
        ),
        "feed-forward-gated-gelu": (
            T5FeedForward,
            {"intermediate_dim": D_FF, "feed_forward_proj": "gated-gelu", "hidden_dim": D_MODEL},
            [x],
            {},
            3 * D_MODEL * D_FF,
        ),
        "encoder-block": (
            T5Block,
            block,
            [x],
            {"self_attention_bias": random(1, HEADS, 5, 5, seed=2)},
            2 * D_MODEL + 4 * D_MODEL * INNER + 2 * D_MODEL * D_FF,
        ),
        "decoder-block": (
            T5Block,
            {**block, "is_decoder": True, "feed_forward_proj": "gated-gelu"},
            [random(2, 3, D_MODEL)],
            {"encoder_states": memory},
            3 * D_MODEL + 8 * D_MODEL * INNER + 3 * D_MODEL * D_FF,
        ),
    }


@pytest.mark.parametrize("case", list(layer_cases()))
def test_layer_contract(case):
    cls, init_kwargs, args, kwargs, weights = layer_cases()[case]
    run_layer_test(cls, init_kwargs, args, kwargs, expected_weights=weights)


@pytest.mark.parametrize("case", list(layer_cases()))
def test_symbolic_call_matches_eager_shapes(case):
    cls, init_kwargs, args, kwargs, _ = layer_cases()[case]
    layer = cls(**init_kwargs)
    eager = [x.shape for x in to_numpy(layer(*args, **kwargs))]
    symbolic = layer(*to_symbolic(args), **to_symbolic(kwargs))
    assert [tuple(x.shape) for x in keras.tree.flatten(symbolic) if x is not None] == eager


def test_layer_norm_values():
    x = random(2, 5, D_MODEL) * 3
    layer = T5LayerNorm(epsilon=1e-3)
    layer.build(x.shape)
    scale = np.linspace(0.5, 1.5, D_MODEL).astype("float32")
    layer.set_weights([scale])
    expected = x / np.sqrt(np.mean(x**2, axis=-1, keepdims=True) + 1e-3) * scale
    np.testing.assert_allclose(ops.convert_to_numpy(layer(x)), expected, rtol=1e-5, atol=1e-6)


def test_relative_position_bias_values():
    layer = T5RelativePositionBias(num_heads=3, num_buckets=8, max_distance=20, bidirectional=False)
    bias = ops.convert_to_numpy(layer(np.arange(5), np.arange(30)))
    assert bias.shape == (1, 3, 5, 30)
    table = ops.convert_to_numpy(layer.embeddings)
    # Causal buckets: every future key and the diagonal share bucket 0.
    np.testing.assert_array_equal(bias[0, :, 2, 2:], np.repeat(table[0][:, None], 28, axis=1))
    np.testing.assert_array_equal(bias[0, :, 4, 3], table[1])  # one step back


@pytest.mark.parametrize("projection", ["relu", "gated-gelu"])
def test_feed_forward_values(projection):
    """The activation is the named one (gated gelu: tanh approximation, `gelu_new`)."""
    x = random(2, 4, D_MODEL)
    layer = T5FeedForward(intermediate_dim=D_FF, feed_forward_proj=projection, hidden_dim=D_MODEL)
    y = ops.convert_to_numpy(layer(x))
    weights = [np.asarray(w) for w in layer.get_weights()]
    if projection == "relu":
        wi, wo = weights
        expected = np.maximum(x @ wi, 0) @ wo
    else:
        wi_0, wi_1, wo = weights
        a = x @ wi_0
        gelu_new = 0.5 * a * (1 + np.tanh(np.sqrt(2 / np.pi) * (a + 0.044715 * a**3)))
        expected = (gelu_new * (x @ wi_1)) @ wo
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


def test_feed_forward_rejects_unknown_projection():
    with pytest.raises(ValueError, match="feed_forward_proj"):
        T5FeedForward(intermediate_dim=4, feed_forward_proj="swish", hidden_dim=8)


# ---- ChronosT5 ---------------------------------------------------------------------------

MODEL_KWARGS = dict(
    vocab_size=32,
    d_model=16,
    d_kv=4,
    d_ff=24,
    num_layers=2,
    num_decoder_layers=1,
    num_heads=2,
    relative_attention_num_buckets=8,
    relative_attention_max_distance=16,
    dropout_rate=0.0,
    chronos_config={"n_tokens": 32, "context_length": 16, "prediction_length": 4},
)


def chronos_t5_weights(vocab, d, d_kv, d_ff, heads, layers, decoder_layers, buckets, tied, gated):
    """Trainable weights of ChronosT5, written out from the T5 architecture."""
    inner = heads * d_kv
    ffn = (3 if gated else 2) * d * d_ff
    encoder_block = 2 * d + 4 * d * inner + ffn
    decoder_block = 3 * d + 8 * d * inner + ffn
    return (
        vocab * d
        + 2 * buckets * heads
        + layers * encoder_block
        + d
        + decoder_layers * decoder_block
        + d
        + (0 if tied else vocab * d)
    )


def model_inputs(batch=2, enc_len=10, dec_len=5, vocab=32, seed=0):
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, enc_len), "int32")
    mask[0, :3] = 0
    return {
        "input_ids": rng.integers(2, vocab, (batch, enc_len)).astype("int32") * mask,
        "attention_mask": mask,
        "decoder_input_ids": rng.integers(0, vocab, (batch, dec_len)).astype("int32"),
    }


@pytest.mark.parametrize(
    "overrides",
    [{}, {"tie_word_embeddings": False, "feed_forward_proj": "gated-gelu"}],
    ids=["tied-relu", "untied-gated"],
)
def test_chronos_t5_contract(overrides):
    kwargs = {**MODEL_KWARGS, **overrides}
    tied = kwargs.get("tie_word_embeddings", True)
    gated = kwargs.get("feed_forward_proj") == "gated-gelu"
    expected = chronos_t5_weights(32, 16, 4, 24, 2, 2, 1, 8, tied, gated)
    model, (logits,) = run_layer_test(
        ChronosT5, kwargs, [model_inputs()], expected_weights=expected
    )
    assert logits.shape == (2, 5, 32)
    assert model.get_config()["chronos_config"]["context_length"] == 16


def test_chronos_t5_symbolic_call():
    model = ChronosT5(**MODEL_KWARGS)
    logits = model(to_symbolic(model_inputs()))
    assert tuple(logits.shape) == (2, 5, 32)


def test_chronos_t5_weight_count_for_released_shape():
    """The published parameter count of chronos-t5-tiny (8M), to the formula."""
    model = ChronosT5.from_preset("tiny")
    count = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert count == chronos_t5_weights(4096, 256, 64, 1024, 4, 4, 4, 32, True, False)
    assert 8.0e6 < count < 8.5e6


def test_chronos_t5_keras_file_round_trip(tmp_path):
    model = ChronosT5(**MODEL_KWARGS, tie_word_embeddings=False)
    inputs = model_inputs()
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, ChronosT5)
    assert loaded.get_config() == model.get_config()
    np.testing.assert_array_equal(
        ops.convert_to_numpy(loaded(inputs)), ops.convert_to_numpy(model(inputs))
    )
    assert len(loaded.weights) == len(model.weights)
    for original, restored in zip(model.weights, loaded.weights, strict=True):
        assert original.path == restored.path
        np.testing.assert_array_equal(
            ops.convert_to_numpy(restored), ops.convert_to_numpy(original)
        )


CROSS_BACKEND_SCRIPT = textwrap.dedent(
    """
    import sys

    import keras
    import numpy as np

    import chronos_moe

    directory, backend = sys.argv[1], sys.argv[2]
    assert keras.config.backend() == backend, keras.config.backend()
    try:  # `import chronos_moe` alone should make its classes loadable
        keras.saving.load_model(directory + "/model.keras")
        print("PLAIN_IMPORT_LOADS")
    except TypeError as error:
        print("PLAIN_IMPORT_FAILS", str(error)[:200])
    from chronos_moe.models.chronos_t5 import ChronosT5

    model = keras.saving.load_model(directory + "/model.keras")
    assert isinstance(model, ChronosT5)
    inputs = dict(np.load(directory + "/inputs.npz"))
    np.save(directory + "/logits.npy", keras.ops.convert_to_numpy(model(inputs)))
    """
)


@pytest.fixture(scope="module")
def other_backend_run(tmp_path_factory):
    """Saves a `.keras` file here and loads it in a subprocess under the other
    backend (weights only, no optimizer). Returns (expected logits, subprocess
    result, directory with the logits it computed)."""
    directory = tmp_path_factory.mktemp("cross-backend")
    other = "jax" if BACKEND == "torch" else "torch"
    model = ChronosT5(**MODEL_KWARGS, tie_word_embeddings=False)
    inputs = model_inputs()
    model.save(directory / "model.keras")
    np.savez(directory / "inputs.npz", **inputs)
    env = {
        **os.environ,
        "KERAS_BACKEND": other,
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, "-c", CROSS_BACKEND_SCRIPT, str(directory), other],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return ops.convert_to_numpy(model(inputs)), result, directory


def test_keras_file_loads_under_the_other_backend(other_backend_run):
    expected, result, directory = other_backend_run
    assert result.returncode == 0, result.stderr[-3000:]
    np.testing.assert_allclose(np.load(directory / "logits.npy"), expected, rtol=0, atol=1e-5)


def test_import_chronos_moe_is_enough_to_load_a_keras_file(other_backend_run):
    """`import chronos_moe` then `keras.saving.load_model` (the documented way to
    reload a `.keras` file) must find the registered classes."""
    _, result, _ = other_backend_run
    assert "PLAIN_IMPORT_LOADS" in result.stdout, result.stdout


def test_fit_lowers_the_loss():
    keras.utils.set_random_seed(0)
    model = ChronosT5(**MODEL_KWARGS)
    rng = np.random.default_rng(1)
    batch_size = 4
    labels = rng.integers(2, 32, (batch_size, 5)).astype("int32")
    labels[:, -1] = 1
    labels[0, 3:] = -100
    labels[2, 1] = -100
    x = {
        "input_ids": rng.integers(2, 32, (batch_size, 10)).astype("int32"),
        "attention_mask": np.ones((batch_size, 10), "int32"),
        "labels": labels,
    }
    initial = float(ops.convert_to_numpy(model.compute_loss(x=x, y_pred=model(x))))
    model.compile(optimizer="adam", jit_compile=True if BACKEND == "jax" else "auto")
    history = model.fit(x, batch_size=batch_size, epochs=20, shuffle=False, verbose=0)
    losses = history.history["loss"]
    assert len(losses) == 20
    # The first step reports the loss of the initial weights (dropout is off).
    assert abs(losses[0] - initial) < 1e-4
    assert losses[-1] < 0.9 * losses[0]
    assert all(np.isfinite(losses))
