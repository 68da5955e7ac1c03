"""`backend.attention` (whole sequences) against its `keras.ops` reference,
`layers.attention.dot_product_attention`: the same context without dropout on
both backends, and with dropout the same context and gradients for the same
mask (torch's fused training function; JAX's Keras dropout from the seed
generator)."""

import keras
import numpy as np
import pytest
from keras import ops

from chronos_moe import backend
from chronos_moe.layers.attention import T5Attention, dot_product_attention

TORCH = keras.config.backend() == "torch"
TOLERANCE = {"float32": 1e-5, "bfloat16": 3e-2}


def case(dtype, batch=3, heads=2, q_len=7, k_len=9, d=4, seed=0):
    rng = np.random.default_rng(seed)
    query, keys, values = (
        rng.normal(size=(batch, heads, length, d)) for length in (q_len, k_len, k_len)
    )
    position = rng.normal(size=(1, heads, q_len, k_len))
    padding = np.zeros((batch, 1, 1, k_len))
    padding[0, ..., :3] = -1e30 if dtype == "float32" else -3e38  # a padded row
    return [ops.cast(ops.convert_to_tensor(x.astype("float32")), dtype)
            for x in (query, keys, values, position, padding)]  # fmt: skip


def numpy(x):
    return ops.convert_to_numpy(ops.cast(x, "float32"))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_attention_without_dropout_matches_the_reference(dtype):
    query, keys, values, position, padding = case(dtype)
    out = backend.attention(query, keys, values, (position, padding))
    want = dot_product_attention(query, keys, values, position + padding)
    tolerance = TOLERANCE[dtype]
    np.testing.assert_allclose(numpy(out), numpy(want), rtol=tolerance, atol=tolerance)


@pytest.mark.skipif(TORCH, reason="torch's mask comes from its global generator (next test)")
def test_jax_attention_dropout_draws_keras_dropout_from_the_seed_generator():
    query, keys, values, position, padding = case("float32")
    out = backend.attention(
        query, keys, values, (position, padding), 0.3, keras.random.SeedGenerator(5)
    )
    seed = keras.random.SeedGenerator(5)
    want = dot_product_attention(
        query, keys, values, position + padding,
        dropout=lambda weights: keras.random.dropout(weights, 0.3, seed=seed),
    )  # fmt: skip
    np.testing.assert_allclose(numpy(out), numpy(want), rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not TORCH, reason="the fused function is torch's")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("values_need_grad", [True, False])
def test_torch_fused_training_attention_matches_the_reference(dtype, values_need_grad):
    """Context and gradients of `backend.attention` with dropout equal the
    reference's with `backend.dropout` on its weights, for the same mask."""
    import torch

    query, keys, values, position, padding = (x.detach() for x in case(dtype))
    leaves = [query, keys, values, position] if values_need_grad else [query, keys, position]
    for leaf in leaves:
        leaf.requires_grad_(True)
    upstream = torch.randn(*query.shape, generator=torch.Generator().manual_seed(1))

    def run(fused):
        torch.manual_seed(5)  # the same mask for both
        if fused:
            out = backend.attention(query, keys, values, (position, padding), 0.3)
        else:
            out = dot_product_attention(
                query, keys, values, position + padding,
                dropout=lambda weights: backend.dropout(weights, 0.3),
            )  # fmt: skip
        grads = torch.autograd.grad((out.float() * upstream).sum(), leaves)
        return out.detach().float(), [g.float() for g in grads]

    fused_out, fused_grads = run(True)
    plain_out, plain_grads = run(False)
    tolerance = TOLERANCE[dtype]
    torch.testing.assert_close(fused_out, plain_out, rtol=tolerance, atol=tolerance)
    names = "qkvb" if values_need_grad else "qkb"
    for name, fused, plain in zip(names, fused_grads, plain_grads, strict=True):
        torch.testing.assert_close(fused, plain, rtol=tolerance, atol=tolerance, msg=name)
    assert fused_grads[-1].shape == position.shape
    # Some weights were dropped: the test exercises the mask.
    torch.manual_seed(5)
    assert not backend.dropout(torch.ones(*fused_out.shape[:3], keys.shape[2]), 0.3).all()


@pytest.mark.parametrize("training", [False, True])
def test_attention_bias_terms_equal_their_sum(training):
    # In training on torch the terms go unsummed to the fused function; the
    # same seed draws the same dropout mask for both calls.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 8)).astype("float32")
    position = rng.normal(size=(1, 2, 5, 5)).astype("float32")
    padding = np.zeros((2, 1, 1, 5), "float32")
    padding[1, ..., :2] = -1e9
    outputs = []
    for bias in (position + padding, (position, padding)):
        keras.utils.set_random_seed(0)
        attention = T5Attention(num_heads=2, key_value_dim=4, dropout_rate=0.3, hidden_dim=8)
        outputs.append(ops.convert_to_numpy(attention(x, attention_bias=bias, training=training)))
    np.testing.assert_allclose(outputs[1], outputs[0], rtol=1e-5, atol=1e-6)
