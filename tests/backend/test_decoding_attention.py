"""The decoding attention kernels (`backend.decoding_self_attention`,
`backend.decoding_cross_attention`) against their `keras.ops` references in
`layers.attention` and a float64 NumPy formula, alone and in a model's cached
decoding; and torch's raw candidate sampling against `generation.sample_top_k`."""

import keras
import numpy as np
import pytest
from keras import ops

from chronos_moe import backend
from chronos_moe.layers import attention as reference
from chronos_moe.layers.common import direct_layer_calls
from tests.layers.helpers import small_model

HEADS, D_KV, D_MODEL = 2, 4, 6


def tensor(array, dtype="float32"):
    return ops.cast(ops.convert_to_tensor(np.asarray(array, "float32")), dtype)


def numpy(value):
    return ops.convert_to_numpy(ops.cast(value, "float32")).astype("float64")


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


torch_only = pytest.mark.skipif(
    keras.config.backend() != "torch", reason="only torch has raw candidate sampling"
)


def self_attention_case(rng, batch=3, max_length=8, index=5, attended=8):
    hidden = rng.normal(size=(batch, 1, D_MODEL))
    projection = rng.normal(size=(D_MODEL, 3 * HEADS * D_KV))
    output_kernel = rng.normal(size=(HEADS * D_KV, D_MODEL))
    keys = rng.normal(size=(batch, HEADS, max_length, D_KV))
    values = rng.normal(size=(batch, HEADS, max_length, D_KV))
    bias = rng.normal(size=(1, HEADS, 1, attended))
    bias[..., index + 1 :] = -1e30  # the causal mask
    return hidden, projection, output_kernel, keys, values, bias


def expected_self_attention(hidden, projection, output_kernel, keys, values, bias, index):
    batch, attended = hidden.shape[0], bias.shape[-1]
    projected = (hidden[:, 0] @ projection).reshape(batch, 3, HEADS, D_KV)
    keys, values = keys.copy(), values.copy()
    keys[:, :, index], values[:, :, index] = projected[:, 1], projected[:, 2]
    scores = np.einsum("bhd,bhkd->bhk", projected[:, 0], keys[:, :, :attended]) + bias[:, :, 0]
    context = np.einsum("bhk,bhkd->bhd", softmax(scores), values[:, :, :attended])
    return (context.reshape(batch, -1) @ output_kernel)[:, None], keys, values


def run_self_attention(case, index, attended, dtype="float32", kernel=None):
    kernel = kernel or backend.decoding_self_attention
    hidden, projection, output_kernel, keys, values, bias = (tensor(x, dtype) for x in case)
    out, (new_keys, new_values) = kernel(
        hidden, projection, output_kernel, (keys, values), index, attended, bias, HEADS
    )
    return numpy(out), numpy(new_keys), numpy(new_values)


