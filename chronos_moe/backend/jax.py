"""The JAX kernels (imported by `chronos_moe.backend` when JAX is the
backend): the same functions as `torch.py`.

JAX compiles the model (`jax.jit`, one compiled decoding loop), and XLA fuses
`keras.ops` compositions by itself; what remains here is what XLA:CPU does
slowly or what `keras.ops` cannot say: bfloat16 products accumulated in
float32, a top-k threshold without sorting, random numbers and cache writes
inside a compiled loop, and the attention kernels. JAX's and XLA's own
settings (the persistent compilation cache, XLA:CPU's fusions) are in
`jax_xla.py`, set when this module is imported.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import keras
from keras import ops

from chronos_moe.backend.jax_processes import (  # noqa: F401 (processes, re-exported)
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
from chronos_moe.backend.jax_xla import (  # noqa: F401 (XLA's settings, re-exported)
    CACHE_OFF,
    CACHE_VARIABLE,
    CPU_FUSIONS_VARIABLE,
    YNN_FLAG_VERSIONS,
    YNN_FUSION_FLAG,
    compilation_cache_directory,
    cpu_fusion_flags,
    inference_compiler_options,
    use_cpu_fusion_flags,
    use_persistent_compilation_cache,
)

# Keras' `jit_compile` for training: the train step is compiled with XLA.
JIT_COMPILE = True
# `keras.distribution` (device meshes, layout maps) runs on JAX in released Keras.
KERAS_DISTRIBUTION = True

# Set once, when the JAX backend is imported (before JAX starts its first device).
use_persistent_compilation_cache()
use_cpu_fusion_flags()


def device_and_version() -> tuple[str, str]:
    """The first JAX device, and JAX's version."""
    first = jax.devices()[0]
    return f"{first.platform} ({first.device_kind})", jax.__version__


def is_laid_out(value: Any, layout: Any) -> bool:
    """Whether the array ``value`` is placed as the `keras.distribution`
    ``layout`` says (an array created before the distribution was set sits on
    one device; on a one-device mesh that is the same placement)."""
    return value.sharding.is_equivalent_to(layout.backend_layout, len(value.shape))


def global_rng_state() -> dict[str, Any]:
    """The global random state that no model variable holds: none on JAX,
    where every mask is drawn from the layers' seed-generator variables
    (which a checkpoint holds).

    Example:

    >>> global_rng_state()
    {}
    """
    return {}


def set_global_rng_state(state: dict[str, Any]) -> None:
    """Restores a `global_rng_state()`: nothing to restore on JAX."""


