"""Direct layer calls (`layers.common.direct_layer_calls` / `invoke`) give the
plain calls' results, and fall back under a mixed dtype policy and for
unbuilt layers."""

import numpy as np
from keras import ops

from chronos_moe.generation import generate_tokens
from chronos_moe.layers.common import direct_layer_calls, invoke
from chronos_moe.layers.layer_norm import T5LayerNorm
from tests.layers.helpers import small_model


def inputs(batch=2, length=12, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(2, 64, (batch, length)).astype("int32")
    mask = np.ones((batch, length), bool)
    mask[0, :3] = False  # a padded series
    return ops.convert_to_tensor(ids), ops.convert_to_tensor(mask)


def decode_all(model, steps=5, rows=6):
    ids, mask = inputs()
    states = model.encode(ids, mask)
    self_cache, cross_cache = model.init_cache(states, rows, steps)
    tokens = ops.convert_to_tensor(np.arange(rows, dtype="int32")[:, None] + 2)
    outputs = []
    for index in range(steps):
        hidden, self_cache = model.decode_step(tokens, index, self_cache, cross_cache, mask)
        outputs.append(ops.convert_to_numpy(ops.cast(model.compute_logits(hidden), "float32")))
    return np.stack(outputs)


def test_direct_layer_calls_give_the_plain_calls_results():
    model = small_model()
    plain = decode_all(model)
    with direct_layer_calls(model) as direct:
        fast = decode_all(model)
    assert direct
    np.testing.assert_allclose(fast, plain, rtol=0, atol=1e-6)


def test_direct_layer_calls_fall_back_under_a_mixed_policy():
    model = small_model(dtype="mixed_bfloat16")
    plain = decode_all(model)
    with direct_layer_calls(model) as direct:
        fallback = decode_all(model)
    assert not direct  # variables must be autocast by Layer.__call__
    np.testing.assert_array_equal(fallback, plain)


def test_invoke_builds_an_unbuilt_layer_through_call():
    norm = T5LayerNorm()
    with direct_layer_calls(norm):
        out = invoke(norm, ops.ones((2, 3)))
    assert norm.built and tuple(out.shape) == (2, 3)


def test_generate_tokens_greedy_matches_a_full_pass_argmax():
    """Greedy decoding (direct calls inside) equals the arg-max of the plain,
    uncached full-sequence pass fed its own tokens."""
    model = small_model()
    ids, mask = inputs()
    tokens = ops.convert_to_numpy(
        generate_tokens(model, ids, mask, 0, 1.0, 1.0,
                        prediction_length=5, num_samples=1, top_k=1, use_top_p=False)
    )[:, 0]  # fmt: skip
    decoder_inputs = np.concatenate([np.zeros((2, 1), "int32"), tokens[:, :-1]], axis=1)
    logits = ops.convert_to_numpy(
        model({"input_ids": ids, "attention_mask": mask, "decoder_input_ids": decoder_inputs})
    )
    logits[..., model.eos_token_id] = -np.inf
    np.testing.assert_array_equal(tokens, logits.argmax(-1))