@pytest.mark.parametrize("attended", [8, None])
def test_self_attention_step_matches_the_formula(attended):
    case = self_attention_case(np.random.default_rng(0))
    out, keys, values = run_self_attention(case, 5, attended)
    want_out, want_keys, want_values = expected_self_attention(*case, index=5)
    np.testing.assert_allclose(out, want_out, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(keys, want_keys, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(values, want_values, rtol=1e-6, atol=1e-6)


def test_self_attention_step_reads_only_the_attended_positions():
    """With `attended_length` 6 the (unmasked) positions 6 and 7 are ignored."""
    rng = np.random.default_rng(1)
    case = list(self_attention_case(rng, index=3, attended=6))
    out, _, _ = run_self_attention(case, 3, 6)
    want, _, _ = expected_self_attention(*case, index=3)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("attended", [8, 6, None])
def test_self_attention_step_matches_the_reference(attended):
    case = self_attention_case(np.random.default_rng(2), attended=attended or 8)
    kernel = run_self_attention(case, 5, attended)
    want = run_self_attention(case, 5, attended, kernel=reference.decoding_self_attention)
    for a, b in zip(kernel, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_self_attention_step_in_bfloat16_is_close_to_float32():
    case = self_attention_case(np.random.default_rng(3))
    out, _, _ = run_self_attention(case, 5, 8, "bfloat16")
    want, _, _ = expected_self_attention(*case, index=5)
    np.testing.assert_allclose(out, want, rtol=0.05, atol=0.05 * np.abs(want).max())


def cross_attention_case(rng, kv_batch=2, group=3, enc_len=7):
    hidden = rng.normal(size=(kv_batch * group, 1, D_MODEL))
    query_kernel = rng.normal(size=(D_MODEL, HEADS * D_KV))
    output_kernel = rng.normal(size=(HEADS * D_KV, D_MODEL))
    keys = rng.normal(size=(kv_batch, HEADS, D_KV, enc_len))  # transposed
    values = rng.normal(size=(kv_batch, HEADS, enc_len, D_KV))
    bias = np.zeros((kv_batch, 1, 1, enc_len))
    bias[0, ..., :2] = -1e30  # a padded series
    return hidden, query_kernel, output_kernel, keys, values, bias


def expected_cross_attention(hidden, query_kernel, output_kernel, keys, values, bias):
    batch, kv_batch = hidden.shape[0], keys.shape[0]
    query = (hidden[:, 0] @ query_kernel).reshape(batch, HEADS, D_KV)
    source = np.repeat(np.arange(kv_batch), batch // kv_batch)  # the cache row of each row
    scores = np.einsum("bhd,bhdk->bhk", query, keys[source]) + bias[source, :, 0]
    context = np.einsum("bhk,bhkd->bhd", softmax(scores), values[source])
    return (context.reshape(batch, -1) @ output_kernel)[:, None]


def run_cross_attention(case, dtype="float32", kernel=None):
    kernel = kernel or backend.decoding_cross_attention
    hidden, query_kernel, output_kernel, keys, values, bias = (tensor(x, dtype) for x in case)
    return numpy(kernel(hidden, query_kernel, output_kernel, (keys, values), bias, HEADS))


@pytest.mark.parametrize("kv_batch,group", [(2, 3), (1, 4), (5, 1)])
def test_cross_attention_step_matches_the_formula(kv_batch, group):
    case = cross_attention_case(np.random.default_rng(4), kv_batch, group)
    np.testing.assert_allclose(
        run_cross_attention(case), expected_cross_attention(*case), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("kv_batch,group", [(2, 3), (1, 4), (5, 1)])
def test_cross_attention_step_matches_the_reference(kv_batch, group):
    case = cross_attention_case(np.random.default_rng(5), kv_batch, group)
    want = run_cross_attention(case, kernel=reference.decoding_cross_attention)
    np.testing.assert_allclose(run_cross_attention(case), want, rtol=1e-5, atol=1e-5)


def test_a_numpy_cache_and_kernels_are_converted():
    """The kernels take NumPy operands too (converted, then the same path)."""
    case = self_attention_case(np.random.default_rng(8))
    hidden, projection, output_kernel, keys, values, bias = (x.astype("float32") for x in case)
    out, _ = backend.decoding_self_attention(
        hidden, projection, output_kernel, (tensor(keys), tensor(values)), 5, 8, bias, HEADS
    )
    want, _, _ = expected_self_attention(*case, index=5)
    np.testing.assert_allclose(numpy(out), want, rtol=1e-5, atol=1e-5)


def decode_logits(model, steps=6, samples=3):
    rng = np.random.default_rng(6)
    ids = ops.convert_to_tensor(rng.integers(2, 64, (2, 12)).astype("int32"))
    mask = np.ones((2, 12), bool)
    mask[0, :4] = False
    mask = ops.convert_to_tensor(mask)
    rows = 2 * samples
    with direct_layer_calls(model):
        states = model.encode(ids, mask)
        self_cache, cross_cache = model.init_cache(states, rows, steps)
        constants = model.decoding_constants(mask, steps)
        tokens = ops.convert_to_tensor(rng.integers(2, 64, (rows, 1)).astype("int32"))
        outputs = []
        for index in range(steps):
            hidden, self_cache = model.decode_step(
                tokens, index, self_cache, cross_cache, mask, constants
            )
            logits = ops.cast(model.compute_logits(hidden), "float32")
            outputs.append(ops.convert_to_numpy(logits))
            tokens = ops.cast(ops.argmax(logits[:, 0], axis=-1)[:, None], "int32")
    return np.stack(outputs)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_decoding_steps_equal_the_reference_kernels(monkeypatch, dtype):
    """A model's cached decoding gives the same logits with the backend's
    kernels as with their `keras.ops` references (and a wrongly wired kernel
    call, e.g. a missing cache write or a swapped kernel, would not)."""
    model = small_model(dtype=dtype)
    fused = decode_logits(model)
    for name in ("decoding_self_attention", "decoding_cross_attention"):
        monkeypatch.setattr(backend, name, getattr(reference, name))
    plain = decode_logits(model)
    tolerance = 1e-5 if dtype == "float32" else 2e-2
    np.testing.assert_allclose(fused, plain, rtol=tolerance, atol=tolerance)


@torch_only
@pytest.mark.parametrize(
    "temperature, top_k, top_p", [(1.0, 50, 1.0), (0.6, 30, 0.9), (1.5, 8, 0.7), (1.0, 1, 1.0)]
)
def test_raw_candidate_sampling_draws_the_keras_ops_paths_tokens(
    monkeypatch, temperature, top_k, top_p
):
    """`backend.sample_top_k_candidates` (raw torch) draws exactly the tokens
    of `generation.sample_top_k`'s `keras.ops` code, and leaves batches whose
    ties outnumber the margin to it."""
    from chronos_moe.generation import sample_top_k

    rng = np.random.default_rng(7)
    logits = rng.normal(size=(300, 512)).astype(np.float32) * 1.5
    logits[:100] = np.round(logits[:100] * 64) / 64  # ties, within the margin
    logits[:, 1] = logits.max() + 1  # the banned token is the largest
    uniform = ops.convert_to_tensor(rng.uniform(size=(300, 1)).astype(np.float32))
    settings = (temperature, top_k, top_p, top_p < 1.0, 1)
    x = ops.convert_to_tensor(logits)
    width = top_k + 9
    raw = backend.sample_top_k_candidates(x, uniform, *settings, width)
    assert raw is not None and raw.dtype == ops.convert_to_tensor(0, "int32").dtype
    monkeypatch.setattr(backend, "sample_top_k_candidates", lambda *args: None)
    np.testing.assert_array_equal(numpy(raw), numpy(sample_top_k(x, uniform, *settings)))
    tied = np.zeros((2, 512), np.float32)  # 512 ties with the k-th largest
    monkeypatch.undo()
    assert backend.sample_top_k_candidates(ops.convert_to_tensor(tied), uniform[:2], *settings,
                                           width) is None  # fmt: skip