def compile_stateless(model: keras.Layer, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn(*args)``, a pure function of its tensor arguments and the variables
    of ``model``, `jax.jit`-compiled with the variable values passed as
    arguments (so new weights never trigger a recompile and are never baked in
    as constants); the returned callable reads the current values at each
    call. On a CPU the program gets the forecasting YNNPACK fusions
    (`jax_xla.inference_compiler_options`)."""

    def pure(values, *args):
        with keras.StatelessScope(state_mapping=list(zip(model.variables, values, strict=True))):
            return fn(*args)

    options = inference_compiler_options(os.environ.get("XLA_FLAGS", ""), jax.default_backend())
    jitted = jax.jit(pure, compiler_options=options)
    return lambda *args: jitted([v.value for v in model.variables], *args)


def uniform_noise(seed: Any, step: Any, shape: tuple[int, ...]) -> Any:
    """Float32 uniforms in [0, 1) for decoding step ``step``, deterministic in
    ``(seed, step)`` and usable inside a compiled loop, where both are traced
    scalars (Keras' seed generators cannot be advanced inside a traced loop)."""
    key = jax.random.fold_in(jax.random.key(seed), step)
    return jax.random.uniform(key, shape, dtype="float32")


def update_cache(cache: Any, update: Any, index: Any, axis: int) -> Any:
    """Writes ``update`` into ``cache`` at ``index`` along ``axis``:
    `jax.lax.dynamic_update_slice_in_dim`, functional as JAX requires; inside
    `jit` (and a compiled loop carrying the cache) XLA performs it in place.

    Example:

    >>> cache = update_cache(keras.ops.zeros((2, 4)), keras.ops.ones((2, 1)), 2, axis=1)
    >>> keras.ops.convert_to_numpy(cache).tolist()
    [[0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 1.0, 0.0]]
    """
    update = jnp.asarray(update, dtype=cache.dtype)
    return jax.lax.dynamic_update_slice_in_dim(cache, update, index, axis)


def contiguous(tensor: Any) -> Any:
    """JAX arrays are always laid out in their own axis order: identity."""
    return tensor


def concrete_int(value: Any) -> int | None:
    """``value`` as a Python int when it is known at this point (a Python int,
    an array outside `jit`), else `None` (a traced value): eager decoding
    works on the written part of a fixed-size cache, compiled decoding keeps
    static shapes.

    Example:

    >>> concrete_int(3), concrete_int(keras.ops.convert_to_tensor(4))
    (3, 4)
    """
    if isinstance(value, int):
        return value
    if isinstance(value, jax.core.Tracer):
        return None
    return int(value)


def cheap_top_k() -> bool:
    """XLA:CPU sorts whole rows for `lax.top_k` (see `kth_largest`), so
    decoding keeps the full-vocabulary sampling, whose passes XLA fuses."""
    return False


def matmul(a: Any, b: Any) -> Any:
    """``a @ b`` (`keras.ops.matmul` semantics). With bfloat16/float16
    operands the products (forward and both gradients) accumulate in float32
    and round once to the operands' dtype: XLA:CPU runs a bfloat16 dot with
    float32 output about 2× faster than one with bfloat16 output (measured:
    97 against 49 GFLOP/s per core), and the float32 sums are also the more
    accurate ones. `b` is a 2-D kernel or has `a`'s batch dimensions; anything
    else, and float32, is `keras.ops.matmul`."""
    # A variable becomes its value, cast to the compute dtype under autocast.
    a, b = ops.convert_to_tensor(a), ops.convert_to_tensor(b)
    dtype = keras.backend.standardize_dtype(a.dtype)
    b_dtype = keras.backend.standardize_dtype(b.dtype)
    if dtype in ("bfloat16", "float16") and b_dtype == dtype:
        if len(b.shape) == 2 or tuple(a.shape[:-2]) == tuple(b.shape[:-2]):
            return _matmul_float32_accumulation()(a, b)
    return ops.matmul(a, b)


@functools.cache
def _matmul_float32_accumulation():
    def product(a, b):
        return jnp.matmul(a, b, preferred_element_type=jnp.float32).astype(a.dtype)

    @jax.custom_vjp
    def matmul(a, b):
        return product(a, b)

    def forward(a, b):
        return product(a, b), (a, b)

    def backward(residuals, grad):
        a, b = residuals
        grad = grad.astype(a.dtype)
        grad_a = product(grad, jnp.swapaxes(b, -1, -2))
        if b.ndim == 2:  # a kernel shared by every row: sum over all of a's rows
            rows_a = a.reshape(-1, a.shape[-1])
            grad_b = product(rows_a.T, grad.reshape(-1, grad.shape[-1]))
        else:
            grad_b = product(jnp.swapaxes(a, -1, -2), grad)
        return grad_a, grad_b

    matmul.defvjp(forward, backward)
    return matmul


def softmax(scores: Any) -> Any:
    """Softmax over the last axis, accumulated in float32 (half-precision
    sums lose the small differences between large logits), in the dtype of
    ``scores``: cast, softmax, cast back; XLA fuses the casts into the
    softmax loop."""
    dtype = keras.backend.standardize_dtype(scores.dtype)
    return ops.cast(ops.softmax(ops.cast(scores, "float32"), axis=-1), dtype)


def grouped_matmul(*args: Any) -> None:
    """No kernel of its own: under `jit` the shapes are static, and the tiled
    `keras.ops` dispatch of `moe.token_experts.TokenExperts` runs instead
    (`jax.lax.ragged_dot` is far slower on CPU)."""
    return None


def rms_norm(inputs: Any, scale: Any, epsilon: float) -> None:
    """No kernel of its own: XLA fuses the `keras.ops` formula
    (`layers.layer_norm.rms_norm`), which runs instead."""
    return None


def kth_largest(values: Any, k: int) -> Any:
    """The ``k``-th largest entry of each row of a float32 ``(rows, n)``
    tensor, as ``(rows, 1)``; exact, with repeated values counted as often as
    they occur (as `torch.topk(...).values[:, -1]`).

    XLA:CPU sorts whole rows for `lax.top_k` (for 640 × 4096 logits that was
    half of the decoding time). Instead, bisection over the float32 bit
    patterns: a float maps to a uint32 key that orders like the float, and 32
    halvings of the key range, each counting the entries ``>=`` the midpoint,
    find the largest key that ``k`` entries reach, i.e. the k-th largest
    value. Each halving is one fused pass over the row.

    Example:

    >>> import numpy as np
    >>> x = keras.ops.convert_to_tensor(np.array([[3.0, -1.0, 3.0, 2.0]], "float32"))
    >>> keras.ops.convert_to_numpy(kth_largest(x, 2)).tolist()
    [[3.0]]
    """
    values = jnp.asarray(values, dtype="float32")
    # -0.0 and +0.0 compare equal as floats, so give them one key.
    values = jnp.where(values == 0, jnp.float32(0), values)
    bits = jax.lax.bitcast_convert_type(values, jnp.uint32)
    sign = jnp.uint32(0x80000000)
    # Non-negative floats: set the sign bit; negative ones: flip all bits.
    keys = jnp.where(bits >= sign, ~bits, bits | sign)
    low = jnp.min(keys, axis=-1, keepdims=True)  # k entries reach it (k <= n)
    high = jnp.max(keys, axis=-1, keepdims=True)

    def halve(_, bounds):
        low, high = bounds
        span = high - low
        middle = low + (span >> 1) + (span & 1)  # rounds up: low < middle when low < high
        reached = jnp.sum(keys >= middle, axis=-1, keepdims=True, dtype="int32") >= k
        return jnp.where(reached, middle, low), jnp.where(reached, high, middle - 1)

    low, _ = jax.lax.fori_loop(0, 32, halve, (low, high))
    bits = jnp.where(low >= sign, low ^ sign, ~low)
    return jax.lax.bitcast_convert_type(bits, jnp.float32)


def dropout_rate_drawn(rate: float) -> float:
    """The drop probability `dropout` realises: ``rate`` itself."""
    return rate


def dropout(inputs: Any, rate: float, seed_generator: Any = None) -> Any:
    """Training-mode dropout: Keras' own (`keras.random.dropout`: the same
    Bernoulli draws from ``seed_generator``, the layer's, the same outputs),
    whose backward pass reads its kept elements from the output.

    Why: with Keras' dropout XLA fuses the comparison `random words <
    threshold` into both the forward and the backward select, and so keeps
    each mask's 4-byte random words alive until the backward pass: 1.5 GB of
    the float32 training step's 5.3 GB of temporaries at the chronos-t5-tiny
    benchmark shape (`benchmarks/RESULTS.md`; an optimization barrier on the
    mask does not help, XLA:CPU removes it before fusion). Here the backward
    pass passes the gradient where the output is non-zero (`_scaled_keep`):
    the output is kept anyway where a product reads it (the attention
    weights, the feed-forward's hidden state), and the random words die in
    the forward pass. An input of exactly 0 then gets no gradient even where
    it was kept; where T5 drops out such zeros (after a ReLU, softmax
    weights of masked positions) the gradient beyond them is zero anyway.
    """
    if seed_generator is None:  # Keras' global generator: its own function
        return keras.random.dropout(inputs, rate)
    keep = 1.0 - rate
    mask = jax.random.bernoulli(seed_generator.next(), p=keep, shape=inputs.shape)
    return _scaled_keep(inputs, mask, keep)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _scaled_keep(inputs: Any, mask: Any, keep: float) -> Any:
    """``where(mask, inputs / keep, 0)``, Keras' dropout on a drawn mask."""
    return jax.lax.select(mask, inputs / keep, jnp.zeros_like(inputs))


def _scaled_keep_forward(inputs, mask, keep):
    outputs = _scaled_keep(inputs, mask, keep)
    return outputs, outputs


def _scaled_keep_backward(keep, outputs, grad):
    # Transposed in the order of Keras' select-then-divide: the same rounding.
    return jax.lax.select(outputs != 0, grad, jnp.zeros_like(grad)) / keep, None


_scaled_keep.defvjp(_scaled_keep_forward, _scaled_keep_backward)


# ---- attention ------------------------------------------------------------------------


def attention(
    query: Any,
    keys: Any,
    values: Any,
    bias_terms: tuple[Any, ...],
    dropout_rate: float = 0.0,
    seed_generator: Any = None,
) -> Any:
    """T5's attention ``dropout(softmax(query · keysᵀ + Σ bias_terms)) ·
    values`` (no 1/√d scaling); reference and arguments:
    `layers.attention.attention`, the torch kernel's.

    * Without dropout: `jax.nn.dot_product_attention` (XLA's own fusion of
      the products; softmax in float32).
    * With dropout (training): the products through `matmul` (bfloat16
      accumulated in float32), softmax in float32, and Keras' dropout drawn
      from ``seed_generator``.
    """
    bias = jnp.asarray(bias_terms[0], dtype=query.dtype)
    for term in bias_terms[1:]:
        bias = bias + jnp.asarray(term, dtype=query.dtype)
    if dropout_rate == 0.0:

        def swap(x):  # (batch, len, heads, d), the layout jax.nn expects
            return jnp.swapaxes(x, 1, 2)

        context = jax.nn.dot_product_attention(
            swap(query), swap(keys), swap(values), bias=bias, scale=1.0
        )
        return swap(context)
    scores = matmul(query, jnp.swapaxes(keys, 2, 3)) + bias  # (batch, heads, q_len, k_len)
    weights = dropout(softmax(scores), dropout_rate, seed_generator)
    return matmul(weights, values)


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
    """T5's cached self-attention for one new position per row; reference and
    arguments: `layers.attention.decoding_self_attention`. Inside the
    compiled decoding loop ``index`` is traced and the cache written with
    `update_cache`."""
    keys, values = cache
    batch, inner = ops.shape(hidden)[0], ops.shape(output_kernel)[0]
    projected = ops.reshape(
        matmul(hidden, projection), (batch, 3, num_heads, 1, inner // num_heads)
    )
    keys = update_cache(keys, projected[:, 1], index, axis=2)
    values = update_cache(values, projected[:, 2], index, axis=2)
    attended_keys, attended_values = keys, values
    if attended_length is not None:
        attended_keys = keys[:, :, :attended_length]
        attended_values = values[:, :, :attended_length]
    scores = matmul(projected[:, 0], ops.swapaxes(attended_keys, 2, 3))
    scores = scores + ops.cast(bias, scores.dtype)
    context = matmul(softmax(scores), attended_values)  # (batch, heads, 1, d_kv)
    return matmul(ops.reshape(context, (batch, 1, inner)), output_kernel), (keys, values)


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
    rows; reference and arguments: `layers.attention.decoding_cross_attention`."""
    keys, values = cache
    batch, kv_batch, inner = ops.shape(hidden)[0], ops.shape(keys)[0], ops.shape(output_kernel)[0]
    group = batch // kv_batch
    query = ops.reshape(
        matmul(hidden, query_kernel), (kv_batch, group, num_heads, inner // num_heads)
    )
    scores = matmul(ops.transpose(query, (0, 2, 1, 3)), keys)
    scores = scores + ops.cast(bias, scores.dtype)
    context = matmul(softmax(scores), values)  # (kv_batch, heads, group, d_kv)
    if group != 1:
        context = ops.transpose(context, (0, 2, 1, 3))
    return matmul(ops.reshape(context, (batch, 1, inner)), output_kernel)


def sample_top_k_candidates(*args: Any) -> None:
    """No kernel of its own (`cheap_top_k` is false: decoding samples from the
    whole vocabulary); `generation.sample_top_k`'s `keras.ops` code runs."""
    return None
