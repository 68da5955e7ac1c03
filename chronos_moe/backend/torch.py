"""The torch kernels: what `keras.ops` cannot express on torch, or not fast
enough (imported by `chronos_moe.backend` when torch is the backend).

Eager torch runs op by op, each `keras.ops` call with its own argument
conversion (10–20 µs): at 20 decoding rows that costs more than the products
themselves, and training pays about ten passes over the attention scores per
layer. Each function here is one raw-torch computation of what its
`keras.ops` reference (named in its docstring) computes; the training dropout
is in `torch_dropout.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import torch

from chronos_moe.backend.torch_ddp import (  # noqa: F401 (data parallelism, re-exported)
    all_objects,
    any_process,
    barrier,
    broadcast_object,
    data_parallel,
    global_sum,
    initialize_processes,
    process_count,
    process_index,
    shutdown_processes,
)
from chronos_moe.backend.torch_dropout import (  # noqa: F401 (dropout kernels, re-exported)
    AttentionWithDropout,
    dropout,
    dropout_rate_drawn,
)

# Keras' `jit_compile` for training: torch trains eagerly (no `torch.compile`).
JIT_COMPILE = False
# `keras.distribution` has no torch implementation in released Keras; torch
# scales out with `torch.nn.parallel.DistributedDataParallel` under `torchrun`.
KERAS_DISTRIBUTION = False


def device_and_version() -> tuple[str, str]:
    """The device torch computes on, and torch's version."""
    if torch.cuda.is_available():
        device = f"cuda ({torch.cuda.get_device_name(0)})"
    elif getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        device = "mps"
    else:
        device = "cpu"
    return device, torch.__version__


def is_laid_out(value: Any, layout: Any) -> bool:
    """No device mesh on torch (see `KERAS_DISTRIBUTION`): never laid out."""
    return False


def global_rng_state() -> dict[str, Any]:
    """torch's global random state, which no model variable holds, as JSON.

    Keras' torch backend draws the masks of a `Dropout` layer built without a
    seed from torch's global generator (and `dropout` does too), so an exact
    resume on torch restores that generator.

    Example:

    >>> set_global_rng_state(global_rng_state())
    """
    state = {"torch_cpu": torch.get_rng_state().tolist()}
    if torch.cuda.is_available():
        state["torch_cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_global_rng_state(state: dict[str, Any]) -> None:
    """Restores a `global_rng_state()`; a state of another backend is ignored."""
    if "torch_cpu" not in state:
        return
    torch.set_rng_state(torch.tensor(state["torch_cpu"], dtype=torch.uint8))
    if "torch_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(
            [torch.tensor(s, dtype=torch.uint8) for s in state["torch_cuda"]]
        )


