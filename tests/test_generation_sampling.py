"""`sample_top_k` (sampling from the top-k candidates only) draws from the
same distribution as the full-vocabulary path (`filter_logits` then
`sample_from_logits`) and the reference's warpers, with ties at the k-th
logit, a banned token among the candidates, top-p, greedy, and the
fall-back when the ties outnumber the margin; on JAX also inside `jit`."""

import doctest

import keras
import numpy as np
import pytest
import torch
from keras import ops
from transformers.generation.logits_process import (
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from chronos_moe import backend, generation
from chronos_moe.generation import (
    filter_logits,
    generate_tokens,
    sample_from_logits,
    sample_next_tokens,
    sample_top_k,
)
from chronos_moe.models.chronos_t5 import ChronosT5

BANNED = 1


def compiled(function):
    """`function` as decoding runs it: under `jax.jit` on JAX (`ops.cond` is then
    `lax.cond`), eagerly on torch."""
    if keras.config.backend() == "jax":
        import jax

        return jax.jit(function)
    return function


def reference_probabilities(logits, temperature, top_k, top_p):
    """The reference's filtered distribution: EOS banned, then transformers'
    temperature, top-k and top-p warpers, then softmax (float64)."""
    scores = torch.tensor(logits)
    scores[:, BANNED] = -float("inf")
    scores = TemperatureLogitsWarper(temperature)(None, scores)
    scores = TopKLogitsWarper(top_k)(None, scores)
    if top_p < 1.0:
        scores = TopPLogitsWarper(top_p)(None, scores)
    return torch.softmax(scores.double(), dim=-1).numpy()


def grid_frequencies(sampler, row, n, *args):
    """Token frequencies of `sampler` for one logits row and `n` uniforms on a
    regular grid: deterministic, within 1/n of the sampled distribution."""
    uniform = ((np.arange(n) + 0.5) / n).astype(np.float32)[:, None]
    rows = np.repeat(row[None], n, axis=0)
    tokens = ops.convert_to_numpy(
        compiled(lambda x, u: sampler(x, u, *args))(
            ops.convert_to_tensor(rows), ops.convert_to_tensor(uniform)
        )
    )
    assert tokens.dtype == np.int32 and tokens.shape == (n,)
    return np.bincount(tokens, minlength=row.shape[0]) / n


def full_path(logits, uniform, temperature, top_k, top_p, use_top_p, banned):
    return sample_from_logits(
        filter_logits(logits, temperature, top_k, top_p, use_top_p, banned), uniform
    )


def tied_logits(vocab=300, seed=0):
    """Logits rounded to a coarse grid (as bfloat16 logits are): many ties."""
    logits = np.random.default_rng(seed).normal(size=vocab).astype(np.float32)
    return np.round(logits * 4) / 4


@pytest.mark.parametrize(
    "case, temperature, top_k, top_p",
    [
        ("distinct", 1.0, 10, 1.0),
        ("distinct", 0.7, 20, 0.9),
        ("distinct", 1.3, 5, 0.5),
        ("ties within the margin", 1.0, 12, 1.0),
        ("ties within the margin", 0.8, 12, 0.8),
        ("ties beyond the margin", 1.0, 10, 1.0),
        ("banned token the largest", 1.0, 6, 1.0),
        ("greedy with a tie", 1.0, 1, 1.0),
        ("top-p keeps one token", 1.0, 10, 1e-4),
    ],
)
def test_sample_top_k_draws_the_reference_distribution(case, temperature, top_k, top_p):
    row = np.random.default_rng(top_k).normal(size=300).astype(np.float32) * 2
    if case.startswith("ties"):
        row = tied_logits(seed=top_k)
        if case == "ties beyond the margin":
            row[:100] = np.sort(row)[-top_k]  # 100 ties with the k-th largest
    elif case == "banned token the largest":
        row[BANNED] = row.max() + 5
    elif case == "greedy with a tie":
        row[[7, 200]] = row.max() + 1
    probabilities = reference_probabilities(row[None], temperature, top_k, top_p)[0]
    use_top_p = top_p < 1.0
    settings = (temperature, top_k, top_p, use_top_p, BANNED)
    frequencies = grid_frequencies(sample_top_k, row, 20000, *settings, 4)
    if case.startswith("ties") and use_top_p:
        # filter_logits keeps every token tied with the top-p threshold, where
        # transformers may cut a tie by its sort order: a superset.
        assert not frequencies[(probabilities == 0) & (row < row[probabilities > 0].min())].any()
    else:
        np.testing.assert_allclose(frequencies, probabilities, atol=2e-4)
        assert not frequencies[probabilities == 0].any()
    assert frequencies[BANNED] == 0
    # The full-vocabulary path draws the same distribution.
    full = grid_frequencies(full_path, row, 20000, *settings)
    np.testing.assert_allclose(full, frequencies, atol=2e-4)


@pytest.mark.parametrize(
    "temperature, top_k, top_p", [(1.0, 50, 1.0), (0.6, 30, 0.9), (1.5, 8, 0.7)]
)
def test_sample_top_k_picks_the_full_paths_token_for_each_uniform(temperature, top_k, top_p):
    """Candidates are summed in vocabulary order, so a uniform lands on the same
    token as in the full-vocabulary path (rounding of the sums aside)."""
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(400, 512)).astype(np.float32) * 1.5
    logits[:100] = np.round(logits[:100] * 8) / 8  # some ties, within the margin
    uniform = rng.uniform(size=(400, 1)).astype(np.float32)
    settings = (temperature, top_k, top_p, top_p < 1.0, BANNED)
    x, u = ops.convert_to_tensor(logits), ops.convert_to_tensor(uniform)
    fast = ops.convert_to_numpy(compiled(lambda x, u: sample_top_k(x, u, *settings))(x, u))
    full = ops.convert_to_numpy(compiled(lambda x, u: full_path(x, u, *settings))(x, u))
    assert (fast != full).sum() <= 1


