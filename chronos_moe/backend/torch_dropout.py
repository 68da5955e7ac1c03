"""Training-mode dropout on torch, alone and fused into attention (part of
`chronos_moe.backend.torch`).

`torch.nn.functional.dropout` draws its mask on the CPU with `bernoulli_`,
one float per element: about a third of a chronos-t5-tiny training step. Here
the mask takes 16 random bits per element, and the backward passes keep a
1-byte mask instead of a float noise tensor.
"""

from __future__ import annotations

import concurrent.futures
import functools
from typing import Any

import keras
import torch

# Dropout masks are drawn with this many random bits per element.
DROPOUT_MASK_BITS = 16

# Random words per generator when a mask is drawn in parallel (8 MB of words).
WORDS_PER_DRAW = 1 << 20


def dropout_rate_drawn(rate: float) -> float:
    """The drop probability `dropout` realises for ``rate``: ``rate`` rounded
    to a multiple of 2⁻¹⁶ (each element compares 16 random bits with a
    threshold), e.g. 6554 / 65536 = 0.1000061 for 0.1.

    Example:

    >>> round(dropout_rate_drawn(0.1), 7)
    0.1000061
    """
    levels = 1 << DROPOUT_MASK_BITS
    return min(max(round(rate * levels), 0), levels) / levels


def dropout(inputs: Any, rate: float, seed_generator: Any = None) -> Any:
    """Training-mode dropout: zeroes each element with probability ``rate``
    and scales the kept ones by ``1 / (1 - rate)``, drawn from torch's global
    generator (as Keras' unseeded torch dropout; ``seed_generator`` is not
    used; checkpoints save and restore that generator for an exact resume).
    Reference: `keras.random.dropout`.

    The mask takes 16 random bits per element (64-bit words from `random_`,
    split into four lanes, each compared with ``round(rate · 2¹⁶)``), about
    3× cheaper than `bernoulli_`; the realised rate is
    `dropout_rate_drawn(rate)` (0.1 → 0.1000061), and the kept elements are
    scaled by its complement's inverse, so the expectation stays exact. The
    scale is applied in float32 arithmetic (`torch.nn.functional.dropout`
    multiplies by a bfloat16-rounded 1/0.9 = 1.109 on bfloat16 tensors). The
    backward pass keeps only the boolean mask and multiplies the gradient by
    the same mask and scale.

    Args:
        inputs: floating tensor.
        rate: float in [0, 1].
        seed_generator: unused on torch (JAX draws from it).

    Returns:
        A tensor like ``inputs``.

    Example:

    >>> import numpy as np
    >>> y = keras.ops.convert_to_numpy(dropout(keras.ops.ones((1000,)), 0.5))
    >>> set(np.unique(y).tolist()) <= {0.0, 2.0}
    True
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"dropout rate must be in [0, 1]. Received: rate={rate!r}")
    inputs = keras.ops.convert_to_tensor(inputs)
    if rate == 0.0:
        return inputs
    if rate == 1.0:
        return inputs * 0
    return Dropout.apply(inputs, rate)


def drop_mask(shape: Any, rate: float, device: Any) -> Any:
    """A boolean tensor of ``shape``, true with probability
    `dropout_rate_drawn(rate)` per element: 16-bit lanes of 64-bit random
    words (full range, so every lane is uniform) below a threshold."""
    count = 1
    for size in shape:
        count *= int(size)
    words = random_words((count + 3) // 4, device)
    lanes = words.view(torch.int16)[:count].view(shape)
    threshold = round(dropout_rate_drawn(rate) * (1 << DROPOUT_MASK_BITS)) - (1 << 15)
    return lanes < threshold


def random_words(count: int, device: Any) -> Any:
    """``count`` random 64-bit words over the full range (so no 16-bit lane
    loses its top bit), determined by torch's global generator.

    A CPU generator fills a tensor sequentially, on one core. A large draw is
    cut into blocks of `WORDS_PER_DRAW` words, each filled by its own
    generator seeded from the global one, on torch's intra-op threads: the
    words depend on the global generator's state and ``count`` only, not on the
    number of threads (a resumed run draws the same masks on another machine).
    """
    words = torch.empty(count, dtype=torch.int64, device=device)
    if words.device.type != "cpu" or count <= WORDS_PER_DRAW:
        return words.random_(-(2**63), None)
    blocks = words.split(WORDS_PER_DRAW)
    seeds = torch.randint(0, 2**62, (len(blocks),)).tolist()  # from the global generator

    def fill(index: int) -> None:
        generator = torch.Generator().manual_seed(seeds[index])
        blocks[index].random_(-(2**63), None, generator=generator)

    list(_draw_threads(torch.get_num_threads()).map(fill, range(len(blocks))))
    return words


@functools.cache
def _draw_threads(threads: int) -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="chronos-moe-draw")


class Dropout(torch.autograd.Function):
    """`dropout`'s autograd function: the forward pass keeps the 1-byte mask."""

    @staticmethod
    def forward(ctx, inputs, rate):
        drop = drop_mask(inputs.shape, rate, inputs.device)
        ctx.save_for_backward(drop)
        ctx.scale = 1.0 / (1.0 - dropout_rate_drawn(rate))
        return torch.where(drop, 0.0, inputs).mul_(ctx.scale)

    @staticmethod
    def backward(ctx, grad):
        (drop,) = ctx.saved_tensors
        return torch.where(drop, 0.0, grad).mul_(ctx.scale), None


