"""Autoregressive sampling of forecast tokens with a fixed-size key/value cache.

The whole loop is one function of tensors (`keras.ops.fori_loop`), so on JAX it
compiles once per shape; on torch it runs eagerly. The encoder runs once per
series; the samples of a series share its cross-attention keys and values.
"""

from __future__ import annotations

from typing import Any

from keras import ops

from chronos_moe import backend


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
        kth_largest = ops.top_k(logits, top_k)[0][:, -1:]  # (batch, 1)
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


def sample_from_logits(logits, uniform):
    """Draws one token per row from softmax(logits) with the Gumbel-max trick:
    argmax(logits + G), G = -log(-log(U)), U ~ Uniform(0, 1)."""
    gumbel = -ops.log(-ops.log(uniform))
    return ops.cast(ops.argmax(logits + gumbel, axis=-1), "int32")


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
    """
    batch = ops.shape(input_ids)[0]
    rows = batch * num_samples
    encoder_states = model.encode(input_ids, attention_mask)
    self_cache, cross_cache = model.init_cache(encoder_states, rows, prediction_length)
    compute_logits = model.logits_function(encoder_states, attention_mask)
    tokens = ops.zeros((rows, prediction_length), "int32")
    start = ops.full((rows, 1), model.decoder_start_token_id, "int32")

    def step(index, state):
        tokens, previous, self_cache = state
        hidden, self_cache = model.decode_step(
            previous, index, self_cache, cross_cache, attention_mask
        )
        logits = ops.cast(compute_logits(hidden)[:, 0, :], "float32")  # (rows, vocab)
        logits = filter_logits(logits, temperature, top_k, top_p, use_top_p, model.eos_token_id)
        uniform = backend.uniform_noise(seed, index, tuple(logits.shape))
        chosen = sample_from_logits(logits, uniform)[:, None]  # (rows, 1)
        tokens = ops.slice_update(tokens, (0, index), chosen)
        return tokens, chosen, self_cache

    tokens, _, _ = ops.fori_loop(0, prediction_length, step, (tokens, start, self_cache))
    return ops.reshape(tokens, (batch, num_samples, prediction_length))
