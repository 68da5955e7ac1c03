"""ChronosT5 against transformers' T5ForConditionalGeneration, weight for weight.

Every comparison loads the same reference checkpoint (written by transformers,
see `checkpoint_factory`) into both models and asks for max |diff| <= 1e-5 on
logits of O(1..20).
"""

import keras
import numpy as np
import pytest
import torch
from keras import ops
from transformers.models.t5.modeling_t5 import T5Attention as HFT5Attention

from chronos_moe import backend
from chronos_moe.checkpoints import load_chronos_t5
from chronos_moe.config import T5_PRESETS
from chronos_moe.layers.t5 import relative_position_bucket
from tests.checkpoint_factory import (
    as_transformers4_layout,
    compiled_forward,
    load_reference_model,
    make_reference_checkpoint,
    reference_logits,
)

ATOL = 1e-5
# XLA's CPU dot accumulates long sums (d_ff 2048-4096 of the small/base/large
# shapes) less accurately than oneDNN: against a float64 run of transformers, JAX
# is 1.0e-5 / 1.4e-5 off for base / large, transformers' own float32 run 6.7e-6 /
# 4.0e-6 and torch-Keras 3.1e-6 / 4.6e-6. That is float32 rounding at logits of
# ~20 (a few ulp), not a model difference, so on JAX the parity with transformers
# also allows 1e-6 of the logit's size (8 ulp); everything else stays absolute.
RTOL = 1e-6 if keras.config.backend() == "jax" else 0.0
VOCAB = 4096