class AttentionWithDropout(torch.autograd.Function):
    """T5's training attention, ``dropout(softmax(query · keysᵀ + Σ
    bias_terms)) · values``, dropout as `dropout`, as one autograd function.

    The autograd graph of the written-out ops makes about ten passes over the
    `(batch, heads, q_len, k_len)` scores per layer and keeps three tensors of
    that size for the backward pass (the weights, the dropped weights, the
    mask). This function adds the bias terms in place (each broadcast; a bias
    term's gradient is summed over its broadcast axes here, so a position bias
    shared by the batch never gets a batch-sized gradient), multiplies the
    scale into the `(…, d)` context instead of the weights, keeps only the
    weights and a 1-byte mask, and recomputes the dropped weights in the
    backward pass (one pass), whose other passes run in place on fresh
    gradients.

    Arguments of `apply`: query `(batch, heads, q_len, d)`, keys transposed
    `(batch, heads, d, k_len)`, values `(batch, heads, k_len, d)`, the rate
    in [0, 1), then the bias terms in the dtype of the query.
    """

    @staticmethod
    def forward(ctx, query, keys_transposed, values, rate, *bias_terms):
        scores = torch.matmul(query, keys_transposed)
        for term in bias_terms:
            scores.add_(term)
        # In place where the inputs are no longer needed: a fresh tensor of
        # this size costs more in page faults than the pass itself.
        weights = softmax_in_place(scores)
        drop = drop_mask(weights.shape, rate, weights.device)
        scale = 1.0 / (1.0 - dropout_rate_drawn(rate))
        context = torch.matmul(torch.where(drop, 0.0, weights), values).mul_(scale)
        ctx.save_for_backward(query, keys_transposed, values, weights, drop)
        ctx.scale = scale
        ctx.bias_shapes = tuple(term.shape for term in bias_terms)
        return context

    @staticmethod
    def backward(ctx, grad):
        query, keys_transposed, values, weights, drop = ctx.saved_tensors
        grad = grad * ctx.scale
        needs = ctx.needs_input_grad
        grad_values, buffer = None, None
        if needs[2]:
            buffer = torch.where(drop, 0.0, weights)  # the dropped weights again
            grad_values = torch.matmul(buffer.transpose(-1, -2), grad)
        # The buffer (where there is one) then holds the weights' gradient and
        # the scores' gradient in turn (a row-wise kernel: in place is safe).
        grad_scores = torch.matmul(grad, values.transpose(-1, -2), out=buffer)
        grad_scores.masked_fill_(drop, 0)
        softmax_backward_in_place(grad_scores, weights)
        grad_query = torch.matmul(grad_scores, keys_transposed.transpose(-1, -2))
        grad_keys = torch.matmul(query.transpose(-1, -2), grad_scores)
        grad_bias = [
            grad_scores.sum_to_size(shape) if needs[4 + index] else None
            for index, shape in enumerate(ctx.bias_shapes)
        ]
        return (grad_query, grad_keys, grad_values, None, *grad_bias)


# ---- torch's private softmax kernels --------------------------------------------------
# torch has no public softmax that writes into a given tensor, and no public
# softmax backward: `torch.softmax` allocates a fresh `(batch, heads, len, len)`
# tensor (more page faults than the pass itself), and the backward written out
# in public ops takes three passes and a temporary. These two wrappers are the
# only callers of `torch._softmax` and `torch._softmax_backward_data`;
# `tests/backend/test_torch_private_apis.py` fails loudly when torch changes them.


def softmax_in_place(scores: Any) -> Any:
    """Softmax over the last axis, written into ``scores`` (returned)."""
    return torch._softmax(scores, -1, False, out=scores)


def softmax_backward_in_place(grad: Any, weights: Any) -> Any:
    """The softmax's input gradient from its output gradient ``grad`` and its
    output ``weights``, written into ``grad`` (returned)."""
    return torch._softmax_backward_data(grad, weights, -1, weights.dtype, grad_input=grad)
