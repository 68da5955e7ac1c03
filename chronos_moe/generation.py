"""Autoregressive sampling of forecast tokens with a fixed-size key/value cache.

The whole loop is one function of tensors (`keras.ops.fori_loop`), so on JAX it
compiles once per shape; on torch it runs eagerly. The encoder runs once per
series; the samples of a series share its cross-attention keys and values.
"""

from __future__ import annotations

from typing import Any

from keras import ops

from chronos_moe import backend
from chronos_moe.layers.common import direct_layer_calls


def filter_logits(logits, temperature, top_k: int, top_p, use_top_p: bool, banned_token: int):
    """Applies the reference's logits processing, in its order.

    1. `banned_token` (EOS) gets -inf: the reference asks for exactly
       `prediction_length` new tokens, so EOS may never be drawn.
    2. Temperature: `logits / temperature`.
    3. Top-k: tokens below the k-th largest logit get -inf (ties are kept).
    4. Top-p (only when `use_top_p`): the smallest set of most likely tokens
       whose probability reaches `top_p` is kept, at least one token.

    Args:
        logits: float32 `(batch, vocab)`.
        temperature, top_p: float scalars (Python or tensor).
        top_k: int, static.
        use_top_p: bool, static; `False` when `top_p == 1`.
        banned_token: int, static.
    """
    vocab = ops.shape(logits)[-1]
    negative_infinity = float("-inf")
    logits = ops.where(ops.arange(vocab)[None, :] == banned_token, negative_infinity, logits)
    logits = logits / temperature
    if top_k < vocab:
        kth_largest = backend.kth_largest(logits, top_k)  # (batch, 1)
        logits = ops.where(logits < kth_largest, negative_infinity, logits)
    if use_top_p:
        ascending = ops.sort(logits, axis=-1)
        cumulative = ops.cumsum(ops.softmax(ascending, axis=-1), axis=-1)
        # A prefix of the ascending order is dropped: the tokens whose cumulative
        # probability stays <= 1 - top_p; the most likely token always stays.
        dropped = ops.cast(cumulative[:, :-1] <= 1.0 - top_p, "int32")
        threshold = ops.take_along_axis(
            ascending, ops.sum(dropped, axis=-1, keepdims=True), axis=-1
        )
        logits = ops.where(logits < threshold, negative_infinity, logits)
    return logits