def test_sample_top_k_rejects_a_margin_beyond_the_vocabulary():
    logits = ops.zeros((2, 20))
    with pytest.raises(ValueError, match="top_k"):
        sample_top_k(logits, ops.zeros((2, 1)), 1.0, 10, 1.0, False, BANNED, margin=10)


def test_sample_next_tokens_chooses_a_path_that_keeps_the_distribution():
    row = tied_logits(vocab=512, seed=3)
    probabilities = reference_probabilities(row[None], 0.9, 50, 1.0)[0]
    frequencies = grid_frequencies(sample_next_tokens, row, 20000, 0.9, 50, 1.0, False, BANNED)
    np.testing.assert_allclose(frequencies, probabilities, atol=2e-4)


def test_generate_tokens_gives_the_full_vocabulary_paths_tokens(monkeypatch):
    """Seeded decoding draws the same tokens with and without the candidate path."""
    keras.utils.set_random_seed(0)
    model = ChronosT5.from_preset(
        "tiny",
        vocab_size=512,
        num_layers=2,
        tie_word_embeddings=False,
        initializer_factor=4.0,
        chronos_config={"n_tokens": 512, "context_length": 16, "prediction_length": 6},
    )
    ids = ops.convert_to_tensor(np.random.default_rng(0).integers(2, 512, (2, 12)), "int32")
    mask = ops.ones((2, 12), "bool")

    def tokens():
        return ops.convert_to_numpy(
            generate_tokens(model, ids, mask, 5, 1.0, 0.9,
                            prediction_length=6, num_samples=8, top_k=20, use_top_p=True)
        )  # fmt: skip

    default = tokens()
    monkeypatch.setattr(backend, "cheap_top_k", lambda: False)
    full = tokens()
    np.testing.assert_array_equal(default, full)
    assert len(np.unique(full)) > 20  # sampled, not constant


def test_docstring_examples_run():
    result = doctest.testmod(generation, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
