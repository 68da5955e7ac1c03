"""The decoding cache: `backend.update_cache` writes in place on torch and stays
correct under `jit` and inside a compiled loop on JAX; cached self-attention
reads only the written part of the cache when the index is known; decoding
never changes the read-only cross-attention cache."""

import doctest

import keras
import numpy as np
import pytest
from keras import ops

from chronos_moe import backend
from chronos_moe.layers import t5
from chronos_moe.layers.t5 import MASK_BIAS, T5Attention
from chronos_moe.models.chronos_t5 import ChronosT5

BACKEND = keras.config.backend()


def test_update_cache_writes_the_slice_and_nothing_else():
    rng = np.random.default_rng(0)
    initial = rng.normal(size=(2, 3, 5, 4)).astype("float32")
    update = rng.normal(size=(2, 3, 1, 4)).astype("float32")
    cache = ops.convert_to_tensor(initial)
    written = backend.update_cache(cache, ops.convert_to_tensor(update), 3, axis=2)
    expected = initial.copy()
    expected[:, :, 3:4] = update
    np.testing.assert_array_equal(ops.convert_to_numpy(written), expected)
    # A tensor index and a wider update along another axis.
    wide = rng.normal(size=(2, 3, 5, 2)).astype("float32")
    index = ops.convert_to_tensor(1, "int32")
    written = backend.update_cache(written, ops.convert_to_tensor(wide), index, axis=3)
    expected[..., 1:3] = wide
    np.testing.assert_array_equal(ops.convert_to_numpy(written), expected)


def test_update_cache_is_in_place_on_torch_and_functional_on_jax():
    cache = ops.zeros((4, 6))
    update = ops.ones((4, 1))
    written = backend.update_cache(cache, update, 2, axis=1)
    if BACKEND == "torch":
        assert written is cache  # no copy of the cache
        assert float(ops.sum(cache)) == 4.0
    else:
        assert float(ops.sum(cache)) == 0.0  # JAX arrays are immutable
    assert float(ops.sum(written)) == 4.0
    np.testing.assert_array_equal(ops.convert_to_numpy(update), np.ones((4, 1)))


def test_update_cache_in_a_compiled_loop():
    """Every step writes its own column, with a traced index under jit on JAX."""
    steps = 7

    def fill(start):
        def body(index, cache):
            value = ops.cast(index, "float32") + start
            column = ops.ones((3, 1)) * value
            return backend.update_cache(cache, column, index, axis=1)

        return ops.fori_loop(0, steps, body, ops.zeros((3, steps)))

    if BACKEND == "jax":
        import jax

        fill = jax.jit(fill)
    filled = ops.convert_to_numpy(fill(ops.convert_to_tensor(10.0)))
    np.testing.assert_array_equal(filled, np.tile(np.arange(steps) + 10.0, (3, 1)))


def test_concrete_int():
    assert backend.concrete_int(5) == 5
    assert backend.concrete_int(ops.convert_to_tensor(6, "int32")) == 6
    if BACKEND == "jax":
        import jax

        seen = []
        jax.jit(lambda x: seen.append(backend.concrete_int(x)) or x)(3)
        assert seen == [None]