def sample_from_logits(logits, uniform, chunk_size: int = 64):
    """Draws one token per row from softmax(logits) by inverse transform
    sampling: the token whose cumulative probability first exceeds `uniform`.

    One uniform per row (the Gumbel-max trick needs one per token, two logs
    each, and the random numbers alone were a tenth of the decoding time). The
    cumulative sum is taken in two levels, over chunks of `chunk_size` tokens
    and then within the chosen chunk, which keeps the sums short and accurate.
    Tokens of probability 0 (logit -inf) are never drawn, also when rounding
    puts the target at the very end of the distribution.

    Args:
        logits: float32 `(rows, vocab)`, at least one finite entry per row.
        uniform: float32 `(rows, 1)` in [0, 1).
        chunk_size: int, static. Tokens per chunk of the first level.

    Returns:
        int32 token ids `(rows,)`.
    """
    rows, vocab = ops.shape(logits)
    chunks = -(-vocab // chunk_size)
    probabilities = ops.exp(logits - ops.max(logits, axis=-1, keepdims=True))  # unnormalised
    if chunks * chunk_size != vocab:
        probabilities = ops.pad(probabilities, ((0, 0), (0, chunks * chunk_size - vocab)))
    probabilities = ops.reshape(probabilities, (rows, chunks, chunk_size))

    def pick(weights, target):
        """Index of the first entry whose cumulative weight exceeds `target`,
        but at most the last entry of positive weight; and the weight before it."""
        cumulative = ops.cumsum(weights, axis=-1)  # (rows, n)
        index = ops.sum(ops.cast(cumulative <= target, "int32"), axis=-1, keepdims=True)
        positions = ops.arange(ops.shape(weights)[-1], dtype="int32")[None, :]
        last = ops.max(ops.where(weights > 0, positions, 0), axis=-1, keepdims=True)
        index = ops.minimum(index, last)
        before = ops.take_along_axis(cumulative - weights, index, axis=-1)
        return index, before

    masses = ops.sum(probabilities, axis=-1)  # (rows, chunks)
    target = uniform * ops.sum(masses, axis=-1, keepdims=True)  # (rows, 1)
    chunk, before = pick(masses, target)
    within = ops.take_along_axis(probabilities, chunk[:, :, None], axis=1)[:, 0]  # (rows, size)
    token, _ = pick(within, target - before)
    return ops.cast(chunk[:, 0] * chunk_size + token[:, 0], "int32")


# Candidates beyond the k-th that `sample_top_k` takes, to find logits tied
# with the k-th largest (the reference keeps every tie). Small on purpose:
# torch's CPU top-k uses its fast partial sort only while 64 · k <= vocab
# (k <= 64 for 4096 tokens), and top_k = 50 plus 9 stays under that; at 640
# rows, k = 67 took 12.5 ms against 7 ms for k = 50.
TOP_K_MARGIN = 8


def sample_top_k(
    logits,
    uniform,
    temperature,
    top_k: int,
    top_p,
    use_top_p: bool,
    banned_token: int,
    margin: int = TOP_K_MARGIN,
):
    """`sample_from_logits(filter_logits(logits, ...), uniform)`, computed on
    the `top_k + margin + 1` largest logits of each row only.

    Top-k filtering leaves at most a few more than `top_k` tokens (the ties of
    the k-th largest), so temperature, top-p and the inverse-CDF draw need not
    pass over the whole vocabulary: one `top_k` selection finds the
    candidates, and everything else works on `(rows, top_k + margin + 1)`.
    The candidates are put back in vocabulary order before the cumulative sum,
    so a uniform picks the token the full-vocabulary path picks (up to the
    rounding of the sums: a draw within ~1e-7 of a boundary between two
    tokens may differ); the distribution is the same.

    The candidates are complete when the smallest of them, scaled by the
    temperature, is below the k-th largest: then no token outside ties it.
    Otherwise (more than `margin` logits tie with the k-th largest, as may
    happen with coarse bfloat16 logits) the whole batch takes the
    full-vocabulary path (`ops.cond`).

    Args:
        logits: float32 `(rows, vocab)`.
        uniform: float32 `(rows, 1)` in [0, 1).
        temperature, top_p: float scalars (Python or tensor).
        top_k: int, static, with `top_k + margin + 1 <= vocab`.
        use_top_p: bool, static; `False` when `top_p == 1`.
        banned_token: int, static; never drawn.
        margin: int, static. Extra candidates taken to catch ties.

    Returns:
        int32 token ids `(rows,)`.

    Example:

    >>> import numpy as np
    >>> logits = np.log(np.array([[0.1, 0.0, 0.6, 0.3, 0.0, 0.0]], "float32") + 1e-30)
    >>> token = sample_top_k(ops.convert_to_tensor(logits),
    ...                      ops.convert_to_tensor([[0.8]]), 1.0, 2, 1.0, False, 1, 2)
    >>> int(ops.convert_to_numpy(token)[0])  # candidates 2 (0.6) and 3 (0.3): u=0.8 -> 3
    3
    """
    rows, vocab = ops.shape(logits)
    width = top_k + margin + 1
    if width > vocab:
        raise ValueError(
            f"`top_k + margin + 1` must be at most the vocabulary size {vocab}. "
            f"Received: top_k={top_k}, margin={margin}"
        )
    # Raw torch where it applies (the same ops, without keras.ops' overhead).
    tokens = backend.sample_top_k_candidates(
        logits, uniform, temperature, top_k, top_p, use_top_p, banned_token, width
    )
    if tokens is not None:
        return tokens
    negative_infinity = float("-inf")
    raw, indices = ops.top_k(logits, width)  # descending, (rows, width)
    values = ops.where(indices == banned_token, negative_infinity, raw) / temperature
    ascending = ops.sort(values, axis=-1)
    # The banned token (-inf) sorts first, so this is the k-th largest of the
    # others whether or not it is among the candidates.
    kth_largest = ascending[:, width - top_k : width - top_k + 1]
    # Every token outside the candidates is at most the smallest candidate.
    complete = ops.all(raw[:, -1:] / temperature < kth_largest)

    def from_candidates():
        threshold = kth_largest
        if use_top_p:
            # filter_logits' top-p over the candidates: the tokens outside
            # have probability 0 and add nothing to the cumulative sums.
            kept = ops.where(ascending < kth_largest, negative_infinity, ascending)
            cumulative = ops.cumsum(ops.softmax(kept, axis=-1), axis=-1)
            dropped = ops.cast(cumulative[:, :-1] <= 1.0 - top_p, "int32")
            threshold = ops.take_along_axis(kept, ops.sum(dropped, axis=-1, keepdims=True), axis=-1)
        weights = ops.where(values >= threshold, ops.exp(values - ascending[:, -1:]), 0.0)
        order = ops.argsort(indices, axis=-1)  # vocabulary order, as sample_from_logits
        weights = ops.take_along_axis(weights, order, axis=-1)
        cumulative = ops.cumsum(weights, axis=-1)
        target = uniform * cumulative[:, -1:]
        index = ops.sum(ops.cast(cumulative <= target, "int32"), axis=-1, keepdims=True)
        positions = ops.arange(width, dtype="int32")[None, :]
        last = ops.max(ops.where(weights > 0, positions, 0), axis=-1, keepdims=True)
        index = ops.take_along_axis(order, ops.minimum(index, last), axis=-1)
        return ops.cast(ops.take_along_axis(indices, index, axis=-1)[:, 0], "int32")

    def from_vocabulary():
        filtered = filter_logits(logits, temperature, top_k, top_p, use_top_p, banned_token)
        return sample_from_logits(filtered, uniform)

    return ops.cond(complete, from_candidates, from_vocabulary)


def sample_next_tokens(
    logits, uniform, temperature, top_k: int, top_p, use_top_p: bool, banned_token: int
):
    """One token per row from the reference's filtered distribution
    (`filter_logits`), by inverse transform sampling with `uniform`.

    Where the backend selects the top k without sorting whole rows
    (`backend.cheap_top_k`) and `top_k` is well below the vocabulary size,
    `sample_top_k` works on the candidates only; otherwise the full rows are
    filtered and sampled (`filter_logits`, `sample_from_logits`).

    Returns:
        int32 token ids `(rows,)`.
    """
    vocab = ops.shape(logits)[-1]
    if backend.cheap_top_k() and 4 * (top_k + TOP_K_MARGIN + 1) <= vocab:
        return sample_top_k(logits, uniform, temperature, top_k, top_p, use_top_p, banned_token)
    filtered = filter_logits(logits, temperature, top_k, top_p, use_top_p, banned_token)
    return sample_from_logits(filtered, uniform)


def generate_tokens(
    model: Any,
    input_ids,
    attention_mask,
    seed,
    temperature,
    top_p,
    *,
    prediction_length: int,
    num_samples: int,
    top_k: int,
    use_top_p: bool,
):
    """Samples `num_samples` token paths of `prediction_length` per series.

    Args:
        model: a `ChronosT5` or `ChronosMoE` (`encode`, `init_cache`,
            `decode_step`, `logits_function`).
        input_ids, attention_mask: `(batch, enc_len)` tokenized contexts.
        seed: int scalar; the draws are a deterministic function of it.
        temperature, top_p: float scalars.
        prediction_length, num_samples, top_k, use_top_p: static settings.

    Returns:
        int32 token ids `(batch, num_samples, prediction_length)`.

    The layers are called directly (`direct_layer_calls`), without Keras'
    per-call bookkeeping, unless the model uses a mixed dtype policy.
    """
    batch = ops.shape(input_ids)[0]
    rows = batch * num_samples
    with direct_layer_calls(model):
        encoder_states = model.encode(input_ids, attention_mask)
        self_cache, cross_cache = model.init_cache(encoder_states, rows, prediction_length)
        compute_logits = model.logits_function(encoder_states, attention_mask)
        constants = model.decoding_constants(attention_mask, prediction_length)
        tokens = ops.zeros((rows, prediction_length), "int32")
        start = ops.full((rows, 1), model.decoder_start_token_id, "int32")

        def step(index, state):
            tokens, previous, self_cache = state
            hidden, self_cache = model.decode_step(
                previous, index, self_cache, cross_cache, attention_mask, constants
            )
            logits = ops.cast(compute_logits(hidden)[:, 0, :], "float32")  # (rows, vocab)
            uniform = backend.uniform_noise(seed, index, (rows, 1))
            chosen = sample_next_tokens(
                logits, uniform, temperature, top_k, top_p, use_top_p, model.eos_token_id
            )[:, None]  # (rows, 1)
            tokens = backend.update_cache(tokens, chosen, index, axis=1)
            return tokens, chosen, self_cache

        tokens, _, _ = ops.fori_loop(0, prediction_length, step, (tokens, start, self_cache))
    return ops.reshape(tokens, (batch, num_samples, prediction_length))
