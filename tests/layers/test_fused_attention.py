"""`backend.attention_with_dropout` (torch's fused training attention) gives
the written-out ops' result and gradients for the same dropout mask, and
`T5Attention` takes its bias as one tensor or as terms alike."""

import keras
import numpy as np
import pytest
from keras import ops

from chronos_moe import backend
from chronos_moe.layers.t5 import T5Attention

TORCH = keras.config.backend() == "torch"


@pytest.mark.skipif(not TORCH, reason="the fused function is torch's; JAX writes the ops out")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("values_need_grad", [True, False])
def test_fused_attention_matches_written_out_ops(dtype, values_need_grad):
    import torch

    torch_dtype = getattr(torch, dtype)
    generator = torch.Generator().manual_seed(0)

    def leaf(*shape, scale=1.0):
        value = torch.randn(*shape, generator=generator) * scale
        return value.to(torch_dtype).requires_grad_(True)

    batch, heads, q_len, k_len, d = 3, 2, 7, 9, 4
    query, keys_t, values = (
        leaf(batch, heads, q_len, d),
        leaf(batch, heads, d, k_len),
        leaf(batch, heads, k_len, d),
    )
    values.requires_grad_(values_need_grad)  # (the backward pass differs without)
    position = leaf(1, heads, q_len, k_len)
    padding = torch.zeros(batch, 1, 1, k_len, dtype=torch_dtype)
    padding[0, ..., :3] = -1e30 if dtype == "float32" else -3e38  # a padded row
    upstream = torch.randn(batch, heads, q_len, d, generator=generator).to(torch_dtype)
    leaves = (query, keys_t, values, position) if values_need_grad else (query, keys_t, position)

    def run(fused):
        torch.manual_seed(5)  # the same mask for both
        if fused:
            out = backend.attention_with_dropout(query, keys_t, values, (position, padding), 0.3)
        else:
            weights = torch.softmax(query @ keys_t + position + padding, dim=-1)
            out = backend.dropout(weights, 0.3) @ values
        grads = torch.autograd.grad((out.float() * upstream.float()).sum(), leaves)
        return out.detach().float(), [g.float() for g in grads]

    fused_out, fused_grads = run(True)
    plain_out, plain_grads = run(False)
    tolerance = {"float32": 1e-5, "bfloat16": 3e-2}[dtype]
    torch.testing.assert_close(fused_out, plain_out, rtol=tolerance, atol=tolerance)
    names = "qkvb" if values_need_grad else "qkb"
    for name, fused, plain in zip(names, fused_grads, plain_grads, strict=True):
        torch.testing.assert_close(fused, plain, rtol=tolerance, atol=tolerance, msg=name)
    assert fused_grads[-1].shape == position.shape
    # Some weights were dropped: the test exercises the mask.
    torch.manual_seed(5)
    assert not backend.dropout(torch.ones(batch, heads, q_len, k_len), 0.3).all()


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
        attention = T5Attention(num_heads=2, key_value_dim=4, dropout_rate=0.3)
        output, _ = attention(x, attention_bias=bias, training=training)
        outputs.append(ops.convert_to_numpy(output))
    np.testing.assert_allclose(outputs[1], outputs[0], rtol=1e-5, atol=1e-6)