def test_attending_to_the_written_prefix_equals_masking_the_rest():
    """`attended_length` (eager decoding) gives the static-length result."""
    rng = np.random.default_rng(1)
    attention = T5Attention(num_heads=2, key_value_dim=4)
    length, index = 9, 4
    keys = rng.normal(size=(3, 2, length, 4)).astype("float32")
    values = rng.normal(size=(3, 2, length, 4)).astype("float32")
    hidden = rng.normal(size=(3, 1, 8)).astype("float32")
    bias = rng.normal(size=(1, 2, 1, length)).astype("float32")
    bias[..., index + 1 :] = MASK_BIAS

    def run(attended_length, k_len):
        # Copies: on torch a tensor made from numpy may share its memory, and
        # the cache is written in place.
        cache = (ops.convert_to_tensor(keys.copy()), ops.convert_to_tensor(values.copy()))
        out, (new_keys, _) = attention(
            hidden,
            attention_bias=bias[..., :k_len],
            cache=cache,
            cache_index=index,
            attended_length=attended_length,
        )
        return ops.convert_to_numpy(out), ops.convert_to_numpy(new_keys)

    static, static_keys = run(None, length)
    prefix, prefix_keys = run(index + 1, index + 1)
    np.testing.assert_allclose(prefix, static, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(prefix_keys, static_keys)  # the whole cache is returned
    assert not np.allclose(static_keys[:, :, index], keys[:, :, index])  # it was written


@pytest.mark.parametrize("q_len", [1, 2])
def test_a_fused_projection_equals_the_three_products(q_len):
    """Cached self-attention with `projection` (query, key and value kernels side
    by side) gives the separate products' output and cache."""
    rng = np.random.default_rng(3)
    attention = T5Attention(num_heads=2, key_value_dim=4)
    hidden = rng.normal(size=(3, q_len, 8)).astype("float32")
    attention.build((None, None, 8))
    projection = ops.concatenate(
        [attention.query.kernel, attention.key.kernel, attention.value.kernel], axis=1
    )

    def run(projection):
        cache = (ops.zeros((3, 2, 5, 4)), ops.zeros((3, 2, 5, 4)))
        out, (keys, values) = attention(hidden, cache=cache, cache_index=2, projection=projection)
        return [ops.convert_to_numpy(x) for x in (out, keys, values)]

    for fused, plain in zip(run(projection), run(None), strict=True):
        np.testing.assert_allclose(fused, plain, rtol=0, atol=1e-6)
    assert np.abs(run(projection)[1][:, :, 2]).sum() > 0  # the keys were written


def test_decode_step_with_precomputed_constants():
    """`decoding_constants` computed once give each step's own biases, eagerly and
    with a traced index inside `jit` on JAX (a dynamic slice of the bias)."""
    model = ChronosT5.from_preset("tiny", vocab_size=32, num_layers=2, d_model=16, d_ff=32)
    rng = np.random.default_rng(4)
    input_ids = ops.convert_to_tensor(rng.integers(2, 32, (2, 7)).astype("int32"))
    mask = np.ones((2, 7), bool)
    mask[1, :2] = False
    mask = ops.convert_to_tensor(mask)
    states = model.encode(input_ids, mask)
    tokens = ops.convert_to_tensor(rng.integers(2, 32, (4, 5)).astype("int32"))

    def decode(step_function):
        self_cache, cross_cache = model.init_cache(states, 4, 5)
        outputs = []
        for index in range(5):
            hidden, self_cache = step_function(tokens[:, index : index + 1], index, self_cache)
            outputs.append(ops.convert_to_numpy(hidden))
        return np.concatenate(outputs, axis=1), cross_cache

    cross_cache = model.init_cache(states, 4, 5)[1]
    constants = model.decoding_constants(mask, 5)
    precomputed, _ = decode(
        lambda ids, i, cache: model.decode_step(ids, i, cache, cross_cache, mask, constants)
    )
    step = lambda ids, i, cache: model.decode_step(ids, i, cache, cross_cache, mask)  # noqa: E731
    if BACKEND == "jax":
        import jax

        jitted = jax.jit(step)
        step = lambda ids, i, cache: jitted(ids, ops.convert_to_tensor(i, "int32"), cache)  # noqa: E731
    per_step, _ = decode(step)
    np.testing.assert_allclose(precomputed, per_step, rtol=0, atol=1e-5)
    # Each encoder row serves two consecutive decoding rows.
    full = model.decode(tokens, ops.repeat(states, 2, axis=0), ops.repeat(mask, 2, axis=0))
    np.testing.assert_allclose(precomputed, ops.convert_to_numpy(full), rtol=0, atol=1e-5)


def test_decoding_leaves_the_cross_attention_cache_unchanged():
    model = ChronosT5.from_preset("tiny", vocab_size=32, num_layers=2, d_model=16, d_ff=32)
    rng = np.random.default_rng(2)
    input_ids = ops.convert_to_tensor(rng.integers(2, 32, (2, 7)).astype("int32"))
    mask = ops.convert_to_tensor(np.ones((2, 7), bool))
    self_cache, cross_cache = model.init_cache(model.encode(input_ids, mask), 4, 3)
    before = [ops.convert_to_numpy(x) for pair in cross_cache for x in pair]
    tokens = ops.zeros((4, 1), "int32")
    for index in range(3):
        _, self_cache = model.decode_step(tokens, index, self_cache, cross_cache, mask)
    after = [ops.convert_to_numpy(x) for pair in cross_cache for x in pair]
    for x, y in zip(before, after, strict=True):
        np.testing.assert_array_equal(x, y)
    # The self-attention cache was filled: every position written is non-zero.
    keys = ops.convert_to_numpy(self_cache[0][0])
    assert (np.abs(keys).sum(axis=(1, 3)) > 0).all()


@pytest.mark.parametrize("module", [backend, t5])
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
