"""`T5Attention.decode_step` and cached decoding: decoding position by position
equals the whole-sequence call; cached self-attention reads only the written
part of the cache when asked; precomputed decoding constants give each step's
own biases (also with a traced index under `jit` on JAX); decoding never
changes the read-only cross-attention cache."""

import keras
import numpy as np
from keras import ops

from chronos_moe.layers.attention import MASK_BIAS, T5Attention
from chronos_moe.models.chronos_t5 import ChronosT5

BACKEND = keras.config.backend()


def test_attending_to_the_written_prefix_equals_masking_the_rest():
    """`attended_length` (eager decoding) gives the static-length result."""
    rng = np.random.default_rng(1)
    attention = T5Attention(num_heads=2, key_value_dim=4, hidden_dim=8)
    attention.build((None, None, 8))
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
        out, (new_keys, _) = attention.decode_step(
            ops.convert_to_tensor(hidden),
            ops.convert_to_tensor(bias[..., :k_len]),
            cache,
            cache_index=index,
            attended_length=attended_length,
        )
        return ops.convert_to_numpy(out), ops.convert_to_numpy(new_keys)

    static, static_keys = run(None, length)
    prefix, prefix_keys = run(index + 1, index + 1)
    np.testing.assert_allclose(prefix, static, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(prefix_keys, static_keys)  # the whole cache is returned
    assert not np.allclose(static_keys[:, :, index], keys[:, :, index])  # it was written


def test_decode_steps_equal_the_whole_sequence_call():
    """Self-attention decoded position by position with a cache (with and
    without a precomputed projection) equals one causal call over the
    sequence; cross-attention over a read-only cache equals the call with the
    encoder states."""
    rng = np.random.default_rng(3)
    attention = T5Attention(num_heads=2, key_value_dim=4, hidden_dim=8)
    hidden = ops.convert_to_tensor(rng.normal(size=(3, 5, 8)).astype("float32"))
    bias = rng.normal(size=(1, 2, 5, 5)).astype("float32")
    bias[..., np.triu_indices(5, 1)[0], np.triu_indices(5, 1)[1]] = MASK_BIAS  # causal
    bias = ops.convert_to_tensor(bias)
    full = ops.convert_to_numpy(attention(hidden, attention_bias=bias))
    for projection in (None, attention.projection()):
        cache = (ops.zeros((3, 2, 5, 4)), ops.zeros((3, 2, 5, 4)))
        steps = []
        for index in range(5):
            out, cache = attention.decode_step(
                hidden[:, index : index + 1],
                bias[:, :, index : index + 1],
                cache,
                index,
                projection,
            )
            steps.append(ops.convert_to_numpy(out))
        np.testing.assert_allclose(np.concatenate(steps, axis=1), full, rtol=1e-5, atol=1e-5)

    states = ops.convert_to_tensor(rng.normal(size=(3, 6, 8)).astype("float32"))
    padding = np.zeros((3, 1, 1, 6), "float32")
    padding[0, ..., :2] = MASK_BIAS
    padding = ops.convert_to_tensor(padding)
    full = attention(hidden[:, :1], key_value_states=states, attention_bias=padding)
    cache = attention.project_key_value(states, transpose_keys=True)
    out, same_cache = attention.decode_step(hidden[:, :1], padding, cache)
    assert same_cache is cache
    np.testing.assert_allclose(
        ops.convert_to_numpy(out), ops.convert_to_numpy(full), rtol=1e-5, atol=1e-5
    )


def test_one_query_cross_attention_equals_the_keys_and_values_path():
    """Cross-attention from one query (Chronos-Bolt's decoder step) folds the
    query into the key kernel instead of projecting every position; it equals
    the ordinary path, which a two-query call takes, for each query alone."""
    rng = np.random.default_rng(5)
    attention = T5Attention(num_heads=2, key_value_dim=4, hidden_dim=8)
    hidden = ops.convert_to_tensor(rng.normal(size=(3, 2, 8)).astype("float32"))
    states = ops.convert_to_tensor(rng.normal(size=(3, 6, 8)).astype("float32"))
    padding = np.zeros((3, 1, 1, 6), "float32")
    padding[1, ..., :4] = MASK_BIAS
    position = rng.normal(size=(1, 2, 1, 6)).astype("float32")
    for bias in (padding, (padding, position)):
        both = ops.convert_to_numpy(attention(hidden, key_value_states=states, attention_bias=bias))
        for index in range(2):
            one = attention(
                hidden[:, index : index + 1], key_value_states=states, attention_bias=bias
            )
            np.testing.assert_allclose(
                ops.convert_to_numpy(one), both[:, index : index + 1], rtol=1e-5, atol=1e-6
            )


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