# Name -> (checkpoint kwargs, rewrite to the transformers-4 config layout).
CASES = {
    **{
        f"preset-{size}": (
            dict(shape, num_layers=1 if size in ("base", "large") else 2, vocab_size=VOCAB),
            False,
        )
        for size, shape in T5_PRESETS.items()
    },
    # The other cases share the factory's small shape (d_model 32, 4 heads of 8,
    # d_ff 64) so that JAX compiles their initialisers and kernels only once.
    "gated-gelu": (dict(feed_forward_proj="gated-gelu"), False),
    # An untied checkpoint exactly as transformers 5 writes it: config.json says
    # tie_word_embeddings=true, scale_decoder_outputs=false, and model.safetensors
    # holds a separate lm_head.weight.
    "untied": (dict(tie_word_embeddings=False), False),
    # The same model in the transformers-4 / hub layout (tie_word_embeddings=false).
    "untied-transformers4-layout": (dict(tie_word_embeddings=False), True),
    # What `T5Config(tie_word_embeddings=False)` gives in transformers 5: the shared
    # embedding is the head, without the d_model^-0.5 rescale; no lm_head.weight.
    "unscaled-shared-head": (dict(tie_word_embeddings=False, separate_lm_head=False), False),
    "odd-heads": (dict(num_heads=3, d_kv=10, d_model=24, d_ff=40), False),
    "deeper-decoder": (dict(num_layers=1, num_decoder_layers=3), False),
    # Few buckets and a short max distance with sequences longer than it, so the
    # logarithmic buckets and the clamp to the last bucket are exercised.
    "few-buckets": (
        dict(relative_attention_num_buckets=8, relative_attention_max_distance=10),
        False,
    ),
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    made = {}

    def get(name):
        if name not in made:
            kwargs, transformers4 = CASES[name]
            directory = tmp_path_factory.mktemp(name)
            make_reference_checkpoint(directory, seed=list(CASES).index(name), **kwargs)
            if transformers4:
                as_transformers4_layout(directory)
            made[name] = directory
        return made[name]

    return get


@pytest.fixture(scope="module")
def models(checkpoints):
    """`case -> (ChronosT5, compiled forward)`; the models are read-only here."""
    loaded = {}

    def get(name):
        if name not in loaded:
            model = load_chronos_t5(checkpoints(name))
            loaded[name] = (model, compiled_forward(model))
        return loaded[name]

    return get


# One input shape for all tests (JAX compiles once per shape): contexts longer
# than the few-buckets case's max distance, so its clamp to the last bucket runs.
ENC_LEN, DEC_LEN = 24, 12


def make_inputs(vocab_size, batch=3, enc_len=ENC_LEN, dec_len=DEC_LEN, seed=0):
    """Chronos-like inputs: left padding (mask 0, pad id 0) of different lengths,
    a missing value inside one context, and an EOS at the end of every context."""
    rng = np.random.default_rng(seed)
    input_ids = rng.integers(2, vocab_size, (batch, enc_len)).astype("int32")
    attention_mask = np.ones((batch, enc_len), "int32")
    for row, padding in enumerate([0, 5, enc_len - 3][:batch]):
        attention_mask[row, :padding] = 0
        input_ids[row, :padding] = 0
    attention_mask[0, 6] = 0
    input_ids[0, 6] = 0
    input_ids[:, -1] = 1
    decoder_input_ids = rng.integers(0, vocab_size, (batch, dec_len)).astype("int32")
    decoder_input_ids[:, 0] = 0
    return input_ids, attention_mask, decoder_input_ids


@pytest.mark.parametrize("case", list(CASES))
def test_logits_match_transformers(checkpoints, models, case):
    directory = checkpoints(case)
    model, forward = models(case)
    input_ids, attention_mask, decoder_input_ids = make_inputs(model.vocab_size)
    expected, _ = reference_logits(
        load_reference_model(directory), input_ids, attention_mask, decoder_input_ids
    )
    actual = forward(
        input_ids=input_ids,
        attention_mask=attention_mask,
        decoder_input_ids=decoder_input_ids,
    )
    assert actual.shape == expected.shape
    assert np.abs(expected).max() > 2.0  # logits large enough for errors to show
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("case", ["preset-tiny", "gated-gelu", "untied-transformers4-layout"])
def test_labels_path_and_loss_match_transformers(checkpoints, models, case):
    model, forward = models(case)
    input_ids, attention_mask, labels = make_inputs(model.vocab_size, seed=1)
    labels[0, -2:] = -100
    labels[2, 3] = -100
    expected, expected_loss = reference_logits(
        load_reference_model(checkpoints(case)), input_ids, attention_mask, labels=labels
    )
    batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    logits = forward(**batch)
    np.testing.assert_allclose(logits, expected, rtol=RTOL, atol=ATOL)
    loss = model.compute_loss(x=batch, y_pred=ops.convert_to_tensor(logits))
    assert abs(float(ops.convert_to_numpy(loss)) - expected_loss) <= ATOL
    loss_from_y = model.compute_loss(x=batch, y=labels, y_pred=ops.convert_to_tensor(logits))
    assert abs(float(ops.convert_to_numpy(loss_from_y)) - expected_loss) <= ATOL
    # The ignored positions matter: counting them would change the loss.
    unmasked = np.where(labels == -100, 5, labels)
    loss_unmasked = model.compute_loss(x=batch, y=unmasked, y_pred=ops.convert_to_tensor(logits))
    assert abs(float(ops.convert_to_numpy(loss_unmasked)) - expected_loss) > 1e-3


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize(
    "num_buckets, max_distance", [(32, 128), (16, 64), (8, 20), (64, 1000), (33, 100)]
)
def test_relative_position_bucket_matches_transformers(bidirectional, num_buckets, max_distance):
    relative = np.arange(-5000, 5001, dtype="int32")
    expected = HFT5Attention._relative_position_bucket(
        torch.from_numpy(relative).long(),
        bidirectional=bidirectional,
        num_buckets=num_buckets,
        max_distance=max_distance,
    ).numpy()
    actual = relative_position_bucket(
        ops.convert_to_tensor(relative), bidirectional, num_buckets, max_distance
    )
    np.testing.assert_array_equal(ops.convert_to_numpy(actual), expected)
    assert len(np.unique(expected)) > num_buckets // 4  # not trivially constant


def cached_logits(model, input_ids, attention_mask, decoder_input_ids, compiled=True):
    """Logits of `encode` → `init_cache` → `decode_step` per position →
    `compute_logits`. `compiled=False` runs eagerly with Python-int indices."""

    def prepare(input_ids, attention_mask):
        encoder_states = model.encode(input_ids, attention_mask)
        return model.init_cache(encoder_states, decoder_input_ids.shape[0], length)

    def step(tokens, index, self_cache, cross_cache, attention_mask):
        hidden, self_cache = model.decode_step(
            tokens, index, self_cache, cross_cache, attention_mask
        )
        return model.compute_logits(hidden), self_cache

    if compiled:
        prepare = backend.compile_stateless(model, prepare)
        step = backend.compile_stateless(model, step)
    length = decoder_input_ids.shape[1]
    input_ids = ops.convert_to_tensor(input_ids)
    attention_mask = ops.convert_to_tensor(attention_mask)
    self_cache, cross_cache = prepare(input_ids, attention_mask)
    steps = []
    for index in range(length):
        cache_index = ops.convert_to_tensor(index, "int32") if compiled else index
        tokens = ops.convert_to_tensor(decoder_input_ids[:, index : index + 1])
        logits, self_cache = step(tokens, cache_index, self_cache, cross_cache, attention_mask)
        steps.append(ops.convert_to_numpy(logits))
    return np.concatenate(steps, axis=1)


@pytest.mark.parametrize("case", ["preset-tiny", "gated-gelu", "deeper-decoder", "few-buckets"])
def test_cached_decoding_equals_full_pass(models, case):
    model, forward = models(case)
    input_ids, attention_mask, decoder_input_ids = make_inputs(model.vocab_size)
    full = forward(
        input_ids=input_ids,
        attention_mask=attention_mask,
        decoder_input_ids=decoder_input_ids,
    )
    cached = cached_logits(model, input_ids, attention_mask, decoder_input_ids)
    np.testing.assert_allclose(cached, full, rtol=0, atol=ATOL)


def test_eager_equals_compiled(models):
    """The same numbers with jit on and off (eager `call` against the compiled
    pass the parity tests use; on torch also eager cached decoding)."""
    model, forward = models("odd-heads")
    input_ids, attention_mask, decoder_input_ids = make_inputs(model.vocab_size)
    input_ids, attention_mask = input_ids[:2, -12:], attention_mask[:2, -12:]
    decoder_input_ids = decoder_input_ids[:2, :2]
    inputs = dict(
        input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids
    )
    compiled = forward(**inputs)
    eager = ops.convert_to_numpy(model(inputs))
    np.testing.assert_allclose(eager, compiled, rtol=0, atol=ATOL)
    if keras.config.backend() == "torch":
        # Python-int cache indices: the path of torch's `fori_loop` in generation
        # (JAX always decodes inside one compiled loop, covered above).
        cached = cached_logits(model, input_ids, attention_mask, decoder_input_ids, compiled=False)
        np.testing.assert_allclose(cached, compiled, rtol=0, atol=ATOL)


def test_decoder_is_causal(models):
    model, forward = models("preset-tiny")
    input_ids, attention_mask, decoder_input_ids = make_inputs(model.vocab_size)
    changed = decoder_input_ids.copy()
    changed[:, 5] = (changed[:, 5] + 17) % model.vocab_size
    before = forward(
        input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids
    )
    after = forward(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=changed)
    np.testing.assert_array_equal(after[:, :5], before[:, :5])
    # The change is visible from its own position on (so the test can fail).
    assert np.abs(after[:, 5:] - before[:, 5:]).max(axis=(0, 2)).min() > 1e-3


def test_masked_encoder_positions_are_ignored(models):
    """Token ids under attention_mask=0 cannot change the logits."""
    model, forward = models("preset-tiny")
    input_ids, attention_mask, decoder_input_ids = make_inputs(model.vocab_size)
    changed = np.where(attention_mask == 0, 77, input_ids).astype("int32")
    kwargs = dict(attention_mask=attention_mask, decoder_input_ids=decoder_input_ids)
    np.testing.assert_allclose(
        forward(input_ids=changed, **kwargs), forward(input_ids=input_ids, **kwargs), atol=ATOL
    )
    # ... while an observed position does change them.
    changed[0, -2] = 77
    assert (
        np.abs(forward(input_ids=changed, **kwargs) - forward(input_ids=input_ids, **kwargs))[
            0
        ].max()
        > 1e-3
    )


def test_grouped_cache_equals_rows_run_separately(models):
    """init_cache(encoder_states, batch * num_samples, L): each encoder row serves
    num_samples consecutive decoder rows, as generation uses it."""
    model, forward = models("preset-tiny")
    num_samples, length = 3, 6
    input_ids, attention_mask, _ = make_inputs(model.vocab_size, batch=2)
    rng = np.random.default_rng(5)
    decoder_input_ids = rng.integers(2, model.vocab_size, (2 * num_samples, length))
    decoder_input_ids = decoder_input_ids.astype("int32")
    decoder_input_ids[:, 0] = 0

    grouped = cached_logits(model, input_ids, attention_mask, decoder_input_ids)
    repeated_ids = np.repeat(input_ids, num_samples, axis=0)
    repeated_mask = np.repeat(attention_mask, num_samples, axis=0)
    separate = cached_logits(model, repeated_ids, repeated_mask, decoder_input_ids)
    np.testing.assert_allclose(grouped, separate, rtol=0, atol=ATOL)
    # Rows of one group really differ, and so do the two series.
    assert np.abs(grouped[0] - grouped[1]).max() > 1e-3
    assert np.abs(grouped[0] - separate[3]).max() > 1e-3
