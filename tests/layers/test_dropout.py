"""`FastDropout` (and `backend.dropout`, its torch path): the drop rate and
scaling are right, every 16-bit lane of the random words is uniform, the
gradient flows through the kept elements only, inference is the identity,
masks follow the seed, and T5's layers use it."""

import math

import keras
import numpy as np
import pytest
from keras import ops

from chronos_moe import backend
from chronos_moe.layers.block import T5Block
from chronos_moe.layers.dropout import FastDropout
from chronos_moe.models.chronos_t5 import ChronosT5

TORCH = keras.config.backend() == "torch"
COUNT = 1 << 20


def dropped_fraction_bound(rate, count=COUNT):
    """Six standard deviations of a binomial fraction: a correct rate never
    fails, a rate off by 0.003 at n = 2²⁰ always does."""
    return 6 * math.sqrt(rate * (1 - rate) / count)


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_drop_rate_and_scale(rate, dtype):
    keras.utils.set_random_seed(1)
    layer = FastDropout(rate, dtype=dtype)
    x = ops.ones((COUNT // 1024, 1024), dtype)
    y = ops.convert_to_numpy(ops.cast(layer(x, training=True), "float32")).ravel()
    assert y.shape == (COUNT,)
    kept = y != 0
    dropped = 1 - kept.mean()
    assert abs(dropped - rate) < dropped_fraction_bound(rate), (dropped, rate)
    # Kept elements are scaled by 1 / (1 - rate) (rounded to the dtype).
    scale = 1 / (1 - backend.dropout_rate_drawn(rate)) if TORCH else 1 / (1 - rate)
    expected = float(ops.convert_to_numpy(ops.cast(ops.cast(scale, dtype), "float32")))
    np.testing.assert_allclose(y[kept], expected, rtol=1e-6)


def test_every_lane_of_the_random_words_is_uniform():
    # The mask compares 16-bit lanes of 64-bit words: positions i mod 4 come
    # from different lanes, so a lane with a biased bit shows in its own rate.
    keras.utils.set_random_seed(2)
    x = ops.ones((COUNT,))
    kept = ops.convert_to_numpy(FastDropout(0.5)(x, training=True)) != 0
    for lane in range(4):
        fraction = 1 - kept[lane::4].mean()
        assert abs(fraction - 0.5) < dropped_fraction_bound(0.5, COUNT // 4), (lane, fraction)


@pytest.mark.skipif(not TORCH, reason="torch's 16-bit masks; JAX draws the rate itself")
def test_rate_resolution():
    assert backend.dropout_rate_drawn(0.1) == 6554 / 65536
    assert backend.dropout_rate_drawn(0.5) == 0.5
    assert backend.dropout_rate_drawn(0.0) == 0.0
    assert backend.dropout_rate_drawn(1.0) == 1.0


def test_inference_is_identity():
    x = np.random.default_rng(0).normal(size=(4, 32)).astype("float32")
    layer = FastDropout(0.3)
    np.testing.assert_array_equal(ops.convert_to_numpy(layer(x, training=False)), x)
    np.testing.assert_array_equal(ops.convert_to_numpy(layer(x)), x)


def test_same_seed_same_mask():
    x = ops.ones((64, 64))
    masks = []
    for _ in range(2):
        keras.utils.set_random_seed(3)
        layer = FastDropout(0.2)
        masks.append(ops.convert_to_numpy(layer(x, training=True)) != 0)
    np.testing.assert_array_equal(masks[0], masks[1])
    assert not masks[0].all()


@pytest.mark.skipif(TORCH, reason="JAX's path: Keras' draws, the gradient read from the output")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_jax_dropout_is_keras_dropout_values_and_gradients(dtype):
    import jax
    import jax.numpy as jnp

    x = jnp.asarray(np.random.default_rng(5).normal(size=(64, 256)), dtype)
    x = x.at[0].set(0.0)  # zeros: kept or not, no gradient needed beyond them in T5
    weights = jnp.asarray(np.random.default_rng(6).normal(size=(64, 256)), dtype)

    def loss(dropout, values):
        return jnp.sum((dropout(values) * weights).astype("float32"))

    def ours(values):
        return backend.dropout(values, 0.25, keras.random.SeedGenerator(7))

    def keras_dropout(values):
        return keras.random.dropout(values, 0.25, seed=keras.random.SeedGenerator(7))

    np.testing.assert_array_equal(np.asarray(ours(x)), np.asarray(keras_dropout(x)))
    for function in (
        jax.grad(loss, argnums=1),
        jax.jit(jax.grad(loss, argnums=1), static_argnums=0),
    ):
        want = np.asarray(function(keras_dropout, x), "float32")[1:]
        got = np.asarray(function(ours, x), "float32")[1:]
        np.testing.assert_array_equal(got, want)
        assert (want != 0).any() and (want == 0).any()


@pytest.mark.skipif(not TORCH, reason="backend.dropout is torch's path; JAX uses Keras' dropout")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_gradient_flows_through_kept_elements_only(dtype):
    import torch

    torch.manual_seed(4)
    x = torch.randn(64, 256, dtype=getattr(torch, dtype), requires_grad=True)
    weights = torch.randn(64, 256, dtype=x.dtype)
    y = backend.dropout(x, 0.25)
    (y * weights).sum().backward()
    kept = y.detach() != 0
    scale = 1 / (1 - backend.dropout_rate_drawn(0.25))
    expected = torch.where(kept, weights * scale, 0.0)
    torch.testing.assert_close(x.grad, expected)
    torch.testing.assert_close(y.detach(), torch.where(kept, x.detach() * scale, 0.0))
    assert y.dtype == x.dtype


@pytest.mark.skipif(not TORCH, reason="backend.dropout is torch's path; JAX uses Keras' dropout")
def test_torch_masks_come_from_the_global_generator():
    # Checkpoints restore torch's global generator for an exact resume.
    import torch

    x = torch.ones(1000)
    state = torch.get_rng_state()
    first = backend.dropout(x, 0.1)
    torch.set_rng_state(state)
    np.testing.assert_array_equal(first.numpy(), backend.dropout(x, 0.1).numpy())


@pytest.mark.skipif(not TORCH, reason="backend.dropout is torch's path; JAX uses Keras' dropout")
def test_a_large_mask_drawn_in_parallel_blocks_follows_the_global_generator_only():
    # Over `WORDS_PER_DRAW` words the blocks are drawn on several threads, each
    # with its own generator seeded from the global one.
    import torch

    from chronos_moe.backend.torch_dropout import WORDS_PER_DRAW

    lanes = 4 * (2 * WORDS_PER_DRAW + 5)  # three blocks, the last one short
    x = torch.ones(lanes, dtype=torch.bfloat16)
    state, threads = torch.get_rng_state(), torch.get_num_threads()
    try:
        masks = []
        for count in (1, 2, 3):  # the same words whatever the number of threads
            torch.set_num_threads(count)
            torch.set_rng_state(state)
            masks.append((backend.dropout(x, 0.1) == 0).numpy())
    finally:
        torch.set_num_threads(threads)
    for mask in masks[1:]:
        np.testing.assert_array_equal(masks[0], mask)
    dropped = masks[0].mean()
    assert abs(dropped - backend.dropout_rate_drawn(0.1)) < dropped_fraction_bound(0.1, lanes)
    block = 4 * WORDS_PER_DRAW
    first, second = masks[0][:block], masks[0][block : 2 * block]
    assert (first != second).mean() > 0.1  # blocks are independent draws, not one repeated
    torch.set_rng_state(state)
    torch.rand(1)  # another global state: other masks
    assert not np.array_equal((backend.dropout(x, 0.1) == 0).numpy(), masks[0])


@pytest.mark.skipif(not TORCH, reason="JAX's dropout is Keras' own, with its own checks")
def test_invalid_rate():
    with pytest.raises(ValueError, match="rate"):
        backend.dropout(ops.ones((3,)), 1.5)


def test_t5_layers_use_fast_dropout():
    block = T5Block(
        num_heads=2, key_value_dim=4, intermediate_dim=16, dropout_rate=0.1, hidden_dim=8
    )
    assert isinstance(block.dropout, FastDropout)
    assert isinstance(block.self_attention.dropout, FastDropout)
    assert isinstance(block.feed_forward.dropout, FastDropout)
    model = ChronosT5.from_preset(
        "tiny",
        vocab_size=32,
        num_layers=1,
        chronos_config={"n_tokens": 32, "context_length": 8, "prediction_length": 2},
    )
    assert isinstance(model.dropout, FastDropout)