def compile_stateless(model: keras.Layer, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn(*args)``, a pure function of its tensor arguments and the variables
    of ``model``, for repeated inference calls: run eagerly without autograd
    bookkeeping (JAX compiles it)."""

    def eager(*args):
        with torch.no_grad():
            return fn(*args)

    return eager


def uniform_noise(seed: Any, step: Any, shape: tuple[int, ...]) -> Any:
    """Float32 uniforms in [0, 1) for decoding step ``step``, deterministic in
    ``(seed, step)``: a generator seeded with both."""
    generator = torch.Generator(device=keras.ops.convert_to_tensor(0).device)
    generator.manual_seed(int(seed) * 1_000_003 + int(step))
    return torch.rand(shape, generator=generator, device=generator.device)


def update_cache(cache: Any, update: Any, index: Any, axis: int) -> Any:
    """Writes ``update`` into ``cache`` at ``index`` along ``axis`` in place
    (``cache.narrow(...).copy_(update)``, without autograd) and returns
    ``cache``; reference: `keras.ops.slice_update`, which clones its input (a
    copy of the cache per layer and step, most of the decoding time). The
    caller must not need the old contents: a decoding cache is only read after
    it is written.

    Example:

    >>> cache = update_cache(keras.ops.zeros((2, 4)), keras.ops.ones((2, 1)), 2, axis=1)
    >>> keras.ops.convert_to_numpy(cache).tolist()
    [[0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 1.0, 0.0]]
    """
    update = keras.ops.convert_to_tensor(update, dtype=cache.dtype)
    with torch.no_grad():
        cache.narrow(axis, int(index), update.shape[axis]).copy_(update)
    return cache


def contiguous(tensor: Any) -> Any:
    """``tensor`` laid out in memory in its own axis order. A transpose is a
    strided view, and every batched product that reads it copies it again; a
    cache read at every decoding step is therefore copied once, here."""
    return tensor.contiguous()


def concrete_int(value: Any) -> int | None:
    """``value`` as a Python int (eager torch always has it; on JAX a traced
    value has none).

    Example:

    >>> concrete_int(3), concrete_int(keras.ops.convert_to_tensor(4))
    (3, 4)
    """
    return value if isinstance(value, int) else int(value)


def cheap_top_k() -> bool:
    """`torch.topk` selects the k largest of a row without sorting it (a
    partial selection), so decoding samples from the top-k candidates only."""
    return True


def _floating_tensors(*values: Any) -> tuple[Any, ...] | None:
    """``values`` as torch tensors (a variable read as its value, which honours
    Keras' autocast scope) when all are floating tensors of one dtype and
    device, else `None`. Lets the hot paths call torch directly instead of
    going through `keras.ops`' argument conversion, about 10–20 µs a call.
    """
    tensors = []
    for value in values:
        if isinstance(value, keras.Variable):
            value = value.value
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            return None
        if tensors and (value.dtype != tensors[0].dtype or value.device != tensors[0].device):
            return None
        tensors.append(value)
    return tuple(tensors)


def _tensors(*values: Any) -> tuple[Any, ...]:
    """``values`` as torch tensors of the first one's dtype: `_floating_tensors`
    where that applies (the model's own calls), else converted by `keras.ops`
    (NumPy arrays, mixed dtypes)."""
    tensors = _floating_tensors(*values)
    if tensors is not None:
        return tensors
    first = keras.ops.convert_to_tensor(values[0])
    dtype = keras.backend.standardize_dtype(first.dtype)
    return tuple(keras.ops.convert_to_tensor(value, dtype=dtype) for value in values)


def matmul(a: Any, b: Any) -> Any:
    """``a @ b`` (`keras.ops.matmul` semantics): ``a @ b`` directly when both
    are floating tensors of one dtype (torch's bfloat16 kernels already
    accumulate in float32), sparing `keras.ops`' conversions on the ~50 small
    products of each decoding step; otherwise `keras.ops.matmul`."""
    tensors = _floating_tensors(a, b)
    if tensors is not None:
        return tensors[0] @ tensors[1]  # same dtype: keras.ops.matmul's casts are no-ops
    return keras.ops.matmul(a, b)


def grouped_matmul(x: Any, weights: Any, group_sizes: Any) -> Any:
    """``x[rows of group e] @ weights[e]`` for rows sorted by group: ``x``
    ``(rows, d)``, ``weights`` ``(groups, d, f)``, ``group_sizes`` int
    ``(groups,)`` summing to ``rows``; ``(rows, f)``. One product per group on
    a slice of ``x`` (the sizes read once on the host, eager torch has dynamic
    shapes): no weight copy per row or tile, no padding. The token-level
    experts' dispatch (`moe.token_experts`) runs on it; its `keras.ops`
    reference is `grouped_matmul_reference` there."""
    x, weights = keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(weights)
    sizes = keras.ops.convert_to_tensor(group_sizes).tolist()
    parts = [matmul(part, weights[e]) for e, part in enumerate(torch.split(x, sizes))]
    return torch.cat(parts)


def softmax(scores: Any) -> Any:
    """Softmax over the last axis, accumulated in float32, in the dtype of
    ``scores``: `torch.softmax` on a bfloat16/float16 tensor already
    accumulates in float32 (its CPU and CUDA kernels use the float32 "opmath"
    type), so it is called on the scores as they are, without the two extra
    passes (four with the backward pass) of cast → softmax → cast."""
    return torch.softmax(keras.ops.convert_to_tensor(scores), dim=-1)


def rms_norm(inputs: Any, scale: Any, epsilon: float) -> Any:
    """T5's layer norm in one `torch.nn.functional.rms_norm` kernel for
    float32 inputs and scale (the formula of `layers.layer_norm.rms_norm`,
    where `keras.ops` take eight ops and casts; a decoding step of
    chronos-t5-tiny has 13 layer norms); `None` for anything else (half
    precision, whose normalised values are rounded before the scale
    multiplies them): the reference runs then."""
    tensors = _floating_tensors(inputs, scale)
    if tensors is None or tensors[0].dtype != torch.float32:
        return None
    x, weight = tensors
    return torch.nn.functional.rms_norm(x, (x.shape[-1],), weight, epsilon)


def kth_largest(values: Any, k: int) -> Any:
    """The ``k``-th largest entry of each row of a float32 ``(rows, n)``
    tensor, as ``(rows, 1)``, by `torch.topk` (repeated values counted as
    often as they occur).

    Example:

    >>> import numpy as np
    >>> x = keras.ops.convert_to_tensor(np.array([[3.0, -1.0, 3.0, 2.0]], "float32"))
    >>> keras.ops.convert_to_numpy(kth_largest(x, 2)).tolist()
    [[3.0]]
    """
    values = keras.ops.convert_to_tensor(values)
    return torch.topk(values, k, dim=-1).values[:, -1:]


# ---- attention over whole sequences ---------------------------------------------------


def attention(
    query: Any,
    keys: Any,
    values: Any,
    bias_terms: tuple[Any, ...],
    dropout_rate: float = 0.0,
    seed_generator: Any = None,
) -> Any:
    """T5's attention ``dropout(softmax(query · keysᵀ + Σ bias_terms)) ·
    values`` (no 1/√d scaling); reference: `layers.attention.attention`.

    * Without dropout (inference, the encoder): one
      `torch.nn.functional.scaled_dot_product_attention` with ``scale=1``. Its
      CPU kernel works block by block and never holds the ``(q_len, k_len)``
      scores: for the encoder's 513 × 513 per head about 3× faster than the
      products and softmax written out.
    * With dropout (training): one autograd function
      (`torch_dropout.AttentionWithDropout`) that adds the bias terms in
      place, keeps only the weights and a 1-byte mask for the backward pass,
      and draws the mask as `dropout` does, from torch's global generator
      (``seed_generator`` is not used, as by Keras' unseeded torch dropout).

    Args:
        query: `(batch, heads, q_len, d)`.
        keys, values: `(batch, heads, k_len, d)`.
        bias_terms: additive terms, each broadcastable to `(batch, heads,
            q_len, k_len)`, in the dtype of ``query``.
        dropout_rate: float in [0, 1), on the attention weights.
        seed_generator: unused on torch.

    Returns:
        The context, `(batch, heads, q_len, d)`.
    """
    query, keys, values = (keras.ops.convert_to_tensor(x) for x in (query, keys, values))
    terms = tuple(keras.ops.convert_to_tensor(term, dtype=query.dtype) for term in bias_terms)
    if dropout_rate == 0.0:
        bias = terms[0]
        for term in terms[1:]:
            bias = bias + term
        return torch.nn.functional.scaled_dot_product_attention(
            query, keys, values, attn_mask=bias, scale=1.0
        )
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"dropout rate must be in [0, 1). Received: rate={dropout_rate!r}")
    keys_transposed = keys.transpose(2, 3)  # (batch, heads, d, k_len), a view: no copy
    return AttentionWithDropout.apply(query, keys_transposed, values, dropout_rate, *terms)


# ---- attention for one decoding step ----------------------------------------------------


def decoding_self_attention(
    hidden: Any,
    projection: Any,
    output_kernel: Any,
    cache: tuple[Any, Any],
    index: Any,
    attended_length: int | None,
    bias: Any,
    num_heads: int,
) -> tuple[Any, tuple[Any, Any]]:
    """T5's cached self-attention for one new position per row, as one raw
    torch computation; reference and arguments:
    `layers.attention.decoding_self_attention`.

    The query, key and value come from one product with ``projection``; the
    key and value are written into the cache in place; the query attends to
    the first ``attended_length`` cache positions (all when `None`).
    """
    hidden, projection, output_kernel, keys, values, bias = _tensors(
        hidden, projection, output_kernel, cache[0], cache[1], bias
    )
    position = concrete_int(index)
    batch, inner = hidden.shape[0], output_kernel.shape[0]
    length = keys.shape[2] if attended_length is None else attended_length
    with torch.no_grad():
        projected = (hidden @ projection).view(batch, 3, num_heads, 1, inner // num_heads)
        keys[:, :, position : position + 1].copy_(projected[:, 1])
        values[:, :, position : position + 1].copy_(projected[:, 2])
        scores = projected[:, 0] @ keys[:, :, :length].transpose(2, 3) + bias
        context = torch.softmax(scores, dim=-1) @ values[:, :, :length]
        return context.view(batch, 1, inner) @ output_kernel, (keys, values)


def decoding_cross_attention(
    hidden: Any,
    query_kernel: Any,
    output_kernel: Any,
    cache: tuple[Any, Any],
    bias: Any,
    num_heads: int,
) -> Any:
    """T5's cross-attention for one new position per row over precomputed
    encoder keys (transposed) and values, each cache row shared by consecutive
    rows, as one raw torch computation; reference and arguments:
    `layers.attention.decoding_cross_attention`."""
    hidden, query_kernel, output_kernel, keys, values, bias = _tensors(
        hidden, query_kernel, output_kernel, cache[0], cache[1], bias
    )
    batch, kv_batch, inner = hidden.shape[0], keys.shape[0], output_kernel.shape[0]
    with torch.no_grad():
        query = (hidden @ query_kernel).view(kv_batch, batch // kv_batch, num_heads, -1)
        scores = query.transpose(1, 2) @ keys + bias  # (kv_batch, heads, group, enc_len)
        context = torch.softmax(scores, dim=-1) @ values  # (kv_batch, heads, group, d_kv)
        return context.transpose(1, 2).reshape(batch, 1, inner) @ output_kernel


# ---- sampling -------------------------------------------------------------------------------


def sample_top_k_candidates(
    logits: Any,
    uniform: Any,
    temperature: Any,
    top_k: int,
    top_p: Any,
    use_top_p: bool,
    banned_token: int,
    width: int,
) -> Any:
    """`generation.sample_top_k`'s draw from the `width` largest logits of
    each row, in raw torch, op for op as there (the same tokens); `None`
    where that function must run instead: for tensors that are not float32
    torch tensors, and when the candidates are incomplete (more than
    `width - top_k - 1` logits tie with the k-th largest), which takes the
    full-vocabulary path. At 20 rows its ~35 `keras.ops` calls cost about 1 ms
    per decoding step; these torch calls a fraction of that.

    Args:
        logits: float32 `(rows, vocab)`.
        uniform: float32 `(rows, 1)` in [0, 1).
        temperature, top_p: float scalars (Python or tensor).
        top_k, use_top_p, banned_token: see `generation.sample_top_k`.
        width: int, the number of candidates, `top_k + margin + 1`.

    Returns:
        int32 token ids `(rows,)`, or `None`.

    Example:

    >>> import numpy as np
    >>> logits = np.log(np.array([[0.1, 0.0, 0.6, 0.3, 0.0, 0.0]], "float32") + 1e-30)
    >>> token = sample_top_k_candidates(keras.ops.convert_to_tensor(logits),
    ...     keras.ops.convert_to_tensor([[0.8]]), 1.0, 2, 1.0, False, 1, 5)
    >>> int(keras.ops.convert_to_numpy(token)[0])
    3
    """
    tensors = _floating_tensors(logits, uniform)
    if tensors is None or tensors[0].dtype != torch.float32:
        return None
    logits, uniform = tensors
    with torch.no_grad():
        raw, indices = torch.topk(logits, width, dim=-1)  # descending
        values = torch.where(indices == banned_token, float("-inf"), raw) / temperature
        ascending = torch.sort(values, dim=-1).values
        kth_largest = ascending[:, width - top_k : width - top_k + 1]
        if not bool(torch.all(raw[:, -1:] / temperature < kth_largest)):
            return None
        threshold = kth_largest
        if use_top_p:
            kept = torch.where(ascending < kth_largest, float("-inf"), ascending)
            cumulative = torch.cumsum(torch.softmax(kept, dim=-1), dim=-1)
            dropped = (cumulative[:, :-1] <= 1.0 - top_p).sum(dim=-1, keepdim=True)
            threshold = torch.take_along_dim(kept, dropped, dim=-1)
        weights = torch.where(values >= threshold, torch.exp(values - ascending[:, -1:]), 0.0)
        order = torch.argsort(indices, dim=-1, stable=True)  # vocabulary order
        weights = torch.take_along_dim(weights, order, dim=-1)
        cumulative = torch.cumsum(weights, dim=-1)
        index = (cumulative <= uniform * cumulative[:, -1:]).sum(dim=-1, keepdim=True)
        positions = torch.arange(width, device=weights.device)[None, :]
        last = torch.where(weights > 0, positions, 0).amax(dim=-1, keepdim=True)
        index = torch.take_along_dim(order, torch.minimum(index, last), dim=-1)
        return torch.take_along_dim(indices, index, dim=-1)[:, 0].to(torch.int32)
